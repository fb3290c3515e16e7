"""The batch order of training: shuffled, grouped by duration, deterministic in (seed, epoch).

Generic: it sees only the durations of the dataset's items, so both recipes use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Draw:
    """Indices ``start .. stop-1`` of the dataset are a pool: each epoch takes ``per_epoch`` of them."""

    start: int
    stop: int
    per_epoch: int


class DurationGroupedSampler:
    """Shuffled, length-grouped order of ``(index, epoch)`` pairs; deterministic in (seed, epoch).

    The shuffled indices are cut into groups of ``group_batches`` batches, each group is sorted by
    duration (longest first) and cut into batches, and the batches are shuffled: a batch holds
    utterances of similar length while the data order stays random. The longest batch of all
    comes first, so an out-of-memory batch size fails at step 1, not hours later.

    ``draws`` name pools (the replay set): each epoch takes a seeded draw of ``per_epoch`` indices
    from each (without repeats while the pool lasts); every other index is used once per epoch.
    """

    def __init__(self, durations: list[float], batch_size: int, seed: int, group_batches: int = 50,
                 draws: tuple[Draw, ...] | list[Draw] = ()):
        self.durations = np.asarray(durations, dtype=np.float64)
        self.batch_size = batch_size
        self.seed = seed
        self.group_batches = group_batches
        self.draws = tuple(draws)
        self.epoch = 0
        pooled = np.zeros(len(self.durations), dtype=bool)
        for d in self.draws:
            pooled[d.start:d.stop] = True
        self.always = np.flatnonzero(~pooled)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.always) + sum(d.per_epoch for d in self.draws)

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """This epoch's dataset indices before shuffling: every fixed one, plus each pool's draw."""
        if not self.draws:
            return self.always
        chosen = [self.always]
        for k, d in enumerate(self.draws):  # own streams: the shuffle below stays what it was
            size = d.stop - d.start
            rng = np.random.default_rng([self.seed, epoch, 1000 + k])
            reps = -(-d.per_epoch // size)  # whole shuffles of the pool, then cut
            chosen.append(d.start + np.concatenate([rng.permutation(size) for _ in range(reps)])[: d.per_epoch])
        return np.concatenate(chosen)

    def order(self, epoch: int) -> list[int]:
        rng = np.random.default_rng([self.seed, epoch])
        indices = self.epoch_indices(epoch)
        perm = indices[rng.permutation(len(indices))]
        group = self.batch_size * self.group_batches
        batches = []
        for start in range(0, len(perm), group):
            chunk = perm[start : start + group]
            chunk = chunk[np.argsort(-self.durations[chunk], kind="stable")]
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        longest = max(range(len(batches)), key=lambda b: self.durations[batches[b]].max())
        rest = [batches[b] for b in rng.permutation(len(batches)) if b != longest]
        return [int(i) for b in [batches[longest], *rest] for i in b]

    def __iter__(self):
        epoch = self.epoch
        return iter([(i, epoch) for i in self.order(epoch)])
