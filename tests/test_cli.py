"""embres.cli: what counts as the user's mistake (one line, exit 2) and what keeps a traceback."""

import errno
import json
import os

import pytest
from _readonly import readonly_dir

from embres import cli, data


def _raise_in_library():
    json.loads("{not json")  # raised inside the json module: not a message embres wrote


def test_embres_own_message_is_one_line_and_exit_2(capsys):
    def main():
        data.check_spec("nope:x")  # a ValueError embres writes for the user

    assert cli.run(main, prog="embres.x", argv=[]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("embres.x: error: config.data.source='nope:x'")
    assert err[0].endswith("(traceback: --verbose or EMBRES_VERBOSE=1)")


def test_the_same_type_raised_outside_embres_is_a_bug_with_a_traceback():
    def main():
        raise ValueError("operands could not be broadcast")  # not a message embres wrote

    with pytest.raises(ValueError, match="broadcast"):
        cli.run(main, prog="embres.x", argv=[])


def test_an_error_raised_inside_a_library_keeps_its_traceback(monkeypatch):
    monkeypatch.delenv(cli.VERBOSE_ENV, raising=False)
    with pytest.raises(json.JSONDecodeError):
        cli.run(_raise_in_library, prog="embres.x", argv=[])


def test_a_missing_file_is_the_users_wherever_it_is_raised(capsys, tmp_path):
    def main():
        open(tmp_path / "nope.txt")  # noqa: SIM115 - raised by the builtin

    assert cli.run(main, prog="embres.x", argv=[]) == 2
    assert "nope.txt" in capsys.readouterr().err


def test_usage_error_has_no_traceback_hint_and_verbose_re_raises(capsys, monkeypatch):
    def main():
        raise cli.UsageError("--model nope: unknown model")

    assert cli.run(main, prog="embres.x", argv=[]) == 2
    assert capsys.readouterr().err.strip() == "embres.x: error: --model nope: unknown model"
    with pytest.raises(cli.UsageError):
        cli.run(main, prog="embres.x", argv=["--verbose"])
    monkeypatch.setenv(cli.VERBOSE_ENV, "1")
    with pytest.raises(cli.UsageError):
        cli.run(main, prog="embres.x", argv=[])
    monkeypatch.delenv(cli.VERBOSE_ENV)
    assert cli.verbose_requested(["--verbose=1"]) and not cli.verbose_requested(["--verbose=no"])


def test_argument_parser_errors_are_one_line_for_subcommands_too(capsys):
    parser = cli.ArgumentParser(prog="python -m embres.x", error_prog="embres.x")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("stats").add_argument("--dim", type=int)
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["stats", "--dim", "x"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("embres.x: error: ") and "'x'" in err[0]


# --- Issue 24, rows 15 and 16: a write the file system refuses is one line naming the path.


def test_a_read_only_file_system_is_one_line_naming_the_path(capsys, tmp_path):
    with readonly_dir(tmp_path) as ro:

        def main():
            (ro / "workdir" / "ckpt").mkdir(parents=True)  # raised inside pathlib

        assert cli.run(main, prog="embres.x", argv=[]) == 2
        assert cli.writable_problem(ro / "workdir", "--workdir") == (
            f"--workdir: cannot write in {ro}: it is on a read-only file system; "
            "expected a writable folder"
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"embres.x: error: {ro / 'workdir'}: cannot write there: read-only file system; "
        f"choose a writable path [Errno {errno.EROFS}]"
    ]


@pytest.mark.parametrize(
    "code, words",
    [(errno.ENOSPC, "no space left on the device"), (errno.EEXIST, "already exists")],
)
def test_a_full_disk_or_a_file_in_the_way_is_one_line(capsys, tmp_path, code, words):
    def main():  # as a library (Orbax, matplotlib) raises it: not embres's own frame
        raise OSError(code, os.strerror(code), str(tmp_path / "out"))

    assert cli.run(main, prog="embres.x", argv=[]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"embres.x: error: {tmp_path / 'out'}: ") and words in line
    with pytest.raises(OSError):
        cli.run(main, prog="embres.x", argv=["--verbose"])


def test_writable_problem_names_a_file_in_the_way(tmp_path):
    (tmp_path / "f").write_text("x")
    assert cli.writable_problem(tmp_path / "new" / "dir", "--out x") is None
    assert cli.writable_problem(tmp_path, "--out x") is None
    assert "is a file; expected a folder" in cli.writable_problem(tmp_path / "f", "--out x")
    assert cli.writable_problem(tmp_path / "f" / "sub", "--out x") == (
        f"--out x: {tmp_path / 'f'} is a file, so no folder can be made at {tmp_path / 'f' / 'sub'}"
    )
