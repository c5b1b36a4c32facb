"""Static/hybrid student pieces: Matryoshka losses, the cached-target source, the hybrid mixer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from embres.adapters import hybrid
from embres.data import cached
from embres.data.cached import CachedSource, build_cache, text_rows
from embres.models import load_model
from embres.objectives import losses
from embres.objectives.static_distill import matryoshka_dims
from embres.testing import tiny_checkpoint


def test_matryoshka_dims_and_loss():
    assert matryoshka_dims("64,32", 128) == (32, 64, 128)
    assert matryoshka_dims("", 16) == (16,)
    with pytest.raises(ValueError, match="matryoshka_dims='8,99'"):
        matryoshka_dims("8,99", 16)
    t = jax.random.normal(jax.random.PRNGKey(0), (6, 8))
    assert float(jnp.max(losses.matryoshka_loss(t, t, (2, 4, 8)))) < 1e-6
    flipped = t.at[:, :2].multiply(-1)  # only the first two dims disagree
    loss = losses.matryoshka_loss(flipped, t, (2, 8))
    assert float(jnp.min(loss)) > 0.5
    contrastive = losses.matryoshka_loss(t, t, (8,), "contrastive", 0.05)
    assert contrastive.shape == (6,) and float(contrastive.mean()) < 0.1
    with pytest.raises(ValueError, match="config.objective.loss='hinge'"):
        losses.matryoshka_loss(t, t, (8,), "hinge")


def test_hybrid_sees_word_order_and_pads_do_not_leak():
    cfg = type("C", (), {"target_dim": 8, "kernel_size": 3, "hidden_dim": 16})()
    table = jax.random.normal(jax.random.PRNGKey(1), (20, 12))
    params = hybrid.init(jax.random.PRNGKey(2), table, cfg)
    params["gate"] = jnp.zeros(8)  # open the gate so the context path counts
    ids = jnp.array([[3, 4, 5, 0], [5, 4, 3, 0]])
    mask = jnp.array([[1, 1, 1, 0], [1, 1, 1, 0]])
    out = hybrid.apply(params, None, ids, mask)
    mean = (out * mask[..., None]).sum(1)
    assert not np.allclose(mean[0], mean[1], atol=1e-4)  # same bag of words, other order
    other_pad = hybrid.apply(params, None, ids.at[:, 3].set(7), mask)
    np.testing.assert_allclose(out[:, :3], other_pad[:, :3], atol=1e-6)
    # (its FLOP count is checked against XLA's in tests/test_cost.py)


def test_cached_source_resumes_and_projects(tmp_path, monkeypatch):
    model = load_model(tiny_checkpoint("bert", tmp_path / "m"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"the man plays guitar {'a ' * (i % 5)}" for i in range(40)))

    def build(key, rows=None):
        held, fresh = text_rows(corpus, model.tokenizer, 12, heldout=4)
        return build_cache(
            model, fresh if rows is None else rows, tmp_path / "cache", max_length=12,
            key=key, heldout_texts=held, progress=False,
        )  # fmt: skip

    cache = build({"corpus": "v1"})
    targets = cache / "targets.npy"
    first = targets.stat()

    # Reused: the teacher is not run, the rows are not read, no file is rewritten.
    def no_teacher(*args):
        raise AssertionError("the teacher ran although the cache was valid")

    monkeypatch.setattr(cached, "teacher_sentence_vectors", no_teacher)
    untouched = iter([np.array([1, 2, 3])])
    assert build({"corpus": "v1"}, rows=untouched) == cache
    assert next(untouched).tolist() == [1, 2, 3]
    assert (targets.stat().st_ino, targets.stat().st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    # A changed key rebuilds (and so runs the teacher).
    with pytest.raises(AssertionError, match="the teacher ran"):
        build({"corpus": "v2"})
    monkeypatch.undo()
    build({"corpus": "v2"})
    assert targets.stat().st_ino != first.st_ino
    assert CachedSource(cache, batch_size=8, vocab_size=99, seed=0).key == {"corpus": "v2"}
    proj = np.eye(32, 8, dtype=np.float32)
    source = CachedSource(
        cache, batch_size=8, vocab_size=model.config.vocab_size, seed=0, projection=proj
    )
    assert source.heldout_texts(10) == [
        f"the man plays guitar {'a ' * (i % 5)}".strip() for i in range(4)
    ]
    for _ in range(5):  # crosses an epoch boundary (36 lines, 8 per batch)
        source.next_batch()
    state = source.get_state()
    expected = [source.next_batch() for _ in range(3)]
    again = CachedSource(
        cache, batch_size=8, vocab_size=model.config.vocab_size, seed=0, projection=proj
    )
    again.set_state(state)
    for want in expected:
        got = again.next_batch()
        for key in ("ids", "mask", "targets"):
            np.testing.assert_array_equal(got[key], want[key])
    assert expected[0]["targets"].shape == (8, 8)
