"""embres.files: a write either replaces the target whole or leaves it (and no temporary)."""

import numpy as np
import pytest

from embres.files import atomic_path, atomic_write_text, first_missing


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = atomic_write_text(tmp_path / "report.json", "old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_the_temporary_keeps_the_suffix_so_numpy_writes_where_asked(tmp_path):
    target = tmp_path / "targets.npy"
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".npy" and tmp != target
        np.save(tmp, np.arange(3))
    np.testing.assert_array_equal(np.load(target), np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["targets.npy"]


def test_two_writers_use_two_temporaries(tmp_path):
    with atomic_path(tmp_path / "x.txt") as a, atomic_path(tmp_path / "x.txt") as b:
        assert a != b
        a.write_text("a")
        b.write_text("b")
    assert (tmp_path / "x.txt").read_text() == "a"  # the last to finish wins, whole


def test_first_missing_is_the_topmost_folder_mkdir_creates(tmp_path):
    assert first_missing(tmp_path / "a" / "b") == tmp_path / "a"
    assert first_missing(tmp_path) is None
