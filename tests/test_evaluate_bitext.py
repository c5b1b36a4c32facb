"""Bitext retrieval (known answers, the STS-B <-> STSb-TR loader), the Turkish tasks from the CLI
and as training evals, and the report plots (plain ticks, units, labels that do not overlap)."""

from __future__ import annotations

import itertools
import json
import re
import time
import zlib

import numpy as np
import pytest

from embres.evaluate import Skipped, clear_teacher_cache, register_loader, run_training_evals
from embres.evaluate.bitext import (
    Bitext,
    BitextEvaluator,
    bitext_recall,
    load_stsb_bitext,
    nearest_hits,
    read_bitext_file,
)
from embres.evaluate.common import DataFormatError
from embres.evaluate.report import (
    LABEL_GID,
    MARKER_PT,
    language_figure,
    log_ticks,
    plain_number,
    short_names,
    tradeoff_figure,
    write_report,
)
from embres.evaluate.tasks import TASK_OPTIONS, TASKS, TRAINING_TASKS


def key_embed(texts, dim=16):
    """Text ``"<key>|..."`` -> a fixed pseudo-random vector of ``<key>``: translations share keys."""
    return np.stack(
        [
            np.random.default_rng(zlib.crc32(t.split("|")[0].encode())).normal(size=dim)
            for t in texts
        ]
    ).astype(np.float32)


def crossed_bitext(n, k):
    """n pairs ("e<i>", "t<i>"); the Turkish side of the first k is embedded as the next one's
    English (a cycle over those k), so exactly k queries per direction miss."""
    first = [f"e{i}" for i in range(n)]
    second = [f"t{i}" for i in range(n)]
    code = {f"e{i}": i for i in range(n)} | {f"t{i}": i for i in range(n)}
    for i in range(k):
        code[f"t{i}"] = (i + 1) % k

    def embed(texts):
        return np.eye(n, dtype=np.float32)[[code[t] for t in texts]]

    return Bitext(first, second, ("en", "tr"), "synthetic"), embed


@pytest.mark.parametrize("n,k", [(12, 0), (12, 2), (12, 5), (7, 7)])
def test_bitext_k_crossed_of_n_gives_known_recall(n, k, tmp_path):
    bitext, embed = crossed_bitext(n, k)
    recall = bitext_recall(embed, bitext)
    assert recall == {
        "tr_to_en": pytest.approx((n - k) / n),
        "en_to_tr": pytest.approx((n - k) / n),
    }
    # The same through the evaluator on a pairs: file (header names the directions).
    path = tmp_path / "tiny_en_tr.tsv"
    path.write_text(
        "en\ttr\n"
        + "".join(f"{a}\t{b}\n" for a, b in zip(bitext.first, bitext.second, strict=True))
    )
    out = dict(BitextEvaluator(f"pairs:{path}").run(embed))
    assert out == {
        "bitext/tiny_en_tr_tr_to_en_r@1": pytest.approx((n - k) / n),
        "bitext/tiny_en_tr_en_to_tr_r@1": pytest.approx((n - k) / n),
        "bitext/tiny_en_tr_pairs": n,
    }


def test_bitext_duplicates_and_two_translations_are_fair():
    pairs = [
        ("A", "a"),
        ("A", "a"),  # an exact duplicate: kept once
        ("A", "a2"),  # one English sentence, two translations: either one is a hit
        ("B", "b"),
        ("C", "c"),
        ("D", "c"),  # two English sentences, one translation: either one is a hit
    ]
    vec = {"A": 0, "a": 0, "a2": 0, "B": 1, "b": 1, "C": 2, "D": 2, "c": 2}
    embed = lambda texts: np.eye(3, dtype=np.float32)[[vec[t] for t in texts]]
    bitext = Bitext([a for a, _ in pairs], [b for _, b in pairs], ("en", "tr"), "dup").distinct()
    assert len(bitext) == 5
    assert bitext_recall(embed, bitext) == {"tr_to_en": 1.0, "en_to_tr": 1.0}


def test_nearest_hits_is_chunked_float32_and_cheap():
    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(3000, 16)).astype(np.float32)
    queries = corpus + rng.normal(scale=0.7, size=corpus.shape).astype(np.float32)
    relevant = [{i} for i in range(3000)]
    start = time.perf_counter()
    chunked = nearest_hits(queries, corpus, relevant, chunk=1024)
    assert time.perf_counter() - start < 5.0
    whole = nearest_hits(queries, corpus, relevant, chunk=4096)
    np.testing.assert_array_equal(chunked, whole)
    assert 0.5 < chunked.mean() < 1.0  # noisy enough that some miss


def write_sts(path, rows, header):
    """STS-B-format rows (score, sentence1, sentence2)."""
    lines = ["genre\tdataset\tyear\tsid\tscore\tsentence1\tsentence2"] if header else []
    lines += [
        f"main-captions\tMSRvid\t2012test\t{i:04d}\t{s}\t{a}\t{b}"
        for i, (s, a, b) in enumerate(rows)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def tiny_data(tmp_path):
    """stsb/ + stsb_tr/ dev (aligned, translations share a key) and a separable probe set."""
    rows = [(5 - i / 10, f"k{i}a|man", f"k{i}b|woman") for i in range(30)]
    rows.append((1.0, "k0a|man", "k99|dup"))  # k0a again: a duplicate (en, tr) pair
    write_sts(tmp_path / "stsb" / "sts-dev.csv", rows, header=False)
    write_sts(
        tmp_path / "stsb_tr" / "stsb_tr_dev.tsv",
        [(s, f"{a.split('|')[0]}|adam", f"{b.split('|')[0]}|kadın") for s, a, b in rows],
        header=True,
    )
    probe = tmp_path / "tr_movie_sentiment"
    probe.mkdir()
    for split, n, seed in (("train", 120, 0), ("dev", 40, 1)):
        rng, lines = np.random.default_rng(seed), ["label\ttext"]
        while len(lines) <= n:
            text = f"yorum {rng.integers(1 << 30)}"
            x = key_embed([text])[0, 0]
            if abs(x) > 0.3:
                lines.append(f"{int(x > 0)}\t{text}")
        (probe / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path


def test_stsb_bitext_pairs_rows_and_handles_missing_and_misaligned(tiny_data, tmp_path):
    bitext = load_stsb_bitext("dev", tiny_data)
    assert len(bitext) == 62 and (bitext.first[:2], bitext.second[:2]) == (
        ["k0a|man", "k0b|woman"],
        ["k0a|adam", "k0b|kadın"],
    )
    out = dict(BitextEvaluator(data_dir=tiny_data).run(key_embed))
    assert out == {"bitext/tr_to_en_r@1": 1.0, "bitext/en_to_tr_r@1": 1.0, "bitext/pairs": 61}
    limited = dict(BitextEvaluator(data_dir=tiny_data, limit=10).run(key_embed))
    assert limited["bitext/pairs"] == 10
    missing = dict(BitextEvaluator(data_dir=tmp_path / "none", split="train").run(key_embed))
    assert list(missing) == ["bitext/stsb_train"] and isinstance(
        missing["bitext/stsb_train"], Skipped
    )
    assert "stsb/sts-train.csv" in missing["bitext/stsb_train"].reason
    tr = tiny_data / "stsb_tr" / "stsb_tr_dev.tsv"
    tr.write_text(tr.read_text().replace("\t4.9\t", "\t1.5\t"))
    with pytest.raises(DataFormatError, match="not aligned: pair 2 has score 4.9"):
        load_stsb_bitext("dev", tiny_data)


def test_bitext_options_and_file_format(tmp_path):
    with pytest.raises(ValueError, match="unknown bitext dataset 'sick'"):
        BitextEvaluator("sick")
    bad = tmp_path / "bad.tsv"
    bad.write_text("en\ttr\nonly one field\n")
    with pytest.raises(DataFormatError, match=r"bad\.tsv:2: expected 2 non-empty"):
        read_bitext_file(bad)
    bad.write_text("en\n")
    with pytest.raises(DataFormatError, match=r"bad\.tsv:1: expected a header naming 2"):
        read_bitext_file(bad)
    assert "bitext" in TASKS and "bitext" in TRAINING_TASKS
    assert TASK_OPTIONS["bitext"] == {
        "dataset": "bitext_dataset",
        "split": "split",
        "data_dir": "data_dir",
        "limit": "limit",
    }


def test_bitext_on_shared_stsb_dev(data_dir):
    bitext = load_stsb_bitext("dev", data_dir)
    assert len(bitext) == 3000  # 1,500 rows x (sentence1, sentence2)
    assert (bitext.first[0], bitext.second[0]) == (
        "A man with a hard hat is dancing.",
        "Kasklı bir adam dans ediyor.",
    )
    assert (bitext.first[1], bitext.second[1]) == (
        "A man wearing a hard hat is dancing.",
        "Baret giyen bir adam dans ediyor.",
    )
    distinct = bitext.distinct()
    assert 2800 < len(distinct) < 3000  # 2,910: repeated sentences of STS-B kept once
    pud = read_bitext_file(data_dir / "parallel" / "en_tr_pud.tsv")
    assert len(pud) == 1000 and pud.names == ("en", "tr")
    out = dict(BitextEvaluator("pairs:parallel/en_tr_pud.tsv", limit=20).run(key_embed))
    assert out["bitext/en_tr_pud_pairs"] == 20


def test_cli_reaches_sts_probe_and_bitext(tiny_data, tmp_path):
    from embres.evaluate.__main__ import main

    register_loader("bitextfake", lambda target, **_: (key_embed, {"kind": "fake"}))
    out = tmp_path / "report"
    args = ["--model", "bitextfake:x", "--tasks", "sts,probe,bitext", "--data-dir", str(tiny_data)]
    assert main([*args, "--sts-datasets", "stsb,stsb_tr", "--out", str(out)]) == 0
    metrics = json.loads((out / "report.json").read_text())["models"][0]["metrics"]
    assert {"sts/stsb_dev", "sts/stsb_tr_dev", "probe/tr_movie_sentiment_accuracy"} <= set(metrics)
    assert metrics["bitext/tr_to_en_r@1"] == 1.0 and metrics["bitext/pairs"] == 61
    assert metrics["probe/tr_movie_sentiment_accuracy"] > 0.9
    pairs = tmp_path / "en_tr.tsv"
    pairs.write_text("en\ttr\nk1|a\tk1|b\nk2|a\tk2|b\n")
    main([*args[:3], "bitext", "--bitext-dataset", f"pairs:{pairs}", "--out", str(out)])
    metrics = json.loads((out / "report.json").read_text())["models"][0]["metrics"]
    assert metrics == {
        "bitext/en_tr_tr_to_en_r@1": 1.0,
        "bitext/en_tr_en_to_tr_r@1": 1.0,
        "bitext/en_tr_pairs": 2,
    }


def test_training_evals_run_bitext_probe_and_stsb_tr(tiny_data):
    clear_teacher_cache()
    models = {"teacher": (key_embed, {}), "student": (lambda t: key_embed(t)[:, :4], {})}
    evals = {
        "bitext": {"task": "bitext", "every_steps": 2, "data_dir": str(tiny_data)},
        "probe": {"task": "probe", "data_dir": str(tiny_data), "max_train": 100},
        "sts": {"task": "sts", "datasets": "stsb,stsb_tr", "data_dir": str(tiny_data)},
    }
    run = lambda step, final=False: run_training_evals(
        evals, models, step=step, final=final, heldout_texts=[], log=None
    )
    assert run(1) == {"teacher": {}, "student": {}}
    at2 = run(2)
    assert set(at2["student"]) == {"bitext/tr_to_en_r@1", "bitext/en_to_tr_r@1", "bitext/pairs"}
    assert at2["teacher"]["bitext/tr_to_en_r@1"] == 1.0
    final = run(3, final=True)["student"]
    assert {"sts/stsb_dev", "sts/stsb_tr_dev", "probe/tr_movie_sentiment_accuracy"} <= set(final)
    # an option the task does not take fails at the first call, though not due
    typo = {"b": {"task": "bitext", "every_steps": 100, "datset": "stsb"}}
    with pytest.raises(ValueError, match=r"task 'bitext' with options \['datset'\]"):
        run_training_evals(typo, models, step=1, final=False, heldout_texts=[])


def test_teacher_results_kept_on_disk_only_when_asked(tiny_data, tmp_path, monkeypatch):
    model_dir = tmp_path / "teacher"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"x")
    calls = []

    def counted(texts):
        calls.append(len(texts))
        return key_embed(texts)

    evals = {"bitext": {"task": "bitext", "data_dir": str(tiny_data)}}

    def run():
        clear_teacher_cache()
        models = {"teacher": (counted, {"path": str(model_dir)})}
        return run_training_evals(evals, models, step=1, final=True, heldout_texts=[], log=None)

    first = run()
    once = len(calls)
    assert once and run() == first and len(calls) == 2 * once  # no env: recomputed
    monkeypatch.setenv("EMBRES_TEACHER_EVAL_CACHE", str(tmp_path / "cache"))
    calls.clear()
    assert run() == first and calls  # computed once, then stored
    calls.clear()
    assert run() == first and not calls  # read back, the teacher never ran
    (model_dir / "model.safetensors").write_bytes(b"changed weights")
    assert run() == first and calls  # another teacher file: recomputed


# --- plots


def test_plain_numbers_and_log_ticks():
    assert [plain_number(v) for v in (20.0, 0.25, 2500.0, 3 * 0.1, 1e-4)] == [
        "20",
        "0.25",
        "2,500",
        "0.3",
        "0.0001",
    ]
    assert log_ticks(18, 70) == [20, 30, 40, 50, 60]
    assert log_ticks(8, 2000) == [10, 100, 1000]
    assert log_ticks(0.5, 5000) == [1, 10, 100, 1000]
    assert log_ticks(25, 150) == [30, 40, 50, 60, 80, 100, 150]
    assert 3 <= len(log_ticks(19.5, 21.4)) <= 7
    assert all(
        1 <= len(log_ticks(lo, lo * f)) <= 7 for lo in (0.01, 3, 700) for f in (1.01, 2, 1e4)
    )


def test_short_names_keep_labels_distinct():
    names = [
        "runs/en/static/export",
        "runs/defaults/projection/export",
        "int8:runs/en/static/export",
    ]
    assert short_names([*names, "model2vec:/p/m2v", "all-MiniLM-L6-v2"]) == [
        "static/export",
        "projection/export",
        "int8:static/export",
        "model2vec:m2v",
        "all-MiniLM-L6-v2",
    ]


def records(xs_mib, ys, names=None, tr=None):
    names = names or [f"runs/student_rank{32 * (i + 1)}" for i in range(len(xs_mib))]
    out = []
    for i, (x, y) in enumerate(zip(xs_mib, ys, strict=True)):
        metrics = {"memory/resident_bytes": int(x * 2**20), "sts/stsb_dev": y}
        metrics["speed/sentences_per_s"] = 1000.0 * (i + 1)
        if tr is not None:
            metrics["sts/stsb_tr_dev"] = tr[i]
        out.append({"name": names[i], "metrics": metrics})
    return out


def check_labels(fig):
    """Point labels inside the axes, overlapping no other label and no point; returns them."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    labels = [t for t in ax.texts if t.get_gid() == LABEL_GID]
    boxes = [t.get_window_extent(renderer) for t in labels]
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), (a, b)
    r = MARKER_PT / 2 * fig.dpi / 72
    points = np.concatenate([c.get_offsets() for c in ax.collections])
    frame = ax.get_window_extent(renderer)
    for box in boxes:
        assert (
            frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
        )
        for px, py in ax.transData.transform(points):
            assert not (box.x0 < px + r and px - r < box.x1 and box.y0 < py + r and py - r < box.y1)
    return labels


def test_tradeoff_plot_plain_ticks_units_and_labels_without_overlap():
    rng = np.random.default_rng(0)
    close = records(20 + 0.25 * np.arange(10), 80 + rng.uniform(0, 1, 10))
    fig = tradeoff_figure(close, "memory/resident_bytes", "sts/stsb_dev", True)
    labels = check_labels(fig)
    ax = fig.axes[0]
    assert len(labels) == 10 and {t.get_text() for t in labels} == {
        f"student_rank{32 * (i + 1)}" for i in range(10)
    }
    ticks = [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
    assert ticks and all(re.fullmatch(r"[0-9][0-9,]*(\.[0-9]+)?", t) for t in ticks), ticks
    assert ax.get_xlabel() == "resident size (MiB)" and "Spearman" in ax.get_ylabel()
    speed = tradeoff_figure(close, "speed/sentences_per_s", "sts/stsb_dev", False)
    assert speed.axes[0].get_xlabel() == "throughput (sentences/s)"
    check_labels(speed)


def test_crowded_points_fall_back_to_a_numbered_legend():
    # ten long names within 0.2% of each other, and two far points that set the axis range
    names = [f"runs/a_rather_long_student_name_{i}" for i in range(10)] + ["far/a", "far/b"]
    xs = [*(20 * (1 + 2e-4 * np.arange(10))), 5, 200]
    ys = [*(80 + 0.002 * np.arange(10)), 70, 90]
    fig = tradeoff_figure(records(xs, ys, names), "memory/resident_bytes", "sts/stsb_dev", True)
    labels = check_labels(fig)
    assert labels and all(t.get_text().isdigit() for t in labels)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[0] == "Pareto frontier" and len(legend) == 13
    assert legend[1] == "1  a" and legend[-1] == "12  b"  # numbered along the size axis
    assert {t.split("  ", 1)[1] for t in legend[1:]} == {n.split("/")[1] for n in names}


def test_report_writes_the_language_plot_when_both_sts_metrics_exist(tmp_path):
    both = records([20, 60], [86.7, 80.1], tr=[55.2, 71.3])
    fig = language_figure(both)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "STS dev (Spearman ×100)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "STS-B (English) dev",
        "STSb-TR (Turkish) dev",
    ]
    fig.canvas.draw()
    bar_labels = [t.get_text() for t in ax.texts]
    assert {"86.7", "55.2", "80.1", "71.3"} <= set(bar_labels)
    written = write_report(both, tmp_path / "r")
    assert {"quality_vs_size", "quality_vs_speed", "sts_tr_vs_en"} <= set(written)
    assert language_figure(records([20, 60], [86.7, 80.1])) is None
    assert "sts_tr_vs_en" not in write_report(records([20, 60], [86.7, 80.1]), tmp_path / "s")
