"""Layer-by-layer parity of the Flax ports against the Hugging Face PyTorch models."""

import numpy as np
import pytest
import torch
import transformers

from embres import pooling as pooling_lib
from embres import tokenize
from embres.models import load_model
from embres.testing import WORDS

TOL = 1e-4  # float32; never loosened to pass
# Fixed seeds: every run draws the same batches (never ``hash()``, which Python salts per
# process), so a failure reproduces.
SEEDS = (0, 1, 2)
POOLINGS = ("mean", "cls", "last", "max")
# GPT-2's own config puts bos/eos at 50256; a GPT-2-family checkpoint with its own small
# tokenizer keeps them, so they point past the table unless the table is large.
GPT2_SPECIALS = {"bos_token_id": 50256, "eos_token_id": 50256}


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


def _reference_states(reference, family, ids, mask):
    kwargs = {}
    if family == "gpt2":
        # GPT-2 positions count real tokens, so left padding is legal; tell the reference.
        kwargs["position_ids"] = torch.tensor(np.maximum(np.cumsum(mask, -1) - 1, 0))
    with torch.no_grad():
        return reference(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            output_hidden_states=True,
            **kwargs,
        ).hidden_states


def _reference_pool(hidden, mask, pooling):
    """Pooling in numpy over real tokens only: the definitions embres must agree with."""
    real = mask.astype(bool)
    rows = np.arange(len(hidden))
    if pooling == "mean":
        return (hidden * real[..., None]).sum(1) / real.sum(1, keepdims=True)
    if pooling == "cls":  # the first real token (with left padding, not position 0)
        return hidden[rows, real.argmax(1)]
    if pooling == "last":
        return hidden[rows, real.shape[1] - 1 - real[:, ::-1].argmax(1)]
    return np.where(real[..., None], hidden, -np.inf).max(1)


def _random_texts(rng, batch):
    """Texts of 0 to 12 words (some unknown to the vocabulary), with at least one empty string."""
    words = list(WORDS) + ["zebra", "Guitar"]
    texts = [" ".join(rng.choice(words, size=rng.integers(0, 13))) for _ in range(batch)]
    texts[rng.integers(batch)] = ""
    return texts


def _pad(token_ids, length, side, fill):
    ids = np.full((len(token_ids), length), fill, np.int64)
    mask = np.zeros((len(token_ids), length), np.int64)
    for r, row in enumerate(token_ids):
        where = slice(0, len(row)) if side == "right" else slice(length - len(row), length)
        ids[r, where], mask[r, where] = row, 1
    return ids, mask


@pytest.mark.parametrize("table", ["tokenizer", "large"])
@pytest.mark.parametrize("pad_token", [True, False])
@pytest.mark.parametrize("family", ["bert", "xlmr", "gpt2"])
def test_random_batches_match_reference_on_every_layer_and_pooling(
    tiny_models, family, pad_token, table
):
    """Random texts (empty ones included), left and right padding, tokenizers with and without
    a pad token, tables smaller ("tokenizer") and larger ("large") than the config's special
    ids: every layer and every pooling matches the reference on real tokens, and nothing
    embres returns is NaN, pad positions and all-pad rows included, whatever id fills the pads.
    """
    options = dict(pad_token=pad_token, vocab_size=None if table == "tokenizer" else 50304)
    if family == "gpt2":
        options["config_overrides"] = GPT2_SPECIALS
    path = tiny_models(family, **options)
    model = load_model(path)
    reference = _reference(path)
    vocab_size = model.config.vocab_size
    tokenizer_pad = model.tokenizer.pad_token_id
    assert 0 <= model.pad_id < vocab_size
    if tokenizer_pad is not None:
        assert model.pad_id == tokenizer_pad
    # What the reference sees at pad positions; masked, so any valid id (XLM-R's positions
    # skip exactly its config's pad id, so that one).
    hf_pad = getattr(reference.config, "pad_token_id", None)
    hf_pad = hf_pad if hf_pad is not None and hf_pad < vocab_size else 0

    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        token_ids = tokenize.encode(model.tokenizer, _random_texts(rng, 6), model.max_length)
        length = max(map(len, token_ids)) + int(rng.integers(0, 4))
        for side in ("right", "left"):
            where = f"seed={seed} side={side}"
            # The last row is all padding, as in a batch filled up to a bucketed row count.
            ids, mask = _pad([*token_ids, np.zeros(0, np.int64)], length, side, hf_pad)
            theirs = _reference_states(reference, family, ids[:-1], mask[:-1])
            # The model's own pad id, and one past the table: pads never reach real tokens.
            # Right padding also goes in as lengths, as the extractor promises it.
            runs = [(model.pad_id, False), (vocab_size + 17, False)]
            if side == "right":
                runs.append((vocab_size + 17, True))
            for fill, right_padded in runs:
                run = f"{where} pad={fill} right_padded={right_padded}"
                ours = model.apply(
                    model.params,
                    np.where(mask > 0, ids, fill),
                    mask,
                    output_hidden_states=True,
                    right_padded=right_padded,
                )["hidden_states"]
                assert len(ours) == model.config.num_layers + 1
                for layer, hidden in enumerate(ours):
                    hidden = np.asarray(hidden)
                    if not np.isfinite(hidden).all():
                        pytest.fail(f"{run}: NaN in layer {layer}")
                    for pooling in POOLINGS:
                        pooled = np.asarray(pooling_lib.pool(hidden, mask, pooling))
                        if not np.isfinite(pooled).all():
                            pytest.fail(f"{run}: NaN in layer {layer} {pooling}")
                        expected = _reference_pool(theirs[layer].numpy(), mask[:-1], pooling)
                        err = np.abs(pooled[:-1] - expected).max()
                        assert err < TOL, f"{run} layer {layer} {pooling}: {err:.2e}"
                try:
                    _compare([h[:-1] for h in ours], theirs, mask[:-1])
                except AssertionError as e:
                    raise AssertionError(f"{run}: {e}") from None


@pytest.mark.parametrize(
    ("side", "right_padded"), [("right", False), ("right", True), ("left", False)]
)
@pytest.mark.parametrize("family", ["bert", "xlmr", "gpt2"])
def test_random_ids_match_reference_on_every_layer(tiny_models, family, side, right_padded):
    """Ids drawn from the whole table (not only what the tokenizer emits), a few seeds; right
    padding both as a mask and as lengths (``right_padded=True``, what the extractor promises)."""
    path = tiny_models(family)
    model = load_model(path)
    reference = _reference(path)
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        ids, mask = _random_batch(rng, model.config.vocab_size, 5, 13, model.pad_id, side)
        ours = model.apply(
            model.params, ids, mask, output_hidden_states=True, right_padded=right_padded
        )["hidden_states"]
        assert len(ours) == model.config.num_layers + 1
        try:
            _compare(ours, _reference_states(reference, family, ids, mask), mask)
        except AssertionError as e:
            raise AssertionError(f"seed={seed}: {e}") from None


def test_pooling_ignores_nan_at_padded_positions():
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((3, 4, 5)).astype(np.float32)
    mask = np.array([[1, 1, 0, 0], [0, 1, 1, 1], [0, 0, 0, 0]])
    poisoned = np.where(mask[..., None] > 0, hidden, np.nan)
    for pooling in POOLINGS:
        pooled = np.asarray(pooling_lib.pool(poisoned, mask, pooling))
        assert np.isfinite(pooled).all() and not pooled[2].any(), pooling  # all-pad: zeros
        expected = _reference_pool(hidden[:2], mask[:2], pooling)
        np.testing.assert_allclose(pooled[:2], expected, rtol=0, atol=1e-6, err_msg=pooling)


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


def test_early_stop_gives_the_same_layer(tiny_models):
    model = load_model(tiny_models("gpt2", num_layers=3))
    ids = np.array([[5, 6, 7, 8]])
    mask = np.ones_like(ids)
    full = model.apply(model.params, ids, mask, output_hidden_states=True)["hidden_states"]
    for k in range(3):
        early = model.apply(model.params, ids, mask, num_layers=k)["last_hidden_state"]
        np.testing.assert_allclose(early, full[k], atol=1e-6)


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_bfloat16_compute_keeps_float32_params(tiny_models, family):
    path = tiny_models(family)
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
