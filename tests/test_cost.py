"""Cost accounting: the FLOP formulas against XLA's own count, and bench/hybrid.py's table.

XLA's ``cost_analysis()["flops"]`` counts every multiply and add of the compiled program: the
matmuls our formulas count (a multiply-add as 2), and also what they leave out on purpose:
bias and residual adds, LayerNorm, the activation (BERT's exact GELU is an erf polynomial,
tens of FLOPs per element), softmax and masking. Those extras grow with the widths ``d`` and
``f`` (not ``d^2``) and with ``heads x L``, so at the widths used here (d=128) they add a few
percent to 10%; the checks allow [1, 1.15] of the formula (0.95 for adapters, whose
depthwise conv XLA counts as ``(2k-1) d`` against our ``2 k d``). A formula that misses the
FFN (~60% of a layer) or is off by a factor 2 lands far outside. The attention score term
is ~1-4% of a layer at these lengths, so it is checked on its own: the growth of FLOPs per
token between two lengths, which is that term alone (plus softmax's few FLOPs per score).

Adapters are found in ``embres.adapters.ADAPTERS`` (every one with ``flops_per_token``); one
whose ``init`` needs more than a generic config is skipped, naming what it missed. Last,
``bench/hybrid.py`` runs in-process on tiny exports, a tiny teacher and cut STS files.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from embres import adapters, pooling
from embres.metrics import compiled_flops
from embres.models import load_model

REPO = Path(__file__).resolve().parents[1]
BATCH = 2
LENGTHS = (16, 48)
TINY = dict(hidden_size=128, num_heads=4)


def _xla_flops(fn, *args) -> float:
    """FLOPs XLA counts for one call of ``fn(*args)`` (compiled, never run)."""
    flops = compiled_flops(jax.jit(fn).lower(*args).compile())
    assert flops, "this backend reports no cost analysis"
    return flops


@pytest.fixture(scope="module", params=["bert", "gpt2"])
def family_model(request, tiny_models):
    # Width 128 keeps XLA's elementwise extras small against the matmuls (see the docstring);
    # attention="xla": a fused kernel's custom call would hide its FLOPs from the count.
    return load_model(tiny_models(request.param, **TINY), attention="xla")


def _teacher_xla_per_token(model, length: int) -> float:
    ids = jnp.ones((BATCH, length), jnp.int32)
    forward = lambda p, i, m: model.apply(p, i, m)["last_hidden_state"]  # noqa: E731
    return _xla_flops(forward, model.params, ids, jnp.ones_like(ids)) / (BATCH * length)


def test_family_flops_per_token_matches_xla(family_model):
    family, config = family_model.family, family_model.config
    per_token = {}
    for length in LENGTHS:
        xla = _teacher_xla_per_token(family_model, length)
        ours = family.flops_per_token(config, length)
        assert isinstance(ours, int)
        assert 1.0 <= xla / ours <= 1.15, (length, xla, ours)
        per_token[length] = (xla, ours)
    # The L-dependent term alone: attention's score and context matmuls.
    (xla_a, ours_a), (xla_b, ours_b) = per_token[LENGTHS[0]], per_token[LENGTHS[1]]
    assert 1.0 <= (xla_b - xla_a) / (ours_b - ours_a) <= 1.15


def test_xlmr_shares_the_bert_count():
    from embres.models import bert, xlmr

    config = xlmr.Config(hidden_size=64, num_layers=3, intermediate_size=256)
    assert xlmr.flops_per_token(config, 20) == bert.flops_per_token(config, 20)


CONTEXTUAL = sorted(n for n, m in adapters.ADAPTERS.items() if hasattr(m, "flops_per_token"))
# The attributes the built-in adapters read from config.adapter; an adapter that needs more
# is skipped here (naming what it missed) and its author adds its own case.
GENERIC_CFG = dict(
    target_dim=128,
    kernel_size=5,
    hidden_dim=128,
    weighting="none",
    layers=1,
    heads=4,
    head_dim=32,
    ffn_dim=256,
    max_positions=64,
)


@pytest.mark.parametrize("name", CONTEXTUAL)
def test_adapter_flops_per_token_matches_xla(name):
    adapter = adapters.get(name)
    table = jax.random.normal(jax.random.PRNGKey(0), (300, 128))  # rows in the basis
    cfg = types.SimpleNamespace(**GENERIC_CFG)
    try:
        adapter.check_config(cfg, table.shape)
        params = adapter.init(jax.random.PRNGKey(1), table, cfg)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        pytest.skip(f"adapter {name!r} needs more than the generic cfg {GENERIC_CFG}: {error!r}")
    # As an export holds them: a flat dict of numpy arrays.
    flat = {k: np.asarray(v) for k, v in params.items()}
    # The served sentence vector, as AdapterEmbedder computes it.
    apply_pooled = getattr(adapter, "apply_pooled", None)
    if apply_pooled is not None:
        apply = lambda p, i, m: apply_pooled(p, None, i, m)  # noqa: E731
    else:
        apply = lambda p, i, m: pooling.pool(adapter.apply(p, None, i, m), m, "mean")  # noqa: E731
    for length in LENGTHS:
        ids = jax.random.randint(jax.random.PRNGKey(2), (BATCH, length), 0, table.shape[0])
        xla = _xla_flops(apply, params, ids, jnp.ones_like(ids)) / (BATCH * length)
        ours = adapter.flops_per_token(flat, length)
        assert isinstance(ours, int) and ours > 0
        assert 0.95 <= xla / ours <= 1.15, (name, length, xla, ours)


def _tiny_exports(root):
    """A static and a hybrid export over the tiny BERT tokenizer."""
    from embres.adapters import hybrid
    from embres.export import export_static
    from embres.testing import tiny_tokenizer

    tokenizer = tiny_tokenizer("bert")
    table = np.random.default_rng(0).normal(size=(len(tokenizer), 24)).astype(np.float32)
    export_static(table[:, :16], tokenizer, root / "static")
    cfg = types.SimpleNamespace(target_dim=16, kernel_size=3, hidden_dim=32)
    params = {k: np.asarray(v) for k, v in hybrid.init(jax.random.PRNGKey(0), table, cfg).items()}
    export_static(
        params["table"], tokenizer, root / "conv", meta={"adapter": "hybrid"}, adapter_params=params
    )
    return params


def _small_data(data_dir, out, lines: int = 120):
    """The STS files the bench reads, cut to their first ``lines`` lines (a quick run)."""
    from embres.evaluate.sts import DATASETS

    for _, files in DATASETS.values():
        for name in set(files.values()):
            text = (data_dir / name).read_text(encoding="utf-8").splitlines()[:lines]
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_text("\n".join(text) + "\n", encoding="utf-8")
    return out


def test_bench_hybrid_writes_table_json_and_plot(tmp_path, tiny_models, data_dir, monkeypatch):
    from embres.adapters import hybrid
    from embres.models import bert

    monkeypatch.setenv("EMBRES_DATA_DIR", str(_small_data(data_dir, tmp_path / "data")))
    params = _tiny_exports(tmp_path)
    spec = importlib.util.spec_from_file_location("bench_hybrid", REPO / "bench" / "hybrid.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "out"
    teacher_dir = tiny_models("bert", **TINY)  # the checkpoint the FLOP test built
    argv = ["--teacher", str(teacher_dir), "--out", str(out), "--sentences", "100"]
    argv += ["--repeats", "1", "--student", f"static={tmp_path / 'static'}"]
    assert bench.main([*argv, "--student", f"conv={tmp_path / 'conv'}"]) == 0

    result = json.loads((out / "hybrid.json").read_text())
    rows = {r["model"]: r for r in result["rows"]}
    teacher, static, conv = rows["teacher model"], rows["static"], rows["conv"]
    assert static["flops_per_token"] == 0 and static["kind"] == "static"
    assert conv["flops_per_token"] == hybrid.flops_per_token(params)
    assert conv["flops_pct_teacher"] == pytest.approx(
        100 * conv["flops_per_token"] / teacher["flops_per_token"]
    )
    assert teacher["mean_tokens"] > conv["mean_tokens"]  # [CLS] and [SEP] counted
    teacher_config = load_model(teacher_dir, with_tokenizer=False).config
    assert teacher["flops_per_token"] == bert.flops_per_token(
        teacher_config, round(teacher["mean_tokens"])
    )
    assert conv["params"] == sum(v.size for v in params.values())
    assert all(r["sent_per_s"] > 0 for r in (teacher, conv))
    # the bench's STS-B column is the evaluator's score of the same model on the same files
    from embres.evaluate.sts import STSEvaluator
    from embres.export import load_student

    student = load_student(tmp_path / "conv")
    direct = dict(STSEvaluator("stsb").run(student.encode))["sts/stsb_dev"]
    assert conv["stsb_dev"] == pytest.approx(direct, abs=0.01)
    assert "| conv | hybrid |" in (out / "hybrid.md").read_text()
    assert (out / "hybrid.png").stat().st_size > 0


def test_bench_hybrid_rejects_a_student_without_a_path():
    result = subprocess.run(
        [sys.executable, "bench/hybrid.py", "--no-teacher", "--student", "conv"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "'conv' is not NAME=PATH" in result.stderr


def test_hybrid_adapter_flops_per_token_matches_xla():
    """The conv mixer's count against XLA's (the static gather counts nothing in either)."""
    import types

    from embres.adapters import hybrid

    cfg = types.SimpleNamespace(target_dim=128, kernel_size=5, hidden_dim=256)
    table = jax.random.normal(jax.random.PRNGKey(0), (300, 128))
    params = hybrid.init(jax.random.PRNGKey(1), table, cfg)
    ids = jnp.ones((BATCH, 32), jnp.int32)
    xla = _xla_flops(lambda p, i, m: hybrid.apply(p, None, i, m), params, ids, jnp.ones_like(ids))
    ratio = xla / (BATCH * 32) / hybrid.flops_per_token(params)
    assert 0.95 <= ratio <= 1.2, ratio
