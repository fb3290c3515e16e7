"""Manifests -> training samples -> batches of log-mel features and labels.

1. :func:`check_manifest` reads a manifest and checks it completely before any model is loaded:
   parse errors, missing audio, unknown or missing languages, durations outside
   ``[min_duration, max_duration]`` and unusable audio (undecodable, empty, a slice outside the
   file: probed from the header, dropped, counted and named).
2. :func:`build_samples` tokenises the transcripts (Whisper's leading space) and drops, counting
   them, the utterances whose label would exceed the decoder's 448 positions.
3. :class:`SpeechDataset` loads audio and computes features in the DataLoader workers (nothing
   is held in memory but the token ids), applies the optional augmentation, and picks for each
   sample with sentence times whether it is trained with timestamps this epoch.
4. :class:`DurationGroupedSampler` (generic: :mod:`whisper_ft.trainkit.sampler`) shuffles by (seed, epoch) and groups utterances of similar
   length into the same batch (less label padding); it yields ``(index, epoch)`` so augmentation
   is reproducible and a resumed run sees exactly the same data. With ``--replay_data`` it also
   draws a fresh, seeded share of the general-speech pool each epoch (:func:`epoch_shares`), and
   the non-speech samples of ``--empty_audio_ratio`` (``training.empty_audio``) join every epoch.
5. :class:`SpeechCollator` stacks features and pads labels with -100.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from whisper_ft.errors import DataError, WhisperFtError
from whisper_ft.manifest import Utterance, validate_manifest
from whisper_ft.training.labels import LabelBuilder, Segment, encode_text, fits
from whisper_ft.trainkit.dist import one_thread_in_dataloader_worker
from whisper_ft.trainkit.sampler import Draw as Draw
from whisper_ft.trainkit.sampler import DurationGroupedSampler as DurationGroupedSampler

IGNORE_INDEX = -100  # label value the loss ignores (padding)


@dataclass
class ManifestReport:
    """What was read from one manifest and what was dropped (and why)."""

    name: str  # "train" / "test"
    path: Path
    total: int
    too_short: int = 0
    too_long: int = 0
    too_many_tokens: int = 0
    bad_audio: list[tuple[str, str]] = field(default_factory=list)  # (file, why): undecodable, bad slice
    kept: int = 0
    hours: float = 0.0
    languages: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        langs = ", ".join(f"{k} {v}" for k, v in self.languages.most_common(5))
        return (
            f"{self.name} data {self.path}: {self.kept} of {self.total} utterances kept ({self.hours:.2f} h; {langs}); "
            f"dropped {self.too_short} shorter / {self.too_long} longer than the duration limits, "
            f"{self.too_many_tokens} with labels over 448 tokens"
            + (f", {len(self.bad_audio)} with unusable audio" if self.bad_audio else "")
        )


@dataclass
class Sample:
    """One utterance ready for training: where its audio is and its label tokens."""

    utterance: Utterance
    language: str
    text_ids: list[int]  # the transcript's tokens (with the leading space)
    segments: list[Segment] | None = None  # sentence times + tokens, when timestamps can be trained

    @property
    def key(self) -> str:
        return self.utterance.key

    @property
    def duration(self) -> float:
        return self.utterance.duration

    def load_audio(self, rng: np.random.Generator | None = None) -> np.ndarray:
        return self.utterance.load_audio()


def check_manifest(
    path: str | Path, *, name: str, language: str | None, min_duration: float, max_duration: float,
    fallback_language: str | None = None,
) -> tuple[list[tuple[Utterance, str]], ManifestReport]:
    """Parse and check a manifest; returns the usable (utterance, language) pairs and a report.

    ``language`` overrides every record's; ``fallback_language`` only fills in records without one
    (general-speech sets keep their own languages).

    Raises :class:`DataError` for an unreadable, invalid or empty manifest, missing audio files,
    unknown or missing languages, or when no utterance is left after the duration limits.
    """
    from whisper_ft.models.languages import normalize_language

    path = Path(path)
    check = validate_manifest(path)  # raises on a missing/invalid/empty manifest
    report = ManifestReport(name, path, total=len(check.utterances))
    if check.missing_audio:
        first = check.missing_audio[0]
        raise DataError(
            f"{path}: {len(check.missing_audio)} of {len(check.utterances)} utterances have missing audio files "
            f"(first: {first.audio_file}); fix the paths or re-run `whisper-ft prepare`"
        )
    kept: list[tuple[Utterance, str]] = []
    no_language = 0
    for utt in check.utterances:
        try:
            lang = language or normalize_language(utt.language) or fallback_language
        except WhisperFtError as exc:
            raise DataError(f"{path}: utterance {utt.key}: {exc}") from exc
        if lang is None:
            no_language += 1
            continue
        if utt.duration < min_duration:
            report.too_short += 1
        elif utt.duration > max_duration:
            report.too_long += 1
        else:
            kept.append((utt, lang))
    if no_language:
        raise DataError(
            f"{path}: {no_language} of {report.total} utterances have no \"language\"; "
            "pass --language (e.g. --language zh) or add it to the manifest"
        )
    kept = _drop_unusable_audio(kept, report)
    if not kept and report.bad_audio:
        file, why = report.bad_audio[0]
        raise DataError(f"{path}: no utterance with usable audio ({len(report.bad_audio)} unusable, e.g. {file}: "
                        f"{why}); fix the files or re-run `whisper-ft prepare`")
    if not kept:
        raise DataError(
            f"{path}: no utterance left between --min_duration {min_duration} s and --max_duration {max_duration} s "
            f"({report.too_short} shorter, {report.too_long} longer)"
        )
    return kept, report


def audio_problem(utt: Utterance) -> str | None:
    """Why an utterance's audio cannot be trained on (undecodable, empty, slice outside the file), or None.

    A header probe (no full decode for wav/flac/ogg/mp3): cheap enough for every file before
    training, where a bad file would otherwise kill the run in a DataLoader worker.
    """
    from whisper_ft.audio import audio_info, slice_problem
    from whisper_ft.data.common import short_error

    try:
        total = audio_info(utt.audio_file).duration
    except Exception as exc:  # whatever a decoder raises: the file is unusable, not the run
        return short_error(exc, drop=str(utt.audio_file))  # the warning names the file already
    return slice_problem(utt.start_time, utt.end_time, total)


def _drop_unusable_audio(pairs: list[tuple[Utterance, str]], report: ManifestReport,
                         examples: int = 5) -> list[tuple[Utterance, str]]:
    """Probe every file (in parallel); drop, count and name the unusable ones."""
    from whisper_ft.console import warn
    from whisper_ft.data.common import default_workers, parallel_map
    from whisper_ft.training.dist import is_main_process

    problems = list(parallel_map(audio_problem, [u for u, _ in pairs], default_workers(),
                                 desc=f"checking {report.name} audio", disable=not is_main_process()))
    kept = []
    for (utt, lang), problem in zip(pairs, problems):
        if problem is None:
            kept.append((utt, lang))
            continue
        report.bad_audio.append((str(utt.audio_file), problem))
        if is_main_process() and len(report.bad_audio) <= examples:
            warn(f"{report.path}: skipping utterance {utt.key} ({utt.audio_file}): {problem}")
    if is_main_process() and len(report.bad_audio) > examples:
        warn(f"{report.path}: {len(report.bad_audio) - examples} more utterances with unusable audio skipped")
    return kept


def build_samples(
    pairs: list[tuple[Utterance, str]], report: ManifestReport, tokenizer, builder: LabelBuilder, *, timestamps: bool
) -> list[Sample]:
    """Tokenise transcripts (and sentence texts when ``timestamps``); drop over-long labels."""
    for _, lang in pairs:
        if not builder.has_language(lang):
            raise DataError(f"{report.path}: the model's tokenizer has no <|{lang}|> token (an English-only model?)")
    text_ids = encode_text(tokenizer, [u.sentence for u, _ in pairs])
    samples = []
    for (utt, lang), ids in zip(pairs, text_ids):
        if not fits(builder.plain_length(ids)):
            report.too_many_tokens += 1
            continue
        segments = None
        if timestamps and utt.sentences:
            sentence_ids = encode_text(tokenizer, [s.text for s in utt.sentences])
            segments = [(s.start, s.end, sids) for s, sids in zip(utt.sentences, sentence_ids)]
            if not fits(builder.timestamped_length(segments)):
                segments = None  # trained without timestamps only
        samples.append(Sample(utt, lang, ids, segments))
    report.kept = len(samples)
    report.hours = sum(s.duration for s in samples) / 3600
    report.languages = Counter(s.language for s in samples)
    if not samples:
        raise DataError(f"{report.path}: every utterance's label is over 448 tokens; nothing to train on")
    return samples


class SpeechDataset:
    """Map-style dataset: index (or ``(index, epoch)``) -> features, labels and the sample key.

    Feature extraction runs in ``__getitem__``, i.e. in DataLoader worker processes. ``samples``
    may mix training utterances, replay utterances (a pool named by ``draws``) and non-speech
    samples (``training.empty_audio``): each loads its own audio from the (seed, epoch, index) generator.
    """

    def __init__(
        self,
        samples: list,
        builder: LabelBuilder,
        feature_extractor,
        *,
        training: bool,
        seed: int = 0,
        timestamp_fraction: float = 0.5,
        augmenter=None,
        draws: tuple[Draw, ...] = (),
    ):
        self.samples = samples
        self.draws = tuple(draws)  # pools the sampler draws from each epoch (the replay set)
        self.builder = builder
        self.feature_extractor = feature_extractor
        self.training = training
        self.seed = seed
        self.timestamp_fraction = timestamp_fraction
        self.augmenter = augmenter if training and augmenter else None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def durations(self) -> list[float]:
        return [s.duration for s in self.samples]

    def __getitem__(self, item) -> dict:
        one_thread_in_dataloader_worker()
        index, epoch = item if isinstance(item, tuple) else (int(item), 0)
        sample = self.samples[index]
        rng = np.random.default_rng([self.seed, epoch, index])
        audio = sample.load_audio(rng)
        segments = sample.segments
        with_timestamps = bool(self.training and segments and rng.random() < self.timestamp_fraction)
        if self.augmenter:
            audio, segments = self.augmenter(audio, segments if with_timestamps else None, rng)
        if with_timestamps:
            labels = self.builder.timestamped(sample.language, segments)
        else:
            labels = self.builder.plain(sample.language, sample.text_ids)
        features = self.features(audio)
        return {"input_features": features, "labels": labels, "key": sample.key, "language": sample.language}

    def features(self, audio: np.ndarray) -> np.ndarray:
        """Log-mel features ``[n_mels, 3000]`` (float32) of up to 30 s of 16 kHz audio."""
        from whisper_ft.audio import SAMPLE_RATE

        out = self.feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="np")
        return out["input_features"][0].astype(np.float32, copy=False)


def epoch_shares(n_own: int, replay_ratio: float, empty_ratio: float) -> tuple[int, int]:
    """(replay, non-speech) samples per epoch so that they make up these shares of it, beside the
    ``n_own`` samples of the training data (at least one each when its ratio is above 0)."""
    total = n_own / (1.0 - replay_ratio - empty_ratio)
    replay = max(1, round(total * replay_ratio)) if replay_ratio > 0 else 0
    empty = max(1, round(total * empty_ratio)) if empty_ratio > 0 else 0
    return replay, empty


@dataclass
class SpeechCollator:
    """Stacks features and pads labels (without the leading start token) with -100."""

    decoder_start_token_id: int
    feature_dtype: object = None  # a torch dtype; None = float32

    def __call__(self, items: list[dict]) -> dict:
        import torch

        features = torch.from_numpy(np.stack([it["input_features"] for it in items]))
        if self.feature_dtype is not None:
            features = features.to(self.feature_dtype)
        seqs = [it["labels"][1:] if it["labels"][0] == self.decoder_start_token_id else it["labels"] for it in items]
        labels = torch.full((len(seqs), max(len(s) for s in seqs)), IGNORE_INDEX, dtype=torch.long)
        for row, seq in enumerate(seqs):
            labels[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        return {"input_features": features, "labels": labels}

