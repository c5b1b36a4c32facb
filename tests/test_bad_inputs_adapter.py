"""Issue 13 at ModelAdapter's surface: a mistake is one clear message, and no user file is
lost, overwritten without a word, or left half written.

Covers: overrides refused by name before anything runs (item 2); a re-used save directory
holding one complete model (item 3); a transformer directory given to ``load`` (12c); export
files following the umask (15); corpora that are not UTF-8 (6); fit naming its workdir and
its export (20c). Tiny random models only: the whole file runs in seconds.
"""

import json
import os
import re
import shutil
import stat

import numpy as np
import pytest

from embres import ModelAdapter, train
from embres.cli import one_line
from embres.data import cached, text
from embres.data.pairs import PairsSource
from embres.data.text import TextSource
from embres.export import (
    FLOAT_FILE,
    INT8_FILE,
    META_FILE,
    export_static,
    export_transfer,
    load_student,
)
from embres.testing import tiny_tokenizer

TEXTS = ["the man plays guitar", "a cat", "bir kedi koşuyor"]
# A three-step run of the static student on a tiny teacher (as tests/test_static.py's).
TINY_RUN = {
    "total_steps": 3,
    "batch_size": 8,
    "data.max_length": 12,
    "data.heldout": 4,
    "optimizer.warmup_steps": 1,
    "checkpoint.every_steps": 3,
    "log_every_steps": 1,
    "evals": {},
    "eval.heldout_texts": 4,
}


@pytest.fixture(scope="module")
def tiny_bert(tiny_models):
    return tiny_models("bert")


@pytest.fixture(scope="module")
def adapter(tiny_bert):
    return ModelAdapter(source_model=str(tiny_bert), target_dim=8)


@pytest.fixture
def no_training(monkeypatch):
    """Replaces embres.train.train_and_evaluate; the list holds each config it was given."""
    calls = []
    monkeypatch.setattr(train, "train_and_evaluate", lambda config, workdir: calls.append(config))
    return calls


def _files(directory):
    """{relative path: bytes} of every file under ``directory``."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _good_corpus(path, lines=300):
    rng = np.random.default_rng(0)
    words = "the a man woman dog cat plays guitar piano runs on with".split()
    rows = [" ".join(rng.choice(words, size=rng.integers(2, 8))) for _ in range(lines)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


# --- Item 2: fit overrides are checked by name before anything is loaded, trained or written.


@pytest.mark.parametrize("key", ["data.sorce", "dta.source"])
def test_fit_refuses_a_typo_in_any_part_of_a_key(tiny_bert, tmp_path, no_training, key):
    corpus_adapter = ModelAdapter(str(tiny_bert), target_dim=8, corpus=TEXTS)
    workdir = tmp_path / "work"
    with pytest.raises(ValueError) as info:
        corpus_adapter.fit({key: "text:x.txt"}, workdir=workdir)
    message = one_line(info.value)
    assert f"unknown config key {key!r}" in message
    assert "did you mean" in message and "'data.source'" in message
    assert "nothing was trained" in message
    assert not no_training and not workdir.exists()  # not even corpus.txt was written


@pytest.mark.parametrize(
    "overrides, words",
    [
        ("data.source=text:x.txt", "got 'data.source=text:x.txt' (str)"),
        ([("total_steps", 3)], "(list)"),
        (5, "got 5 (int)"),
        ({3: "x"}, "keys [3] that are not strings"),
    ],
)
def test_fit_refuses_overrides_that_are_not_a_dict(
    adapter, tmp_path, no_training, overrides, words
):
    with pytest.raises(ValueError) as info:
        adapter.fit(overrides, workdir=tmp_path / "work")
    message = one_line(info.value)
    assert words in message and "nothing was trained" in message
    assert not no_training and not (tmp_path / "work").exists()


def test_fit_writes_the_corpus_texts_only_when_they_are_trained_on(
    tiny_bert, tmp_path, no_training
):
    corpus_adapter = ModelAdapter(str(tiny_bert), target_dim=8, corpus=TEXTS)
    other = _good_corpus(tmp_path / "other.txt")
    with pytest.raises(FileNotFoundError):  # training was replaced: no export to load back
        corpus_adapter.fit({"data.source": f"text:{other}"}, workdir=tmp_path / "w")
    assert no_training[0].data.source == f"text:{other}"
    assert not (tmp_path / "w" / "corpus.txt").exists()


# --- Item 3: a re-used directory holds one complete model, and a replacement is said.


def test_a_64d_int8_save_then_a_256d_save_leaves_no_old_int8_table(tmp_path, capsys):
    """The issue's scenario on export_static (what ModelAdapter.save calls), 64-d then 256-d."""
    tokenizer = tiny_tokenizer("bert")
    rng = np.random.default_rng(0)
    old = rng.normal(size=(len(tokenizer), 64)).astype(np.float32)
    new = rng.normal(size=(len(tokenizer), 256)).astype(np.float32)
    directory = tmp_path / "model"
    export_static(old, tokenizer, directory, int8=True)
    (directory / "NOTES.md").write_text("my notes")  # a user's file: never touched
    capsys.readouterr()
    export_static(new, tokenizer, directory)
    out = capsys.readouterr().out
    assert f"replacing the model in {directory}" in out
    assert f"removed {INT8_FILE} (not part of this save)" in out
    assert not (directory / INT8_FILE).exists()
    with pytest.raises(FileNotFoundError, match=f"{INT8_FILE} not found"):
        ModelAdapter.load(directory, int8=True)
    loaded = ModelAdapter.load(directory)
    assert loaded.target_dim == 256
    np.testing.assert_array_equal(loaded.table, new.astype(np.float16).astype(np.float32))
    assert (directory / "NOTES.md").read_text() == "my notes"
    assert not [p for p in directory.iterdir() if p.name.startswith(".embres-save")]


def test_a_save_never_removes_a_users_files_with_export_like_names(tmp_path):
    """Only names an export writes, and only after an earlier embres save, are removed."""
    tokenizer = tiny_tokenizer("bert")
    table = np.random.default_rng(0).normal(size=(len(tokenizer), 8)).astype(np.float32)
    user = tmp_path / "mine"
    (user / "adapter").mkdir(parents=True)
    (user / "adapter" / "notes.txt").write_text("mine")
    for name in ("generation_config.json", "merges.txt"):
        (user / name).write_text("mine")
    export_static(table, tokenizer, user)  # no earlier embres save here: nothing removed
    assert (user / "adapter" / "notes.txt").read_text() == "mine"
    for name in ("generation_config.json", "merges.txt"):
        assert (user / name).read_text() == "mine", name
    (user / "backup.safetensors").write_text("mine")
    export_static(table, tokenizer, user)  # now over an embres save: a user's weights stay
    assert (user / "backup.safetensors").read_text() == "mine"


def test_model_adapter_save_replaces_an_int8_save_with_a_wider_one(
    tiny_bert, adapter, tmp_path, capsys
):
    directory = tmp_path / "saved"
    adapter.save(directory, int8=True)
    wider = ModelAdapter(str(tiny_bert), target_dim=16)
    wider.save(directory)
    out = capsys.readouterr().out
    assert f"replacing the model in {directory}" in out and INT8_FILE in out
    with pytest.raises(FileNotFoundError, match="export with int8=True"):
        ModelAdapter.load(directory, int8=True)
    # model.safetensors holds float16 rows: the new model's vectors within float16 rounding
    np.testing.assert_allclose(
        ModelAdapter.load(directory).adapt(TEXTS), wider.adapt(TEXTS), rtol=0, atol=2e-3
    )


def test_a_save_into_an_empty_or_new_directory_says_nothing(adapter, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    adapter.save(tmp_path / "empty")
    adapter.save(tmp_path / "new" / "nested")
    assert "[embres.export]" not in capsys.readouterr().out


def test_a_failed_save_leaves_the_earlier_model_whole(adapter, tmp_path, monkeypatch):
    from embres import export

    directory = adapter.save(tmp_path / "model", int8=True)
    before = _files(directory)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export, "_save_tokenizer", broken)
    with pytest.raises(OSError, match="disk full"):
        adapter.save(directory)  # fails after the weights were written
    assert _files(directory) == before
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        {name.split("/")[0] for name in before}
    )
    with pytest.raises(OSError, match="disk full"):
        adapter.save(tmp_path / "fresh" / "nested")
    assert not (tmp_path / "fresh").exists()  # the folders the failed save created are gone


def test_a_save_onto_a_file_is_refused(adapter, tmp_path):
    target = tmp_path / "model"
    target.write_text("not a folder")
    with pytest.raises(ValueError, match=f"{target} is a file; expected a directory"):
        adapter.save(target)
    assert target.read_text() == "not a folder"


def test_transformer_and_static_exports_replace_each_other_cleanly(
    tiny_bert, adapter, tmp_path, capsys
):
    """A transfer export over a static one (and back) leaves none of the other's files."""
    from embres.models import load_model

    teacher = load_model(tiny_bert)
    directory = adapter.save(tmp_path / "model")
    (directory / "keep.txt").write_text("mine")
    export_transfer(teacher, {"vocabulary": "test"}, directory)
    out = capsys.readouterr().out
    assert (
        f"replacing the model in {directory}" in out and f"removed 1_Normalize, {META_FILE}" in out
    )
    assert not (directory / META_FILE).exists() and not (directory / "1_Normalize").exists()
    assert load_model(directory).config.vocab_size == teacher.config.vocab_size
    adapter.save(directory)
    out = capsys.readouterr().out
    assert "embres_transfer.json" in out and "1_Pooling" in out
    for name in ("embres_transfer.json", "1_Pooling", "sentence_bert_config.json"):
        assert not (directory / name).exists()
    np.testing.assert_allclose(  # float16 rows on disk
        ModelAdapter.load(directory).adapt(TEXTS), adapter.adapt(TEXTS), rtol=0, atol=2e-3
    )
    assert (directory / "keep.txt").read_text() == "mine"


def test_a_save_over_a_model_embres_did_not_write_is_refused(tiny_bert, adapter, tmp_path):
    users = shutil.copytree(tiny_bert, tmp_path / "users_model")
    before = _files(users)
    with pytest.raises(ValueError) as info:
        adapter.save(users)
    message = one_line(info.value)
    assert f"{users} holds a model embres did not write (model.safetensors" in message
    assert "refusing to replace it" in message
    assert _files(users) == before


def test_an_export_over_the_teachers_own_directory_is_refused(tiny_bert, tmp_path):
    from embres.models import load_model

    copy = shutil.copytree(tiny_bert, tmp_path / "teacher")
    before = _files(copy)
    with pytest.raises(ValueError, match="is the directory the teacher .* is read from"):
        export_transfer(load_model(copy), {}, copy)
    assert _files(copy) == before


# --- Item 12c: a transformer directory given to ModelAdapter.load.


def test_load_of_a_transformer_directory_says_what_it_is_and_what_to_do(tiny_bert):
    with pytest.raises(ValueError) as info:
        ModelAdapter.load(tiny_bert)
    message = one_line(info.value)
    assert str(tiny_bert) in message
    assert "transformer checkpoint (model_type 'bert'), not a static embres export" in message
    assert f"ModelAdapter({str(tiny_bert)!r}, target_dim=...)" in message
    assert f"EmbeddingExtractor({str(tiny_bert)!r})" in message


def test_load_of_a_bundled_teacher_name_says_what_it_is():
    with pytest.raises(
        ValueError,
        match=r"all-MiniLM-L6-v2 cannot be loaded as a static model: "
        r"it is a transformer checkpoint .*ModelAdapter\('all-MiniLM-L6-v2'",
    ):
        ModelAdapter.load("all-MiniLM-L6-v2")


def test_load_of_a_transformer_with_a_stray_static_meta_file_names_the_weights(tiny_bert, tmp_path):
    """Before: KeyError: 'embeddings' (an embres_static.json next to a transformer's weights)."""
    directory = shutil.copytree(tiny_bert, tmp_path / "mixed")
    (directory / META_FILE).write_text('{"dim": 32}')
    with pytest.raises(ValueError) as info:
        load_student(directory)
    message = one_line(info.value)
    assert f"{directory / FLOAT_FILE} holds tensors" in message
    assert "not a static table (embeddings)" in message and "transformer checkpoint" in message


def test_load_of_a_folder_with_no_model_still_lists_the_files_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"is not an embres export: expected {META_FILE}"):
        ModelAdapter.load(tmp_path)


# --- Item 15: exported files follow the user's umask (safetensors alone wrote 0600).


@pytest.mark.parametrize(
    "mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)]
)
def test_every_exported_file_follows_the_umask(
    tiny_bert, adapter, tmp_path, mask, file_mode, dir_mode
):
    from embres.models import load_model

    old = os.umask(mask)
    try:
        static = export_static(
            adapter.table,
            adapter.tokenizer,
            tmp_path / "static",
            int8=True,
            adapter_params={"w": np.ones((2, 2), np.float32)},
        )
        transfer = export_transfer(load_model(tiny_bert), {}, tmp_path / "transfer")
    finally:
        os.umask(old)
    for directory in (static, transfer):
        modes = {
            str(p.relative_to(directory)): stat.S_IMODE(p.stat().st_mode)
            for p in directory.rglob("*")
        }
        assert any(name.endswith(".safetensors") for name in modes)
        wanted = {name: dir_mode if (directory / name).is_dir() else file_mode for name in modes}
        assert modes == wanted


# --- Item 6: corpora that are not UTF-8.


@pytest.fixture
def garbage(tmp_path):
    path = tmp_path / "garbage.txt"
    path.write_bytes(np.random.default_rng(13).bytes(200_000))
    return path


def _refusal(path):
    return rf"{re.escape(str(path))}: \d[\d,]* of [\d,]+ lines \(\d+\.\d%\) are not valid UTF-8 .*more than the 1%"


def test_random_bytes_are_refused_by_every_reader(garbage):
    tok = tiny_tokenizer("bert")
    common = dict(vocab_size=len(tok), pad_id=0, batch_size=4, max_length=10)
    with pytest.raises(ValueError, match=_refusal(garbage)):
        TextSource(str(garbage), tok, **common)
    with pytest.raises(ValueError, match=_refusal(garbage)):
        PairsSource(str(garbage), tok, **common)
    with pytest.raises(ValueError, match=_refusal(garbage)):
        cached.text_rows(garbage, tok, 10, 0)


def test_fit_on_random_bytes_is_refused_and_exports_nothing(adapter, garbage, tmp_path):
    workdir = tmp_path / "work"
    with pytest.raises(ValueError, match=_refusal(garbage)):
        adapter.fit({**TINY_RUN, "data.source": f"text:{garbage}"}, workdir=workdir)
    assert not (workdir / "export").exists()


def test_one_bad_line_in_a_real_corpus_warns_and_is_read(tmp_path):
    path = _good_corpus(tmp_path / "corpus.txt")
    lines = path.read_bytes().split(b"\n")
    lines.insert(41, b"caf\xe9 latin-1")  # line 42 of 301
    path.write_bytes(b"\n".join(lines))
    tok = tiny_tokenizer("bert")
    with pytest.warns(
        UnicodeWarning, match=rf"{re.escape(str(path))}: 1 of 301 lines .*the first is line 42"
    ):
        source = TextSource(
            str(path), tok, vocab_size=len(tok), pad_id=0, batch_size=4, max_length=10
        )
    assert source.next_batch()["ids"].shape == (4, 10)
    source._file.close()
    with pytest.warns(UnicodeWarning, match="1 of 301 lines"):
        held, rows = cached.text_rows(path, tok, 10, 2)
    assert len(held) == 2 and sum(1 for _ in rows) == 299  # 301 lines, 2 held out


def test_a_bad_row_in_a_pairs_file_warns(tmp_path):
    path = tmp_path / "pairs.tsv"
    rows = [b"en\ttr"] + [b"the man\tadam"] * 200 + [b"caf\xe9\tkahve"]
    path.write_bytes(b"\n".join(rows) + b"\n")
    tok = tiny_tokenizer("bert")
    with pytest.warns(
        UnicodeWarning, match=rf"{re.escape(str(path))}: 1 of 202 lines .*line 202\)"
    ):
        source = PairsSource(
            str(path), tok, vocab_size=len(tok), pad_id=0, batch_size=4, max_length=10
        )
    assert source.next_batch()["ids"].shape == (4, 10)
    source._file.close()


def test_the_block_scan_counts_what_a_line_by_line_decode_counts(tmp_path, monkeypatch):
    """Blocks cut anywhere (here every 7 bytes) give the per-line count: a multi-byte
    character split by a block edge is not a bad line, a bad byte is."""
    rng = np.random.default_rng(5)
    pieces = ["kedi köpek çalıyor", "ğüşıöç", "", "plain", "日本語のテキスト"]
    lines = [pieces[i].encode() for i in rng.integers(0, len(pieces), size=200)]
    for i in (3, 77, 150):
        lines[i] = lines[i] + b"\xff"
    path = tmp_path / "mixed.txt"
    path.write_bytes(b"\n".join(lines))  # no newline after the last line
    monkeypatch.setattr(text, "_SCAN_BLOCK", 7)
    scan = text.scan_utf8(path)
    assert (scan.lines, scan.bad, scan.first_bad) == (200, 3, 4)


# --- Item 20c: fit says where its workdir is, that re-running resumes, and where the export is.


def test_fit_names_its_workdir_at_the_start_and_its_export_at_the_end(tiny_bert, tmp_path, capsys):
    corpus = _good_corpus(tmp_path / "corpus.txt")
    workdir = tmp_path / "work"
    run = {**TINY_RUN, "data.source": f"text:{corpus}"}
    student = ModelAdapter(str(tiny_bert), target_dim=8)
    student.fit(run, workdir=workdir)
    lines = [line for line in capsys.readouterr().out.splitlines() if "[embres.fit]" in line]
    assert len(lines) == 2
    assert f"in workdir {workdir.absolute()}" in lines[0]
    assert "re-running this fit() with the same workdir resumes from the last one" in lines[0]
    assert "an ETA" in lines[0] and "resuming" not in lines[0]
    assert (
        "done in" in lines[1]
        and f"the trained model is in {workdir.absolute() / 'export'}" in lines[1]
    )
    student.fit(run, workdir=workdir)  # the final step is there: evaluates and exports only
    out = capsys.readouterr().out
    assert f"in workdir {workdir.absolute()}, resuming from its last checkpoint" in out


# --- Issue 23: fit writes its corpus under the workdir's lock, and keeps a checkpoint's corpus.


def test_fit_on_a_busy_workdir_leaves_the_running_runs_corpus(tiny_bert, tmp_path):
    from embres.locking import FileLock, LockedError

    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "corpus.txt").write_text("the running run's corpus\n")
    student = ModelAdapter(str(tiny_bert), target_dim=8, corpus=TEXTS)
    with FileLock(workdir / ".lock", "workdir (held by the test)"):
        with pytest.raises(LockedError, match="is in use by pid"):
            student.fit(TINY_RUN, workdir=workdir)
    assert (workdir / "corpus.txt").read_text() == "the running run's corpus\n"


def _fake_checkpoint(workdir, step=3):
    """A checkpoint's meta as embres.checkpointing.newest_meta reads it."""
    meta = workdir / "checkpoints" / str(step) / "meta"
    meta.mkdir(parents=True)
    source = f"text:{workdir / 'corpus.txt'}"
    (meta / "metadata").write_text(json.dumps({"config": {"data": {"source": source}}}))


def test_a_resume_on_other_texts_is_refused_naming_both(tiny_bert, tmp_path, no_training):
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "corpus.txt").write_text("the man plays guitar\na cat\n")
    _fake_checkpoint(workdir)
    student = ModelAdapter(str(tiny_bert), target_dim=8, corpus=["a dog", "a bird", "a fish"])
    with pytest.raises(
        ValueError,
        match=r"checkpoint \(step 3\) trained on .*corpus.txt "
        r"\(sha256 \w{12}, 2 lines\).*texts differ \(sha256 \w{12}, 3 lines\)",
    ):
        student.fit(TINY_RUN, workdir=workdir)
    assert not no_training
    assert (workdir / "corpus.txt").read_text() == "the man plays guitar\na cat\n"
    same = ModelAdapter(str(tiny_bert), target_dim=8, corpus=["the man plays guitar", "a cat"])
    with pytest.raises(FileNotFoundError):  # the same texts resume (training replaced here)
        same.fit(TINY_RUN, workdir=workdir)
    assert len(no_training) == 1
