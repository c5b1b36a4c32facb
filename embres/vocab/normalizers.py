"""Language-aware text normalisers, built only from ``tokenizers`` parts (so they serialise).

A multilingual tokenizer's normaliser decides what a token *is*: BERT's uncased normaliser
strips every accent, so Turkish ``şiş`` and ``sis`` (fog) become one token, and lowercases
``I`` to ``i`` although in Turkish the lowercase of ``I`` is ``ı`` (and of ``İ`` is ``i``).
Two normalisers are offered here:

* :func:`language_normalizer` is for a vocabulary of one language. It applies that language's
  casing (Turkish: ``I → ı``, ``İ → i`` before lowercasing), strips accents except on the
  language's own letters (Turkish keeps ``ç ğ ı ö ş ü``), and for Turkish joins apostrophe
  suffixes (``Türkiye'nin → türkiyenin``) so a proper noun's case suffix becomes a WordPiece
  continuation (``türkiye ##nin``) exactly as a common noun's does (``evin → ev ##in``).

* :func:`bilingual_normalizer` is for a vocabulary that extends an uncased BERT teacher (the
  teacher's ids kept, the language's tokens appended). On text without the language's
  letters it is *exactly* the teacher's ``BertNormalizer`` (lowercase, strip accents,
  ``I → i``, apostrophes kept), so English text gives the teacher's token ids. It differs
  only where a kept letter appears: ``ç ğ ı ö ş ü`` (and ``Ç Ğ Ö Ş Ü``, lowercased) survive
  instead of losing their marks. Casing must follow one rule for both languages, and the
  English one wins: Turkish capital ``I`` becomes ``i``, not ``ı`` (``IRMAK → irmak``, not
  ``ırmak``). That is the cost of keeping English exact; ``İ`` still becomes ``i`` (as BERT
  does it too), and lowercase ``ı`` is kept. Apostrophes are kept as well (English needs
  ``don ' t``), so ``Türkiye'nin`` stays three pre-tokens in bilingual mode.

Keeping letters while stripping accents uses a trick that serialises into ``tokenizer.json``:
each kept letter is replaced by a private-use placeholder, the text is decomposed (NFD) and
its nonspacing marks dropped, then the placeholders are replaced back. Placeholders cannot
collide with input text: BERT's clean-text step, which runs first, deletes private-use
characters (Unicode category Co).
"""

from __future__ import annotations

import dataclasses

from tokenizers import Regex
from tokenizers import normalizers as N


@dataclasses.dataclass(frozen=True)
class Language:
    """Facts about a language that a normaliser needs.

    Attributes:
      code: ISO 639-1 code.
      kept_letters: lowercase letters whose diacritics are part of the letter (kept when
        accents are stripped); their capitals are kept too (lowercased when lowercasing).
      kept_capitals: capitals kept in cased mode that are not the ``str.upper`` of a kept
        letter (Turkish ``İ``: ``"i".upper()`` is ``I``).
      casing: replacements applied before generic lowercasing (language-specific case pairs).
      apostrophe_suffixes: whether an apostrophe between letters only separates a suffix
        from a proper noun (Turkish ``Ankara'da``) and should be removed.
    """

    code: str
    kept_letters: str = ""
    kept_capitals: str = ""
    casing: tuple[tuple[str, str], ...] = ()
    apostrophe_suffixes: bool = False


LANGUAGES: dict[str, Language] = {
    "en": Language("en"),
    "tr": Language(
        "tr",
        kept_letters="çğıöşü",
        kept_capitals="İ",
        casing=(("I", "ı"), ("İ", "i")),
        apostrophe_suffixes=True,
    ),
}

# Apostrophes (ASCII and the typographic right quote) between two letters.
APOSTROPHE_BETWEEN_LETTERS = r"(?<=\p{L})['’](?=\p{L})"
# First private-use code point used for placeholders (BMP private-use area).
_PLACEHOLDER_BASE = 0xE000


def get_language(lang: str) -> Language:
    """The :class:`Language` for ``lang``; raises ``ValueError`` naming the known codes."""
    if lang not in LANGUAGES:
        raise ValueError(f"lang={lang!r} is not known; expected one of {sorted(LANGUAGES)}")
    return LANGUAGES[lang]


def _bert_clean() -> N.Normalizer:
    """BERT's clean-text and CJK spacing, without its accent stripping or lowercasing."""
    return N.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False
    )


def _protect(letters: str, lowercase: bool) -> tuple[list[N.Normalizer], list[N.Normalizer]]:
    """(replace letters by placeholders, replace placeholders back) normaliser lists.

    With ``lowercase`` the capital of each letter shares the lowercase letter's placeholder,
    so it comes back lowercased; otherwise capitals get their own placeholders.
    """
    forms: list[tuple[str, str]] = []  # (surface in text, what it becomes)
    for letter in letters:
        forms.append((letter, letter))
        upper = letter.upper()
        # ``ı`` is the lowercase of ``I`` only under Turkish casing: generic casing (and the
        # bilingual normaliser) makes ``I`` an ``i``, so ``I`` is not protected as ``ı``.
        if len(upper) == 1 and upper != letter and upper.lower() == letter:
            forms.append((upper, letter if lowercase else upper))
    targets = sorted({out for _, out in forms})
    placeholder = {out: chr(_PLACEHOLDER_BASE + i) for i, out in enumerate(targets)}
    protect = [N.Replace(src, placeholder[out]) for src, out in forms]
    restore = [N.Replace(placeholder[out], out) for out in targets]
    return protect, restore


def language_normalizer(lang: str, lowercase: bool = True) -> N.Normalizer:
    """A normaliser for a one-language vocabulary (see the module docstring).

    Steps: NFC; BERT clean text (control characters removed, whitespace to spaces, spaces
    around CJK characters); the language's casing then lowercasing (when ``lowercase``);
    accents stripped except on the language's letters; for Turkish, apostrophes between
    letters removed.

    Args:
      lang: a key of :data:`LANGUAGES` ("tr", "en").
      lowercase: lowercase with the language's casing rules.

    Returns:
      A ``tokenizers`` normaliser (serialisable into ``tokenizer.json``).
    """
    language = get_language(lang)
    # NFC first so a decomposed ``s + U+0327`` is recognised as the kept letter ``ş``.
    steps: list[N.Normalizer] = [N.NFC(), _bert_clean()]
    if language.apostrophe_suffixes:
        steps.append(N.Replace(Regex(APOSTROPHE_BETWEEN_LETTERS), ""))
    if lowercase:
        # Language pairs first: generic lowercasing would turn ``I`` into ``i``.
        steps += [N.Replace(src, dst) for src, dst in language.casing]
        steps.append(N.Lowercase())
    kept = language.kept_letters + ("" if lowercase else language.kept_capitals)
    protect, restore = _protect(kept, lowercase)
    steps += protect + [N.NFD(), N.StripAccents()] + restore
    # Recompose what NFD split apart and no step removed (e.g. Hangul), as the text came in.
    steps.append(N.NFC())
    return N.Sequence(steps)


def bilingual_normalizer(lang: str) -> N.Normalizer:
    """A normaliser for an uncased BERT teacher's vocabulary extended with ``lang``.

    On text without ``lang``'s letters it gives exactly what the teacher's
    ``BertNormalizer(lowercase=True)`` gives; the language's letters (and their capitals,
    lowercased) survive accent stripping. See the module docstring for the casing trade-off.

    Args:
      lang: a key of :data:`LANGUAGES`.

    Returns:
      A ``tokenizers`` normaliser.
    """
    language = get_language(lang)
    protect, restore = _protect(language.kept_letters, lowercase=True)
    # The teacher's own normaliser split in two, so placeholders go in after its clean-text
    # step (which would delete them) and before its accent stripping. Its stripping (NFD,
    # drop nonspacing marks Mn) is reused as is: ``StripAccents`` also drops spacing marks
    # (Mc, e.g. Devanagari vowel signs), which would change the teacher's ids.
    strip_and_lower = N.BertNormalizer(
        clean_text=False, handle_chinese_chars=False, strip_accents=True, lowercase=True
    )
    # NFC first: NFD(NFC(x)) == NFD(x), so the teacher's result is unchanged, while a
    # decomposed kept letter is composed and so recognised.
    return N.Sequence([N.NFC(), _bert_clean(), *protect, strip_and_lower, *restore])
