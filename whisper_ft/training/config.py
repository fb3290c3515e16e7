"""The settings of a fine-tuning run: one dataclass per concern, every field with its help text.

:class:`FinetuneConfig` bundles the base model and output folder with :class:`LoraSettings`,
:class:`DataSettings` and :class:`TrainSettings`. Each dataclass validates itself on
construction (``__post_init__``) and raises :class:`WhisperFtError` with a one-line message that
names the CLI option, so a bad value fails before anything heavy happens. The whole config is
saved as JSON beside every ``best/`` adapter (``finetune_config.json``) and read back with
:meth:`FinetuneConfig.from_dict`.

This module imports nothing heavy: the CLI reads its defaults and help texts at import time.
"""

from __future__ import annotations

import os
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from whisper_ft.errors import WhisperFtError

DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
METRICS_FOR_BEST = ("cer", "wer", "loss")
TASKS = ("transcribe", "translate")
CONFIG_FILE = "finetune_config.json"  # the run config, beside every best/ adapter and in the run folder
METRICS_FILE = "metrics.json"  # the evaluation that made best/ the best


def setting(default: Any, help: str, option: str | None = None) -> Any:
    """A dataclass field with its help text (and the CLI option that sets it, for error messages)."""
    return field(default=default, metadata={"help": help, "option": option})


def help_of(cls, name: str) -> str:
    """The help text of field ``name`` of settings dataclass ``cls`` (used by the CLI)."""
    return next(f.metadata["help"] for f in fields(cls) if f.name == name)


def _option(obj, name: str) -> str:
    meta = next(f.metadata for f in fields(obj) if f.name == name)
    return meta.get("option") or f"--{name}"


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise WhisperFtError(message)


def _positive(obj, name: str, *, allow_zero: bool = False) -> None:
    value = getattr(obj, name)
    ok = value >= 0 if allow_zero else value > 0
    _require(ok, f"{_option(obj, name)} must be {'at least 0' if allow_zero else 'positive'} (got {value})")


def _split_names(value) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split(",")
    return tuple(v.strip() for v in value if v and v.strip())


@dataclass
class LoraSettings:
    """Which weights get low-rank adapters, and how big they are."""

    r: int = setting(32, "LoRA rank (with --use_adalora: the initial rank of every adapter).", "--lora_r")
    alpha: float = setting(64.0, "LoRA scaling numerator: the update is scaled by alpha / r.", "--lora_alpha")
    dropout: float = setting(0.05, "Dropout on the LoRA input during training.", "--lora_dropout")
    target_modules: tuple[str, ...] = setting(
        DEFAULT_TARGET_MODULES,
        "Comma-separated module names that get adapters (encoder and decoder alike).",
        "--target_modules",
    )
    encoder_layers: int | None = setting(
        None,
        "Adapters in the top N encoder layers only (0: decoder only; default: all). The layers below stay "
        "frozen and keep no activations: peak memory and step time fall with N.",
        "--lora_encoder_layers",
    )
    use_adalora: bool = setting(
        False, "AdaLoRA: start at rank r and reallocate a smaller rank budget to the weights that matter.",
        "--use_adalora",
    )
    adalora_target_r: int | None = setting(
        None, "AdaLoRA's final average rank per adapter (default: r/4).", "--adalora_target_r"
    )

    def __post_init__(self) -> None:
        self.target_modules = _split_names(self.target_modules)
        _positive(self, "r")
        _positive(self, "alpha")
        _require(0 <= self.dropout < 1, f"--lora_dropout must be in [0, 1) (got {self.dropout})")
        _require(self.encoder_layers is None or self.encoder_layers >= 0,
                 f"--lora_encoder_layers must be 0 or more (got {self.encoder_layers})")
        _require(bool(self.target_modules), "--target_modules is empty: name at least one module, e.g. q_proj,v_proj")
        if self.adalora_target_r is None:
            self.adalora_target_r = max(1, self.r // 4)
        _require(
            1 <= self.adalora_target_r <= self.r,
            f"--adalora_target_r must be between 1 and --lora_r ({self.r}) (got {self.adalora_target_r})",
        )


@dataclass
class DataSettings:
    """Where the utterances come from and how they become features and labels."""

    train_data: str = setting("dataset/train.jsonl", "Training manifest (JSON Lines, see `whisper-ft prepare`).")
    test_data: str | list[str] = setting(
        "dataset/test.jsonl",
        "Evaluation manifest, decoded at every evaluation; repeat as NAME=MANIFEST for several named sets "
        "(e.g. domain=dataset/test.jsonl general=general.jsonl): each is scored and logged (eval_NAME_cer ...), "
        "the first one picks best/.",
    )
    language: str | None = setting(
        None, "Language of every utterance (code or name); default: each manifest record's \"language\"."
    )
    task: str = setting("transcribe", "transcribe, or translate (to English).")
    timestamps: bool = setting(
        False, "Also train timestamp prediction from the records' \"sentences\" start/end times "
        "(about half of those samples get timestamp tokens, the rest <|notimestamps|>)."
    )
    timestamp_fraction: float = setting(0.5, "Share of samples with sentence times trained with timestamps.")
    min_duration: float = setting(0.5, "Skip utterances shorter than this many seconds.")
    max_duration: float = setting(30.0, "Skip utterances longer than this many seconds (Whisper sees 30 s at most).")
    augment_config: str | None = setting(
        None, "JSON file of data augmentations (speed, volume, noise, shift); none by default."
    )
    num_workers: int | None = setting(
        None, "DataLoader worker processes computing features (default: half the CPU cores, at most 4)."
    )
    max_eval_samples: int | None = setting(
        None, "Decode at most this many test utterances at each evaluation (default: all)."
    )
    replay_data: str | None = setting(
        None, "Manifest of general speech mixed into training against forgetting (each record keeps its own "
        "language); needs --replay_ratio."
    )
    replay_ratio: float = setting(
        0.0, "Share of each epoch's training samples drawn from --replay_data (seeded, a fresh draw every epoch; "
        "0 = off)."
    )
    empty_audio_ratio: float = setting(
        0.0, "Share of each epoch's training samples that are non-speech (silence, white/pink noise, hum) with an "
        "empty transcript, against hallucinating on silence (0 = off)."
    )
    empty_audio_dir: str | None = setting(
        None, "Folder of non-speech audio (noise, music beds, room tone) used for the --empty_audio_ratio samples "
        "instead of generated noise."
    )

    def __post_init__(self) -> None:
        from whisper_ft.models.languages import normalize_language

        self.language = normalize_language(self.language)
        self.task = (self.task or "").strip().lower()
        _require(self.task in TASKS, f"unknown --task {self.task!r}; choose one of: {', '.join(TASKS)}")
        _require(bool(self.train_data), "--train_data is empty: give a manifest (JSON Lines)")
        self.test_data = self.test_data if isinstance(self.test_data, str) else list(self.test_data)
        _require(bool(self.test_data), "--test_data is empty: give a manifest (JSON Lines)")
        self.test_sets()  # names and paths parse
        _require(0 <= self.timestamp_fraction <= 1, "timestamp_fraction must be in [0, 1]")
        _positive(self, "min_duration", allow_zero=True)
        _positive(self, "max_duration")
        _require(self.max_duration <= 30, f"--max_duration is at most 30 s for Whisper (got {self.max_duration})")
        _require(
            self.min_duration < self.max_duration,
            f"--min_duration ({self.min_duration}) must be below --max_duration ({self.max_duration})",
        )
        if self.num_workers is None:
            self.num_workers = min(4, (os.cpu_count() or 2) // 2)
        _positive(self, "num_workers", allow_zero=True)
        if self.max_eval_samples is not None:
            _positive(self, "max_eval_samples")
        if self.augment_config:
            _require(Path(self.augment_config).is_file(), f"--augment_config file not found: {self.augment_config}")
        for name in ("replay_ratio", "empty_audio_ratio"):
            value = getattr(self, name)
            _require(0 <= value < 1, f"--{name} must be in [0, 1) (got {value})")
        _require(self.replay_ratio + self.empty_audio_ratio < 1,
                 f"--replay_ratio + --empty_audio_ratio must stay below 1 (got {self.replay_ratio} + "
                 f"{self.empty_audio_ratio}): some of every epoch has to be your own data")
        _require(bool(self.replay_data) == (self.replay_ratio > 0),
                 "--replay_data and --replay_ratio go together: give the general-speech manifest and the share of "
                 "each epoch to draw from it (e.g. --replay_data general.jsonl --replay_ratio 0.2)")
        if self.empty_audio_dir:
            _require(self.empty_audio_ratio > 0,
                     "--empty_audio_dir needs --empty_audio_ratio (the share of non-speech samples, e.g. 0.05)")
            _require(Path(self.empty_audio_dir).is_dir(), f"--empty_audio_dir folder not found: {self.empty_audio_dir}")

    def test_sets(self) -> list[tuple[str | None, str]]:
        """The evaluation sets as (name, manifest): one bare path is ``(None, path)`` (metrics keep their
        plain names, eval_cer ...); with several sets a bare first path is named ``domain``."""
        specs = [self.test_data] if isinstance(self.test_data, str) else list(self.test_data)
        sets = [parse_test_set(spec) for spec in specs]
        if len(sets) == 1:
            return sets
        named = []
        for i, (name, path) in enumerate(sets):
            if name is None:
                name = "domain" if i == 0 else _set_name(Path(path).stem)
            named.append((name, path))
        names = [n for n, _ in named]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise WhisperFtError(f"--test_data: the name {dup[0]!r} is given twice; give each set its own NAME=MANIFEST")
        return named


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
        None, "Resume from this checkpoint-N folder; 'latest' = the newest one of this run."
    )
    deepspeed: str | None = setting(None, "DeepSpeed JSON config (e.g. scripts/deepspeed_zero2.json).")

    def __post_init__(self) -> None:
        if self.max_steps == -1:
            self.max_steps = None  # transformers' "not set": train --num_train_epochs epochs
        _require(self.max_steps is None or self.max_steps >= 1,
                 f"--max_steps must be at least 1 (got {self.max_steps}); omit it to train --num_train_epochs epochs")
        if self.max_steps is None:
            _positive(self, "num_train_epochs")
        _positive(self, "learning_rate")
        for name in ("warmup_steps", "weight_decay", "max_grad_norm"):
            _positive(self, name, allow_zero=True)
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                     "eval_steps", "save_steps", "logging_steps", "eval_num_beams"):
            _positive(self, name)
        if self.save_total_limit is not None:
            _positive(self, "save_total_limit")
        _require(not (self.fp16 and self.bf16), "--fp16 and --bf16 exclude each other: choose one")
        if self.metric_for_best is not None:
            self.metric_for_best = self.metric_for_best.strip().lower()
            _require(
                self.metric_for_best in METRICS_FOR_BEST,
                f"unknown --metric_for_best {self.metric_for_best!r}; choose one of: {', '.join(METRICS_FOR_BEST)}",
            )
        if self.num_threads is not None:
            _positive(self, "num_threads")
        _positive(self, "kl_to_base", allow_zero=True)
        if self.max_general_regression is not None:
            _positive(self, "max_general_regression", allow_zero=True)
        if self.deepspeed:
            _require(Path(self.deepspeed).is_file(), f"--deepspeed config not found: {self.deepspeed}")


_SET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def _set_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_") or "test"
    return name if name[0].isalpha() else f"set_{name}"


def parse_test_set(spec: str) -> tuple[str | None, str]:
    """``"general=gen.jsonl"`` -> ``("general", "gen.jsonl")``; a bare path -> ``(None, path)``."""
    spec = str(spec).strip()
    name, sep, path = spec.partition("=")
    if not sep or not _SET_NAME.match(name.strip()):
        _require(bool(spec), "--test_data is empty: give a manifest (JSON Lines) or NAME=MANIFEST")
        _require(not spec.startswith("="), f"--test_data {spec!r}: the name before '=' is empty; use NAME=MANIFEST")
        return None, spec
    _require(bool(path.strip()), f"--test_data {spec!r}: no manifest after '='; use NAME=MANIFEST")
    return name.strip(), path.strip()


def _from_dict(cls, data: dict[str, Any] | None):
    data = dict(data or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise WhisperFtError(f"unknown {cls.__name__} setting(s): {', '.join(unknown)}")
    return cls(**data)


@dataclass
class FinetuneConfig:
    """Everything a fine-tuning run needs; ``output_dir/<model-name>/`` is the run folder."""

    base_model: str = setting("openai/whisper-tiny", "Model to adapt: a name, hub id or folder (see `whisper-ft models`).")
    output_dir: str = setting("models/", "Runs go to OUTPUT_DIR/<model-name>/ (checkpoint-N/, best/, runs/).")
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataSettings = field(default_factory=DataSettings)
    train: TrainSettings = field(default_factory=TrainSettings)

    def __post_init__(self) -> None:
        _require(bool(self.base_model and self.base_model.strip()), "--base_model is empty: name a Whisper model")
        _require(bool(self.output_dir), "--output_dir is empty")
        _require(self.train.max_general_regression is None or len(self.data.test_sets()) > 1,
                 "--max_general_regression needs a general set to bound: give --test_data twice, e.g. "
                 "--test_data domain=dataset/test.jsonl --test_data general=general.jsonl")

    @property
    def run_name(self) -> str:
        """``openai/whisper-tiny`` -> ``whisper-tiny``; ``base`` -> ``whisper-base``; a folder -> its name."""
        from whisper_ft.models.registry import bundled_for

        bundled = bundled_for(self.base_model)
        if bundled is not None:
            return bundled.name
        return Path(self.base_model.rstrip("/\\")).name or "whisper"

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.run_name

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lora"]["target_modules"] = list(self.lora.target_modules)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneConfig:
        data = dict(data)
        return cls(
            base_model=data.pop("base_model", cls.base_model),
            output_dir=data.pop("output_dir", cls.output_dir),
            lora=_from_dict(LoraSettings, data.pop("lora", None)),
            data=_from_dict(DataSettings, data.pop("data", None)),
            train=_from_dict(TrainSettings, data.pop("train", None)),
        )


def default_of(cls, name: str) -> Any:
    """The default value of field ``name`` (used by the CLI so defaults live in one place)."""
    f = next(f for f in fields(cls) if f.name == name)
    return None if f.default is MISSING else f.default
