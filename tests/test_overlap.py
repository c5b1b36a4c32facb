"""The contamination check: a training source holding an evaluation sentence (up to case,
whitespace and a final .!?) is refused, naming it; sentences:/scored: drop such sentences."""

import ml_collections
import pytest

from embres.data import eval_sets, overlap, sentences


def config(source, **data):
    c = ml_collections.ConfigDict()
    c.data = ml_collections.ConfigDict({"source": source, "columns": "", "heldout": 0, **data})
    c.evals = ml_collections.ConfigDict()
    c.evals.sts = ml_collections.ConfigDict({"task": "sts", "datasets": "stsb", "split": "dev"})
    return c


def test_normalize_is_provenances_rule():
    assert overlap.normalize("  A  Man\tis playing.  ") == "a man is playing"
    assert overlap.normalize("Really?!") == "really"
    assert overlap.normalize("İstanbul'da") == "i̇stanbul'da"  # casefold, as the data was built
    assert overlap.normalize("3.5") == "3.5"


def _dev_sentence(data_dir):
    return eval_sets.sts_sentences("stsb", "dev")[0]


def test_a_source_holding_one_eval_sentence_up_to_case_is_refused_naming_it(data_dir, tmp_path):
    dev = _dev_sentence(data_dir)  # "A man with a hard hat is dancing."
    corpus = tmp_path / "corpus.txt"
    lines = ["a sentence never evaluated", dev.upper().rstrip(".") + "  ", "another one"]
    corpus.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as caught:
        overlap.check_eval_overlap(config(f"text:{corpus}"))
    message = str(caught.value)
    assert f"data.source='text:{corpus}'" in message and "1 of 3 training sentences" in message
    assert repr(lines[1].strip()) in message and "evals.sts: stsb dev" in message
    assert "allow_eval_overlap=True" in message and "\n" not in message
    report = overlap.check_eval_overlap(config(f"text:{corpus}", allow_eval_overlap=True))
    assert report == {
        "data.source": {
            "source": f"text:{corpus}",
            "sentences": 3,
            "overlap": 1,
            "examples": [{"sentence": lines[1].strip(), "in": "evals.sts: stsb dev"}],
            "sets": {"evals.sts: stsb dev": 1},
        }
    }
    # held-out lines are never trained on, so not checked
    corpus.write_text("\n".join([lines[1], lines[0]]) + "\n")
    assert (
        overlap.check_eval_overlap(config(f"text:{corpus}", heldout=1))["data.source"]["overlap"]
        == 0
    )


def test_every_source_and_every_eval_set_is_read(data_dir, tmp_path):
    ntrex_en = eval_sets.tsv_columns(data_dir / "parallel" / "en_tr_ntrex.tsv")[0]
    probe = eval_sets.probe_sentences("tr_movie_sentiment")[3]
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text(f"en\ttr\nclean one\ttemiz\n{ntrex_en}!\tx\n")
    words = tmp_path / "dict.tsv"
    words.write_text(f"en\ttr\ngood\t{probe.title()}\n")
    c = config("mixture", columns="en,tr")
    c.data.mixture = ml_collections.ConfigDict(
        {"a": {"source": f"pairs:{pairs}", "weight": 1.0}, "b": {"source": "vocab", "weight": 1}}
    )
    c.evals.ntrex = ml_collections.ConfigDict(
        {"task": "bitext", "dataset": "pairs:parallel/en_tr_ntrex.tsv"}
    )
    c.evals.probe = ml_collections.ConfigDict({"task": "probe"})
    c.evals.speed = ml_collections.ConfigDict({"task": "speed"})
    with pytest.raises(ValueError, match=r"^data\.mixture\.a='pairs:.*1 of 4 training"):
        overlap.check_eval_overlap(c)
    c.data.allow_eval_overlap = True
    report = overlap.check_eval_overlap(c, {"objective.dictionary": f"dict:{words}"})
    assert report["data.mixture.a"]["sets"] == {
        "evals.ntrex: pairs:parallel/en_tr_ntrex.tsv dev": 1
    }
    assert report["data.mixture.b"]["sentences"] == 0
    assert report["objective.dictionary"]["examples"] == [
        {"sentence": probe.title(), "in": "evals.probe: tr_movie_sentiment dev"}
    ]
    tfds = overlap.check_eval_overlap(config("tfds:glue/stsb:train"))["data.source"]
    assert tfds["skipped"].startswith("tfds:")


def _stsb_row(a, b, score=3.0):
    return f"main-captions\tMSRvid\t2012test\t0001\t{score}\t{a}\t{b}"


def test_sentences_and_scored_drop_normalised_matches(tmp_path, monkeypatch):
    data = tmp_path / "data"
    (data / "stsb").mkdir(parents=True)
    (data / "stsb" / "sts-train.csv").write_text(
        "\n".join([_stsb_row("A MAN  sings", "A cat sits."), _stsb_row("A dog runs.", "Hi")])
    )
    (data / "stsb" / "sts-dev.csv").write_text(_stsb_row("A man sings.", "A girl reads.") + "\n")
    monkeypatch.setenv("EMBRES_DATA_DIR", str(data))
    assert sentences.sentences(("stsb",)) == ["A cat sits.", "A dog runs.", "Hi"]
    assert sentences.scored_pairs(("stsb",)) == [("A dog runs.", "Hi", 0.6)]


def test_an_absent_evaluation_set_is_named_and_not_a_reason_to_stop(tmp_path, monkeypatch):
    """Without the data folder the evaluators skip their sets, so the check does too (the
    main job runs without EMBRES_DATA_DIR)."""
    import ml_collections

    from embres import configlib
    from embres.data import check_eval_overlap

    monkeypatch.setenv("EMBRES_DATA_DIR", str(tmp_path / "absent"))
    config = configlib.base_config()
    text = tmp_path / "t.txt"
    text.write_text("a line\n")
    config.data.source = f"text:{text}"
    config.data.heldout = 0
    config.evals = ml_collections.ConfigDict(
        {"sts": configlib.section(task="sts", datasets="stsb")}
    )
    report = check_eval_overlap(config)
    assert report["data.source"]["overlap"] == 0
