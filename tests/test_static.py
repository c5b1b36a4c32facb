"""Vocabulary distillation, static inference and the ModelAdapter API."""

import numpy as np
import pytest

from embres import ModelAdapter
from embres.distill import pca, sif_weights, usable_tokens
from embres.models import load_model
from embres.static import StaticEmbedder


@pytest.mark.parametrize("family", ["gpt2", "xlmr", "bert"])
def test_training_free_adapter_on_tiny_models_round_trips(tiny_models, tmp_path, family):
    path = tiny_models(family)
    adapter = ModelAdapter(source_model=path, target_dim=8)
    texts = ["the man plays guitar", "", "bir kedi koşuyor", "a dog"]
    vecs = adapter.adapt(texts)
    assert vecs.shape == (4, 8) and np.isfinite(vecs).all()
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    again = ModelAdapter.load(adapter.save(tmp_path / "saved"))
    np.testing.assert_array_equal(again.adapt(texts), vecs)
    assert again.adapt([]).shape == (0, 8)


def test_vocabulary_rows_equal_the_teacher_on_a_one_token_text(tiny_models, tmp_path):
    from embres import EmbeddingExtractor
    from embres.distill import teacher_token_rows

    model = load_model(tiny_models("bert"))
    rows = teacher_token_rows(model, pooling="mean", batch_size=16)
    token = model.tokenizer("guitar", add_special_tokens=False)["input_ids"][0]
    expected = EmbeddingExtractor(model).extract_embeddings(["guitar"], normalize=False)[0]
    np.testing.assert_allclose(rows[token], expected, atol=1e-5)


def test_static_encoder_is_the_mean_of_rows():
    from embres.testing import tiny_tokenizer

    tok = tiny_tokenizer("bert")
    table = np.random.default_rng(0).normal(size=(len(tok), 6)).astype(np.float32)
    enc = StaticEmbedder(table, tok, normalize=False)
    ids = tok("the cat", add_special_tokens=False)["input_ids"]
    np.testing.assert_allclose(enc.encode(["the cat"])[0], table[ids].mean(0), atol=1e-6)
    np.testing.assert_allclose(
        enc.encode(["the cat"], dims=3)[0], table[ids, :3].mean(0), atol=1e-6
    )
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        enc.encode(["a", None])


def test_sif_weights_and_pca():
    w = sif_weights(10, 1e-2)
    assert np.all(np.diff(w) > 0)  # rarer (later) tokens weigh more
    counts = np.array([100, 0, 5, 1, 0, 0, 0, 0, 0, 0])
    wc = sif_weights(10, 1e-2, counts)
    assert wc[0] < wc[2] < wc[3] < wc[1]
    rows = np.random.default_rng(1).normal(size=(200, 5)) * np.array([5, 3, 1, 0.1, 0.01])
    mean, comp = pca(rows.astype(np.float32), 2)
    assert abs(abs(comp[0, 0]) - 1) < 0.05 and abs(abs(comp[1, 1]) - 1) < 0.05
    with pytest.raises(ValueError, match="target_dim=6"):
        pca(rows, 6)
    with pytest.raises(ValueError, match="coefficient"):
        sif_weights(10, 2.0)


def test_unused_and_special_tokens_are_excluded():
    model = load_model("all-MiniLM-L6-v2")
    keep = usable_tokens(model)
    tok = model.tokenizer
    assert not keep[tok.convert_tokens_to_ids("[unused5]")] and not keep[tok.cls_token_id]
    assert keep[tok.convert_tokens_to_ids("guitar")]
    assert keep.sum() == 29523


def test_bad_target_dim(tiny_models, tmp_path):
    path = tiny_models("bert")
    with pytest.raises(ValueError, match="target_dim=0"):
        ModelAdapter(path, target_dim=0)
    with pytest.raises(ValueError, match="exceeds the teacher's width 32"):
        ModelAdapter(path, target_dim=64)


def test_fit_trains_through_embres_train_and_keeps_the_width(tiny_models, tmp_path):
    path = tiny_models("bert")
    adapter = ModelAdapter(source_model=path, target_dim=8)
    texts = ["the man plays guitar", "a cat"]
    before = adapter.adapt(texts)
    overrides = {
        "total_steps": 3,
        "batch_size": 8,
        "data.max_length": 12,
        "optimizer.warmup_steps": 1,
        "checkpoint.every_steps": 3,
        "log_every_steps": 1,
        "evals": {},
        "eval.heldout_texts": 4,
    }
    adapter.fit(overrides, workdir=tmp_path / "work")
    after = adapter.adapt(texts)
    assert after.shape == (2, 8) and not np.allclose(before, after)
    assert (tmp_path / "work" / "export" / "embres_static.json").exists()


def test_fit_refuses_unknown_keys_and_honours_layer_and_corpus(tiny_models, tmp_path, monkeypatch):
    from embres import train

    path = tiny_models("bert")
    seen = {}
    monkeypatch.setattr(train, "train_and_evaluate", lambda config, workdir: seen.update(c=config))
    adapter = ModelAdapter(source_model=path, target_dim=8)
    with pytest.raises(ValueError, match=r"unknown config key 'data.sorce'.*'data.source'"):
        adapter.fit({"data.sorce": "text:x.txt"}, workdir=tmp_path / "w0")
    assert not seen  # refused before any training
    corpus = ["the man plays guitar", "a cat sits", "dogs run"]
    layered = ModelAdapter(source_model=path, target_dim=8, layer=1, corpus=corpus)
    with pytest.raises(FileNotFoundError):  # train was replaced: no export to load back
        layered.fit({}, workdir=tmp_path / "w1")
    config = seen["c"]
    assert config.objective.teacher_layer == 1
    assert config.data.source == f"text:{tmp_path / 'w1' / 'corpus.txt'}"
    assert (tmp_path / "w1" / "corpus.txt").read_text().splitlines() == corpus
    with pytest.raises(ValueError, match="normalize=False cannot be honoured"):
        ModelAdapter(source_model=path, target_dim=8, normalize=False).fit({}, tmp_path / "w2")
