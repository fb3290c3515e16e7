"""Fine-tuning that keeps what the base model knew: the pieces behind the anti-forgetting options.

- :func:`kl_to_base` (``--kl_to_base W``): KL(base || tuned) of the next-token distributions over
  the label positions. The base is the same peft network with its adapters switched off
  (``disable_adapter()``) under ``no_grad``: no second model in memory, one more forward pass. A full
  fine-tune has no adapters to switch off: a frozen copy of the base gives the base's logits
  (``training.model.frozen_reference``: one model's memory more).
- :func:`training_mix` (``--replay_data/--replay_ratio``, ``--empty_audio_ratio``): the training
  samples followed by the replay pool and the non-speech samples, and the sampler's draw of the pool.
- :class:`EvalSet`, :func:`check_eval_sets`, :func:`build_eval_sets` (``--test_data NAME=MANIFEST``, repeatable): the sets
  scored at every evaluation, the metric of each, and the bound on the general ones
  (``--max_general_regression``).
"""

from __future__ import annotations

from dataclasses import dataclass

from whisper_ft.training.data import IGNORE_INDEX, epoch_shares
from whisper_ft.trainkit.sampler import Draw


def kl_to_base(peft_model, inputs: dict, tuned_logits, base_logits=None):
    """Mean over label positions of KL(p_base || p_tuned), the base being ``peft_model`` with its
    adapters disabled. 0 (exactly) while the adapters are still zero, as at step 0 of LoRA.
    ``base_logits``: the base's logits computed elsewhere (a full fine-tune's frozen reference copy)."""
    import torch
    import torch.nn.functional as F

    if base_logits is None:
        with torch.no_grad(), peft_model.disable_adapter():
            base_logits = peft_model(**inputs).logits
    mask = inputs["labels"] != IGNORE_INDEX
    log_tuned = F.log_softmax(tuned_logits[mask].float(), dim=-1)
    log_base = F.log_softmax(base_logits[mask].float(), dim=-1)
    return (log_base.exp() * (log_base - log_tuned)).sum(-1).mean()


@dataclass
class TrainingMix:
    samples: list  # own training samples, then the replay pool, then the non-speech samples
    draws: tuple[Draw, ...]
    n_own: int
    n_replay: int  # replay samples per epoch
    n_empty: int  # non-speech samples per epoch

    @property
    def per_epoch(self) -> int:
        return self.n_own + self.n_replay + self.n_empty

    def summary(self) -> str:
        n = self.per_epoch
        parts = [f"{self.n_own} own"]
        if self.n_replay:
            parts.append(f"{self.n_replay} replay ({self.n_replay / n:.0%}, a fresh draw each epoch)")
        if self.n_empty:
            parts.append(f"{self.n_empty} non-speech with an empty transcript ({self.n_empty / n:.0%})")
        return f"each epoch: {n} samples = " + " + ".join(parts)


def training_mix(own: list, replay: list, *, replay_ratio: float, empty_ratio: float, seed: int,
                 empty_audio_dir: str | None = None) -> TrainingMix:
    """Own samples + replay pool + non-speech samples, with the per-epoch shares of the last two."""
    from whisper_ft.training.empty_audio import empty_audio_samples

    n_replay, n_empty = epoch_shares(len(own), replay_ratio if replay else 0.0, empty_ratio)
    empty = empty_audio_samples(n_empty, [s.duration for s in own], [s.language for s in own], seed=seed,
                                folder=empty_audio_dir) if n_empty else []
    draws = (Draw(len(own), len(own) + len(replay), n_replay),) if n_replay else ()
    return TrainingMix([*own, *(replay if n_replay else []), *empty], draws, len(own), n_replay, n_empty)


@dataclass
class EvalSet:
    """One evaluation set: its name (None: the single, unnamed set), samples and the metric that
    ranks checkpoints on it (``cer``/``wer`` by its main language, or the run's --metric_for_best)."""

    name: str | None
    path: str
    samples: list
    metric: str
    language: str  # the set's main language

    def key(self, metric: str | None = None) -> str:
        """Metric name without ``eval_``: ``cer`` or ``general_wer``."""
        metric = metric or self.metric
        return f"{self.name}_{metric}" if self.name else metric


def check_eval_sets(data) -> list[tuple[str | None, str, list, object]]:
    """Check every ``--test_data`` set (before any model is loaded): (name, path, pairs, report).
    The first (domain) set takes ``--language``; the others keep their records' own languages."""
    from whisper_ft.trainkit.manifest import check_manifest

    checked = []
    for i, (name, path) in enumerate(data.test_sets()):
        pairs, report = check_manifest(path, name=name or "test", language=data.language if i == 0 else None,
                                       fallback_language=data.language, min_duration=data.min_duration,
                                       max_duration=data.max_duration)
        checked.append((name, path, pairs, report))
    return checked


def build_eval_sets(checked, metric_for_best: str | None, tokenizer, builder, *, log) -> list[EvalSet]:
    """Tokenise the checked sets. The first is ranked by ``--metric_for_best`` (default: CER or WER
    by its main language); the others by CER or WER by theirs."""
    from whisper_ft.core.languages import default_metric
    from whisper_ft.training.data import build_samples

    sets = []
    for i, (name, path, pairs, report) in enumerate(checked):
        samples = build_samples(pairs, report, tokenizer, builder, timestamps=False)
        log(report.summary())
        main_language = report.languages.most_common(1)[0][0]
        metric = metric_for_best if (i == 0 and metric_for_best) else default_metric(main_language)
        sets.append(EvalSet(name, path, samples, metric, main_language))
    return sets
