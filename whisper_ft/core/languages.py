"""Whisper's languages (code -> name) and validation of user-given language names.

The table is written out here (the same as transformers' ``tokenization_whisper.LANGUAGES`` and
``TO_LANGUAGE_CODE``; a test holds them together where transformers is installed): reading it from
transformers cost the CTranslate2 commands and the server seconds of start-up.
"""

from __future__ import annotations

from whisper_ft.core.errors import WhisperFtError

# Languages written without spaces between words: score them by CER, the rest by WER.
CER_LANGUAGES = frozenset({"zh", "ja", "ko", "yue", "th", "lo", "my", "km", "bo"})


LANGUAGES: dict[str, str] = {  # code -> name, in Whisper's token order (<|en|> first)
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian", "ko": "korean",
    "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish", "pl": "polish", "ca": "catalan",
    "nl": "dutch", "ar": "arabic", "sv": "swedish", "it": "italian", "id": "indonesian", "hi": "hindi",
    "fi": "finnish", "vi": "vietnamese", "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay",
    "cs": "czech", "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian", "la": "latin",
    "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak", "te": "telugu", "fa": "persian",
    "lv": "latvian", "bn": "bengali", "sr": "serbian", "az": "azerbaijani", "sl": "slovenian", "kn": "kannada",
    "et": "estonian", "mk": "macedonian", "br": "breton", "eu": "basque", "is": "icelandic", "hy": "armenian",
    "ne": "nepali", "mn": "mongolian", "bs": "bosnian", "kk": "kazakh", "sq": "albanian", "sw": "swahili",
    "gl": "galician", "mr": "marathi", "pa": "punjabi", "si": "sinhala", "km": "khmer", "sn": "shona",
    "yo": "yoruba", "so": "somali", "af": "afrikaans", "oc": "occitan", "ka": "georgian", "be": "belarusian",
    "tg": "tajik", "sd": "sindhi", "gu": "gujarati", "am": "amharic", "yi": "yiddish", "lo": "lao", "uz": "uzbek",
    "fo": "faroese", "ht": "haitian creole", "ps": "pashto", "tk": "turkmen", "nn": "nynorsk", "mt": "maltese",
    "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan", "tl": "tagalog", "mg": "malagasy",
    "as": "assamese", "tt": "tatar", "haw": "hawaiian", "ln": "lingala", "ha": "hausa", "ba": "bashkir",
    "jw": "javanese", "su": "sundanese", "yue": "cantonese",
}
# other English names of the same languages (what transformers' TO_LANGUAGE_CODE adds)
LANGUAGE_ALIASES: dict[str, str] = {
    "burmese": "my", "valencian": "ca", "flemish": "nl", "haitian": "ht", "letzeburgesch": "lb", "pushto": "ps",
    "panjabi": "pa", "moldavian": "ro", "moldovan": "ro", "sinhalese": "si", "castilian": "es", "mandarin": "zh",
}
TO_LANGUAGE_CODE: dict[str, str] = {**{name: code for code, name in LANGUAGES.items()}, **LANGUAGE_ALIASES}


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
    if lang in TO_LANGUAGE_CODE:
        return TO_LANGUAGE_CODE[lang]
    raise WhisperFtError(
        f"unknown language {language!r}; use a Whisper language code: {', '.join(sorted(LANGUAGES))}"
    )


def default_metric(language: str | None) -> str:
    """``cer`` for languages written without spaces (zh/ja/ko/...), ``wer`` otherwise."""
    return "cer" if language in CER_LANGUAGES else "wer"
