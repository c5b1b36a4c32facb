"""Every config builds with its small argument and trains 2 steps; overrides are checked."""

import subprocess
import sys
from pathlib import Path

import pytest
from _train_utils import REPO, load_config_module, tiny_config

from embres import configlib, train

# The language configs need translation pairs, a WordPiece teacher and (the second stage) a
# first stage's export: tests/test_cross_lingual.py trains each of them on tiny data. The
# hybrids' second stage needs a first stage too: tests/test_hybrid_finetune.py trains it.
LANGUAGE = (
    "language_finetune",
    "language_full",
    "language_hybrid",
    "language_static",
    "language_transfer",
)
SECOND_STAGES = ("hybrid_finetune",)
CONFIGS = sorted(
    p.stem
    for p in (REPO / "configs").glob("*.py")
    if p.stem not in LANGUAGE and p.stem not in SECOND_STAGES
)


@pytest.fixture(scope="module")
def tiny_model(tiny_models):
    return tiny_models("bert", hidden_size=32, num_layers=2)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds_and_trains_two_steps(name, tiny_model, tmp_path):
    full = load_config_module(name).get_config()
    assert full.total_steps > 2 and full.model == "all-MiniLM-L6-v2"
    config = tiny_config(tiny_model, name, total_steps=2, export=True)
    out = train.train_and_evaluate(config, tmp_path / "work")
    assert out["final_step"] == 2 and out["step_traces"] == 1
    assert (tmp_path / "work" / "export").is_dir()
    assert len((tmp_path / "work" / "metrics.jsonl").read_text().splitlines()) >= 2


def test_parse_arg_types_and_unknown_keys():
    arg = configlib.parse_arg("runlocal,rank=32", runlocal=False, rank=80)
    assert arg.runlocal is True and arg.rank == 32
    with pytest.raises(ValueError, match=r"'rnak' is unknown; accepted: \['rank', 'runlocal'\]"):
        configlib.parse_arg("rnak=3", runlocal=False, rank=80)


def test_lowrank_arg_sets_rank():
    assert load_config_module("lowrank").get_config("rank=48").adapter.rank == 48


def test_typo_in_override_fails_with_its_name():
    cmd = [
        sys.executable,
        "-m",
        "embres.train",
        "--config=configs/lowrank.py:runlocal",
        "--config.adapter.rnak=3",
        "--workdir=/nonexistent/never",
    ]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "rnak" in out.stderr
    assert not Path("/nonexistent/never").exists()


def test_wrong_type_override_fails():
    cmd = [
        sys.executable,
        "-m",
        "embres.train",
        "--config=configs/lowrank.py:runlocal",
        "--config.adapter.rank=many",
        "--workdir=/nonexistent/never",
    ]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "rank" in out.stderr
