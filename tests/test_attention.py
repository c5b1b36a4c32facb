"""Attention paths (``embres.models.layers``): the reference einsums, ``jax.nn.dot_product_attention``
with a boolean mask, and with sequence lengths, agree; the guarantees hold on each; the
implementation is chosen by a rule that can be read and is logged.

cuDNN cannot run here (CPU): its choice is tested through the rule with a stand-in device,
and forcing it on CPU must raise naming the setting that turns it off.
"""

import logging
import types

import jax.numpy as jnp
import numpy as np
import pytest

from embres.models import layers, load_model

TOL = 1e-5  # float32, reference against dot_product_attention
# [batch, length] masks: right padding (a full row, a short row, an all-pad row) and left
# padding (the same rows mirrored). Every batch has an all-pad row: a query with no key.
MASKS = {
    "right": np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]),
    "left": np.array([[1, 1, 1, 1, 1], [0, 0, 0, 1, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]),
}


def _qkv(seed=0, batch=4, length=5, heads=2, head_dim=8, dtype=np.float32):
    rng = np.random.default_rng(seed)
    shape = (batch, length, heads, head_dim)
    return tuple(jnp.asarray(rng.standard_normal(shape), dtype) for _ in range(3))


def _paths(side):
    """(name, attention, right_padded) of every path a mask with this padding may take."""
    paths = [("reference", "reference", False), ("xla mask=", "xla", False)]
    if side == "right":
        paths.append(("xla lengths", "xla", True))
    return paths


def _run(q, k, v, padding, causal, attention, right_padded):
    mask = layers.AttentionMask.from_padding(jnp.asarray(padding), causal, right_padded)
    return np.asarray(layers.attend(q, k, v, mask, attention), np.float32)


def _sees_a_key(padding, causal):
    """[batch, q]: True where a query has at least one visible key."""
    keep = np.asarray(layers.attention_keep(jnp.asarray(padding), causal))
    return np.broadcast_to(keep, (len(padding), 1, padding.shape[1], padding.shape[1])).any(-1)[
        :, 0
    ]


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_every_path_matches_the_reference_at_real_tokens(side, causal):
    padding = MASKS[side]
    q, k, v = _qkv()
    reference = _run(q, k, v, padding, causal, "reference", False)
    real = padding.astype(bool)
    for name, attention, right_padded in _paths(side)[1:]:
        out = _run(q, k, v, padding, causal, attention, right_padded)
        assert np.isfinite(out).all(), name
        err = np.abs(out[real] - reference[real]).max()
        assert err <= TOL, f"{name}: max |diff| {err:.2e} > {TOL}"


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_a_query_with_no_visible_key_gets_zeros_on_every_path(side, causal):
    """The all-pad row (every path), and under a causal mask with left padding the pads
    before the first real token: their softmax has nothing to weigh, so zeros, not NaN and
    not the mean of other queries' values."""
    padding = MASKS[side]
    blind = ~_sees_a_key(padding, causal)
    assert blind[-1].all()  # the all-pad row
    if causal and side == "left":
        assert blind[1, :3].all()  # pads before the first real token
    q, k, v = _qkv(seed=1)
    for name, attention, right_padded in _paths(side):
        out = _run(q, k, v, padding, causal, attention, right_padded)
        assert np.isfinite(out).all(), name
        assert not out[blind].any(), f"{name}: a query that sees no key got non-zeros"


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_nan_and_inf_at_padded_positions_never_reach_real_tokens(side, causal):
    padding = MASKS[side]
    pad = padding == 0
    q, k, v = (np.array(t) for t in _qkv(seed=2))
    poisoned_q, poisoned_k, poisoned_v = q.copy(), k.copy(), v.copy()
    poisoned_q[pad], poisoned_k[pad], poisoned_v[pad] = np.nan, np.nan, np.inf
    real = padding.astype(bool)
    for name, attention, right_padded in _paths(side):
        clean = _run(q, k, v, padding, causal, attention, right_padded)
        dirty = _run(poisoned_q, poisoned_k, poisoned_v, padding, causal, attention, right_padded)
        assert np.isfinite(dirty[real]).all(), name
        np.testing.assert_allclose(dirty[real], clean[real], rtol=0, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("side", ["right", "left"])
def test_bfloat16_inputs_agree_with_float32_on_every_path(side):
    """Softmax runs in float32 on every path: bf16 inputs give the float32 result of the same
    (rounded) inputs to within bf16's own rounding of the output."""
    padding = MASKS[side]
    real = padding.astype(bool)
    q, k, v = _qkv(seed=3, dtype=jnp.bfloat16)
    exact = _run(*(t.astype(jnp.float32) for t in (q, k, v)), padding, False, "reference", False)
    for name, attention, right_padded in _paths(side):
        out = _run(q, k, v, padding, False, attention, right_padded)
        err = np.abs(out[real] - exact[real]).max()
        assert err < 2e-2, f"{name}: {err:.2e}"


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_models_give_the_same_states_on_every_path(tiny_models, family):
    """Whole models (bidirectional BERT, causal GPT-2), every layer, right padding with and
    without the lengths promise, left padding, and each ``attention`` setting CPU can run."""
    model = load_model(tiny_models(family))
    rng = np.random.default_rng(0)
    ids = rng.integers(3, model.config.vocab_size, size=(4, 5))
    for side, padding in MASKS.items():
        real = padding.astype(bool)
        states = {}
        for name, attention, right_padded in [("auto", "auto", False), *_paths(side)]:
            module = model.module.clone(attention=attention)
            out = module.apply(
                {"params": model.params},
                ids,
                padding,
                output_hidden_states=True,
                right_padded=right_padded,
            )["hidden_states"]
            states[name] = [np.asarray(h) for h in out]
        for name, hidden in states.items():
            for layer, (a, b) in enumerate(zip(hidden, states["reference"], strict=True)):
                assert np.isfinite(a).all(), f"{side} {name} layer {layer}: NaN"
                err = np.abs(a[real] - b[real]).max()
                assert err <= TOL, f"{side} {name} layer {layer}: {err:.2e}"


def _device(platform, capability=None):
    return types.SimpleNamespace(platform=platform, compute_capability=capability)


def test_cudnn_is_taken_only_where_it_runs():
    """The rule, with stand-in devices: a CUDA GPU, bf16/fp16, head dim a multiple of 8 up to
    256 (128 before Hopper)."""
    hopper, ampere = _device("gpu", "9.0"), _device("gpu", "8.0")
    assert layers.cudnn_unsupported(jnp.bfloat16, 64, hopper) is None
    assert layers.cudnn_unsupported(jnp.float16, 256, hopper) is None
    assert layers.cudnn_unsupported(jnp.bfloat16, 128, ampere) is None
    refusals = {
        "not a CUDA GPU": (jnp.bfloat16, 64, _device("cpu")),
        "not a CUDA GPU ": (jnp.bfloat16, 64, _device("gpu", "gfx942")),  # ROCm
        "float32, not bfloat16": (jnp.float32, 64, hopper),
        "head dim 36": (jnp.bfloat16, 36, hopper),
        "head dim 264": (jnp.bfloat16, 264, hopper),
        "head dim 256 is not a multiple of 8 up to 128": (jnp.bfloat16, 256, ampere),
    }
    for phrase, args in refusals.items():
        reason = layers.cudnn_unsupported(*args)
        assert reason is not None and phrase.strip() in reason, (args, reason)


def test_auto_on_cpu_runs_xla_and_says_why():
    chosen, reason = layers.choose_attention("auto", jnp.bfloat16, 64, right_padded=True)
    assert chosen == "xla" and "not a CUDA GPU" in reason
    for forced in ("xla", "cudnn", "reference"):
        assert layers.choose_attention(forced, jnp.float32, 64, False)[0] == forced
    with pytest.raises(ValueError, match=r"attention='flash' is not supported.*'reference'"):
        layers.choose_attention("flash", jnp.float32, 64, False)


def test_the_path_that_ran_is_logged(caplog):
    layers._log_choice.cache_clear()  # logged once per shape and process
    q, k, v = _qkv()
    with caplog.at_level(logging.INFO, logger="embres.models.layers"):
        _run(q, k, v, MASKS["right"], False, "auto", True)
        _run(q, k, v, MASKS["right"], False, "auto", True)
    lines = [r.getMessage() for r in caplog.records if r.name == "embres.models.layers"]
    assert len(lines) == 1, lines
    assert lines[0].startswith("attention xla for float32 (4, 5, 2, 8) (auto: no cuDNN because")


def test_forced_cudnn_that_cannot_run_raises_naming_the_way_out():
    q, k, v = _qkv(dtype=jnp.bfloat16)
    with pytest.raises(RuntimeError, match=r"cuDNN attention .*attention='xla'") as info:
        _run(q, k, v, MASKS["right"], False, "cudnn", True)
    assert info.value.__cause__ is not None  # jax's own error stays attached


def test_modules_show_their_attention_setting():
    assert "attention = 'xla'" in repr(layers.SelfAttention(2, 8, attention="xla"))
