"""Data sources: the registry, pairs, the vocabulary facts in tokenize, PCA, the target cache."""

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import jax
import numpy as np
import pytest

from embres import data, linalg, tokenize
from embres.data import cached
from embres.data.pairs import PairsSource
from embres.models import load_model
from embres.testing import tiny_tokenizer

# --- The registry ----------------------------------------------------------------------------


def cfg(source, **fields):
    """A ``config.data`` stand-in without the optional fields (they default)."""
    return types.SimpleNamespace(source=source, max_length=10, **fields)


def test_parse_spec_gives_one_parse_per_kind(tmp_path):
    assert data.parse_spec("vocab") == data.Spec("vocab", "vocab")
    text = data.parse_spec("text:~/corpus.txt")
    assert (text.kind, text.path) == ("text", Path("~/corpus.txt").expanduser())
    pairs = data.parse_spec(f"pairs:{tmp_path}/p.tsv")
    assert (pairs.kind, pairs.path, pairs.tfds) == ("pairs", tmp_path / "p.tsv", None)
    tfds = data.parse_spec("tfds:wiki40b/tr:1.3.0:train[:10%]")
    assert tfds.kind == "tfds" and tfds.tfds.load_name == "wiki40b/tr:1.3.0"
    assert tfds.tfds.split == "train[:10%]"
    with pytest.raises(AttributeError):  # frozen
        tfds.kind = "text"
    assert set(data.REGISTRY) == {
        "vocab", "text", "tfds", "pairs", "sentences", "scored", "mixture"
    }  # fmt: skip


@pytest.mark.parametrize(
    "spec, match",
    [
        ("wiki.txt", r"config.data.source='wiki.txt' is not a known source; expected one of \("),
        (
            "txt:a",
            r"\('text:PATH', 'tfds:NAME\[/CONFIG\]\[:VERSION\]\[:SPLIT\]', 'pairs:PATH', 'vocab', "
            r"'mixture', 'sentences:NAME\[,NAME\]', 'scored:NAME\[,NAME\]'\)",
        ),
        ("text:", r"config.data.source='text:': expected 'text:PATH' with a path"),
        ("pairs:", r"expected 'pairs:PATH' with a path"),
        ("vocab:50", r"config.data.source='vocab:50': 'vocab' takes no argument"),
        ("tfds:", r"config.data.source='tfds:': cannot parse TFDS spec"),
        (None, r"config.data.source=None is not a string"),
    ],
)
def test_bad_specs_name_the_key_the_value_and_the_forms(spec, match):
    with pytest.raises(ValueError, match=match):
        data.check_spec(spec)


def test_check_spec_needs_the_file_but_reads_nothing(tmp_path):
    for kind in ("text", "pairs"):
        with pytest.raises(FileNotFoundError, match=rf"config.data.source='{kind}:.*no such file"):
            data.check_spec(f"{kind}:{tmp_path}/missing")
    (tmp_path / "p.tsv").write_bytes(b"\xff\xfe not even utf-8")  # never opened by the check
    assert data.check_spec(f"pairs:{tmp_path}/p.tsv").kind == "pairs"
    assert data.check_spec("tfds:imdb_reviews:train").kind == "tfds"  # no TFDS import


def test_make_source_builds_each_kind_with_defaults(tmp_path):
    tok = tiny_tokenizer("bert")
    (tmp_path / "t.txt").write_text("the man plays guitar\na cat\n" * 4)
    (tmp_path / "p.tsv").write_text("en\ttr\n" + "the man\tadam\na cat\tbir kedi\n" * 4)
    common = dict(vocab_size=len(tok), pad_id=0, batch_size=4, seed=0)
    vocab = data.make_source(cfg("vocab"), tok, **common)
    text = data.make_source(cfg(f"text:{tmp_path}/t.txt"), tok, **common)
    pairs = data.make_source(cfg(f"pairs:{tmp_path}/p.tsv", heldout=1), tok, **common)
    assert vocab.next_batch()["ids"].shape == text.next_batch()["ids"].shape == (4, 10)
    assert set(pairs.next_batch()) == {"ids", "mask", "ids_b", "mask_b"}
    assert pairs.heldout_texts(5) == ["the man"]
    halves = data.make_source(cfg("vocab"), tok, **{**common, "batch_size": 4}, process_count=2)
    assert halves.next_batch()["ids"].shape == (2, 10)
    with pytest.raises(ValueError, match="config.batch_size=4 must be divisible by the process"):
        data.make_source(cfg("vocab"), tok, **common, process_count=3)


def test_tfds_helpers_moved_to_data():
    from embres.data import tfds

    for name in ("parse_tfds_spec", "iter_tfds_rows", "iter_tfds_texts", "text_fields"):
        assert callable(getattr(tfds, name))
    assert tfds.as_text(b"caf\xc3\xa9") == "café" and tfds.TfdsSpec("a", None, None).load_name
    assert callable(tfds.import_tfds) and data.tfds_text_file is tfds.tfds_text_file
    assert not (Path(data.__file__).parents[1] / "evaluate" / "tfds_text.py").exists()


# --- pairs:PATH --------------------------------------------------------------------------------


def write_pairs(path, n, score=True, header=None):
    header = header or (["sentence1", "score", "sentence2"] if score else ["en", "tr"])
    lines = ["\t".join(header)]
    for i in range(n):
        a, b = f"the man {'plays ' * (i % 3)}guitar {i}", f"a cat {i}"
        lines.append("\t".join([a, f"{i % 5}.5", b] if score else [a, b]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def pairs_source(path, tok, **kw):
    options = dict(vocab_size=len(tok), pad_id=0, batch_size=4, max_length=12, heldout=3)
    options["score_range"] = (0, 5)
    return PairsSource(str(path), tok, **{**options, **kw})


def test_pairs_batches_columns_and_scores(tmp_path):
    tok = tiny_tokenizer("bert")
    src = pairs_source(write_pairs(tmp_path / "p.tsv", 23), tok)
    assert (src.column_names, src.score_name) == (("sentence1", "sentence2"), "score")
    batch = src.next_batch()
    assert set(batch) == {"ids", "mask", "ids_b", "mask_b", "score"}
    for key in ("ids", "mask", "ids_b", "mask_b"):
        assert batch[key].shape == (4, 12) and batch[key].dtype == np.int32
    assert batch["score"].dtype == np.float32  # rescaled from the default range 0-5
    np.testing.assert_allclose(batch["score"], np.float32([3.5, 4.5, 0.5, 1.5]) / 5)
    a, b = tok(["the man guitar 3", "a cat 3"])["input_ids"]
    np.testing.assert_array_equal(batch["ids"][0, : len(a)], a)
    np.testing.assert_array_equal(batch["ids_b"][0], b + [0] * (12 - len(b)))
    np.testing.assert_array_equal(batch["mask_b"][0], [1] * len(b) + [0] * (12 - len(b)))
    assert src.heldout_texts(10) == [f"the man {'plays ' * i}guitar {i}" for i in range(3)]
    assert src.heldout_pairs(1) == [("the man guitar 0", "a cat 0")]
    weights = src.token_weights()
    assert weights.shape == (len(tok),) and weights.min() == 1.0
    cat = tok.convert_tokens_to_ids("cat")
    assert weights[cat] == 1 + 20  # once per training pair (column b), plus one
    # Explicit columns (b, a), no score column in the file.
    plain = pairs_source(write_pairs(tmp_path / "q.tsv", 9, score=False), tok, columns="tr,en")
    batch = plain.next_batch()
    assert "score" not in batch and plain.heldout_texts(1) == ["a cat 0"]


def test_pairs_resume_epochs_and_processes(tmp_path):
    tok = tiny_tokenizer("bert")
    path = write_pairs(tmp_path / "p.tsv", 23)
    src = pairs_source(path, tok)
    [src.next_batch() for _ in range(3)]
    state = src.get_state()
    rest = [src.next_batch() for _ in range(6)]  # crosses an epoch (20 training pairs)
    assert src.epoch == 1
    again = pairs_source(path, tok)
    again.set_state(json.loads(json.dumps(state)))
    for want, got in zip(rest, [again.next_batch() for _ in range(6)], strict=True):
        for key in want:
            np.testing.assert_array_equal(want[key], got[key])
    # Two processes with 2 rows each read exactly what one process with 4 reads, interleaved.
    one = pairs_source(path, tok).next_batch()
    halves = [
        pairs_source(path, tok, batch_size=2, process_index=i, process_count=2) for i in (0, 1)
    ]
    for step in range(3):
        parts = [h.next_batch() for h in halves]
        assert parts[0]["ids"].shape == (2, 12)
        if step == 0:
            np.testing.assert_array_equal(parts[0]["score"], one["score"][0::2])
            np.testing.assert_array_equal(parts[1]["ids_b"], one["ids_b"][1::2])
        assert halves[0].get_state() == halves[1].get_state()  # both stop at the same place


def test_pairs_errors_name_the_header_and_the_line(tmp_path):
    tok = tiny_tokenizer("bert")
    path = write_pairs(tmp_path / "p.tsv", 8)
    with pytest.raises(
        ValueError,
        match=r"has columns \['sentence1', 'score', 'sentence2'\], not \['en'\] \(config.data.columns='en,sentence2'\)",
    ):
        pairs_source(path, tok, columns="en,sentence2")
    with pytest.raises(ValueError, match=r"config.data.columns='sentence1'; expected two"):
        pairs_source(path, tok, columns="sentence1")
    with pytest.raises(ValueError, match=r"config.data.score_column='label' is not a score"):
        pairs_source(path, tok, score_column="label")
    only_one = write_pairs(tmp_path / "o.tsv", 3, header=["text", "label"])
    with pytest.raises(ValueError, match=r"\['text', 'label'\]: fewer than two text columns"):
        pairs_source(only_one, tok)
    lines = path.read_text().splitlines()
    bad_count = tmp_path / "c.tsv"
    bad_count.write_text("\n".join(lines[:6] + ["only\ttwo"] + lines[6:]) + "\n")
    with pytest.raises(ValueError, match=rf"{bad_count}:7: 2 tab-separated fields; the header"):
        pairs_source(bad_count, tok, heldout=1)  # found when built, before any step
    bad_score = tmp_path / "s.tsv"
    bad_score.write_text("\n".join(lines[:2] + ["", "a\thigh\tb"] + lines[2:]) + "\n")
    with pytest.raises(ValueError, match=rf"{bad_score}:4: score column 'score' holds 'high'"):
        pairs_source(bad_score, tok)  # within the held-out pairs: found at once
    with pytest.raises(ValueError, match="fewer than config.data.heldout=99 pairs"):
        pairs_source(path, tok, heldout=99)


def test_scores_outside_the_declared_range_are_refused_before_training(tmp_path):
    """Issue 24 row 3: a pairs: file scored 0-100 trained towards cos = 50 with loss 294."""
    path = tmp_path / "p.tsv"
    rows = [f"a man {i}\ta dog {i}\t{i * 10}" for i in range(11)]  # 0..100
    path.write_text("sentence1\tsentence2\tscore\n" + "\n".join(rows) + "\n")
    tok = tiny_tokenizer("bert")
    build = dict(vocab_size=len(tok), pad_id=0, batch_size=4, seed=0)
    with pytest.raises(ValueError) as caught:
        data.make_source(cfg(f"pairs:{path}"), tok, **build)
    assert str(caught.value) == (
        f"{path}:3: score column 'score' holds 10, outside the declared range [0, 5] "
        "(config.data.score_range='low,high' declares the file's range)"
    )
    source = data.make_source(cfg(f"pairs:{path}", score_range="0,100"), tok, **build)
    np.testing.assert_allclose(source.next_batch()["score"], [0.0, 0.1, 0.2, 0.3], atol=1e-6)
    with pytest.raises(ValueError, match=r"config.data.score_range='5,0'; expected 'low,high'"):
        data.make_source(cfg(f"pairs:{path}", score_range="5,0"), tok, **build)
    with pytest.raises(ValueError, match=r"p.tsv has a score column 'score': PairsSource needs"):
        PairsSource(str(path), tok, vocab_size=len(tok), pad_id=0, batch_size=4, max_length=8)
    with pytest.raises(ValueError, match="'scored:stsb' source knows its datasets' ranges"):
        data.score_range(data.parse_spec("scored:stsb"), cfg("scored:stsb", score_range="0,5"))
    assert data.score_range(data.parse_spec("scored:stsb"), cfg("scored:stsb")) == (0.0, 1.0)


def test_a_bad_row_anywhere_in_a_pairs_file_fails_before_training(tmp_path):
    """Issue 24 row 12: line 10 with a missing field failed only at the step reaching it."""
    path = write_pairs(tmp_path / "p.tsv", 30)
    lines = path.read_text().split("\n")
    lines[9] = lines[9].rsplit("\t", 1)[0]  # line 10: two fields of three
    path.write_text("\n".join(lines))
    tok = tiny_tokenizer("bert")
    with pytest.raises(ValueError, match=rf"^{path}:10: 2 tab-separated fields; the header"):
        data.make_source(
            cfg(f"pairs:{path}"), tok, vocab_size=len(tok), pad_id=0, batch_size=4, seed=0
        )


def test_pairs_on_the_shared_pud_file(data_dir):
    path = data_dir / "parallel" / "en_tr_pud.tsv"
    if not path.is_file():
        pytest.skip(f"{path} is absent from the shared data")
    with open(path, encoding="utf-8") as f:
        assert f.readline().rstrip("\n").split("\t") == ["en", "tr"]
    tok = tiny_tokenizer("bert")
    src = pairs_source(path, tok, batch_size=8, max_length=32, heldout=10)
    batch = src.next_batch()
    assert set(batch) == {"ids", "mask", "ids_b", "mask_b"}  # no score column
    assert batch["mask"].sum(1).min() >= 3 and batch["mask_b"].sum(1).min() >= 3
    assert src.heldout_texts(1)[0].startswith("“While much of the digital transition")
    assert src.heldout_pairs(1)[0][1].startswith("Obama'nın Özel Asistanı")
    for _ in range(124):  # 990 training pairs: the epoch wraps inside batch 124
        src.next_batch()
    assert src.epoch == 1


# --- Vocabulary facts (tokenize) and PCA (linalg) ----------------------------------------------


def test_special_template_usable_mask_and_zipf_prior():
    assert tokenize.special_template(tiny_tokenizer("bert")) == ([2], [3])
    assert tokenize.special_template(tiny_tokenizer("xlmr")) == ([0], [2])
    assert tokenize.special_template(tiny_tokenizer("gpt2")) == ([], [])
    tok = tiny_tokenizer("xlmr")
    tok.add_tokens(["madeupword0", "<unused3>", "[unused7]", "unused"])
    usable = tokenize.usable_token_mask(tok, len(tok) + 2)  # two rows past the tokenizer
    ids = tok.convert_tokens_to_ids(["madeupword0", "<unused3>", "[unused7]", "unused"])
    assert list(usable[ids]) == [False, False, False, True]
    assert not usable[tok.all_special_ids].any() and not usable[-2:].any()
    prior = tokenize.zipf_prior(usable)
    assert prior.dtype == np.float64 and prior.sum() == pytest.approx(1.0)
    first, second = np.flatnonzero(usable)[:2]
    assert prior[first] / prior[second] == pytest.approx(
        (1 + tokenize.ZIPF_SHIFT) / tokenize.ZIPF_SHIFT
    )
    assert (prior[~usable] == 0).all()
    # SIF weights in distill use the same prior.
    from embres.distill import sif_weights

    expected = (1e-4 / (1e-4 + prior)).astype(np.float32)
    np.testing.assert_array_equal(sif_weights(len(usable), 1e-4, None, usable), expected)


def test_vocab_sampling_distribution_is_unchanged_on_minilm():
    """The corpus-free source's distribution, as data/vocab.zipf_weights computed it before."""
    import re

    from transformers import AutoTokenizer

    from embres.models import UnknownModelError, resolve

    try:
        tok = AutoTokenizer.from_pretrained(str(resolve("all-MiniLM-L6-v2")))
    except UnknownModelError as e:
        pytest.skip(str(e))
    vocab_size = 30522
    allowed = np.ones(vocab_size, bool)  # the old computation, verbatim
    allowed[[i for i in tok.all_special_ids if i < vocab_size]] = False
    for token, i in tok.get_vocab().items():
        if i < vocab_size and re.match(r"^[\[<]unused\d+[\]>]$", token):
            allowed[i] = False
    ids = np.flatnonzero(allowed)
    old = np.zeros(vocab_size, np.float64)
    old[ids] = 1.0 / (np.arange(len(ids)) + 10.0)
    old = old / old.sum()
    new = tokenize.zipf_prior(tokenize.usable_token_mask(tok, vocab_size))
    np.testing.assert_array_equal(new, old)
    assert tokenize.special_template(tok) == ([101], [102])


def test_pca_signs_weights_and_errors():
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(300, 5)) * np.array([5, 3, 1, 0.1, 0.01]) + 7
    mean, comp = linalg.pca(rows, 3)
    assert mean.shape == (5,) and comp.shape == (5, 3) and comp.dtype == np.float64
    np.testing.assert_allclose(linalg.pca(rows.astype(np.float32), 3)[1], comp, atol=1e-6)
    np.testing.assert_allclose(comp.T @ comp, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(np.abs(comp[:3]), np.eye(3), atol=0.1)  # sampling noise
    assert (comp[np.abs(comp).argmax(0), range(3)] > 0).all()  # the sign convention
    _, flipped = linalg.pca(-rows, 3)  # the same axes, the same signs
    np.testing.assert_allclose(flipped, comp, atol=1e-9)
    # Against an SVD of the centred rows, up to sign.
    _, _, vt = np.linalg.svd(rows - rows.mean(0), full_matrices=False)
    np.testing.assert_allclose(np.abs(vt[:3].T), np.abs(comp), atol=1e-9)
    # Integer weights equal repeated rows.
    weights = rng.integers(0, 3, size=300)
    w_mean, w_comp = linalg.pca(rows, 2, weights)
    r_mean, r_comp = linalg.pca(np.repeat(rows, weights, axis=0), 2)
    np.testing.assert_allclose(w_mean, r_mean, atol=1e-10)
    np.testing.assert_allclose(w_comp, r_comp, atol=1e-8)
    with pytest.raises(ValueError, match="target_dim=6; expected 1..5"):
        linalg.pca(rows, 6)
    with pytest.raises(ValueError, match=r"weights has shape \(3,\)"):
        linalg.pca(rows, 2, np.ones(3))


# --- The teacher-target cache --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    from embres.testing import tiny_checkpoint

    return load_model(tiny_checkpoint("bert", tmp_path_factory.mktemp("teacher") / "m"))


def corpus(path, n):
    path.write_text("".join(f"the man plays guitar {'a ' * (i % 5)}{i}\n" for i in range(n)))
    return path


def test_teacher_vectors_match_the_extractor(tiny_teacher):
    from embres.extract import EmbeddingExtractor

    texts = ["the man plays guitar", "a cat", "", "guitar " * 30]
    rows = tokenize.encode(tiny_teacher.tokenizer, texts, 16)
    ids, mask = data.pad_batch(rows, 16, int(tiny_teacher.config.pad_token_id), len(rows))
    forward = jax.jit(lambda p, i, m: cached.teacher_sentence_vectors(tiny_teacher, p, i, m))
    got = np.asarray(forward(tiny_teacher.params, ids, mask))
    want = EmbeddingExtractor(tiny_teacher, max_length=16).extract_embeddings(texts)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_text_rows_stream_with_held_out_lines(tmp_path, tiny_teacher):
    path = tmp_path / "c.txt"
    path.write_text("\n  first  \n\nsecond\nthe man plays guitar\n\n a cat \n")
    held, rows = cached.text_rows(path, tiny_teacher.tokenizer, 4, heldout=2)
    assert held == ["first", "second"]
    rows = list(rows)
    want = tokenize.encode(tiny_teacher.tokenizer, ["the man plays guitar", "a cat"], 4)
    assert len(rows) == 2 and all(len(r) <= 4 for r in rows)
    for got, expected in zip(rows, want, strict=True):
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="no training lines after the 4 held-out"):
        cached.text_rows(path, tiny_teacher.tokenizer, 4, heldout=4)
    with pytest.raises(ValueError, match="fewer than config.data.heldout=5 lines"):
        cached.text_rows(path, tiny_teacher.tokenizer, 4, heldout=5)


def build(model, path, cache_dir, key=None, **kw):
    held, rows = cached.text_rows(path, model.tokenizer, 12, heldout=4)
    key = key or {"text": str(path), "max_length": 12}
    return cached.build_cache(
        model, rows, cache_dir, max_length=12, key=key, heldout_texts=held, progress=False, **kw
    )


def test_cache_files_and_chunks(tmp_path, tiny_teacher):
    path = corpus(tmp_path / "c.txt", 45)
    cache = build(tiny_teacher, path, tmp_path / "cache", chunk_rows=8)  # 41 rows: 6 chunks
    meta = json.loads((cache / "meta.json").read_text())
    assert meta == {
        "version": cached.CACHE_VERSION,
        "key": {"text": str(path), "max_length": 12},
        "count": 41,
        "max_length": 12,
    }
    ids, lengths = np.load(cache / "ids.npy"), np.load(cache / "lengths.npy")
    targets = np.load(cache / "targets.npy")
    assert ids.shape == (41, 12) and ids.dtype == np.int32 and lengths.dtype == np.int32
    assert targets.shape == (41, 32) and targets.dtype == np.float32
    assert json.loads((cache / "heldout.json").read_text())[0] == "the man plays guitar 0"
    pad = int(tiny_teacher.config.pad_token_id)
    assert (ids[np.arange(12)[None] >= lengths[:, None]] == pad).all()
    from embres.extract import EmbeddingExtractor

    texts = path.read_text().splitlines()[4:]
    want = EmbeddingExtractor(tiny_teacher, max_length=12).extract_embeddings(texts)
    np.testing.assert_allclose(targets, want, atol=1e-5)
    whole = build(tiny_teacher, path, tmp_path / "whole", chunk_rows=4096)  # one padded chunk
    np.testing.assert_allclose(np.load(whole / "targets.npy"), targets, atol=1e-6)
    source = cached.CachedSource(
        cache, batch_size=8, vocab_size=len(tiny_teacher.tokenizer), seed=0
    )
    assert source.key == meta["key"]
    flat = ids[np.arange(12)[None] < lengths[:, None]]
    expected = np.bincount(flat, minlength=source.vocab_size) + 1.0
    np.testing.assert_array_equal(source.token_weights(chunk_rows=7), expected)
    with pytest.raises(ValueError, match=r"row 0 has shape \(13,\); expected 1..12"):
        cached.build_cache(
            tiny_teacher, [np.arange(13)], tmp_path / "x", max_length=12, key={}, heldout_texts=[]
        )
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob("x.partial-*"))


def test_a_failed_rebuild_keeps_the_previous_cache(tmp_path, tiny_teacher):
    path = corpus(tmp_path / "c.txt", 45)
    cache = build(tiny_teacher, path, tmp_path / "cache", key={"v": 1})
    before = {name: (cache / name).read_bytes() for name in cached.FILES}

    def failing_rows():
        held, rows = cached.text_rows(path, tiny_teacher.tokenizer, 12, heldout=4)
        for i, row in enumerate(rows):
            if i == 20:  # after two chunks were embedded and written
                assert list(tmp_path.glob("*.partial-*"))  # built beside, not in place
                raise KeyboardInterrupt("killed mid-build")
            yield row

    with pytest.raises(KeyboardInterrupt):
        cached.build_cache(
            tiny_teacher, failing_rows(), cache, max_length=12, key={"v": 2},
            heldout_texts=[], chunk_rows=8, progress=False,
        )  # fmt: skip
    assert {name: (cache / name).read_bytes() for name in cached.FILES} == before
    assert cached.CachedSource(cache, batch_size=8, vocab_size=99, seed=0).key == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt", "cache"]
    # A first build that fails leaves no cache at all.
    with pytest.raises(KeyboardInterrupt):
        cached.build_cache(
            tiny_teacher, failing_rows(), tmp_path / "fresh", max_length=12, key={},
            heldout_texts=[], chunk_rows=8, progress=False,
        )  # fmt: skip
    assert not (tmp_path / "fresh").exists()
    with pytest.raises(FileNotFoundError, match="not a complete version-2 teacher-target cache"):
        cached.CachedSource(tmp_path / "fresh", batch_size=8, vocab_size=99, seed=0)
    # What a killed run (here: a pid that no longer exists) left beside the cache is cleared.
    import socket

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    stale = tmp_path / f"cache.partial-{socket.gethostname()}-{int(dead.stdout)}"
    (stale / "junk").mkdir(parents=True)
    build(tiny_teacher, path, cache, key={"v": 3})
    assert not stale.exists() and cached.CachedSource(
        cache, batch_size=8, vocab_size=99, seed=0
    ).key == {"v": 3}
    # A folder holding anything else is never replaced.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="holds files that are not a teacher-target cache"):
        build(tiny_teacher, path, tmp_path / "mine")


RSS_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from embres.data import cached
    from embres.models import load_model

    def status():  # kB: resident set now, its peak, and its anonymous (heap) part now
        fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
        return {k: int(fields[k].split()[0]) for k in ("VmRSS", "VmHWM", "RssAnon")}

    n, model_dir, work = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    model = load_model(model_dir)
    path = os.path.join(work, f"corpus{n}.txt")
    with open(path, "w") as f:
        for i in range(n):
            f.write(f"the man number {i} plays the guitar while a cat {i % 97} sleeps on it\\n")
    held, rows = cached.text_rows(path, model.tokenizer, 16, heldout=10)
    out = {"peak_kb": status()["VmHWM"], "warm_kb": 0, "warm_peak_kb": 0, "anon_kb": [], }

    def sampled(rows):  # after 10k rows (compiled, warm), restart the peak and sample
        for i, row in enumerate(rows):
            if i == 10_000:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                out["warm_kb"] = status()["VmRSS"]
            if i >= 10_000 and i % 256 == 0:
                out["anon_kb"].append(status()["RssAnon"])
            yield row

    cached.build_cache(model, sampled(rows), os.path.join(work, f"cache{n}"), max_length=16,
                       key={"n": n}, heldout_texts=held, chunk_rows=2048, progress=False)
    out["warm_peak_kb"] = status()["VmHWM"]
    print(json.dumps(out))
    """
)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_cache_build_memory_does_not_grow_with_the_corpus(tmp_path, tiny_models):
    """Building 200k lines holds no more memory than building 20k lines.

    Each build runs in its own process; measurement starts after 10k rows, once the teacher
    has compiled and run (the same cost for any corpus; whole-process peaks are printed
    too). Per build:

    - heap growth: the anonymous RSS (sampled every 256 rows) at the end minus at the start,
      each the median of 20 samples, so per-chunk transients do not count but anything kept
      does. Measured: 0.5-7 MiB for 20k and 200k lines alike, from run to run. Bound: the
      200k build may grow at most 6 MiB more than the 20k build, so keeping ~35 B per line
      over the 180k extra lines fails (the old build kept every line as a str of ~120 B,
      plus its ids; a control keeping each row's bytes, ~150 B, grew 26 MiB more).
    - peak growth: VmHWM restarted at the start, minus the RSS then; it also sees
      transients between samples, which vary by 2-15 MiB from run to run (threads, the
      allocator), not with length, so its bound is loose: 16 MiB.
    """
    model_dir = tiny_models("bert", hidden_size=32, num_layers=2)
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "",
        "TOKENIZERS_PARALLELISM": "false",
        "MALLOC_MMAP_THRESHOLD_": "65536",
        "MALLOC_TRIM_THRESHOLD_": "131072",
    }
    got = {}
    for n in (20_000, 200_000):
        done = subprocess.run(
            [sys.executable, "-c", RSS_SCRIPT, str(n), str(model_dir), str(tmp_path)],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        out = json.loads(done.stdout.strip().splitlines()[-1])
        anon = out.pop("anon_kb")
        level = [int(np.median(anon[:20])), int(np.median(anon[-20:]))]  # start, end
        got[n] = {**out, "heap_kb": level, "heap_growth_kb": level[1] - level[0]}
        got[n]["peak_growth_kb"] = out["warm_peak_kb"] - out["warm_kb"]
        assert np.load(tmp_path / f"cache{n}" / "ids.npy", mmap_mode="r").shape == (n - 10, 16)
    print(f"memory (kB): {got}")
    small, large = got[20_000], got[200_000]
    assert large["heap_growth_kb"] - small["heap_growth_kb"] < 6 * 1024, got
    assert large["peak_growth_kb"] - small["peak_growth_kb"] < 16 * 1024, got


# --- The sentences: cache, keyed by contents (it was keyed by file sizes) ----------------


def _stsb_row(a, b, score=3.0):
    return f"main-captions\tMSRvid\t2012test\t0001\t{score}\t{a}\t{b}"


def test_sentences_cache_follows_a_same_size_edit(tmp_path, monkeypatch):
    from embres.data import sentences

    data = tmp_path / "data"
    (data / "stsb").mkdir(parents=True)
    train = data / "stsb" / "sts-train.csv"
    train.write_text(_stsb_row("A cat sits.", "A dog runs.") + "\n")
    (data / "stsb" / "sts-dev.csv").write_text(_stsb_row("A man sings.", "A girl reads.") + "\n")
    monkeypatch.setenv("EMBRES_DATA_DIR", str(data))
    first = sentences.sentences_text_file(("stsb",), cache_root=str(tmp_path / "cache"))
    assert open(first).read().split("\n")[:2] == ["A cat sits.", "A dog runs."]
    train.write_text(_stsb_row("A bat sits.", "A dog runs.") + "\n")  # same size, new text
    second = sentences.sentences_text_file(("stsb",), cache_root=str(tmp_path / "cache"))
    assert open(second).read().split("\n")[:2] == ["A bat sits.", "A dog runs."]


def test_scored_stsb_tr_drops_rows_whose_english_original_is_held_out(tmp_path, monkeypatch):
    """``scored:stsb_tr``: STSb-TR train translates STS-B train row by row; a row is dropped
    when its own sentence or the English pair it translates holds an evaluation sentence."""
    from embres.data import sentences

    row = "main-captions\tMSRvid\t2012test\t{}\t{}\t{}\t{}\n"
    root = tmp_path / "data"
    (root / "stsb").mkdir(parents=True)
    (root / "stsb_tr").mkdir()
    (root / "stsb" / "sts-train.csv").write_text(
        row.format(1, 5.0, "A man plays.", "A man is playing.")
        + row.format(2, 2.5, "A cat sleeps.", "A dog barks.")
        + row.format(3, 0.0, "Rain falls.", "Snow melts.")
    )
    (root / "stsb" / "sts-dev.csv").write_text(row.format(9, 1, "a man PLAYS", "Dev only."))
    header = "genre\tdataset\tyear\tsid\tscore\tsentence1\tsentence2\n"
    (root / "stsb_tr" / "stsb_tr_train.tsv").write_text(
        header
        + row.format(1, 5.0, "Bir adam çalıyor.", "Bir adam çalmakta.")
        + row.format(2, 2.5, "Bir kedi uyuyor.", "Bir köpek havlıyor.")
        + row.format(3, 0.0, "Yağmur yağıyor.", "Kar eriyor.")
    )
    (root / "stsb_tr" / "stsb_tr_dev.tsv").write_text(header + row.format(9, 1, "Kar eriyor", "X."))
    monkeypatch.setenv("EMBRES_DATA_DIR", str(root))
    # row 1: its English original holds a dev sentence (up to case and the final period);
    # row 3: its own Turkish sentence is an STSb-TR dev sentence; row 2 is kept, scored 0.5
    assert sentences.scored_pairs(("stsb_tr",)) == [
        ("Bir kedi uyuyor.", "Bir köpek havlıyor.", 0.5)
    ]
