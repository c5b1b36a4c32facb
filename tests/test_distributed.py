"""Mesh from config; jit over 8 devices and pmap give the same run; one compilation."""

import jax
import numpy as np
import pytest
from _train_utils import tiny_config

from embres import distributed, train


def test_eight_fake_devices():
    assert jax.device_count() == 8


def test_make_mesh_sizes_and_errors():
    mesh = distributed.make_mesh({"data": -1})
    assert mesh.shape == {"data": 8}
    mesh = distributed.make_mesh({"model": 2, "data": -1})
    assert mesh.axis_names == ("data", "model") and mesh.shape["data"] == 4
    with pytest.raises(ValueError, match=r"needs 6 devices; 8 are available"):
        distributed.make_mesh({"data": 3, "model": 2})
    with pytest.raises(ValueError, match=r"no 'data' axis"):
        distributed.make_mesh({"model": -1})


def test_data_axis_must_split_over_processes():
    from types import SimpleNamespace

    two_hosts = [SimpleNamespace(process_index=i // 4) for i in range(8)]
    with pytest.raises(ValueError, match=r"data axis \(1\) must be a multiple of the 2 processes"):
        distributed.make_mesh({"data": 1, "model": 8}, two_hosts)


def test_tree_shardings_check_names_the_leaf():
    mesh = distributed.make_mesh({"data": 1, "model": 8})
    tree = {"params": {"A": jax.ShapeDtypeStruct((43, 4), np.float32)}}
    rules = [("A$", ("model", None))]
    with pytest.raises(ValueError, match=r"params/A of shape \(43, 4\) cannot be sharded"):
        distributed.tree_shardings(tree, mesh, rules, check=True)
    with pytest.raises(ValueError, match=r"names mesh axes \['rows'\]"):
        distributed.tree_shardings(tree, mesh, [("A$", ("rows", None))])


def test_tree_shardings_follow_regex_rules():
    mesh = distributed.make_mesh({"data": 4, "model": 2})
    tree = {"params": {"A": np.zeros((8, 2)), "B": np.zeros((2, 4))}}
    shardings = distributed.tree_shardings(tree, mesh, [("params/A$", ("model", None))])
    assert shardings["params"]["A"].spec == jax.sharding.PartitionSpec("model", None)
    assert shardings["params"]["B"].spec == jax.sharding.PartitionSpec()


def test_split_batch_needs_divisible_rows():
    out = distributed.split_batch({"ids": np.zeros((16, 3))}, 8)
    assert out["ids"].shape == (8, 2, 3)
    with pytest.raises(ValueError, match="multiple of 8"):
        distributed.split_batch({"ids": np.zeros((12, 3))}, 8)


def test_jit_and_pmap_give_the_same_run(tiny_models, tmp_path):
    model_dir = tiny_models("bert", hidden_size=32, num_layers=2)
    runs = {}
    for mode in ("jit", "pmap"):
        config = tiny_config(model_dir, parallel=mode, total_steps=6, batch_size=16)
        config.optimizer.learning_rate = 1e-2
        runs[mode] = train.train_and_evaluate(config, tmp_path / mode)
        assert runs[mode]["step_traces"] == 1  # compiled once for 6 steps
    jit_losses = np.array(list(runs["jit"]["losses"].values()))
    pmap_losses = np.array(list(runs["pmap"]["losses"].values()))
    assert len(jit_losses) == 6 and jit_losses[-1] < jit_losses[0]
    np.testing.assert_allclose(pmap_losses, jit_losses, atol=1e-6, rtol=0)
    for a, b in zip(
        jax.tree.leaves(runs["jit"]["params"]), jax.tree.leaves(runs["pmap"]["params"]), strict=True
    ):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6, rtol=0)


@pytest.mark.slow
def test_data_model_and_mixed_meshes_match_one_device(tiny_models, tmp_path, capsys):
    """Check 1 of the scale-out issue: the low-rank config trains the same on 1 device and on
    8 devices split data-only, model-only (table rows sharded) and data x model."""
    model_dir = tiny_models("bert", hidden_size=32, num_layers=2)
    layouts = {
        "one": (1, {"data": 1, "model": 1}),
        "data8": (-1, {"data": 8, "model": 1}),
        "model8": (-1, {"data": 1, "model": 8}),
        "mixed": (-1, {"data": 2, "model": 4}),
    }
    runs = {}
    for name, (num_devices, mesh) in layouts.items():
        config = tiny_config(model_dir, total_steps=5, batch_size=16, num_devices=num_devices)
        config.mesh.data, config.mesh.model = mesh["data"], mesh["model"]
        config.optimizer.learning_rate = 1e-2
        runs[name] = train.train_and_evaluate(config, tmp_path / name)
        assert runs[name]["step_traces"] == 1
    printed = capsys.readouterr().out
    # The teacher's table was read shard by shard for the model-sharded layouts.
    assert "sharded P('model', None) over {'data': 1, 'model': 8}" in printed
    ref = runs["one"]
    ref_losses = np.array(list(ref["losses"].values()))
    assert len(ref_losses) == 5 and ref_losses[-1] < ref_losses[0]
    for name in ("data8", "model8", "mixed"):
        losses = np.array(list(runs[name]["losses"].values()))
        np.testing.assert_allclose(losses, ref_losses, atol=1e-5, rtol=0, err_msg=name)
        for a, b in zip(
            jax.tree.leaves(ref["params"]), jax.tree.leaves(runs[name]["params"]), strict=True
        ):
            assert a.shape == b.shape  # padding rows are gone again
            np.testing.assert_allclose(
                np.asarray(b), np.asarray(a), atol=1e-5, rtol=0, err_msg=name
            )
    # A [128 padded rows, 8] and B [8, 32], float32: A's rows split 8 and 4 ways.
    a_bytes, b_bytes = 128 * 8 * 4, 8 * 32 * 4
    assert runs["one"]["params_bytes_per_device"] == a_bytes + b_bytes
    assert runs["data8"]["params_bytes_per_device"] == a_bytes + b_bytes
    assert runs["model8"]["params_bytes_per_device"] == a_bytes // 8 + b_bytes
    assert runs["mixed"]["params_bytes_per_device"] == a_bytes // 4 + b_bytes


def test_indivisible_sharding_is_reported(tiny_models, tmp_path):
    model_dir = tiny_models("bert", hidden_size=32, num_layers=2)
    config = tiny_config(model_dir, pad_vocab_to_multiple_of=1)
    config.mesh.data, config.mesh.model = 1, 8
    with pytest.raises(ValueError, match=r"43 rows do not divide.*pad_vocab_to_multiple_of"):
        train.train_and_evaluate(config, tmp_path / "w")
    config = tiny_config(model_dir, num_devices=3)
    config.mesh.data = 8
    with pytest.raises(ValueError, match=r"needs 8 devices; 3 are available"):
        train.train_and_evaluate(config, tmp_path / "w2")
