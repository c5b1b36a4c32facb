"""Issue 13 at the extraction surface: each mistake gives one clear error, and no file is lost.

Every test asserts the message (key words, the file or the text's index) and the state left
behind: the user's earlier output intact, no ``.partial`` or lock file, no half-written file.
"""

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from embres import EmbeddingExtractor, cli, extract, tokenize
from embres.locking import LockedError
from embres.models import load_model, resolve
from embres.models.hf import UnreadableFileError

REPO = Path(__file__).resolve().parents[1]
TEXTS_A = [f"the man plays guitar {'and the dog runs ' * (i % 3)}".strip() for i in range(12)]
TEXTS_B = ["a cat", "bir kedi", "the woman is playing piano", "a dog"]


@pytest.fixture(scope="module")
def tiny_bert(tiny_models):
    return tiny_models("bert")


@pytest.fixture(scope="module")
def ex(tiny_bert):
    return EmbeddingExtractor(tiny_bert, batch_size=4)


def _subprocess_env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _leftovers(folder: Path) -> list[str]:
    """Partial and lock files in ``folder``: none may stay after a call, successful or not."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".partial", ".lock")))


def _old_output(out: Path) -> np.ndarray:
    """A finished earlier result at ``out`` (with its sidecar) that a failed call must keep."""
    old = np.full((3, 32), 7.0, np.float32)
    np.save(out, old)
    Path(f"{out}.json").write_text('{"count": 3}')
    return old


# --- item 4: two writers of one path -------------------------------------------------------

WRITER = """
import sys, time
from pathlib import Path
from embres import EmbeddingExtractor

model, out, ready, go = sys.argv[1:5]
texts = {texts!r}

def paused():
    for i, text in enumerate(texts):
        if i == 4:  # the first chunk is written, the lock is held: wait for the test
            Path(ready).touch()
            deadline = time.monotonic() + 300
            while not Path(go).exists():
                assert time.monotonic() < deadline, "the test never said go"
                time.sleep(0.02)
        yield text

EmbeddingExtractor(model, batch_size=4).extract_to(out, paused(), chunk_size=4, progress=False)
print("written")
"""


def _start_paused_writer(tmp_path, model, out):
    """A real second process running ``extract_to(out, TEXTS_A)``, paused after one chunk.

    Returns ``(process, go_file)``: the writer holds the lock until ``go_file`` exists.
    """
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(texts=TEXTS_A))
    ready, go = tmp_path / "ready", tmp_path / "go"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(model), str(out), str(ready), str(go)],
        env=_subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300  # a wait for a signal, not a timing assertion
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the writer did not pause: {proc.communicate()}")
        time.sleep(0.05)
    return proc, go


def test_second_writer_is_refused_naming_the_first_and_the_first_keeps_its_vectors(
    tmp_path, tiny_bert, ex
):
    out = tmp_path / "out.npy"
    old = _old_output(out)
    proc, go = _start_paused_writer(tmp_path, tiny_bert, out)
    try:
        in_flight = _leftovers(tmp_path)  # the writer's own partial file, and its lock
        assert in_flight[-1] == "out.npy.lock" and len(in_flight) == 2
        assert in_flight[0].startswith(f"out.npy.{proc.pid}.")
        with pytest.raises(LockedError) as refused:
            ex.extract_to(out, TEXTS_B, progress=False)
        message = str(refused.value)
        assert f"output {out} is in use by pid {proc.pid} on host" in message
        assert "out.npy.lock" in message and "wait for it to finish" in message
        # The refused call touched nothing: the old result, the writer's partial file.
        np.testing.assert_array_equal(np.load(out), old)
        assert _leftovers(tmp_path) == in_flight
    finally:
        go.touch()
        stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "written" in stdout, stderr
    # The writer's file holds its own vectors, whole.
    np.testing.assert_allclose(np.load(out), ex.extract_embeddings(TEXTS_A), atol=1e-5)
    assert json.loads(Path(f"{out}.json").read_text())["count"] == len(TEXTS_A)
    assert _leftovers(tmp_path) == []
    # Once it is done, the next call writes (serially) and gets its own vectors.
    ex.extract_to(out, TEXTS_B, progress=False)
    np.testing.assert_allclose(np.load(out), ex.extract_embeddings(TEXTS_B), atol=1e-5)
    assert json.loads(Path(f"{out}.json").read_text())["count"] == len(TEXTS_B)
    assert _leftovers(tmp_path) == []


DEAD_WRITER = """
import os, secrets, sys, time
from pathlib import Path
from embres.locking import FileLock

out, ready = Path(sys.argv[1]), Path(sys.argv[2])
FileLock(f"{out}.lock", what="output").acquire()
partial = out.with_name(f"{out.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
partial.write_bytes(b"half of a file")
ready.touch()
time.sleep(600)
"""


def test_a_killed_writer_blocks_nobody_and_its_partial_file_is_removed(tmp_path, ex, caplog):
    # A light stand-in for a writer (no jax): the lock and a partial file named as
    # extract_to names it (the name is checked against the real writer above).
    out, ready = tmp_path / "out.npy", tmp_path / "ready"
    old = _old_output(out)
    script = tmp_path / "dead_writer.py"
    script.write_text(DEAD_WRITER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(out), str(ready)], env=_subprocess_env()
    )
    deadline = time.monotonic() + 120
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(LockedError, match=f"in use by pid {proc.pid} "):
        ex.extract_to(out, TEXTS_B, progress=False)
    proc.kill()  # SIGKILL: no finally runs, the partial file stays
    proc.wait(timeout=60)
    stale = [name for name in _leftovers(tmp_path) if name.endswith(".partial")]
    assert len(stale) == 1 and stale[0].startswith(f"out.npy.{proc.pid}.")
    np.testing.assert_array_equal(np.load(out), old)  # the dead writer never replaced it
    with caplog.at_level(logging.WARNING, logger="embres.extract"):
        ex.extract_to(out, TEXTS_B, progress=False)
    assert f"took over the lock left by pid {proc.pid} on host" in caplog.text
    assert f"removing {tmp_path / stale[0]}, left by an extract_to that did not finish" in (
        caplog.text
    )
    np.testing.assert_allclose(np.load(out), ex.extract_embeddings(TEXTS_B), atol=1e-5)
    assert _leftovers(tmp_path) == []


def test_a_second_call_in_the_same_process_is_refused_too(tmp_path, ex):
    out = tmp_path / "out.npy"
    refusals = []

    def texts():
        yield from TEXTS_B[:2]
        with pytest.raises(LockedError, match=f"in use by pid {os.getpid()}") as e:
            ex.extract_to(out, TEXTS_A, progress=False)
        refusals.append(e.value)
        yield from TEXTS_B[2:]

    ex.extract_to(out, texts(), chunk_size=2, progress=False)
    assert len(refusals) == 1
    np.testing.assert_allclose(np.load(out), ex.extract_embeddings(TEXTS_B), atol=1e-5)
    assert _leftovers(tmp_path) == []


def test_extract_to_refuses_a_single_string_and_a_missing_folder(tmp_path, ex):
    with pytest.raises(TypeError, match="not a single string"):
        ex.extract_to(tmp_path / "out.npy", "one text", progress=False)
    missing = tmp_path / "no" / "such"
    with pytest.raises(FileNotFoundError, match=f"folder {missing} does not exist"):
        ex.extract_to(missing / "out.npy", TEXTS_B, progress=False)
    assert not (tmp_path / "no").exists() and list(tmp_path.iterdir()) == []


# --- item 10 (and 13 mid-stream): an error leaves nothing half-written ---------------------


def _stream(bad_at: int, bad):
    for i, text in enumerate(TEXTS_A):
        if i == bad_at:
            if isinstance(bad, BaseException):
                raise bad
            yield bad
        yield text


@pytest.mark.parametrize("had_output", [False, True], ids=["fresh", "over-old-output"])
@pytest.mark.parametrize(
    "bad_at,bad,error,message",
    [
        (6, 3, TypeError, r"^texts\[6\] is int \(3\); expected str$"),
        (5, "the man\ud800", ValueError, r"^texts\[5\] holds a lone surrogate U\+D800 at char"),
        (5, KeyboardInterrupt(), KeyboardInterrupt, None),
        (9, OSError("the corpus file went away"), OSError, "the corpus file went away"),
    ],
    ids=["int", "surrogate", "ctrl-c", "reader-error"],
)
def test_an_error_mid_stream_leaves_no_partial_file(
    tmp_path, ex, had_output, bad_at, bad, error, message
):
    out = tmp_path / "out.npy"
    old = _old_output(out) if had_output else None
    with pytest.raises(error, match=message):
        ex.extract_to(out, _stream(bad_at, bad), chunk_size=4, progress=False)
    assert _leftovers(tmp_path) == []
    if had_output:  # the earlier result and its sidecar are untouched
        np.testing.assert_array_equal(np.load(out), old)
        assert json.loads(Path(f"{out}.json").read_text()) == {"count": 3}
    else:  # no file at all, rather than a short one
        assert list(tmp_path.iterdir()) == []


# --- item 12a: broken model files are named -----------------------------------------------


def _broken_copy(tmp_path, source, name, content: bytes | None = None, cut=None) -> Path:
    """A copy of the model folder ``source`` with file ``name`` replaced or truncated."""
    folder = shutil.copytree(source, tmp_path / "model")
    target = folder / name
    data = target.read_bytes()
    target.write_bytes(content if content is not None else data[: cut(len(data))])
    return target


@pytest.mark.parametrize(
    "content,cut,why",
    [
        (
            None,
            lambda n: n // 2,
            r"tensors end at byte [\d,]+ but the file has [\d,]+ bytes: truncated",
        ),
        (None, lambda n: 100, r"announce a [\d,]+-byte header but only 92 bytes follow: truncated"),
        (os.urandom(4096), None, "no safetensors header length: not a safetensors file"),
        (b"", None, "0 bytes long, too short for a safetensors header"),
        (
            b"\x10" + b"\x00" * 7 + b"not json at all!",
            None,
            "header is not JSON: not a safetensors",
        ),
    ],
    ids=["half", "100-bytes", "random", "empty", "not-json-header"],
)
def test_a_broken_safetensors_file_is_named_with_what_is_wrong(
    tmp_path, tiny_bert, content, cut, why
):
    target = _broken_copy(tmp_path, tiny_bert, "model.safetensors", content, cut)
    with pytest.raises(UnreadableFileError, match=why) as e:
        load_model(target.parent)
    assert isinstance(e.value, ValueError)  # so every CLI reports it in one line
    assert str(e.value).startswith(f"{target} is not a readable safetensors file: ")


def test_a_truncated_shard_is_named(tmp_path, tiny_models):
    sharded = tiny_models("bert", max_shard_size="20KB")
    index = json.loads((sharded / "model.safetensors.index.json").read_text())["weight_map"]
    shard = index["embeddings.word_embeddings.weight"]  # a shard the model reads
    target = _broken_copy(tmp_path, sharded, shard, cut=lambda n: n - 10)
    with pytest.raises(UnreadableFileError, match="truncated") as e:
        load_model(target.parent)
    assert str(e.value).startswith(f"{target} is not a readable safetensors file")


@pytest.mark.parametrize(
    "content,message",
    [
        (
            b'{"model_type": "bert",\n "hidden_size": 32,,}',
            r"is not valid JSON: Expecting property name enclosed in double quotes at line 2, column 20 \(char 42\)$",
        ),
        (b"", r"is empty; expected JSON"),
        (b"\x89PNG\r\n\x1a\n", r"is not a JSON file: byte 0x89 at offset 0 is not UTF-8 text"),
        (b'["bert"]', r"holds a JSON list; expected a JSON object$"),
    ],
    ids=["syntax", "empty", "binary", "list"],
)
def test_a_broken_config_json_is_named_with_the_error_position(
    tmp_path, tiny_bert, content, message
):
    target = _broken_copy(tmp_path, tiny_bert, "config.json", content)
    with pytest.raises(UnreadableFileError, match=message) as e:
        load_model(target.parent)
    assert str(e.value).startswith(f"{target} ")


def test_a_broken_tokenizer_json_and_a_config_without_a_field_are_named(tmp_path, tiny_bert):
    target = _broken_copy(tmp_path / "tok", tiny_bert, "tokenizer.json", b"{not json")
    with pytest.raises(
        UnreadableFileError, match="is not valid JSON: Expecting property name"
    ) as e:
        load_model(target.parent)
    assert str(e.value).startswith(f"{target} ")
    config = json.loads((tiny_bert / "config.json").read_text())
    del config["hidden_size"]
    target = _broken_copy(tmp_path / "cfg", tiny_bert, "config.json", json.dumps(config).encode())
    with pytest.raises(UnreadableFileError) as e:
        load_model(target.parent)
    assert str(e.value) == f"{target} lacks the field 'hidden_size' that a bert model needs"


def test_a_broken_model_file_is_one_line_from_a_cli(tmp_path, tiny_bert, capsys):
    from embres.__main__ import PROG, main

    target = _broken_copy(tmp_path, tiny_bert, "model.safetensors", cut=lambda n: n // 2)
    argv = ["--model", str(target.parent)]
    assert cli.run(lambda: main(argv), prog=PROG, argv=argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{PROG}: error: {target} is not a readable")


# --- item 13: invalid Unicode names its text ----------------------------------------------


def test_a_lone_surrogate_names_the_text_and_the_character(ex):
    texts = ["a", "the man", "", "the man\ud800 plays"]
    with pytest.raises(
        ValueError, match=r"^texts\[3\] holds a lone surrogate U\+D800 at character 7 "
    ):
        ex.extract_embeddings(texts)
    escaped = b"caf\xe9 au lait".decode("utf-8", "surrogateescape")  # Latin-1 read as UTF-8
    with pytest.raises(
        ValueError,
        match=r"texts\[1\] .* U\+DCE9 at character 3 \(the byte 0xE9 of input that is not UTF-8",
    ):
        ex.extract_embeddings(["fine", escaped])
    # Valid text outside the BMP is not mistaken for a surrogate.
    assert np.isfinite(ex.extract_embeddings(["a dog 😀", "\U0001f600"])).all()


@pytest.mark.parametrize("family", ["bert", "xlmr", "gpt2"])
def test_every_tokenizer_family_names_the_surrogate(family):
    from embres.testing import tiny_tokenizer

    with pytest.raises(
        ValueError, match=r"^texts\[102\] holds a lone surrogate U\+DFFF at character 0"
    ):
        tokenize.encode(tiny_tokenizer(family), ["ok", "\udfff"], 16, first_index=101)


# --- item 19: progress of a long extraction is logged -------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_lines_are_throttled_and_give_an_eta(caplog):
    clock = FakeClock()
    with caplog.at_level(logging.INFO, logger="embres.extract"):
        with extract._Progress(50_000, "extract_embeddings", bar=False, clock=clock) as p:
            for t, done in [
                (1, 1024),
                (4.9, 4096),
                (5, 6144),
                (9, 8192),
                (41, 12_288),
                (44, 14_000),
            ]:
                clock.now = t
                p.update(done - p.done)
            clock.now = 150
            p.update(50_000 - p.done)
    assert caplog.messages == [
        "extract_embeddings: embedded 6,144/50,000 texts (12%), 5 s, ETA 36 s",
        "extract_embeddings: embedded 12,288/50,000 texts (24%), 41 s, ETA 2 min",
        "extract_embeddings: embedded 50,000/50,000 texts (100%), 2 min, ETA 0 s",
        "extract_embeddings: done, 50,000 texts in 2 min",
    ]


def test_extract_embeddings_logs_progress_when_no_bar_is_shown(ex, caplog, monkeypatch):
    monkeypatch.setattr(extract, "PROGRESS_LOG_INTERVAL", 0)  # a line per batch
    with caplog.at_level(logging.INFO, logger="embres.extract"):
        ex.extract_embeddings(TEXTS_A[:10])
    counts = [m.split("embedded ")[1].split(" texts")[0] for m in caplog.messages[:-1]]
    assert counts == ["4/10", "8/10", "10/10"]  # batches of 4, 4 and 2
    assert "(100%)" in caplog.messages[-2] and "ETA 0 s" in caplog.messages[-2]
    assert caplog.messages[-1].startswith("extract_embeddings: done, 10 texts in ")


def test_extract_to_logs_the_whole_streams_count_across_chunks(tmp_path, ex, caplog, monkeypatch):
    monkeypatch.setattr(extract, "PROGRESS_LOG_INTERVAL", 0)
    with caplog.at_level(logging.INFO, logger="embres.extract"):
        ex.extract_to(tmp_path / "out.npy", iter(TEXTS_A[:10]), chunk_size=4, progress=False)
    # A stream of unknown length: counts without a percentage or an ETA.
    assert [m.split(", ")[0] for m in caplog.messages[:-1]] == [
        f"extract_to out.npy: embedded {n} texts" for n in (4, 8, 10)
    ]
    assert caplog.messages[-1].startswith("extract_to out.npy: done, 10 texts in ")


def test_a_short_call_logs_nothing(ex, caplog):
    with caplog.at_level(logging.INFO, logger="embres.extract"):
        clock = FakeClock()
        with extract._Progress(10, "x", bar=False, clock=clock) as p:
            clock.now = extract.PROGRESS_LOG_INTERVAL - 0.1
            p.update(10)
    assert caplog.messages == []


# --- item 11: python -m embres ------------------------------------------------------------


def test_python_m_embres_unknown_model_is_one_line_and_exit_2(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "embres", "--model", "nope"],
        cwd=tmp_path,
        env=_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = run.stderr.splitlines()
    assert run.returncode == 2, run.stderr
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("python -m embres: error: unknown model 'nope'. Known names:")
    assert lines[0].endswith("(traceback: --verbose or EMBRES_VERBOSE=1)")
    assert run.stdout == "" and list(tmp_path.iterdir()) == []


def test_python_m_embres_verbose_keeps_the_traceback():
    from embres.__main__ import PROG, main
    from embres.models import UnknownModelError

    argv = ["--model", "nope", "--verbose"]
    with pytest.raises(UnknownModelError, match="unknown model 'nope'"):
        cli.run(lambda: main(argv), prog=PROG, argv=argv)


# --- item 1: the bundled model's weights without (or with the wrong) tokenizer --------------


@pytest.fixture
def bundled_weights(tmp_path):
    """config.json and model.safetensors of the bundled model, alone in a folder."""
    folder = tmp_path / "minilm"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(resolve("all-MiniLM-L6-v2") / name, folder / name)
    return folder


def test_bundled_weights_without_tokenizer_files_are_refused(bundled_weights):
    with pytest.raises(FileNotFoundError) as e:
        EmbeddingExtractor(bundled_weights)
    message = str(e.value)
    assert message.startswith(f"{bundled_weights} holds a model but no tokenizer files; ")
    for form in ("tokenizer.json", "vocab.txt", "vocab.json+merges.txt", "sentencepiece.bpe.model"):
        assert form in message
    assert sorted(p.name for p in bundled_weights.iterdir()) == ["config.json", "model.safetensors"]


def test_bundled_weights_with_a_tokenizer_one_id_too_large_are_refused(bundled_weights):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(resolve("all-MiniLM-L6-v2")))
    tokenizer.add_tokens(["an-extra-token"])  # 30,523 ids for 30,522 rows
    tokenizer.save_pretrained(bundled_weights)
    with pytest.raises(ValueError, match="has 30,523 tokens but the model's table has 30,522 rows"):
        EmbeddingExtractor(bundled_weights)


# --- Issue 23: the .npy and its sidecar are replaced as a pair ------------------------------


def _crash_at_rename_onto(monkeypatch, target: Path):
    """Makes the rename onto ``target`` fail as a kill there would (the process stops)."""
    rename = os.replace

    def replace(src, dst):
        if Path(dst) == target:
            raise KeyboardInterrupt(f"killed before renaming onto {target}")
        return rename(src, dst)

    monkeypatch.setattr(os, "replace", replace)


def _read_pair(out: Path):
    """What a reader gets: ``extract.load_extracted`` (its rows and sidecar, checked)."""
    reader = getattr(extract, "load_extracted", None)
    if reader is None:  # before it existed: the file and its sidecar, read side by side
        return np.load(out), json.loads(Path(f"{out}.json").read_text())
    return reader(out)


@pytest.mark.parametrize("crash_at", ["rows", "sidecar"])
def test_a_crash_between_the_renames_leaves_a_consistent_pair(tmp_path, ex, monkeypatch, crash_at):
    out = tmp_path / "out.npy"
    ex.extract_to(out, TEXTS_A, progress=False)
    old = np.load(out)
    target = out if crash_at == "rows" else Path(f"{out}.json")
    with monkeypatch.context() as patched:
        _crash_at_rename_onto(patched, target)
        with pytest.raises(KeyboardInterrupt):
            ex.extract_to(out, TEXTS_B, progress=False)
    rows, meta = _read_pair(out)
    assert meta["count"] == len(rows)
    expected = old if crash_at == "rows" else ex.extract_embeddings(TEXTS_B)
    np.testing.assert_allclose(rows, expected, atol=1e-6)
    # The next call settles what the crash left; plain readers then agree too.
    ex.extract_to(out, TEXTS_A[:5], progress=False)
    assert json.loads(Path(f"{out}.json").read_text())["count"] == len(np.load(out)) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npy", "out.npy.json"]


def test_the_next_writer_completes_a_pending_sidecar(tmp_path, ex, monkeypatch, caplog):
    out = tmp_path / "out.npy"
    ex.extract_to(out, TEXTS_A, progress=False)
    with monkeypatch.context() as patched:
        _crash_at_rename_onto(patched, Path(f"{out}.json"))
        with pytest.raises(KeyboardInterrupt):
            ex.extract_to(out, TEXTS_B, progress=False)
    with caplog.at_level(logging.WARNING, logger="embres.extract"):
        extract._settle_pending_sidecar(out)
    assert "completing the sidecar an interrupted extract_to left pending" in caplog.text
    assert json.loads(Path(f"{out}.json").read_text())["count"] == len(TEXTS_B)
