"""The settings of a speech-LLM run: one dataclass per concern, every field with its help text.

Same pattern as the Whisper recipe's config (the ``setting``/``help_of``/``default_of`` helpers and the
generic :class:`TrainSettings` of :mod:`whisper_ft.trainkit.settings` are reused): each dataclass validates itself on
construction and raises :class:`WhisperFtError` with a one-line message naming the CLI option.
The whole config is saved as ``speech_llm_config.json`` in the run folder, in every checkpoint
and in ``best/``, and read back with :meth:`SpeechLLMConfig.from_dict`.

This module imports nothing heavy: the CLI reads its defaults and help texts at import time.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from whisper_ft.trainkit.settings import METRICS_FILE as METRICS_FILE
from whisper_ft.trainkit.settings import METRICS_FOR_BEST as METRICS_FOR_BEST
from whisper_ft.trainkit.settings import (
    TRAIN_DATA_HELP,
    RunConfig,
    TrainSettings,
    default_of,
    help_of,
    require,
    setting,
    split_names,
)

__all__ = ["ModelSettings", "LlmDataSettings", "LlmTrainSettings", "DecodeSettings", "SpeechLLMConfig",
           "default_of", "help_of", "CONFIG_FILE", "METRICS_FILE", "PROJECTOR_PATTERN"]

CONFIG_FILE = "speech_llm_config.json"  # marks a speech-LLM run folder (run dir, checkpoints, best/)
PROJECTOR_PATTERN = re.compile(r"^concat(\d+)-mlp$")  # concat5-mlp: SLAM-ASR's projector
DEFAULT_PROMPT = "Transcribe speech to text."
DEFAULT_LORA_TARGET = ("q_proj", "v_proj")


@dataclass
class ModelSettings:
    """Which encoder, projector and LLM, the prompt, and whether the LLM gets LoRA adapters."""

    encoder: str = setting("base", "Whisper model whose encoder hears the audio (frozen): a name, hub id or "
                                   "folder, e.g. base or a merged fine-tune (see `whisper-ft models`).", "--encoder")
    llm: str | None = setting(None, "Causal LM that writes the transcript (frozen): a transformers folder, a hub "
                                    "id (online only), a .gguf file, or the folder holding --llm_gguf.", "--llm",
                              required=True)
    llm_gguf: str | None = setting(None, "GGUF file name in the --llm folder (or a path): dequantized by "
                                         "transformers once and cached as safetensors.", "--llm_gguf")
    projector: str = setting("concat5-mlp", "concatK-mlp: stack K consecutive encoder frames (50/s for Whisper), "
                                            "then Linear -> ReLU -> Linear to the LLM width.", "--projector")
    projector_hidden: int = setting(2048, "Hidden width of the projector MLP.", "--projector_hidden")
    prompt: str = setting(DEFAULT_PROMPT, "Instruction after the audio in the user turn (the LLM's chat "
                                          "template when it has one).", "--prompt")
    lora_r: int = setting(0, "LoRA rank on the LLM (0 = no LoRA: only the projector trains, as in SLAM-ASR).",
                          "--lora_r")
    lora_alpha: float | None = setting(None, "LoRA scaling numerator (default: 2 x rank).", "--lora_alpha")
    lora_dropout: float = setting(0.05, "Dropout on the LoRA input during training.", "--lora_dropout")
    lora_target: tuple[str, ...] = setting(DEFAULT_LORA_TARGET, "Comma-separated LLM module names that get "
                                                                 "LoRA adapters.", "--lora_target")
    freeze_llm: bool = setting(False, "No LoRA: the LLM stays exactly as it is (the same as --lora_r 0).",
                               "--freeze_llm")

    def __post_init__(self) -> None:
        self.lora_target = split_names(self.lora_target)
        require(bool(self.encoder and str(self.encoder).strip()), "--encoder is empty: name a Whisper model")
        require(bool(self.llm and str(self.llm).strip()),
                "--llm is missing: give a causal LM folder, hub id or .gguf file (e.g. --llm Qwen/Qwen2.5-0.5B-Instruct)")
        require(PROJECTOR_PATTERN.match(self.projector or "") is not None,
                f"unknown --projector {self.projector!r}; use concatK-mlp, e.g. concat5-mlp")
        require(self.frames_per_token >= 1, "--projector concatK-mlp needs K >= 1")
        require(self.projector_hidden > 0, f"--projector_hidden must be positive (got {self.projector_hidden})")
        require(self.lora_r >= 0, f"--lora_r must be 0 or more (got {self.lora_r})")
        require(not (self.freeze_llm and self.lora_r > 0), "--freeze_llm and --lora_r exclude each other: choose one")
        require(0 <= self.lora_dropout < 1, f"--lora_dropout must be in [0, 1) (got {self.lora_dropout})")
        if self.lora_alpha is None:
            self.lora_alpha = float(2 * max(self.lora_r, 1))
        require(self.lora_alpha > 0, f"--lora_alpha must be positive (got {self.lora_alpha})")
        require(self.lora_r == 0 or bool(self.lora_target), "--lora_target is empty: name modules, e.g. q_proj,v_proj")
        require(bool((self.prompt or "").strip()), "--prompt is empty: give an instruction, e.g. "
                                                   f"{DEFAULT_PROMPT!r}")

    @property
    def frames_per_token(self) -> int:
        """K of concatK-mlp: encoder frames per LLM position."""
        return int(PROJECTOR_PATTERN.match(self.projector).group(1))

    @property
    def use_lora(self) -> bool:
        return self.lora_r > 0 and not self.freeze_llm


@dataclass
class LlmDataSettings:
    """Where the utterances come from (any whisper-ft manifest) and whether encoder outputs are cached."""

    train_data: str | list[str] = setting("dataset/train.jsonl", TRAIN_DATA_HELP, cli_type=list[str],
                                          metavar="MANIFEST")
    test_data: str = setting("dataset/test.jsonl", "Evaluation manifest: decoded during training to pick best/.")
    language: str | None = setting(None, "Language of every utterance (only for scoring: normaliser and CER/WER); "
                                         "default: each record's \"language\".")
    min_duration: float = setting(0.5, "Skip utterances shorter than this many seconds.")
    max_duration: float = setting(30.0, "Skip utterances longer than this (the Whisper encoder hears 30 s at most).")
    cache_encoder_outputs: bool = setting(False, "Run the frozen encoder once per utterance and keep its output on "
                                                 "disk (RUN/encoder_cache/): later epochs skip the encoder.")
    num_workers: int | None = setting(None, "DataLoader worker processes (default: half the CPU cores, at most 4).")
    max_eval_samples: int | None = setting(None, "Decode at most this many test utterances per evaluation.")

    def __post_init__(self) -> None:
        from whisper_ft.core.languages import normalize_language

        self.language = normalize_language(self.language)
        self.train_data = self.train_data if isinstance(self.train_data, str) else list(self.train_data)
        require(bool(self.train_data), "--train_data is empty: give a manifest (JSON Lines)")
        require(bool(self.test_data), "--test_data is empty: give a manifest (JSON Lines)")
        require(self.min_duration >= 0, f"--min_duration must be at least 0 (got {self.min_duration})")
        require(0 < self.max_duration <= 30, f"--max_duration must be in (0, 30] s (got {self.max_duration})")
        require(self.min_duration < self.max_duration,
                f"--min_duration ({self.min_duration}) must be below --max_duration ({self.max_duration})")
        if self.num_workers is None:
            self.num_workers = min(4, (os.cpu_count() or 2) // 2)
        require(self.num_workers >= 0, f"--num_workers must be at least 0 (got {self.num_workers})")
        require(self.max_eval_samples is None or self.max_eval_samples > 0,
                f"--max_eval_samples must be positive (got {self.max_eval_samples})")


@dataclass
class LlmTrainSettings(TrainSettings):
    """The generic optimisation/evaluation/checkpoint schedule, with SLAM-ASR-like defaults."""

    learning_rate: float = setting(1e-4, "Peak learning rate (linear warm-up, then linear decay to 0).")
    per_device_train_batch_size: int = setting(4, "Training utterances per batch on each device.")
    per_device_eval_batch_size: int = setting(8, "Evaluation utterances per batch on each device.")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(not self.use_8bit, "--use_8bit is not supported by the speech-LLM recipe (use --bf16 or --fp16)")


@dataclass(frozen=True)
class DecodeSettings:
    """How transcripts are generated: beam size, the repetition guard and the length cap."""

    num_beams: int = setting(1, "Beam size (1 = greedy).", "--num_beams")
    no_repeat_ngram_size: int = setting(8, "Repetition guard: no n-gram of this many tokens is generated twice "
                                           "(0 = off).", "--no_repeat_ngram_size")
    repetition_penalty: float = setting(1.0, "Penalty > 1 on tokens already generated (1 = off).",
                                        "--repetition_penalty")
    tokens_per_second: float = setting(12.0, "Length cap: at most this many new tokens per second of audio ...",
                                       "--tokens_per_second")
    extra_tokens: int = setting(16, "... plus this many.", "--extra_tokens")

    def __post_init__(self) -> None:
        require(self.num_beams >= 1, f"--num_beams must be at least 1 (got {self.num_beams})")
        require(self.no_repeat_ngram_size >= 0, "--no_repeat_ngram_size must be 0 or more")
        require(self.repetition_penalty > 0, "--repetition_penalty must be positive")
        require(self.tokens_per_second > 0 and self.extra_tokens >= 0,
                "--tokens_per_second must be positive and --extra_tokens 0 or more")

    def max_new_tokens(self, seconds: float) -> int:
        return int(self.tokens_per_second * max(seconds, 0.0)) + self.extra_tokens


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"


@dataclass
class SpeechLLMConfig(RunConfig):
    """Everything a speech-LLM run needs; ``output_dir/<run_name>/`` is the run folder."""

    output_dir: str = setting(
        "models/", "Runs go to OUTPUT_DIR/speech-llm-<encoder>-<llm>/ (checkpoint-N/, best/); a folder that already "
        "holds a run is refused unless --resume_from_checkpoint or --overwrite_output_dir (without --output_dir the "
        "new run goes to <run>-2, -3, ...).", cli_default=None, cli_note=" Default: {default}")
    model: ModelSettings = field(default_factory=ModelSettings)
    data: LlmDataSettings = field(default_factory=LlmDataSettings)
    train: LlmTrainSettings = field(default_factory=LlmTrainSettings)
    decode: DecodeSettings = field(default_factory=DecodeSettings)

    def __post_init__(self) -> None:
        require(bool(self.output_dir), "--output_dir is empty")

    @property
    def run_name(self) -> str:
        """``speech-llm-whisper-base-Qwen2.5-0.5B-Instruct``: encoder and LLM names."""
        from whisper_ft.models.registry import bundled_for

        m = self.model
        bundled = bundled_for(m.encoder)
        encoder = bundled.name if bundled else Path(m.encoder.rstrip("/\\")).name
        llm = Path(m.llm_gguf).stem if m.llm_gguf else Path(m.llm.rstrip("/\\")).name
        if llm.endswith(".gguf"):
            llm = llm[: -len(".gguf")]
        return f"speech-llm-{_slug(encoder)}-{_slug(llm)}"
