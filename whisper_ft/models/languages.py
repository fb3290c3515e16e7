"""Whisper's languages (code -> name) and validation of user-given language names."""

from __future__ import annotations

from transformers.models.whisper.tokenization_whisper import LANGUAGES as _HF_LANGUAGES
from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE as _HF_TO_CODE

from whisper_ft.errors import WhisperFtError

LANGUAGES: dict[str, str] = dict(_HF_LANGUAGES)  # "zh" -> "chinese", in Whisper's token order
# Languages written without spaces between words: score them by CER, the rest by WER.
CER_LANGUAGES = frozenset({"zh", "ja", "ko", "yue", "th", "lo", "my", "km", "bo"})


def normalize_language(language: str | None) -> str | None:
    """``"Chinese"``, ``"zh"``, ``"<|zh|>"`` -> ``"zh"``; ``None``/``""``/``"auto"`` -> ``None``.

    Raises :class:`WhisperFtError` listing the valid codes for anything else.
    """
    if language is None:
        return None
    lang = language.strip().lower().removeprefix("<|").removesuffix("|>")
    if lang in {"", "auto", "none"}:
        return None
    if lang in LANGUAGES:
        return lang
    if lang in _HF_TO_CODE:
        return _HF_TO_CODE[lang]
    raise WhisperFtError(
        f"unknown language {language!r}; use a Whisper language code: {', '.join(sorted(LANGUAGES))}"
    )


def default_metric(language: str | None) -> str:
    """``cer`` for languages written without spaces (zh/ja/ko/...), ``wer`` otherwise."""
    return "cer" if language in CER_LANGUAGES else "wer"
