"""Trainer callbacks of the Whisper LoRA recipe: AdaLoRA rank updates, the best/ folder.

- :class:`AdaLoraCallback` calls ``update_and_allocate`` after every optimizer step (while the
  gradients are still there) with ``total_step`` equal to the Trainer's real number of steps.
- :class:`BestModelCallback` writes ``best/`` (adapter, or a whole model for ``--method full``, +
  processor files + run config + metrics + a ``README.md`` model card, :mod:`whisper_ft.models.card`)
  whenever an evaluation beats the best so far: written aside, then renamed into place. It also
  puts the processor files into every ``checkpoint-N/`` so a checkpoint is a usable adapter.
  With several evaluation sets it decides once all of them are scored, by the first set's metric,
  and (``--max_general_regression``) passes over checkpoints that lost too much on the others
  against the base model's step-0 scores (kept in ``base_metrics.json`` of the run, for resuming).
- :class:`GracefulInterrupt` (Ctrl-C), :class:`ProgressBar` and :func:`previous_best_value` live in
  :mod:`whisper_ft.trainkit.callbacks` (shared with the speech-LLM recipe).
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback

from whisper_ft.training.config import CONFIG_FILE, METRICS_FILE
from whisper_ft.trainkit.callbacks import KeepBest
from whisper_ft.trainkit.dist import is_main_process as _is_main
from whisper_ft.trainkit.dist import log_main

ADALORA_PATTERN_FILE = "adalora_rank_pattern.json"  # in checkpoints: the ranks kept so far


class AdaLoraCallback(TrainerCallback):
    """Budgets AdaLoRA's ranks on every optimizer step (Whisper-Finetune's never did).

    A resumed run restores the rank pattern saved with the checkpoint (the pruned values are zero
    in its weights); the importance averages restart from zero, as peft does not save them.
    """

    def __init__(self, resumed_from: Path | None = None):
        self.resumed_from = resumed_from

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from whisper_ft.training.model import set_adalora_total_steps

        if set_adalora_total_steps(model, state.max_steps):
            log_main(f"AdaLoRA schedule set to the run's {state.max_steps} optimizer steps")
        if self.resumed_from is not None and (Path(self.resumed_from) / ADALORA_PATTERN_FILE).is_file():
            saved = Path(self.resumed_from) / ADALORA_PATTERN_FILE
            model.peft_config["default"].rank_pattern = json.loads(saved.read_text())

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        # Called after optimizer.step() and before zero_grad(): the importance scores need the
        # gradients. state.global_step is the 0-based index of the step just taken.
        model.base_model.update_and_allocate(state.global_step)


def _adapter_ranks(model) -> dict[str, int] | None:
    """AdaLoRA: the number of non-zero singular values per adapted module (for metrics.json)."""
    config = getattr(model, "peft_config", {}).get("default")  # None: a full fine-tune
    pattern = getattr(config, "rank_pattern", None)
    if not pattern:
        return None
    return {name: int(sum(bool(x) for x in mask)) for name, mask in pattern.items()}


BASE_METRICS_FILE = "base_metrics.json"  # in the run folder: the step-0 scores the bounds refer to


class BestModelCallback(KeepBest):
    """Keeps ``run_dir/best`` = the adapter (or whole model) with the best evaluation metric so far.

    ``metric`` is a key without ``eval_`` (``cer``, or ``domain_cer`` with named sets);
    ``set_prefixes`` the metric prefixes of all evaluation sets (the Trainer evaluates them one
    after the other); ``bounds`` maps general-set keys (``general_wer``) to the most points (%)
    they may lose against the base model's scores, taken at step 0 (``base_metrics_file``).
    """

    def __init__(self, best_dir: Path, metric: str, processor, run_config: dict, previous_best: float | None = None,
                 *, set_prefixes: tuple[str, ...] = ("eval",), bounds: dict[str, float] | None = None,
                 base_metrics_file: Path | None = None):
        super().__init__(best_dir, metric, run_config, previous_best)
        self.processor = processor
        self.set_prefixes = tuple(set_prefixes)
        self.bounds = dict(bounds or {})
        self.base_metrics_file = Path(base_metrics_file) if base_metrics_file else None
        self.base_scores: dict[str, float] | None = None
        if self.bounds and self.base_metrics_file and self.base_metrics_file.is_file():
            self.base_scores = json.loads(self.base_metrics_file.read_text())
        self._pending: dict = {}
        self._over: dict[str, float] = {}

    def _over_bounds(self, metrics: dict, step: int) -> dict[str, float]:
        """The bounded keys whose loss against the base exceeds their bound, with the points lost."""
        if not self.bounds:
            return {}
        scores = {k: float(metrics[f"eval_{k}"]) for k in self.bounds}
        if self.base_scores is None:
            if step != 0:
                raise RuntimeError("--max_general_regression: no step-0 scores of the base model to compare with")
            self.base_scores = scores
            if self.base_metrics_file is not None and _is_main():
                from whisper_ft.models.output_dir import write_json

                write_json(self.base_metrics_file, scores)
        lost = {k: 100.0 * (v - self.base_scores[k]) for k, v in scores.items()}
        return {k: d for k, d in lost.items() if not d <= self.bounds[k] + 1e-9}  # NaN counts as over

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from whisper_ft.models.io import write_processor_files

            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if checkpoint.is_dir():
                write_processor_files(self.processor, checkpoint)

    def evaluation_done(self, metrics: dict, state) -> dict | None:
        self._pending.update(metrics)
        if not all(f"{prefix}_decoded" in self._pending for prefix in self.set_prefixes):
            return None  # the other sets of this evaluation are still to come
        metrics, self._pending = self._pending, {}
        self._over = self._over_bounds(metrics, state.global_step)
        return metrics

    def candidate(self, metrics: dict, state) -> bool:
        if self._over:
            lost = ", ".join(f"{k} +{d:.2f} points (bound {self.bounds[k]:g})" for k, d in self._over.items())
            log_main(f"step {state.global_step}: {lost} against the base model: not a candidate for best/")
        return not self._over

    def describe(self, model) -> dict:
        extra = {"base_scores": dict(self.base_scores), "bounds": dict(self.bounds)} if self.bounds else {}
        ranks = _adapter_ranks(model)
        return {**extra, "adalora_ranks": ranks} if ranks else extra

    def save(self, model) -> None:
        """Write the adapter (or, for a full fine-tune, the whole model), processor, run config,
        metrics and model card aside, then rename into place."""
        import shutil

        from whisper_ft.models.card import place_card, run_facts
        from whisper_ft.models.io import replace_dir, staging_dir, write_processor_files
        from whisper_ft.models.output_dir import write_json

        full = not hasattr(model, "peft_config")
        tmp = staging_dir(self.best_dir)
        try:
            config = getattr(model, "config", None) if full else None
            use_cache = getattr(config, "use_cache", None)
            if config is not None:
                config.use_cache = True  # off while training; a model to decode with wants its KV cache
            try:
                model.save_pretrained(str(tmp), safe_serialization=True)
            finally:
                if config is not None:
                    config.use_cache = use_cache
            # The run's decoding settings travel with the adapter (e.g. an empty transcript allowed).
            if getattr(model, "generation_config", None) is not None:
                model.generation_config.save_pretrained(str(tmp))
            write_processor_files(self.processor, tmp)
            write_json(tmp / CONFIG_FILE, self.run_config)
            write_json(tmp / METRICS_FILE, self.best_metrics)
            name = f"{self.best_dir.resolve().parent.name}-{self.best_dir.name}"
            (tmp / "README.md").unlink(missing_ok=True)  # peft's empty template card: ours replaces it
            place_card(tmp, run_facts(self.run_config, self.best_metrics, kind="model" if full else "adapter",
                                      name=name), previous=self.best_dir)
            replace_dir(tmp, self.best_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
