"""Checkpointer: round trip, keep-K, corrupt and partial checkpoints, kill-and-resume."""

import asyncio
import gc
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from _train_utils import train_cmd
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from safetensors.numpy import load_file

from embres import checkpoint_errors, checkpointing
from embres.checkpoint_errors import corruption_reason
from embres.checkpoint_fingerprint import fingerprint, fingerprint_problems, fingerprints_match
from embres.checkpointing import (
    Checkpointer,
    CheckpointReadError,
    CheckpointShapeError,
    config_changes,
)

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


def _save_two(directory, messages=None, state=_state):
    ckpt = Checkpointer(
        directory, every_steps=1, keep=3, report=messages.append if messages is not None else None
    )
    for step in (1, 2):
        ckpt.save(step, state(float(step)), {"index": step}, {"base_model": "m"})
    ckpt.close()
    return Checkpointer(
        directory, every_steps=1, keep=3, report=messages.append if messages is not None else None
    )


def _edit_meta(step_dir: Path, edit) -> None:
    meta_file = step_dir / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    edit(meta)
    meta_file.write_text(json.dumps(meta))


def test_silently_changed_arrays_fail_the_fingerprint(tmp_path):
    messages = []
    ckpt = _save_two(tmp_path / "ckpt", messages)
    ckpt.close()
    # As if the arrays had changed under the metadata (grossly: the float sums see it).
    _edit_meta(tmp_path / "ckpt" / "2", lambda m: m["fingerprint"][-1].update(sum=1000.0))
    ckpt = Checkpointer(tmp_path / "ckpt", every_steps=1, keep=3, report=messages.append)
    assert ckpt.restore(_abstract())[0] == 1
    assert any("fingerprint" in m and "step 2" in m for m in messages), messages
    assert (tmp_path / "corrupt_checkpoints" / "2").is_dir()


def test_one_changed_element_on_disk_is_caught(tmp_path):
    """Arrays that read back fine but differ in one element (below any float-sum tolerance)."""
    messages = []
    ckpt = _save_two(tmp_path / "ckpt", messages)
    ckpt.close()
    other = Checkpointer(tmp_path / "other", every_steps=1, keep=3)
    changed = _state(2.0)
    changed["params"]["A"] = changed["params"]["A"].at[1, 2].add(1e-6)
    other.save(2, changed, {"index": 2}, {"base_model": "m"})
    other.close()
    shutil.rmtree(tmp_path / "ckpt" / "2" / "state")
    shutil.copytree(tmp_path / "other" / "2" / "state", tmp_path / "ckpt" / "2" / "state")
    ckpt = Checkpointer(tmp_path / "ckpt", every_steps=1, keep=3, report=messages.append)
    step, state, _, _ = ckpt.restore(_abstract())
    assert step == 1
    np.testing.assert_array_equal(state["params"]["A"], _state(1)["params"]["A"])
    assert any("step 2" in m and "fingerprint" in m and "params/A" in m for m in messages)


def test_checkpoint_without_fingerprint_restores_unverified(tmp_path):
    messages = []
    ckpt = _save_two(tmp_path / "ckpt", messages)
    ckpt.close()
    _edit_meta(tmp_path / "ckpt" / "2", lambda m: m.pop("fingerprint"))
    ckpt = Checkpointer(tmp_path / "ckpt", every_steps=1, keep=3, report=messages.append)
    step, state, data_state, meta = ckpt.restore(_abstract())
    assert (step, data_state, meta["base_model"]) == (2, {"index": 2}, "m")
    np.testing.assert_array_equal(state["params"]["B"], _state(2)["params"]["B"])
    assert any("step 2" in m and "not verified" in m for m in messages), messages
    assert ckpt.all_steps() == [1, 2] and not (tmp_path / "corrupt_checkpoints").exists()
    ckpt.close()


def test_restore_in_another_dtype_is_unverified_not_corrupt(tmp_path):
    messages = []
    third = lambda v: {"w": jnp.arange(12.0).reshape(4, 3) * v / 3}  # not exact in bfloat16
    ckpt = _save_two(tmp_path / "ckpt", messages, state=third)
    abstract = {"w": jax.ShapeDtypeStruct((4, 3), jnp.bfloat16)}  # Orbax casts silently
    step, state, _, _ = ckpt.restore(abstract)
    assert step == 2 and state["w"].dtype == jnp.bfloat16
    assert any(
        "not verified" in m and "w (saved as float32, restored as bfloat16)" in m for m in messages
    )
    assert ckpt.all_steps() == [1, 2]
    ckpt.close()


@pytest.mark.parametrize(
    "error",
    [
        OSError(5, "Input/output error"),
        FileNotFoundError("File /ckpt/2/meta/metadata not found."),
        ValueError('NOT_FOUND: Error opening "zarr" driver: Metadata does not exist'),
        ValueError(
            "One of device_put args was given the sharding of NamedSharding(...), which implies that the global size of its dimension 0 should be divisible by 8"
        ),
    ],
    ids=["io", "missing-file", "tensorstore-not-found", "sharding"],
)
def test_read_error_leaves_checkpoint_in_place(tmp_path, monkeypatch, error):
    messages = []
    ckpt = _save_two(tmp_path / "ckpt", messages)

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(ckpt.manager, "restore", fail)
    with pytest.raises(CheckpointReadError) as info:
        ckpt.restore(_abstract())
    text = str(info.value)
    assert f"step 2 in {tmp_path / 'ckpt'}" in text and "left in place" in text, text
    assert type(error).__name__ in text and info.value.__cause__ is error
    assert ckpt.all_steps() == [1, 2] and (tmp_path / "ckpt" / "2").is_dir()
    assert not (tmp_path / "corrupt_checkpoints").exists()
    assert not any("corrupt" in m for m in messages), messages
    ckpt.close()


def test_which_errors_prove_corruption():
    proof = [
        json.JSONDecodeError("Expecting value", "", 0),
        ValueError("DATA_LOSS: Error reading ... Error decoding b-tree node"),
        ValueError(
            'OUT_OF_RANGE: Error reading Byte range [0, 287) of local file "x/d/0a": Requested byte range [0, 287) is not valid for value of size 143'
        ),
        ValueError(
            'Error opening "zarr" driver: Error decoding b-tree node: ZSTD_decompressStream() failed'
        ),
        ValueError(
            'FAILED_PRECONDITION: Error reading local file "x/state/_sharding": Invalid JSON'
        ),
    ]
    wrapped = RuntimeError("Encountered error while reading array index")
    wrapped.__cause__ = proof[1]
    for error in [*proof, wrapped]:
        assert corruption_reason(error), error
    for error in [
        OSError(5, "Input/output error"),
        FileNotFoundError("Metadata file (named _METADATA) does not exist"),
        ValueError('NOT_FOUND: Error opening "zarr" driver'),
        ValueError("OUT_OF_RANGE: Index 9 is outside valid range [0, 8)"),  # not a byte range
        ValueError("sharding of dimension 0 should be divisible by 8"),
        KeyError("fingerprint"),
        MemoryError(),
    ]:
        assert corruption_reason(error) is None, error


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # Orbax's loop
@pytest.mark.parametrize("which", ["array-data", "meta"])
def test_truncated_files_are_corrupt(tmp_path, which):
    """The real Orbax/TensorStore errors for truncated files are recognised as proof."""
    messages = []
    ckpt = _save_two(tmp_path / "ckpt", messages)
    ckpt.close()
    step_dir = tmp_path / "ckpt" / "2"
    if which == "meta":
        path = step_dir / "meta" / "metadata"
    else:
        path = max((step_dir / "state" / "d").iterdir(), key=lambda p: p.stat().st_size)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    ckpt = Checkpointer(tmp_path / "ckpt", every_steps=1, keep=3, report=messages.append)
    assert ckpt.restore(_abstract())[0] == 1
    assert any("step 2" in m and "corrupt" in m for m in messages), messages
    assert (tmp_path / "corrupt_checkpoints" / "2").is_dir()
    ckpt.close()


TRUNCATED = (
    'OUT_OF_RANGE: Error reading Byte range [0, 7147) of local file "x/d/eb9c": Requested '
    "byte range [0, 7147) is not valid for value of size 3573"
)


def _collect_failed_task(filename: str, message: str = "OUT_OF_RANGE") -> None:
    """Lets a task whose coroutine lives in ``filename`` fail unawaited with
    ``ValueError(message)``, then collects it."""
    namespace = {"message": message}
    exec(
        compile("async def read():\n    raise ValueError(message)\n", filename, "exec"),
        namespace,
    )
    loop = asyncio.new_event_loop()
    task = loop.create_task(namespace["read"]())
    loop.run_until_complete(asyncio.sleep(0))  # the task runs and fails; nobody awaits it
    loop.close()
    del task
    gc.collect()


def test_collected_orbax_read_task_is_debug_noise_but_others_still_report(caplog, monkeypatch):
    """asyncio's "Task exception was never retrieved" for an abandoned Orbax read is dropped.

    The same report for any other coroutine still reaches the log, and so does the Orbax one
    once the filter is removed.
    """
    # An earlier corrupt restore in this process leaves its filter on by design; start clean.
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    monkeypatch.setattr(logging.getLogger("asyncio"), "filters", [])
    remove = checkpoint_errors.install_read_debris_filter()
    assert remove is not None
    try:
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            _collect_failed_task("/site-packages/orbax/checkpoint/serialization.py")
            assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text
            # asyncio's own wrapper around a TensorStore future: told by its error alone
            _collect_failed_task("/lib/python3/asyncio/tasks.py", TRUNCATED)
            assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text
            _collect_failed_task("/work/mine.py")
            assert "never retrieved" in caplog.text and "mine.py" in caplog.text
    finally:
        remove()
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        _collect_failed_task("/site-packages/orbax/checkpoint/serialization.py")
    assert "never retrieved" in caplog.text


def _mesh(shape, names):
    # Auto axes, as the trainer's meshes (distributed.make_mesh) use.
    return jax.make_mesh(shape, names, axis_types=(jax.sharding.AxisType.Auto,) * len(names))


def _table_state(table):
    return {"step": jnp.int32(7), "params": {"table": table, "bias": jnp.linspace(-1.0, 1.0, 384)}}


def test_fingerprint_is_the_same_on_every_mesh_and_sees_one_element():
    rng = np.random.default_rng(0)
    table = rng.normal(0.0, 0.05, (30_000, 384)).astype(np.float32)
    table -= table.mean(axis=0)  # centred, like a PCA-initialised table: sum(x) cancels to ~0
    data = _mesh((8,), ("data",))
    model = _mesh((8,), ("model",))
    replicated = jax.device_put(table, NamedSharding(data, P()))
    rows = jax.device_put(table, NamedSharding(model, P("model", None)))
    saved = fingerprint(_table_state(replicated))
    restored = fingerprint(_table_state(rows))
    assert fingerprint_problems(saved, restored) == ([], [])
    checksums = [e["checksum"] for e in saved]
    assert checksums == [e["checksum"] for e in restored]  # exact on every mesh
    cols = jax.device_put(table, NamedSharding(_mesh((2, 4), ("data", "model")), P(None, "model")))
    assert [e["checksum"] for e in fingerprint(_table_state(cols))] == checksums
    del replicated, cols

    def problems(changed):
        return fingerprint_problems(saved, fingerprint(_table_state(changed)))[0]

    assert problems(rows.at[12_345, 67].add(1e-2)) == ["params/table"]
    assert problems(rows.at[4_321].multiply(-1.0)) == ["params/table"]  # a row's sign
    assert problems(rows.at[jnp.array([0, 1])].set(rows[jnp.array([1, 0])])) == ["params/table"]


def test_fingerprint_tolerance_scales_with_the_sum_of_magnitudes():
    # Two float32 sums of the same centred 30,000 x 384 table on two meshes: sum(x) is
    # pure rounding noise, so only a tolerance on sum(|x|) holds.
    entry = {"path": "t", "dtype": "float32", "sum": 4.9591064e-05, "abs_sum": 459375.75}
    other = dict(entry, sum=6.1035156e-05, abs_sum=459375.72)
    assert fingerprints_match([entry], [other])
    assert not fingerprints_match([entry], [dict(entry, sum=0.01 * entry["abs_sum"])])
    assert not fingerprints_match([entry], [dict(entry, abs_sum=0.99 * entry["abs_sum"])])
    zeros = {"path": "z", "dtype": "float32", "sum": 0.0, "abs_sum": 0.0}
    assert fingerprints_match([zeros], [zeros])
    assert not fingerprints_match([zeros], [dict(zeros, sum=1e-3, abs_sum=1e-3)])
    # Fingerprints written before the checksum ([sum, abs_sum]) still compare.
    assert fingerprints_match([[1.0, 3.0]], [dict(entry, sum=1.0, abs_sum=3.0, checksum=5)])
    assert not fingerprints_match([[1.0, 3.0]], [dict(entry, sum=2.0, abs_sum=3.0, checksum=5)])


class _FakeMultihost:
    """Stands in for jax.experimental.multihost_utils as process 0 of two, recording calls."""

    def __init__(self, events, directory, others_read):
        self.events, self.directory, self.others_read = events, directory, others_read

    def broadcast_one_to_all(self, x):
        self.events.append(("broadcast", int(x)))
        return x

    def process_allgather(self, x):
        self.events.append(("gather", int(x)))
        return np.array([x, self.others_read], np.int32)

    def sync_global_devices(self, name):
        self.events.append(("sync", (self.directory / "2").exists()))


def test_processes_agree_and_a_barrier_separates_the_move_from_reload(tmp_path, monkeypatch):
    messages, events = [], []
    ckpt = _save_two(tmp_path / "ckpt", messages)
    ckpt.close()
    _corrupt(tmp_path / "ckpt" / "2")
    ckpt = Checkpointer(tmp_path / "ckpt", every_steps=1, keep=3, report=messages.append)
    fake = _FakeMultihost(events, tmp_path / "ckpt", others_read=0)
    monkeypatch.setattr(checkpointing, "multihost_utils", fake)
    monkeypatch.setattr(checkpointing, "_process_count", lambda: 2)
    reload = ckpt.manager.reload
    monkeypatch.setattr(
        ckpt.manager, "reload", lambda: (events.append(("reload", None)), reload())[1]
    )
    assert ckpt.restore(_abstract())[0] == 1
    assert events[0] == ("broadcast", 2)  # process 0 chose the step
    assert ("gather", 1) in events  # this process found step 2 broken
    sync = events.index(("sync", False))  # the barrier came after the move...
    assert events.index(("reload", None)) > sync  # ...and before any reload
    assert ("broadcast", 1) in events[sync:]  # then the previous step, again chosen by 0
    ckpt.close()


def test_another_process_failing_to_read_stops_every_process(tmp_path, monkeypatch):
    messages, events = [], []
    ckpt = _save_two(tmp_path / "ckpt", messages)
    monkeypatch.setattr(
        checkpointing, "multihost_utils", _FakeMultihost(events, tmp_path / "ckpt", others_read=2)
    )
    monkeypatch.setattr(checkpointing, "_process_count", lambda: 2)
    with pytest.raises(
        CheckpointReadError, match=r"step 2 .*process 1 could not read it.*left in place"
    ):
        ckpt.restore(_abstract())
    assert ckpt.all_steps() == [1, 2] and not (tmp_path / "corrupt_checkpoints").exists()
    ckpt.close()


def test_config_changes_names_every_changed_key():
    saved = ml_collections.ConfigDict(
        {
            "optimizer": {"learning_rate": 0.001, "b1": 0.9},
            "data": {"heldout": 10},
            "total_steps": 100,
            "export": True,
            "seed": 0,
            "old": "x",
        }
    )
    current = ml_collections.ConfigDict(saved.to_dict())
    current.optimizer.learning_rate = 0.0005
    current.data.source = "text:corpus.txt"
    current.total_steps = 200
    as_dict = lambda c: json.loads(c.to_json_best_effort())
    assert config_changes(as_dict(saved), as_dict(saved)) == []
    now = as_dict(current)
    del now["old"]
    now["export"] = 1  # another type: a change, even though 1 == True in Python
    assert config_changes(as_dict(saved), now) == [
        "data.source: added",
        "export: true -> 1",
        "old: removed",
        "optimizer.learning_rate: 0.001 -> 0.0005",
        "total_steps: 100 -> 200",
    ]
    assert config_changes({"a": {"b": 1}}, {"a": 2}) == ['a: {"b": 1} -> 2']


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


def test_sigkill_and_resume_matches_uninterrupted_run(tiny_models, tmp_path):
    model_dir = tiny_models("bert", hidden_size=32, num_layers=2)
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
    steps = 400
    # Uninterrupted reference.
    subprocess.run(
        train_cmd(model_dir, tmp_path / "ref", steps),
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    # Killed once a checkpoint exists, mid-way, then restarted on the same workdir.
    work = tmp_path / "killed"
    proc = subprocess.Popen(
        train_cmd(model_dir, work, steps),
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
        train_cmd(model_dir, work, steps),
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
