"""embres.cache.build_once: built once, keyed by contents, atomic, reported when stale,
every process waiting for process 0 (the sentences: cache's contents key: tests/test_data.py)."""

import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest
from _train_utils import REPO

from embres import cache


def writer(text, calls):
    def build(tmp):
        calls.append(tmp)
        tmp.write_text(text)

    return build


def test_built_once_then_reused_and_rebuilt_for_another_key(tmp_path):
    calls, logs = [], []
    target = tmp_path / "sub" / "a.txt"
    assert cache.build_once(target, {"v": 1}, writer("one", calls), log=logs.append) == target
    assert cache.build_once(target, {"v": 1}, writer("other", calls), log=logs.append) == target
    assert target.read_text() == "one" and len(calls) == 1 and logs == []
    cache.build_once(target, {"v": 2}, writer("two", calls), log=logs.append)
    assert target.read_text() == "two" and len(calls) == 2
    assert logs == [f"cache {target}: built for another key (its inputs changed); rebuilding"]
    # nothing but the artefact and its record is left beside it
    assert sorted(p.name for p in target.parent.iterdir()) == [".a.txt.embres-cache.json", "a.txt"]


def test_a_truncated_or_corrupt_artefact_is_reported_and_rebuilt(tmp_path):
    calls, logs = [], []
    target = tmp_path / "a.txt"
    cache.build_once(target, {"v": 1}, writer("complete", calls))
    target.write_text("trunc")  # what a disk or a foreign writer left
    cache.build_once(target, {"v": 1}, writer("complete", calls), log=logs.append)
    assert target.read_text() == "complete" and len(calls) == 2
    assert "files changed since it was built" in logs[0]

    def check(path):
        if path.read_text() != "fine":
            raise ValueError("does not parse")

    cache.build_once(target, {"v": 1}, writer("fine", calls), log=logs.append, check=check)
    assert logs[-1] == f"cache {target}: corrupt (does not parse); rebuilding"
    assert target.read_text() == "fine"


def test_folders_carry_their_record_and_foreign_folders_are_refused(tmp_path):
    def build(tmp):
        tmp.mkdir()
        (tmp / "x.npy").write_bytes(b"123")

    folder = cache.build_once(tmp_path / "c", ["k"], build)
    assert sorted(p.name for p in folder.iterdir()) == [cache.RECORD, "x.npy"]
    assert json.loads((folder / cache.RECORD).read_text())["files"] == {"x.npy": 3}
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="holds files this cache did not write"):
        cache.build_once(mine, ["k"], build)
    assert (mine / "notes.txt").read_text() == "keep me"


def test_a_failed_build_keeps_the_previous_artefact_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    cache.build_once(target, 1, writer("old", []))

    def failing(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt("killed mid-build")

    with pytest.raises(KeyboardInterrupt):
        cache.build_once(target, 2, failing)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.txt.embres-cache.json", "a.txt"]
    assert cache.stale_reason(target, 1) is None  # still the artefact of key 1


def _two_processes(monkeypatch, target, build0):
    """Runs build_once as process 0 and 1 of 2 in threads, the barrier a threading one."""
    barrier = threading.Barrier(2, timeout=30)
    monkeypatch.setattr(cache, "_sync", lambda name: barrier.wait())
    results, calls = {}, []

    def run(index):
        build = build0 if index == 0 else writer("process 1 must not build", calls)
        try:
            results[index] = cache.build_once(
                target, {"k": 1}, build, process_index=index, process_count=2, log=print
            )
        except BaseException as e:  # noqa: BLE001 - reported by the test
            results[index] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in (1, 0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert calls == []  # only process 0 ever builds
    return results


def test_every_process_waits_for_process_0(tmp_path, monkeypatch):
    import time

    def slow(tmp):
        time.sleep(0.5)  # process 1 reached the barrier long before
        tmp.write_text("built by 0")

    target = tmp_path / "a.txt"
    results = _two_processes(monkeypatch, target, slow)
    assert results == {0: target, 1: target} and target.read_text() == "built by 0"


def test_a_failed_build_on_process_0_is_an_error_on_every_process(tmp_path, monkeypatch):
    def failing(tmp):
        raise OSError("disk full")

    results = _two_processes(monkeypatch, tmp_path / "a.txt", failing)
    assert isinstance(results[0], OSError)
    assert isinstance(results[1], RuntimeError) and "a.txt is absent" in str(results[1])


SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import jax
    index, port, target = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=index)
    from embres import cache

    def build(tmp):
        assert index == 0, "only process 0 builds"
        time.sleep(1.0)
        tmp.write_text("built")

    path = cache.build_once(target, {"k": 1}, build, process_index=index, process_count=2)
    print("read", open(path).read())
    """
)


@pytest.mark.timeout(120)
def test_two_real_processes_sync_through_jax(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    target = str(tmp_path / "a.txt")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(i), str(port), target],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for i in (1, 0)
    ]
    outputs = [p.communicate(timeout=100)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert all("read built" in out for out in outputs), outputs


def test_the_temporary_keeps_the_suffix_and_dead_builds_leftovers_go(tmp_path):
    import socket

    import numpy as np

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    stale = tmp_path / f"rows.partial-{socket.gethostname()}-{int(dead.stdout)}.npy"
    stale.write_bytes(b"half")
    path = cache.build_once(tmp_path / "rows.npy", 1, lambda tmp: np.save(tmp, np.arange(3)))
    np.testing.assert_array_equal(np.load(path), np.arange(3))  # np.save wrote where asked
    assert not stale.exists()
