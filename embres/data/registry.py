"""The one table of data-source kinds: how each ``config.data.source`` is parsed and built.

A spec is parsed once, by :func:`parse_spec`, into a :class:`Spec`; checking it
(:func:`check_spec`) and building it (:func:`make_source`) both start from that parse, so no
other code tests string prefixes. A new kind is one parser, one builder and a row in
``REGISTRY``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from embres.data.batching import Source
from embres.data.pairs import PairsSource, parse_score_range
from embres.data.sentences import (
    missing_files,
    parse_names,
    scored_pairs_file,
    sentences_text_file,
)
from embres.data.text import TextSource
from embres.data.tfds import TfdsSpec, parse_tfds_spec, tfds_text_file
from embres.data.vocab import VocabSource


@dataclasses.dataclass(frozen=True)
class Spec:
    """A parsed ``config.data.source``.

    Attributes:
      kind: ``"vocab"``, ``"text"``, ``"tfds"``, ``"pairs"``, ``"sentences"``, ``"scored"`` or
        ``"mixture"``.
      raw: the spec as written.
      path: the file of ``text:`` and ``pairs:`` (``~`` expanded), else None.
      tfds: the parsed ``tfds:`` name, else None.
    """

    kind: str
    raw: str
    path: Path | None = None
    tfds: TfdsSpec | None = None


@dataclasses.dataclass(frozen=True)
class Kind:
    """One row of the registry: the accepted form, its parser and its builder."""

    form: str
    parse: Callable[[str, str], Spec]  # (raw spec, text after "kind:") -> Spec
    build: Callable[..., Source]  # (spec, cfg, tokenizer, **common) -> Source
    needs_file: bool = False
    check: Callable[[Spec], None] | None = None  # files it reads exist (FileNotFoundError)


def _field(cfg: Any, name: str, default: Any) -> Any:
    """``cfg.name`` if the config has it (configs written before the field existed lack it)."""
    value = getattr(cfg, name, None)
    return default if value is None else value


def _parse_bare(kind: str) -> Callable[[str, str | None], Spec]:
    def parse(raw: str, rest: str | None) -> Spec:
        if rest is not None:
            raise ValueError(f"config.data.source={raw!r}: '{kind}' takes no argument")
        return Spec(kind, raw)

    return parse


def _parse_path(kind: str) -> Callable[[str, str | None], Spec]:
    def parse(raw: str, rest: str | None) -> Spec:
        if not rest:
            raise ValueError(f"config.data.source={raw!r}: expected '{kind}:PATH' with a path")
        return Spec(kind, raw, path=Path(rest).expanduser())

    return parse


def _parse_tfds(raw: str, rest: str | None) -> Spec:
    try:
        return Spec("tfds", raw, tfds=parse_tfds_spec(raw))
    except ValueError as e:
        raise ValueError(f"config.data.source={raw!r}: {e}") from None


def _build_vocab(spec: Spec, cfg: Any, tokenizer: Any, **common: Any) -> Source:
    common.pop("process_count")
    return VocabSource(
        tokenizer, max_length=cfg.max_length, min_length=_field(cfg, "min_length", 4), **common
    )


def _text_source(path: Path | str, cfg: Any, tokenizer: Any, **common: Any) -> Source:
    common.pop("seed")
    return TextSource(
        str(path),
        tokenizer,
        max_length=cfg.max_length,
        heldout=_field(cfg, "heldout", 0),
        count_lines=_field(cfg, "count_lines", 100_000),
        **common,
    )


def _build_text(spec: Spec, cfg: Any, tokenizer: Any, **common: Any) -> Source:
    return _text_source(spec.path, cfg, tokenizer, **common)


def _build_tfds(spec: Spec, cfg: Any, tokenizer: Any, **common: Any) -> Source:
    return _text_source(tfds_text_file(spec.raw), cfg, tokenizer, **common)


def _parse_names(kind: str) -> Callable[[str, str | None], Spec]:
    def parse(raw: str, rest: str | None) -> Spec:
        parse_names(rest, raw)
        return Spec(kind, raw)

    return parse


def _names(spec: Spec) -> tuple[str, ...]:
    return parse_names(spec.raw.partition(":")[2], spec.raw)


def _check_sentences(spec: Spec) -> None:
    if missing := missing_files(_names(spec)):
        raise FileNotFoundError(
            f"config.data.source={spec.raw!r}: no such file(s) {missing} (set EMBRES_DATA_DIR "
            "to the shared data folder)"
        )


def _build_sentences(spec: Spec, cfg: Any, tokenizer: Any, **common: Any) -> Source:
    return _text_source(sentences_text_file(_names(spec)), cfg, tokenizer, **common)


def text_file(spec: Spec) -> Path:
    """The one-sentence-per-line file a ``text:``, ``tfds:`` or ``sentences:`` corpus reads
    (written once for the last two).

    Raises:
      ValueError: a source with no text corpus (``vocab``, ``pairs``).
    """
    if spec.kind == "text":
        return spec.path
    if spec.kind == "tfds":
        return Path(tfds_text_file(spec.raw))
    if spec.kind == "sentences":
        return Path(sentences_text_file(_names(spec)))
    raise ValueError(
        f"config.data.source={spec.raw!r} is a {spec.kind!r} source, not a text corpus"
    )


def pairs_file(spec: Spec) -> Path:
    """The TSV a ``pairs:`` or ``scored:`` source reads (written once for ``scored:``).

    Raises:
      ValueError: a source of any other kind.
    """
    if spec.kind == "pairs":
        return spec.path
    if spec.kind == "scored":
        return Path(scored_pairs_file(_names(spec)))
    raise ValueError(f"config.data.source={spec.raw!r} is a {spec.kind!r} source, not pairs")


def _build_mixture(spec: Spec, cfg: Any, tokenizer: Any, **common: Any) -> Source:
    """The pairs of every component sampled by weight (no teacher targets: an objective that
    needs them builds :class:`TranslationSource` itself, see :mod:`embres.data.mixture`)."""
    from embres.data.mixture import read_mixture
    from embres.data.translation import TranslationSource

    mixture = read_mixture(cfg)
    return TranslationSource(
        tokenizer,
        [t for _, t in mixture.pairs],
        [s for s, _ in mixture.pairs],
        None,
        mixture.item_weights,
        batch_size=common["batch_size"] * common["process_count"],
        max_length=cfg.max_length,
        pad_id=common["pad_id"],
        add_special_tokens=True,
        heldout=mixture.held,
        seed=common["seed"],
        process_index=common["process_index"],
        process_count=common["process_count"],
        components=mixture.sampling(),
    )


def score_range(spec: Spec, cfg: Any) -> tuple[float, float]:
    """The range the scores of a ``pairs:`` or ``scored:`` source's file lie in (the source
    yields them rescaled to [0, 1]): ``config.data.score_range`` for ``pairs:`` (default
    0-5), [0, 1] for ``scored:`` (its datasets' own ranges are applied when it is written).

    Raises:
      ValueError: a malformed range, or one set for ``scored:`` (it knows its ranges).
    """
    value = _field(cfg, "score_range", "")
    if spec.kind == "scored":
        if value not in ("", None):
            raise ValueError(
                f"config.data.score_range={value!r}: a {spec.raw!r} source knows its datasets' "
                "ranges (STS-B 0-5, SICK 1-5); leave config.data.score_range unset"
            )
        return (0.0, 1.0)
    return parse_score_range(value)


def _build_pairs(spec: Spec, cfg: Any, tokenizer: Any, **common: Any) -> Source:
    return _pairs_source(spec.path, cfg, tokenizer, score_range(spec, cfg), **common)


def _build_scored(spec: Spec, cfg: Any, tokenizer: Any, **common: Any) -> Source:
    return _pairs_source(pairs_file(spec), cfg, tokenizer, score_range(spec, cfg), **common)


def _pairs_source(path, cfg: Any, tokenizer: Any, scores: tuple, **common: Any) -> Source:
    common.pop("seed")
    return PairsSource(
        str(path),
        tokenizer,
        max_length=cfg.max_length,
        columns=_field(cfg, "columns", ""),
        score_column=_field(cfg, "score_column", ""),
        heldout=_field(cfg, "heldout", 0),
        count_lines=_field(cfg, "count_lines", 100_000),
        score_range=scores,
        **common,
    )


REGISTRY: dict[str, Kind] = {
    "text": Kind("text:PATH", _parse_path("text"), _build_text, needs_file=True),
    "tfds": Kind("tfds:NAME[/CONFIG][:VERSION][:SPLIT]", _parse_tfds, _build_tfds),
    "pairs": Kind("pairs:PATH", _parse_path("pairs"), _build_pairs, needs_file=True),
    "vocab": Kind("vocab", _parse_bare("vocab"), _build_vocab),
    "mixture": Kind("mixture", _parse_bare("mixture"), _build_mixture),
    "sentences": Kind(
        "sentences:NAME[,NAME]",
        _parse_names("sentences"),
        _build_sentences,
        check=_check_sentences,
    ),
    "scored": Kind(
        "scored:NAME[,NAME]", _parse_names("scored"), _build_scored, check=_check_sentences
    ),
}
SOURCES = tuple(kind.form for kind in REGISTRY.values())

_FILE_HINT = {
    "text": "a UTF-8 text file with one sentence per line",
    "pairs": "a TSV file with a header row naming its columns",
}


def parse_spec(spec: str) -> Spec:
    """Parses ``config.data.source`` (no file is touched).

    Raises:
      ValueError: naming ``config.data.source``, the value and the accepted forms.
    """
    if not isinstance(spec, str):
        raise ValueError(f"config.data.source={spec!r} is not a string; expected one of {SOURCES}")
    name, sep, rest = spec.partition(":")
    kind = REGISTRY.get(name)
    if kind is None:
        raise ValueError(
            f"config.data.source={spec!r} is not a known source; expected one of {SOURCES}"
        )
    return kind.parse(spec, rest if sep else None)


def check_spec(spec: str) -> Spec:
    """Parses ``config.data.source`` and checks that its file exists; returns the parse.

    Raises:
      ValueError: an unknown or malformed spec (see :func:`parse_spec`).
      FileNotFoundError: a ``text:`` or ``pairs:`` path that is not a file.
    """
    parsed = parse_spec(spec)
    if REGISTRY[parsed.kind].check is not None:
        REGISTRY[parsed.kind].check(parsed)
    if REGISTRY[parsed.kind].needs_file and not parsed.path.is_file():
        raise FileNotFoundError(
            f"config.data.source={spec!r}: no such file {str(parsed.path)!r} "
            f"(expected {_FILE_HINT[parsed.kind]})"
        )
    return parsed


def make_source(
    cfg: Any,
    tokenizer: Any,
    *,
    vocab_size: int,
    pad_id: int,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> Source:
    """Builds the source named by ``cfg.source`` (the ``config.data`` section).

    Args:
      cfg: ``config.data`` with ``source``, ``max_length`` and the source's own fields
        (``min_length``; ``heldout``, ``count_lines``; ``columns``, ``score_column``).
      tokenizer: the teacher's Hugging Face tokenizer.
      vocab_size: rows of the teacher's table.
      pad_id: id used for padding.
      batch_size: the global batch; each process yields ``batch_size // process_count`` rows.
      seed: seeds sampling (``vocab``) and nothing else.
      process_index: this process (``jax.process_index()``).
      process_count: processes in the run (``jax.process_count()``).

    Raises:
      ValueError / FileNotFoundError: see :func:`check_spec`; a batch that does not divide
        over the processes.
    """
    spec = check_spec(cfg.source)
    if batch_size % process_count:
        raise ValueError(
            f"config.batch_size={batch_size} must be divisible by the process count {process_count}"
        )
    return REGISTRY[spec.kind].build(
        spec,
        cfg,
        tokenizer,
        vocab_size=vocab_size,
        pad_id=pad_id,
        batch_size=batch_size // process_count,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
    )
