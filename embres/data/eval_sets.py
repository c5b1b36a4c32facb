"""The evaluation sets' files and sentences, by name: what no training source may hold.

Kept in the data layer so that the sources (``sentences:``, ``scored:``), the contamination
check (:mod:`embres.data.overlap`) and the evaluators (:mod:`embres.evaluate`) read one
table of names → files:

* STS datasets (:data:`STS_DATASETS`): ``stsb`` (STS-B), ``stsb_tr`` (STSb-TR), ``sick``
  (SICK, whose ``dev`` split is its ``trial`` file); each split a file under the data folder.
  ``test`` files are listed too: they are not in the shared folder, but where a user has
  them they are evaluation sentences as well.
* bitext: ``stsb`` (STS-B ↔ STSb-TR of a split, :data:`STSB_SIDES`) or ``pairs:PATH`` (a
  two-column TSV with a header; a relative path is tried under the data folder).
* probe: a folder holding ``dev.tsv`` (``label<TAB>text`` with a header), by default
  :data:`PROBE_DEFAULT`.

Sentences are compared after :func:`normalize` (PROVENANCE.md's rule: case-folded,
whitespace collapsed, trailing ``.``/``!``/``?`` removed).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

# dataset -> (format, {split: relative path})
STS_DATASETS: dict[str, tuple[str, dict[str, str]]] = {
    "stsb": (
        "stsb",
        {"train": "stsb/sts-train.csv", "dev": "stsb/sts-dev.csv", "test": "stsb/sts-test.csv"},
    ),
    "stsb_tr": (
        "stsb",
        {
            "train": "stsb_tr/stsb_tr_train.tsv",
            "dev": "stsb_tr/stsb_tr_dev.tsv",
            "test": "stsb_tr/stsb_tr_test.tsv",
        },
    ),
    "sick": (
        "sick",
        {
            "train": "sick/SICK_train.txt",
            "dev": "sick/SICK_trial.txt",
            "trial": "sick/SICK_trial.txt",
            "test": "sick/SICK_test.txt",
        },
    ),
}
# the STS datasets paired by the ``stsb`` bitext set: (first language, dataset), (second, ...)
STSB_SIDES = (("en", "stsb"), ("tr", "stsb_tr"))
PROBE_DEFAULT = "tr_movie_sentiment"
SICK_COLUMNS = ("sentence_A", "sentence_B", "relatedness_score")

_SPACES = re.compile(r"\s+")


def normalize(sentence: str) -> str:
    """``sentence`` case-folded, whitespace collapsed to one space and stripped, and trailing
    ``.``/``!``/``?`` removed (the rule ``parallel/`` was decontaminated with)."""
    return _SPACES.sub(" ", sentence.casefold()).strip().rstrip(".!?").rstrip()


def data_dir() -> Path:
    """``$EMBRES_DATA_DIR`` (default ``../shared/data``)."""
    return Path(os.environ.get("EMBRES_DATA_DIR", "../shared/data")).expanduser()


def sts_file(dataset: str, split: str) -> Path:
    """The file of an STS dataset's split under the data folder.

    Raises:
      ValueError: an unknown dataset or split, naming what is known.
    """
    if dataset not in STS_DATASETS:
        raise ValueError(f"unknown STS dataset {dataset!r}; expected one of {sorted(STS_DATASETS)}")
    files = STS_DATASETS[dataset][1]
    if split not in files:
        raise ValueError(f"dataset {dataset!r} has no split {split!r}; expected {sorted(files)}")
    return data_dir() / files[split]


def sts_rows(path: Path, fmt: str) -> list[tuple[str, str, str]]:
    """(sentence 1, sentence 2, score as written) of each row of an STS file; an STS-B
    format header (a first row whose score is not a number) is skipped."""
    lines = path.read_text(encoding="utf-8").split("\n")
    lines = [line.removesuffix("\r") for line in lines if line.strip()]
    if fmt == "sick":
        header = lines[0].split("\t")
        columns = [header.index(c) for c in SICK_COLUMNS]
        lines = lines[1:]
    else:
        columns = [5, 6, 4]
    rows = []
    for number, line in enumerate(lines):
        fields = line.split("\t")
        row = tuple(fields[c].strip() if c < len(fields) else "" for c in columns)
        if number == 0 and fmt == "stsb" and not _is_number(row[2]):
            continue  # a header row
        rows.append(row)
    return rows


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def sts_sentences(dataset: str, split: str) -> list[str]:
    """Both sentences of every row of an STS dataset's split (FileNotFoundError if absent)."""
    if dataset not in STS_DATASETS and Path(dataset).expanduser().is_file():
        path, fmt = Path(dataset).expanduser(), "stsb"  # an STS-B-format file by path
    else:
        path, fmt = sts_file(dataset, split), STS_DATASETS.get(dataset, ("stsb",))[0]
    return [s for row in sts_rows(path, fmt) for s in row[:2] if s]


def held_out_sts_sentences() -> set[str]:
    """The normalised sentences of every non-train split of every STS dataset found in the
    data folder (what ``sentences:`` and ``scored:`` never train on)."""
    held: set[str] = set()
    for dataset, (_, files) in STS_DATASETS.items():
        for split, rel in files.items():
            if split != "train" and (data_dir() / rel).is_file():
                held.update(normalize(s) for s in sts_sentences(dataset, split))
    return held


def pairs_path(dataset: str) -> Path:
    """The file of a ``pairs:PATH`` bitext set: as given, else under the data folder."""
    path = Path(dataset.removeprefix("pairs:")).expanduser()
    if path.is_file() or path.is_absolute():
        return path
    under = data_dir() / path
    return under if under.is_file() else path


def tsv_columns(path: Path, count: int = 2) -> list[str]:
    """The texts of the first ``count`` columns of a TSV with a header (every row)."""
    lines = [line for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    return [
        field.strip() for line in lines[1:] for field in line.removesuffix("\r").split("\t")[:count]
    ]


def bitext_sentences(dataset: str, split: str) -> list[str]:
    """Both sides of a bitext set (``stsb`` of ``split``, or ``pairs:PATH``)."""
    if dataset == "stsb":
        return [s for _, name in STSB_SIDES for s in sts_sentences(name, split)]
    if not dataset.startswith("pairs:"):
        raise ValueError(f"unknown bitext dataset {dataset!r}; expected 'stsb' or 'pairs:PATH'")
    path = pairs_path(dataset)
    if not path.is_file():
        raise FileNotFoundError(f"bitext set {dataset!r}: no such file {str(path)!r}")
    return tsv_columns(path)


def probe_sentences(dataset: str, split: str = "dev") -> list[str]:
    """The ``text`` column of a probe folder's ``<split>.tsv``."""
    folder = Path(dataset).expanduser()
    folder = folder if folder.is_dir() else data_dir() / dataset
    path = folder / f"{split}.tsv"
    lines = [line for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    header = lines[0].split("\t")
    if "text" not in header:
        raise ValueError(f"{path}:1: expected a header with 'label' and 'text', got {header}")
    column = header.index("text")
    return [line.split("\t", len(header) - 1)[column].strip() for line in lines[1:]]


def _names(value: str | Iterable[str]) -> list[str]:
    if isinstance(value, str):
        return [n.strip() for n in value.split(",") if n.strip()]
    return list(value)


def evaluation_sentences(evals: dict) -> dict[str, list[str]]:
    """The sentences each evaluation of ``config.evals`` scores on, by ``"<eval> <set>"``.

    ``sts`` (and ``retrieval``): every dataset of ``datasets`` (or ``dataset``) at ``split``
    (default ``dev``); ``bitext``: its ``dataset`` (default ``stsb``) at ``split``; ``probe``:
    its ``dataset``'s dev file. Tasks without sentences of their own (fidelity, speed,
    memory) add nothing; ``tfds:`` datasets are not read (no download here).

    An evaluation set whose file is absent is listed with no sentence, its label saying so:
    its evaluator skips it too (with the reason), so nothing can leak into it.
    """
    out: dict[str, list[str]] = {}
    for name, section in dict(evals).items():
        task, split = section.get("task", name), section.get("split", "dev") or "dev"
        if task in ("sts", "retrieval"):
            default = "stsb,stsb_tr,sick" if task == "sts" else "stsb"
            datasets = section.get("datasets", section.get("dataset", default)) or default
            for dataset in _names(datasets):
                if not dataset.startswith("tfds:"):
                    _add(out, f"evals.{name}: {dataset} {split}", sts_sentences, dataset, split)
        elif task == "bitext":
            dataset = section.get("dataset", "stsb") or "stsb"
            _add(out, f"evals.{name}: {dataset} {split}", bitext_sentences, dataset, split)
        elif task == "probe":
            dataset = section.get("dataset", PROBE_DEFAULT) or PROBE_DEFAULT
            _add(out, f"evals.{name}: {dataset} dev", probe_sentences, dataset)
    return out


def _add(out: dict[str, list[str]], label: str, read, *args) -> None:
    """``out[label] = read(*args)``, or no sentence under a label naming the absent file."""
    try:
        out[label] = read(*args)
    except FileNotFoundError as e:
        out[f"{label} (absent, not evaluated: {e})"] = []
