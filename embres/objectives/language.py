"""A student's language: its tokenizer and the rows it starts from, built once per workdir.

Shared by the cross-lingual objectives. The tokenizer is one of

* ``teacher``: the teacher's own (the baseline: Turkish through English WordPiece);
* ``target``: a new vocabulary trained on the target language's text;
* ``bilingual``: the teacher's vocabulary with its ids, plus the target language's tokens;
* ``trimmed``: the teacher's vocabulary without the tokens the corpus never uses;

or a directory prepared with ``python -m embres.vocab`` (``config.objective.tokenizer``).
It is built by process 0 into ``<workdir>/vocab/`` and reused by a resumed run (its hash is
part of the checkpoint's resume facts, so a rebuilt, different vocabulary refuses to mix).

Rows for the new tokens come from the source model with no training
(:func:`embres.vocab.transfer_rows`): ``fvt`` (mean of the old pieces' rows), ``teacher``
(the teacher's vector of the token's string), ``dictionary`` (the translations' vectors,
FVT elsewhere) or ``random``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

VOCABS = ("teacher", "target", "bilingual", "trimmed")
INITS = ("random", "fvt", "teacher", "dictionary")


def text_files(spec: str) -> list[Path]:
    """``"a.txt,b.txt"`` -> paths (``""`` -> none).

    Raises:
      FileNotFoundError: naming ``config.objective.vocab_text`` and the missing file.
    """
    paths = [Path(p.strip()).expanduser() for p in str(spec or "").split(",") if p.strip()]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(
                f"config.objective.vocab_text names {str(path)!r}, which does not exist"
            )
    return paths


def read_lines(paths: list[Path]) -> Iterator[str]:
    """Non-blank stripped lines of each file (UTF-8)."""
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield line.strip()


def _file_key(path: Path) -> dict:
    stat = path.resolve().stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns}


def tokenizer_hash(tokenizer: Any) -> str:
    """A hash of the tokenizer's full definition (vocabulary, normaliser, model)."""
    text = tokenizer.backend_tokenizer.to_str()
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def build_tokenizer(
    obj: Any,
    teacher_tokenizer: Any,
    target_texts: list[str],
    source_texts: list[str],
    directory: Path,
    log=print,
) -> tuple[Any, np.ndarray | None]:
    """(student tokenizer, kept teacher ids for ``trimmed`` else None), cached in ``directory``.

    Args:
      obj: ``config.objective`` (``vocab``, ``tokenizer``, ``vocab_size``, ``vocab_model``,
        ``lang``, ``vocab_text``).
      teacher_tokenizer: the teacher's tokenizer.
      target_texts: target-language training texts (added to ``vocab_text``).
      source_texts: source-language training texts (the English safety check of
        ``bilingual`` and the corpus ``trimmed`` keeps tokens for).
      directory: where the built tokenizer is saved and found again.
    """
    if obj.tokenizer:
        return _load_tokenizer(Path(obj.tokenizer).expanduser())
    if obj.vocab == "teacher":
        return teacher_tokenizer, None
    files = text_files(obj.vocab_text)
    key = _vocab_key(obj, files, target_texts, teacher_tokenizer)
    key_file = directory / "embres_vocab.json"
    if key_file.exists() and json.loads(key_file.read_text()).get("key") == key:
        return _load_tokenizer(directory)
    texts = list(read_lines(files)) + list(target_texts)
    log(f"building the {obj.vocab!r} vocabulary from {len(texts):,} texts ({obj.lang})")
    tokenizer, kept_ids, info = _train_vocabulary(obj, teacher_tokenizer, texts, source_texts)
    _save_vocabulary(directory, tokenizer, kept_ids, key, info, texts, log, obj.vocab)
    return tokenizer, kept_ids


def _load_tokenizer(path: Path) -> tuple[Any, np.ndarray | None]:
    """A saved tokenizer and its ``kept_ids.npy`` (a trimmed vocabulary's), if any."""
    from transformers import AutoTokenizer

    kept = path / "kept_ids.npy"
    return AutoTokenizer.from_pretrained(str(path)), (np.load(kept) if kept.exists() else None)


def _vocab_key(obj: Any, files: list[Path], target_texts: list[str], teacher: Any) -> dict:
    """What a built vocabulary depends on (a saved one with another key is rebuilt)."""
    return {
        "vocab": obj.vocab,
        "size": int(obj.vocab_size),
        "model": obj.vocab_model,
        "lang": obj.lang,
        "files": [_file_key(p) for p in files],
        "target_texts": hashlib.sha256("\n".join(target_texts).encode()).hexdigest(),
        "teacher": tokenizer_hash(teacher),
        "guard": obj.english_guard,
    }


def _train_vocabulary(obj: Any, teacher: Any, texts: list[str], source_texts: list[str]):
    """(tokenizer, kept teacher ids or None, info) of vocabulary ``obj.vocab``."""
    from embres import vocab

    if obj.vocab == "target":
        tokenizer = vocab.train_tokenizer(
            texts, model=obj.vocab_model, vocab_size=obj.vocab_size, lang=obj.lang
        )
        return tokenizer, None, {}
    if obj.vocab == "bilingual":
        tokenizer, info = vocab.extend_tokenizer(
            teacher,
            texts,
            vocab_size=obj.vocab_size,
            lang=obj.lang,
            english_texts=source_texts,
            english_guard=obj.english_guard,
        )
        return tokenizer, None, info
    if obj.vocab == "trimmed":
        tokenizer, kept_ids = vocab.trim_tokenizer(teacher, texts + list(source_texts))
        return tokenizer, kept_ids, {}
    raise ValueError(f"config.objective.vocab={obj.vocab!r}; expected one of {VOCABS}")


def _save_vocabulary(directory, tokenizer, kept_ids, key, info, texts, log, kind) -> None:
    """The tokenizer, its kept ids and ``embres_vocab.json`` (key and statistics)."""
    from embres import vocab

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory))
    if kept_ids is not None:
        np.save(directory / "kept_ids.npy", kept_ids)
    stats = vocab.fertility(tokenizer, texts[:20000])
    info = {k: v for k, v in {**info, **stats}.items() if isinstance(v, (int, float, str))}
    (directory / "embres_vocab.json").write_text(json.dumps({"key": key, "info": info}, indent=1))
    log(
        f"vocabulary {kind!r}: {len(tokenizer):,} tokens, "
        f"{stats['tokens_per_word']:.2f} tokens/word, unknown rate {stats['unk_rate']:.4f}"
    )


def initial_rows(
    rule: str,
    tokenizer: Any,
    teacher_tokenizer: Any,
    source_table: np.ndarray,
    kept_ids: np.ndarray | None,
    *,
    embed_fn: Any = None,
    dictionary: list[tuple[str, str]] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """[len(tokenizer), d] starting rows for the student's vocabulary.

    The teacher's own vocabulary keeps ``source_table``; a trimmed one keeps its kept rows;
    a new or extended one gets rows by ``rule`` (tokens that are teacher tokens at the same
    id, as in ``bilingual``, keep the teacher's rows whatever the rule).
    """
    from embres import vocab

    source_table = np.asarray(source_table, np.float32)
    if tokenizer is teacher_tokenizer:
        return source_table
    if kept_ids is not None:
        return source_table[kept_ids]
    rows = vocab.transfer_rows(
        rule,
        tokenizer,
        old_tokenizer=teacher_tokenizer,
        old_table=source_table,
        embed_fn=embed_fn,
        pairs=dictionary,
        seed=seed,
    )
    rows = np.asarray(rows, np.float32)
    shared = shared_teacher_ids(tokenizer, teacher_tokenizer)
    rows[: len(shared)][shared] = source_table[: len(shared)][shared]
    return rows


def shared_teacher_ids(tokenizer: Any, teacher_tokenizer: Any) -> np.ndarray:
    """Bool [min(V, V_teacher)]: id i is the same token in both vocabularies (bilingual)."""
    new, old = tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    n = min(len(tokenizer), len(teacher_tokenizer))
    same = np.zeros(n, bool)
    old_by_id = {i: t for t, i in old.items()}
    for token, i in new.items():
        if i < n and old_by_id.get(i) == token:
            same[i] = True
    return same
