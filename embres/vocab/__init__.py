"""Language vocabularies: train, extend (bilingual), trim and edit a tokenizer; give new tokens rows.

Modules:
  normalizers: language-aware normalisers (Turkish ``I/ı/İ/i``, ``ç ğ ı ö ş ü`` kept).
  build: :func:`train_tokenizer`, :func:`extend_tokenizer`, :func:`trim_tokenizer`,
    :func:`add_words`, :func:`fertility`, :func:`table_bytes`.
  transfer: rows for a new vocabulary from a source model without training (FVT, the
    teacher's vector of each token's string, a bilingual dictionary).

``python -m embres.vocab stats|train|bilingual|trim`` runs them from the shell.
"""

from embres.vocab.build import (
    SPECIAL_TOKENS,
    add_words,
    extend_tokenizer,
    fertility,
    table_bytes,
    train_tokenizer,
    trim_tokenizer,
)
from embres.vocab.normalizers import (
    LANGUAGES,
    Language,
    bilingual_normalizer,
    language_normalizer,
)
from embres.vocab.transfer import (
    RULES,
    dictionary_rows,
    fvt_rows,
    teacher_forward_rows,
    token_strings,
    transfer_rows,
)

__all__ = [
    "LANGUAGES",
    "RULES",
    "SPECIAL_TOKENS",
    "Language",
    "add_words",
    "bilingual_normalizer",
    "dictionary_rows",
    "extend_tokenizer",
    "fertility",
    "fvt_rows",
    "language_normalizer",
    "table_bytes",
    "teacher_forward_rows",
    "token_strings",
    "train_tokenizer",
    "transfer_rows",
    "trim_tokenizer",
]
