"""Adversarial inputs to ``python -m embres.vocab``: one clear line per mistake, nothing written.

Issue 24, rows 7, 8, 9, 10, 13 and 19, each through the real command line in a subprocess
(exit status 2, one stderr line naming the value and what was expected), plus the warning
of a vocabulary smaller than asked and an --out on a read-only file system.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _readonly import readonly_dir

import embres

# The embres under test (PYTHONPATH may point at another checkout): subprocesses run it too.
ROOT = Path(embres.__file__).resolve().parents[1]


def subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "EMBRES_VERBOSE"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**env, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def start(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "embres.vocab", *args],
        cwd=cwd,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def error_line_problem(proc: subprocess.Popen, words: list[str]) -> str | None:
    """What is wrong with a refused command's output (exit 2, one stderr line holding
    ``words``, no traceback, no result printed), or None."""
    stdout, stderr = proc.communicate(timeout=180)
    lines = [line for line in stderr.splitlines() if line.strip()]
    if proc.returncode != 2 or len(lines) != 1 or "Traceback" in stderr + stdout:
        return f"exit {proc.returncode}, stderr {stderr[-300:]!r}, stdout {stdout[-200:]!r}"
    if not lines[0].startswith("embres.vocab: error: "):
        return f"not an error line: {lines[0]!r}"
    missing = [w for w in words if w not in lines[0]]
    return f"{lines[0]!r} lacks {missing}" if missing else None


@pytest.fixture
def texts(tmp_path):
    """small.txt (40 Turkish-like lines), empty.txt (blank lines only), binary.txt, a file."""
    words = "ev kedi bahçe uyuyor güzel çocuk okul kitap deniz yol".split()
    lines = [" ".join(words[(i + k) % len(words)] for k in range(6)) for i in range(40)]
    (tmp_path / "small.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("\n  \n\n", encoding="utf-8")
    (tmp_path / "binary.txt").write_bytes((bytes(range(128, 256)) + b"\n") * 50)
    (tmp_path / "a_file").write_text("not a folder\n")
    return tmp_path


STATS = ["stats", "--tokenizer", "all-MiniLM-L6-v2"]
TRAIN = ["train", "--vocab-size", "500"]
# name -> (arguments, words the error line must hold)
MISTAKES = {
    "row 7: --limit 0": (
        [*STATS, "--text", "small.txt", "--limit", "0"],
        ["--limit", "'0'", "positive integer"],
    ),
    "row 7: empty --text": (
        [*STATS, "--text", "empty.txt"],
        ["--text 'empty.txt'", "no non-empty line"],
    ),
    "row 8: --limit -5": (
        [*STATS, "--text", "small.txt", "--limit", "-5"],
        ["--limit", "'-5'", "positive integer"],
    ),
    "row 9: --dim 0": (
        [*STATS, "--text", "small.txt", "--dim", "0"],
        ["--dim", "'0'", "positive integer"],
    ),
    "row 10: train on an empty --text": (
        [*TRAIN, "--text", "empty.txt", "--out", "tok_empty"],
        ["--text 'empty.txt'", "no non-empty line"],
    ),
    "row 13: --out is a file": (
        [*TRAIN, "--text", "small.txt", "--out", "a_file"],
        ["--out a_file", "is a file", "expected a folder"],
    ),
    "row 19: stats on a binary --text": (
        [*STATS, "--text", "binary.txt"],
        ["--text binary.txt", "not valid UTF-8", "binary"],
    ),
    "row 19: train on a binary --text": (
        [*TRAIN, "--text", "binary.txt", "--out", "tok_binary"],
        ["--text binary.txt", "not valid UTF-8", "binary"],
    ),
}


def test_cli_mistakes_are_one_line_exit_2_and_write_nothing(texts):
    """Rows 7, 8, 9, 10, 13, 19: refused before any work, the value named in one line."""
    before = {p.name: p.read_bytes() for p in texts.iterdir()}
    procs = {name: start(texts, *args) for name, (args, _) in MISTAKES.items()}
    problems = {name: error_line_problem(proc, MISTAKES[name][1]) for name, proc in procs.items()}
    assert {name: p for name, p in problems.items() if p} == {}
    assert {p.name: p.read_bytes() for p in texts.iterdir()} == before  # nothing written


def test_out_on_a_read_only_file_system_is_refused_before_training(texts):
    with readonly_dir(texts / "mnt") as ro:
        proc = start(texts, *TRAIN, "--text", "small.txt", "--out", str(ro / "tok"))
        words = [f"--out {ro / 'tok'}: cannot write in {ro}: it is on a read-only file system"]
        assert error_line_problem(proc, words) is None


def test_train_warns_when_the_vocabulary_is_smaller_than_asked(texts, capsys):
    """Row 10's general case: 40 short lines cannot give 500 tokens; the user is told."""
    from embres.vocab.__main__ import main

    out = texts / "tok"
    assert main([*TRAIN, "--text", str(texts / "small.txt"), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    (warning,) = [line for line in captured.err.splitlines() if "warning" in line]
    size = int(captured.out.split("vocabulary of ")[1].split()[0])
    assert size < 500 and (out / "tokenizer.json").is_file()
    assert warning.startswith("embres.vocab: warning: the text gave ")
    assert f"{size} tokens, fewer than --vocab-size 500 (40 lines, 10 distinct words)" in warning
