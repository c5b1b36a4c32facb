"""Two processes x four CPU devices (``launch/multiprocess.sh 2``, real subprocesses on
127.0.0.1) train exactly like one process with eight devices, and their checkpoints resume
in a one-process run."""

import json
import os
import random
import shutil
import subprocess

import jax
import numpy as np
import pytest
from _train_utils import REPO, tiny_config

from embres import distributed, train

STEPS = 6
# Both runs get exactly these settings: the CLI as --config.KEY=VALUE, in process via tiny_config.
OVERRIDES = {
    "eval.heldout_texts": 0,
    "data.heldout": 0,
    "total_steps": STEPS,
    "batch_size": 16,
    "optimizer.learning_rate": 1e-2,
    "checkpoint.every_steps": 2,
    "checkpoint.keep": 3,
}


def _corpus(path):
    rng = random.Random(0)
    words = "the a cat dog runs fast slow house tree red blue green big small over and not".split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(300)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _flat_params(params):
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        out["/".join(str(getattr(k, "key", k)) for k in path)] = np.asarray(leaf)
    return out


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_two_processes_match_one_process_and_resume_across(tiny_models, tmp_path):
    model_dir = tiny_models("bert", hidden_size=32, num_layers=2)
    corpus = _corpus(tmp_path / "corpus.txt")
    overrides = {**OVERRIDES, "data.source": f"text:{corpus}"}

    # One process, eight devices (this pytest process), export on to compare like with like.
    config = tiny_config(model_dir, export=True, **overrides)
    ref = train.train_and_evaluate(config, tmp_path / "one")
    assert jax.process_count() == 1 and len(ref["losses"]) == STEPS

    # Two processes, four devices each, through the launch script.
    def launch(workdir, *extra):
        env = {**os.environ, "EMBRES_DEVICES_PER_PROCESS": "4", "EMBRES_LOG_DIR": str(workdir)}
        cmd = ["bash", str(REPO / "launch" / "multiprocess.sh"), "2", "configs/lowrank.py:runlocal"]
        cmd += [f"--workdir={workdir}", *flags, *extra]
        proc = subprocess.run(
            cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
        )
        logs = proc.stdout + proc.stderr
        if (workdir / "process_1.log").exists():
            logs += "\n--- process 1 ---\n" + (workdir / "process_1.log").read_text()
        assert proc.returncode == 0, logs[-4000:]
        assert "EMBRES_NUM_PROCESSES=2" in proc.stdout  # the script says what it runs
        rows = [json.loads(line) for line in (workdir / "metrics.jsonl").open()]
        return proc.stdout, {
            r["step"]: r["loss"] for r in rows if "loss" in r and "summary" not in r
        }

    flags = [
        f"--config.model={model_dir}",
        "--config.export=True",
        "--config.adapter.rank=8",
        "--config.adapter.storage_dtype=float32",
        *(f"--config.{k}={v}" for k, v in overrides.items()),
    ]
    _, two_losses = launch(tmp_path / "two")
    assert sorted(two_losses) == list(range(1, STEPS + 1))
    np.testing.assert_allclose(
        [two_losses[s] for s in sorted(two_losses)],
        [ref["losses"][s] for s in sorted(ref["losses"])],
        atol=1e-5,
        rtol=0,
    )
    from safetensors.numpy import load_file

    two_params = load_file(str(tmp_path / "two" / "export" / "adapter" / "adapter.safetensors"))
    ref_params = _flat_params(ref["params"])
    assert sorted(two_params) == sorted(ref_params)
    for k, v in ref_params.items():
        np.testing.assert_allclose(two_params[k], v, atol=1e-5, rtol=0, err_msg=k)

    # The two-process checkpoint of step 2 resumes here (one process, 8 devices) to the same end.
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(tmp_path / "two" / "checkpoints", resumed_dir / "checkpoints")
    for step_dir in (resumed_dir / "checkpoints").iterdir():
        if step_dir.name.isdigit() and int(step_dir.name) > 2:
            shutil.rmtree(step_dir)
    resumed = train.train_and_evaluate(tiny_config(model_dir, **overrides), resumed_dir)
    assert sorted(resumed["losses"]) == list(range(3, STEPS + 1))
    for s, loss in resumed["losses"].items():
        assert abs(loss - ref["losses"][s]) <= 1e-5, (s, loss, ref["losses"][s])
    for k, v in _flat_params(resumed["params"]).items():
        np.testing.assert_allclose(v, ref_params[k], atol=1e-5, rtol=0, err_msg=k)

    # And the other way: the one-process checkpoint of step 2 resumes in two processes, on
    # a data x model mesh (A's rows sharded, the teacher's table read shard by shard).
    two_resumed = tmp_path / "two_resumed"
    shutil.copytree(tmp_path / "one" / "checkpoints", two_resumed / "checkpoints")
    for step_dir in (two_resumed / "checkpoints").iterdir():
        if step_dir.name.isdigit() and int(step_dir.name) > 2:
            shutil.rmtree(step_dir)
    out, losses = launch(two_resumed, "--config.mesh.data=4", "--config.mesh.model=2")
    assert "resumed from step 2" in out and "sharded P('model', None)" in out
    assert sorted(losses) == list(range(3, STEPS + 1))
    for s, loss in losses.items():
        assert abs(loss - ref["losses"][s]) <= 1e-5, (s, loss, ref["losses"][s])
    resumed_two = load_file(str(two_resumed / "export" / "adapter" / "adapter.safetensors"))
    for k, v in ref_params.items():
        np.testing.assert_allclose(resumed_two[k], v, atol=1e-5, rtol=0, err_msg=k)


def test_initialize_needs_every_variable_or_none(monkeypatch):
    for name in distributed.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    assert distributed.initialize() is False  # nothing set, not asked: single process
    assert distributed.initialize(multihost=False) is False
    monkeypatch.setenv("EMBRES_COORDINATOR", "127.0.0.1:1234")
    monkeypatch.setenv("EMBRES_NUM_PROCESSES", "2")
    with pytest.raises(ValueError, match="EMBRES_PROCESS_ID not set"):
        distributed.initialize()
    monkeypatch.setenv("EMBRES_PROCESS_ID", "2")
    with pytest.raises(ValueError, match=r"EMBRES_PROCESS_ID=2 is not in \[0, 2\)"):
        distributed.initialize()
    monkeypatch.setenv("EMBRES_COORDINATOR", "localhost")
    with pytest.raises(ValueError, match="expected host:port"):
        distributed.initialize()


def test_multiprocess_script_fails_clearly():
    script = str(REPO / "launch" / "multiprocess.sh")
    out = subprocess.run(["bash", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "usage: launch/multiprocess.sh N" in out.stderr
    out = subprocess.run(
        ["bash", script, "2", "configs/nope.py"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 2 and "configs/nope.py' not found" in out.stderr


def test_text_source_positions_agree_across_processes(tiny_models, tmp_path):
    from transformers import AutoTokenizer

    from embres.data.text import TextSource

    model_dir = tiny_models("bert", hidden_size=32, num_layers=2)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    corpus = _corpus(tmp_path / "corpus.txt")

    def source(index, count, batch):
        return TextSource(
            str(corpus), tokenizer, vocab_size=tokenizer.vocab_size, pad_id=0,
            batch_size=batch, max_length=16, process_index=index, process_count=count,
        )  # fmt: skip

    one, halves = source(0, 1, 8), [source(i, 2, 4) for i in range(2)]
    for _ in range(3):
        whole = one.next_batch()["ids"]
        parts = [s.next_batch()["ids"] for s in halves]
        np.testing.assert_array_equal(np.concatenate(parts)[[0, 4, 1, 5, 2, 6, 3, 7]], whole)
        assert halves[0].get_state() == halves[1].get_state() == one.get_state()


@pytest.mark.parametrize(
    "script, env, message",
    [
        ("slurm.sbatch", {}, "SLURM_JOB_ID is not set"),
        ("tpu_vm.sh", {}, "TPU_NAME is not set"),
        ("tpu_vm.sh", {"TPU_NAME": "t"}, "ZONE is not set"),
    ],
)
def test_cluster_scripts_name_missing_variables(script, env, message):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TPU_", "ZONE"))}
    out = subprocess.run(
        ["bash", str(REPO / "launch" / script)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and message in out.stderr


def test_cluster_scripts_print_what_they_run():
    env = {**os.environ, "EMBRES_DRY_RUN": "1", "TPU_NAME": "pod", "ZONE": "z"}
    for script, expected in (
        ("slurm.sbatch", "srun --ntasks-per-node=1 python -m embres.train --multihost"),
        ("tpu_vm.sh", "--worker=all --command=cd ~/embres && python -m embres.train --multihost"),
    ):
        out = subprocess.run(
            ["bash", str(REPO / "launch" / script), "configs/lowrank.py", "--workdir=/w"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0 and expected in out.stdout and "--workdir=/w" in out.stdout
