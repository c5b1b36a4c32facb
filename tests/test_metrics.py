"""Metrics: resuming over a log cut mid-write, and finding the first non-finite step."""

import json
import logging
import math

import numpy as np
import pytest

from embres.metrics import JSONL, MetricWriter, NonFiniteLossError, check_finite, first_non_finite


def test_truncated_last_line_does_not_stop_the_resume(tmp_path, caplog):
    rows = [{"step": s, "loss": 1.0 / s} for s in range(10, 70, 10)]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    cut = json.dumps({"step": 70, "loss": 0.125, "examples_per_s": 1234.5})
    (tmp_path / JSONL).write_text(text + cut[: len(cut) // 2])  # killed mid-write
    with caplog.at_level(logging.WARNING, logger="embres.metrics"):
        writer = MetricWriter(tmp_path, total_steps=100, start_step=40, progress=False)
    writer.write(50, {"loss": 0.5})
    writer.close()
    kept = [json.loads(line) for line in (tmp_path / JSONL).read_text().splitlines()]
    assert kept == [*rows[:4], {"step": 50, "loss": 0.5}]
    assert any("dropped 1 undecodable line" in r.getMessage() for r in caplog.records)


def test_undecodable_lines_anywhere_are_dropped_and_the_rest_kept(tmp_path, caplog):
    lines = ['{"step": 1, "loss": 2.0}', '{"step": 2, "lo', "[3]", '{"step": 3, "loss": 1.0}']
    (tmp_path / JSONL).write_text("\n".join(lines) + "\n\n")
    with caplog.at_level(logging.WARNING, logger="embres.metrics"):
        MetricWriter(tmp_path, total_steps=10, start_step=5, progress=False).close()
    assert (tmp_path / JSONL).read_text() == lines[0] + "\n" + lines[3] + "\n"
    assert any("dropped 2 undecodable line" in r.getMessage() for r in caplog.records)


def test_first_non_finite_names_the_first_bad_step_of_a_window():
    steps = [11, 12, 13, 14, 15]
    rows = [
        {"loss": 0.5, "grad_norm": 1.0},
        {"loss": 0.4, "grad_norm": 1.0},
        {"loss": 0.4, "grad_norm": math.inf},  # the first bad one, not the loss
        {"loss": math.nan, "grad_norm": math.nan},
        {"loss": 0.3, "grad_norm": 1.0},
    ]
    assert first_non_finite(steps, rows) == (13, {"grad_norm": math.inf})
    assert first_non_finite(steps[:2], rows[:2]) is None
    assert first_non_finite([], []) is None
    # Values straight from a device fetch (numpy scalars) work too.
    step, bad = first_non_finite([7], [{"loss": np.float32("nan"), "lr": np.float32(1e-3)}])
    assert step == 7 and list(bad) == ["loss"] and math.isnan(bad["loss"])
    with pytest.raises(ValueError, match="2 steps but 1 metric rows"):
        first_non_finite([1, 2], [{"loss": 1.0}])


def test_check_finite_names_the_step_and_the_last_good_checkpoint():
    check_finite(5, {"loss": 0.1}, last_good=None)  # finite: nothing happens
    bad = first_non_finite([20, 21], [{"loss": 0.2}, {"loss": math.nan}])
    with pytest.raises(NonFiniteLossError, match=r"step 21.*last good checkpoint \(step 20\)"):
        check_finite(*bad, last_good=20)
    with pytest.raises(NonFiniteLossError, match="no checkpoint was written yet"):
        check_finite(3, {"loss": math.inf}, last_good=None)
    # A window checked late: a checkpoint written at or after the bad step is not "good".
    with pytest.raises(NonFiniteLossError, match=r"step 30 was written at or after this step"):
        check_finite(25, {"loss": math.nan}, last_good=30)


def test_flop_meter_counts_each_call_from_xlas_cost_analysis():
    import jax
    import jax.numpy as jnp

    from embres.metrics import FlopMeter, compiled_flops, matmul_peak

    n = 32
    step = jax.jit(lambda a, b: a @ b)
    a = jnp.ones((n, n))
    assert compiled_flops(step.lower(a, a).compile()) == 2 * n**3
    meter = FlopMeter(step, peak=1e6)
    meter.count(a, a)
    meter.count(a, a)
    meter.count(jnp.ones((n, 2 * n)), jnp.ones((2 * n, n)))  # another shape: its own count
    assert meter.read(seconds=2.0) == (2 * 2 * n**3 + 2 * n * n * 2 * n) / 2.0 / 1e6
    assert meter.read(seconds=1.0) == 0.0  # reset by the read
    assert matmul_peak(jax.devices()[0], n=64, dtype=jnp.float32, reps=2) > 0
