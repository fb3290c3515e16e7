"""Synthetic speech with espeak-ng: text lines -> 16 kHz mono wavs + manifests.

Each line is spoken with every combination of ``voices x speeds x pitches``, so one sentence gives
several acoustically different clips. All variants of a sentence stay in the same split:
:func:`split_sentences` assigns whole (normalised) sentences to train or test, so a test sentence
is never heard in training. espeak-ng is a Debian package, not a Python one; we call its binary.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import shutil
import subprocess
import unicodedata
from dataclasses import dataclass
from pathlib import Path

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
from whisper_ft.errors import DataError

INSTALL_HINT = "install it with: sudo apt-get install espeak-ng"
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


def find_espeak() -> str:
    """The espeak-ng binary; :class:`DataError` with the install command when it is absent."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise DataError(f"espeak-ng not found on PATH: {INSTALL_HINT}")
    return path


def check_voice(voice: str, espeak: str | None = None) -> None:
    """Fail early (one line) on a voice espeak-ng does not have, instead of once per clip."""
    espeak = espeak or find_espeak()
    proc = subprocess.run([espeak, "-v", voice, "-q", "x"], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise DataError(f"espeak-ng has no voice {voice!r}: pass --voices with names from `espeak-ng --voices` "
                        "(e.g. cmn for Mandarin, en for English)")


def synthesize(text: str, variant: Variant, espeak: str | None = None):
    """Speak ``text``; returns 16 kHz mono float32. Text goes through stdin (no argument parsing)."""
    from whisper_ft.audio import load_audio

    espeak = espeak or find_espeak()
    proc = subprocess.run(
        [espeak, "-v", variant.voice, "-s", str(variant.speed), "-p", str(variant.pitch), "--stdin", "--stdout"],
        input=text.encode("utf-8"), capture_output=True, timeout=120,
    )
    if proc.returncode != 0 or not proc.stdout:
        message = proc.stderr.decode("utf-8", "replace").strip() or f"exit code {proc.returncode}"
        raise DataError(f"espeak-ng failed for voice {variant.voice}: {message}")
    return load_audio(proc.stdout)


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
    from whisper_ft.audio import SAMPLE_RATE, audio_info, write_wav

    options = options or PrepareOptions()
    espeak = find_espeak()
    output_dir = Path(output_dir)
    variants = variants_for(language, voices, speeds, pitches)
    for voice in dict.fromkeys(v.voice for v in variants):
        check_voice(voice, espeak)
    train, test = split_sentences(read_lines(text), test_fraction, seed)
    if not train:
        raise DataError(f"no sentence in {text}: write one sentence per line")
    report = PrepareReport(source="tts", output=output_dir)
    jobs = [(split, i, sentence, v) for split, lines in (("train", train), ("test", test))
            for i, sentence in enumerate(lines) for v in variants]

    def work(job: tuple[str, int, str, Variant]) -> Candidate | SkipError:
        split, i, sentence, variant = job
        # Named by content, not position: a re-run with other lines or another split reuses only
        # the clips that really are this sentence spoken this way.
        digest = hashlib.sha1(sentence.encode("utf-8")).hexdigest()[:12]
        out = output_dir / "wav" / f"{digest}_{variant.tag}.wav"
        candidate = Candidate(out, sentence, split, id=out.stem, language=options.language or language,
                              extra={"tts": {"voice": variant.voice, "speed": variant.speed, "pitch": variant.pitch}})
        try:
            if out.is_file():  # from an earlier run (write_wav is atomic: it is complete)
                candidate.duration = audio_info(out).duration
                candidate.extra["_reused"] = True
                return candidate
            audio = synthesize(sentence, variant, espeak)
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
