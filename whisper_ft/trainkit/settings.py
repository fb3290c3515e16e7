"""Settings dataclasses with help texts, and the generic training schedule both recipes share.

:func:`setting` makes a dataclass field carry its help text (and the CLI option that sets it, for
error messages); the CLI reads defaults and help with :func:`default_of` / :func:`help_of`.
:class:`TrainSettings` is the optimisation, evaluation and checkpoint schedule plus the hardware
options; each recipe uses it as is (Whisper LoRA) or subclasses it (speech-LLM).

This module imports nothing heavy: the CLI reads its defaults and help texts at import time.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from whisper_ft.core.errors import WhisperFtError

METRICS_FOR_BEST = ("cer", "wer", "loss")
METRICS_FILE = "metrics.json"  # the evaluation that made best/ the best
# --report_to: where the Trainer's logs go, and the package each needs (None: nothing to install)
REPORTERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "none": None}
TRAIN_DATA_HELP = ("Training manifest (JSON Lines, see `whisper-ft prepare`); several are read as one set: repeat the "
                   "option, separate them with commas, or give a glob or a folder of *.jsonl shards.")


def setting(default: Any, help: str, option: str | None = None, **cli: Any) -> Any:
    """A dataclass field with its help text and the CLI option that sets it (``--<field name>``
    unless ``option`` says otherwise). ``cli`` tunes the generated CLI option
    (:mod:`whisper_ft.cli.options`): ``metavar``, ``cli_type`` (e.g. ``list[str]``: repeatable),
    ``cli_default`` (None: the command fills in the default and says so), ``cli_help`` (replaces
    the help text there), ``required``, ``hidden`` (for a renamed option's old spelling)."""
    return field(default=default, metadata={"help": help, "option": option, **cli})


def split_names(value) -> tuple[str, ...]:
    """``"q_proj, v_proj"`` or ``["q_proj", "v_proj"]`` -> ``("q_proj", "v_proj")`` (empty names dropped)."""
    if isinstance(value, str):
        value = value.split(",")
    return tuple(v.strip() for v in value if v and v.strip())


def help_of(cls, name: str) -> str:
    """The help text of field ``name`` of settings dataclass ``cls`` (used by the CLI)."""
    return next(f.metadata["help"] for f in fields(cls) if f.name == name)


def option_of(obj, name: str) -> str:
    """The CLI option that sets field ``name`` (for error messages); ``--name`` unless the field says."""
    meta = next(f.metadata for f in fields(obj) if f.name == name)
    return meta.get("option") or f"--{name}"


def require(ok: bool, message: str) -> None:
    """Raise :class:`WhisperFtError` with ``message`` unless ``ok`` (the settings' validation)."""
    if not ok:
        raise WhisperFtError(message)


def positive(obj, name: str, *, allow_zero: bool = False) -> None:
    """Field ``name`` of ``obj`` must be above 0 (or at least 0), else a one-line error naming its option."""
    value = getattr(obj, name)
    ok = value >= 0 if allow_zero else value > 0
    require(ok, f"{option_of(obj, name)} must be {'at least 0' if allow_zero else 'positive'} (got {value})")


def default_of(cls, name: str) -> Any:
    """The default value of field ``name`` (used by the CLI so defaults live in one place)."""
    f = next(f for f in fields(cls) if f.name == name)
    return None if f.default is MISSING else f.default


def settings_from_dict(cls, data: dict[str, Any] | None):
    """A settings dataclass from its saved dict; an unknown key is an error (a newer or foreign config)."""
    data = dict(data or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise WhisperFtError(f"unknown {cls.__name__} setting(s): {', '.join(unknown)}")
    return cls(**data)


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


class RunConfig:
    """What a recipe's whole config (a dataclass of ``output_dir`` and settings dataclasses) shares:
    the run folder ``output_dir/<run_name>`` (the recipe names it), and the JSON form saved with
    every run and read back (the ``resolved`` part written beside it is ignored)."""

    output_dir: str
    run_name: str

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.run_name

    def to_dict(self) -> dict[str, Any]:
        return _lists(asdict(self))  # tuples (module lists) as JSON lists

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        data = dict(data)
        values = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data.pop(f.name)
            section = f.default_factory if isinstance(f.default_factory, type) else None
            values[f.name] = settings_from_dict(section, value) if section and is_dataclass(section) else value
        return cls(**values)


@dataclass
class TrainSettings:
    """The optimisation, evaluation and checkpointing schedule, and the hardware options."""

    num_train_epochs: float = setting(3.0, "Passes over the training data (ignored when --max_steps is given).")
    max_steps: int | None = setting(
        None, "Stop after this many optimizer steps, at least 1 (overrides --num_train_epochs; -1 = not set)."
    )
    learning_rate: float = setting(1e-3, "Peak learning rate (linear warm-up, then linear decay to 0).")
    warmup_steps: int = setting(50, "Optimizer steps of linear learning-rate warm-up.")
    weight_decay: float = setting(0.0, "AdamW weight decay on the adapter weights.")
    max_grad_norm: float = setting(1.0, "Clip the gradient norm to this (0 = no clipping).")
    per_device_train_batch_size: int = setting(8, "Training utterances per batch on each device.")
    per_device_eval_batch_size: int = setting(8, "Evaluation utterances per batch on each device.")
    gradient_accumulation_steps: int = setting(1, "Batches whose gradients add up to one optimizer step.")
    fp16: bool = setting(False, "Mixed precision with float16 (CUDA); frozen base weights kept in float16.")
    bf16: bool = setting(False, "Mixed precision with bfloat16 (CUDA, or CPUs that support it).")
    use_8bit: bool = setting(False, "Load the frozen base model in 8 bits (bitsandbytes, CUDA only).")
    gradient_checkpointing: bool = setting(
        False, "Recompute activations in the backward pass: much less memory, about 20-30% slower."
    )
    eval_steps: int = setting(500, "Evaluate (decode the test set) every this many optimizer steps, and at the end.")
    save_steps: int = setting(500, "Write a resumable checkpoint-N every this many optimizer steps, and at the end.")
    save_total_limit: int | None = setting(3, "Keep at most this many checkpoints (the best one is always kept).")
    logging_steps: int = setting(10, "Log the training loss every this many optimizer steps.")
    metric_for_best: str | None = setting(
        None, "cer, wer or loss: what picks best/ (default: cer for zh/ja/ko-like languages, wer otherwise)."
    )
    eval_num_beams: int = setting(1, "Beam size of the decoding done at each evaluation.")
    eval_on_start: bool = setting(
        False, "Also evaluate before the first step: the base model's score, kept as best/ if nothing beats it."
    )
    kl_to_base: float = setting(
        0.0, "Weight W of a pull toward the base model: loss = cross-entropy + W * KL(base || tuned) over the label "
        "tokens; the base is the same network with the adapters switched off (no second copy; one more forward "
        "pass per step). 0 = off."
    )
    max_general_regression: float | None = setting(
        None, "With several --test_data sets: a checkpoint whose error rate on any set after the first is more "
        "than this many points (CER/WER %) worse than the base model's (evaluated at step 0) is never chosen as "
        "best/."
    )
    seed: int = setting(42, "Random seed: data order, augmentation, dropout and initialisation.")
    num_threads: int | None = setting(
        None, "Torch CPU threads (default: OMP_NUM_THREADS, else all cores, shared between local processes)."
    )
    resume_from_checkpoint: str | None = setting(
        None, "Resume from this checkpoint-N folder; 'latest' = the newest one of this run.", metavar="[PATH]",
        cli_help="Resume from a checkpoint-N folder; without PATH, the latest checkpoint of this run."
    )
    overwrite_output_dir: bool = setting(
        False, "Start a new run in a run folder that already holds one: its checkpoint-N/ and best/ are removed "
        "first (without it such a run is refused, or gets a fresh -2, -3 ... folder when --output_dir is not given)."
    )
    deepspeed: str | None = setting(None, "DeepSpeed JSON config (e.g. scripts/deepspeed_zero2.json).")
    report_to: str = setting(
        "tensorboard", "Where the training logs go: tensorboard (OUTPUT_DIR/<model>/runs/), wandb, mlflow (each "
        "configured by its own environment variables, e.g. WANDB_MODE=offline, MLFLOW_TRACKING_URI) or none.",
        metavar="tensorboard|wandb|mlflow|none")

    def __post_init__(self) -> None:
        if self.max_steps == -1:
            self.max_steps = None  # transformers' "not set": train --num_train_epochs epochs
        require(self.max_steps is None or self.max_steps >= 1,
                 f"--max_steps must be at least 1 (got {self.max_steps}); omit it to train --num_train_epochs epochs")
        if self.max_steps is None:
            positive(self, "num_train_epochs")
        if self.learning_rate is not None:  # None: the recipe's default (the Whisper recipe's depends on --method)
            positive(self, "learning_rate")
        for name in ("warmup_steps", "weight_decay", "max_grad_norm"):
            positive(self, name, allow_zero=True)
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                     "eval_steps", "save_steps", "logging_steps", "eval_num_beams"):
            positive(self, name)
        if self.save_total_limit is not None:
            positive(self, "save_total_limit")
        require(not (self.fp16 and self.bf16), "--fp16 and --bf16 exclude each other: choose one")
        require(not (self.overwrite_output_dir and self.resume_from_checkpoint),
                "--overwrite_output_dir and --resume_from_checkpoint exclude each other: continue the earlier run "
                "or replace it, not both")
        if self.metric_for_best is not None:
            self.metric_for_best = self.metric_for_best.strip().lower()
            require(
                self.metric_for_best in METRICS_FOR_BEST,
                f"unknown --metric_for_best {self.metric_for_best!r}; choose one of: {', '.join(METRICS_FOR_BEST)}",
            )
        if self.num_threads is not None:
            positive(self, "num_threads")
        positive(self, "kl_to_base", allow_zero=True)
        if self.max_general_regression is not None:
            positive(self, "max_general_regression", allow_zero=True)
        if self.deepspeed:
            require(Path(self.deepspeed).is_file(), f"--deepspeed config not found: {self.deepspeed}")
        self.report_to = (self.report_to or "none").strip().lower()
        require(self.report_to in REPORTERS,
                f"unknown --report_to {self.report_to!r}; choose one of: {', '.join(REPORTERS)}")


def check_reporter(report_to: str) -> None:
    """A --report_to whose package is not installed: one line naming the pip install (before any model loads)."""
    import importlib.util

    package = REPORTERS.get(report_to)
    if package is not None and importlib.util.find_spec(package) is None:
        raise WhisperFtError(f"--report_to {report_to} needs the {package} package: pip install {package} "
                             "(or --report_to tensorboard|none)")
