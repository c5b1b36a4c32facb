"""Layer-by-layer parity of the Flax ports against the Hugging Face PyTorch models."""

import numpy as np
import pytest
import torch
import transformers

from embres.models import load_model
from embres.testing import tiny_checkpoint

TOL = 1e-4  # float32; never loosened to pass


def _reference(path):
    return transformers.AutoModel.from_pretrained(str(path)).eval()


def _random_batch(rng, vocab_size, batch, length, pad_id, side, low=3):
    ids = rng.integers(low, vocab_size, size=(batch, length)).astype(np.int64)
    mask = np.ones((batch, length), np.int64)
    lengths = rng.integers(1, length + 1, size=batch)
    lengths[0] = length  # one unpadded row
    for r, n in enumerate(lengths):
        pad = slice(n, None) if side == "right" else slice(0, length - n)
        ids[r, pad] = pad_id
        mask[r, pad] = 0
    return ids, mask


def _compare(ours, theirs, mask):
    assert len(ours) == len(theirs)
    real = mask.astype(bool)
    for layer, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        a, b = np.asarray(a)[real], b.numpy()[real]
        err = np.abs(a - b).max()
        assert err < TOL, f"layer {layer}: max |diff| {err:.2e} >= {TOL}"


@pytest.mark.parametrize(
    "family,side",
    [("bert", "right"), ("xlmr", "right"), ("xlmr", "left"), ("gpt2", "right"), ("gpt2", "left")],
)
def test_tiny_random_models_match_reference_on_every_layer(tmp_path, family, side):
    path = tiny_checkpoint(family, tmp_path / family, seed=hash(side) % 100)
    model = load_model(path)
    reference = _reference(path)
    rng = np.random.default_rng(abs(hash((family, side))) % 2**32)
    pad = model.config.pad_token_id
    ids, mask = _random_batch(rng, model.config.vocab_size, 5, 13, pad, side)
    ours = model.apply(model.params, ids, mask, output_hidden_states=True)["hidden_states"]
    kwargs = {}
    if family == "gpt2":
        # GPT-2 positions count real tokens, so left padding is legal; tell the reference.
        kwargs["position_ids"] = torch.tensor(np.maximum(np.cumsum(mask, -1) - 1, 0))
    with torch.no_grad():
        theirs = reference(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            output_hidden_states=True,
            **kwargs,
        ).hidden_states
    assert len(ours) == model.config.num_layers + 1
    _compare(ours, theirs, mask)


def test_bundled_minilm_matches_reference_on_every_layer():
    model = load_model("all-MiniLM-L6-v2")
    reference = _reference(model.path)
    rng = np.random.default_rng(7)
    ids, mask = _random_batch(rng, model.config.vocab_size, 4, 24, 0, "right", low=1000)
    ids[:, 0] = 101  # [CLS]
    ours = model.apply(model.params, ids, mask, output_hidden_states=True)["hidden_states"]
    with torch.no_grad():
        theirs = reference(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            output_hidden_states=True,
        ).hidden_states
    _compare(ours, theirs, mask)


def test_early_stop_gives_the_same_layer(tmp_path):
    model = load_model(tiny_checkpoint("gpt2", tmp_path / "g", num_layers=3))
    ids = np.array([[5, 6, 7, 8]])
    mask = np.ones_like(ids)
    full = model.apply(model.params, ids, mask, output_hidden_states=True)["hidden_states"]
    for k in range(3):
        early = model.apply(model.params, ids, mask, num_layers=k)["last_hidden_state"]
        np.testing.assert_allclose(early, full[k], atol=1e-6)


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_bfloat16_compute_keeps_float32_params(tmp_path, family):
    path = tiny_checkpoint(family, tmp_path / family)
    f32 = load_model(path)
    bf16 = load_model(path, dtype="bfloat16")
    leaf = bf16.embedding_table()
    assert leaf.dtype == np.float32
    ids = np.array([[2, 5, 6, 7, 3]])
    mask = np.ones_like(ids)
    a = np.asarray(f32.apply(f32.params, ids, mask)["last_hidden_state"])
    out = bf16.apply(bf16.params, ids, mask)["last_hidden_state"]
    assert out.dtype == np.dtype("bfloat16")
    b = np.asarray(out, np.float32)
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    assert cos.min() > 0.99
