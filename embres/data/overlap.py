"""The contamination check: no training source may hold a sentence an evaluation set scores on.

:func:`check_eval_overlap` reads the sentences of every source a run trains on
(``config.data.source``, each component of a ``mixture``, and ``extra_sources`` such as an
objective's dictionary) and of every evaluation set named in ``config.evals``
(:func:`embres.data.eval_sets.evaluation_sentences`), compares them after
:func:`normalize` (case-folded, whitespace collapsed, a trailing ``.``/``!``/``?`` removed:
the rule the shared ``parallel/`` files were decontaminated with), and reports per source
the sentences read, how many match and the first matches. A match refuses the run unless
``config.data.allow_eval_overlap`` is True, or ``config.data.drop_eval_overlap`` is True and
the source is a mixture component or a dictionary (its matching items are then left out when
read: :func:`eval_exclusion`; reported as ``dropped``).

Sentences read per kind: ``text:`` its lines; ``pairs:``/``dict:`` both text columns;
``sentences:``/``scored:`` their sentences/pairs (already filtered the same way);
``vocab`` none (sampled token ids); ``tfds:`` is not read (reported as skipped). The first
``config.data.heldout`` lines/pairs of ``config.data.source`` are never trained on and are
not checked.
"""

from __future__ import annotations

from typing import Any

from embres.data.eval_sets import evaluation_sentences, normalize

__all__ = [
    "check_eval_overlap",
    "droppable",
    "eval_exclusion",
    "normalize",
    "overlap_report",
    "source_sentences",
]

EXAMPLES = 5  # matches shown per source


def _text_lines(path: Any, skip: int) -> list[str]:
    from pathlib import Path

    lines = Path(path).expanduser().read_text(encoding="utf-8", errors="replace").split("\n")
    return [t for t in (line.strip() for line in lines) if t][skip:]


def _pair_sentences(path: Any, columns: str, skip: int) -> list[str]:
    from embres.data.translation import read_pairs

    pairs, _ = read_pairs(path, columns)
    return [s for pair in pairs[skip:] for s in pair]


def source_sentences(spec: str, columns: str = "", heldout: int = 0) -> list[str] | None:
    """The sentences a source trains on (None for a kind not read here: ``tfds:``).

    Args:
      spec: a ``config.data.source``-style spec, or ``dict:PATH`` (a word-pair TSV).
      columns: the text columns of a ``pairs:``/``dict:`` TSV (``""``: the first two).
      heldout: leading lines/pairs never trained on (skipped).

    Raises:
      ValueError: a spec of no known kind (``mixture`` is read per component).
    """
    from embres.data import sentences as sts_sources
    from embres.data.registry import parse_spec

    kind, _, rest = spec.partition(":")
    if kind == "dict":
        return _pair_sentences(rest, columns, 0)
    parsed = parse_spec(spec)
    if parsed.kind == "text":
        return _text_lines(parsed.path, heldout)
    if parsed.kind == "pairs":
        return _pair_sentences(parsed.path, columns, heldout)
    if parsed.kind in ("sentences", "scored"):
        names = sts_sources.parse_names(rest, spec)
        if parsed.kind == "sentences":
            return sts_sources.sentences(names)
        return [s for a, b, _ in sts_sources.scored_pairs(names) for s in (a, b)]
    if parsed.kind == "vocab":
        return []
    if parsed.kind == "tfds":
        return None
    raise ValueError(f"{spec!r}: the overlap check reads no {parsed.kind!r} source as a whole")


def training_sources(config: Any, extra_sources: dict[str, str] | None) -> dict[str, tuple]:
    """``label -> (spec, columns, heldout)`` of every source the run trains on."""
    cfg = config.data
    columns = cfg.get("columns", "") or ""
    out: dict[str, tuple] = {}
    if cfg.source == "mixture":
        for name, component in dict(cfg.get("mixture") or {}).items():
            heldout = int(component.get("heldout", 0) or 0)
            out[f"data.mixture.{name}"] = (component["source"], columns, heldout)
    else:
        out["data.source"] = (cfg.source, columns, int(cfg.get("heldout", 0) or 0))
    for label, spec in (extra_sources or {}).items():
        out[label] = (spec, columns, 0)
    return out


def overlap_report(
    sources: dict[str, tuple], evaluation: dict[str, list[str]]
) -> dict[str, dict[str, Any]]:
    """Per source: ``{"source", "sentences", "overlap", "examples", "sets"}`` (or
    ``{"source", "skipped"}``); see :func:`check_eval_overlap`."""
    where: dict[str, str] = {}
    for name, texts in evaluation.items():
        for text in texts:
            where.setdefault(normalize(text), name)
    report: dict[str, dict[str, Any]] = {}
    for label, (spec, columns, heldout) in sources.items():
        texts = source_sentences(spec, columns, heldout)
        if texts is None:
            report[label] = {"source": spec, "skipped": "tfds: sources are not read here"}
            continue
        matches = [(t, where[n]) for t in texts if (n := normalize(t)) in where]
        sets: dict[str, int] = {}
        for _, name in matches:
            sets[name] = sets.get(name, 0) + 1
        report[label] = {
            "source": spec,
            "sentences": len(texts),
            "overlap": len(matches),
            "examples": [{"sentence": t, "in": name} for t, name in matches[:EXAMPLES]],
            "sets": sets,
        }
    return report


def droppable(label: str, spec: str) -> bool:
    """Whether ``config.data.drop_eval_overlap`` filters this source when it is read: mixture
    components and dictionaries, which only the translation readers
    (:func:`embres.data.translation.read_pairs` with ``exclude``) read."""
    return label.startswith("data.mixture.") or spec.startswith("dict:")


def eval_exclusion(config: Any) -> set[str] | None:
    """The normalised evaluation sentences the translation readers leave out, when
    ``config.data.drop_eval_overlap`` is set (else None)."""
    if not config.data.get("drop_eval_overlap", False):
        return None
    evals = evaluation_sentences(config.get("evals") or {})
    return {normalize(t) for texts in evals.values() for t in texts}


def check_eval_overlap(
    config: Any, extra_sources: dict[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """Checks every training source of ``config`` against every evaluation set it names.

    Args:
      config: the run's config (``data.source``, ``data.columns``, ``data.heldout``,
        ``data.mixture``, ``data.allow_eval_overlap``, ``evals``).
      extra_sources: more sources training reads, ``label -> spec`` (e.g.
        ``{"objective.dictionary": "dict:PATH"}``).

    Returns:
      JSON-able ``{label: {"source": spec, "sentences": n, "overlap": k, "examples":
      [{"sentence", "in"}...], "sets": {evaluation set: k}}}`` (``{"source", "skipped"}``
      for a source not read), for the log and the checkpoint meta.

    Raises:
      ValueError: a source holding an evaluation sentence (naming the source, the count and
        the first matches) when ``config.data.allow_eval_overlap`` is not True.
      FileNotFoundError: an evaluation set's or a source's file is absent.
    """
    evals = config.get("evals") or {}
    report = overlap_report(training_sources(config, extra_sources), evaluation_sentences(evals))
    if config.data.get("allow_eval_overlap", False):
        return report
    drop = bool(config.data.get("drop_eval_overlap", False))
    for label, entry in report.items():
        if entry.get("overlap") and drop and droppable(label, entry["source"]):
            entry["dropped"] = entry["overlap"]  # the translation readers leave these out
        elif entry.get("overlap"):
            shown = "; ".join(f"{e['sentence']!r} ({e['in']})" for e in entry["examples"])
            raise ValueError(
                f"{label}={entry['source']!r}: {entry['overlap']:,} of {entry['sentences']:,} "
                "training sentences equal an evaluation sentence (case-folded, whitespace "
                f"collapsed, final .!? removed), e.g. {shown}; remove them, set "
                "config.data.drop_eval_overlap=True (mixture components and dictionaries: "
                "the items are left out when read), or config.data.allow_eval_overlap=True "
                "to train anyway"
            )
    return report
