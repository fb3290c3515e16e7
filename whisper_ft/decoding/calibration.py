"""``--compute_type auto`` for CTranslate2: measured on this machine, once per model, and cached.

Which compute type decodes fastest depends on the CPU (int8 is fast with VNNI/AMX and weak on
AVX2-only CPUs, where int8_float32 or float32 can win: :mod:`whisper_ft.core.cpu`), so ``auto``
is chosen by measuring. On the first use of a model on a machine, each candidate (CPU: int8,
int8_float32, float32; CUDA: float16, bfloat16, int8_float16, float32, as far as CTranslate2
supports them there) decodes the calibration clips packed into shared 30 s windows (the fast path
of ``eval`` and ``serve``), beam 5: once untimed (its transcripts), then :data:`REPEATS` timed runs
going round the candidates (all are loaded at once), the fastest counted. A candidate whose error rate drifts more than :data:`MAX_DRIFT_POINTS` from float32's (CER for
zh/ja/ko-like clips, WER otherwise) is never chosen; the fastest of the others is. With the
clips' own transcripts (``eval``'s test set) the drift is its error rate minus float32's; without
them, its error rate against float32's transcripts, so any difference counts (on 20 s of speech one
word is over a point: stricter).

The clips are real speech where the command has some (``eval``: the first utterances of the test
set; ``infer-ct2``: the first seconds of the first file; ``whisper-ft calibrate FILES``), else
synthesized English speech (the caller passes it). Without speech there is nothing to check
accuracy on: the static default (CPU int8, CUDA float16) is used and nothing is cached.

The choice and the measurements are kept in ``<cache>/calibration.json`` (the user cache folder of
:func:`whisper_ft.models.registry.cache_dir`), one entry per model folder and device, under a key of
the model's content identity (model.bin's size and modification time), the machine (CPU model,
instruction sets, device, threads, GPU name) and the library versions (ctranslate2, whisper-ft).
When any part of the key changes, the next use measures again; ``--calibrate`` measures again now.
The table is printed on stderr when measured; later uses say the choice in one line; ``whisper-ft
doctor`` lists every entry.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from whisper_ft.core.audio import SAMPLE_RATE
from whisper_ft.core.console import log
from whisper_ft.core.errors import WhisperFtError

CPU_CANDIDATES = ("int8", "int8_float32", "float32")
CUDA_CANDIDATES = ("float16", "bfloat16", "int8_float16", "float32")
REFERENCE = "float32"  # the drift of every other candidate is measured against its transcripts
MAX_DRIFT_POINTS = 0.5
BEAM_SIZE = 5  # infer-ct2's and serve's default
REPEATS = 2  # timed runs per candidate after the untimed one; the fastest counts
MAX_SECONDS_PER_LANGUAGE = 26.0  # one packed window of speech per language (whisper_ft.decoding.packing)
MIN_REFERENCE_UNITS = 10  # fewer words/characters in float32's transcripts: too little speech to judge drift
CACHE_FILE = "calibration.json"
FORMAT = 1


@dataclass(frozen=True)
class CalibrationClip:
    audio: np.ndarray  # 16 kHz mono float32
    language: str | None  # None: detected
    source: str  # a file name, or "synthesized English"
    text: str | None = None  # what is said, when known (eval's test set): drift is then measured against it


@dataclass
class Measured:
    """One candidate: its fastest timed run and its drift from float32 (points)."""

    compute_type: str
    seconds: float | None  # None: it could not be loaded or run here
    drift_points: float | None  # None for the reference, or when it did not run
    refused: str = ""  # why it may not be chosen automatically ("" = it may)


@dataclass
class Calibration:
    """A measured choice and what it was measured on."""

    chosen: str
    measured: list[Measured]
    key: dict
    clips: dict  # {"n", "seconds", "languages", "sources"}
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def to_dict(self) -> dict:
        return {"chosen": self.chosen, "measured": [asdict(m) for m in self.measured], "key": self.key,
                "clips": self.clips, "created": self.created}

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        return cls(chosen=d["chosen"], measured=[Measured(**m) for m in d["measured"]], key=d["key"],
                   clips=d["clips"], created=d.get("created", ""))

    def alternatives(self) -> str:
        """``int8 1.23 s (chosen), int8_float32 1.40 s, float32 2.10 s (drift ...)``."""
        parts = []
        for m in self.measured:
            text = f"{m.compute_type} " + ("did not run" if m.seconds is None else f"{m.seconds:.2f} s")
            if m.drift_points is not None:
                text += f", drift {m.drift_points:+.2f} pts"
            if m.compute_type == self.chosen:
                text += " (chosen)"
            elif m.refused:
                text += f" (refused: {m.refused})"
            parts.append(text)
        return "; ".join(parts)

    def describe_clips(self) -> str:
        c = self.clips
        return f"{c['n']} clip(s), {c['seconds']:.1f} s of {'/'.join(c['languages'])} speech ({', '.join(c['sources'])})"


# --- measuring ---------------------------------------------------------------------------------

def candidate_types(device: str) -> list[str]:
    """The candidates CTranslate2 supports on ``device`` (float32, the reference, always among them)."""
    import ctranslate2

    supported = set(ctranslate2.get_supported_compute_types(device))
    wanted = CUDA_CANDIDATES if device == "cuda" else CPU_CANDIDATES
    return [t for t in wanted if t in supported or t == REFERENCE]


def _by_characters(text: str, language: str | None) -> bool:
    """Characters for zh/ja/ko-like languages (or, without a language, a transcript in Chinese
    characters), words otherwise."""
    from whisper_ft.core.languages import default_metric

    return default_metric(language) == "cer" if language else any("\u4e00" <= ch <= "\u9fff" for ch in text)


def drift_points(reference: Sequence[str], texts: Sequence[str], languages: Sequence[str | None]) -> float | None:
    """Error rate (points) of ``texts`` against the reference transcripts (CER for zh/ja/ko-like
    clips, WER for the others, pooled: :func:`whisper_ft.core.scoring.score`); None when the
    reference holds too little speech to judge. Word clips are normalised without a language, so
    without the English normaliser (it would import transformers; the two transcripts come from one
    model, so written numbers and spellings seldom differ, and where they do the drift counts them:
    stricter)."""
    from whisper_ft.core.scoring import score

    chars = [_by_characters(ref, lang) for ref, lang in zip(reference, languages)]
    edits = units = 0
    for metric, by_chars in (("cer", True), ("wer", False)):
        idx = [i for i, c in enumerate(chars) if c == by_chars]
        try:
            result = score([reference[i] for i in idx], [texts[i] for i in idx], metric=metric, language=None,
                           languages=[languages[i] if by_chars else None for i in idx])
        except WhisperFtError:  # no clip of this kind, or nothing left of their references: no units
            continue
        edits, units = edits + result.errors, units + result.ref_len
    return None if units < MIN_REFERENCE_UNITS else 100.0 * edits / units


def drift_from_float32(clips: Sequence[CalibrationClip], reference: Sequence[str], texts: Sequence[str]) -> float:
    """How far a candidate's accuracy moves from float32's, in points: with the clips' own texts,
    its error rate minus float32's (an improvement is negative); without them, its error rate
    against float32's transcripts (every difference counts: stricter)."""
    langs = [c.language for c in clips]
    if all(c.text for c in clips):
        truth = [c.text or "" for c in clips]
        return (drift_points(truth, texts, langs) or 0.0) - (drift_points(truth, reference, langs) or 0.0)
    return drift_points(reference, texts, langs) or 0.0


def measure(candidates: Sequence[str], clips: Sequence[CalibrationClip],
            open_decoder: Callable[[str], Callable[[Sequence[CalibrationClip]], list[str]]], *,
            clock: Callable[[], float] = time.perf_counter, repeats: int = REPEATS,
            max_drift: float = MAX_DRIFT_POINTS) -> tuple[str, list[Measured]]:
    """Time each candidate on ``clips`` and pick the fastest whose drift is within ``max_drift``.

    ``open_decoder(compute_type)`` loads the model at that type and returns ``decode(clips) ->
    texts``; ``clock`` reads seconds (both injectable: the tests give a fake clock). Every
    candidate is loaded and run once untimed (its transcripts), then the timed runs go round the
    candidates ``repeats`` times, so a burst of load from other processes hits them alike; the
    fastest run counts. Raises when the reference cannot run, or the clips hold too little speech
    to judge drift."""
    if REFERENCE not in candidates:
        raise WhisperFtError(f"calibration needs {REFERENCE} among the candidates (got {', '.join(candidates)})")
    langs = [c.language for c in clips]
    decoders: dict[str, Callable] = {}
    texts: dict[str, list[str]] = {}
    failed: dict[str, str] = {}

    def attempt(ct: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - a type this machine cannot run is not a candidate
            if ct == REFERENCE:
                raise
            failed[ct] = f"{type(exc).__name__}: {exc}"[:200]
            decoders.pop(ct, None)

    def first_run(ct: str) -> None:
        decoders[ct] = open_decoder(ct)
        texts[ct] = list(decoders[ct](clips))

    first_run(REFERENCE)  # first: the others are judged by its transcripts, and without speech nothing is
    if drift_points(texts[REFERENCE], texts[REFERENCE], langs) is None:
        raise WhisperFtError("the calibration clips hold too little speech to check accuracy "
                             f"({REFERENCE} transcribed under {MIN_REFERENCE_UNITS} words/characters)")
    for ct in candidates:
        if ct != REFERENCE:
            attempt(ct, lambda ct=ct: first_run(ct))
    best = {ct: float("inf") for ct in decoders}

    def timed(ct: str) -> None:
        start = clock()
        decoders[ct](clips)
        best[ct] = min(best[ct], clock() - start)

    for _ in range(max(1, repeats)):
        for ct in list(decoders):
            attempt(ct, lambda ct=ct: timed(ct))
    measured = []
    for ct in candidates:
        if ct in failed or ct not in decoders:
            measured.append(Measured(ct, None, None, failed.get(ct, "not run")))
            continue
        m = Measured(ct, round(best[ct], 4), None)
        if ct != REFERENCE:
            drift = drift_from_float32(clips, texts[REFERENCE], texts[ct])
            m.drift_points = round(drift, 3)
            if drift > max_drift:
                m.refused = f"drifts {drift:.2f} > {max_drift} points from {REFERENCE}"
        measured.append(m)
    chosen = min((m for m in measured if m.seconds is not None and not m.refused), key=lambda m: m.seconds)
    return chosen.compute_type, measured


def ct2_decoder(model_dir: Path, device: str, threads: int, beam_size: int = BEAM_SIZE):
    """``open_decoder`` for :func:`measure`: the real model at each compute type, packed decoding."""

    def open_decoder(compute_type: str):
        from whisper_ft.decoding.ct2 import generate_texts_ct2
        from whisper_ft.decoding.ct2_loading import load_ct2_whisper

        ct2 = load_ct2_whisper(model_dir, device=device, compute_type=compute_type, cpu_threads=threads)

        def decode(clips):
            return generate_texts_ct2(ct2, [c.audio for c in clips], language=[c.language for c in clips],
                                      num_beams=beam_size, pack=True)

        return decode

    return open_decoder


def take_clips(clips: Sequence[CalibrationClip], max_seconds: float = MAX_SECONDS_PER_LANGUAGE) -> list[CalibrationClip]:
    """The first clips of each language up to ``max_seconds`` of audio (one packed window each);
    a longer first clip is cut to ``max_seconds``."""
    used: dict[str | None, float] = {}
    out = []
    for c in clips:
        seconds = len(c.audio) / SAMPLE_RATE
        have = used.get(c.language, 0.0)
        if have and have + seconds > max_seconds:
            continue
        audio = c.audio[: int(max_seconds * SAMPLE_RATE)]
        used[c.language] = have + len(audio) / SAMPLE_RATE
        out.append(CalibrationClip(audio, c.language, c.source, c.text if len(audio) == len(c.audio) else None))
    return out


def clips_from_files(paths: Sequence, languages: Sequence[str | None] | None = None) -> list[CalibrationClip]:
    """Calibration clips from the first audio files (up to :data:`MAX_SECONDS_PER_LANGUAGE` s; the
    start of a long one); files that cannot be read are passed over (the command reports them)."""
    from whisper_ft.core.audio import load_audio

    langs = list(languages) if languages is not None else [None] * len(paths)
    out, seconds = [], 0.0
    for path, lang in zip(paths, langs):
        if seconds >= MAX_SECONDS_PER_LANGUAGE:
            break
        try:
            audio = load_audio(str(path), end=MAX_SECONDS_PER_LANGUAGE)
        except WhisperFtError:
            continue
        out.append(CalibrationClip(audio, lang, Path(str(path)).name))
        seconds += len(audio) / SAMPLE_RATE
    return take_clips(out)


# --- the cache ---------------------------------------------------------------------------------

def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        if dist == "whisper-ft":
            from whisper_ft import __version__

            return __version__
        return "?"


def _gpu_name() -> str:
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def calibration_key(model_dir: Path, device: str, threads: int) -> dict:
    """What a measurement depends on: the model's content identity, the machine, the libraries."""
    from whisper_ft.core.cpu import cpu_info

    model_bin = Path(model_dir) / "model.bin"
    st = model_bin.stat()
    cpu = cpu_info()
    machine = {"cpu": cpu.model, "instruction_sets": cpu.instruction_sets, "device": device, "threads": threads}
    if device == "cuda":
        machine["gpu"] = _gpu_name()
    return {"model": {"path": str(Path(model_dir).resolve()), "model_bin_bytes": st.st_size,
                      "model_bin_mtime_ns": st.st_mtime_ns},
            "machine": machine,
            "versions": {"ctranslate2": _version("ctranslate2"), "whisper-ft": _version("whisper-ft"),
                         "format": FORMAT}}


def cache_file() -> Path:
    from whisper_ft.models.registry import cache_dir

    return cache_dir() / CACHE_FILE


def _slot(model_dir: Path, device: str) -> str:
    return f"{Path(model_dir).resolve()}|{device}"


def read_entries() -> dict[str, Calibration]:
    """Every cached calibration (slot ``model folder|device`` -> entry); an unreadable file is empty."""
    try:
        data = json.loads(cache_file().read_text(encoding="utf-8"))
        return {slot: Calibration.from_dict(d) for slot, d in data.get("entries", {}).items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def cached(model_dir: Path, device: str, threads: int) -> Calibration | None:
    """The cached calibration of this model on this machine, or None (none, or its key changed)."""
    entry = read_entries().get(_slot(model_dir, device))
    if entry is None or entry.key != calibration_key(model_dir, device, threads):
        return None
    return entry


def store(model_dir: Path, device: str, calibration: Calibration) -> None:
    """Keep ``calibration`` (replacing the model's entry; entries of folders that are gone are
    dropped); written atomically, so a reader never sees half a file."""
    entries = {s: e for s, e in read_entries().items() if Path(s.rpartition("|")[0]).is_dir()}
    entries[_slot(model_dir, device)] = calibration
    path = cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"format": FORMAT, "entries": {s: e.to_dict() for s, e in entries.items()}},
                              ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --- resolving "auto" --------------------------------------------------------------------------

ClipSource = Callable[[], Sequence[CalibrationClip]]
_TOLD: set[str] = set()  # slots whose choice was already said in this process


def calibrate(model_dir: Path, device: str, threads: int, clips: Sequence[CalibrationClip], *,
              open_decoder=None, clock: Callable[[], float] = time.perf_counter) -> Calibration:
    """Measure now on ``clips`` and cache the result (see the module docstring)."""
    clips = take_clips(clips)
    if not clips:
        raise WhisperFtError("no calibration clips: give audio files with speech")
    opener = open_decoder or ct2_decoder(Path(model_dir), device, threads)
    log(f"calibrating the compute type of {model_dir} on {device} ({threads} threads): "
        f"{', '.join(candidate_types(device))} on {len(clips)} clip(s) of speech ...")
    chosen, measured = measure(candidate_types(device), clips, opener, clock=clock)
    langs = sorted({c.language or "detected" for c in clips})
    result = Calibration(chosen, measured, calibration_key(model_dir, device, threads),
                         {"n": len(clips), "seconds": round(sum(len(c.audio) for c in clips) / SAMPLE_RATE, 2),
                          "languages": langs, "sources": sorted({c.source for c in clips})})
    store(model_dir, device, result)
    return result


def resolve_compute_type(model_dir: Path, device: str, threads: int, *, clips: ClipSource | None = None,
                         recalibrate: bool = False, fallback: str = "int8", open_decoder=None,
                         clock: Callable[[], float] = time.perf_counter) -> str:
    """The compute type ``auto`` means for this model here: the cached calibration, else one
    measured now on ``clips()`` (when the caller has speech), else ``fallback`` (said, not cached)."""
    slot = _slot(model_dir, device)
    entry = None if recalibrate else cached(model_dir, device, threads)
    if entry is not None:
        if slot not in _TOLD:
            _TOLD.add(slot)
            log(f"compute type {entry.chosen} (calibrated on this machine {entry.created[:10]}: "
                f"{entry.alternatives()}; `whisper-ft doctor` lists it, --calibrate measures again)")
        return entry.chosen
    why = "no speech to calibrate on was given"
    if clips is not None:
        try:
            result = calibrate(model_dir, device, threads, clips(), open_decoder=open_decoder, clock=clock)
        except WhisperFtError as exc:
            why = str(exc)
        else:
            _TOLD.add(slot)
            log(f"compute type {result.chosen}: measured on {result.describe_clips()}: {result.alternatives()} "
                f"(kept in {cache_file()})")
            return result.chosen
    if slot not in _TOLD:
        _TOLD.add(slot)
        log(f"compute type {fallback} (the default; not calibrated: {why}; "
            "`whisper-ft calibrate --model_path MODEL [AUDIO ...]` measures it)")
    return fallback
