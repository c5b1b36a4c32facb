"""Cross-lingual distillation and the scored-pairs second stage, on tiny models (2 steps)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from _train_utils import tiny_config

from embres import adapters, objectives, train
from embres.data.translation import TranslationSource, read_pairs
from embres.objectives import losses

EN = [
    "a man is playing a guitar",
    "the cat sits on the mat",
    "a woman is slicing an onion",
    "two dogs run in the park",
    "the children are playing football",
    "a plane is taking off",
    "the man is riding a horse",
    "a girl is reading a book",
]
TR = [
    "bir adam gitar çalıyor",
    "kedi paspasın üzerinde oturuyor",
    "bir kadın soğan doğruyor",
    "iki köpek parkta koşuyor",
    "çocuklar futbol oynuyor",
    "bir uçak kalkıyor",
    "adam ata biniyor",
    "bir kız kitap okuyor",
]


@pytest.fixture(scope="module")
def tiny_bert(tiny_models, tmp_path_factory):
    """A tiny random BERT whose tokenizer is an uncased WordPiece (as the real teachers')."""
    import shutil
    import string

    from transformers import BertTokenizerFast

    words = sorted({w for text in EN for w in text.split()})
    chars = list(string.ascii_lowercase) + ["##" + c for c in string.ascii_lowercase]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *words, "##s", "##ing"]
    vocab = list(dict.fromkeys(vocab))  # "a" is a letter and a word: one id
    source = tiny_models("bert", hidden_size=32, num_layers=2, vocab_size=len(vocab))
    directory = tmp_path_factory.mktemp("wordpiece_bert") / "model"
    shutil.copytree(source, directory)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        (directory / name).unlink(missing_ok=True)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(str(directory / "vocab.txt"), do_lower_case=True).save_pretrained(directory)
    return directory


@pytest.fixture
def language_files(tmp_path):
    pairs = tmp_path / "en_tr.tsv"
    rows = [f"{e}\t{t}" for e, t in zip(EN, TR, strict=True)] * 4
    pairs.write_text("en\ttr\n" + "\n".join(rows) + "\n", encoding="utf-8")
    text = tmp_path / "tr.txt"
    text.write_text("\n".join(TR * 3) + "\n", encoding="utf-8")
    dictionary = tmp_path / "dict.tsv"
    dictionary.write_text("en\ttr\nman\tadam\ncat\tkedi\nbook\tkitap\n", encoding="utf-8")
    scored = tmp_path / "scored.tsv"
    lines = [f"{TR[i]}\t{TR[(i + k) % 8]}\t{5.0 - k}" for i in range(8) for k in range(3)]
    scored.write_text("sentence1\tsentence2\tscore\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return {"pairs": pairs, "text": text, "dict": dictionary, "scored": scored}


def language_config(model_dir, files, name="language_static", **overrides):
    config = tiny_config(model_dir, name, total_steps=2)
    config.data.source = f"pairs:{files['pairs']}"
    config.objective.vocab_text = str(files["text"])
    if "dictionary" in config.objective:
        config.objective.dictionary = ""  # the shared data's dictionary is not for tiny runs
    config.objective.vocab_size = 120
    config.batch_size = 8
    config.export = True
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config


@pytest.mark.parametrize(
    "adapter,vocab,init",
    [
        ("static", "target", "fvt"),
        ("hybrid", "target", "teacher"),
        ("static", "bilingual", "dictionary"),
    ],
)
def test_static_students_train_and_export(
    tiny_bert, language_files, tmp_path, adapter, vocab, init
):
    from embres.export import load_student

    config = language_config(
        tiny_bert,
        language_files,
        **{"adapter.type": adapter, "objective.vocab": vocab, "objective.init": init},
    )
    config.objective.dictionary = str(language_files["dict"])
    out = train.train_and_evaluate(config, tmp_path / "work")
    assert sorted(out["losses"]) == [1, 2] and all(np.isfinite(list(out["losses"].values())))
    loaded = load_student(tmp_path / "work" / "export")
    vectors = loaded.encode(TR[:3])
    assert vectors.shape == (3, 16) and np.all(np.isfinite(vectors))
    assert loaded.kind == ("static" if adapter == "static" else "hybrid")
    # sentence-transformers reads the same student: embres's module runs the hybrid's context
    # path (identical), its StaticEmbedding the static rows (computing in their float16)
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(
        str(tmp_path / "work" / "export"), device="cpu", trust_remote_code=True
    )
    tolerance = 1e-6 if adapter == "hybrid" else 1e-3
    np.testing.assert_allclose(st.encode(TR[:3]), vectors, atol=tolerance)
    # the export serves the vocabulary the run built (not the teacher's), and Turkish text
    # reaches the tokens it added
    from transformers import AutoTokenizer

    built = AutoTokenizer.from_pretrained(str(tmp_path / "work" / "vocab"))
    assert loaded.tokenizer.get_vocab() == built.get_vocab()
    teacher_vocab = json.loads((tiny_bert / "tokenizer.json").read_text())["model"]["vocab"]
    new_tokens = set(loaded.tokenizer.get_vocab()) - set(teacher_vocab)
    used = {t for text in TR for t in loaded.tokenizer.tokenize(text)}
    assert used & new_tokens, "Turkish text uses none of the vocabulary's new tokens"


def test_transfer_keeps_english_exact_and_reloads(tiny_bert, language_files, tmp_path):
    from embres.extract import EmbeddingExtractor
    from embres.models import load_model

    config = language_config(tiny_bert, language_files, "language_transfer")
    config.optimizer.learning_rate = 0.05  # large, so a leak into the teacher's rows would show
    out = train.train_and_evaluate(config, tmp_path / "work")
    teacher = load_model(tiny_bert)
    student = load_model(tmp_path / "work" / "export")
    rows = teacher.config.vocab_size
    assert student.config.vocab_size > rows  # bilingual: the teacher's rows plus new ones
    table = np.asarray(student.embedding_table())
    np.testing.assert_array_equal(table[:rows], np.asarray(teacher.embedding_table()))
    # only the new rows are parameters; the teacher's sit frozen outside the optimizer
    trained = np.asarray(out["params"]["table"])
    assert trained.shape == (student.config.vocab_size - rows, 32)
    np.testing.assert_allclose(table[rows:], trained, atol=1e-6)
    # and they trained: the new rows the Turkish text uses moved from their FVT start
    start = fvt_rows(student.tokenizer, teacher)[rows:]
    used = sorted({i for text in TR for i in student.tokenizer(text)["input_ids"] if i >= rows})
    moved = np.abs(trained - start).max(axis=1)
    assert used and np.all(moved[np.asarray(used) - rows] > 1e-4), moved[np.asarray(used) - rows]
    # English through the bilingual tokenizer: the same ids, hence exactly the teacher's vectors
    # the export is a Hugging Face directory with its new tokenizer: sentence-transformers
    # reads it as embres does, Turkish included
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(tmp_path / "work" / "export"), device="cpu")
    np.testing.assert_allclose(
        st.encode(TR[:3], normalize_embeddings=False),
        EmbeddingExtractor(student).extract_embeddings(TR[:3], progress=False),
        atol=1e-5,
    )
    english = [EN[0], EN[3]]
    assert student.tokenizer(english)["input_ids"] == teacher.tokenizer(english)["input_ids"]
    np.testing.assert_allclose(
        EmbeddingExtractor(student).extract_embeddings(english, progress=False),
        EmbeddingExtractor(teacher).extract_embeddings(english, progress=False),
        atol=1e-6,
    )


def fvt_rows(tokenizer, teacher):
    """The FVT start of every row of ``tokenizer`` from the teacher's input table."""
    from embres.objectives import language

    table = np.asarray(teacher.embedding_table(), np.float32)
    return language.initial_rows("fvt", tokenizer, teacher.tokenizer, table, None)


def test_full_student_trains_the_blocks_keeps_english_rows_and_reloads(
    tiny_bert, language_files, tmp_path
):
    from sentence_transformers import SentenceTransformer

    from embres.extract import EmbeddingExtractor
    from embres.models import load_model

    config = language_config(tiny_bert, language_files, "language_full")
    out = train.train_and_evaluate(config, tmp_path / "work")
    teacher = load_model(tiny_bert)
    student = load_model(tmp_path / "work" / "export")
    rows = teacher.config.vocab_size
    table = np.asarray(student.embedding_table())
    np.testing.assert_array_equal(table[:rows], np.asarray(teacher.embedding_table()))
    # the blocks trained: the export's transformer weights are the teacher's plus the update
    delta = [v for k, v in out["params"].items() if k.startswith("delta.")]
    assert len(delta) > 10 and max(float(np.abs(np.asarray(x)).max()) for x in delta) > 0
    moved = [
        float(np.abs(np.asarray(a) - np.asarray(b)).max())
        for a, b in zip(
            jax.tree.leaves(student.params), jax.tree.leaves(teacher.params), strict=True
        )
        if np.shape(a) == np.shape(b)
    ]
    assert max(moved) > 1e-5
    # English ids are the teacher's; English vectors now come from the trained blocks
    english = [EN[0], EN[3]]
    assert student.tokenizer(english)["input_ids"] == teacher.tokenizer(english)["input_ids"]
    ours = EmbeddingExtractor(student).extract_embeddings(TR[:3] + english, progress=False)
    st = SentenceTransformer(str(tmp_path / "work" / "export"), device="cpu")
    np.testing.assert_allclose(
        st.encode(TR[:3] + english, normalize_embeddings=False), ours, atol=1e-5
    )
    reloaded = EmbeddingExtractor(load_model(tmp_path / "work" / "export"))
    np.testing.assert_array_equal(
        reloaded.extract_embeddings(TR[:3] + english, progress=False), ours
    )


def test_sts_finetune_second_stage(tiny_bert, language_files, tmp_path):
    first = language_config(tiny_bert, language_files)
    train.train_and_evaluate(first, tmp_path / "first")
    config = tiny_config(tiny_bert, "language_finetune", total_steps=2)
    config.objective.init_from = str(tmp_path / "first")
    config.data.source = f"pairs:{language_files['scored']}"
    config.batch_size = 8
    config.export = True
    config.optimizer.learning_rate = 1e-2  # rows move well beyond float16 storage rounding
    out = train.train_and_evaluate(config, tmp_path / "second")
    assert sorted(out["losses"]) == [1, 2]
    meta = json.loads((tmp_path / "second" / "export" / "embres_static.json").read_text())
    assert meta["objective"] == "sts_finetune" and meta["vocab"] == first.objective.vocab
    # the second stage starts from the first's rows and moves the ones the pairs use
    from embres.export import load_static_table, load_student

    before = load_static_table(tmp_path / "first" / "export")
    after = load_static_table(tmp_path / "second" / "export")
    trained = np.array(out["params"]["table"])[: len(after)]
    unk = load_student(tmp_path / "second" / "export").tokenizer.unk_token_id
    trained[unk] = 0.0  # the one [UNK] rule: served as zero
    np.testing.assert_allclose(after, trained, atol=2e-3)  # float16 storage
    tokenizer = load_student(tmp_path / "second" / "export").tokenizer
    used = sorted(
        {i for text in TR for i in tokenizer(text, add_special_tokens=False)["input_ids"]}
    )
    assert np.abs(after[used] - before[used]).max() > 5e-3


def test_cosent_orders_pairs_by_score():
    scores = np.array([5.0, 3.0, 1.0], np.float32)
    right = losses.cosent_loss(np.array([0.9, 0.5, 0.1], np.float32), scores)
    wrong = losses.cosent_loss(np.array([0.1, 0.5, 0.9], np.float32), scores)
    assert float(right) < 0.01 < float(wrong)
    # by hand: one ordered pair (5 > 1) with cosines 0.2 and 0.3 -> log(1 + e^(20 * 0.1))
    value = losses.cosent_loss(np.array([0.2, 0.3], np.float32), np.array([5.0, 1.0], np.float32))
    assert float(value) == pytest.approx(np.log1p(np.exp(2.0)), rel=1e-5)


def test_parallel_source_weights_buckets_and_resume(tiny_bert, language_files):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    pairs, names = read_pairs(language_files["pairs"], "en,tr")
    assert names == ["en", "tr"] and pairs[0] == (EN[0], TR[0])
    targets = np.arange(len(pairs) * 4, dtype=np.float32).reshape(len(pairs), 4)
    weights = np.linspace(0.1, 1.0, len(pairs)).astype(np.float32)

    def make():
        return TranslationSource(
            tokenizer, [t for _, t in pairs], [s for s, _ in pairs], targets, weights,
            batch_size=6, max_length=64, pad_id=0, add_special_tokens=True, seed=3,
        )  # fmt: skip

    source = make()
    first = source.next_batch()
    assert first["ids"].shape[1] in (16, 24, 32)  # a length bucket, not max_length
    index = {tuple(t): i for i, t in enumerate(targets.tolist())}
    rows = [index[tuple(t)] for t in first["targets"].tolist()]
    np.testing.assert_allclose(first["weight"], weights[rows])
    state = source.get_state()
    expected = [source.next_batch() for _ in range(7)]  # crosses an epoch boundary
    resumed = make()
    resumed.set_state(state)
    for want in expected:
        got = resumed.next_batch()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    with pytest.raises(ValueError, match="another kind of data source"):
        resumed.set_state({"epoch": 0, "offset": 10, "line": 2})


@pytest.mark.parametrize("adapter", sorted(adapters.ADAPTERS))
def test_every_adapter_trains_or_is_refused_early(
    tiny_bert, language_files, tmp_path, adapter, monkeypatch
):
    module = objectives.get("cross_lingual")
    name = "language_transfer" if adapter == "table" else "language_static"
    config = language_config(tiny_bert, language_files, name, **{"adapter.type": adapter})
    if adapter not in module.STUDENTS[config.objective.student]:

        def too_late(*args, **kwargs):
            raise AssertionError("reached the vocabulary, caching or compilation before refusing")

        monkeypatch.setattr(module, "prepare", too_late)
        with pytest.raises(ValueError, match=f"cannot train adapter '{adapter}'"):
            train.train_and_evaluate(config, tmp_path / "work")
        return
    out = train.train_and_evaluate(config, tmp_path / "work")
    assert sorted(out["losses"]) == [1, 2] and np.isfinite(list(out["losses"].values())).all()


def test_language_configs_default_to_real_data_and_runlocal_shrinks():
    from _train_utils import load_config_module

    for name in ("language_static", "language_transfer", "language_finetune", "language_full"):
        module = load_config_module(name)
        full, small = module.get_config(), module.get_config("runlocal")
        assert full.total_steps > small.total_steps and full.model == "all-MiniLM-L6-v2"
        assert "stsb" in full.data.source or "stsb" in full.data.get("mixture", {})
    static = load_config_module("language_static").get_config("lang=de")
    assert static.data.source == "mixture" and static.data.columns == "en,de"
    sources = [c.source for c in static.data.mixture.values()]
    assert all("en_de_" in s for s in sources) and "ntrex" not in str(sources)  # dev, never trained
    assert "stsb_de" in static.evals.sts.datasets  # another language is a data change
    assert static.evals.ntrex.dataset == "pairs:parallel/en_de_ntrex.tsv"


def test_bad_settings_fail_before_anything_runs(tiny_bert, language_files, tmp_path):
    cases = [
        ({"objective.vocab": "klingon"}, "config.objective.vocab='klingon'"),
        ({"objective.init": "magic"}, "config.objective.init='magic'"),
        ({"objective.student": "transfer"}, "cannot train adapter 'static'"),
        ({"data.source": "vocab"}, "trains on translation pairs"),
        ({"objective.english_weight": -1.0}, "english_weight=-1.0"),
    ]
    for overrides, message in cases:
        config = language_config(tiny_bert, language_files, **overrides)
        with pytest.raises(ValueError, match=message):
            train.train_and_evaluate(config, tmp_path / "never")
        assert not (tmp_path / "never" / "checkpoints").exists()
    config = language_config(
        tiny_bert, language_files, "language_transfer", **{"objective.init": "teacher"}
    )
    with pytest.raises(ValueError, match="output space"):
        train.train_and_evaluate(config, tmp_path / "never")
    assert objectives.get("cross_lingual").NAME == "cross_lingual"


def test_model_adapter_adds_words_by_the_distillation_rule(tiny_bert, tmp_path):
    from embres import ModelAdapter
    from embres.extract import EmbeddingExtractor

    adapter = ModelAdapter(source_model=str(tiny_bert), target_dim=8)
    others = [EN[1], EN[4]]
    before = adapter.adapt(others)
    (new_id,) = adapter.add_words(["guitarist"])
    assert adapter.tokenizer("guitarist", add_special_tokens=False)["input_ids"] == [new_id]
    np.testing.assert_allclose(adapter.adapt(others), before, atol=1e-6)  # nothing else moves
    # the row is the teacher's vector of the word, on the distillation's basis and weight
    raw = EmbeddingExtractor(adapter.teacher).extract_embeddings(
        ["guitarist"], pooling="mean", normalize=False
    )
    d = adapter._distillation
    want = ((raw - d.mean) @ d.components.T) * d.weights.max()
    np.testing.assert_allclose(adapter.table[new_id], want[0], rtol=1e-4, atol=1e-6)
    # saved and loaded, the word stays one token with its row
    adapter.save(tmp_path / "m")
    loaded = ModelAdapter.load(tmp_path / "m")
    # model.safetensors stores float16 rows (the default): equal within float16 rounding
    np.testing.assert_allclose(loaded.adapt(["guitarist"]), adapter.adapt(["guitarist"]), atol=2e-3)
    # after load (no teacher): FVT over the table, the mean of the word's pieces' rows
    pieces = loaded.tokenizer("playings", add_special_tokens=False)["input_ids"]
    (fvt_id,) = loaded.add_words(["playings"])
    np.testing.assert_allclose(loaded.table[fvt_id], loaded.table[pieces].mean(0), atol=2e-3)


def test_teacher_init_rows_are_on_the_distilled_rows_scale():
    """init=teacher: a new token's row is the teacher's vector of its string, unnormalised,
    as the vocabulary-distilled rows it shares one PCA with (normalised rows mixed unit-length
    and raw-scale rows before)."""
    from embres import vocab
    from embres.extract import EmbeddingExtractor
    from embres.models import load_model
    from embres.objectives import cross_lingual

    host = load_model("all-MiniLM-L6-v2")
    texts = ["guitar music", "guitar player", "the music", "music player"] * 4
    tokenizer = vocab.train_tokenizer(texts, vocab_size=60, lang="en")
    config = tiny_config(host.path, "language_static")
    config.objective.init = "teacher"
    items = cross_lingual.Items([], [], [], ["en", "tr"], 0.0)
    table = np.zeros((host.config.vocab_size, host.config.hidden_size), np.float32)
    rows = cross_lingual.starting_rows(config, host, tokenizer, None, items, table, "static")
    word = tokenizer.convert_tokens_to_ids("guitar")
    want = EmbeddingExtractor(host).extract_embeddings(["guitar"], normalize=False, progress=False)
    np.testing.assert_allclose(rows[word], want[0], rtol=1e-4, atol=1e-5)
    assert abs(np.linalg.norm(rows[word]) - 1.0) > 0.05  # the teacher's raw scale, not unit


def test_contextual_student_carries_an_english_hybrid_and_reloads(
    tiny_bert, language_files, tmp_path
):
    from embres import configlib
    from embres.export import load_student
    from embres.static_embedder import AdapterEmbedder

    english = tmp_path / "en.txt"
    english.write_text("\n".join(EN * 6) + "\n", encoding="utf-8")
    first = tiny_config(tiny_bert, "hybrid", total_steps=2)
    first.data.source = f"text:{english}"
    first.data.heldout = 4
    first.export = True
    configlib.apply_overrides(first, {"adapter.max_positions": 16})
    train.train_and_evaluate(first, tmp_path / "english")
    config = language_config(
        tiny_bert,
        language_files,
        "language_hybrid",
        **{"objective.init_from": str(tmp_path / "english")},
    )
    config.adapter.max_positions = 16
    out = train.train_and_evaluate(config, tmp_path / "work")
    assert sorted(out["losses"]) == [1, 2] and np.isfinite(list(out["losses"].values())).all()
    start = load_student(tmp_path / "english")
    loaded = load_student(tmp_path / "work")
    assert loaded.kind == start.kind == "transfer"
    # the teacher's tokens keep their ids (bilingual) and the vocabulary grew
    teacher_vocab = start.tokenizer.get_vocab()
    assert all(loaded.tokenizer.get_vocab()[t] == i for t, i in teacher_vocab.items())
    assert len(loaded.tokenizer) > len(start.tokenizer)
    # every param trained (rows and blocks), and the export serves exactly the trained params
    moved = {
        k
        for k in start.params
        if np.abs(loaded.params[k][: len(start.params[k])] - start.params[k]).max() > 0
    }
    assert "table" in moved and len(moved) > 1, moved
    # trained params: the rows, and each English param's delta at transformer_lr_scale
    trained = {k: np.asarray(v) for k, v in out["params"].items()}
    scale = config.objective.transformer_lr_scale
    served = {k: w + scale * trained[f"delta.{k}"] for k, w in start.params.items() if k != "table"}
    served["table"] = trained["table"][: len(loaded.tokenizer)]
    assert sorted(trained) == sorted(["table", *(f"delta.{k}" for k in served if k != "table")])
    direct = AdapterEmbedder(loaded.adapter, served, loaded.tokenizer).encode(TR[:3] + EN[:2])
    np.testing.assert_allclose(loaded.encode(TR[:3] + EN[:2]), direct, atol=1e-6)
    # and sentence-transformers runs the same student (Turkish included)
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(
        str(tmp_path / "work" / "export"), device="cpu", trust_remote_code=True
    )
    np.testing.assert_allclose(st.encode(TR[:3] + EN[:2]), direct, atol=1e-6)


def test_mixture_trains_and_a_changed_mixture_is_refused_on_resume(
    tiny_bert, language_files, tmp_path
):
    from embres import configlib

    def config(steps, weight):
        c = language_config(tiny_bert, language_files, total_steps=steps)
        c.data.source = "mixture"
        c.data.mixture = configlib.section(
            pairs=configlib.section(source=f"pairs:{language_files['pairs']}", weight=weight),
            words=configlib.section(
                source=f"dict:{language_files['dict']}", weight=1.0, item_weight=0.1
            ),
        )
        return c

    out = train.train_and_evaluate(config(2, 3.0), tmp_path / "work")
    assert sorted(out["losses"]) == [1, 2]
    train.train_and_evaluate(config(4, 3.0), tmp_path / "work")  # the same mixture resumes
    with pytest.raises(ValueError, match=r"mixture.*pairs.*weight"):
        train.train_and_evaluate(config(6, 1.0), tmp_path / "work")


def test_a_dictionary_holding_an_eval_sentence_is_refused_or_dropped(
    tiny_bert, language_files, tmp_path
):
    """An evaluation sentence up to case and final punctuation in a training source refuses
    the run, naming it; drop_eval_overlap leaves that item out of a mixture and reports it."""
    from embres import configlib
    from embres.data import overlap

    held = tmp_path / "dev.tsv"
    held.write_text("en\ttr\nThe Cat sits on the mat.\tkedi paspasta\nzebra\tzebra\n")
    config = language_config(tiny_bert, language_files)
    config.evals = configlib.section(dev=configlib.section(task="bitext", dataset=f"pairs:{held}"))
    config.data.source = "mixture"
    config.data.mixture = configlib.section(
        pairs=configlib.section(source=f"pairs:{language_files['pairs']}", weight=1.0)
    )
    config.data.drop_eval_overlap = False  # (the language configs set it)
    with pytest.raises(ValueError, match="data.mixture.pairs=.*the cat sits on the mat"):
        train.train_and_evaluate(config, tmp_path / "refused")
    assert not (tmp_path / "refused" / "checkpoints").exists()
    config.data.drop_eval_overlap = True
    report = overlap.check_eval_overlap(config)
    assert report["data.mixture.pairs"]["dropped"] == 4  # EN[1] occurs 4 times
    items = objectives.get("cross_lingual").read_items(config, print)
    assert EN[1] not in [s for s, _ in items.pairs] and len(items.pairs) == 28
    out = train.train_and_evaluate(config, tmp_path / "dropped")
    assert sorted(out["losses"]) == [1, 2]
