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
from dataclasses import dataclass, field
from pathlib import Path

from whisper_ft.core.errors import WhisperFtError
from whisper_ft.models.generation import TASKS as TASKS
from whisper_ft.trainkit.settings import METRICS_FILE as METRICS_FILE
from whisper_ft.trainkit.settings import METRICS_FOR_BEST as METRICS_FOR_BEST
from whisper_ft.trainkit.settings import TRAIN_DATA_HELP, RunConfig, split_names
from whisper_ft.trainkit.settings import TrainSettings as SharedTrainSettings
from whisper_ft.trainkit.settings import default_of as default_of
from whisper_ft.trainkit.settings import help_of as help_of
from whisper_ft.trainkit.settings import positive as _positive
from whisper_ft.trainkit.settings import require as _require
from whisper_ft.trainkit.settings import setting as setting

DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
CONFIG_FILE = "finetune_config.json"  # the run config, beside every best/ adapter and in the run folder
METHODS = ("lora", "adalora", "full")
# The peak learning rate when none is given: adapters learn fast from zero; a full fine-tune moves
# pretrained weights, for which the Hugging Face Whisper fine-tuning guide uses 1e-5.
DEFAULT_LEARNING_RATES = {"lora": 1e-3, "adalora": 1e-3, "full": 1e-5}


@dataclass
class TrainSettings(SharedTrainSettings):
    """The shared schedule (:class:`whisper_ft.trainkit.settings.TrainSettings`) with a learning rate
    that defaults by ``--method`` (resolved by :class:`FinetuneConfig`)."""

    learning_rate: float | None = setting(
        None, "Peak learning rate (linear warm-up, then linear decay to 0). Default by --method: "
        f"{DEFAULT_LEARNING_RATES['lora']:g} for lora and adalora, {DEFAULT_LEARNING_RATES['full']:g} for full "
        "(the Hugging Face Whisper fine-tuning guide's).")
    push_to_hub: str | None = setting(
        None, "Once the run has finished, upload best/ (model card included) to this hub repository (token: "
        "HF_TOKEN or `hf auth login`; see `whisper-ft push`). Checked before training starts.", metavar="REPO_ID")


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
        self.target_modules = split_names(self.target_modules)
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

    train_data: str | list[str] = setting(
        "dataset/train.jsonl", TRAIN_DATA_HELP, cli_type=list[str], cli_default=None, cli_note=" Default: {default}.",
        announce=True, metavar="MANIFEST",
    )
    test_data: str | list[str] = setting(
        "dataset/test.jsonl",
        "Evaluation manifest, decoded at every evaluation; repeat as NAME=MANIFEST for several named sets "
        "(e.g. domain=dataset/test.jsonl general=general.jsonl): each is scored and logged (eval_NAME_cer ...), "
        "the first one picks best/.",
        cli_type=list[str], cli_default=None, cli_note=" Default: {default}.", announce=True, metavar="[NAME=]MANIFEST",
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
    prompt_ratio: float = setting(
        0.0, "Share of training samples decoded after a text prompt (<|startofprev|> TEXT, as --prompt and --hotwords "
        "give one): the previous utterance of the same speaker or recording (same folder), or a few terms of "
        "--prompt_terms; the loss covers the transcript only. Teaches the model to keep using prompts (0 = off)."
    )
    prompt_terms: str | None = setting(
        None, "Term list (one per line; `whisper-ft prepare terms`): prompted samples draw a few of them as their "
        "prompt (half of them when a previous utterance exists too); needs --prompt_ratio."
    )
    empty_audio_dir: str | None = setting(
        None, "Folder of non-speech audio (noise, music beds, room tone) used for the --empty_audio_ratio samples "
        "instead of generated noise."
    )

    def __post_init__(self) -> None:
        from whisper_ft.core.languages import normalize_language

        self.language = normalize_language(self.language)
        self.task = (self.task or "").strip().lower()
        _require(self.task in TASKS, f"unknown --task {self.task!r}; choose one of: {', '.join(TASKS)}")
        _require(bool(self.train_data), "--train_data is empty: give a manifest (JSON Lines)")
        self.train_data = self.train_data if isinstance(self.train_data, str) else list(self.train_data)
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
        _require(0 <= self.prompt_ratio <= 1, f"--prompt_ratio must be in [0, 1] (got {self.prompt_ratio})")
        if self.prompt_terms:
            _require(self.prompt_ratio > 0, "--prompt_terms needs --prompt_ratio (the share of samples given a prompt, "
                     "e.g. 0.3)")
            _require(Path(self.prompt_terms).is_file(), f"--prompt_terms file not found: {self.prompt_terms}")
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


@dataclass
class FinetuneConfig(RunConfig):
    """Everything a fine-tuning run needs; ``output_dir/<model-name>/`` is the run folder."""

    base_model: str = setting("openai/whisper-tiny", "Model to adapt: a name, hub id or folder (see `whisper-ft models`).")
    output_dir: str = setting(
        "models/", "Runs go to OUTPUT_DIR/<model-name>/ (checkpoint-N/, best/, runs/); a folder that already holds "
        "a run is refused unless --resume_from_checkpoint or --overwrite_output_dir (without --output_dir the new "
        "run goes to <model-name>-2, -3, ...).", cli_default=None, cli_note=" Default: {default}")
    method: str | None = setting(
        None, "What is trained: lora (low-rank adapters; best/ is an adapter to merge), adalora (adapters whose "
        "ranks are reallocated during training; = --use_adalora) or full (every weight; best/ is a whole model that "
        "convert, eval, compare, serve and infer take directly). Default: lora (adalora with --use_adalora).",
        metavar="full|lora|adalora")
    freeze_encoder: bool = setting(
        False, "Train the decoder only: with --method full the encoder's weights stay frozen (no backward through "
        "it); with lora/adalora only the decoder gets adapters (= --lora_encoder_layers 0).")
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataSettings = field(default_factory=DataSettings)
    train: TrainSettings = field(default_factory=TrainSettings)

    def __post_init__(self) -> None:
        _require(bool(self.base_model and self.base_model.strip()), "--base_model is empty: name a Whisper model")
        _require(bool(self.output_dir), "--output_dir is empty")
        self._resolve_method()
        _require(self.train.max_general_regression is None or len(self.data.test_sets()) > 1,
                 "--max_general_regression needs a general set to bound: give --test_data twice, e.g. "
                 "--test_data domain=dataset/test.jsonl --test_data general=general.jsonl")

    def _resolve_method(self) -> None:
        """``method`` from ``--method``/``--use_adalora``, what it excludes, and the learning rate it defaults to."""
        method = (self.method or ("adalora" if self.lora.use_adalora else "lora")).strip().lower()
        _require(method in METHODS, f"unknown --method {self.method!r}; choose one of: full, lora, adalora")
        _require(not (self.lora.use_adalora and method != "adalora"),
                 f"--use_adalora is --method adalora: it excludes --method {method}; give one of them")
        self.method = method
        self.lora.use_adalora = method == "adalora"
        if method == "full":
            _require(not self.train.use_8bit, "--use_8bit loads frozen weights in 8 bits, but --method full trains "
                     "every weight: use --method lora with --use_8bit, or --bf16/--fp16 for a full fine-tune")
            changed = [f"--{name}" for name, value in _lora_options(self.lora).items()
                       if value != _lora_options(LoraSettings()).get(name)]
            _require(not changed, f"{', '.join(changed)} set(s) the LoRA adapters, which --method full has none of: "
                     "drop them (decoder-only full fine-tuning is --freeze_encoder)")
        elif self.freeze_encoder:
            _require(self.lora.encoder_layers in (None, 0), f"--freeze_encoder puts adapters in the decoder only: it "
                     f"excludes --lora_encoder_layers {self.lora.encoder_layers}")
            self.lora.encoder_layers = 0
        # Not a field: whether the rate is this method's default (the run says so in its log).
        self.learning_rate_defaulted = self.train.learning_rate is None
        if self.train.learning_rate is None:
            self.train.learning_rate = DEFAULT_LEARNING_RATES[method]

    @property
    def run_name(self) -> str:
        """``openai/whisper-tiny`` -> ``whisper-tiny``; ``base`` -> ``whisper-base``; a folder -> its name."""
        from whisper_ft.models.registry import bundled_for

        bundled = bundled_for(self.base_model)
        if bundled is not None:
            return bundled.name
        return Path(self.base_model.rstrip("/\\")).name or "whisper"


def _lora_options(lora: LoraSettings) -> dict[str, object]:
    """The LoRA settings by their option names (``--lora_r``: 32, ...), AdaLoRA's own left out."""
    from dataclasses import fields

    return {(f.metadata.get("option") or f"--{f.name}")[2:]: getattr(lora, f.name) for f in fields(lora)
            if f.name not in ("use_adalora", "adalora_target_r")}
