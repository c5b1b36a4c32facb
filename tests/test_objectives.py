"""The objective contract: every objective × adapter pair, a toy objective added from a test,
train/serve agreement of static students, pmap refusal of in-batch losses, resume checks."""

from __future__ import annotations

import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _train_utils import tiny_config

from embres import adapters, objectives, tokenize, train
from embres.objectives import Plan, common, static_distill

TEXTS = [
    "the man plays the guitar",
    "a cat sat on the piano",
    "dog bites man",
    "man bites dog",
    "the girl is reading a book in the park",
    "",
]


@pytest.fixture(scope="module")
def tiny_bert(tiny_models):
    return tiny_models("bert", hidden_size=32, num_layers=2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    words = "the man plays guitar a cat sat on piano dog bites girl reads book park".split()
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(words, size=rng.integers(3, 9))) for _ in range(120)]
    path.write_text("\n".join(lines) + "\n")
    return path


def static_config(model_dir, corpus, adapter="static", **overrides):
    config = tiny_config(model_dir, "projection", **overrides)
    config.adapter.type = adapter
    config.data.source = f"text:{corpus}"
    config.data.heldout = 8
    return config


# The language objectives (cross_lingual, sts_finetune) need translation or scored pairs and a
# WordPiece teacher: tests/test_cross_lingual.py runs their pairs.
@pytest.mark.parametrize("kind", ("compressed_teacher", "static_distill"))
@pytest.mark.parametrize("adapter", sorted(adapters.ADAPTERS))
def test_every_objective_adapter_pair_trains_or_is_refused_early(
    tiny_bert, corpus, tmp_path, monkeypatch, kind, adapter
):
    """Each pair trains 2 steps, or fails before distillation and compilation naming both."""
    if kind == "compressed_teacher":
        config = tiny_config(tiny_bert, "lowrank", total_steps=2)
        config.adapter.type = adapter
    else:
        config = static_config(tiny_bert, corpus, adapter, total_steps=2)
    module = objectives.get(kind)
    if adapter not in module.ADAPTERS:

        def too_late(*args, **kwargs):
            raise AssertionError("reached distillation or compilation before refusing")

        monkeypatch.setattr(module, "prepare", too_late)
        monkeypatch.setattr(train, "make_train_step", too_late)
        with pytest.raises(
            ValueError, match=rf"objective '{kind}' cannot train adapter '{adapter}'"
        ):
            train.train_and_evaluate(config, tmp_path / "work")
        return
    out = train.train_and_evaluate(config, tmp_path / "work")
    assert sorted(out["losses"]) == [1, 2] and np.isfinite(list(out["losses"].values())).all()


def test_static_student_trains_on_what_it_serves(tiny_bert, corpus, tmp_path):
    """The vectors the loss sees for texts equal the served vectors of every load of the
    export (embres, Model2Vec, sentence-transformers): no [CLS]/[SEP] skew."""
    from model2vec import StaticModel
    from sentence_transformers import SentenceTransformer

    from embres.export import load_student
    from embres.models import load_model

    for adapter in ("static", "hybrid"):
        work = tmp_path / adapter
        config = static_config(tiny_bert, corpus, adapter, total_steps=2, export=True)
        out = train.train_and_evaluate(config, work)
        model = load_model(tiny_bert)
        plan = static_distill.prepare(config, model, adapters.get(adapter), work)
        texts = [t for t in TEXTS if t]
        rows = tokenize.encode(model.tokenizer, texts, config.data.max_length)
        ids = np.zeros((len(rows), config.data.max_length), np.int32)
        mask = np.zeros_like(ids)
        for r, row in enumerate(rows):
            ids[r, : len(row)], mask[r, : len(row)] = row, 1
        seen = static_distill.student_vectors(
            adapters.get(adapter), out["params"], {"ids": ids, "mask": mask}, plan.frozen
        )
        seen = np.asarray(seen / jnp.linalg.norm(seen, axis=1, keepdims=True))
        served = {"embres": load_student(work / "export").encode(texts)}
        if adapter == "static":  # the other libraries run the static rows only
            served["model2vec"] = StaticModel.from_pretrained(str(work / "export")).encode(texts)
            st = SentenceTransformer(str(work / "export"), device="cpu")
            served["sentence-transformers"] = st.encode(texts)
        for name, vectors in served.items():
            # the export stores float16 rows (the default): served = trained within its rounding
            np.testing.assert_allclose(vectors, seen, atol=2e-3, err_msg=f"{adapter}: {name}")


def test_pmap_refuses_in_batch_losses_and_agrees_with_jit_otherwise(tiny_bert, corpus, tmp_path):
    config = static_config(tiny_bert, corpus, parallel="pmap", total_steps=2)
    config.objective.loss = "contrastive"
    with pytest.raises(ValueError, match=r"config.parallel='pmap' cannot train"):
        train.train_and_evaluate(config, tmp_path / "contrastive")
    runs = {}
    for mode in ("jit", "pmap"):
        config = static_config(tiny_bert, corpus, parallel=mode, total_steps=4)
        runs[mode] = train.train_and_evaluate(config, tmp_path / mode)
    np.testing.assert_allclose(
        list(runs["pmap"]["losses"].values()), list(runs["jit"]["losses"].values()), atol=1e-6
    )
    for a, b in zip(*(jax.tree.leaves(runs[m]["params"]) for m in ("jit", "pmap")), strict=True):
        np.testing.assert_allclose(b, a, atol=1e-6)


def test_resume_refuses_other_targets_and_names_changed_keys(tiny_bert, corpus, tmp_path, capsys):
    work = tmp_path / "work"
    train.train_and_evaluate(static_config(tiny_bert, corpus, total_steps=2), work)
    changed = static_config(tiny_bert, corpus, total_steps=4)
    changed.optimizer.learning_rate = 5e-3
    train.train_and_evaluate(changed, work)
    out = capsys.readouterr().out
    assert "resuming with a changed config" in out and "optimizer.learning_rate" in out
    assert "total_steps: 2 -> 4" in out
    other = static_config(tiny_bert, corpus, total_steps=6)
    other.objective.teacher_layer = 1  # other rows, so another PCA basis for the targets
    with pytest.raises(ValueError, match=r"trained against other targets \(basis.layer: -1 -> 1\)"):
        train.train_and_evaluate(other, work)


# --- a toy objective: match the teacher's layer-2 mean vector with a low-rank table


def _toy_module():
    module = types.ModuleType("toy_layer_mean")
    module.ADAPTERS = ("lowrank",)

    def check(config, model, adapter):
        if config.adapter.type not in module.ADAPTERS:
            common.refuse_pair("toy", config.adapter.type, "toy", module.ADAPTERS)

    def prepare(config, model, adapter, workdir, *, process_index=0, process_count=1):
        from embres import data, pooling

        source = data.make_source(
            config.data,
            model.tokenizer,
            vocab_size=model.config.vocab_size,
            pad_id=0,
            batch_size=config.batch_size,
            seed=config.seed,
        )

        def loss(params, batch, frozen, rng):
            ids, mask = batch["ids"], batch["mask"]
            target = model.apply(frozen["teacher"], ids, mask, output_hidden_states=True)
            t = pooling.pool(jax.lax.stop_gradient(target["hidden_states"][2]), mask, "mean")
            s = pooling.pool(adapter.apply(params, None, ids, mask), mask, "mean")
            value = jnp.mean(jnp.sum((s - t) ** 2, -1))
            return value, {}

        def student(params):
            return (lambda texts: np.zeros((len(texts), 1))), {}

        return Plan(
            init_table=common.get_table(model.params, model.table_path),
            init_weights=None,
            frozen={"teacher": model.params},
            source=source,
            loss=loss,
            in_batch=False,
            meta={"objective": "toy"},
            student=student,
            teacher=lambda: student(None),
            export=lambda params, directory: directory,
        )

    module.check, module.prepare = check, prepare
    return module


def test_a_toy_objective_needs_only_a_module_and_a_config(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "toy_layer_mean", _toy_module())
    config = tiny_config(tiny_bert, "lowrank", total_steps=3)
    config.objective.kind = "toy_layer_mean"  # an importable module path
    with pytest.raises(ValueError, match="not a known objective"):
        objectives.get("no_such_objective")
    out = train.train_and_evaluate(config, tmp_path / "work")
    assert sorted(out["losses"]) == [1, 2, 3]
    assert out["losses"][3] < out["losses"][1]


@pytest.mark.parametrize("kind", ["cosine", "mse"])
def test_token_loss_gradient_is_finite_with_zero_padded_tokens(kind):
    """A padded token's student vector is zero (the rows are masked before the blocks):
    its cosine must not make the whole gradient NaN (it did, for token_loss=cosine)."""
    from embres.objectives import losses

    student = jnp.ones((2, 3, 4)).at[:, 2].set(0.0).at[1, 1].set(0.0)
    teacher = jnp.zeros((2, 3, 4)).at[:, :2].set(jnp.arange(1.0, 5.0))
    mask = jnp.array([[1, 1, 0], [1, 0, 0]])
    value, grad = jax.value_and_grad(
        lambda s: losses.token_state_loss(s, teacher, mask, kind).sum()
    )(student)
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))
    assert np.abs(np.asarray(grad)[:, :1]).max() > 0  # real tokens still get a gradient
    np.testing.assert_array_equal(np.asarray(grad)[:, 2], 0.0)  # pads get none


def test_static_distill_caches_only_cache_rows_of_a_text_corpus(tiny_bert, corpus, tmp_path):
    """config.data.cache_rows keeps the first N training rows of every source (a text corpus
    was silently cached whole); the vocab source's sample size is config.data.vocab_samples."""
    import json

    config = static_config(tiny_bert, corpus, total_steps=2)
    config.data.cache_rows = 24
    train.train_and_evaluate(config, tmp_path / "work")
    meta = json.loads((tmp_path / "work" / "cache" / "meta.json").read_text())
    assert meta["count"] == 24 and meta["key"]["corpus"]["rows"] == 24
