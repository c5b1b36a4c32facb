"""Checkpointer: round trip, keep-K, corrupt and partial checkpoints, kill-and-resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from embres.checkpointing import Checkpointer, CheckpointShapeError
from embres.testing import tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]


def _state(value: float):
    return {
        "step": jnp.int32(int(value)),
        "params": {"A": jnp.full((4, 3), value), "B": jnp.arange(6.0).reshape(2, 3) * value},
    }


def _abstract():
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _state(0.0))


def test_round_trip_interval_and_keep(tmp_path):
    ckpt = Checkpointer(tmp_path / "ckpt", every_steps=2, keep=2)
    for step in range(1, 8):
        ckpt.save(step, _state(step), {"index": step}, {"base_model": "m"})
    assert ckpt.all_steps() == [4, 6]
    assert ckpt.save(7, _state(7), {"index": 7}, {"base_model": "m"}, force=True)
    step, state, data_state, meta = ckpt.restore(_abstract())
    assert (step, data_state, meta["base_model"]) == (7, {"index": 7}, "m")
    np.testing.assert_array_equal(state["params"]["A"], _state(7)["params"]["A"])
    ckpt.close()


def _corrupt(step_dir: Path) -> None:
    for path in (step_dir / "state").rglob("*"):
        if path.is_file() and path.stat().st_size > 0:
            data = bytearray(path.read_bytes())
            for i in range(0, len(data), 7):
                data[i] ^= 0x5A
            path.write_bytes(bytes(data))


def test_corrupt_checkpoint_is_reported_and_previous_used(tmp_path):
    messages = []
    ckpt = Checkpointer(tmp_path / "ckpt", every_steps=1, keep=3, report=messages.append)
    for step in (1, 2):
        ckpt.save(step, _state(step), {"index": step}, {"base_model": "m"})
    ckpt.close()
    _corrupt(tmp_path / "ckpt" / "2")
    ckpt = Checkpointer(tmp_path / "ckpt", every_steps=1, keep=3, report=messages.append)
    step, state, data_state, _ = ckpt.restore(_abstract())
    assert step == 1 and data_state == {"index": 1}
    np.testing.assert_array_equal(state["params"]["B"], _state(1)["params"]["B"])
    assert any("step 2" in m and "corrupt" in m for m in messages), messages
    assert (tmp_path / "corrupt_checkpoints" / "2").is_dir()
    # Training goes on: step 2 can be written again.
    assert ckpt.save(2, _state(2), {"index": 2}, {"base_model": "m"})
    ckpt.close()


def test_silently_changed_arrays_fail_the_fingerprint(tmp_path):
    messages = []
    ckpt = Checkpointer(tmp_path / "ckpt", every_steps=1, keep=3, report=messages.append)
    ckpt.save(1, _state(1), {"index": 1}, {"base_model": "m"})
    ckpt.save(2, _state(2), {"index": 2}, {"base_model": "m"})
    ckpt.close()
    meta_file = tmp_path / "ckpt" / "2" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    meta["fingerprint"][-1][0] += 1000.0  # as if the arrays had changed under the metadata
    meta_file.write_text(json.dumps(meta))
    ckpt = Checkpointer(tmp_path / "ckpt", every_steps=1, keep=3, report=messages.append)
    assert ckpt.restore(_abstract())[0] == 1
    assert any("fingerprint" in m and "step 2" in m for m in messages), messages


def test_checkpoint_of_other_shapes_stops_the_run_and_is_kept(tmp_path):
    ckpt = Checkpointer(tmp_path / "ckpt", every_steps=1, keep=3)
    ckpt.save(1, _state(1.0), {"pos": 1}, {"base_model": "m"})
    wider = jax.tree.map(lambda x: x, _abstract())
    wider["params"]["A"] = jax.ShapeDtypeStruct((4, 5), jnp.float32)  # e.g. another rank
    with pytest.raises(CheckpointShapeError, match=r"params/A: saved \(4, 3\), this run \(4, 5\)"):
        ckpt.restore(wider)
    padded = jax.tree.map(lambda x: x, _abstract())
    padded["params"]["A"] = jax.ShapeDtypeStruct((8, 3), jnp.float32)  # other vocab padding
    with pytest.raises(CheckpointShapeError, match=r"Only the vocabulary rows differ.*pad_vocab"):
        ckpt.restore(padded)
    assert ckpt.all_steps() == [1]  # not quarantined: it is whole, just not for this config
    assert ckpt.restore(_abstract())[0] == 1
    ckpt.close()


def test_partial_checkpoint_is_ignored(tmp_path):
    messages = []
    ckpt = Checkpointer(tmp_path / "ckpt", every_steps=1, keep=3, report=messages.append)
    ckpt.save(1, _state(1), {"index": 1}, {"base_model": "m"})
    ckpt.close()
    (tmp_path / "ckpt" / "2.orbax-checkpoint-tmp").mkdir()
    ckpt = Checkpointer(tmp_path / "ckpt", every_steps=1, keep=3, report=messages.append)
    assert ckpt.restore(_abstract())[0] == 1
    assert any("partial" in m for m in messages)


def _train_cmd(model_dir, workdir, steps):
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
    ]


def test_sigkill_and_resume_matches_uninterrupted_run(tmp_path):
    model_dir = tiny_checkpoint("bert", tmp_path / "tiny", hidden_size=32, num_layers=2)
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
    steps = 400
    # Uninterrupted reference.
    subprocess.run(
        _train_cmd(model_dir, tmp_path / "ref", steps),
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    # Killed once a checkpoint exists, mid-way, then restarted on the same workdir.
    work = tmp_path / "killed"
    proc = subprocess.Popen(
        _train_cmd(model_dir, work, steps),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    ckpt_dir = work / "checkpoints"
    while time.time() < deadline:
        done = [p for p in ckpt_dir.glob("*") if p.name.isdigit()] if ckpt_dir.is_dir() else []
        if done:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    steps_at_kill = sorted(int(p.name) for p in ckpt_dir.glob("*") if p.name.isdigit())
    assert steps_at_kill and steps_at_kill[-1] < steps, "the run finished before the kill"
    assert not (work / "export").exists()
    out = subprocess.run(
        _train_cmd(model_dir, work, steps),
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "resumed from step" in out.stdout
    ref = load_file(str(tmp_path / "ref" / "export" / "adapter" / "adapter.safetensors"))
    got = load_file(str(work / "export" / "adapter" / "adapter.safetensors"))
    for key in ref:
        np.testing.assert_allclose(got[key], ref[key], atol=1e-6, rtol=0)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
