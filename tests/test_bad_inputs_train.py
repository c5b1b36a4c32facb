"""Adversarial tests of ``embres.train`` (issue 13): what a user gets wrong, and what is left.

Each test asserts the message (the value, file or holder named) and the state afterwards
(no second writer in a workdir, no run resumed from another run's checkpoint, one line
per checkpoint set aside). Concurrency uses real subprocesses.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _train_utils import tiny_config, train_cmd

from embres import objectives, train
from embres.checkpointing import newest_meta

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
ENV.pop("EMBRES_VERBOSE", None)


@pytest.fixture(scope="module")
def tiny_model(tiny_models):
    return tiny_models("bert", hidden_size=32, num_layers=2)


def _run(cmd, **kwargs):
    return subprocess.run(
        cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300, **kwargs
    )


def _stderr_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


# ----------------------------------------------------------------------------- one workdir


def test_second_trainer_on_a_workdir_stops_naming_the_holder(tiny_model, tmp_path):
    work = tmp_path / "work"
    first = subprocess.Popen(
        train_cmd(tiny_model, work, 1_000_000),
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        holder = {}
        while time.time() < deadline and holder.get("pid") != first.pid:
            time.sleep(0.05)
            try:
                holder = json.loads((work / ".lock").read_text() or "{}")
            except (OSError, ValueError):
                holder = {}
        assert holder.get("pid") == first.pid, "the first run never took the lock"
        second = _run(train_cmd(tiny_model, work, 2))
        assert second.returncode == 2, second.stderr
        lines = _stderr_lines(second)
        assert len(lines) == 1, lines
        assert f"pid {first.pid}" in lines[0] and socket.gethostname() in lines[0]
        assert "another --workdir" in lines[0]
        assert first.poll() is None, "the holder must be untouched by the refused run"
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    # The killed holder's lock does not block: the next run takes it over and says whose.
    third = _run(train_cmd(tiny_model, work, 2))
    assert third.returncode == 0, third.stderr
    assert f"took over the lock left by pid {first.pid}" in third.stdout
    assert not (work / ".lock").exists()


def test_config_mistake_leaves_no_workdir(tiny_model, tmp_path):
    config = tiny_config(tiny_model, total_steps=2)
    config.adapter.type = "lowrnk"
    with pytest.raises(ValueError, match="lowrnk"):
        train.train_and_evaluate(config, tmp_path / "work")
    assert not (tmp_path / "work").exists()


def test_lock_is_released_when_a_run_fails(tiny_model, tmp_path):
    config = tiny_config(tiny_model, total_steps=2)
    config.batch_size = 3  # not a multiple of the 8 fake devices' data axis
    with pytest.raises(ValueError, match="batch_size=3"):
        train.train_and_evaluate(config, tmp_path / "work")
    assert not (tmp_path / "work" / ".lock").exists()
    train.train_and_evaluate(tiny_config(tiny_model, total_steps=2), tmp_path / "work")


# ----------------------------------------------------------------------------- another run


def test_changed_data_source_stops_before_any_teacher_pass(tiny_model, tmp_path, monkeypatch):
    work = tmp_path / "work"
    train.train_and_evaluate(tiny_config(tiny_model, total_steps=2), work)  # source "vocab"
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"sentence number {i} of the corpus.\n" for i in range(400)))
    config = tiny_config(tiny_model, total_steps=4)
    config.data.source = f"text:{corpus}"
    objective = objectives.get(config.objective.kind)

    def no_teacher_pass(*args, **kwargs):
        raise AssertionError("the data source change must be caught before prepare()")

    monkeypatch.setattr(objective, "prepare", no_teacher_pass)
    with pytest.raises(ValueError) as e:
        train.train_and_evaluate(config, work)
    message = str(e.value)
    assert "'vocab'" in message and f"'text:{corpus}'" in message
    assert "--workdir" in message and "checkpoints" in message
    assert sorted(p.name for p in (work / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]


def test_changed_base_model_stops_before_loading(tiny_model, tiny_models, tmp_path):
    work = tmp_path / "work"
    train.train_and_evaluate(tiny_config(tiny_model, total_steps=2), work)
    other = tiny_models("bert", hidden_size=32, num_layers=2, seed=3)
    with pytest.raises(ValueError, match=r"base model .*config.model="):
        train.train_and_evaluate(tiny_config(other, total_steps=2), work)


# ----------------------------------------------------------------------------- checkpoints


def _truncate_array_files(step_dir: Path) -> None:
    for path in [*(step_dir / "state").glob("d/*"), *(step_dir / "state").glob("ocdbt.*/d/*")]:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])


def test_every_checkpoint_corrupt_is_one_line_each_then_step_0(tiny_model, tmp_path):
    work = tmp_path / "work"
    config = tiny_config(tiny_model, total_steps=2, **{"checkpoint.every_steps": 1})
    train.train_and_evaluate(config, work)
    steps = sorted(p for p in (work / "checkpoints").iterdir() if p.name.isdigit())
    assert [p.name for p in steps] == ["1", "2"]
    for step_dir in steps:
        _truncate_array_files(step_dir)
    rerun = _run(train_cmd(tiny_model, work, 2, "--config.checkpoint.every_steps=1"))
    assert rerun.returncode == 0, rerun.stderr
    output = rerun.stdout + rerun.stderr
    set_aside = [line for line in output.splitlines() if "set aside checkpoint" in line]
    assert len(set_aside) == 2 and all("truncated" in line for line in set_aside), output
    assert "starting over from step 0" in output
    assert "Exception ignored" not in output and "Traceback" not in output, output[:2000]
    assert sorted(p.name for p in (work / "corrupt_checkpoints").iterdir()) == ["1", "2"]
    # Noise-free: the trainer's own lines, the metric lines and the summary table only
    # (before: 817 lines of asyncio/TensorStore tracebacks).
    assert len(output.splitlines()) < 60, output


def test_newest_meta_reads_the_checkpoint_without_its_arrays(tiny_model, tmp_path):
    work = tmp_path / "work"
    train.train_and_evaluate(tiny_config(tiny_model, total_steps=2), work)
    step, meta = newest_meta(work / "checkpoints")
    assert step == 2 and meta["config"]["data"]["source"] == "vocab"
    (work / "checkpoints" / "2" / "meta" / "metadata").write_text("{not json")
    assert newest_meta(work / "checkpoints") is None  # left to restore(), which judges it
    assert newest_meta(tmp_path / "nothing") is None and not (tmp_path / "nothing").exists()


# ----------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize(
    "args, named",
    [
        (["--config=configs/nope.py"], "configs/nope.py does not exist"),
        (["--config=configs/lowrank.py:runlocal", "--config.adapter.rnk=3"], '"rank"'),
        (["--config=configs/lowrank.py:runlocal", "--config.adaptr.rank=3"], '"adapter"'),
        (["--config=configs/lowrank.py:nope"], "'nope' is unknown"),
        (["--config=configs/lowrank.py:runlocal", "--config.adapter.rank=x"], "'x'"),
        (["--workdir=/tmp/x"], "--config is required"),
        (["--config=configs/lowrank.py:runlocal", "--config.model=nope"], "unknown model 'nope'"),
    ],
)
def test_cli_mistake_is_one_stderr_line_and_exit_2(args, named, tmp_path):
    result = _run([sys.executable, "-m", "embres.train", f"--workdir={tmp_path / 'w'}", *args])
    assert result.returncode == 2, result.stderr
    lines = _stderr_lines(result)
    assert len(lines) == 1, lines
    assert lines[0].startswith("embres.train: error: ") and named in lines[0], lines


def test_cli_malformed_data_line_names_file_and_line(tiny_model, tmp_path):
    pairs = tmp_path / "pairs.tsv"
    rows = ["sentence1\tsentence2\tscore"] + [f"a {i}\tb {i}\t{i % 5}" for i in range(300)]
    rows[6] = "only one column"
    pairs.write_text("\n".join(rows) + "\n")
    result = _run(train_cmd(tiny_model, tmp_path / "w", 2, f"--config.data.source=pairs:{pairs}"))
    assert result.returncode == 2
    lines = _stderr_lines(result)
    assert len(lines) == 1 and f"{pairs}:7" in lines[0], lines


def test_cli_verbose_brings_the_traceback_back(tmp_path):
    args = ["-m", "embres.train", "--config=configs/lowrank.py:runlocal", "--config.model=nope"]
    result = _run([sys.executable, *args, f"--workdir={tmp_path}", "--verbose"])
    assert result.returncode != 0 and "Traceback (most recent call last)" in result.stderr


def test_cli_config_file_bug_names_the_file_not_an_override(tmp_path):
    config = tmp_path / "bug.py"
    config.write_text(
        "import ml_collections\n\n\ndef get_config(arg=None):\n"
        "    c = ml_collections.ConfigDict()\n    c.data = ml_collections.ConfigDict()\n"
        "    c.data.sourc.x = 1\n    return c\n"
    )
    result = _run([sys.executable, "-m", "embres.train", f"--config={config}"])
    lines = _stderr_lines(result)
    assert result.returncode == 2 and len(lines) == 1, lines
    assert f"error in config file {config}" in lines[0] and "sourc" in lines[0]
    assert "--config.* flag" not in lines[0]


# ----------------------------------------------------------------------------- issue 24


def test_cli_learning_rate_1e5_stops_at_the_step_and_names_the_checkpoint_kept(
    tiny_model, tmp_path
):
    """Row 1: lr 1e5 (a typo for 1e-5) took every factor beyond float16 while the loss stayed
    finite; the run exited 0 with an export of inf. It stops at the step, keeps the last good
    checkpoint, says where, and exports nothing."""
    work = tmp_path / "w"
    extra = ["--config.optimizer.learning_rate=1e5", "--config.adapter.storage_dtype=float16"]
    extra += ["--config.checkpoint.every_steps=1", "--config.export=True"]
    result = _run(train_cmd(tiny_model, work, 4, *extra))
    assert result.returncode == 2, result.stderr
    lines = _stderr_lines(result)
    assert len(lines) == 1, lines
    assert lines[0].startswith("embres.train: error: non-finite parameters at step 2: "), lines
    assert f"(step 1) is kept in {work / 'checkpoints' / '1'}" in lines[0]
    assert sorted(p.name for p in (work / "checkpoints").iterdir() if p.name.isdigit()) == ["1"]
    assert not (work / "export").exists()


def test_cli_read_only_workdir_is_one_line_naming_it(tiny_model, tmp_path):
    """Row 15: an OSError traceback (Read-only file system) before; now one line, up front."""
    from _readonly import readonly_dir

    with readonly_dir(tmp_path) as folder:
        result = _run(train_cmd(tiny_model, folder / "work", 2))
    assert result.returncode == 2, result.stderr
    lines = _stderr_lines(result)
    assert len(lines) == 1, lines
    assert str(folder) in lines[0] and "read-only file system" in lines[0], lines


def test_cli_workdir_that_is_a_file_is_one_line_and_the_file_untouched(tiny_model, tmp_path):
    """Row 17: a FileExistsError traceback before; now one line naming the path."""
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me\n")
    result = _run(train_cmd(tiny_model, afile, 2))
    assert result.returncode == 2, result.stderr
    lines = _stderr_lines(result)
    assert len(lines) == 1, lines
    assert f"{afile} is a file" in lines[0], lines
    assert afile.read_text() == "keep me\n"


def test_cli_another_kind_of_run_on_a_workdir_is_refused_before_any_work(tiny_model, tmp_path):
    """Row 25: a projection run on a finished lowrank workdir wrote teacher targets into
    <workdir>/cache, then refused for the shapes; it is refused first, leaving nothing."""
    work = tmp_path / "w"
    train.train_and_evaluate(tiny_config(tiny_model, total_steps=2), work)
    before = sorted(p.name for p in work.iterdir())
    cmd = [sys.executable, "-m", "embres.train", "--config=configs/projection.py:runlocal"]
    cmd += [f"--workdir={work}", f"--config.model={tiny_model}", "--config.adapter.target_dim=16"]
    result = _run(cmd)
    assert result.returncode == 2, result.stderr
    lines = _stderr_lines(result)
    assert len(lines) == 1, lines
    assert "config.objective.kind: 'compressed_teacher' -> 'static_distill'" in lines[0], lines
    assert "config.adapter.type: 'lowrank' -> " in lines[0] and str(work) in lines[0], lines
    assert sorted(p.name for p in work.iterdir()) == before  # no cache/ left behind


def test_a_max_length_with_no_room_for_a_token_names_max_length(tiny_model, tmp_path):
    """Issue 24 row 21: --config.data.max_length=1 named min_length and a range of 1..-1."""
    result = _run(train_cmd(tiny_model, tmp_path / "w", 2, "--config.data.max_length=1"))
    lines = _stderr_lines(result)
    assert result.returncode == 2, result.stderr
    assert lines[-1].startswith("embres.train: error: config.data.max_length=1 leaves no room"), (
        lines
    )
    assert "expected max_length >= 3" in lines[-1] and not (tmp_path / "w" / "checkpoints").exists()
