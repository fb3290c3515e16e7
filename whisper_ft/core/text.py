"""The one text normaliser used for scoring, at evaluation time and during training.

``normalize_text(text, language)``:

1. NFKC: full-width forms fold to their ASCII/standard forms (``，`` -> ``,``, ``ＡＢ１`` -> ``AB1``);
2. Chinese (``zh``/``yue``, or no language given and the text holds Han characters):
   traditional -> simplified with zhconv (``zh-hans``);
3. English (``en``): Whisper's English normaliser (lower case, numbers written as digits,
   British -> American spellings, contractions, filler words such as "um" dropped);
   other languages: lower case;
4. every Unicode punctuation mark and symbol (general categories ``P*`` and ``S*``, plus
   invisible format characters ``Cf``) becomes a space, except a ``.``/``,`` between two digits
   (``3.5`` stays ``3.5``);
5. whitespace collapsed to single spaces, trimmed.

With ``numbers=True`` (the default, :data:`NORMALIZER_NAME`) number formatting is made
comparable too (:mod:`whisper_ft.core.numbers`): for Chinese, Arabic digits become Chinese numerals as
the references write them (``2015年`` -> ``二零一五年``, ``1000億`` -> ``一千亿``, ``80%`` ->
``百分之八十``), between steps 3 and 4; for English, written digit runs are joined like the
spoken runs Whisper's normaliser joins (``1, 2, 3`` and ``ONE TWO THREE`` -> ``123``).
``numbers=False`` is the previous normaliser (:data:`BASIC_NORMALIZER_NAME`), and
:func:`normalize_whitespace` the raw form (:data:`RAW_NORMALIZER_NAME`).

Spaces are kept; :mod:`whisper_ft.core.scoring` drops them for CER on languages written without
spaces (see :func:`cer_ignores_spaces`).
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache
from importlib import resources

from whisper_ft.core.languages import CER_LANGUAGES, normalize_language
from whisper_ft.core.numbers import chinese_numbers, english_decimals, english_number_runs

# Names that go into report.json with every score, so numbers stay comparable across tools
# and versions; bump the version whenever what normalize_text does changes.
NORMALIZER_NAME = "whisper-ft/2"
BASIC_NORMALIZER_NAME = "whisper-ft/1"
RAW_NORMALIZER_NAME = "raw"
NORMALIZER_DESCRIPTIONS = {
    NORMALIZER_NAME: "NFKC, zh traditional->simplified, zh digits->Chinese numerals, Whisper English "
                     "normaliser + digit runs joined, lower case, punctuation and symbols removed",
    BASIC_NORMALIZER_NAME: "NFKC, zh traditional->simplified, Whisper English normaliser, lower case, "
                           "punctuation and symbols removed (numbers as written)",
    RAW_NORMALIZER_NAME: "whitespace collapsed only (case, punctuation and numbers as written)",
}

_CHINESE = frozenset({"zh", "yue"})
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]")
_SPACES = re.compile(r"\s+")
_DIGIT_SEPARATORS = frozenset(".,")


@lru_cache(maxsize=1)
def english_spelling_map() -> dict[str, str]:
    """Whisper's British -> American spelling map (vendored from openai-whisper, MIT)."""
    text = resources.files("whisper_ft.resources").joinpath("english.json").read_text(encoding="utf-8")
    return json.loads(text)


@lru_cache(maxsize=1)
def _english_normalizer():
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer(english_spelling_map())


def _is_removed(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return cat[0] in "PS" or cat == "Cf"


def remove_punctuation_and_symbols(text: str) -> str:
    """Replace every ``P*``/``S*``/``Cf`` character by a space (a ``.`` or ``,`` between digits stays)."""
    out = []
    n = len(text)
    for i, ch in enumerate(text):
        if _is_removed(ch):
            if (
                ch in _DIGIT_SEPARATORS
                and 0 < i < n - 1
                and text[i - 1].isdigit()
                and text[i + 1].isdigit()
            ):
                out.append(ch)
            else:
                out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def to_simplified(text: str) -> str:
    """Traditional -> simplified Chinese (zhconv ``zh-hans``; other text passes unchanged)."""
    import zhconv

    return zhconv.convert(text, "zh-hans")


def _language_code(language: str | None) -> str | None:
    return normalize_language(language) if language else None


def normalize_text(text: str, language: str | None, *, numbers: bool = True) -> str:
    """Normalise a transcript for scoring (see the module docstring); ``language`` may be None.

    ``numbers=False`` leaves number formatting as written (the ``whisper-ft/1`` normaliser).
    """
    lang = _language_code(language)
    s = unicodedata.normalize("NFKC", text)
    chinese = lang in _CHINESE or (lang is None and _HAN.search(s) is not None)
    if chinese:
        s = to_simplified(s)
    if lang == "en":
        s = _english_normalizer()(s)
        if numbers:
            s = english_decimals(s)
    else:
        s = s.lower()
    if numbers and chinese:
        s = chinese_numbers(s)
    s = remove_punctuation_and_symbols(s)
    s = _SPACES.sub(" ", s).strip()
    if numbers and lang == "en":
        s = english_number_runs(s)
    return s


def normalize_whitespace(text: str) -> str:
    """The raw form: whitespace collapsed to single spaces and trimmed, nothing else changed."""
    return _SPACES.sub(" ", text).strip()


def cer_ignores_spaces(language: str | None) -> bool:
    """CER counts characters without spaces for languages written without them (zh, ja, ...)
    and when the language is unknown; for other languages spaces count as characters."""
    lang = _language_code(language)
    return lang is None or lang in CER_LANGUAGES


def remove_spaces(text: str) -> str:
    return _SPACES.sub("", text)
