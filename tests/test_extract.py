"""EmbeddingExtractor: parity with sentence-transformers, buckets, pooling, streaming, bad input."""

import json

import numpy as np
import pytest

from embres import EmbeddingExtractor, tokenize


@pytest.fixture(scope="module")
def minilm():
    return EmbeddingExtractor("all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def sts_dev_sentences(data_dir):
    sentences = []
    for line in (data_dir / "stsb" / "sts-dev.csv").read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        sentences.extend(fields[5:7])
    return list(dict.fromkeys(sentences))[:300]


def _cos(a, b):
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_matches_sentence_transformers_on_sts_dev(minilm, sts_dev_sentences):
    from sentence_transformers import SentenceTransformer

    assert len(sts_dev_sentences) >= 200
    st = SentenceTransformer(str(minilm.model.path), device="cpu")
    theirs = st.encode(sts_dev_sentences, normalize_embeddings=True, batch_size=64)
    ours = minilm.extract_embeddings(sts_dev_sentences)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert _cos(ours, theirs).min() >= 0.99999


def test_bfloat16_extraction_stays_close(minilm, sts_dev_sentences):
    bf16 = EmbeddingExtractor(minilm.model.path, dtype="bfloat16")
    texts = sts_dev_sentences[:200]
    assert _cos(bf16.extract_embeddings(texts), minilm.extract_embeddings(texts)).min() > 0.999


def _batch_shapes(ex, texts):
    """The padded (rows, length) of each batch ``ex`` runs for ``texts``, in order."""
    token_ids = tokenize.encode(ex.model.tokenizer, texts, ex.max_length)
    return [
        ids.shape
        for _, ids, _ in tokenize.bucketed_batches(
            token_ids, ex.batch_size, ex.max_length, ex.pad_id
        )
    ]


def test_each_bucket_traces_once_and_order_is_kept(minilm):
    ex = EmbeddingExtractor(minilm.model, batch_size=2)
    texts = [("word " * n).strip() for n in (1, 30, 2, 5, 17, 3, 1, 9, 4, 12)]
    batches = _batch_shapes(ex, texts)
    # 5 batches in 2 bucket shapes today ((2, 32) once, (2, 16) four times): one trace per
    # batch, or padding to each batch's own longest text, would give more traces than shapes.
    assert len(batches) > len(set(batches)) >= 2
    first = ex.extract_embeddings(texts)
    assert ex.trace_count == len(set(batches))
    # New texts of the same bucket shapes: no new trace.
    again = ex.extract_embeddings([t.replace("word", "thing") for t in texts])
    assert ex.trace_count == len(set(batches))
    assert not np.allclose(first, again)
    # Order: each row equals the text embedded on its own (one new trace per new shape).
    single = np.stack([ex.extract_embeddings([t])[0] for t in texts])
    singles = {shape for t in texts for shape in _batch_shapes(ex, [t])}
    assert ex.trace_count == len(set(batches) | singles) < len(batches) + len(texts)
    np.testing.assert_allclose(first, single, atol=1e-5)


def test_empty_inputs_and_bad_items(minilm):
    assert minilm.extract_embeddings([]).shape == (0, 384)
    vecs = minilm.extract_embeddings(["", "not empty"])
    assert vecs.shape == (2, 384) and np.isfinite(vecs).all()
    with pytest.raises(TypeError, match=r"texts\[2\]"):
        minilm.extract_embeddings(["a", "b", 3])
    with pytest.raises(TypeError, match="single string"):
        minilm.extract_embeddings("just one string")


def test_long_texts_are_truncated(minilm):
    long = "word " * 1000
    vec = minilm.extract_embeddings([long, long + "tail words"])
    np.testing.assert_allclose(vec[0], vec[1], atol=1e-6)


def test_layers_and_poolings(tiny_models):
    ex = EmbeddingExtractor(tiny_models("bert", num_layers=2))
    texts = ["the man plays guitar", "a cat", ""]
    tokens, mask = ex.extract_embeddings(texts, layer=1, pooling="none")
    assert tokens.shape[:2] == mask.shape and mask.sum(1).tolist() == [6, 4, 2]
    m = mask[..., None]
    np.testing.assert_allclose(
        ex.extract_embeddings(texts, layer=1, pooling="mean"),
        (tokens * m).sum(1) / m.sum(1),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        ex.extract_embeddings(texts, layer=1, pooling="cls"), tokens[:, 0], atol=1e-5
    )
    last = tokens[np.arange(3), mask.sum(1) - 1]
    np.testing.assert_allclose(
        ex.extract_embeddings(texts, layer=1, pooling="last"), last, atol=1e-5
    )
    maxed = np.where(m > 0, tokens, -np.inf).max(1)
    np.testing.assert_allclose(
        ex.extract_embeddings(texts, layer=1, pooling="max"), maxed, atol=1e-5
    )
    normed = ex.extract_embeddings(texts, layer=-2, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(normed, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        normed, ex.extract_embeddings(texts, layer=1, normalize=True), atol=1e-6
    )
    layer0 = ex.extract_embeddings(["a"], layer=0, pooling="none")[0][0]
    assert layer0.shape == (3, 32)
    with pytest.raises(ValueError, match="layer=3 is out of range.*-3..2"):
        ex.extract_embeddings(texts, layer=3)
    with pytest.raises(ValueError, match="pooling='sum'.*expected one of"):
        ex.extract_embeddings(texts, pooling="sum")


@pytest.mark.parametrize(
    "family,options",
    [
        pytest.param("gpt2", {}, id="gpt2"),
        pytest.param("xlmr", {}, id="xlmr"),
        pytest.param("xlmr", {"pad_token": False}, id="xlmr-no-pad-token"),
        # GPT-2's own bos/eos id (50256) with a 39-row table and no pad token: padding with
        # the eos id used to look up NaN and spread it to every vector.
        pytest.param(
            "gpt2",
            {"config_overrides": {"bos_token_id": 50256, "eos_token_id": 50256}},
            id="gpt2-eos-past-table",
        ),
        pytest.param("gpt2", {"pad_token": True}, id="gpt2-pad-token"),
    ],
)
def test_other_families_extract(tiny_models, family, options):
    ex = EmbeddingExtractor(tiny_models(family, **options))
    assert 0 <= ex.pad_id < ex.model.config.vocab_size
    texts = ["the dog runs", "", "bir kedi"]
    vecs = ex.extract_embeddings(texts)
    assert vecs.shape == (3, 32) and np.isfinite(vecs).all()
    # Padding (to the bucket's length and row count) changes nothing: each text alone.
    alone = np.stack([ex.extract_embeddings([t])[0] for t in texts])
    np.testing.assert_allclose(vecs, alone, atol=1e-5)
    assert ex.model.pooling == ("last" if family == "gpt2" else "mean")
    assert ex.embedding_table().shape[1] == 32


def test_extract_to_streams_a_memory_mapped_npy(tmp_path, minilm):
    texts = [f"sentence number {i}" for i in range(37)]
    path = minilm.extract_to(tmp_path / "out.npy", iter(texts), chunk_size=10, progress=False)
    stored = np.load(path, mmap_mode="r")
    assert isinstance(stored, np.memmap) and stored.shape == (37, 384)
    np.testing.assert_allclose(stored, minilm.extract_embeddings(texts), atol=1e-6)
    meta = json.loads((tmp_path / "out.npy.json").read_text())
    assert meta["count"] == 37 and meta["pooling"] == "mean" and meta["layer"] == 6
    assert not (tmp_path / "out.npy.partial").exists()
