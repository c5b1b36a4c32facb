"""Vocabulary distillation, static inference and the ModelAdapter API."""

import numpy as np
import pytest

from embres import ModelAdapter
from embres.distill import pca, sif_weights, usable_tokens
from embres.models import load_model
from embres.static_embedder import StaticEmbedder


@pytest.mark.parametrize("family", ["gpt2", "xlmr", "bert"])
def test_training_free_adapter_on_tiny_models_round_trips(tiny_models, tmp_path, family):
    path = tiny_models(family)
    adapter = ModelAdapter(source_model=path, target_dim=8)
    texts = ["the man plays guitar", "", "bir kedi koşuyor", "a dog"]
    vecs = adapter.adapt(texts)
    assert vecs.shape == (4, 8) and np.isfinite(vecs).all()
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    again = ModelAdapter.load(adapter.save(tmp_path / "saved", dtype="float32"))
    np.testing.assert_array_equal(again.adapt(texts), vecs)  # float32 on request: bit for bit
    assert again.adapt([]).shape == (0, 8)
    half = ModelAdapter.load(adapter.save(tmp_path / "half"))  # float16 by default
    assert half.table.dtype == np.float32
    np.testing.assert_allclose((half.adapt(texts) * vecs).sum(1), 1.0, atol=1e-4)


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


def _plain_rows(model, layer=-1, pooling="mean"):
    """The reference: every vocabulary item through ``model.apply`` in one call, no batching."""
    import jax.numpy as jnp

    from embres import pooling as pooling_lib
    from embres import tokenize

    before, after = tokenize.special_template(model.tokenizer)
    vocab = model.config.vocab_size
    ids = np.array([[*before, i, *after] for i in range(vocab)], np.int32)
    mask = jnp.ones_like(ids)
    out = model.apply(model.params, ids, mask, output_hidden_states=layer == "mean")
    if layer == "mean":
        hidden = jnp.mean(jnp.stack(out["hidden_states"][1:]), axis=0)
    else:
        hidden = out["last_hidden_state"]
    if pooling == "token":
        return np.asarray(hidden[:, len(before)], np.float32)
    return np.asarray(pooling_lib.pool(hidden, mask, pooling))


@pytest.mark.parametrize("family", ["bert", "xlmr", "gpt2"])
@pytest.mark.parametrize(("layer", "pooling"), [(-1, "mean"), ("mean", "token")])
def test_vocabulary_rows_equal_a_plain_forward_whatever_the_batching(
    tiny_models, family, layer, pooling
):
    """Even batches (7 ids a call here, the last one filled), dispatch ahead and a subset of
    ids change no row beyond float32 noise."""
    from embres.distill import teacher_token_rows

    model = load_model(tiny_models(family))
    expected = _plain_rows(model, layer, pooling)
    rows = teacher_token_rows(model, layer=layer, pooling=pooling, batch_size=7)
    np.testing.assert_allclose(rows, expected, atol=1e-5, rtol=1e-5)
    some = np.array([5, 1, 9, 2])
    subset = teacher_token_rows(model, layer=layer, pooling=pooling, batch_size=3, ids=some)
    np.testing.assert_allclose(subset, expected[some], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="ids must be"):
        teacher_token_rows(model, ids=np.array([model.config.vocab_size]))


def test_even_batches_pad_less_than_one_row_per_call():
    from embres.distill import _even_batch

    assert _even_batch(29528, 512) == 510  # 58 calls, 52 padded rows (not 0 + 488)
    assert _even_batch(512, 512) == 512 and _even_batch(3, 512) == 3 and _even_batch(1, 7) == 1
    for n, size in [(29528, 512), (30522, 1024), (100, 7)]:
        rows = _even_batch(n, size)
        calls = -(-n // rows)
        assert rows <= size and calls == -(-n // size) and calls * rows - n < calls


def test_placeholders_no_text_produces_are_not_distilled():
    """BERT's 994 [unusedN] are never produced by text, so their rows are not run; [UNK],
    [MASK] and every usable piece are."""
    from embres.distill import text_token_mask

    model = load_model("all-MiniLM-L6-v2")
    reachable = text_token_mask(model)
    tok = model.tokenizer
    assert (~reachable).sum() == 994
    assert not reachable[tok.convert_tokens_to_ids("[unused5]")]
    assert reachable[[tok.unk_token_id, tok.mask_token_id, tok.cls_token_id]].all()
    assert np.all(reachable[usable_tokens(model)])


def test_distilled_table_equals_the_unbatched_reference(tiny_models):
    """Distillation against the plain pipeline (all rows, one call): the rows text can reach
    are the same to float32 noise; rows past the tokenizer (never read) are zero."""
    from embres.distill import distill_vocabulary, text_token_mask

    model = load_model(tiny_models("bert", vocab_size=64))
    reachable = text_token_mask(model)
    assert reachable.sum() == len(model.tokenizer) < 64  # the padded rows are not reachable
    raw = _plain_rows(model)
    usable = usable_tokens(model)
    mean, basis = pca(raw[usable], 8)
    weights = sif_weights(64, 1e-4, None, usable)
    expected = ((raw - mean.astype(np.float32)) @ basis.astype(np.float32)) * weights[:, None]
    got = distill_vocabulary(model, target_dim=8)
    np.testing.assert_allclose(got.table[reachable], expected[reachable], atol=1e-5, rtol=1e-4)
    np.testing.assert_array_equal(got.table[~reachable], 0.0)


def test_the_compiled_forward_is_shared_across_loads(tiny_models):
    """A second distillation of the same teacher (loaded again) compiles nothing new."""
    from embres.distill import _module_rows, distill_vocabulary

    path = tiny_models("bert")
    distill_vocabulary(load_model(path), target_dim=8)
    compiled = _module_rows._cache_size()
    distill_vocabulary(load_model(path), target_dim=4)
    assert _module_rows._cache_size() == compiled
