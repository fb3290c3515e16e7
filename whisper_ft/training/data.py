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
    previous_ids: list[int] | None = None  # the text tokens of the utterance before it (same folder), for prompts

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


def link_previous_texts(samples: list[Sample]) -> int:
    """Give each sample the text tokens of the one before it in the manifest from the same folder
    (one speaker's or one recording's folder in AISHELL, LibriSpeech, Common Voice exports; the
    slices of one long file), the context a prompt gives at decoding time; returns how many have one."""
    last: dict[str, Sample] = {}
    n = 0
    for s in samples:
        folder = str(s.utterance.audio_file.parent)
        before = last.get(folder)
        s.previous_ids = before.text_ids if before is not None and before.text_ids else None
        n += s.previous_ids is not None
        last[folder] = s
    return n


@dataclass(frozen=True)
class PromptPlan:
    """Which training samples get a text prompt, and from what (``--prompt_ratio``, ``--prompt_terms``)."""

    ratio: float = 0.0
    terms: tuple[tuple[int, ...], ...] = ()  # each term's tokens
    max_terms: int = 8  # a prompt of terms holds 1 to this many, in random order

    def pick(self, sample, rng: np.random.Generator) -> list[int] | None:
        """The prompt's tokens for this draw, or None (no prompt). Draws from ``rng`` only when
        prompts are on, so a run without them sees exactly the data it always did."""
        if self.ratio <= 0 or rng.random() >= self.ratio:
            return None
        previous = getattr(sample, "previous_ids", None)
        if self.terms and (previous is None or rng.random() < 0.5):
            k = int(rng.integers(1, min(self.max_terms, len(self.terms)) + 1))
            return [t for i in rng.permutation(len(self.terms))[:k] for t in self.terms[i]]
        return list(previous) if previous else None


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
        prompts: PromptPlan | None = None,
    ):
        self.samples = samples
        self.draws = tuple(draws)  # pools the sampler draws from each epoch (the replay set)
        self.builder = builder
        self.feature_extractor = feature_extractor
        self.training = training
        self.seed = seed
        self.timestamp_fraction = timestamp_fraction
        self.augmenter = augmenter if training and augmenter else None
        self.prompts = prompts if training and prompts is not None else PromptPlan()

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
        prompt = self.prompts.pick(sample, rng)
        if prompt:
            labels = self.builder.prompted(prompt, labels)
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
    """Stacks features and pads labels (without the leading start token) with -100.

    A batch with a prompted label (``<|startofprev|> ...`` first, ``sot_prev``) gets its decoder
    inputs from the collator (each sequence less its last token; padding is never attended to by a
    real position: the decoder is causal) and labels shifted by one with every target up to and
    including ``<|startoftranscript|>`` masked: the prompt is context, not something to learn."""

    decoder_start_token_id: int
    feature_dtype: object = None  # a torch dtype; None = float32
    sot_prev: int | None = None

    def __call__(self, items: list[dict]) -> dict:
        import torch

        features = torch.from_numpy(np.stack([it["input_features"] for it in items]))
        if self.feature_dtype is not None:
            features = features.to(self.feature_dtype)
        if self.sot_prev is not None and any(it["labels"][0] == self.sot_prev for it in items):
            return {"input_features": features, **self._prompted([it["labels"] for it in items])}
        seqs = [it["labels"][1:] if it["labels"][0] == self.decoder_start_token_id else it["labels"] for it in items]
        labels = torch.full((len(seqs), max(len(s) for s in seqs)), IGNORE_INDEX, dtype=torch.long)
        for row, seq in enumerate(seqs):
            labels[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        return {"input_features": features, "labels": labels}

    def _prompted(self, seqs: list[list[int]]) -> dict:
        import torch

        width = max(len(s) for s in seqs) - 1
        inputs = torch.full((len(seqs), width), self.decoder_start_token_id, dtype=torch.long)
        labels = torch.full((len(seqs), width), IGNORE_INDEX, dtype=torch.long)
        for row, seq in enumerate(seqs):
            if seq[0] != self.decoder_start_token_id and seq[0] != self.sot_prev:
                seq = [self.decoder_start_token_id, *seq]
            inputs[row, : len(seq) - 1] = torch.tensor(seq[:-1], dtype=torch.long)
            targets = torch.tensor(seq[1:], dtype=torch.long)
            targets[: seq.index(self.decoder_start_token_id)] = IGNORE_INDEX  # the prompt and <|startoftranscript|>
            labels[row, : len(seq) - 1] = targets
        return {"decoder_input_ids": inputs, "labels": labels}

