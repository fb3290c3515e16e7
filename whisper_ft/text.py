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

Spaces are kept; :mod:`whisper_ft.scoring` drops them for CER on languages written without
spaces (see :func:`cer_ignores_spaces`).
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache
from importlib import resources

from whisper_ft.models.languages import CER_LANGUAGES, normalize_language

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


def normalize_text(text: str, language: str | None) -> str:
    """Normalise a transcript for scoring (see the module docstring); ``language`` may be None."""
    lang = _language_code(language)
    s = unicodedata.normalize("NFKC", text)
    if lang in _CHINESE or (lang is None and _HAN.search(s)):
        s = to_simplified(s)
    if lang == "en":
        s = _english_normalizer()(s)
    else:
        s = s.lower()
    s = remove_punctuation_and_symbols(s)
    return _SPACES.sub(" ", s).strip()


def cer_ignores_spaces(language: str | None) -> bool:
    """CER counts characters without spaces for languages written without them (zh, ja, ...)
    and when the language is unknown; for other languages spaces count as characters."""
    lang = _language_code(language)
    return lang is None or lang in CER_LANGUAGES


def remove_spaces(text: str) -> str:
    return _SPACES.sub("", text)
