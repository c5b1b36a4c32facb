"""The second stage (``sts_finetune``): a contextual student's STS train pairs (``scored:``),
the tokens it is trained on (as served), ``configs/hybrid_finetune.py:init_from=DIR`` end to
end, and a transfer's teacher rows kept exact."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

from embres import adapters, objectives, tokenize
from embres.objectives import losses, sts_finetune
from embres.testing import WORDS
from tests._train_utils import load_config_module

STSB_ROW = "main-captions\tMSRvid\t2012test\t{}\t{}\t{}\t{}\n"
SICK_HEAD = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\n"


def _data_dir(root, pairs=40, seed=0):
    """STS-B and SICK train/dev files of random WORDS sentences; returns the dev sentence."""
    rng = np.random.default_rng(seed)
    words = sorted(WORDS)

    def sentence():
        return " ".join(rng.choice(words, rng.integers(3, 9)))

    (root / "stsb").mkdir(parents=True)
    (root / "sick").mkdir()
    stsb = [STSB_ROW.format(i, rng.uniform(0, 5), sentence(), sentence()) for i in range(pairs)]
    (root / "stsb" / "sts-train.csv").write_text("".join(stsb))
    sick = [f"{i}\t{sentence()}\t{sentence()}\t{rng.uniform(1, 5)}\n" for i in range(pairs)]
    (root / "sick" / "SICK_train.txt").write_text(SICK_HEAD + "".join(sick))


def test_scored_source_rescales_each_dataset_and_drops_evaluation_pairs(tmp_path, monkeypatch):
    from embres import data
    from embres.data import sentences

    root = tmp_path / "data"
    (root / "stsb").mkdir(parents=True)
    (root / "sick").mkdir()
    (root / "stsb" / "sts-train.csv").write_text(
        STSB_ROW.format(1, 2.5, "A man plays.", "A dog runs.")
        + STSB_ROW.format(2, 5.0, "A man plays.", "Shared one.")
    )
    (root / "stsb" / "sts-dev.csv").write_text(STSB_ROW.format(3, 1, "Shared one.", "Dev only."))
    (root / "sick" / "SICK_train.txt").write_text(
        SICK_HEAD + "1\tKids sing.\tA dog runs.\t3\n2\tA cat sits.\tA cat naps.\t5\n"
    )
    (root / "sick" / "SICK_trial.txt").write_text(SICK_HEAD + "3\tKids sing.\tTrial only.\t3\n")
    monkeypatch.setenv("EMBRES_DATA_DIR", str(root))
    monkeypatch.setenv("EMBRES_CACHE", str(tmp_path / "cache"))

    # STS-B 0-5 and SICK 1-5 both to [0, 1]; the pairs holding "Shared one." (STS-B dev) and
    # "Kids sing." (SICK trial) are dropped
    got = sentences.scored_pairs(("stsb", "sick"))
    assert sorted(got) == [
        ("A cat sits.", "A cat naps.", 1.0),
        ("A man plays.", "A dog runs.", 0.5),
    ]
    path = data.pairs_file(data.check_spec("scored:stsb,sick"))
    lines = path.read_text().splitlines()
    assert lines[0] == "sentence1\tsentence2\tscore" and sorted(lines[1:]) == [
        "A cat sits.\tA cat naps.\t1",
        "A man plays.\tA dog runs.\t0.5",
    ]
    assert data.pairs_file(data.check_spec("scored:stsb,sick")) == path  # written once

    with pytest.raises(ValueError, match=r"expected 'scored:NAME\[,NAME\.\.\.\]'.*unknown"):
        data.parse_spec("scored:sts")
    with pytest.raises(ValueError, match="is a 'sentences' source, not pairs"):
        data.pairs_file(data.parse_spec("sentences:stsb"))
    (root / "sick" / "SICK_train.txt").write_text(SICK_HEAD + "1\tA b.\tC d.\thigh\n")
    with pytest.raises(ValueError, match=r"SICK_train.txt:2: score 'high' is not a number"):
        sentences.scored_pairs(("sick",))


def test_pairs_are_trained_on_the_tokens_and_positions_a_served_student_sees(tiny_models):
    from embres.data.batching import pad_batch
    from embres.models import load_model
    from embres.objectives import common
    from embres.static_embedder import StaticEmbedder

    model = load_model(str(tiny_models("bert")))
    tok = model.tokenizer
    texts = ["the man plays the guitar", "dog", "a zzqqxv cat runs", ""]
    assert tok.unk_token_id in tok(texts[2], add_special_tokens=False)["input_ids"]
    vocab = model.config.vocab_size
    # as PairsSource batches them: with the template, padded to max_length
    ids, mask = pad_batch(tokenize.encode(tok, texts, 12), 12, tok.pad_token_id or 0, 4)
    assert ids[0, 0] == tok.cls_token_id
    got_ids, got_mask = sts_finetune.served_tokens(
        jnp.asarray(ids),
        jnp.asarray(mask),
        jnp.asarray(sts_finetune.template_mask(tok, vocab)),
        jnp.asarray(common.content_mask(tok, vocab)),
    )
    served = StaticEmbedder(np.zeros((vocab, 1), np.float32), tok, False, 512)
    for i, row in enumerate(served.token_ids(texts[:3])):
        n = len(row)
        np.testing.assert_array_equal(np.asarray(got_ids[i, :n]), row)
        np.testing.assert_array_equal(np.asarray(got_ids[i, n:]), 0)
        expected_mask = [int(r != tok.unk_token_id) for r in row] + [0] * (12 - n)
        np.testing.assert_array_equal(np.asarray(got_mask[i]), expected_mask)
    assert int(np.asarray(got_mask[3]).sum()) == 0  # an empty text: nothing pooled


@pytest.fixture
def first_stage(tiny_models, tmp_path, monkeypatch):
    """A tiny two-block transfer student trained 2 steps, and the data folder it sees."""
    from embres import configlib
    from embres.train import train_and_evaluate

    model_dir = tiny_models("bert", num_layers=2)
    _data_dir(tmp_path / "data")
    monkeypatch.setenv("EMBRES_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EMBRES_CACHE", str(tmp_path / "cache"))
    config = load_config_module("hybrid").get_config("runlocal")
    config.model = str(model_dir)
    config.total_steps = 2
    config.data.heldout = 8
    config.eval.heldout_texts = 8
    configlib.apply_overrides(config, {"adapter.max_positions": 16})
    train_and_evaluate(config, tmp_path / "stage1")
    return model_dir, tmp_path / "stage1"


def test_finetune_stage_starts_at_the_served_student_and_its_export_reloads(first_stage, tmp_path):
    from embres.export import load_student
    from embres.models import load_model
    from embres.train import train_and_evaluate

    model_dir, stage1 = first_stage
    config = load_config_module("hybrid_finetune").get_config(f"runlocal,init_from={stage1}")
    assert config.adapter.type == "transfer" and config.objective.kind == "sts_finetune"
    assert config.data.source == "scored:stsb,sick"
    config.model = str(model_dir)
    teacher = load_model(str(model_dir))
    adapter = adapters.get(config.adapter.type)
    objective = objectives.get(config.objective.kind)
    objective.check(config, teacher, adapter)
    plan = objective.prepare(config, teacher, adapter, tmp_path / "plan")

    # the loss at the start is CoSENT over the first-stage export's own served vectors
    first = load_student(stage1)
    lines = open(plan.source.path).read().splitlines()[1 : 1 + config.batch_size]
    a, b, score = zip(*(line.split("\t") for line in lines), strict=True)
    batch = plan.source.next_batch()
    value, _ = plan.loss(plan.init_params, batch, plan.frozen, None)
    cosines = np.sum(first.encode(list(a)) * first.encode(list(b)), axis=1)
    expected = losses.cosent_loss(
        jnp.asarray(cosines), jnp.asarray(np.asarray(score, np.float32)), 20.0
    )
    np.testing.assert_allclose(float(value), float(expected), rtol=1e-5)
    assert float(value) > 0.1  # not a loss that is zero whatever the vectors

    result = train_and_evaluate(config, tmp_path / "stage2")
    assert result["final_step"] == config.total_steps
    assert all(np.isfinite(v) for v in result["losses"].values())
    encode, _ = plan.student(result["params"])
    texts = ["the man plays the guitar", "a dog runs", "dog"]
    reloaded = load_student(tmp_path / "stage2")
    meta = json.loads((tmp_path / "stage2" / "export" / "embres_static.json").read_text())
    assert reloaded.kind == "transfer" and meta["objective"] == "sts_finetune"
    np.testing.assert_allclose(reloaded.encode(texts), encode(texts), atol=1e-6)
    assert not np.allclose(reloaded.encode(texts), first.encode(texts), atol=1e-4)  # it trained


def test_finetune_refuses_an_adapter_other_than_the_exports(first_stage):
    from embres.models import load_model

    model_dir, stage1 = first_stage
    config = load_config_module("hybrid_finetune").get_config(f"runlocal,init_from={stage1}")
    config.adapter.type = "attention"
    with pytest.raises(ValueError, match=r"contextual student of adapter 'transfer'.*'attention'"):
        sts_finetune.check(config, load_model(str(model_dir)), adapters.get("attention"))


def test_transfer_finetune_keeps_the_teacher_rows_bit_identical_under_weight_decay(
    tiny_models, tmp_path
):
    """The kept teacher rows of a transfer are a frozen array, not AdamW parameters: weight
    decay moves every trained row and none of the kept ones (it moved them all before)."""
    from embres.export import export_transfer
    from embres.models import load_model
    from embres.train import train_and_evaluate
    from tests._train_utils import tiny_config

    model_dir = tiny_models("bert")
    first, kept = tmp_path / "first", 20  # the specials and the first 15 words
    export_transfer(load_model(str(model_dir)), {"teacher_rows": kept}, first)
    rng = np.random.default_rng(0)
    words = sorted(WORDS)
    lines = [
        f"{' '.join(rng.choice(words, 5))}\t{' '.join(rng.choice(words, 5))}\t{rng.uniform(0, 5)}"
        for _ in range(32)
    ]
    pairs = tmp_path / "scored.tsv"
    pairs.write_text("sentence1\tsentence2\tscore\n" + "\n".join(lines) + "\n")
    config = tiny_config(model_dir, "language_finetune", total_steps=3, export=True)
    config.objective.init_from = str(first)
    config.data.source = f"pairs:{pairs}"
    config.optimizer.weight_decay = 0.1
    train_and_evaluate(config, tmp_path / "second")

    before = np.asarray(load_model(str(first)).embedding_table())
    after = np.asarray(load_model(str(tmp_path / "second" / "export")).embedding_table())
    np.testing.assert_array_equal(after[:kept], before[:kept])
    assert (np.abs(after[kept:] - before[kept:]).max(axis=1) > 0).all()  # every other row moved


def test_cosine_mse_on_a_scored_source_trains_towards_the_score_itself(
    tiny_models, tmp_path, monkeypatch
):
    """``scored:`` scores arrive in [0, 1]: cosine-MSE compares the cosine with the score
    itself, so an identical pair scored 1 is at its target (cosine 1.0), not at 0.2."""
    from embres import configlib
    from embres.export import export_static
    from embres.models import load_model

    _data_dir(tmp_path / "data")
    monkeypatch.setenv("EMBRES_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EMBRES_CACHE", str(tmp_path / "cache"))
    model_dir = tiny_models("bert")
    teacher = load_model(str(model_dir))
    rows = np.random.default_rng(0).normal(size=(teacher.config.vocab_size, 8))
    export_static(rows.astype(np.float32), teacher.tokenizer, tmp_path / "s1")
    config = configlib.base_config()
    config.model = str(model_dir)
    config.adapter = configlib.section(type="table")
    configlib.sts_finetune_training(config, str(tmp_path / "s1"), "scored:stsb,sick")
    configlib.shrink_for_runlocal(config)
    config.objective.loss = "cosine_mse"
    adapter = adapters.get("table")
    plan = objectives.get("sts_finetune").prepare(config, teacher, adapter, tmp_path / "s2")
    params = {"table": jnp.asarray(plan.init_table)}

    batch = plan.source.next_batch()
    assert 0.0 <= batch["score"].min() and batch["score"].max() <= 1.0  # the source's range
    a = plan.student(params)[0]  # unit vectors, as served
    lines = open(plan.source.path).read().splitlines()[1 : 1 + config.batch_size]
    first, second, score = zip(*(line.split("\t") for line in lines), strict=True)
    cosines = np.sum(a(list(first)) * a(list(second)), axis=1)
    expected = np.mean((cosines - np.asarray(score, np.float32)) ** 2)
    value, _ = plan.loss(params, batch, plan.frozen, None)
    np.testing.assert_allclose(float(value), expected, rtol=1e-4)
    same = {**batch, "ids_b": batch["ids"], "mask_b": batch["mask"]}
    same["score"] = np.ones_like(batch["score"])
    value, _ = plan.loss(params, same, plan.frozen, None)
    assert float(value) == pytest.approx(0.0, abs=1e-6)  # was (1 - 1/5)^2 = 0.64
