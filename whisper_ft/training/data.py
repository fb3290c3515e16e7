"""Manifests -> training samples -> batches of log-mel features and labels.

1. :func:`check_manifest` (shared by both recipes: :mod:`whisper_ft.trainkit.manifest`) reads a
   manifest, or several read as one set, and checks it completely before any model is loaded:
   parse errors, missing audio, unknown or missing languages, durations outside
   ``[min_duration, max_duration]`` and unusable audio (dropped, counted and named).
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

from dataclasses import dataclass

import numpy as np

from whisper_ft.core.errors import DataError
from whisper_ft.core.manifest import Utterance
from whisper_ft.models.generation import MAX_TARGET_TOKENS
from whisper_ft.training.labels import LabelBuilder, Segment, encode_text, fits
from whisper_ft.trainkit.dist import one_thread_in_dataloader_worker
from whisper_ft.trainkit.manifest import ManifestReport

# re-exported only for tests/test_transcribe.py (still imports it from here)
from whisper_ft.trainkit.manifest import check_manifest as check_manifest
from whisper_ft.trainkit.sampler import Draw

IGNORE_INDEX = -100  # label value the loss ignores (padding)


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
    report.max_label_tokens = MAX_TARGET_TOKENS
    report.count_kept(samples)
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
        from whisper_ft.core.audio import SAMPLE_RATE

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

