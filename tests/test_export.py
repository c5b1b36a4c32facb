"""Exports load in Model2Vec, sentence-transformers and transformers with embres's vectors;
int8-only directories load alone; a re-used directory never mixes two models."""

import numpy as np
import pytest

from embres import ModelAdapter
from embres.export import dequantize_int8, load_student, quantize_int8

WORDS = (
    "a man woman child dog cat plays reads eats runs guitar piano book apple park street "
    "the quickly happily under over near big small red blue old new river mountain city"
).split()


@pytest.fixture(scope="module")
def adapter():
    return ModelAdapter("all-MiniLM-L6-v2", target_dim=64)


@pytest.fixture(scope="module")
def sentences():
    """Generated sentences: the test needs no data folder."""
    rng = np.random.default_rng(7)
    return [" ".join(rng.choice(WORDS, size=rng.integers(2, 14))) for _ in range(300)]


def _min_cos(a, b):
    """Smallest row cosine, computed in float64 (Model2Vec returns float16 vectors from a
    float16 table: normalising those in float16 would add its own rounding)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


def test_model2vec_and_sentence_transformers_load_the_export(tmp_path, adapter, sentences):
    """The default export (float16 table) loads in both with embres's vectors; embres reads
    it back within float16's rounding of every entry, and a float32 export bit for bit."""
    from model2vec import StaticModel
    from sentence_transformers import SentenceTransformer

    out = adapter.save(tmp_path / "static")
    ours = adapter.adapt(sentences)
    m2v = StaticModel.from_pretrained(str(out)).encode(sentences)
    st = SentenceTransformer(str(out), device="cpu").encode(sentences)
    assert m2v.shape == st.shape == ours.shape
    assert _min_cos(ours, m2v) >= 0.9999
    assert _min_cos(ours, st) >= 0.9999
    loaded = ModelAdapter.load(out)
    error = np.abs(loaded.table - adapter.table).max(axis=1)
    assert np.all(error <= np.finfo(np.float16).eps * np.linalg.norm(adapter.table, axis=1))
    assert _min_cos(loaded.adapt(sentences), ours) >= 0.9999
    full = ModelAdapter.load(adapter.save(tmp_path / "full", dtype="float32"))
    np.testing.assert_array_equal(full.adapt(sentences[:50]), ours[:50])


def test_texts_past_the_token_limit_embed_the_same_everywhere(tmp_path, adapter):
    """A 2,000-word text is cut at the same 512th token by embres, Model2Vec and
    sentence-transformers (the export writes the limit into tokenizer.json and config.json)."""
    from model2vec import StaticModel
    from sentence_transformers import SentenceTransformer

    rng = np.random.default_rng(3)
    long_texts = [" ".join(rng.choice(WORDS, size=2000)) for _ in range(3)]
    head_only = [" ".join(t.split()[:400]) for t in long_texts]
    out = adapter.save(tmp_path / "static", dtype="float32")  # the cut, not the rounding
    ours = adapter.adapt(long_texts)
    assert len(adapter.embedder.token_ids(long_texts)[0]) == 512
    assert _min_cos(ours, adapter.adapt(head_only)) < 0.9999  # the tail would change it
    m2v = StaticModel.from_pretrained(str(out)).encode(long_texts)
    st = SentenceTransformer(str(out), device="cpu").encode(long_texts)
    np.testing.assert_allclose(m2v, ours, atol=1e-5)
    np.testing.assert_allclose(st, ours, atol=1e-5)


def test_int8_round_trip_and_int8_only_directory(tmp_path, adapter, sentences):
    q, scale = quantize_int8(adapter.table)
    assert q.dtype == np.int8 and scale.shape == (adapter.table.shape[0],)
    err = np.abs(dequantize_int8(q, scale) - adapter.table).max(axis=1)
    assert np.all(err <= scale / 2 + 1e-7)
    out = adapter.save(tmp_path / "static8", int8=True)
    small = ModelAdapter.load(out, int8=True)
    assert _min_cos(small.adapt(sentences), adapter.adapt(sentences)) > 0.99
    alone = adapter.save(tmp_path / "int8_only", int8=True, keep_float32=False)
    assert not (alone / "model.safetensors").exists()
    shipped = tmp_path / "shipped"
    alone.rename(shipped)  # moved on its own: nothing points back at a float32 file
    loaded = ModelAdapter.load(shipped)
    np.testing.assert_array_equal(loaded.adapt(sentences[:20]), small.adapt(sentences[:20]))
    assert load_student(shipped).disk_bytes < adapter.table.nbytes / 3


def test_a_reused_directory_holds_only_the_new_model(tmp_path, adapter, sentences, capsys):
    """Saving 64-d with int8, then 32-d without, must not leave the 64-d int8 table behind."""
    directory = tmp_path / "reused"
    adapter.save(directory, int8=True)
    narrow = ModelAdapter("all-MiniLM-L6-v2", target_dim=32)
    narrow.save(directory)
    assert "replacing the model in" in capsys.readouterr().out
    assert not (directory / "model_int8.safetensors").exists()
    with pytest.raises(FileNotFoundError, match="model_int8.safetensors not found"):
        ModelAdapter.load(directory, int8=True)
    assert ModelAdapter.load(directory).adapt(sentences[:3]).shape == (3, 32)


def test_export_rejects_a_table_smaller_than_the_vocabulary(tmp_path, adapter):
    from embres.export import export_static

    with pytest.raises(ValueError, match="rows but the tokenizer has"):
        export_static(adapter.table[:10], adapter.tokenizer, tmp_path / "bad")


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_compressed_teacher_export_loads_in_transformers_and_sentence_transformers(
    tiny_models, tmp_path, family, sentences
):
    """The trained low-rank teacher's export: AutoModel (pooled as embres pools) and
    SentenceTransformer give embres's vectors, cosine >= 0.9999."""
    import torch
    from _train_utils import tiny_config
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    from embres import train
    from embres.extract import EmbeddingExtractor

    model_dir = tiny_models(family, hidden_size=32, num_layers=2)
    work = tmp_path / "work"
    train.train_and_evaluate(tiny_config(model_dir, total_steps=2, export=True), work)
    export = work / "export"
    texts = sentences[:40]
    ours = EmbeddingExtractor(str(export)).extract_embeddings(texts, progress=False)
    st = SentenceTransformer(str(export), device="cpu").encode(texts)
    assert _min_cos(ours, st) >= 0.9999
    tok, hf = AutoTokenizer.from_pretrained(str(export)), AutoModel.from_pretrained(str(export))
    extractor = EmbeddingExtractor(str(export))
    for text, vector in zip(texts[:8], ours[:8], strict=True):
        ids = tok(text, return_tensors="pt", truncation=True, max_length=extractor.max_length)
        with torch.no_grad():
            states = hf(**ids).last_hidden_state[0].numpy()
        pooled = states[-1] if extractor.model.pooling == "last" else states.mean(0)
        if extractor.model.normalize:
            pooled = pooled / np.linalg.norm(pooled)
        assert _min_cos(vector[None], pooled[None]) >= 0.9999
