"""Language vocabularies: normalisers, train / extend / trim / add words, row transfer, CLI."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from tokenizers import normalizers as N

from embres import vocab
from embres.static_embedder import StaticEmbedder
from embres.vocab import transfer


def _lines(path, limit=None):
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines[:limit] if limit else lines


def _teacher_tokenizer():
    from transformers import AutoTokenizer

    from embres.models import resolve

    return AutoTokenizer.from_pretrained(str(resolve("all-MiniLM-L6-v2")))


@pytest.fixture(scope="module")
def teacher():
    return _teacher_tokenizer()


@pytest.fixture(scope="module")
def tr_text(data_dir):
    return _lines(data_dir / "text" / "tr.txt")


@pytest.fixture(scope="module")
def en_text(data_dir):
    return _lines(data_dir / "text" / "en.txt")


def test_turkish_normalizer_casing_letters_accents_and_apostrophes():
    norm = vocab.language_normalizer("tr")
    assert norm.normalize_str("IŞIK Irmak İstanbul") == "ışık ırmak istanbul"
    assert norm.normalize_str("ÇĞÖŞÜ çğıöşü") == "çğöşü çğıöşü"
    assert norm.normalize_str("café naïve âşık Zoë") == "cafe naive aşık zoe"
    assert norm.normalize_str("Türkiye'nin Ali’ye 'alıntı'") == "türkiyenin aliye 'alıntı'"
    assert norm.normalize_str("s\u0327u\u0308") == "şü"  # decomposed input is composed first
    assert norm.normalize_str("a\u0000b\tc") == "ab c"  # BERT clean text
    cased = vocab.language_normalizer("tr", lowercase=False)
    assert cased.normalize_str("IŞIK İzmir café") == "IŞIK İzmir cafe"
    # The normaliser serialises: a tokenizer.json round trip keeps its behaviour.
    tok = Tokenizer(models.WordPiece({"[UNK]": 0, "türkiye": 1, "##nin": 2, "ev": 3, "##in": 4}))
    tok.normalizer, tok.pre_tokenizer = norm, pre_tokenizers.BertPreTokenizer()
    again = Tokenizer.from_str(tok.to_str())
    assert again.encode("Türkiye'nin evin").tokens == ["türkiye", "##nin", "ev", "##in"]
    with pytest.raises(ValueError, match="lang='xx'"):
        vocab.language_normalizer("xx")


def test_bilingual_normalizer_is_the_teachers_except_on_turkish_letters():
    bilingual, bert = vocab.bilingual_normalizer("tr"), N.BertNormalizer(lowercase=True)
    kept = set("çğıöşüÇĞÖŞÜ")
    chars = [chr(c) for c in range(0x20, 0x30000) if not 0xD800 <= c < 0xE000]
    chars = [c for c in chars if c not in kept]
    for start in range(0, len(chars), 400):  # each character after a letter (marks combine)
        text = " x".join(chars[start : start + 400])
        assert bilingual.normalize_str(text) == bert.normalize_str(text), chars[start]
    assert bilingual.normalize_str("Don't İzmir café IŞIK") == "don't izmir cafe işik"


@pytest.fixture(scope="module")
def bilingual_vocabs(teacher, data_dir, tr_text, en_text):
    rows = _lines(data_dir / "parallel" / "en_tr_stsb_train.tsv")[1:]
    pairs = [row.split("\t") for row in rows]
    turkish = tr_text + [p[1] for p in pairs]
    english = en_text + [p[0] for p in pairs]
    out = {}
    for guard in ("seen", "letters"):
        out[guard] = vocab.extend_tokenizer(
            teacher, turkish, vocab_size=4000, english_texts=english, english_guard=guard
        )
    return out, english


def _sts_dev_sentences(data_dir):
    rows = [line.split("\t") for line in _lines(data_dir / "stsb" / "sts-dev.csv")]
    return [s for row in rows for s in row[5:7]]


def test_bilingual_vocab_gives_the_teachers_ids_on_sts_dev(teacher, bilingual_vocabs, data_dir):
    (tok, info) = bilingual_vocabs[0]["letters"]
    sentences = _sts_dev_sentences(data_dir)
    assert len(sentences) == 3000
    expected = teacher(sentences, add_special_tokens=True)["input_ids"]
    got = tok(sentences, add_special_tokens=True)["input_ids"]
    assert [i for i, (a, b) in enumerate(zip(expected, got, strict=True)) if a != b] == []
    assert info["teacher_size"] == len(teacher) and info["added"] > 1000
    assert len(tok) == info["vocab_size"] == info["teacher_size"] + info["added"]
    # Turkish text does use the appended tokens.
    turkish = tok(["Bir kadın soğanı doğruyor."], add_special_tokens=False)["input_ids"][0]
    assert max(turkish) >= info["teacher_size"]


def test_bilingual_seen_guard_keeps_every_seen_english_word(teacher, bilingual_vocabs, data_dir):
    vocabs, english = bilingual_vocabs
    (tok, info) = vocabs["seen"]
    assert info["dropped_english"] > 0
    assert info["added"] == info["candidates"] - info["dropped_english"]
    # Text with Turkish letters (en.txt has 13 such lines) cannot keep the teacher's ids.
    sample = [s for s in english[::3] if not set("çğıöşüÇĞÖŞÜ").intersection(s)]
    expected = teacher(sample, add_special_tokens=False)["input_ids"]
    assert tok(sample, add_special_tokens=False)["input_ids"] == expected
    sentences = _sts_dev_sentences(data_dir)  # unseen: near, not exactly, the teacher's
    got = tok(sentences)["input_ids"]
    changed = sum(a != b for a, b in zip(teacher(sentences)["input_ids"], got, strict=True))
    print(f"seen guard at 4k: {info}; STS-B dev sentences changed: {changed}/3000")
    assert changed < 0.02 * len(sentences)


def test_extend_refuses_a_non_wordpiece_teacher(tr_text):
    unigram = vocab.train_tokenizer(tr_text[:500], model="unigram", vocab_size=300)
    with pytest.raises(NotImplementedError, match="'Unigram'"):
        vocab.extend_tokenizer(unigram, tr_text[:10])


def test_turkish_wordpiece_fertility_at_16k(tr_text, tmp_path):
    tok = vocab.train_tokenizer(tr_text, model="wordpiece", vocab_size=16000)
    stats = vocab.fertility(tok, tr_text)
    print(f"Turkish WordPiece 16k on tr.txt: {stats}")
    assert stats["vocab_size"] == 16000 and stats["unk_rate"] < 1e-3
    assert stats["tokens_per_word"] <= 1.6
    assert tok.convert_ids_to_tokens([0, 1, 2, 3, 4]) == list(vocab.SPECIAL_TOKENS)
    batch = tok(["Ankara'da yağmur yağıyor.", "x"], truncation=True, max_length=4)
    assert batch["input_ids"][0][0] == tok.cls_token_id and len(batch["input_ids"][0]) == 4
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(str(tmp_path))
    text = tr_text[:50]
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert tok("a", "b")["input_ids"] == [
        2,
        tok.convert_tokens_to_ids("a"),
        3,
        tok.convert_tokens_to_ids("b"),
        3,
    ]


def test_fvt_rows_are_the_mean_of_the_teachers_pieces(teacher, tr_text):
    new = vocab.train_tokenizer(tr_text[:2000], vocab_size=1500)
    table = np.random.default_rng(0).normal(size=(len(teacher), 8)).astype(np.float32)
    rows, covered = transfer.fvt_rows(new, teacher, table)
    assert rows.shape == (len(new), 8) and covered.all()
    backend = teacher.backend_tokenizer
    # A letter no longer teacher token starts with: model.tokenize(c + s) is c, then the
    # continuation pieces of s, computed by the teacher's own WordPiece model.
    starts = [t for t in teacher.get_vocab() if not t.startswith("##")]
    anchor = next(c for c in "ωψχφ" if sum(t.startswith(c) for t in starts) == 1)
    old_vocab, strings = teacher.get_vocab(), transfer.token_strings(new)
    checked = 0
    for token, token_id in new.get_vocab().items():
        if token in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"):
            expected = table[old_vocab[token]]
        elif token in old_vocab:
            expected = table[old_vocab[token]]
        elif token.startswith("##"):
            surface = backend.normalizer.normalize_str(strings[token_id])
            ids = [t.id for t in backend.model.tokenize(anchor + surface)][1:]
            expected = table[ids].mean(0)
        else:
            ids = teacher(strings[token_id], add_special_tokens=False)["input_ids"]
            expected = table[ids].mean(0)
        np.testing.assert_allclose(rows[token_id], expected, atol=1e-6, err_msg=token)
        checked += 1
    assert checked == len(new)
    assert np.array_equal(rows[new.cls_token_id], table[teacher.cls_token_id])


def _check_trim(tokenizer, corpus, unseen, table):
    trimmed, kept_ids = vocab.trim_tokenizer(tokenizer, corpus)
    assert kept_ids.dtype == np.int64 and np.all(np.diff(kept_ids) > 0)
    assert len(trimmed) == len(kept_ids) < len(tokenizer)
    before = tokenizer(corpus, add_special_tokens=True)["input_ids"]
    after = trimmed(corpus, add_special_tokens=True)["input_ids"]
    assert [kept_ids[row].tolist() for row in after] == before
    old = StaticEmbedder(table, tokenizer, normalize=False).encode(corpus)
    new = StaticEmbedder(table[kept_ids], trimmed, normalize=False).encode(corpus)
    np.testing.assert_array_equal(new, old)
    # Single characters are kept: unseen text gets no more [UNK] than before.
    unk_before = sum(r.count(tokenizer.unk_token_id) for r in tokenizer(unseen)["input_ids"])
    unk_after = sum(r.count(trimmed.unk_token_id) for r in trimmed(unseen)["input_ids"])
    assert unk_after <= unk_before + 0
    return trimmed, kept_ids


def test_trim_wordpiece_keeps_the_corpus_ids(teacher, tr_text, en_text, tmp_path):
    corpus = tr_text[:1500] + en_text[:1500]
    table = np.random.default_rng(1).normal(size=(len(teacher), 4)).astype(np.float32)
    trimmed, kept_ids = _check_trim(teacher, corpus, tr_text[5000:5200], table)
    print(f"teacher trimmed to 3000 lines: {len(teacher)} -> {len(trimmed)} tokens")
    trimmed.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(str(tmp_path))
    assert again(corpus[:20])["input_ids"] == trimmed(corpus[:20])["input_ids"]
    assert kept_ids[again.cls_token_id] == teacher.cls_token_id


def test_trim_unigram_keeps_the_corpus_ids(tr_text):
    unigram = vocab.train_tokenizer(tr_text[:3000], model="unigram", vocab_size=3000)
    table = np.random.default_rng(2).normal(size=(len(unigram), 4)).astype(np.float32)
    trimmed, kept_ids = _check_trim(unigram, tr_text[3000:3300], tr_text[6000:6200], table)
    with pytest.raises(ValueError, match="'qqqzz'"):
        vocab.trim_tokenizer(unigram, tr_text[:5], keep=["qqqzz"])


def test_static_embedder_add_words(teacher, tr_text):
    table = np.random.default_rng(3).normal(size=(len(teacher), 6)).astype(np.float32)
    embedder = StaticEmbedder(table.copy(), teacher, normalize=False)
    others = ["the man plays guitar", "Bir adam gitar çalıyor.", tr_text[10]]
    before = embedder.encode(others)
    pieces = embedder.token_ids(["kedicik"])[0]
    assert len(pieces) > 1
    ids = embedder.add_words(["kedicik", "guitar"])
    assert ids.tolist() == [len(teacher), teacher.convert_tokens_to_ids("guitar")]
    assert embedder.token_ids(["kedicik", "Kedicik!"]) == [[len(teacher)], [len(teacher), 999]]
    np.testing.assert_allclose(embedder.encode(["kedicik"])[0], table[pieces].mean(0), atol=1e-6)
    np.testing.assert_array_equal(embedder.encode(others), before)
    np.testing.assert_array_equal(embedder.table[: len(teacher)], table)
    row = np.ones((1, 6), np.float32)
    assert embedder.add_words(["köpekçik"], rows=row).tolist() == [len(teacher) + 1]
    np.testing.assert_array_equal(embedder.encode(["köpekçik"]), row)
    with pytest.raises(ValueError, match="'new york'"):
        vocab.add_words(teacher, ["new york"])


def test_add_words_to_a_unigram(tr_text):
    unigram = vocab.train_tokenizer(tr_text[:1000], model="unigram", vocab_size=800)
    text = ["Bir kedicikler zıpladı."]
    assert len(unigram(["zıpladı"], add_special_tokens=False)["input_ids"][0]) > 1
    tok, ids = vocab.add_words(unigram, ["zıpladı"])
    assert ids.tolist() == [len(unigram)]
    assert tok(["Zıpladı"], add_special_tokens=False)["input_ids"] == [[len(unigram)]]
    assert tok(["kedicikler"])["input_ids"] == unigram(["kedicikler"])["input_ids"]
    assert len(tok(text)["input_ids"][0]) < len(unigram(text)["input_ids"][0])


def test_transfer_rules_and_errors(teacher, tr_text):
    new = vocab.train_tokenizer(tr_text[:500], vocab_size=400)
    table = np.random.default_rng(4).normal(size=(len(teacher), 5)).astype(np.float32)
    embed = lambda texts: np.full((len(texts), 5), float(len(texts)), np.float32)
    teacher_rows = transfer.transfer_rows("teacher", new, embed_fn=embed)
    assert teacher_rows.shape == (len(new), 5)
    pairs = [("one", "Bir"), ("a", "bir"), ("and", "ve"), ("cat", "kedi"), ("with", "##le")]
    rows = transfer.transfer_rows(
        "dictionary", new, old_tokenizer=teacher, old_table=table, pairs=pairs
    )
    fvt, _ = transfer.fvt_rows(new, teacher, table)
    dict_rows, has_row = transfer.dictionary_rows(
        new, pairs, lambda ws: table[teacher.convert_tokens_to_ids(ws)]
    )
    bir, ve = new.convert_tokens_to_ids(["bir", "ve"])
    assert np.flatnonzero(has_row).tolist() == sorted([bir, ve])  # not ##le: a continuation
    np.testing.assert_allclose(dict_rows[bir], table[[2028, 1037]].mean(0), atol=1e-6)
    np.testing.assert_allclose(rows[has_row], dict_rows[has_row], atol=1e-6)
    np.testing.assert_array_equal(rows[~has_row], fvt[~has_row])
    random = transfer.transfer_rows("random", new, old_tokenizer=teacher, old_table=table)
    assert np.array_equal(random[new.cls_token_id], table[teacher.cls_token_id])
    with pytest.raises(ValueError, match=r"rule='bogus'.*'fvt'"):
        transfer.transfer_rows("bogus", new)
    with pytest.raises(ValueError, match="needs old_tokenizer, old_table"):
        transfer.transfer_rows("fvt", new)
    with pytest.raises(ValueError, match="needs pairs"):
        transfer.transfer_rows("dictionary", new, old_tokenizer=teacher, old_table=table)
    assert vocab.table_bytes(30522, 384) == 30522 * 384 * 4
    assert vocab.table_bytes(10, 2, "int8") == 20


def test_cli_stats_train_and_errors(tmp_path, capsys, tr_text):
    from embres.vocab.__main__ import main

    text = tmp_path / "small.txt"
    text.write_text("\n".join(tr_text[:300]) + "\n", encoding="utf-8")
    out = tmp_path / "tok"
    args = ["--text", str(text), "--out", str(out), "--vocab-size", "500"]
    assert main(["train", *args]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "stats",
                "--tokenizer",
                str(out),
                "--tokenizer",
                "all-MiniLM-L6-v2",
                "--text",
                str(text),
                "--dim",
                "8",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("300 lines") and "tokens/word" in lines[1]
    row = dict(zip(["name", "vocab", "fert"], lines[2].split(), strict=False))
    from transformers import AutoTokenizer

    expected = vocab.fertility(AutoTokenizer.from_pretrained(str(out)), tr_text[:300])
    assert row["vocab"] == "500" and row["fert"] == f"{expected['tokens_per_word']:.3f}"
    assert lines[3].split()[:2] == ["all-MiniLM-L6-v2", "30522"]
    assert (
        main(["trim", "--tokenizer", str(out), "--text", str(text), "--out", str(tmp_path / "t")])
        == 0
    )
    assert np.load(tmp_path / "t" / "kept_ids.npy").dtype == np.int64
    assert main(["stats", "--tokenizer", "no-such-model", "--text", str(text)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'no-such-model'" in err[0]
    assert err[0].startswith("embres.vocab: error: ")
    with pytest.raises(SystemExit) as e:  # argparse's own mistakes: one line too
        main(["stats", "--tokenizer", str(out), "--text", str(text), "--dimm", "8"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--dimm" in err[0] and err[0].startswith("embres.vocab: error: ")
