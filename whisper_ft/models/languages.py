"""Whisper's languages (code -> name) and validation of user-given language names."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from whisper_ft.errors import WhisperFtError

# Languages written without spaces between words: score them by CER, the rest by WER.
CER_LANGUAGES = frozenset({"zh", "ja", "ko", "yue", "th", "lo", "my", "km", "bo"})


@lru_cache(maxsize=1)
def _tables() -> tuple[dict[str, str], dict[str, str]]:
    # Imported on first use: transformers takes seconds to import, and `prepare` needs only this.
    from transformers.models.whisper.tokenization_whisper import LANGUAGES as hf_languages
    from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE as hf_to_code

    return dict(hf_languages), dict(hf_to_code)


def __getattr__(name: str) -> Any:
    if name == "LANGUAGES":  # "zh" -> "chinese", in Whisper's token order
        return _tables()[0]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def normalize_language(language: str | None) -> str | None:
    """``"Chinese"``, ``"zh"``, ``"<|zh|>"`` -> ``"zh"``; ``None``/``""``/``"auto"`` -> ``None``.

    Raises :class:`WhisperFtError` listing the valid codes for anything else.
    """
    if language is None:
        return None
    lang = language.strip().lower().removeprefix("<|").removesuffix("|>")
    if lang in {"", "auto", "none"}:
        return None
    languages, to_code = _tables()
    if lang in languages:
        return lang
    if lang in to_code:
        return to_code[lang]
    raise WhisperFtError(
        f"unknown language {language!r}; use a Whisper language code: {', '.join(sorted(languages))}"
    )


def default_metric(language: str | None) -> str:
    """``cer`` for languages written without spaces (zh/ja/ko/...), ``wer`` otherwise."""
    return "cer" if language in CER_LANGUAGES else "wer"
