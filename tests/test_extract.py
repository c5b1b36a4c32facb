"""EmbeddingExtractor: parity with sentence-transformers, buckets, pooling, streaming, bad input."""

import json

import numpy as np
import pytest

from embres import EmbeddingExtractor
from embres.testing import tiny_checkpoint


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


def test_each_bucket_traces_once_and_order_is_kept(minilm):
    ex = EmbeddingExtractor(minilm.model, batch_size=8)
    texts = [("word " * n).strip() for n in (1, 30, 2, 5, 17, 3, 1, 9, 4, 12)]
    first = ex.extract_embeddings(texts)
    traces = ex.trace_count
    assert traces >= 1
    # New texts of the same bucket shapes: no new trace.
    again = ex.extract_embeddings([t.replace("word", "thing") for t in texts])
    assert ex.trace_count == traces
    assert not np.allclose(first, again)
    # Order: each row equals the text embedded on its own.
    single = np.stack([ex.extract_embeddings([t])[0] for t in texts])
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


def test_layers_and_poolings(tmp_path):
    path = tiny_checkpoint("bert", tmp_path / "bert", num_layers=2)
    ex = EmbeddingExtractor(path)
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


@pytest.mark.parametrize("family", ["gpt2", "xlmr"])
def test_other_families_extract(tmp_path, family):
    ex = EmbeddingExtractor(tiny_checkpoint(family, tmp_path / family))
    vecs = ex.extract_embeddings(["the dog runs", "", "bir kedi"])
    assert vecs.shape == (3, 32) and np.isfinite(vecs).all()
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
