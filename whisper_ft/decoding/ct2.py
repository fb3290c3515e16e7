"""CTranslate2 / faster-whisper decoding.

- :func:`load_ct2_whisper` opens any model whisper-ft can name as a faster-whisper model
  (a CTranslate2 folder as is; a transformers folder, adapter or hub id converted once into the
  cache), on an automatically chosen device and compute type (CUDA float16, else CPU int8).
- :func:`transcribe_ct2` runs faster-whisper on one audio (any length; optional VAD, word
  timestamps, batched pipeline) and returns a typed :class:`Transcription`.
- :func:`generate_token_ids_ct2` / :func:`generate_texts_ct2` decode 30 s windows in batches with
  the CTranslate2 engine directly, with exactly the prompt the transformers path uses
  (``<|startoftranscript|><|lang|><|task|><|notimestamps|>``): the like-for-like comparison used
  by ``eval --backend ct2`` and ``convert --verify``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whisper_ft.audio import N_SAMPLES, SAMPLE_RATE
from whisper_ft.console import log
from whisper_ft.decoding.hf import per_sample_languages, validate_task
from whisper_ft.decoding.results import Segment, Transcription, Word
from whisper_ft.errors import WhisperFtError
from whisper_ft.models.generation import MAX_TARGET_TOKENS

N_FRAMES = N_SAMPLES // 160


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


def ensure_ct2_folder(name_or_path, *, merge_adapter: bool = True) -> Path:
    """A CTranslate2 folder for any model name: CTranslate2 folders as they are; transformers
    folders, hub ids and (with ``merge_adapter``) LoRA adapters converted once (float32) into the
    cache, keyed by the source's path and modification time."""
    from whisper_ft.convert import cached_conversion
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
) -> CT2Whisper:
    """Open a model with faster-whisper (see :func:`ensure_ct2_folder` for what names work)."""
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
    model = WhisperModel(str(path), device=device, compute_type=compute_type, cpu_threads=threads,
                         local_files_only=True)
    if not model.model.is_multilingual and _config_lang_ids(path) > 1:
        model.model = _MultilingualEngine(model.model)
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


def model_suppress_tokens(path: Path) -> list[int]:
    """The suppressed tokens the model was converted with (config.json ``suppress_ids``, from its
    generation config), so faster-whisper decodes like transformers; ``[-1]`` (Whisper's default
    non-speech list) when the folder does not say."""
    try:
        ids = json.loads((Path(path) / "config.json").read_text()).get("suppress_ids")
    except (OSError, json.JSONDecodeError):
        ids = None
    return list(ids) if isinstance(ids, list) else [-1]


def transcribe_ct2(
    ct2: CT2Whisper,
    audio: np.ndarray,
    *,
    language: str | None = None,
    task: str = "transcribe",
    beam_size: int = 5,
    vad: bool = False,
    word_timestamps: bool = False,
    batch_size: int = 1,
    temperature: float | list[float] | None = None,
    max_new_tokens: int | None = None,
    no_speech_threshold: float | None = 0.6,
    without_timestamps: bool = False,
    source: str | None = None,
) -> Transcription:
    """Transcribe (or translate) one audio array of any length with faster-whisper.

    ``batch_size > 1`` uses faster-whisper's batched pipeline (chunks cut by VAD). ``temperature``
    None means faster-whisper's fallback schedule (0.0, 0.2, ... 1.0).
    """
    from whisper_ft.models.languages import normalize_language

    language = normalize_language(language)
    task = validate_task(task)
    if beam_size < 1:
        raise WhisperFtError(f"beam_size must be at least 1 (got {beam_size})")
    kwargs = dict(
        language=language,
        task=task,
        beam_size=beam_size,
        word_timestamps=word_timestamps,
        vad_filter=vad,
        suppress_tokens=model_suppress_tokens(ct2.path),
        no_speech_threshold=no_speech_threshold,
        max_new_tokens=max_new_tokens,
        without_timestamps=without_timestamps,
    )
    if temperature is not None:
        kwargs["temperature"] = temperature
    if batch_size > 1:
        from faster_whisper import BatchedInferencePipeline

        kwargs["vad_filter"] = True  # the batched pipeline cuts the audio into chunks with VAD
        segments, info = BatchedInferencePipeline(model=ct2.model).transcribe(audio, batch_size=batch_size, **kwargs)
    else:
        segments, info = ct2.model.transcribe(audio, **kwargs)
    out = []
    for i, s in enumerate(segments):
        words = None
        if s.words is not None:
            words = [Word(w.start, w.end, w.word, w.probability) for w in s.words]
        end = min(float(s.end), float(info.duration))
        out.append(Segment(i, min(float(s.start), end), end, s.text.strip(), list(s.tokens),
                           s.avg_logprob, s.no_speech_prob, words))
    return Transcription(language=info.language, duration=float(info.duration), segments=out,
                         language_probability=info.language_probability, source=source)


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


def _token_id(ct2: CT2Whisper, token: str) -> int:
    tid = ct2.model.hf_tokenizer.token_to_id(token)
    if tid is None:
        raise WhisperFtError(f"{ct2.path}/tokenizer.json has no {token} token: not a Whisper tokenizer")
    return tid


def detect_languages_ct2(ct2: CT2Whisper, features) -> list[tuple[str, float]]:
    """The most likely language (code, probability) of each window."""
    results = ct2.engine.detect_language(features)
    return [(r[0][0].strip("<|>"), float(r[0][1])) for r in results]


def generate_token_ids_ct2(
    ct2: CT2Whisper,
    audios: list[np.ndarray],
    *,
    language: str | list[str] | None = None,
    task: str = "transcribe",
    num_beams: int = 1,
    max_new_tokens: int | None = None,
) -> list[list[int]]:
    """Generated tokens (no prompt, no ``<|endoftext|>``) for each audio's first 30 s."""
    import ctranslate2

    task = validate_task(task)
    langs = per_sample_languages(language, len(audios))
    features = ctranslate2.StorageView.from_array(ct2_features(ct2, audios))
    multilingual = ct2.is_multilingual
    if any(lang is None for lang in langs):
        if multilingual:
            detected = detect_languages_ct2(ct2, features)
            langs = [lang or det[0] for lang, det in zip(langs, detected)]
    sot, notimestamps = _token_id(ct2, "<|startoftranscript|>"), _token_id(ct2, "<|notimestamps|>")
    prompts = []
    for lang in langs:
        prompt = [sot]
        if multilingual:
            prompt += [_token_id(ct2, f"<|{lang or 'en'}|>"), _token_id(ct2, f"<|{task}|>")]
        prompts.append(prompt + [notimestamps])
    kwargs = {"beam_size": num_beams, "suppress_blank": True, "suppress_tokens": [-1]}
    # CTranslate2's Whisper generates at most max_length // 2 new tokens (measured; OpenAI's
    # sample_len = n_text_ctx // 2): 448 -> 224, the default of OpenAI and faster-whisper.
    if max_new_tokens is None:
        kwargs["max_length"] = MAX_TARGET_TOKENS
    else:
        kwargs["max_length"] = 2 * min(max_new_tokens, MAX_TARGET_TOKENS - max(len(p) for p in prompts))
    results = ct2.engine.generate(features, prompts, return_scores=False, **kwargs)
    return [list(r.sequences_ids[0]) for r in results]


def generate_texts_ct2(ct2: CT2Whisper, audios: list[np.ndarray], **kwargs) -> list[str]:
    """One transcript per audio (first 30 s), decoded like :func:`generate_token_ids_ct2`."""
    from whisper_ft.decoding.hf import text_token_ids

    eot = _token_id(ct2, "<|endoftext|>")
    ids = generate_token_ids_ct2(ct2, audios, **kwargs)
    return [ct2.model.hf_tokenizer.decode(text_token_ids(seq, eot)).strip() for seq in ids]


def audio_seconds(audio: np.ndarray) -> float:
    return len(audio) / SAMPLE_RATE


def describe(ct2: CT2Whisper) -> str:
    return f"{ct2.path} on {ct2.device} ({ct2.compute_type})"


def log_loaded(ct2: CT2Whisper) -> None:
    log(f"model: {describe(ct2)}")
