"""bfloat16 compute: sentence vectors within cosine 0.999 of float32, and the float32 islands.

The bundled all-MiniLM-L6-v2 embeds a fixed subset of STS-B dev, every 20th pair (75 pairs,
their 150 sentences), in bfloat16 and float32; every sentence must keep cosine >= 0.999.
The full dev set (2,910 distinct sentences, about 90 s on 2 cores) is checked by
``bench/bf16_cosine.py``. The other tests pin what keeps bf16 that close: LayerNorm and
pooling computed in float32 (the softmax is covered in ``tests/test_attention.py``).
"""

import jax.numpy as jnp
import numpy as np
import pytest

from embres import EmbeddingExtractor
from embres import pooling as pooling_lib
from embres.evaluate.sts import load_pairs
from embres.models import layers

MIN_COSINE = 0.999
STRIDE = 20  # every 20th STS-B dev pair


def _subset(data_dir) -> list[str]:
    pairs = load_pairs("stsb", "dev", data_dir)
    chosen = zip(pairs.sentences1[::STRIDE], pairs.sentences2[::STRIDE], strict=True)
    return list(dict.fromkeys(s for pair in chosen for s in pair))


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def subset(data_dir) -> list[str]:
    texts = _subset(data_dir)
    assert len(texts) > 140  # the subset is what the docstring says
    return texts


@pytest.fixture(scope="module")
def float32_vectors(subset) -> np.ndarray:
    return EmbeddingExtractor("all-MiniLM-L6-v2", dtype="float32").extract_embeddings(subset)


@pytest.fixture
def padding_forms(monkeypatch) -> list[bool]:
    """The ``right_padded`` of every attention mask built while tracing (a spy)."""
    seen = []
    build = layers.AttentionMask.from_padding.__func__

    def spy(cls, attention_mask, causal, right_padded=False):
        seen.append(bool(right_padded))
        return build(cls, attention_mask, causal, right_padded)

    monkeypatch.setattr(layers.AttentionMask, "from_padding", classmethod(spy))
    return seen


@pytest.mark.parametrize("right_padded", [False, True], ids=["mask", "lengths"])
def test_bf16_minilm_stays_within_cosine_0999_of_float32_on_stsb_dev(
    subset, float32_vectors, right_padded, padding_forms
):
    """Attention with the padding as a general mask and as lengths (what the extractor
    runs: it promises right padding; cuDNN's form on a GPU). The spy proves each case
    built its own form: the extractor always promises right padding, so "mask" overrides it."""
    extractor = EmbeddingExtractor("all-MiniLM-L6-v2", dtype="bfloat16")
    apply = extractor.model.apply

    def apply_with_form(params, input_ids, attention_mask, **kwargs):
        return apply(params, input_ids, attention_mask, **{**kwargs, "right_padded": right_padded})

    extractor.model.apply = apply_with_form
    padding_forms.clear()  # loading traced the module's init (with a general mask)
    cos = _cosines(float32_vectors, extractor.extract_embeddings(subset))
    assert padding_forms and set(padding_forms) == {right_padded}
    worst = int(np.argmin(cos))
    assert cos.min() >= MIN_COSINE, f"cosine {cos.min():.5f} for {subset[worst]!r}"
    assert cos.min() < 1 - 1e-7  # bf16 really ran: the vectors differ


def test_bf16_with_a_mask_that_is_no_prefix_stays_close_to_float32(padding_forms):
    """A general mask (a masked token inside the text, not only padding at the end) in bf16
    against float32 under the same mask: the form no right-padding promise covers."""
    model32 = EmbeddingExtractor("all-MiniLM-L6-v2").model
    model16 = EmbeddingExtractor("all-MiniLM-L6-v2", dtype="bfloat16").model
    texts = ["a man plays a guitar on stage", "a cat sits on the warm mat", "dogs run"]
    encoded = model32.tokenizer(texts, padding=True)
    ids, mask = np.array(encoded["input_ids"]), np.array(encoded["attention_mask"])
    holey = mask.copy()
    holey[:, 2] = 0  # the second word of every text is hidden from attention and pooling
    padding_forms.clear()  # loading traced the modules' init

    def vectors(model, m):
        hidden = model.apply(model.params, ids, m)["last_hidden_state"]
        return np.asarray(pooling_lib.pool(hidden, m, "mean"))

    exact, bf16 = vectors(model32, holey), vectors(model16, holey)
    assert set(padding_forms) == {False}
    assert _cosines(exact, vectors(model32, mask)).min() < 0.999  # the hole is really applied
    cos = _cosines(exact, bf16)
    assert cos.min() >= MIN_COSINE and cos.min() < 1 - 1e-7


def test_layer_norm_computes_in_float32_and_returns_the_compute_dtype():
    """A bf16 LayerNorm equals the float32 one on the same (bf16) input, rounded once."""
    rng = np.random.default_rng(0)
    # A large mean against a small spread: statistics in bf16 would lose the spread.
    x = jnp.asarray(300 + rng.standard_normal((3, 64)), jnp.bfloat16)
    norm16 = layers.LayerNorm(1e-12, dtype=jnp.bfloat16)
    params = norm16.init(jnp.zeros(2, jnp.uint32), x)
    out = norm16.apply(params, x)
    assert out.dtype == jnp.bfloat16
    exact = layers.LayerNorm(1e-12, dtype=jnp.float32).apply(params, x.astype(jnp.float32))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(exact.astype(jnp.bfloat16)))


def test_pooling_of_bf16_states_is_float32():
    hidden = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 4)), jnp.bfloat16)
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    for pooling in ("mean", "cls", "last", "max"):
        assert pooling_lib.pool(hidden, mask, pooling).dtype == jnp.float32, pooling
