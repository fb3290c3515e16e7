"""Paired bootstrap over utterances: is a change in corpus-level CER/WER more than noise?

Both models were scored on the same utterances, so each bootstrap sample draws utterance indices
once and recomputes both corpus-level error rates (sum of edits / sum of reference lengths, as
:mod:`whisper_ft.core.scoring` does) on that same draw. The percentile interval of the difference is the
95 % interval; a change is significant when the interval excludes 0. Pairing matters: on a small
test set the two models' rates swing together with the draw, and their difference varies far less
than either rate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from whisper_ft.core.errors import WhisperFtError


@dataclass(frozen=True)
class PairedDifference:
    """``candidate - reference`` corpus error rate (fractions, not points) and its interval."""

    delta: float  # on the whole set
    low: float  # bootstrap percentile interval of the difference
    high: float
    confidence: float
    n_resamples: int
    n_utterances: int

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (a real change at this confidence)."""
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, Any]:
        d = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}
        d["significant"] = self.significant
        return d


def corpus_rate(errors: np.ndarray, ref_lens: np.ndarray) -> float:
    total = float(np.sum(ref_lens))
    return float(np.sum(errors)) / total if total > 0 else float("nan")


def paired_bootstrap(
    ref_errors: Sequence[int],
    cand_errors: Sequence[int],
    ref_lens: Sequence[int],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """Bootstrap the difference of corpus error rates of two models on the same utterances.

    ``ref_errors[i]`` / ``cand_errors[i]``: edits (S+D+I) of each model on utterance i;
    ``ref_lens[i]``: its reference length (characters or words). Deterministic for a seed.
    """
    a = np.asarray(ref_errors, dtype=np.int64)
    b = np.asarray(cand_errors, dtype=np.int64)
    n = np.asarray(ref_lens, dtype=np.int64)
    if not (len(a) == len(b) == len(n)):
        raise WhisperFtError(f"paired bootstrap needs one value per utterance for both models "
                             f"(got {len(a)}, {len(b)} errors and {len(n)} lengths)")
    if len(n) == 0 or n.sum() <= 0:
        raise WhisperFtError("paired bootstrap needs at least one utterance with a non-empty reference")
    if n_resamples < 1:
        raise WhisperFtError(f"--bootstrap must be at least 1 (got {n_resamples})")
    if not 0 < confidence < 1:
        raise WhisperFtError(f"confidence must be between 0 and 1 (got {confidence})")
    delta = (float(b.sum()) - float(a.sum())) / float(n.sum())
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_resamples, dtype=np.float64)
    # in chunks, so 10,000 resamples of a 10,000-utterance set stay small in memory
    chunk = max(1, 2_000_000 // max(len(n), 1))
    for start in range(0, n_resamples, chunk):
        k = min(chunk, n_resamples - start)
        idx = rng.integers(0, len(n), size=(k, len(n)))
        den = n[idx].sum(axis=1).astype(np.float64)
        num = (b[idx] - a[idx]).sum(axis=1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            diffs[start:start + k] = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
    diffs = diffs[~np.isnan(diffs)]  # draws made only of empty references have no rate
    alpha = (1 - confidence) / 2
    low, high = (float(x) for x in np.quantile(diffs, [alpha, 1 - alpha])) if diffs.size else (delta, delta)
    return PairedDifference(delta=delta, low=low, high=high, confidence=confidence, n_resamples=n_resamples,
                            n_utterances=len(n))
