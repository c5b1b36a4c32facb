"""``sentences:stsb,sick``: the train splits' sentences of STS datasets, as an unlabelled corpus.

Distillation needs text like the text a model will embed. The STS datasets' train splits are
such text; their scores are not used, only their sentences, each once, in file order. Every
sentence that also occurs in a dev, trial or test file of any of these datasets found in the
data folder is removed (SICK's trial split shares 671 of its 916 sentences with its train
split), so no evaluation sentence is ever seen in training. The corpus is written once to
``$EMBRES_CACHE/sentences/`` (default ``~/.cache/embres``), named by the datasets and the
sizes of the files it was read from, and then read like any ``text:`` corpus.

Files (under ``$EMBRES_DATA_DIR``): ``stsb/sts-train.csv`` (tab-separated, sentences in
fields 6 and 7), ``sick/SICK_train.txt`` (a header naming ``sentence_A``/``sentence_B``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# name -> (train file, [held-out files], how sentences are found)
DATASETS = {
    "stsb": ("stsb/sts-train.csv", ["stsb/sts-dev.csv", "stsb/sts-test.csv"], "stsb"),
    "sick": ("sick/SICK_train.txt", ["sick/SICK_trial.txt", "sick/SICK_test.txt"], "sick"),
}


def parse_names(rest: str | None, raw: str) -> tuple[str, ...]:
    """``"stsb,sick"`` -> ("stsb", "sick").

    Raises:
      ValueError: naming ``config.data.source`` and the datasets known.
    """
    names = tuple(n.strip() for n in (rest or "").split(",") if n.strip())
    unknown = [n for n in names if n not in DATASETS]
    if not names or unknown:
        raise ValueError(
            f"config.data.source={raw!r}: expected 'sentences:NAME[,NAME...]' with names from "
            f"{sorted(DATASETS)}" + (f"; unknown: {unknown}" if unknown else "")
        )
    return names


def data_dir() -> Path:
    """``$EMBRES_DATA_DIR`` (default ``../shared/data``)."""
    return Path(os.environ.get("EMBRES_DATA_DIR", "../shared/data")).expanduser()


def missing_files(names: tuple[str, ...]) -> list[str]:
    """The train files of ``names`` absent from the data folder."""
    return [
        str(data_dir() / DATASETS[n][0])
        for n in names
        if not (data_dir() / DATASETS[n][0]).is_file()
    ]


def _read(path: Path, layout: str) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    if layout == "sick":
        header = lines[0].split("\t")
        columns = [header.index("sentence_A"), header.index("sentence_B")]
        lines = lines[1:]
    else:
        columns = [5, 6]
    out = []
    for line in lines:
        fields = line.split("\t")
        out += [fields[c].strip() for c in columns if c < len(fields)]
    return [s for s in out if s]


def sentences(names: tuple[str, ...]) -> list[str]:
    """The train sentences of ``names``, each once, none that an evaluation file holds.

    Raises:
      FileNotFoundError: naming the train files absent from ``$EMBRES_DATA_DIR``.
    """
    if missing := missing_files(names):
        raise FileNotFoundError(f"no such file(s) {missing} (set EMBRES_DATA_DIR)")
    held_out: set[str] = set()
    for name in DATASETS:  # every dataset's evaluation files, not only the ones asked for
        train, evaluation, layout = DATASETS[name]
        for rel in evaluation:
            if (data_dir() / rel).is_file():
                held_out.update(_read(data_dir() / rel, layout))
    seen: dict[str, None] = {}
    for name in names:
        train, _, layout = DATASETS[name]
        for s in _read(data_dir() / train, layout):
            if s not in held_out:
                seen.setdefault(s, None)
    return list(seen)


def sentences_text_file(names: tuple[str, ...], cache_root: str | None = None) -> str:
    """Writes :func:`sentences` once to a text file (one per line) and returns its path."""
    root = Path(cache_root or os.environ.get("EMBRES_CACHE", "~/.cache/embres")).expanduser()
    stamp = "|".join(
        f"{rel}:{(data_dir() / rel).stat().st_size}"
        for name in DATASETS
        for rel in [DATASETS[name][0], *DATASETS[name][1]]
        if (data_dir() / rel).is_file()
    )
    tag = hashlib.sha256(f"{names}|{stamp}".encode()).hexdigest()[:12]
    path = root / "sentences" / f"{'_'.join(names)}-{tag}.txt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
        try:
            partial.write_text("\n".join(sentences(names)) + "\n", encoding="utf-8")
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    return str(path)
