"""``sentences:stsb,sick``: the train splits' sentences of STS datasets, as an unlabelled corpus.

Distillation needs text like the text a model will embed. The STS datasets' train splits are
such text; their scores are not used, only their sentences, each once, in file order. Every
sentence that, normalised (:func:`embres.data.eval_sets.normalize`: case, whitespace, a final
``.!?``), equals a sentence of a dev, trial or test file of any STS dataset found in the data
folder is removed (SICK's trial split shares 671 of its 916 sentences with its train split),
so no evaluation sentence is ever seen in training. The corpus is written once to
``$EMBRES_CACHE/sentences/`` (default ``~/.cache/embres``) through
:func:`embres.cache.build_once`, keyed by the datasets and the sha256 of every file it was
read from, and then read like any ``text:`` corpus.

Files (under ``$EMBRES_DATA_DIR``): ``stsb/sts-train.csv`` (tab-separated, sentences in
fields 6 and 7), ``sick/SICK_train.txt`` (a header naming ``sentence_A``/``sentence_B``).

``scored:stsb,sick`` is the same train splits as scored pairs (:func:`scored_pairs_file`), for
fine-tuning on their labels: each score is rescaled to [0, 1] by its dataset's range (STS-B
0-5, SICK 1-5), pairs holding any evaluation sentence are dropped the same way, and the
datasets are interleaved in one fixed shuffled order, written once as a TSV that
``pairs:``'s reader streams.
"""

from __future__ import annotations

import functools
import os
import random
from pathlib import Path

from embres.data.eval_sets import held_out_sts_sentences, normalize

# name -> (train file, [held-out files], how sentences are found)
DATASETS = {
    "stsb": ("stsb/sts-train.csv", ["stsb/sts-dev.csv", "stsb/sts-test.csv"], "stsb"),
    "sick": ("sick/SICK_train.txt", ["sick/SICK_trial.txt", "sick/SICK_test.txt"], "sick"),
    # STSb-TR: a machine translation of STS-B, row by row (same columns, a header row)
    "stsb_tr": (
        "stsb_tr/stsb_tr_train.tsv",
        ["stsb_tr/stsb_tr_dev.tsv", "stsb_tr/stsb_tr_test.tsv"],
        "stsb",
    ),
}
# name -> the range of its gold scores (rescaled to [0, 1] in ``scored:``)
SCORE_RANGES = {"stsb": (0.0, 5.0), "sick": (1.0, 5.0), "stsb_tr": (0.0, 5.0)}
# name -> the dataset it translates row by row: a row whose original holds an evaluation
# sentence is dropped too (a translation need not match the translated evaluation sentence)
TRANSLATES = {"stsb_tr": "stsb"}
SCORED_HEADER = ("sentence1", "sentence2", "score")
# What a cached corpus depends on besides its files: bump when the filter or format changes.
CORPUS_VERSION = 3  # 3: translated rows dropped with their originals; 2: normalised match


def parse_names(rest: str | None, raw: str) -> tuple[str, ...]:
    """``"stsb,sick"`` -> ("stsb", "sick").

    Raises:
      ValueError: naming ``config.data.source`` and the datasets known.
    """
    names = tuple(n.strip() for n in (rest or "").split(",") if n.strip())
    unknown = [n for n in names if n not in DATASETS]
    if not names or unknown:
        raise ValueError(
            f"config.data.source={raw!r}: expected '{raw.partition(':')[0]}:NAME[,NAME...]' with "
            f"names from "
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


def _rows(path: Path, layout: str) -> list[tuple[str, str, str]]:
    """(sentence a, sentence b, score as written) of each row of a train or evaluation file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if layout == "sick":
        header = lines[0].split("\t")
        columns = [header.index(c) for c in ("sentence_A", "sentence_B", "relatedness_score")]
        lines = lines[1:]
    else:
        columns = [5, 6, 4]
    out = []
    for line in lines:
        fields = line.split("\t")
        out.append(tuple(fields[c].strip() if c < len(fields) else "" for c in columns))
    return out


def _read(path: Path, layout: str) -> list[str]:
    return [s for row in _rows(path, layout) for s in row[:2] if s]


def _evaluation_sentences() -> set[str]:
    """Every normalised sentence of every STS dataset's dev, trial and test files found in
    the data folder (not only the datasets asked for)."""
    return held_out_sts_sentences()


def sentences(names: tuple[str, ...]) -> list[str]:
    """The train sentences of ``names``, each once, none that an evaluation file holds.

    Raises:
      FileNotFoundError: naming the train files absent from ``$EMBRES_DATA_DIR``.
    """
    if missing := missing_files(names):
        raise FileNotFoundError(f"no such file(s) {missing} (set EMBRES_DATA_DIR)")
    held_out = _evaluation_sentences()
    seen: dict[str, None] = {}
    for name in names:
        train, _, layout = DATASETS[name]
        for s in _read(data_dir() / train, layout):
            if normalize(s) not in held_out:
                seen.setdefault(s, None)
    return list(seen)


def scored_pairs(names: tuple[str, ...]) -> list[tuple[str, str, float]]:
    """The train pairs of ``names`` with scores rescaled to [0, 1], interleaved in one fixed
    shuffled order; a pair holding any evaluation sentence is dropped.

    Raises:
      FileNotFoundError: naming the train files absent from ``$EMBRES_DATA_DIR``.
      ValueError: a score that is not a number, naming the file and line.
    """
    if missing := missing_files(names):
        raise FileNotFoundError(f"no such file(s) {missing} (set EMBRES_DATA_DIR)")
    held_out = _evaluation_sentences()
    pairs = []
    for name in names:
        train, _, layout = DATASETS[name]
        low, high = SCORE_RANGES[name]
        rows = _rows(data_dir() / train, layout)
        for i, (a, b, raw) in enumerate(rows):
            if _original_held_out(name, i, len(rows), held_out):
                continue
            try:
                score = float(raw)
            except ValueError:
                if i == 0 and layout == "stsb":
                    continue  # a header row
                raise ValueError(
                    f"{data_dir() / train}:{i + 1 + (layout == 'sick')}: score {raw!r} is not "
                    "a number"
                ) from None
            if a and b and normalize(a) not in held_out and normalize(b) not in held_out:
                pairs.append((a, b, (score - low) / (high - low)))
    # One fixed order (not the run's seed): a resumed or repeated run reads the same file.
    random.Random(0).shuffle(pairs)
    return pairs


def _original_held_out(name: str, row: int, rows: int, held_out: set[str]) -> bool:
    """Whether row ``row`` of a translated dataset translates a pair holding an evaluation
    sentence (its original dataset's row, read once)."""
    if name not in TRANSLATES:
        return False
    original = _original_rows(TRANSLATES[name], str(data_dir()))
    if len(original) != rows:
        raise ValueError(
            f"{DATASETS[name][0]} has {rows} rows but {DATASETS[TRANSLATES[name]][0]}, which "
            f"it translates row by row, has {len(original)}"
        )
    a, b, _ = original[row]
    return normalize(a) in held_out or normalize(b) in held_out


@functools.cache
def _original_rows(name: str, folder: str) -> list[tuple[str, str, str]]:
    train, _, layout = DATASETS[name]
    rows = _rows(Path(folder) / train, layout)
    # align with a translation that has a header row: the original (STS-B) has none
    return [("", "", "score"), *rows] if name == "stsb" else rows


def corpus_key(kind: str, names: tuple[str, ...]) -> dict:
    """What a cached ``sentences:``/``scored:`` corpus depends on: the datasets, the sha256
    of every train and evaluation file present, and :data:`CORPUS_VERSION`."""
    from embres.cache import file_digest
    from embres.data.eval_sets import STS_DATASETS

    relative = [DATASETS[n][0] for n in names]
    relative += [r for _, files in STS_DATASETS.values() for r in files.values()]
    files = {
        rel: file_digest(data_dir() / rel)
        for rel in sorted(set(relative))
        if (data_dir() / rel).is_file()
    }
    return {"kind": kind, "names": list(names), "version": CORPUS_VERSION, "files": files}


def _cached(kind: str, names: tuple[str, ...], cache_root: str | None, write) -> str:
    """``$EMBRES_CACHE/<kind>/<names>-<digest of corpus_key>.<ext>``, written once by
    ``write(path)`` through :func:`embres.cache.build_once` and returned."""
    from embres.cache import build_once, keyed_path

    root = Path(cache_root or os.environ.get("EMBRES_CACHE", "~/.cache/embres")).expanduser()
    key = corpus_key(kind, names)
    ext = ".tsv" if kind == "scored" else ".txt"
    path = keyed_path(root / kind, "_".join(names), key, ext)
    return str(build_once(path, key, write))


def sentences_text_file(names: tuple[str, ...], cache_root: str | None = None) -> str:
    """Writes :func:`sentences` once to a text file (one per line) and returns its path."""

    def write(path: Path) -> None:
        path.write_text("\n".join(sentences(names)) + "\n", encoding="utf-8")

    return _cached("sentences", names, cache_root, write)


def scored_pairs_file(names: tuple[str, ...], cache_root: str | None = None) -> str:
    """Writes :func:`scored_pairs` once as a TSV (header ``sentence1, sentence2, score``)
    and returns its path."""

    def write(path: Path) -> None:
        rows = ["\t".join(SCORED_HEADER)]
        rows += [f"{a}\t{b}\t{score:.6g}" for a, b, score in scored_pairs(names)]
        path.write_text("\n".join(rows) + "\n", encoding="utf-8")

    return _cached("scored", names, cache_root, write)
