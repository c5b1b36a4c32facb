"""The contextual (hybrid) students: layer transfer, attention layers, token-state caching,
and each variant trained and exported through ``configs/hybrid.py``."""

from __future__ import annotations

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from embres import adapters, linalg, objectives, tokenize
from embres.adapters import attention, blocks, transfer
from embres.data import token_cache
from embres.models import load_model
from embres.testing import WORDS
from tests._train_utils import load_config_module


def _text_file(path, lines=200, seed=0):
    rng = np.random.default_rng(seed)
    text = [" ".join(rng.choice(list(WORDS), rng.integers(3, 12))) for _ in range(lines)]
    path.write_text("\n".join(text) + "\n")
    return path


def _teacher_states(model, ids, mask):
    out = model.apply(model.params, ids, mask, output_hidden_states=True)
    return [np.asarray(h, np.float64) for h in out["hidden_states"]]


@pytest.mark.parametrize("family", ["bert", "xlmr"])
def test_transfer_reproduces_the_teacher_block_at_full_width(tiny_models, family):
    """Width kept (a full, rotated, mean-shifted basis) and nothing pruned: the carried-over
    block is the teacher's last block, to float32 precision."""
    model = load_model(tiny_models(family, num_layers=2))
    rng = np.random.default_rng(1)
    ids = rng.integers(5, model.config.vocab_size, (3, 9)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 6:], mask[2, 2:] = 0, 0
    states = _teacher_states(model, ids, mask)
    real = mask.astype(bool)
    width = model.config.hidden_size
    mean, basis = linalg.pca(np.concatenate([states[-2][real], states[-1][real]]), width)
    mean = np.asarray(mean) + rng.normal(size=width)  # any mean is exact at full width
    cfg = types.SimpleNamespace(target_dim=width, layers=1, heads=0, ffn_dim=0, head_dim=0)
    base = transfer.from_teacher(model, mean, np.asarray(basis), cfg)
    r = (states[-2] - mean) @ basis
    out = np.asarray(blocks.post_ln_block(jnp.asarray(r, jnp.float32), mask, base, "block0."))
    rebuilt = out @ np.asarray(basis).T + mean
    tolerance = 1e-4 if family == "bert" else 2e-4  # XLM-R's LayerNorm eps is 1e-5, ours 1e-12
    np.testing.assert_allclose(rebuilt[real], states[-1][real], atol=tolerance)
    # and it is not trivially so: the block changes its input
    assert np.abs(states[-1] - states[-2])[real].max() > 0.1


@pytest.mark.parametrize("name", ["transfer", "conv_transfer"])
def test_pooled_serving_path_equals_pooling_the_token_vectors(name):
    """apply_pooled (the last LayerNorm's G once per sentence) is the masked mean of apply,
    with padding and an all-pad row, on random non-zero weights of both blocks."""
    from embres import pooling

    adapter = adapters.get(name)
    d, rng = 32, np.random.default_rng(3)
    cfg = types.SimpleNamespace(
        target_dim=d, layers=2, heads=2, head_dim=8, ffn_dim=24, max_positions=8,
        kernel_size=3, hidden_dim=16,
    )  # fmt: skip
    params = adapter.init(jax.random.PRNGKey(0), jnp.asarray(rng.normal(size=(50, d))), cfg)
    params = {
        k: jnp.asarray(rng.normal(0, 0.3, np.shape(v)), jnp.float32) for k, v in params.items()
    }
    for ln in ("block0.ln1.", "block0.ln2.", "block1.ln1.", "block1.ln2."):  # a valid variance
        params[ln + "c"], params[ln + "q0"] = jnp.float32(1.0 / d), jnp.float32(2.0)
    ids = jnp.asarray(rng.integers(0, 50, (4, 11)), jnp.int32)
    mask = np.ones((4, 11), np.int32)
    mask[1, 5:], mask[2, 1:], mask[3, :] = 0, 0, 0
    mask = jnp.asarray(mask)
    pooled = np.asarray(adapter.apply_pooled(params, None, ids, mask))
    expected = np.asarray(pooling.pool(adapter.apply(params, None, ids, mask), mask, "mean"))
    assert np.abs(expected[:3]).max() > 0.1  # not trivially equal
    np.testing.assert_allclose(pooled, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(pooled[3], 0.0)


def test_transfer_prunes_heads_and_neurons_and_refuses_more_than_the_teacher(tiny_models):
    model = load_model(tiny_models("bert", num_layers=2))
    d = 16
    mean = np.zeros(model.config.hidden_size, np.float32)
    basis = np.eye(model.config.hidden_size, d, dtype=np.float32)
    cfg = types.SimpleNamespace(target_dim=d, layers=2, heads=2, ffn_dim=40, head_dim=0)
    base = transfer.from_teacher(model, mean, basis, cfg)
    assert base["block1.wq"].shape == (d, 2, 8) and base["block0.w1"].shape == (d, 40)
    assert cfg.head_dim == 8
    for key, value, match in (
        ("heads", 5, "config.adapter.heads=5; the teacher has 4"),
        ("layers", 3, "config.adapter.layers=3; the teacher has 2 blocks"),
        ("head_dim", 4, "config.adapter.head_dim=4; a transferred head is 8 wide"),
    ):
        bad = types.SimpleNamespace(**{**vars(cfg), "head_dim": 0, key: value})
        with pytest.raises(ValueError, match=match):
            transfer.resolve_sizes(bad, model.config)


def test_attention_adapter_starts_as_the_static_rows_and_then_sees_order():
    table = jax.random.normal(jax.random.PRNGKey(0), (30, 8))
    cfg = types.SimpleNamespace(target_dim=8, layers=1, heads=2, ffn_dim=16, max_positions=8)
    attention.check_config(cfg, table.shape)
    params = attention.init(jax.random.PRNGKey(1), table, cfg)
    ids = jnp.array([[3, 4, 5, 0]])
    mask = jnp.array([[1, 1, 1, 0]])
    start = attention.apply(params, None, ids, mask)
    np.testing.assert_allclose(start[0, :3], params["table"][ids[0, :3]], atol=1e-6)
    params = {
        k: v + 0.1 * jax.random.normal(jax.random.PRNGKey(2), v.shape) for k, v in params.items()
    }
    forward = attention.apply(params, None, ids, mask)
    swapped = attention.apply(params, None, jnp.array([[5, 4, 3, 0]]), mask)
    assert not np.allclose(forward[0, 1], swapped[0, 1], atol=1e-4)  # order counts
    padded = attention.apply(params, None, ids.at[0, 3].set(9), mask)
    np.testing.assert_allclose(forward[0, :3], padded[0, :3], atol=1e-6)  # pads do not leak
    with pytest.raises(ValueError, match="not divisible by config.adapter.heads=3"):
        attention.check_config(types.SimpleNamespace(**{**vars(cfg), "heads": 3}), table.shape)


def test_cached_token_states_equal_recomputed_ones_within_float16(tiny_models, tmp_path):
    model = load_model(tiny_models("bert", num_layers=2))
    texts = [" ".join(list(WORDS)[i : i + 3 + i % 7]) for i in range(20)]
    rows = tokenize.encode(model.tokenizer, texts, 32)
    d = 16
    rng = np.random.default_rng(0)
    mean = rng.normal(size=model.config.hidden_size).astype(np.float32)
    basis = np.linalg.qr(rng.normal(size=(model.config.hidden_size, d)))[0].astype(np.float32)
    cache = token_cache.build_token_cache(
        model,
        rows,
        tmp_path / "cache",
        max_length=32,
        key={"t": 1},
        heldout_texts=["x"],
        mean=mean,
        basis=basis,
        layers=(1, -1),
        chunk_rows=7,
        progress=False,
    )
    source = token_cache.TokenCacheSource(cache, batch_size=4, seed=0)
    assert source.layers == (1, 2)
    for i, row in enumerate(rows):
        row = np.asarray(row)[None]
        states = _teacher_states(model, row, np.ones_like(row))
        a, b = source.offsets[i], source.offsets[i + 1]
        np.testing.assert_array_equal(source.ids[a:b], row[0, 1:-1])  # [CLS]/[SEP] dropped
        for k in (1, 2):
            exact = (states[k][0, 1:-1] - mean) @ basis
            cached = np.asarray(source.states[k][a:b], np.float64)
            # float16 keeps 11 significant bits: a relative error of at most 2^-11 per entry
            np.testing.assert_array_less(np.abs(cached - exact), 2**-11 * np.abs(exact) + 1e-6)
    # rebuilt only when the key changes
    assert (
        token_cache.build_token_cache(
            model,
            iter(()),
            cache,
            max_length=32,
            key={"t": 1},
            heldout_texts=[],
            mean=mean,
            basis=basis,
            layers=(1, 2),
            progress=False,
        )
        == cache
    )


def test_token_cache_source_groups_lengths_and_resumes_exactly(tiny_models, tmp_path):
    model = load_model(tiny_models("bert", num_layers=2))
    rows = tokenize.encode(
        model.tokenizer, _text_file(tmp_path / "t.txt").read_text().split("\n")[:-1], 32
    )
    d = 8
    cache = token_cache.build_token_cache(
        model,
        rows,
        tmp_path / "cache",
        max_length=32,
        key={},
        heldout_texts=[],
        mean=np.zeros(32, np.float32),
        basis=np.eye(32, d, dtype=np.float32),
        layers=(-1,),
        progress=False,
    )
    source = token_cache.TokenCacheSource(cache, batch_size=8, seed=3)
    shapes = set()
    for _ in range(source.steps_per_epoch + 3):  # into the second epoch
        batch = source.next_batch()
        shapes.add(batch["ids"].shape[1])
        assert batch["states_2"].shape == batch["ids"].shape + (d,)
        assert (batch["mask"].sum(1) > 0).all()
    assert len(shapes) <= source.compiled_shapes
    state = source.get_state()
    expected = source.next_batch()
    other = token_cache.TokenCacheSource(cache, batch_size=8, seed=3)
    other.set_state(state)
    got = other.next_batch()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])


@pytest.mark.parametrize("variant", ["transfer", "transfer1", "conv_transfer", "attention", "conv"])
def test_each_variant_trains_two_steps_and_its_export_reloads_identically(
    tiny_models, tmp_path, variant
):
    import ml_collections

    from embres import configlib
    from embres.export import load_student
    from embres.models import load_model as load
    from embres.train import train_and_evaluate

    model_dir = tiny_models("bert", num_layers=2)
    config = load_config_module("hybrid").get_config(f"runlocal,variant={variant}")
    config.model = str(model_dir)
    config.evals = ml_collections.ConfigDict()
    config.total_steps = 2
    config.data.heldout = 8
    config.eval.heldout_texts = 8
    overrides = {"data.source": f"text:{_text_file(tmp_path / 'corpus.txt')}"}
    if variant != "conv":
        overrides["adapter.max_positions"] = 16
    configlib.apply_overrides(config, overrides)
    workdir = tmp_path / "run"
    result = train_and_evaluate(config, workdir)
    assert result["final_step"] == 2
    assert all(np.isfinite(v) for v in result["losses"].values())
    if config.objective.kind == "token_distill":  # runlocal caches its first 64 sentences
        meta = json.loads((workdir / "token_cache" / "meta.json").read_text())
        assert meta["count"] == config.data.cache_rows == 64, meta

    # the in-memory student and the reloaded export give the same vectors
    teacher = load(str(model_dir))
    objective = objectives.get(config.objective.kind)
    plan = objective.prepare(config, teacher, adapters.get(config.adapter.type), workdir)
    encode, _ = plan.student(result["params"])
    texts = ["the man plays the guitar", "a dog runs", "the cat is playing piano", "dog"]
    reloaded = load_student(workdir / "export")
    assert reloaded.kind == config.adapter.type
    unit = reloaded.encode(texts)
    np.testing.assert_allclose(unit, encode(texts), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    reloaded.normalize = False  # read at encode time, as the static embedder reads it
    raw = reloaded.encode(texts)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), unit, atol=1e-5)
    # sentence-transformers runs the same context path (the module modules.json names)
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(workdir / "export"), device="cpu", trust_remote_code=True)
    np.testing.assert_allclose(st.encode(texts), unit, atol=1e-6)
    assert st.get_embedding_dimension() == unit.shape[1]
    with pytest.raises(ValueError, match="trust_remote_code=True"):  # its consent, asked
        SentenceTransformer(str(workdir / "export"), device="cpu")


def test_sentences_source_holds_train_sentences_and_no_evaluation_sentence(tmp_path, monkeypatch):
    from embres import data
    from embres.data import sentences

    root = tmp_path / "data"
    (root / "stsb").mkdir(parents=True)
    (root / "sick").mkdir()
    row = "main-captions\tMSRvid\t2012test\t{}\t2.5\t{}\t{}\n"
    (root / "stsb" / "sts-train.csv").write_text(
        row.format(1, "A man plays.", "A dog runs.") + row.format(2, "A man plays.", "Shared one.")
    )
    (root / "stsb" / "sts-dev.csv").write_text(row.format(3, "Shared one.", "Dev only."))
    head = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\n"
    (root / "sick" / "SICK_train.txt").write_text(head + "1\tKids sing.\tA dog runs.\t3\n")
    (root / "sick" / "SICK_trial.txt").write_text(head + "2\tKids sing.\tTrial only.\t3\n")
    monkeypatch.setenv("EMBRES_DATA_DIR", str(root))
    monkeypatch.setenv("EMBRES_CACHE", str(tmp_path / "cache"))
    spec = data.check_spec("sentences:stsb,sick")
    path = data.text_file(spec)
    # each once, in file order; "Shared one." (STS-B dev) and "Kids sing." (SICK trial) left out
    assert path.read_text().splitlines() == ["A man plays.", "A dog runs."]
    assert sentences.sentences(("sick",)) == ["A dog runs."]
    with pytest.raises(ValueError, match=r"unknown: \['sts'\]"):
        data.parse_spec("sentences:sts")
    (root / "sick" / "SICK_train.txt").unlink()
    with pytest.raises(FileNotFoundError, match="SICK_train.txt"):
        data.check_spec("sentences:sick")


def test_token_distill_resume_facts_are_the_basis_inputs_not_a_float_hash(
    tiny_models, tmp_path, monkeypatch
):
    """A basis that differs by float noise (another backend's PCA) gives the same checkpoint
    meta, so a resume is not refused; the token cache, keyed by the basis, is rebuilt."""
    from embres import configlib
    from embres.objectives import token_distill

    model_dir = tiny_models("bert", num_layers=2)
    config = load_config_module("hybrid").get_config("runlocal")
    config.model = str(model_dir)
    config.data.heldout = 8
    configlib.apply_overrides(config, {"data.source": f"text:{_text_file(tmp_path / 'c.txt')}"})
    teacher, adapter = load_model(str(model_dir)), adapters.get(config.adapter.type)
    plan = token_distill.prepare(config, teacher, adapter, tmp_path / "a")
    fit = token_distill.teacher_basis

    def noisy_basis(*args):
        offset, basis = fit(*args)
        return offset, basis + np.float32(1e-7) * np.sign(basis)

    monkeypatch.setattr(token_distill, "teacher_basis", noisy_basis)
    other = token_distill.prepare(config, teacher, adapter, tmp_path / "b")
    assert other.meta == plan.meta
    assert plan.meta["basis"]["teacher"] == str(model_dir)
    assert plan.meta["basis"]["basis_sentences"] == config.objective.basis_sentences
    assert "basis_sha256" not in json.dumps(
        plan.meta
    )  # inputs (a file digest is exact), no float hash
    caches = [json.loads((tmp_path / w / "token_cache" / "meta.json").read_text()) for w in "ab"]
    assert caches[0]["key"] != caches[1]["key"]  # the cache holds states in its own basis
