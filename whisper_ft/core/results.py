"""Typed transcription results, shaped like faster-whisper's (``Segment``, ``Word``), shared by the
transformers and CTranslate2 paths and by the writers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Word:
    start: float
    end: float
    word: str
    probability: float

    def to_dict(self) -> dict[str, Any]:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "word": self.word,
                "probability": round(self.probability, 4)}


@dataclass
class Segment:
    """A piece of the transcript with its start and end time (seconds from the start of the file)."""

    id: int
    start: float
    end: float
    text: str
    tokens: list[int] = field(default_factory=list)
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    words: list[Word] | None = None

    def to_dict(self, with_words: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {"start": round(self.start, 3), "end": round(self.end, 3), "text": self.text}
        if with_words and self.words is not None:
            d["words"] = [w.to_dict() for w in self.words]
        return d


@dataclass
class Transcription:
    """One audio file's transcript: language, duration and timed segments."""

    language: str | None
    duration: float
    segments: list[Segment]
    language_probability: float | None = None
    source: str | None = None  # the audio file it came from

    @property
    def text(self) -> str:
        """The segments' texts joined (with a space between segments of space-separated scripts)."""
        return join_texts(s.text for s in self.segments)

    def to_dict(self) -> dict[str, Any]:
        """``{"language", "duration", "segments": [{"start", "end", "text"}], "text"}``."""
        return {
            "language": self.language,
            "duration": round(self.duration, 3),
            "segments": [s.to_dict() for s in self.segments],
            "text": self.text,
        }


def is_cjk(ch: str) -> bool:
    """A character of a script written without spaces between words (Chinese, Japanese kana,
    Korean, and their full-width punctuation)."""
    code = ord(ch)
    return (0x2E80 <= code <= 0x9FFF or 0xAC00 <= code <= 0xD7AF or 0xF900 <= code <= 0xFAFF
            or 0xFF00 <= code <= 0xFFEF or 0x20000 <= code <= 0x3134F)


def join_texts(texts) -> str:
    """Segment texts joined as one text: a space between words of space-separated scripts, none
    between segments of Chinese, Japanese or Korean (also after an ASCII comma or full stop Whisper
    sometimes puts at the end of a Chinese segment), as every command and the server show it."""
    out = ""
    for t in texts:
        t = t.strip()
        if not t:
            continue
        if out and (out[-1].isascii() and out[-1].isalnum() or t[0].isascii() and t[0].isalnum()
                    or out[-1] in ",.!?;:" and not is_cjk(t[0])):
            out += " "
        out += t
    return out
