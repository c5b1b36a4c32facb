"""Adapter shapes and contracts, objectives' batch-split invariance, frozen teacher."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _train_utils import tiny_config

from embres import adapters
from embres.objectives import compressed_teacher
from embres.objectives import losses as objectives


class Cfg:
    def __init__(self, **kw):
        self.__dict__.update(kw)

    def get(self, key, default=None):
        return self.__dict__.get(key, default)


@pytest.fixture(scope="module")
def table():
    return jax.random.normal(jax.random.PRNGKey(0), (50, 16)) * jnp.linspace(2.0, 0.1, 16)


def test_get_unknown_names_allowed():
    with pytest.raises(ValueError, match=r"config\.adapter\.type='nope'.*expected one of \["):
        adapters.get("nope")


def test_lowrank_shapes_and_materialize(table):
    lowrank = adapters.get("lowrank")
    params = lowrank.init(jax.random.PRNGKey(1), table, Cfg(rank=4))
    assert params["A"].shape == (50, 4) and params["B"].shape == (4, 16)
    ids = jnp.array([[1, 2, 3], [4, 5, 0]])
    vectors = lowrank.apply(params, table, ids, jnp.ones_like(ids))
    assert vectors.shape == (2, 3, 16)
    np.testing.assert_allclose(vectors, lowrank.materialize(params, table)[ids], atol=1e-5)
    assert lowrank.table_bytes(params, table.shape) == 4 * (50 * 4 + 4 * 16)
    assert lowrank.output_dim(Cfg(rank=4, target_dim=None), table.shape) == 16


def test_lowrank_svd_is_the_best_rank_r_fit(table):
    lowrank = adapters.get("lowrank")
    params = lowrank.init(jax.random.PRNGKey(1), table, Cfg(rank=6))
    s = np.linalg.svd(np.asarray(table), compute_uv=False)
    err = np.linalg.norm(np.asarray(lowrank.materialize(params) - table))
    np.testing.assert_allclose(err, np.sqrt(np.sum(s[6:] ** 2)), rtol=1e-4)
    rms = lambda x: float(jnp.sqrt(jnp.mean(x**2)))  # noqa: E731
    np.testing.assert_allclose(rms(params["A"]), rms(params["B"]), rtol=1e-4)  # balanced


def test_lowrank_weighted_svd_favours_frequent_rows(table):
    lowrank = adapters.get("lowrank")
    weights = jnp.ones((50,)).at[:5].set(1000.0)
    plain = lowrank.materialize(lowrank.init(jax.random.PRNGKey(1), table, Cfg(rank=4)))
    weighted = lowrank.materialize(lowrank.init(jax.random.PRNGKey(1), table, Cfg(rank=4), weights))
    err = lambda m: float(jnp.linalg.norm(m[:5] - table[:5]))  # noqa: E731
    assert err(weighted) < 0.5 * err(plain)


def test_lowrank_float16_storage_halves_bytes(table):
    lowrank = adapters.get("lowrank")
    params = lowrank.init(jax.random.PRNGKey(1), table, Cfg(rank=4))
    stored = lowrank.to_storage(params, Cfg(rank=4, storage_dtype="float16"))
    assert lowrank.table_bytes(stored, table.shape) * 2 == lowrank.table_bytes(params, table.shape)
    assert lowrank.materialize(stored).dtype == jnp.float32
    np.testing.assert_allclose(lowrank.materialize(stored), lowrank.materialize(params), atol=1e-2)
    with pytest.raises(ValueError, match=r"storage_dtype='int8'.*float16"):
        lowrank.check_config(Cfg(rank=4, storage_dtype="int8"), table.shape)


def test_lowrank_target_dim_projects(table):
    lowrank = adapters.get("lowrank")
    params = lowrank.init(jax.random.PRNGKey(1), table, Cfg(rank=4, target_dim=8))
    assert lowrank.materialize(params).shape == (50, 8)
    assert lowrank.apply(params, table, jnp.array([[1, 2]]), None).shape == (1, 2, 8)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(rank=0), r"config\.adapter\.rank=0 .*1 <= rank < 16"),
        (dict(rank=16), r"config\.adapter\.rank=16 .*1 <= rank < 16"),
        (dict(rank=4, target_dim=0), r"config\.adapter\.target_dim=0.*positive"),
        (dict(rank=4, init="magic"), r"config\.adapter\.init='magic'.*svd"),
    ],
)
def test_lowrank_bad_config(kw, match):
    with pytest.raises(ValueError, match=match):
        adapters.get("lowrank").check_config(Cfg(**kw), (50, 16))


def test_projection_pca_and_contract(table):
    projection = adapters.get("projection")
    params = projection.init(jax.random.PRNGKey(1), table, Cfg(target_dim=4, init="pca"))
    out = projection.materialize(params, table)
    assert out.shape == (50, 4)
    np.testing.assert_allclose(out.mean(0), 0.0, atol=1e-5)  # centred
    centred = np.asarray(table - table.mean(0))
    top = np.linalg.svd(centred, compute_uv=False)[:4]
    np.testing.assert_allclose(np.linalg.norm(out, axis=0), top, rtol=1e-4)
    ids = jnp.array([[3, 7]])
    np.testing.assert_allclose(projection.apply(params, table, ids, None), out[ids], atol=1e-5)
    with pytest.raises(ValueError, match=r"config\.adapter\.target_dim=0"):
        projection.check_config(Cfg(target_dim=0, init="pca"), (50, 16))


def test_losses_are_means_of_per_example_values():
    """Mean of equal-sized shard means == global mean: what makes jit and pmap agree."""
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(8, 5, 4)), rng.normal(size=(8, 5, 4))
    mask = (rng.random((8, 5)) > 0.3).astype(np.int32)
    per_example = objectives.hidden_states_loss([s], [t], mask, [0])
    assert per_example.shape == (8,)
    shard_means = [per_example[i : i + 2].mean() for i in range(0, 8, 2)]
    np.testing.assert_allclose(np.mean(shard_means), per_example.mean(), rtol=1e-6)
    assert objectives.pooled_loss(s[:, 0], t[:, 0]).shape == (8,)
    assert objectives.similarity_loss(s[:, 0], t[:, 0, :3]).shape == (8,)


def test_gradients_reach_only_adapter_params(tiny_models, tmp_path):
    from embres import optim, train
    from embres.models import load_model

    model = load_model(tiny_models("bert"))
    config = tiny_config(model.path)
    adapter = adapters.get("lowrank")
    config.objective.layers = "all"
    loss_fn = compressed_teacher.make_loss(config, model, adapter)
    params = adapter.init(jax.random.PRNGKey(0), model.embedding_table(), config.adapter)
    params = jax.tree.map(lambda x: x * 0.9, params)  # away from the optimum: real gradients
    ids = jnp.array([[2, 10, 11, 3, 0], [2, 12, 3, 0, 0]])
    batch = {"ids": ids, "mask": (ids > 0).astype(jnp.int32)}
    frozen = {"teacher": model.params}
    grads = jax.grad(lambda p: loss_fn(p, batch, frozen, None)[0])(params)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))

    tx, schedule = optim.make_optimizer(config.optimizer, 10)
    step = train.make_train_step(loss_fn, tx, schedule, 0, [0])
    state = {"step": jnp.int32(0), "params": params, "opt_state": tx.init(params)}
    before = jax.tree.map(np.asarray, model.params)
    jitted = jax.jit(step)
    state, _ = jitted(state, batch, frozen)
    state, _ = jitted(state, batch, frozen)
    # The teacher is untouched and the optimizer holds nothing teacher-shaped.
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, model.params))
    adapter_shapes = {x.shape for x in jax.tree.leaves(params)}
    assert {x.shape for x in jax.tree.leaves(state["opt_state"]) if x.ndim} <= adapter_shapes
    assert not np.allclose(state["params"]["A"], params["A"])
