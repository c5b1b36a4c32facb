"""bench/gpu.sh: the plan and its argument checks on CPU; bench/gpu.py's sections on tiny shapes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import gpu  # noqa: E402
import gpu_report  # noqa: E402


def _sh(*args):
    return subprocess.run(
        ["bash", "bench/gpu.sh", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_dry_run_prints_the_plan_and_runs_nothing():
    result = _sh("--dry-run", "--out", "/tmp/embres_gpu_dry.json")
    assert result.returncode == 0, result.stderr
    plan = [line for line in result.stdout.splitlines() if "python bench/gpu.py" in line]
    assert len(plan) == 10 and "matmul" in plan[0] and "train" in plan[-1]
    assert "nothing run" in result.stdout
    assert not Path("/tmp/embres_gpu_dry.json").exists()


@pytest.mark.parametrize(
    "args, named", [(["--batch", "12"], "--batch 12"), (["--bogus"], "'--bogus'")]
)
def test_bad_arguments_are_one_line_and_exit_2(args, named):
    result = _sh("--dry-run", *args)
    assert result.returncode == 2 and named in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_flops_per_token_of_bert_base():
    # 12 layers x (4 d^2 + 2 d ffn) weights, twice, plus attention's 4 L seq d.
    expected = 2 * 12 * (4 * 768 * 768 + 2 * 768 * 3072) + 4 * 12 * 128 * 768
    assert gpu.flops_per_token(gpu.SHAPES["bert-base"], 128) == expected


def test_forward_section_runs_on_a_tiny_shape(capsys):
    args = ["forward", "--shape", "minilm", "--batch", "2", "--seq", "8", "--layers", "1"]
    assert gpu.main([*args, "--repeats", "1", "--peak", "1e9"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["impl"] == "embres" and row["tokens_per_s"] > 0 and row["peak_flops"] == 1e9


def test_report_table_gives_ratios_and_names_what_was_not_measured(tmp_path):
    parts = [
        {"section": "matmul", "device": "H200", "bf16_matmul_flops": 7.5e14},
        {"section": "forward", "shape": "gpt2", "impl": "embres", "tokens_per_s": 2e6, "mfu": 0.5},
        {
            "section": "forward",
            "shape": "gpt2",
            "impl": "hf",
            "eager_tokens_per_s": 1e6,
            "eager_mfu": 0.25,
            "sdpa_tokens_per_s": 1.6e6,
            "sdpa_mfu": 0.4,
        },
        {"section": "e2e", "impl": "st", "skipped": "sentence_transformers is not installed"},
    ]
    files = []
    for i, part in enumerate(parts):
        files.append(tmp_path / f"{i}.json")
        files[-1].write_text(json.dumps(part))
    lines = gpu_report.table(gpu_report.load([str(f) for f in files]))
    text = "\n".join(lines)
    assert "750 TFLOP/s" in text and "| 2.00x |" in text and "| 1.25x |" in text
    assert "not measured: sentence_transformers is not installed" in text
