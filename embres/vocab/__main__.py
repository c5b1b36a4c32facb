"""Command line for vocabularies.

  python -m embres.vocab stats --tokenizer all-MiniLM-L6-v2 --tokenizer DIR --text tr.txt
  python -m embres.vocab train --text tr.txt --out DIR [--lang tr --model wordpiece --vocab-size 16000]
  python -m embres.vocab bilingual --teacher all-MiniLM-L6-v2 --text tr.txt --out DIR
      [--english en.txt] [--vocab-size 16000] [--guard seen|letters]
  python -m embres.vocab trim --tokenizer all-MiniLM-L6-v2 --text tr.txt --text en.txt --out DIR

``--text`` may repeat; ``--limit N`` reads at most N lines of each. A ``--text`` file must be
UTF-8 (a few bad lines warn, a mostly binary file is refused, as for ``text:`` sources) and
hold a non-empty line; ``--out`` is checked before any work (a file there, or a read-only
folder, is refused). ``train`` warns when the text gives fewer tokens than ``--vocab-size``.
Errors print one line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from embres import cli
from embres.vocab import build

PROG = "embres.vocab"  # how error lines start: "embres.vocab: error: ..."


class CliError(cli.UsageError):
    """A bad command-line value; printed as one line (complete: no traceback hint)."""


def load_tokenizer(name: str):
    """A fast tokenizer from a directory with tokenizer files or a model name embres knows."""
    from transformers import AutoTokenizer

    path = Path(name).expanduser()
    if not (path.is_dir() and (path / "tokenizer.json").exists()):
        from embres.models import UnknownModelError, resolve

        try:
            path = resolve(name, allow_download=False)
        except UnknownModelError as e:
            raise CliError(f"--tokenizer {name!r}: {e}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except Exception as e:  # missing or unreadable tokenizer files
        raise CliError(f"--tokenizer {name!r}: cannot load a tokenizer from {path}: {e}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise CliError(f"--tokenizer {name!r}: expected a fast (tokenizer.json) tokenizer")
    return tokenizer


def positive_int(text: str) -> int:
    """An argparse type: an integer above zero (``--limit 0`` would read nothing)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def read_lines(files: list[str], limit: int | None) -> list[str]:
    """Non-empty lines of each file (at most ``limit`` per file).

    Each file is checked as a ``text:`` source is (:func:`embres.data.text.check_utf8`): a
    few lines that are not UTF-8 warn and are read with U+FFFD; a file that is mostly not
    (binary data, another encoding) is refused. A file without a non-empty line is refused.
    """
    from embres.data.text import check_utf8

    lines: list[str] = []
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise CliError(f"--text {name!r}: no such file")
        try:
            check_utf8(path)
        except ValueError as e:
            raise CliError(f"--text {e}") from None
        with path.open(encoding="utf-8", errors="replace") as f:
            taken = [line.rstrip("\n") for line in f if line.strip()]
        if not taken:
            raise CliError(
                f"--text {name!r} has no non-empty line; expected UTF-8 text, one sentence a line"
            )
        lines += taken[:limit] if limit is not None else taken
    return lines


def check_out(out: str) -> None:
    """Refuses an ``--out`` where no tokenizer folder can be written, before any work."""
    problem = cli.writable_problem(out, f"--out {out}")
    if problem:
        raise CliError(problem)


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def stats(args) -> None:
    texts = read_lines(args.text, args.limit)
    rows = []
    for name in args.tokenizer:
        fert = build.fertility(load_tokenizer(name), texts)
        size = fert["vocab_size"]
        rows.append(
            (
                name,
                str(size),
                f"{fert['tokens_per_word']:.3f}",
                f"{100 * fert['unk_rate']:.3f}%",
                _mb(build.table_bytes(size, args.dim, "float32")),
                _mb(build.table_bytes(size, args.dim, "int8")),
            )
        )
    header = ("tokenizer", "vocab", "tokens/word", "unk", f"table f32 d={args.dim}", "table int8")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"{len(texts)} lines, {fert['words']} words")
    for row in [header, *rows]:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def train(args) -> None:
    check_out(args.out)
    texts = read_lines(args.text, args.limit)
    tok = build.train_tokenizer(texts, model=args.model, vocab_size=args.vocab_size, lang=args.lang)
    if len(tok) < args.vocab_size:
        words = len({w for t in texts for w in t.split()})
        print(
            f"{PROG}: warning: the text gave {len(tok)} tokens, fewer than --vocab-size "
            f"{args.vocab_size} ({len(texts)} lines, {words} distinct words); more text gives "
            "a larger vocabulary",
            file=sys.stderr,
            flush=True,
        )
    tok.save_pretrained(args.out)
    print(f"{args.model} vocabulary of {len(tok)} tokens -> {args.out}")


def bilingual(args) -> None:
    check_out(args.out)
    teacher = load_tokenizer(args.teacher)
    english = read_lines(args.english, args.limit) if args.english else None
    tok, info = build.extend_tokenizer(
        teacher,
        read_lines(args.text, args.limit),
        vocab_size=args.vocab_size,
        lang=args.lang,
        english_texts=english,
        english_guard=args.guard,
    )
    tok.save_pretrained(args.out)
    print(" ".join(f"{k}={v}" for k, v in info.items()), f"-> {args.out}")


def trim(args) -> None:
    check_out(args.out)
    tok, kept_ids = build.trim_tokenizer(
        load_tokenizer(args.tokenizer), read_lines(args.text, args.limit), min_count=args.min_count
    )
    tok.save_pretrained(args.out)
    np.save(Path(args.out) / "kept_ids.npy", kept_ids)
    print(
        f"kept {len(kept_ids)} tokens -> {args.out} (kept_ids.npy: new id i = old id kept_ids[i])"
    )


def parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        prog="python -m embres.vocab", error_prog=PROG, description=__doc__.split("\n")[0]
    )
    p.add_argument("--verbose", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)

    def common(s, text_required=True):
        s.add_argument("--text", action="append", required=text_required, help="a text file")
        s.add_argument("--limit", type=positive_int, default=None, help="lines per file")

    s = sub.add_parser("stats", help="vocabulary size, fertility, unk rate, table bytes")
    s.add_argument("--tokenizer", action="append", required=True)
    s.add_argument("--dim", type=positive_int, default=384, help="table width for its bytes")
    common(s)
    s.set_defaults(run=stats)
    s = sub.add_parser("train", help="train a language's tokenizer")
    common(s)
    s.add_argument("--out", required=True)
    s.add_argument("--lang", default="tr")
    s.add_argument("--model", default="wordpiece", choices=build.MODELS)
    s.add_argument("--vocab-size", type=int, default=16000)
    s.set_defaults(run=train)
    s = sub.add_parser("bilingual", help="extend a BERT teacher's vocabulary with a language")
    s.add_argument("--teacher", default="all-MiniLM-L6-v2")
    common(s)
    s.add_argument("--english", action="append", default=None, help="English text to protect")
    s.add_argument("--out", required=True)
    s.add_argument("--lang", default="tr")
    s.add_argument("--vocab-size", type=int, default=16000)
    s.add_argument("--guard", default="seen", choices=build.ENGLISH_GUARDS)
    s.set_defaults(run=bilingual)
    s = sub.add_parser("trim", help="drop tokens the text never uses")
    s.add_argument("--tokenizer", required=True)
    common(s)
    s.add_argument("--out", required=True)
    s.add_argument("--min-count", type=int, default=1)
    s.set_defaults(run=trim)
    return p


def main(argv: list[str] | None = None) -> int:
    """Runs one subcommand; returns the exit status (a mistake: one stderr line and 2)."""

    def run() -> None:
        args = parser().parse_args(argv)
        args.run(args)

    errors = (*cli.USER_ERRORS, CliError, NotImplementedError)
    return cli.run(run, prog=PROG, argv=argv, user_errors=errors)


if __name__ == "__main__":
    sys.exit(main())
