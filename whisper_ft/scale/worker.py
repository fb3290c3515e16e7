"""One worker: a model opened once, and the decoding of one shard at a time.

Short files (at most 30 s) are decoded ``batch_size`` at a time in one CTranslate2 call, packed
into shared 30 s windows (:func:`whisper_ft.decoding.batched.transcribe_clips_ct2`, the fast path
of ``eval`` and ``serve``); longer files one at a time through faster-whisper's batched VAD
pipeline (:func:`whisper_ft.decoding.ct2_transcribe.transcribe_ct2`, as ``infer-ct2``). Decoding is at
temperature 0 only, so the same shard gives the same text on any engine and in any worker.

Each file's transcript becomes training records of at most 30 s: a short file is one record with
its timed ``sentences``; a long file's segments are grouped into slices (``audio.start_time`` /
``end_time``) of at most 30 s. A record with no text, or whose decode looks unreliable (average
log-probability under ``min_avg_logprob``, compression ratio over ``max_compression_ratio``: a
loop), is rejected, with the reason. A file that cannot be read or decoded is a failure and never
stops the shard.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict, dataclass

from whisper_ft.core.audio import CHUNK_SECONDS, SAMPLE_RATE
from whisper_ft.core.errors import WhisperFtError
from whisper_ft.core.results import Segment, Transcription
from whisper_ft.scale.plan import Item


@dataclass(frozen=True)
class DecodeSettings:
    """How every worker decodes; all but ``device`` and ``cpu_threads`` decide the output."""

    model: str  # a CTranslate2 folder (resolved once by the driver)
    device: str = "auto"
    compute_type: str = "auto"
    cpu_threads: int | None = None
    beam_size: int = 5
    language: str | None = None  # overrides the inputs' own
    task: str = "transcribe"
    batch_size: int = 16  # short clips per packed CTranslate2 call
    long_batch_size: int = 8  # faster-whisper's batched pipeline for files over 30 s
    pack: bool = True
    max_audio_seconds: float | None = 4 * 3600.0
    min_avg_logprob: float | None = -1.0
    max_compression_ratio: float | None = 2.4
    formats: tuple[str, ...] = ()

    def output_defining(self) -> dict:
        d = asdict(self)
        for k in ("device", "cpu_threads"):
            d.pop(k)
        d["formats"] = list(self.formats)
        return d


def group_segments(segments: list[Segment], limit: float = CHUNK_SECONDS) -> list[list[Segment]]:
    """Consecutive segments in groups spanning at most ``limit`` seconds (a longer segment alone)."""
    groups: list[list[Segment]] = []
    for seg in segments:
        if groups and seg.end - groups[-1][0].start <= limit:
            groups[-1].append(seg)
        else:
            groups.append([seg])
    return groups


def _quality(segments: list[Segment], text: str) -> dict:
    from whisper_ft.decoding.batched import compression_ratio

    weighted = [(s.avg_logprob, max(1, len(s.tokens))) for s in segments if s.avg_logprob is not None]
    total = sum(w for _, w in weighted)
    avg = sum(a * w for a, w in weighted) / total if total else None
    return {"avg_logprob": None if avg is None else round(avg, 4), "compression_ratio": round(compression_ratio(text), 3)}


def _rejection(record: dict, settings: DecodeSettings) -> str | None:
    if not record["sentence"]:
        return "no text (silence or no speech)"
    avg, ratio = record["avg_logprob"], record["compression_ratio"]
    if settings.min_avg_logprob is not None and avg is not None and avg < settings.min_avg_logprob:
        return f"average log-probability {avg:.2f} under {settings.min_avg_logprob:g}"
    if settings.max_compression_ratio is not None and ratio > settings.max_compression_ratio:
        return f"compression ratio {ratio:.2f} over {settings.max_compression_ratio:g} (a loop)"
    return None


def transcription_records(item: Item, t: Transcription, *, long_form: bool) -> list[dict]:
    """Training records (whisper-ft manifest dicts, absolute audio paths) of one file's transcript,
    with their quality fields."""
    from whisper_ft.core.results import join_texts

    offset = item.start or 0.0
    segments = [s for s in t.segments if s.text.strip()]
    if long_form and segments:
        groups = [(g[0].start, g[-1].end, g) for g in group_segments(segments)]
    else:  # a short file, or a long one without text: one record (rejected when it has no text)
        groups = [(0.0, t.duration, segments)]
    records = []
    for n, (start, end, group) in enumerate(groups):
        text = join_texts(s.text for s in group)
        audio: dict = {"path": item.path}
        if long_form or item.start is not None:
            audio["start_time"] = round(offset + start, 3)
        if long_form or item.end is not None:
            audio["end_time"] = round(offset + end, 3)
        record = {
            "audio": audio, "sentence": text,
            "sentences": [{"start": round(max(0.0, s.start - start), 3), "end": round(max(0.0, s.end - start), 3),
                           "text": s.text.strip()} for s in group],
            "language": t.language, "duration": round(end - start, 3),
            "id": f"{item.key}_{n:05d}" if long_form else item.key,
        }
        record.update(_quality(group, text))
        records.append(record)
    return records


class ShardWorker:
    """A model opened once (``load_backend(kind="ctranslate2")``); call it with a shard's items."""

    def __init__(self, settings: DecodeSettings):
        from whisper_ft.decoding.backend import load_backend

        self.settings = settings
        self.backend = load_backend(settings.model, kind="ctranslate2", device=settings.device,
                                    compute_type=settings.compute_type, threads=settings.cpu_threads)
        self.ct2 = self.backend.ct2
        self.where = f"{socket.gethostname()}:{os.getpid()}"

    def _language(self, item: Item) -> str | None:
        from whisper_ft.core.languages import normalize_language

        return normalize_language(self.settings.language or item.language)

    def _short(self, batch: list[tuple[int, str | None, object]], done: dict, failed: dict) -> None:
        from whisper_ft.decoding.batched import Clip, transcribe_clips_ct2

        s = self.settings
        clips = [Clip(audio, language, s.task) for _, language, audio in batch]
        try:
            results = transcribe_clips_ct2(self.ct2, clips, beam_size=s.beam_size, pack=s.pack)
        except Exception:  # one bad clip must not fail its batch: decode each alone
            results = []
            for (i, _, _), clip in zip(batch, clips):
                try:
                    results += transcribe_clips_ct2(self.ct2, [clip], beam_size=s.beam_size, pack=False)
                except Exception as exc:
                    failed[i] = _message(exc)
                    results.append(None)
        for (i, _, _), r in zip(batch, results):
            if r is not None:
                done[i] = (r.transcription, False)

    def __call__(self, items: list[Item]) -> dict:
        """Decode one shard; returns its records, rejections, failures, per-file outputs and timings."""
        from whisper_ft.core.audio import load_audio
        from whisper_ft.decoding.ct2_transcribe import transcribe_ct2

        s = self.settings
        t0 = time.perf_counter()
        done: dict[int, tuple[Transcription, bool]] = {}
        failed: dict[int, str] = {}
        pending: list[tuple[int, str | None, object]] = []
        audio_seconds = 0.0
        for i, item in enumerate(items):
            try:
                language = self._language(item)
                audio = load_audio(item.path, item.start, item.end, max_seconds=s.max_audio_seconds)
                seconds = len(audio) / SAMPLE_RATE
                audio_seconds += seconds
                if seconds > CHUNK_SECONDS:  # one at a time through faster-whisper's batched VAD pipeline
                    done[i] = (transcribe_ct2(self.ct2, audio, language=language, task=s.task, temperature=0.0,
                                              beam_size=s.beam_size, batch_size=s.long_batch_size), True)
                    continue
                pending.append((i, language, audio))
                if len(pending) >= s.batch_size:
                    batch, pending = pending, []
                    self._short(batch, done, failed)
            except Exception as exc:
                failed[i] = _message(exc)
        if pending:
            self._short(pending, done, failed)
        return self._result(items, done, failed, audio_seconds, time.perf_counter() - t0)

    def _result(self, items, done, failed, audio_seconds, seconds) -> dict:
        from whisper_ft.core.writers import render

        records, rejected, failures, outputs = [], [], [], {}
        for i, item in enumerate(items):
            if i in failed:
                failures.append({"id": item.key, "audio": item.path, "error": failed[i]})
                continue
            t, long_form = done[i]
            for record in transcription_records(item, t, long_form=long_form):
                why = _rejection(record, self.settings)
                if why:
                    rejected.append(dict(record, rejected=why))
                else:
                    records.append(record)
            if self.settings.formats:
                t.source = item.path
                outputs[item.key] = {fmt: render(t, fmt) for fmt in self.settings.formats}
        return {"records": records, "rejected": rejected, "failures": failures, "outputs": outputs,
                "audio_seconds": audio_seconds, "decode_seconds": seconds, "worker": self.where}


def _message(exc: Exception) -> str:
    if isinstance(exc, WhisperFtError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
