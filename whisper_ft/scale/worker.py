"""One shard's audio loading, and one worker's decoding of it.

:func:`load_shard` reads a shard's files (what a Ray task does apart from the model actors, so
that a GPU never waits on ffmpeg); :class:`ShardWorker` holds a model opened once and decodes a
loaded shard into records, one per input file:

- files of at most 30 s, ``batch_size`` at a time in one CTranslate2 call, packed into shared
  30 s windows (``CTranslate2Backend.transcribe_clips(pack=True)``, the fast path of ``eval`` and
  ``serve``); a clip without a language has it detected first (with its probability), so it can
  be packed with the others of its language;
- longer files one at a time through the backend's long-form ``transcribe`` (as ``infer-ct2``:
  sequential below 5 minutes, faster-whisper's batched VAD pipeline from 5 minutes), with
  timestamps, so segments are sentences of a few seconds.

Decoding is at temperature 0 only: the same shard gives the same records on any engine and in
any worker (doubtful decodes are left to the filters of :mod:`whisper_ft.scale.labels` rather
than re-sampled). A file that cannot be read or decoded becomes an error with its reason, never
the end of the shard. With an agreement model, each training slice of each record is decoded
again by it (short-clip path, the record's language) for the agreement filter.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass

import numpy as np

from whisper_ft.core.audio import CHUNK_SECONDS, SAMPLE_RATE
from whisper_ft.core.errors import WhisperFtError
from whisper_ft.core.results import Transcription
from whisper_ft.scale.plan import Item

TEMPERATURE = 0.0
SHIP_SECONDS = 600.0  # longer files are read by the model's worker itself: 10 min is 38 MB of samples


@dataclass(frozen=True)
class DecodeSettings:
    """How every worker decodes. ``model``/``agreement_model`` are resolved CTranslate2 folders."""

    model: str
    model_name: str = ""
    device: str = "auto"
    compute_type: str = "auto"
    cpu_threads: int | None = None
    beam_size: int = 5
    language: str | None = None  # overrides the inputs' own
    task: str = "transcribe"
    batch_size: int = 16  # short clips per packed CTranslate2 call
    long_batch_size: int | None = None  # None: infer-ct2's choice by length
    pack: bool = True
    max_audio_seconds: float | None = 4 * 3600.0
    formats: tuple[str, ...] = ()
    agreement_model: str | None = None
    agreement_name: str | None = None

    def text_defining(self) -> dict:
        """What decides a record's text: the marker of the output folder, and every record's
        ``model``/``decoding`` fields (device and threads do not change the text)."""
        model = {"name": self.model_name or self.model, "path": self.model, "compute_type": self.compute_type}
        decoding = {"language": self.language, "task": self.task, "beam_size": self.beam_size,
                    "temperature": TEMPERATURE, "timestamps": True, "pack": self.pack, "batch_size": self.batch_size,
                    "long_batch_size": self.long_batch_size or "infer-ct2"}
        out = {"model": model, "decoding": decoding}
        if self.agreement_model:
            out["agreement_model"] = {"name": self.agreement_name or self.agreement_model, "path": self.agreement_model}
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["formats"] = list(self.formats)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DecodeSettings:
        return cls(**{**d, "formats": tuple(d.get("formats") or ())})


# --- loading ------------------------------------------------------------------------------------

def error_reason(exc: BaseException) -> tuple[str, str]:
    """``(reason, message)`` of a file that could not be transcribed: ``missing``, ``empty``,
    ``unreadable`` (not audio, or corrupt), ``too_long`` or ``decode_failed``."""
    from whisper_ft.core.audio import (
        AudioDecodeError,
        AudioEmptyError,
        AudioInvalidError,
        AudioMissingError,
        AudioTooLongError,
    )

    reason = ("missing" if isinstance(exc, AudioMissingError) else "empty" if isinstance(exc, AudioEmptyError)
              else "too_long" if isinstance(exc, AudioTooLongError)
              else "unreadable" if isinstance(exc, (AudioDecodeError, AudioInvalidError)) else "decode_failed")
    if isinstance(exc, WhisperFtError):
        return reason, str(exc)
    if isinstance(exc, OSError):
        return "unreadable", f"{exc.strerror or exc}"
    return reason, f"{type(exc).__name__}: {exc}"


def load_item(item: Item, max_seconds: float | None) -> np.ndarray:
    from whisper_ft.core.audio import load_audio

    return load_audio(item.path, item.start, item.end, max_seconds=max_seconds)


def load_shard(items: list[Item], settings: DecodeSettings, *, ship_seconds: float | None = None) -> dict:
    """Each item's samples (all in one float32 buffer) or its error; with ``ship_seconds`` a file
    planned longer is left for the decoding worker to read (``"later"``), so what travels between
    processes stays small. The result is plain data (bytes, JSON) for Ray's object store."""
    entries, buffers, offset = [], [], 0
    for item in items:
        if ship_seconds is not None and item.planned is not None and item.planned > ship_seconds:
            entries.append({"later": True})
            continue
        try:
            audio = load_item(item, settings.max_audio_seconds)
        except Exception as exc:
            reason, message = error_reason(exc)
            entries.append({"reason": reason, "message": message})
            continue
        if ship_seconds is not None and len(audio) > ship_seconds * SAMPLE_RATE:  # its header did not tell
            entries.append({"later": True})
            continue
        entries.append({"offset": offset, "samples": len(audio)})
        buffers.append(audio.tobytes())
        offset += len(audio)
    return {"entries": json.dumps(entries), "audio": b"".join(buffers)}


def unpack_shard(loaded: dict) -> list[np.ndarray | dict | None]:
    """:func:`load_shard`'s result as one array (or error dict, or None: read it here) per item."""
    audio = np.frombuffer(loaded["audio"], dtype=np.float32)
    out: list[np.ndarray | dict | None] = []
    for e in json.loads(loaded["entries"]):
        if "offset" in e:
            out.append(audio[e["offset"]:e["offset"] + e["samples"]])
        else:
            out.append(None if e.get("later") else e)
    return out


# --- decoding -----------------------------------------------------------------------------------

class ShardWorker:
    """A model (and the agreement model) opened once; ``worker(items, loaded)`` decodes a shard."""

    def __init__(self, settings: DecodeSettings):
        from whisper_ft.decoding.backend import load_backend

        self.settings = settings
        self.backend = load_backend(settings.model, kind="ctranslate2", device=settings.device,
                                    compute_type=settings.compute_type, threads=settings.cpu_threads)
        self.agreement = None
        if settings.agreement_model:
            self.agreement = load_backend(settings.agreement_model, kind="ctranslate2", device=settings.device,
                                          compute_type=settings.compute_type, threads=settings.cpu_threads)
        self.defining = settings.text_defining()  # the compute type "auto" became on this worker's device:
        self.defining["model"]["compute_type"] = self.backend.info["compute_type"]
        self.where = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, items: list[Item], loaded: dict | None = None) -> dict:
        """Decode one shard; returns its records, errors, per-file subtitles and timings."""
        s = self.settings
        t0 = time.perf_counter()
        audios = unpack_shard(loaded) if loaded is not None else [None] * len(items)
        records: dict[int, dict] = {}
        errors: dict[int, tuple[str, str]] = {}
        pending: list[tuple[int, np.ndarray]] = []
        audio_seconds = 0.0
        for i, (item, audio) in enumerate(zip(items, audios)):
            if isinstance(audio, dict):
                errors[i] = (audio["reason"], audio["message"])
                continue
            try:
                if audio is None:
                    audio = load_item(item, s.max_audio_seconds)
                audio_seconds += len(audio) / SAMPLE_RATE
                if len(audio) > CHUNK_SECONDS * SAMPLE_RATE:
                    records[i] = self._long(item, audio)
                    self._agree([(records[i], audio)])
                    continue
            except Exception as exc:
                errors[i] = error_reason(exc)
                continue
            pending.append((i, audio))
            if len(pending) >= s.batch_size:
                self._short(items, pending, records, errors)
                pending = []
        if pending:
            self._short(items, pending, records, errors)
        return self._result(items, records, errors, audio_seconds, time.perf_counter() - t0)

    def _language(self, item: Item) -> str | None:
        from whisper_ft.core.languages import normalize_language

        return normalize_language(self.settings.language or item.language)

    def _detect(self, audios: list[np.ndarray]) -> list[tuple[str, float | None]]:
        """(language, probability) of each clip, as the short-clip decoder would detect it."""
        import ctranslate2

        from whisper_ft.decoding.ct2_loading import ct2_features, detect_languages_ct2

        ct2 = self.backend.ct2
        if not ct2.is_multilingual:
            return [("en", None)] * len(audios)
        features = ct2_features(ct2, audios)
        return [(code, round(p, 4)) for code, p in detect_languages_ct2(ct2, ctranslate2.StorageView.from_array(features))]

    def _long(self, item: Item, audio: np.ndarray) -> dict:
        from whisper_ft.decoding.ct2 import default_batch_size
        from whisper_ft.decoding.options import DecodingOptions

        s = self.settings
        language = self._language(item)
        batch = s.long_batch_size or default_batch_size(len(audio) / SAMPLE_RATE)
        options = DecodingOptions(language=language, task=s.task, beam_size=s.beam_size, temperature=TEMPERATURE,
                                  timestamps=True, batch_size=batch)
        t = self.backend.transcribe(audio, options, source=item.path)
        probability = None if language else t.language_probability
        return self._record(item, t, round(probability, 4) if probability is not None else None)

    def _short(self, items: list[Item], batch: list[tuple[int, np.ndarray]], records: dict, errors: dict) -> None:
        from whisper_ft.decoding.batched import Clip

        s = self.settings
        try:
            langs = [self._language(items[i]) for i, _ in batch]
            unknown = [k for k, lang in enumerate(langs) if lang is None]
            probs: list[float | None] = [None] * len(batch)
            if unknown:
                for k, (code, p) in zip(unknown, self._detect([batch[k][1] for k in unknown])):
                    langs[k], probs[k] = code, p
            clips = [Clip(audio, lang, s.task) for (_, audio), lang in zip(batch, langs)]
            results = self.backend.transcribe_clips(clips, beam_size=s.beam_size, pack=s.pack)
        except Exception as exc:  # one bad clip must not fail its batch: each alone, its error its own
            if len(batch) == 1:
                errors[batch[0][0]] = error_reason(exc)
                return
            for one in batch:
                self._short(items, [one], records, errors)
            return
        done = []
        for (i, audio), r, p in zip(batch, results, probs):
            records[i] = self._record(items[i], r.transcription, p)
            done.append((records[i], audio))
        self._agree(done)

    def _record(self, item: Item, t: Transcription, probability: float | None) -> dict:
        segments = [{"start": round(seg.start, 3), "end": round(seg.end, 3), "text": seg.text.strip(),
                     "avg_logprob": None if seg.avg_logprob is None else round(float(seg.avg_logprob), 4),
                     "no_speech_prob": None if seg.no_speech_prob is None else round(float(seg.no_speech_prob), 4),
                     "compression_ratio": round(float(getattr(seg, "compression_ratio", 0.0)), 3)}
                    for seg in t.segments if seg.text.strip()]
        from whisper_ft.core.results import join_texts

        record = {"audio": item.identity(), "id": item.key, "duration": round(t.duration, 3),
                  "language": t.language, "language_probability": probability,
                  "text": join_texts(seg["text"] for seg in segments), "segments": segments}
        record.update(self.defining)
        if self.settings.formats:  # rendered now, written by the driver beside the records
            from whisper_ft.core.writers import render

            t.source = item.path
            record["_outputs"] = {fmt: render(t, fmt) for fmt in self.settings.formats}
        return record

    def _agree(self, done: list[tuple[dict, np.ndarray]]) -> None:
        """The agreement model's text of every training slice with text (its own short clips)."""
        if self.agreement is None:
            return
        from whisper_ft.decoding.batched import Clip
        from whisper_ft.scale.labels import training_slices

        s = self.settings
        jobs = []
        for record, audio in done:
            record["agreement"] = []
            for piece in training_slices(record):
                if piece.text.strip():
                    cut = audio[int(round(piece.start * SAMPLE_RATE)):int(round(piece.end * SAMPLE_RATE))]
                    jobs.append((record, piece, Clip(cut[:CHUNK_SECONDS * SAMPLE_RATE], record["language"], s.task)))
        for k in range(0, len(jobs), s.batch_size):
            self._agree_batch(jobs[k:k + s.batch_size])

    def _agree_batch(self, jobs: list) -> None:
        try:
            results = self.agreement.transcribe_clips([c for _, _, c in jobs], beam_size=self.settings.beam_size,
                                                      pack=self.settings.pack)
        except Exception:  # each alone; a slice the agreement model cannot decode has no agreement (dropped)
            if len(jobs) > 1:
                for job in jobs:
                    self._agree_batch([job])
            return
        for (record, piece, _), r in zip(jobs, results):
            record["agreement"].append({"start": piece.start, "end": piece.end, "text": r.transcription.text})

    def _result(self, items, records: dict, errors: dict, audio_seconds: float, seconds: float) -> dict:
        rows, failed = [], []
        for i, item in enumerate(items):
            if i in errors:
                reason, message = errors[i]
                failed.append({"audio": item.identity(), "id": item.key, "reason": reason, "message": message})
            else:
                rows.append(records[i])
        return {"records": rows, "errors": failed, "audio_seconds": round(audio_seconds, 3),
                "decode_seconds": round(seconds, 3), "worker": self.where}

