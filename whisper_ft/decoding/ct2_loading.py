"""Opening a model with faster-whisper: CTranslate2 folder (or conversion once into the cache),
device and compute type (CUDA float16, else CPU int8), threads and workers."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from whisper_ft.core.audio import N_SAMPLES
from whisper_ft.core.console import log
from whisper_ft.core.errors import WhisperFtError

N_FRAMES = N_SAMPLES // 160  # log-mel frames in one 30 s window


def default_cpu_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def resolve_device(device: str = "auto", compute_type: str = "auto") -> tuple[str, str]:
    """``("cuda", "float16")`` when a CUDA device is visible, else ``("cpu", "int8")``; explicit
    values are checked against what CTranslate2 supports on that device."""
    import ctranslate2

    device = (device or "auto").lower()
    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if device not in ("cpu", "cuda"):
        raise WhisperFtError(f"unknown device {device!r}; choose one of: auto, cpu, cuda")
    if device == "cuda" and ctranslate2.get_cuda_device_count() == 0:
        raise WhisperFtError("--device cuda but CTranslate2 sees no CUDA device; use --device cpu (or auto)")
    compute_type = (compute_type or "auto").lower()
    if compute_type == "auto":
        compute_type = "float16" if device == "cuda" else "int8"
    supported = sorted(ctranslate2.get_supported_compute_types(device))
    if compute_type not in supported and compute_type != "default":
        raise WhisperFtError(
            f"compute type {compute_type!r} is not supported on {device}; choose one of: {', '.join(supported)}"
        )
    return device, compute_type


@dataclass
class CT2Whisper:
    """A loaded faster-whisper model and what it was loaded from."""

    model: object  # faster_whisper.WhisperModel
    path: Path
    device: str
    compute_type: str
    name: str

    @property
    def engine(self):
        """The ``ctranslate2.models.Whisper`` inside."""
        return self.model.model

    @property
    def is_multilingual(self) -> bool:
        """Language and task tokens in the prompt (see :class:`_MultilingualEngine`)."""
        return bool(self.engine.is_multilingual)

    @property
    def n_mels(self) -> int:
        return int(self.model.feat_kwargs.get("feature_size", 80))

    @cached_property
    def vocabulary(self):
        """The :class:`~whisper_ft.models.vocabulary.WhisperVocabulary` of its tokenizer.json."""
        from whisper_ft.models.vocabulary import WhisperVocabulary

        # faster-whisper's tokenizers.Tokenizer: get_vocab() like a transformers tokenizer
        return WhisperVocabulary.from_tokenizer(self.model.hf_tokenizer, where=f"{self.path}/tokenizer.json")


def ensure_ct2_folder(name_or_path, *, merge_adapter: bool = True) -> Path:
    """A CTranslate2 folder for any model name: CTranslate2 folders as they are; transformers
    folders, hub ids and (with ``merge_adapter``) LoRA adapters converted once (float32) into the
    cache, keyed by the source's path and modification time."""
    from whisper_ft.models.ct2_export import cached_conversion
    from whisper_ft.models.registry import resolve_model

    source = resolve_model(name_or_path)
    if source.kind == "ct2":
        return Path(source.path)
    if source.kind == "adapter" and not merge_adapter:
        raise WhisperFtError(
            f"{source.path} is a LoRA adapter: run `whisper-ft merge` first (or convert with --merge)"
        )
    return cached_conversion(source)


def load_ct2_whisper(
    name_or_path,
    *,
    device: str = "auto",
    compute_type: str = "auto",
    cpu_threads: int | None = None,
    inter_threads: int = 1,
) -> CT2Whisper:
    """Open a model with faster-whisper (see :func:`ensure_ct2_folder` for what names work).

    ``inter_threads > 1`` splits the ``cpu_threads`` into that many workers of
    ``cpu_threads // inter_threads`` threads each: batches given to :func:`generate_token_ids_ct2`
    are then cut into one part per worker, decoded side by side (faster on CPU than one batch on
    all threads; measured in benchmarks/inference.py). faster-whisper's own ``transcribe`` decodes
    one window at a time and so uses one worker's threads only: keep 1 for ``transcribe_ct2``."""
    from faster_whisper import WhisperModel

    path = ensure_ct2_folder(name_or_path)
    for needed in ("tokenizer.json", "preprocessor_config.json"):
        if not (path / needed).is_file():
            raise WhisperFtError(
                f"{path} has no {needed}: faster-whisper would fetch it from the hub; "
                "re-create the folder with `whisper-ft convert`"
            )
    device, compute_type = resolve_device(device, compute_type)
    threads = cpu_threads or default_cpu_threads()
    if inter_threads < 1:
        raise WhisperFtError(f"inter_threads must be at least 1 (got {inter_threads})")
    model = WhisperModel(str(path), device=device, compute_type=compute_type,
                         cpu_threads=max(1, threads // inter_threads), num_workers=inter_threads,
                         local_files_only=True)
    if not model.model.is_multilingual and _config_lang_ids(path) > 1:
        model.model = _MultilingualEngine(model.model)
    if compute_type == "default":  # the stored precision: say which one it turned out to be
        compute_type = getattr(model.model, "compute_type", None) or compute_type
    return CT2Whisper(model=model, path=path, device=device, compute_type=compute_type, name=str(name_or_path))


def _config_lang_ids(path: Path) -> int:
    try:
        return len(json.loads((Path(path) / "config.json").read_text()).get("lang_ids") or [])
    except (OSError, json.JSONDecodeError):
        return 0


class _MultilingualEngine:
    """A ``ctranslate2.models.Whisper`` that reports itself multilingual.

    CTranslate2 calls a model multilingual only when its vocabulary has at least 51865 tokens, so
    a multilingual model with a smaller vocabulary (our tiny test model, trimmed vocabularies)
    would be decoded as English-only by faster-whisper; its config.json's ``lang_ids`` say better.
    """

    is_multilingual = True

    def __init__(self, engine):
        self._engine = engine

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def detect_language(self, *args, **kwargs):
        raise WhisperFtError(
            "CTranslate2 cannot detect the language with this model's small vocabulary: pass --language"
        )


def ct2_features(ct2: CT2Whisper, audios: list[np.ndarray]) -> np.ndarray:
    """Log-mel features ``[batch, n_mels, 3000]`` of 30 s windows (each audio padded or cut)."""
    feats = []
    for a in audios:
        a = np.asarray(a, dtype=np.float32)[:N_SAMPLES]
        a = np.pad(a, (0, N_SAMPLES - len(a)))
        f = ct2.model.feature_extractor(a, padding=0)
        f = f[:, :N_FRAMES]
        if f.shape[1] < N_FRAMES:
            f = np.pad(f, ((0, 0), (0, N_FRAMES - f.shape[1])))
        feats.append(f)
    return np.ascontiguousarray(np.stack(feats), dtype=np.float32)


def detect_languages_ct2(ct2: CT2Whisper, features) -> list[tuple[str, float]]:
    """The most likely language (code, probability) of each window."""
    results = ct2.engine.detect_language(features)
    return [(r[0][0].strip("<|>"), float(r[0][1])) for r in results]


def model_suppress_tokens(path: Path) -> list[int]:
    """The suppressed tokens the model was converted with (config.json ``suppress_ids``, from its
    generation config), so faster-whisper decodes like transformers; ``[-1]`` (Whisper's default
    non-speech list) when the folder does not say."""
    try:
        ids = json.loads((Path(path) / "config.json").read_text()).get("suppress_ids")
    except (OSError, json.JSONDecodeError):
        ids = None
    return list(ids) if isinstance(ids, list) else [-1]


def describe(ct2: CT2Whisper) -> str:
    return f"{ct2.path} on {ct2.device} ({ct2.compute_type})"


def log_loaded(ct2: CT2Whisper) -> None:
    log(f"model: {describe(ct2)}")
