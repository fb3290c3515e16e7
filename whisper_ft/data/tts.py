"""Synthetic speech with espeak-ng: text lines -> 16 kHz mono wavs + manifests.

Each line is spoken with every combination of ``voices x speeds x pitches``, so one sentence gives
several acoustically different clips. All variants of a sentence stay in the same split:
:func:`split_sentences` assigns whole (normalised) sentences to train or test, so a test sentence
is never heard in training.

Two engines speak the same way (same voices, words-per-minute and pitch scales, 22050 Hz output
resampled to 16 kHz): libespeak-ng from the PyPI package ``espeakng-loader`` (library and voice
data in a wheel: Linux x86-64, macOS, Windows; no root needed), used first, and the ``espeak-ng``
program (Debian/Homebrew package) as the fallback. ``WHISPER_FT_TTS_ENGINE=library|binary`` picks one.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import shutil
import subprocess
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whisper_ft.core.errors import DataError
from whisper_ft.data.common import (
    Candidate,
    PrepareOptions,
    PrepareReport,
    SkipError,
    SkipReason,
    normalize_text,
    parallel_map,
    select,
    write_splits,
)

INSTALL_HINT = ("pip install espeakng-loader (whisper-ft's `demo` extra), "
                "or the espeak-ng program: sudo apt-get install espeak-ng / brew install espeak-ng")
ENGINE_ENV = "WHISPER_FT_TTS_ENGINE"  # "library" or "binary": use only that engine
ENGINES = ("library", "binary")  # the order find_engine tries them in
# espeak-ng voice per Whisper language code (others: the code itself is tried as the voice).
DEFAULT_VOICES = {"zh": ("cmn",), "en": ("en",), "yue": ("yue",)}
DEFAULT_SPEEDS = (130, 175)  # words per minute; espeak-ng's default is 175
DEFAULT_PITCHES = (35, 50, 65)  # 0-99; espeak-ng's default is 50


@dataclass(frozen=True)
class Variant:
    """One way of speaking: an espeak-ng voice at a speed (wpm) and pitch (0-99)."""

    voice: str
    speed: int
    pitch: int

    @property
    def tag(self) -> str:
        return f"{self.voice}_s{self.speed}_p{self.pitch}"


class SpeechEngine:
    """espeak-ng, one way or another: ``synthesize`` returns 16 kHz mono float32."""

    kind: str = ""  # "library" or "binary"

    def describe(self) -> str:
        raise NotImplementedError

    def has_voice(self, voice: str) -> bool:
        raise NotImplementedError

    def synthesize(self, text: str, variant: Variant) -> np.ndarray:
        raise NotImplementedError


class BinaryEngine(SpeechEngine):
    """The ``espeak-ng`` program: text on stdin, a WAV on stdout (one process per clip)."""

    kind = "binary"

    def __init__(self, path: str) -> None:
        self.path = path

    def describe(self) -> str:
        return f"espeak-ng program ({self.path})"

    def has_voice(self, voice: str) -> bool:
        proc = subprocess.run([self.path, "-v", voice, "-q", "x"], capture_output=True, text=True, timeout=30)
        return proc.returncode == 0

    def reads_chinese(self, voice: str) -> bool:
        """False when the voice reads Chinese characters as English-spelled pinyin ("(en)" switches
        in its phonemes), as Debian 12's espeak-ng 1.51 does with ``cmn``: that is not Mandarin."""
        proc = subprocess.run([self.path, "-v", voice, "-q", "-x", "你好"], capture_output=True, text=True, timeout=30)
        return proc.returncode == 0 and "(en)" not in proc.stdout

    def synthesize(self, text: str, variant: Variant) -> np.ndarray:
        from whisper_ft.core.audio import load_audio

        proc = subprocess.run(
            [self.path, "-v", variant.voice, "-s", str(variant.speed), "-p", str(variant.pitch), "--stdin",
             "--stdout"],
            input=text.encode("utf-8"), capture_output=True, timeout=120,
        )
        if proc.returncode != 0 or not proc.stdout:
            message = proc.stderr.decode("utf-8", "replace").strip() or f"exit code {proc.returncode}"
            raise DataError(f"espeak-ng failed for voice {variant.voice}: {message}")
        return load_audio(proc.stdout)


# libespeak-ng's C API (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8, _ENDPAUSE = 0x1, 0x1000  # espeakCHARS_UTF8 | espeakENDPAUSE, as the program speaks stdin
_RATE, _PITCH = 1, 3  # espeakRATE, espeakPITCH
_EE_OK = 0


class LibraryEngine(SpeechEngine):
    """libespeak-ng from the ``espeakng-loader`` wheel, through ctypes.

    The library keeps one global synthesiser per process (not thread-safe), so calls are
    serialised; it needs no process per clip, which is faster than the program anyway."""

    kind = "library"
    _instance: LibraryEngine | None = None
    _create_lock = threading.Lock()

    def __init__(self) -> None:
        import ctypes

        import espeakng_loader

        self.library_path = espeakng_loader.get_library_path()
        data_path = Path(espeakng_loader.get_data_path())
        self._lib = lib = ctypes.CDLL(self.library_path)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        # the path argument is the folder that holds espeak-ng-data/
        self.sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_path.parent).encode(), 0)
        if self.sample_rate <= 0:
            raise DataError(f"libespeak-ng ({self.library_path}) did not initialise with its data {data_path}")
        self.version = (lib.espeak_Info(None) or b"?").decode()
        self._chunks: list[bytes] = []
        self._string_at = ctypes.string_at
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
        self._callback = callback_type(self._collect)  # kept referenced: the library calls it
        lib.espeak_SetSynthCallback(self._callback)
        self._lock = threading.Lock()

    @classmethod
    def get(cls) -> LibraryEngine:
        """The process's one instance (the library cannot hold two)."""
        with cls._create_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _collect(self, wav, numsamples, events) -> int:
        if numsamples > 0 and wav:
            self._chunks.append(self._string_at(wav, numsamples * 2))
        return 0  # 0 = go on

    def describe(self) -> str:
        return f"libespeak-ng {self.version} from espeakng-loader ({self.library_path})"

    def has_voice(self, voice: str) -> bool:
        with self._lock:
            return self._lib.espeak_SetVoiceByName(voice.encode()) == _EE_OK

    def synthesize(self, text: str, variant: Variant) -> np.ndarray:
        import soxr

        data = text.encode("utf-8") + b"\0"
        with self._lock:
            if self._lib.espeak_SetVoiceByName(variant.voice.encode()) != _EE_OK:
                raise DataError(f"espeak-ng has no voice {variant.voice!r}")
            # after the voice: selecting a voice resets rate and pitch to its defaults
            self._lib.espeak_SetParameter(_RATE, variant.speed, 0)
            self._lib.espeak_SetParameter(_PITCH, variant.pitch, 0)
            self._chunks = []
            code = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None)
            pcm, self._chunks = b"".join(self._chunks), []
        if code != _EE_OK or not pcm:
            raise DataError(f"libespeak-ng failed for voice {variant.voice} (error {code})")
        audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        return soxr.resample(audio, self.sample_rate, 16_000).astype(np.float32)


def _library_engine() -> tuple[SpeechEngine | None, str]:
    try:
        return LibraryEngine.get(), ""
    except ImportError:
        return None, "espeakng-loader is not installed"
    except (OSError, AttributeError, RuntimeError, DataError) as exc:  # a wheel without a usable library
        return None, f"libespeak-ng from espeakng-loader does not load: {exc}"


def _binary_engine() -> tuple[SpeechEngine | None, str]:
    path = shutil.which("espeak-ng")
    return (BinaryEngine(path), "") if path else (None, "espeak-ng is not on PATH")


def find_engine(kind: str | None = None) -> SpeechEngine:
    """The first engine that works (``kind`` or ``$WHISPER_FT_TTS_ENGINE`` to ask for one);
    :class:`DataError` with the install commands when none does."""
    kind = (kind or os.environ.get(ENGINE_ENV) or "").strip().lower() or None
    if kind is not None and kind not in ENGINES:
        raise DataError(f"{ENGINE_ENV}={kind!r}: use one of {', '.join(ENGINES)}")
    problems = []
    for name in ([kind] if kind else ENGINES):
        engine, problem = _library_engine() if name == "library" else _binary_engine()
        if engine is not None:
            return engine
        problems.append(problem)
    raise DataError(f"no espeak-ng speech engine ({'; '.join(problems)}): {INSTALL_HINT}")


def check_voice(voice: str, engine: SpeechEngine | None = None) -> None:
    """Fail early (one line) on a voice espeak-ng does not have, instead of once per clip."""
    engine = engine or find_engine()
    if not engine.has_voice(voice):
        raise DataError(f"espeak-ng has no voice {voice!r}: pass --voices with names from `espeak-ng --voices` "
                        "(e.g. cmn for Mandarin, en for English)")


def synthesize(text: str, variant: Variant, engine: SpeechEngine | None = None) -> np.ndarray:
    """Speak ``text``; returns 16 kHz mono float32."""
    return (engine or find_engine()).synthesize(text, variant)


def _sentence_key(text: str) -> str:
    """Sentences that differ only in punctuation, spacing or case count as the same sentence."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in text if not (ch.isspace() or unicodedata.category(ch)[0] in "PS"))


def split_sentences(lines: list[str], test_fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[str]]:
    """Deduplicate ``lines`` and split them into (train, test) with no sentence in both.

    Duplicates (same words, any punctuation/spacing/case) keep their first spelling. The split is a
    seeded shuffle; with ``test_fraction > 0`` and at least two sentences, test gets at least one.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"--test_fraction must be in [0, 1) (got {test_fraction})")
    unique: dict[str, str] = {}
    for line in lines:
        text = normalize_text(line)
        key = _sentence_key(text)
        if key and key not in unique:
            unique[key] = text
    sentences = list(unique.values())
    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    n_test = round(len(sentences) * test_fraction)
    if test_fraction > 0 and len(sentences) >= 2:
        n_test = min(max(1, n_test), len(sentences) - 1)
    test_idx = set(order[:n_test])
    train = [s for i, s in enumerate(sentences) if i not in test_idx]
    test = [s for i, s in enumerate(sentences) if i in test_idx]
    return train, test


def read_lines(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"text file not found: {path} (pass --text with one sentence per line)")
    return [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]


def variants_for(language: str, voices: list[str] | None = None, speeds: list[int] | None = None,
                 pitches: list[int] | None = None) -> list[Variant]:
    voices = list(voices or DEFAULT_VOICES.get(language, (language,)))
    speeds, pitches = list(speeds or DEFAULT_SPEEDS), list(pitches or DEFAULT_PITCHES)
    for s in speeds:
        if not 80 <= s <= 450:
            raise DataError(f"--speeds {s}: espeak-ng speaks 80-450 words per minute")
    for p in pitches:
        if not 0 <= p <= 99:
            raise DataError(f"--pitches {p}: espeak-ng pitch is 0-99")
    return [Variant(v, s, p) for v, s, p in itertools.product(voices, speeds, pitches)]


def prepare_tts(text: str | Path, language: str, output_dir: str | Path = "dataset/tts",
                voices: list[str] | None = None, speeds: list[int] | None = None,
                pitches: list[int] | None = None, test_fraction: float = 0.0, seed: int = 0,
                options: PrepareOptions | None = None) -> PrepareReport:
    """Speak every line of ``text`` with every variant; write ``output_dir/wav/`` and
    ``train.jsonl`` (+ ``test.jsonl`` when ``test_fraction`` > 0). A re-run reuses existing wavs."""
    from whisper_ft.core.audio import SAMPLE_RATE, audio_info, write_wav
    from whisper_ft.core.console import log, warn

    options = options or PrepareOptions()
    engine = find_engine()
    output_dir = Path(output_dir)
    variants = variants_for(language, voices, speeds, pitches)
    for voice in dict.fromkeys(v.voice for v in variants):
        check_voice(voice, engine)
        if isinstance(engine, BinaryEngine) and language in {"zh", "yue"} and not engine.reads_chinese(voice):
            warn(f"{engine.describe()} reads Chinese characters as English-spelled pinyin with voice {voice}: "
                 f"the clips will not be {language} speech; pip install espeakng-loader for a libespeak-ng that does")
    log(f"speech engine: {engine.describe()}")
    train, test = split_sentences(read_lines(text), test_fraction, seed)
    if not train:
        raise DataError(f"no sentence in {text}: write one sentence per line")
    report = PrepareReport(source="tts", output=output_dir)
    jobs = [(split, i, sentence, v) for split, lines in (("train", train), ("test", test))
            for i, sentence in enumerate(lines) for v in variants]

    def work(job: tuple[str, int, str, Variant]) -> Candidate | SkipError:
        split, i, sentence, variant = job
        # Named by content, not position: a re-run with other lines or another split reuses only
        # the clips that really are this sentence spoken this way (by this engine: they differ).
        digest = hashlib.sha1(f"{engine.kind}\n{sentence}".encode("utf-8")).hexdigest()[:12]
        out = output_dir / "wav" / f"{digest}_{variant.tag}.wav"
        candidate = Candidate(out, sentence, split, id=out.stem, language=options.language or language,
                              extra={"tts": {"voice": variant.voice, "speed": variant.speed, "pitch": variant.pitch,
                                             "engine": engine.kind}})
        try:
            if out.is_file():  # from an earlier run (write_wav is atomic: it is complete)
                candidate.duration = audio_info(out).duration
                candidate.extra["_reused"] = True
                return candidate
            audio = engine.synthesize(sentence, variant)
            candidate.duration = len(audio) / SAMPLE_RATE
            if options.min_duration <= candidate.duration <= options.max_duration:
                write_wav(out, audio)
            return candidate
        except DataError as exc:
            return SkipError(SkipReason.UNREADABLE_AUDIO, str(exc).splitlines()[0][:200])
        except Exception as exc:  # e.g. a timeout: skip this clip, keep going
            return SkipError(SkipReason.UNREADABLE_AUDIO, f"{type(exc).__name__}: {exc}"[:200])

    candidates = []
    for (split, i, _, variant), result in zip(jobs, parallel_map(work, jobs, options.num_workers,
                                                                 desc="synthesising", unit="clip")):
        if isinstance(result, SkipError):
            report.skip(result.reason, f"{split}[{i}] {variant.tag}", result.detail)
        else:
            if result.extra.pop("_reused", False):
                report.work["wav_reused"] += 1
            candidates.append(result)
    report.work["sentences_train"] = len(train)
    if test:
        report.work["sentences_test"] = len(test)
    report.work["variants_per_sentence"] = len(variants)
    by_split = select(candidates, options, report, desc="checking audio")
    by_split.setdefault("train", [])
    if test:
        by_split.setdefault("test", [])
    return write_splits(by_split, {s: output_dir / f"{s}.jsonl" for s in by_split}, report)


if __name__ == "__main__":  # `python -m whisper_ft.data.tts`: which engine speaks (the Makefile's check)
    import sys

    try:
        print(f"speech engine: {find_engine().describe()}")
    except DataError as exc:
        sys.exit(f"error: {exc}")
