"""Adversarial inputs to ``python -m embres.evaluate``: one clear line per mistake, no lost work.

Issue 13, items 7, 8, 11, 12d, 16, 17 and 18; issue 24, rows 14, 16 and 26 (at the end). Every test asserts the message (its key words
and the value or file it names) and the state afterwards (which report is on disk). Models
are numpy fakes registered as loaders, except for one tiny static export read through
sentence-transformers (item 8) and three real command lines run as subprocesses.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from _readonly import readonly_dir

import embres
from embres.evaluate import evaluate_model, register_loader
from embres.evaluate.__main__ import build_parser, run
from embres.evaluate.common import DataFormatError
from embres.evaluate.models import check_specs
from embres.evaluate.report import (
    atomic_write_text,
    keep_previous,
    load_records,
    markdown,
    plot_notes,
    write_report,
)

# The embres under test (PYTHONPATH may name another checkout): subprocesses run it too.
REPO = Path(embres.__file__).resolve().parents[1]


def hash_embed(texts, dim=8):
    """A fixed pseudo-random vector per text."""
    return np.stack(
        [np.random.default_rng(zlib.crc32(t.encode())).normal(size=dim) for t in texts]
    ).astype(np.float32)


def fake_info():
    table = np.zeros((10, 8), np.float32)
    return {"kind": "fake", "params": {"t": table}, "table": table}


def load_good(target, **_):
    return hash_embed, fake_info()


def load_broken_at_load(target, **_):
    raise OSError(f"weights of {target} are truncated")


def load_broken_task(target, **_):
    def embed_fn(texts):  # the item 8 bug, as a model that passes loading but fails a task
        raise TypeError("'tokenizers.Tokenizer' object is not callable")

    return embed_fn, fake_info()


def load_interrupted(target, **_):
    raise KeyboardInterrupt  # the user's Ctrl-C while the second model loads


register_loader("bad-inputs-good", load_good)
register_loader("bad-inputs-broken-load", load_broken_at_load)
register_loader("bad-inputs-broken-task", load_broken_task)
register_loader("bad-inputs-ctrl-c", load_interrupted)


@pytest.fixture
def sts_dir(tmp_path):
    """A 12-pair STS-B dev file (no header), enough for sts, speed and retrieval."""
    rows = [
        f"main-news\tMSRvid\t2012test\t{i:04d}\t{i % 5}\tfirst sentence {i}\tsecond one {i}"
        for i in range(12)
    ]
    (tmp_path / "data" / "stsb").mkdir(parents=True)
    (tmp_path / "data" / "stsb" / "sts-dev.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "data"


def cli(capsys, *args):
    """Runs the command line in-process: (exit status, stdout, non-empty stderr lines)."""
    try:
        status = run([str(a) for a in args])
    except SystemExit as e:  # argparse
        status = e.code
    out, err = capsys.readouterr()
    return status, out, [line for line in err.splitlines() if line.strip()]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by name, to compare a folder before and after."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def assert_tables_well_formed(md: str) -> None:
    """Every markdown table: a header, a separator row, then rows of the header's width."""
    lines = md.splitlines()
    tables, current = [], []
    for line in [*lines, ""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    for table in tables:
        widths = [len(re.split(r"(?<!\\)\|", row)) - 2 for row in table]
        assert len(set(widths)) == 1, f"rows of different widths {widths}: {table}"
        assert widths[0] >= 1 and re.fullmatch(r"\|(-+:?\|)+", table[1]), table
        assert len(table) >= 3, f"a table without rows: {table}"


# --- Item 11 and 12d: the real command line, one stderr line, exit status 2.


def subprocess_env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "EMBRES_VERBOSE"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["HF_HUB_OFFLINE"] = "1"
    return {**env, **extra}


CLI_MISTAKES = {
    "unknown model": (["--model", "nope"], ["nope", "unknown model"]),
    "missing compare folder": (["--compare", "/missing"], ["/missing", "does not exist"]),
    "missing model2vec path": (["--model", "model2vec:/no/such"], ["/no/such", "does not exist"]),
}


def test_cli_mistakes_are_one_line_and_exit_2_leaving_the_report(tmp_path):
    """Items 11 and 12d through ``python -m embres.evaluate``; an earlier report is untouched."""
    out = tmp_path / "report"
    write_report([{"name": "earlier", "metrics": {"sts/stsb_dev": 80.0}}], out)
    before = snapshot(out)
    procs = {  # started together: three interpreters on two cores take a few seconds
        name: subprocess.Popen(
            [sys.executable, "-m", "embres.evaluate", *args, "--out", str(out)],
            cwd=tmp_path,
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (args, _) in CLI_MISTAKES.items()
    }
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert proc.returncode == 2, (name, stderr)
        assert len(lines) == 1, (name, stderr)
        assert lines[0].startswith("embres.evaluate: error: "), lines
        for word in CLI_MISTAKES[name][1]:
            assert word in lines[0], (name, lines[0])
        assert "Traceback" not in stderr + stdout and "HFValidationError" not in lines[0]
    assert snapshot(out) == before
    assert not (tmp_path / "eval_report").exists()


@pytest.mark.parametrize("how", ["flag", "env"])
def test_verbose_brings_the_traceback_back(tmp_path, how):
    args = [sys.executable, "-m", "embres.evaluate", "--compare", str(tmp_path / "missing")]
    env = subprocess_env(**({"EMBRES_VERBOSE": "1"} if how == "env" else {}))
    proc = subprocess.run(
        args + (["--verbose"] if how == "flag" else []),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "FileNotFoundError" in proc.stderr
    assert str(tmp_path / "missing") in proc.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["--model", "x", "--tasks", "sts,nope"], ["unknown tasks ['nope']", "sts"]),
        ([], ["give --model"]),
        (["--model", "x", "--compare", "y"], ["not both"]),
        (["--model", "x", "--limit", "0"], ["--limit", "positive integer", "'0'"]),
        (["--model", "x", "--batch-size", "many"], ["--batch-size", "'many'"]),
        (["--model"], ["--model", "expected one argument"]),
    ],
)
def test_argparse_mistakes_are_one_line_without_the_usage_block(capsys, args, words):
    status, out, err = cli(capsys, *args)
    assert status == 2 and out == ""
    assert len(err) == 1 and err[0].startswith("embres.evaluate: error: "), err
    assert "usage:" not in err[0] and "(see --help)" in err[0]
    for word in words:
        assert word in err[0]


def test_help_documents_exit_status_and_replacement(capsys):
    text = build_parser().format_help()
    assert "--verbose" in text and "EMBRES_VERBOSE=1" in text
    assert "1 when a task" in text and "report.prev.json" in text
    assert "Exit status" in text


# --- Item 7: every --model checked up front; all bad ones named at once.


def test_all_bad_specs_are_named_at_once_before_anything_is_evaluated(capsys, tmp_path):
    calls = []
    register_loader("bad-inputs-counted", lambda target, **_: calls.append(target) or load_good(0))
    unfinished = tmp_path / "unfinished"
    (unfinished / "export").mkdir(parents=True)
    out = tmp_path / "report"
    specs = [
        "bad-inputs-counted:a",
        "nope",
        "model2vec:/no/such",
        f"static:{tmp_path / 'absent'}",
        "sentence-transformers:./not/here",
        "sentence-transformer:typo",
        str(unfinished),
    ]
    status, stdout, err = cli(capsys, *[a for s in specs for a in ("--model", s)], "--out", out)
    assert status == 2 and len(err) == 1, err
    line = err[0]
    assert "6 problems" in line
    assert "--model nope: unknown model 'nope'" in line
    assert "--model model2vec:/no/such: path /no/such does not exist" in line
    assert f"path {tmp_path / 'absent'} does not exist" in line
    assert "path ./not/here does not exist" in line
    assert "unknown prefix 'sentence-transformer:'" in line and "model2vec" in line
    assert f"{unfinished / 'export'} holds neither" in line
    assert calls == [] and not out.exists() and "wrote" not in stdout


def test_check_specs_accepts_what_loads_without_loading_it(tmp_path, monkeypatch, tiny_models):
    from embres.export import export_static
    from embres.testing import tiny_tokenizer

    tokenizer = tiny_tokenizer("bert")
    table = np.ones((len(tokenizer), 8), np.float32)
    static = export_static(table, tokenizer, tmp_path / "static", int8=True)
    hf = tiny_models("bert", hidden_size=16, num_layers=1, num_heads=2)
    good = [
        str(static),
        f"int8:{static}",
        f"static:{static}",
        f"model2vec:{static}",
        f"sentence-transformers:{static}",
        str(hf),
    ]
    assert check_specs(good) == []
    assert check_specs([str(static), f"int8:{static}"], int8=True) == []
    (bad,) = check_specs([f"model2vec:{static}"], int8=True)
    assert "int8=True (--int8) applies to embres static exports" in bad
    (bad,) = check_specs([str(static / "model.safetensors").replace("model.", "modle.")])
    assert "modle.safetensors" in bad
    # A hub id: refused offline when absent from the cache, left to the load when online.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (bad,) = check_specs(["model2vec:minishlab/not-cached-here"])
    assert "minishlab/not-cached-here" in bad and "HF_HUB_OFFLINE" in bad
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert check_specs(["model2vec:minishlab/not-cached-here"]) == []


def test_model2vec_loader_names_a_missing_path():
    """Item 12d from Python too: no HFValidationError about repo ids."""
    with pytest.raises(FileNotFoundError, match=r"path /no/such does not exist"):
        evaluate_model("model2vec:/no/such", ["memory"], log=None)


# --- Item 7: a failing task or model is recorded; the run goes on; exit status 1.


def test_failures_are_recorded_and_the_run_goes_on(capsys, tmp_path, sts_dir):
    out = tmp_path / "report"
    models = ["bad-inputs-good:1", "bad-inputs-broken-load:2", "bad-inputs-broken-task:3"]
    args = [a for m in models for a in ("--model", m)]
    args += ["--tasks", "sts,memory", "--sts-datasets", "stsb", "--data-dir", sts_dir]
    status, stdout, err = cli(capsys, *args, "--out", out)
    assert status == 1
    assert len(err) == 1 and err[0].startswith("embres.evaluate: error: 2 task(s) failed")
    assert "bad-inputs-broken-load:2 · load (OSError)" in err[0]
    assert "bad-inputs-broken-task:3 · sts (TypeError)" in err[0] and str(out) in err[0]
    report = json.loads((out / "report.json").read_text())
    assert report["pending"] == []
    good, broken_load, broken_task = report["models"]
    assert "sts/stsb_dev" in good["metrics"] and good["errors"] == {}
    assert broken_load["errors"] == {
        "load": {"type": "OSError", "message": "weights of 2 are truncated"}
    }
    assert broken_task["errors"]["sts"]["type"] == "TypeError"
    assert "not callable" in broken_task["errors"]["sts"]["message"]
    assert "memory/table_bytes" in broken_task["metrics"]  # the task after the failure ran
    md = (out / "report.md").read_text()
    assert_tables_well_formed(md)
    assert "| failed |" in md.splitlines()[2]
    assert "| bad-inputs-broken-task:3 |" in md and md.splitlines()[6].endswith("| sts |")
    failed = md.split("## Failed")[1].split("##")[0]
    assert "**bad-inputs-broken-load:2 · load**: OSError: weights of 2 are truncated" in failed
    assert "**bad-inputs-broken-task:3 · sts**: TypeError: 'tokenizers.Tokenizer'" in failed
    assert "sts: FAILED: TypeError" in stdout


def test_evaluate_model_raises_unless_asked_to_record(sts_dir):
    """Python callers keep exceptions; on_error is the opt-in that the command line uses."""
    with pytest.raises(OSError, match="truncated"):
        evaluate_model("bad-inputs-broken-load:x", ["memory"], log=None)
    seen = []
    record = evaluate_model(
        "bad-inputs-broken-task:x",
        ["speed", "memory"],
        log=None,
        on_error=lambda task, e: seen.append((task, type(e))),
        speed_texts=4,
        data_dir=sts_dir,
    )
    assert seen == [("speed", TypeError)] and "memory/table_bytes" in record["metrics"]


def test_report_is_written_after_each_model(capsys, tmp_path, sts_dir):
    """A stop during the second model keeps the first in a report that says it is partial."""
    out = tmp_path / "report"
    args = ["--model", "bad-inputs-good:1", "--model", "bad-inputs-ctrl-c:2"]
    args += ["--model", "bad-inputs-good:3", "--tasks", "memory", "--out", out]
    status, _, err = cli(capsys, *args)
    assert status == 130 and err == ["embres.evaluate: interrupted"]
    report = json.loads((out / "report.json").read_text())
    assert [m["name"] for m in report["models"]] == ["bad-inputs-good:1"]
    assert report["pending"] == ["bad-inputs-ctrl-c:2", "bad-inputs-good:3"]
    assert "memory/table_bytes" in report["models"][0]["metrics"]
    md = (out / "report.md").read_text()
    assert "**Incomplete**: 2 model(s) not evaluated yet" in md and "`bad-inputs-good:3`" in md
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md"]  # no temp files


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = atomic_write_text(tmp_path / "report.json", "old\n")

    def refuse(src, dst):
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(path, "new\n")
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == [path.name]


# --- Item 8: the speed task on a static export read through sentence-transformers.


def test_speed_of_a_static_export_through_sentence_transformers(capsys, tmp_path, sts_dir):
    pytest.importorskip("sentence_transformers")
    from embres.evaluate import load_embedder
    from embres.export import export_static, load_student
    from embres.testing import tiny_tokenizer

    tokenizer = tiny_tokenizer("bert")
    table = np.random.default_rng(0).normal(size=(len(tokenizer), 8)).astype(np.float32)
    path = export_static(table, tokenizer, tmp_path / "static")
    out = tmp_path / "report"
    args = ["--model", f"sentence-transformers:{path}", "--tasks", "speed,memory"]
    status, _, err = cli(capsys, *args, "--data-dir", sts_dir, "--speed-texts", 8, "--out", out)
    assert status == 0, err
    (record,) = json.loads((out / "report.json").read_text())["models"]
    assert record["errors"] == {}
    assert record["metrics"]["speed/sentences_per_s"] > 0
    assert record["metrics"]["speed/tokens_per_s"] > 0
    assert record["metrics"]["memory/table_dim"] == 8  # the StaticEmbedding's table is found
    # The token count is the one the static model embeds: embres's own tokenisation of it.
    _, _, info = load_embedder(f"sentence-transformers:{path}")
    texts = ["the man plays a guitar", "bir kedi koşuyor", "a dog runs in the piano"]
    expected = sum(len(ids) for ids in load_student(path).token_ids(texts))
    assert info["count_tokens"](texts) == expected


# --- Item 16: an earlier report is replaced with one line, and kept as report.prev.*.


def test_an_earlier_report_is_replaced_with_one_line_and_kept(capsys, tmp_path):
    out = tmp_path / "report"
    args = ["--model", "bad-inputs-good:1", "--tasks", "memory", "--out", out]
    status, stdout, _ = cli(capsys, *args)
    assert status == 0 and "replacing" not in stdout
    first = snapshot(out)
    created = json.loads(first["report.json"])["created"]
    (out / "quality_vs_size.png").write_bytes(b"a plot of the first report")
    status, stdout, err = cli(capsys, *args[:-1], out, "--model", "bad-inputs-good:2")
    assert status == 0 and err == []
    expected = f"replacing the report in {out}/ (written {created}); the previous one is kept"
    assert stdout.splitlines()[0].startswith(expected) and "report.prev.json" in stdout
    now = snapshot(out)
    assert now["report.prev.json"] == first["report.json"]
    assert now["report.prev.md"] == first["report.md"]
    assert now["quality_vs_size.prev.png"] == b"a plot of the first report"
    assert "quality_vs_size.png" not in now  # a stale plot never sits beside the new report
    assert len(json.loads(now["report.json"])["models"]) == 2


def test_keep_previous_keeps_one_consistent_generation(tmp_path):
    assert keep_previous(tmp_path / "nothing") is None
    (tmp_path / "report.prev.json").write_text("two runs ago")
    (tmp_path / "sts_tr_vs_en.prev.png").write_text("two runs ago")
    (tmp_path / "report.md").write_text("# last run\n")  # a report.md alone still counts
    line = keep_previous(tmp_path)
    assert line.startswith(f"replacing the report in {tmp_path}/ (written ")
    assert "report.prev.md" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.prev.md"]


# --- Item 17: report.md stays valid markdown however few metrics there are.


def test_markdown_when_every_task_was_skipped(capsys, tmp_path):
    out = tmp_path / "report"
    empty = tmp_path / "no_data"
    empty.mkdir()
    args = ["--model", "bad-inputs-good:1", "--tasks", "sts,probe", "--data-dir", empty]
    status, stdout, _ = cli(capsys, *args, "--out", out)
    assert status == 0
    md = (out / "report.md").read_text()
    assert "No metric was computed: every task was skipped" in md
    assert not any(line.startswith("|") for line in md.splitlines())
    assert "## Skipped" in md and "stsb/sts-dev.csv" in md
    assert "No metric was computed" in stdout


@pytest.mark.parametrize(
    "records",
    [
        [{"name": "a", "metrics": {}, "skipped": {"sts": "no data"}}],
        [{"name": "a", "metrics": {}, "errors": {"load": {"type": "OSError", "message": "x"}}}],
        [
            {"name": "a|b", "metrics": {"sts/stsb_dev": 80.0, "speed/device": "cpu | 2"}},
            {"name": "c", "metrics": {}, "errors": {"sts": {"type": "E", "message": "1\n2"}}},
        ],
        [],
    ],
    ids=["all-skipped", "only-a-failure", "pipes-and-newlines", "no-model"],
)
def test_markdown_tables_are_well_formed(records):
    md = markdown(records)
    assert_tables_well_formed(md)
    if not records:
        assert "No model in this report." in md
    if any(r.get("errors") for r in records):
        assert "| failed |" in md and "## Failed" in md


# --- Item 18: --compare says why no plot was drawn.


def test_compare_without_a_shared_metric_says_why_there_is_no_plot(capsys, tmp_path):
    write_report([{"name": "teacher", "metrics": {"sts/stsb_dev": 86.7}}], tmp_path / "a")
    speed = {"speed/sentences_per_s": 50.0, "speed/latency_p50_ms": 20.0}
    write_report([{"name": "student", "metrics": speed}], tmp_path / "b")
    out = tmp_path / "c"
    status, stdout, err = cli(capsys, "--compare", tmp_path / "a", tmp_path / "b", "--out", out)
    assert status == 0 and err == []
    note = (
        "no plot: the models share no metric (teacher: sts/stsb_dev; "
        "student: speed/sentences_per_s, speed/latency_p50_ms)"
    )
    assert note in stdout
    assert json.loads((out / "report.json").read_text())["plot_notes"] == [note]
    assert note in (out / "report.md").read_text()
    assert not list(out.glob("*.png"))


def test_plot_notes_name_what_each_missing_plot_needs(tmp_path):
    records = [
        {"name": "a", "metrics": {"sts/stsb_dev": 80.0, "memory/resident_bytes": 2**20}},
        {"name": "b", "metrics": {"sts/stsb_dev": 70.0, "memory/resident_bytes": 2**21}},
        {"name": "c", "metrics": {"sts/stsb_dev": 75.0, "speed/sentences_per_s": 9.0}},
    ]
    notes = plot_notes(records)
    assert notes == [
        "no quality_vs_speed.png: it needs two models with both sts/stsb_dev and "
        "speed/sentences_per_s; 1 has both (c)"
    ]
    written = write_report(records, tmp_path)
    assert "quality_vs_size" in written and "quality_vs_speed" not in written
    assert plot_notes(records[:1]) == []  # one model: no comparison is expected
    probe_only = [{"name": n, "metrics": {"memory/resident_bytes": 1}} for n in "xy"]
    assert plot_notes(probe_only) == [
        "no plot: no model has a quality metric (a task among sts, probe, retrieval)"
    ]


def test_compare_names_every_unreadable_report_and_touches_nothing(capsys, tmp_path):
    write_report([{"name": "a", "metrics": {"sts/stsb_dev": 1.0}}], tmp_path / "good")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "report.json").write_text("{not json")
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    dirs = [tmp_path / n for n in ("good", "missing", "corrupt", "empty")]
    status, stdout, err = cli(capsys, "--compare", *dirs, "--out", out)
    assert status == 2 and len(err) == 1 and stdout == ""
    assert f"{tmp_path / 'missing'} does not exist" in err[0]
    assert f"{tmp_path / 'corrupt' / 'report.json'}: not valid JSON" in err[0]
    assert f"no report in {tmp_path / 'empty'}" in err[0]
    assert not out.exists()
    with pytest.raises(DataFormatError, match=r"corrupt/report\.json: not valid JSON"):
        load_records(tmp_path / "corrupt")


# --- Issue 24, rows 14, 16 and 26: real command lines in subprocesses.


def start_evaluate(cwd: Path, *args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "embres.evaluate", *map(str, args)],
        cwd=cwd,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen) -> tuple[int, str, list[str]]:
    """(exit status, stdout, non-empty stderr lines) of a finished command; no traceback."""
    stdout, stderr = proc.communicate(timeout=240)
    assert "Traceback" not in stdout + stderr, stderr
    return proc.returncode, stdout, [line for line in stderr.splitlines() if line.strip()]


@pytest.fixture
def nan_export(tmp_path):
    """A tiny static export whose table is all NaN (written directly, as a diverged run's)."""
    from safetensors.numpy import load_file, save_file

    from embres.export import export_static
    from embres.testing import tiny_tokenizer

    tokenizer = tiny_tokenizer("bert")
    folder = export_static(np.ones((len(tokenizer), 8), np.float32), tokenizer, tmp_path / "nan")
    tensors = load_file(str(folder / "model.safetensors"))
    save_file(
        {k: np.full_like(v, np.nan) for k, v in tensors.items()}, str(folder / "model.safetensors")
    )
    return folder


def test_nan_scores_are_a_failed_task_and_plots_skip_them(tmp_path, sts_dir, nan_export):
    """Row 14: STS-B and STSb-TR both NaN drew sts_tr_vs_en.png with NaN limits (a crash)."""
    dev = (sts_dir / "stsb" / "sts-dev.csv").read_text()
    (sts_dir / "stsb_tr").mkdir()
    header = "genre\tdataset\tyear\tsid\tscore\tsentence1\tsentence2\n"
    (sts_dir / "stsb_tr" / "stsb_tr_dev.tsv").write_text(header + dev)
    out = tmp_path / "report"
    proc = start_evaluate(
        tmp_path, "--model", nan_export, "--tasks", "sts", "--data-dir", sts_dir, "--out", out
    )
    status, stdout, err = finish(proc)
    # transformers may add its own "model of type `model2vec`" warning line when loading
    err = [line for line in err if line.startswith("embres.evaluate")]
    assert status == 1 and len(err) == 1, err
    assert err[0].startswith("embres.evaluate: error: 1 task(s) failed: ")
    assert f"{nan_export} · sts (NonFiniteScoreError)" in err[0]
    (record,) = json.loads((out / "report.json").read_text())["models"]
    message = record["errors"]["sts"]["message"]
    assert message.startswith("sts/stsb_dev=nan, sts/stsb_tr_dev=nan: not a finite score")
    assert "the model's vectors are not finite" in message
    assert record["metrics"] == {} and "| nan" not in stdout
    assert not list(out.glob("*.png"))


def test_plots_leave_out_non_finite_metrics_of_an_older_report(tmp_path):
    """Row 14 for --compare: a report.json written before the fix may hold NaN scores."""
    records = [
        {"name": "a", "metrics": {"sts/stsb_dev": 80.0, "sts/stsb_tr_dev": 70.0}},
        {"name": "b", "metrics": {"sts/stsb_dev": float("nan"), "sts/stsb_tr_dev": float("inf")}},
    ]
    curves = tmp_path / "metrics.jsonl"
    curves.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": NaN}\n')
    written = write_report(records, tmp_path / "out", curves=[curves])
    assert "sts_tr_vs_en" in written and "training_curves" in written


def test_empty_tasks_and_read_only_out_are_one_line(tmp_path):
    """Row 26 (--tasks "") and row 16 (--out on a read-only file system, existing or not)."""
    with readonly_dir(tmp_path / "mnt") as ro:
        from embres.export import export_static
        from embres.testing import tiny_tokenizer

        tokenizer = tiny_tokenizer("bert")
        tiny = export_static(np.ones((len(tokenizer), 8), np.float32), tokenizer, tmp_path / "m")
        model = ["--model", tiny, "--tasks", "sts", "--data-dir", tmp_path / "no_data"]
        procs = {
            "empty tasks": start_evaluate(tmp_path, "--model", "all-MiniLM-L6-v2", "--tasks", ""),
            "read-only out": start_evaluate(tmp_path, *model, "--out", ro),
            "read-only out/sub": start_evaluate(tmp_path, *model, "--out", ro / "sub"),
        }
        results = {name: finish(proc) for name, proc in procs.items()}
    for name, (status, stdout, err) in results.items():
        assert status == 2 and len(err) == 1 and stdout == "", (name, err)
        assert err[0].startswith("embres.evaluate: error: "), err
    line = results["empty tasks"][2][0]
    assert "--tasks '' names no task; expected one or more of sts,probe,retrieval" in line
    assert not (tmp_path / "eval_report").exists()
    for name, path in (("read-only out", ro), ("read-only out/sub", ro / "sub")):
        line = results[name][2][0]
        assert f"--out {path}: cannot write in {ro}: it is on a read-only file system" in line
