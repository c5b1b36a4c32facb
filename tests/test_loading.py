"""Checkpoint loading: sources (single, sharded, pickle opt-in, bundled) and every error path."""

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from embres.models import UnknownModelError, load_model, resolve
from embres.models.hf import CheckpointMismatchError, PickleCheckpointError


@pytest.fixture(scope="module")
def tiny_bert(tiny_models):
    return tiny_models("bert")


def _rewrite(path, edit):
    tensors = load_file(str(path / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(path / "model.safetensors"))


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_sharded_checkpoint_loads_the_same_params(tiny_models, tiny_bert):
    sharded = tiny_models("bert", max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").exists()
    a, b = load_model(tiny_bert).params, load_model(sharded).params
    np.testing.assert_array_equal(
        a["layer_1"]["intermediate"]["kernel"], b["layer_1"]["intermediate"]["kernel"]
    )


def test_one_error_lists_missing_unexpected_and_misshapen_keys(tmp_path, tiny_bert):
    path = _copy(tiny_bert, tmp_path / "broken")

    def edit(t):
        del t["encoder.layer.0.attention.self.query.weight"]
        t["encoder.layer.0.attention.self.rogue.weight"] = np.zeros((2, 2), np.float32)
        t["encoder.layer.1.output.dense.bias"] = np.zeros((7,), np.float32)

    _rewrite(path, edit)
    with pytest.raises(CheckpointMismatchError) as info:
        load_model(path)
    err = info.value
    assert err.missing == ["layer_0/attention/query/kernel"]
    assert err.unexpected == ["encoder.layer.0.attention.self.rogue.weight"]
    assert len(err.misshapen) == 1 and "encoder.layer.1.output.dense.bias" in err.misshapen[0]
    assert "(7,)" in str(err) and "(32,)" in str(err)


def test_ignored_heads_and_buffers_are_not_errors(tmp_path, tiny_bert):
    path = _copy(tiny_bert, tmp_path / "heads")
    _rewrite(path, lambda t: t.update({"cls.predictions.bias": np.zeros(3, np.float32)}))
    load_model(path)


def test_pickle_needs_explicit_opt_in(tiny_models, tiny_bert):
    path = tiny_models("bert", safe_serialization=False)
    assert not (path / "model.safetensors").exists()
    with pytest.raises(PickleCheckpointError, match="allow_pickle=True"):
        load_model(path)
    params = load_model(path, allow_pickle=True).params
    reference = load_model(tiny_bert).params  # same seed, same weights
    np.testing.assert_allclose(
        params["word_embeddings"]["embedding"], reference["word_embeddings"]["embedding"]
    )


def test_unknown_name_lists_known_names_and_forms():
    with pytest.raises(UnknownModelError) as info:
        load_model("no-such-model-anywhere")
    assert "all-MiniLM-L6-v2" in str(info.value) and "hub id" in str(info.value)


def test_uncached_hub_id_is_not_downloaded_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UnknownModelError, match="HF_HUB_OFFLINE"):
        resolve("nobody/not-cached-model")


def test_hub_id_found_in_local_cache(tmp_path, monkeypatch, tiny_bert):
    import shutil

    snapshot = tmp_path / "hub" / "models--org--tiny" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_bert, snapshot)
    (tmp_path / "hub" / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--tiny" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve("org/tiny") == snapshot


def test_bundled_model_resolves_with_sentence_defaults():
    model = load_model("all-MiniLM-L6-v2")
    assert (model.pooling, model.normalize, model.max_length) == ("mean", True, 256)
    assert model.embedding_table().shape == (30522, 384)


def test_export_round_trip_reloads_identical_params(tmp_path, tiny_bert):
    model = load_model(tiny_bert)
    out = model.save(tmp_path / "export")
    again = load_model(out)
    np.testing.assert_array_equal(
        again.params["layer_0"]["output"]["kernel"], model.params["layer_0"]["output"]["kernel"]
    )


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_sharded_table_reads_only_each_devices_rows(tmp_path, tiny_models, monkeypatch, family):
    """A row-sharded table is built block by block from the mmapped shards: no read ever
    returns the whole table, padding rows are zeros, and the model computes the same."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    from embres import distributed
    from embres.models import hf

    path = tiny_models(family, max_shard_size="20KB")
    assert (path / "model.safetensors.index.json").exists()
    reference = load_model(path)
    whole, blocks = [], []
    read, read_block = hf._TensorSource.read, hf._TensorSource.read_block
    monkeypatch.setattr(
        hf._TensorSource, "read", lambda self, key: whole.append(key) or read(self, key)
    )

    def spy_block(self, key, index, shape):
        out = read_block(self, key, index, shape)
        blocks.append((key, out.shape))
        return out

    monkeypatch.setattr(hf._TensorSource, "read_block", spy_block)
    mesh = distributed.make_mesh({"data": 2, "model": 4})
    sharding = NamedSharding(mesh, PartitionSpec("model", None))
    model = load_model(path, table_sharding=sharding, table_row_multiple=16)

    vocab, width = reference.embedding_table().shape
    rows = -(-vocab // 16) * 16
    table = model.params[model.table_path[0]][model.table_path[1]]
    assert table.shape == (rows, width) and table.sharding == sharding
    assert model.key_plan["/".join(model.table_path)][0] not in whole  # never read whole
    # One read per distinct block (4; the 2 data replicas share them), each a quarter of the
    # padded rows: a process reads only the rows its devices hold, once.
    assert [shape for _, shape in blocks] == [(rows // 4, width)] * 4
    np.testing.assert_array_equal(np.asarray(table)[vocab:], 0.0)
    np.testing.assert_array_equal(
        np.asarray(model.embedding_table()), np.asarray(reference.embedding_table())
    )
    saved = load_model(model.save(tmp_path / "saved"))  # written without the padding rows
    np.testing.assert_array_equal(
        np.asarray(saved.embedding_table()), np.asarray(reference.embedding_table())
    )
    ids = np.array([[3, 5, vocab - 1, 2, 0, 0]]) % vocab
    mask = np.array([[1, 1, 1, 1, 0, 0]])
    for a, b in zip(
        jax.tree.leaves(reference.apply(reference.params, ids, mask, output_hidden_states=True)),
        jax.tree.leaves(model.apply(model.params, ids, mask, output_hidden_states=True)),
        strict=True,
    ):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6, rtol=0)


def test_sharded_table_must_divide(tiny_bert):
    from jax.sharding import NamedSharding, PartitionSpec

    from embres import distributed

    sharding = NamedSharding(distributed.make_mesh({"data": 1, "model": 8}), PartitionSpec("model"))
    vocab = load_model(tiny_bert).config.vocab_size
    if vocab % 8 == 0:
        pytest.skip("tiny vocabulary happens to divide by 8")
    with pytest.raises(ValueError, match=rf"{vocab} rows do not divide evenly; pad them"):
        load_model(tiny_bert, table_sharding=sharding)


def test_a_folder_without_tokenizer_files_is_refused(tmp_path, tiny_bert):
    import shutil

    folder = tmp_path / "weights_only"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):  # a common way to move a model
        shutil.copy(tiny_bert / name, folder / name)
    with pytest.raises(FileNotFoundError, match="no tokenizer files; expected tokenizer.json"):
        load_model(folder)
    assert load_model(folder, with_tokenizer=False).tokenizer is None  # weights alone: fine


def test_a_tokenizer_larger_than_the_table_is_refused(tmp_path, tiny_models):
    import shutil

    small = tiny_models("bert", hidden_size=32, num_layers=2)
    big = tiny_models("xlmr", hidden_size=32, num_layers=2)
    folder = tmp_path / "mismatch"
    shutil.copytree(small, folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        (folder / name).unlink(missing_ok=True)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(big))
    tokenizer.add_tokens([f"extra{i}" for i in range(400)])  # more ids than the bert's rows
    tokenizer.save_pretrained(folder)
    with pytest.raises(ValueError, match="belong to another model"):
        load_model(folder)
