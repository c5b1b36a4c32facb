"""Shared helpers for the training tests: a tiny training config from a shipped one."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ml_collections

from embres import configlib

REPO = Path(__file__).resolve().parents[1]


def load_config_module(name: str):
    """Imports ``configs/<name>.py`` by path (configs/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        f"configs_{name}", REPO / "configs" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_config(model_dir, name: str = "lowrank", **overrides):
    """``configs/<name>.py:runlocal`` on the tiny model, with dotted-key overrides."""
    config = load_config_module(name).get_config("runlocal")
    config.model = str(model_dir)
    config.evals = ml_collections.ConfigDict()
    config.eval.heldout_texts = 8
    config.export = False
    if name == "lowrank":
        config.adapter.rank = 8
        config.adapter.storage_dtype = "float32"  # exact comparisons between runs
    if name == "projection":
        config.adapter.target_dim = 16
    configlib.apply_overrides(config, overrides)
    return config


def train_cmd(model_dir, workdir, steps: int, *extra: str) -> list[str]:
    """``python -m embres.train`` on the tiny model: lowrank runlocal, rank 8, float32 factors.

    Checkpoints every 20 steps (two kept); ``extra`` flags are appended (later ones win).
    """
    import sys

    return [
        sys.executable,
        "-m",
        "embres.train",
        "--config=configs/lowrank.py:runlocal",
        f"--workdir={workdir}",
        f"--config.model={model_dir}",
        "--config.adapter.rank=8",
        "--config.adapter.storage_dtype=float32",
        f"--config.total_steps={steps}",
        "--config.checkpoint.every_steps=20",
        "--config.checkpoint.keep=2",
        "--config.log_every_steps=10",
        "--config.eval.heldout_texts=4",
        *extra,
    ]
