"""Manifests -> (mel features or cached encoder outputs, transcript ids) -> padded batches.

1. :func:`check_manifest` (the Whisper recipe's too: :mod:`whisper_ft.trainkit.manifest`) reads a
   manifest, or several read as one set, and checks it before any model is loaded: missing audio,
   unknown or missing languages (the language chooses the normaliser and CER/WER when scoring),
   durations outside the limits and unusable audio dropped and counted.
2. :func:`build_samples` tokenises the transcripts with the LLM's tokenizer.
3. :class:`LlmSpeechDataset` computes unpadded log-mel features in DataLoader workers, or reads the
   clip's encoder output from an :class:`EncoderCache` (filled once by :func:`fill_encoder_cache`:
   the encoder is frozen, so its output never changes during a run).
4. Batches come in the order of the generic :class:`whisper_ft.trainkit.sampler.DurationGroupedSampler`
   (``(index, epoch)`` items, deterministic, resumable); :class:`LlmCollator` pads them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whisper_ft.core.errors import WhisperFtError
from whisper_ft.core.manifest import Utterance
from whisper_ft.trainkit.dist import one_thread_in_dataloader_worker
from whisper_ft.trainkit.manifest import ManifestReport
from whisper_ft.trainkit.manifest import check_manifest as check_manifest

IGNORE_INDEX = -100


@dataclass
class LlmSample:
    utterance: Utterance
    language: str
    target_ids: list[int]

    @property
    def duration(self) -> float:
        return self.utterance.duration

    @property
    def key(self) -> str:
        return self.utterance.key


def build_samples(pairs, report: ManifestReport, tokenizer) -> list[LlmSample]:
    from whisper_ft.speech_llm.llm import encode_transcripts

    ids = encode_transcripts(tokenizer, [u.sentence for u, _ in pairs])
    samples = [LlmSample(u, lang, t) for (u, lang), t in zip(pairs, ids)]
    report.count_kept(samples)
    return samples


class EncoderCache:
    """One ``.npy`` per clip under ``folder``, keyed by the encoder's fingerprint and the audio file
    (path, slice, size, mtime): a changed file or encoder is never served a stale output."""

    def __init__(self, folder: str | Path, fingerprint: str, dtype: str = "float32"):
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        self.dtype = dtype

    def path_for(self, utt: Utterance) -> Path:
        f = utt.audio_file.resolve()
        st = f.stat()
        raw = f"{self.fingerprint}|{f}|{utt.start_time}|{utt.end_time}|{st.st_size}|{st.st_mtime_ns}"
        digest = hashlib.sha1(raw.encode()).hexdigest()
        return self.folder / digest[:2] / f"{digest}.npy"

    def get(self, utt: Utterance) -> np.ndarray | None:
        path = self.path_for(utt)
        if not path.is_file():
            return None
        try:
            return np.load(path)
        except (OSError, ValueError):  # a damaged file: computed again
            return None

    def put(self, utt: Utterance, value: np.ndarray) -> None:
        path = self.path_for(utt)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{id(value)}.tmp.npy")
        np.save(tmp, value.astype(self.dtype, copy=False))
        tmp.replace(path)


def fill_encoder_cache(cache: EncoderCache, samples: list[LlmSample], encoder, feature_extractor, *,
                       batch_size: int = 8, show_progress: bool = True) -> int:
    """Encode every sample not cached yet (longest first); returns how many were computed."""
    import torch

    from whisper_ft.core.console import progress
    from whisper_ft.speech_llm.encoder import encode, mel_features, pad_features

    todo = [s for s in samples if not cache.path_for(s.utterance).is_file()]
    todo.sort(key=lambda s: -s.duration)
    bar = progress(None, total=len(todo), desc="encoder cache", unit="utt", disable=not show_progress or not todo)
    try:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            feats, lengths = pad_features([mel_features(feature_extractor, s.utterance.load_audio()) for s in chunk])
            with torch.no_grad():
                out, out_len = encode(encoder, feats, lengths)
            out = out.float().cpu().numpy()
            for s, row, n in zip(chunk, out, out_len.tolist()):
                cache.put(s.utterance, row[:n])
            bar.update(len(chunk))
    finally:
        bar.close()
    return len(todo)


class LlmSpeechDataset:
    """index (or ``(index, epoch)``) -> ``{"features" | "encoder_out", "labels", "key"}``."""

    def __init__(self, samples: list[LlmSample], feature_extractor, cache: EncoderCache | None = None):
        self.samples = samples
        self.feature_extractor = feature_extractor
        self.cache = cache

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def durations(self) -> list[float]:
        return [s.duration for s in self.samples]

    def __getitem__(self, item) -> dict:
        from whisper_ft.speech_llm.encoder import mel_features

        one_thread_in_dataloader_worker()
        index = item[0] if isinstance(item, tuple) else int(item)
        sample = self.samples[index]
        out = {"labels": sample.target_ids, "key": sample.key}
        if self.cache is not None:
            cached = self.cache.get(sample.utterance)
            if cached is not None:
                out["encoder_out"] = cached
                return out
        out["features"] = mel_features(self.feature_extractor, sample.utterance.load_audio())
        return out


@dataclass
class LlmCollator:
    """Pads mel features (or encoder outputs) with zeros and transcript ids with -100."""

    def __call__(self, items: list[dict]) -> dict:
        import torch

        from whisper_ft.speech_llm.encoder import pad_features

        batch: dict = {}
        if all("encoder_out" in it for it in items):
            lengths = torch.tensor([it["encoder_out"].shape[0] for it in items], dtype=torch.long)
            out = torch.zeros(len(items), int(lengths.max()), items[0]["encoder_out"].shape[1])
            for i, it in enumerate(items):
                out[i, : it["encoder_out"].shape[0]] = torch.from_numpy(it["encoder_out"].astype(np.float32))
            batch["encoder_out"], batch["encoder_lengths"] = out, lengths
        else:  # a clip missing from the cache: the whole batch goes through the encoder
            feats = [it["features"] if "features" in it else None for it in items]
            if any(f is None for f in feats):
                raise WhisperFtError("a batch mixes cached and uncached clips; fill the encoder cache first")
            batch["features"], batch["feature_lengths"] = pad_features(feats)
        seqs = [list(it["labels"]) for it in items]
        labels = torch.full((len(seqs), max(1, max(len(s) for s in seqs))), IGNORE_INDEX, dtype=torch.long)
        for row, seq in enumerate(seqs):
            if seq:
                labels[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        batch["labels"] = labels
        return batch
