"""OpenAI's audio response formats from a :class:`~whisper_ft.core.results.Transcription`.

- ``json``: ``{"text", "usage"}``; ``text``: the text and a newline; ``srt`` / ``vtt``: subtitles
  (:mod:`whisper_ft.core.writers`); ``verbose_json``: ``{"task", "language" (full English name, as
  OpenAI), "duration", "text", "segments" [id, seek, start, end, text, tokens, temperature,
  avg_logprob, compression_ratio, no_speech_prob], "words" (with the ``word`` granularity), "usage"}``;
- ``stream=true``: server-sent events, ``transcript.text.delta`` per segment as it is decoded
  (:func:`sse_delta`), then ``transcript.text.done`` with the text and usage (:func:`sse_done`).
"""

from __future__ import annotations

import json
import math

from whisper_ft.core.results import Transcription, join_texts

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("segment", "word")
MEDIA_TYPES = {"json": "application/json", "verbose_json": "application/json", "text": "text/plain; charset=utf-8",
               "srt": "text/plain; charset=utf-8", "vtt": "text/plain; charset=utf-8"}  # as OpenAI and speaches send them


def language_name(code: str | None) -> str:
    """``"en"`` -> ``"english"`` (what OpenAI's verbose_json says); unknown codes as they are."""
    from whisper_ft.core.languages import LANGUAGES

    return LANGUAGES.get(code or "", code or "")


def _usage(t: Transcription) -> dict:
    return {"type": "duration", "seconds": int(math.ceil(t.duration))}


def _segment(seg) -> dict:
    from whisper_ft.decoding.batched import compression_ratio

    return {
        "id": seg.id, "seek": int(getattr(seg, "seek", 0)), "start": round(seg.start, 3), "end": round(seg.end, 3),
        "text": seg.text, "tokens": list(seg.tokens),
        "temperature": float(getattr(seg, "temperature", 0.0)),
        "avg_logprob": float(seg.avg_logprob if seg.avg_logprob is not None else 0.0),
        "compression_ratio": float(getattr(seg, "compression_ratio", None) or compression_ratio(seg.text)),
        "no_speech_prob": float(seg.no_speech_prob if seg.no_speech_prob is not None else 0.0),
    }


def verbose_json(t: Transcription, *, task: str, granularities: list[str]) -> dict:
    out = {"task": task, "language": language_name(t.language), "duration": round(t.duration, 3), "text": t.text}
    if "segment" in granularities or not granularities:
        out["segments"] = [_segment(s) for s in t.segments]
    if "word" in granularities:
        out["words"] = [{"word": w.word.strip(), "start": round(w.start, 3), "end": round(w.end, 3)}
                        for s in t.segments for w in (s.words or [])]
    out["usage"] = _usage(t)
    return out


def render(t: Transcription, fmt: str, *, task: str, granularities: list[str]) -> tuple[str, str]:
    """(body, media type) of one response format."""
    from whisper_ft.core.writers import to_srt, to_txt, to_vtt

    if fmt == "json":
        body = json.dumps({"text": t.text, "usage": _usage(t)}, ensure_ascii=False)
    elif fmt == "verbose_json":
        body = json.dumps(verbose_json(t, task=task, granularities=granularities), ensure_ascii=False)
    elif fmt == "text":
        body = to_txt(t)
    elif fmt == "srt":
        body = to_srt(t)
    else:
        body = to_vtt(t)
    return body, MEDIA_TYPES[fmt]


def sse_delta(sent: str, text: str) -> tuple[str, str | None]:
    """(the text sent so far with ``text`` joined on, its delta event or None when it adds nothing).
    The deltas concatenate to the final text (spaces where :func:`join_texts` puts them)."""
    joined = join_texts([sent, text]) if sent else join_texts([text])
    delta = joined[len(sent):]
    event = {"type": "transcript.text.delta", "delta": delta}
    return joined, (f"data: {json.dumps(event, ensure_ascii=False)}\n\n" if delta else None)


def sse_done(t: Transcription) -> str:
    """The closing event: the whole text and its usage, as OpenAI's streaming transcription ends."""
    return f"data: {json.dumps({'type': 'transcript.text.done', 'text': t.text, 'usage': _usage(t)}, ensure_ascii=False)}\n\n"
