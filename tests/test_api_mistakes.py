"""Issue 24, the API rows: each mistake ends in the right behaviour or one line naming the
value and what was expected, before any work and with nothing lost.

Rows 2, 4, 5, 6, 11, 17 (fit), 18, 20, 22, 23, 24, and row 1's last guard (no export of
non-finite parameters). Tiny random models only: the file runs in seconds.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embres import EmbeddingExtractor, ModelAdapter, export, train
from embres.export import export_compressed_teacher, export_static, export_transfer
from embres.models import load_model
from embres.models.hf import CheckpointMismatchError

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["the man plays guitar", "a cat", "a dog runs"]


@pytest.fixture(scope="module")
def tiny_bert(tiny_models):
    return tiny_models("bert")


@pytest.fixture(scope="module")
def ex(tiny_bert):
    return EmbeddingExtractor(tiny_bert, batch_size=4)


@pytest.fixture(scope="module")
def adapter(tiny_bert):
    return ModelAdapter(str(tiny_bert), target_dim=16)


@pytest.fixture
def no_training(monkeypatch):
    """Replaces embres.train.train_and_evaluate; the list holds each config it was given."""
    calls = []
    monkeypatch.setattr(train, "train_and_evaluate", lambda config, workdir: calls.append(config))
    return calls


# --- Row 2: normalize takes True / False (or None), never a truthy string.


@pytest.mark.parametrize("value", ["no", "false", 0, 1.0])
def test_normalize_must_be_a_bool(ex, value):
    with pytest.raises(TypeError, match=rf"normalize={value!r}.*expected True, False or None"):
        ex.extract_embeddings(TEXTS, normalize=value)


def test_normalize_accepts_numpy_bools(ex):
    raw = ex.extract_embeddings(TEXTS, normalize=np.bool_(False))
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    unit = ex.extract_embeddings(TEXTS, normalize=np.bool_(True))
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)


# --- Row 20: a layer that is not an int is a type error, not a range error.


@pytest.mark.parametrize("layer", ["3", 2.0, True])
def test_a_layer_that_is_not_an_int_says_so(ex, layer):
    with pytest.raises(TypeError, match=rf"layer={layer!r} \(\w+\); expected an int layer index"):
        ex.extract_embeddings(TEXTS, layer=layer)
    assert ex.extract_embeddings(TEXTS, layer=np.int64(1)).shape == (3, 32)


# --- Row 11: extract_to onto a directory is refused before any row is computed.


def test_extract_to_onto_a_directory_is_refused_before_computing(tmp_path, ex, monkeypatch):
    out = tmp_path / "out.npy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    computed = []
    monkeypatch.setattr(ex, "_embed", lambda *a, **k: computed.append(1))
    with pytest.raises(IsADirectoryError, match=f"cannot write {out}: it is a directory"):
        ex.extract_to(out, TEXTS * 100, progress=False)
    assert not computed
    assert (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npy"]


# --- Row 4: a str corpus is a file (or an error), never an iterable of characters.


def test_a_corpus_path_is_read_as_the_files_lines(tiny_bert, tmp_path, no_training):
    lines = ["the man plays guitar", "a cat runs with a dog", "the woman plays piano"] * 5
    corpus = tmp_path / "en.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    from_texts = ModelAdapter(str(tiny_bert), target_dim=8, corpus=lines)
    from_file = ModelAdapter(str(tiny_bert), target_dim=8, corpus=str(corpus))
    np.testing.assert_array_equal(from_file.table, from_texts.table)
    with pytest.raises(FileNotFoundError):  # fit then reports there is no export: trained on
        from_file.fit({"total_steps": 30}, workdir=tmp_path / "w")  # the file, where it is
    assert no_training[0].data.source == f"text:{corpus}"
    assert not (tmp_path / "w" / "corpus.txt").exists()


@pytest.mark.parametrize("make", ["missing", "directory"])
def test_a_corpus_str_naming_no_file_is_refused(tiny_bert, tmp_path, make):
    path = tmp_path / "en.txt"
    if make == "directory":
        path.mkdir()
    with pytest.raises(FileNotFoundError, match=rf"corpus='{path}' is .*expected a list of texts"):
        ModelAdapter(str(tiny_bert), target_dim=8, corpus=str(path))


# --- Row 5: dims outside 1..width is refused, naming the range.


@pytest.mark.parametrize("dims", [1000, 0, -1, 4.0])
def test_adapt_refuses_dims_outside_the_width(adapter, dims):
    with pytest.raises(ValueError, match=rf"dims={dims!r}; expected an int in 1\.\.16"):
        adapter.adapt(TEXTS, dims=dims)
    assert adapter.adapt(TEXTS, dims=4).shape == (3, 4)


# --- Row 6: no save into a training workdir (its model is in export/).


@pytest.mark.parametrize("marker", ["checkpoints", "train_config.json", "export"])
def test_save_into_a_training_workdir_is_refused(adapter, tmp_path, marker):
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / marker).mkdir() if "." not in marker else (workdir / marker).write_text("{}")
    with pytest.raises(ValueError, match=f"{workdir} is a training workdir.*e.g. {workdir}-saved"):
        adapter.save(workdir)
    assert sorted(p.name for p in workdir.iterdir()) == [marker]


# --- Row 17 (fit): a workdir that is a file, refused before any work.


def test_fit_refuses_a_workdir_that_is_a_file(adapter, tmp_path, no_training):
    workdir = tmp_path / "w"
    workdir.write_text("mine")
    with pytest.raises(ValueError, match=f"workdir='{workdir}' is a file; expected a directory"):
        adapter.fit({"total_steps": 30}, workdir=workdir)
    assert not no_training and workdir.read_text() == "mine"


# --- Row 24: ModelAdapter's layer is an int or "mean".


@pytest.mark.parametrize("layer", ["avg", "-1", 1.5, None])
def test_model_adapter_names_the_layers_it_accepts(tiny_bert, layer):
    with pytest.raises(ValueError, match=rf"layer={layer!r}; expected an int layer index.*'mean'"):
        ModelAdapter(str(tiny_bert), target_dim=8, layer=layer)


# --- Row 18: config.json from another model: the first misshapen key, expected and found.


def test_a_config_wider_than_the_weights_names_the_first_mismatch(tiny_bert, tmp_path):
    folder = shutil.copytree(tiny_bert, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["hidden_size"] = 34  # does not split into the 4 heads: the module cannot be built
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointMismatchError) as info:
        load_model(folder)
    message = str(info.value)
    assert "\n" not in message
    vocab = config["vocab_size"]
    assert f"first mismatch embeddings.word_embeddings.weight: expected ({vocab}, 34)" in message
    assert f"found ({vocab}, 32)" in message and str(folder / "config.json") in message


# --- Row 22: an empty model.safetensors is named, through load and the evaluate CLI.


def test_an_empty_static_weight_file_is_named(adapter, tmp_path):
    out = adapter.save(tmp_path / "s")
    (out / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=r"model.safetensors is not a readable .* 0 bytes long"):
        ModelAdapter.load(out)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "embres.evaluate", "--model", str(out), "--tasks", "sts"]
    cmd += ["--out", str(tmp_path / "report")]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode != 0
    said = run.stdout + run.stderr
    assert f"{out / 'model.safetensors'} is not a readable safetensors file: it is 0 bytes" in said
    assert "Traceback" not in said


# --- Row 23: a static export given to EmbeddingExtractor points to ModelAdapter.load.


def test_extractor_of_a_static_export_points_to_model_adapter_load(adapter, tmp_path):
    out = adapter.save(tmp_path / "s")
    with pytest.raises(ValueError, match=r"is a static embres export.*ModelAdapter\.load"):
        EmbeddingExtractor(out)


# --- Row 1's last guard: no writer exports non-finite parameters.


def test_export_static_refuses_a_non_finite_table(adapter, tmp_path):
    table = adapter.table.copy()
    table[5, 3] = np.nan
    with pytest.raises(
        export.NonFiniteExportError, match=r"the table \(\d+, 16\) holds 1 non-finite"
    ):
        export_static(table, adapter.tokenizer, tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_a_contextual_export_refuses_non_finite_params(adapter, tmp_path):
    params = {"table": adapter.table, "gate": np.array([1.0, np.inf], np.float32)}
    with pytest.raises(
        export.NonFiniteExportError, match=r"gate \(2,\) holds 1 non-finite.*\(1,\)"
    ):
        export_static(adapter.table, adapter.tokenizer, tmp_path / "s", adapter_params=params)
    assert not (tmp_path / "s").exists()


def test_transformer_exports_refuse_non_finite_params(tiny_bert, tmp_path):
    model = load_model(tiny_bert)
    table = np.array(model.embedding_table())
    table[0, 0] = np.nan
    with pytest.raises(export.NonFiniteExportError, match="the table"):
        export_compressed_teacher(model, table, {"A": table[:, :4]}, {}, tmp_path / "c")
    bad = {**model.params}
    bad["word_embeddings"] = {"embedding": table}
    model.params = bad
    with pytest.raises(export.NonFiniteExportError, match="word_embeddings/embedding"):
        export_transfer(model, {}, tmp_path / "t")
    assert not (tmp_path / "c").exists() and not (tmp_path / "t").exists()


# --- Issue 23 (names): a contextual student has its own export function, same files.


def test_export_contextual_writes_what_export_static_with_params_writes(adapter, tmp_path):
    params = {"table": adapter.table, "gate": np.ones(2, np.float32)}
    export.export_contextual(
        params, adapter.table, adapter.tokenizer, tmp_path / "c", adapter="hybrid", meta={"x": 1}
    )
    export_static(
        adapter.table,
        adapter.tokenizer,
        tmp_path / "s",
        meta={"x": 1, "adapter": "hybrid"},
        adapter_params=params,
    )
    for name in ("model.safetensors", "adapter.safetensors", "embres_static.json"):
        assert (tmp_path / "c" / name).read_bytes() == (tmp_path / "s" / name).read_bytes()
