"""One decoding seam for every command: ``load_backend(...)`` -> a :class:`Backend`.

``eval``, ``convert --verify``, ``infer``, ``infer-ct2``, ``compare`` and ``serve`` open their
model here and decode through two methods that take one :class:`DecodingOptions`:

- ``texts(audios, languages, options)``: one text per short clip (first 30 s), decoded in one batch;
  packed into shared 30 s windows when ``options.pack`` and the model has timestamp tokens
  (``can_pack``; without them the clips are decoded unpacked, said once on stderr).
- ``transcribe(audio, options)``: a :class:`Transcription` of any length.

Device, compute type and thread choice live here (not in the CLI): ``device="auto"`` takes CUDA
when present; transformers then runs in float16, CTranslate2 in its ``compute_type``
(auto: measured on this machine, :mod:`whisper_ft.decoding.calibration`; CUDA float16, CPU int8
until it is). ``kind="auto"``: CTranslate2 for a CTranslate2 folder,
transformers for anything else; a speech-LLM run folder (``whisper-ft llm finetune``) always
opens as its own backend (:class:`whisper_ft.speech_llm.decoding.SpeechLLMBackend`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from whisper_ft.core.audio import SAMPLE_RATE
from whisper_ft.core.console import log
from whisper_ft.core.errors import WhisperFtError
from whisper_ft.core.results import Segment, Transcription
from whisper_ft.decoding.ct2 import NO_TIMESTAMPS_MESSAGE
from whisper_ft.decoding.ct2_loading import default_cpu_threads
from whisper_ft.decoding.options import DecodingOptions

KINDS = ("transformers", "ctranslate2", "auto")
_KIND_ALIASES = {"hf": "transformers", "ct2": "ctranslate2"}



@runtime_checkable
class Backend(Protocol):
    """What every command decodes with (see the module docstring)."""

    info: dict[str, Any]

    @property
    def can_pack(self) -> bool: ...

    def texts(self, audios: list[np.ndarray], languages: list[str | None], options: DecodingOptions) -> list[str]: ...

    def transcribe(self, audio: np.ndarray, options: DecodingOptions, *, source: str | None = None,
                   on_segment: Callable[[Segment], None] | None = None) -> Transcription: ...


@dataclass(frozen=True)
class RegisteredBackend:
    """A recipe's own model folders: ``recognises(name)`` says whether a name is one, and
    ``load(name, *, device, threads, beam_size, max_new_tokens)`` opens it as a :class:`Backend`."""

    name: str
    recognises: Callable[[str], bool]
    load: Callable[..., Backend]


_REGISTERED: list[RegisteredBackend] = []


def register_backend(kind: RegisteredBackend) -> None:
    """Let :func:`load_backend` open a recipe's folders (the recipe calls this when imported; the
    decoding layer itself knows no recipe)."""
    if all(k.name != kind.name for k in _REGISTERED):
        _REGISTERED.append(kind)


def validate_kind(kind: str) -> str:
    k = (kind or "").strip().lower()
    k = _KIND_ALIASES.get(k, k)
    if k not in KINDS:
        raise WhisperFtError(f"unknown backend {kind!r}; choose one of: {', '.join(KINDS)} (or hf, ct2)")
    return k


class TransformersBackend:
    """A transformers Whisper (folder, LoRA adapter, hub id, or a CTranslate2 model imported exactly)."""

    def __init__(self, name, *, device: str = "auto", threads: int | None = None, source=None):
        import torch

        from whisper_ft.models.loading import load_whisper

        if threads:
            torch.set_num_threads(threads)
        device = (device or "auto").lower()
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device not in ("cpu", "cuda"):
            raise WhisperFtError(f"unknown device {device!r}; choose one of: auto, cpu, cuda")
        dtype = torch.float16 if device == "cuda" else torch.float32
        self.loaded = load_whisper(str(name), dtype=dtype, device=device, **({"source": source} if source else {}))
        self.name = str(name)
        self.device = device
        self.pack_stats: dict[str, int] = {}
        self._told_no_timestamps = False
        self._told_prompt_unpacked = False
        self.info: dict[str, Any] = {
            "name": self.name, "path": str(self.loaded.source.path), "kind": self.loaded.source.kind,
            "backend": "hf", "device": device, "dtype": str(dtype).removeprefix("torch."), "packing": self.pack_stats}

    def describe(self) -> str:
        return f"{self.loaded.source.describe()} on {self.device}"

    @property
    def can_pack(self) -> bool:
        from whisper_ft.decoding.hf import timestamp_begin_hf

        return timestamp_begin_hf(self.loaded.model, self.loaded.processor.tokenizer) is not None

    def texts(self, audios, languages, options: DecodingOptions) -> list[str]:
        from whisper_ft.decoding.hf import decode_text, generate_packed_token_ids, generate_texts

        model, processor = self.loaded.model, self.loaded.processor
        if options.pack and options.text_prompt:  # transformers' packed windows take no text prompt
            if not self._told_prompt_unpacked:
                self._told_prompt_unpacked = True
                log("a text prompt (--prompt/--hotwords) with --backend hf: clips are decoded unpacked")
            options = options.replace(pack=False)
        if options.pack and self._check_pack():
            ids = generate_packed_token_ids(model, processor, list(audios), language=list(languages),
                                            task=options.task, num_beams=options.beam_size,
                                            max_new_tokens=options.max_new_tokens, stats=self.pack_stats)
            return [decode_text(processor.tokenizer, seq) for seq in ids]
        feats = processor.feature_extractor(list(audios), sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        return generate_texts(model, processor, feats, language=list(languages), task=options.task,
                              num_beams=options.beam_size, max_new_tokens=options.max_new_tokens,
                              prompt=options.text_prompt)

    def _check_pack(self) -> bool:
        if self.can_pack:
            return True
        if not self._told_no_timestamps:
            self._told_no_timestamps = True
            log(NO_TIMESTAMPS_MESSAGE.format(model=self.name))
        self.pack_stats["no_timestamps"] = True
        return False

    def transcribe(self, audio, options: DecodingOptions, *, source=None, on_segment=None) -> Transcription:
        # transformers gives no segments before the end: on_segment is called once they are all known
        from whisper_ft.decoding.hf_transcribe import transcribe_hf

        t = transcribe_hf(self.loaded.model, self.loaded.processor, audio, language=options.language,
                          task=options.task, num_beams=options.beam_size, source=source,
                          temperature_fallback=options.temperature_fallback, temperature=options.temperatures,
                          initial_prompt=options.initial_prompt, hotwords=options.hotwords, vad=options.vad,
                          vad_parameters=options.vad_options, word_timestamps=options.word_timestamps)
        if on_segment is not None:
            for seg in t.segments:
                on_segment(seg)
        return t


class CTranslate2Backend:
    """A faster-whisper model (a CTranslate2 folder; any other model converted once into the cache).

    ``parallel_batches``: on CPU, ``texts`` batches are decoded by one single-threaded worker per
    thread (measured fastest for packed batches in benchmarks/inference.py; same tokens as one)."""

    def __init__(self, name, *, device: str = "auto", compute_type: str = "auto", threads: int | None = None,
                 parallel_batches: bool = False, calibration_clips=None, calibrate: bool = False):
        from whisper_ft.decoding.ct2_loading import ensure_ct2_folder, load_ct2_whisper, resolve_device

        threads = threads or default_cpu_threads()
        auto = (compute_type or "auto").lower() == "auto"
        if calibrate and not auto:
            raise WhisperFtError(f"--calibrate measures what --compute_type auto picks; drop --compute_type "
                                 f"{compute_type} (or --calibrate)")
        device, compute_type = resolve_device(device, compute_type)
        if auto:  # measured on this machine once per model, cached (whisper_ft.decoding.calibration)
            from whisper_ft.decoding.calibration import resolve_compute_type

            compute_type = resolve_compute_type(ensure_ct2_folder(name), device, threads, clips=calibration_clips,
                                                recalibrate=calibrate, fallback=compute_type)
        inter = threads if parallel_batches and device != "cuda" else 1
        self.ct2 = load_ct2_whisper(name, device=device, compute_type=compute_type, cpu_threads=threads,
                                    inter_threads=inter)
        self.name = str(name)
        self.pack_stats: dict[str, int] = {}
        self.info: dict[str, Any] = {
            "name": self.name, "path": str(self.ct2.path), "kind": "ct2", "backend": "ct2",
            "device": self.ct2.device, "compute_type": self.ct2.compute_type, "inter_threads": inter,
            "packing": self.pack_stats}

    def describe(self) -> str:
        from whisper_ft.decoding.ct2_loading import describe

        return describe(self.ct2)

    @property
    def can_pack(self) -> bool:
        from whisper_ft.decoding.ct2 import can_pack_ct2

        return can_pack_ct2(self.ct2)

    def texts(self, audios, languages, options: DecodingOptions) -> list[str]:
        from whisper_ft.decoding.ct2 import generate_texts_ct2

        return generate_texts_ct2(self.ct2, list(audios), language=list(languages), task=options.task,
                                  num_beams=options.beam_size, max_new_tokens=options.max_new_tokens,
                                  pack=options.pack, stats=self.pack_stats if options.pack else None,
                                  prompt=options.text_prompt)

    def transcribe_clips(self, clips: list, *, beam_size: int = 5, pack: bool = False) -> list:
        """Many requests' short clips (:class:`whisper_ft.decoding.batched.Clip`: at most 30 s, each
        with its own language, task, prompt and temperature) in one CTranslate2 batch ->
        :class:`~whisper_ft.decoding.batched.ClipResult` each (what a server batches)."""
        from whisper_ft.decoding.batched import transcribe_clips_ct2

        return transcribe_clips_ct2(self.ct2, clips, beam_size=beam_size, pack=pack,
                                    stats=self.pack_stats if pack else None)

    def transcribe(self, audio, options: DecodingOptions, *, source=None, on_segment=None) -> Transcription:
        # looked up at call time: tests and benchmarks may wrap it
        from whisper_ft.decoding import ct2_transcribe as long_form

        temps = options.temperatures
        return long_form.transcribe_ct2(
            self.ct2, audio, language=options.language, task=options.task, beam_size=options.beam_size,
            vad=options.vad, word_timestamps=options.word_timestamps, batch_size=options.batch_size,
            temperature=list(temps) if len(temps) > 1 else temps[0], max_new_tokens=options.max_new_tokens,
            without_timestamps=None if options.timestamps is None else not options.timestamps,
            initial_prompt=options.initial_prompt, condition_on_previous_text=options.condition_on_previous_text,
            hotwords=options.hotwords, vad_parameters=options.vad_options, source=source, on_segment=on_segment)


def load_backend(
    model_name_or_source,
    kind: str = "auto",
    device: str = "auto",
    compute_type: str = "auto",
    threads: int | None = None,
    *,
    parallel_batches: bool = False,
    max_new_tokens: int | None = None,
    beam_size: int | None = None,
    calibration_clips=None,
    calibrate: bool = False,
) -> Backend:
    """Open a model for decoding (see the module docstring). ``model_name_or_source`` is a model
    name or a resolved :class:`~whisper_ft.models.registry.ModelSource` (resolved once per command).
    ``beam_size``/``max_new_tokens`` matter to a speech-LLM run only (its decode settings are fixed
    when it is loaded; None: the run's own). CTranslate2's ``compute_type="auto"`` is the
    calibrated choice (:func:`whisper_ft.decoding.calibration.resolve_compute_type`: cached, or
    measured now on ``calibration_clips()`` when given; ``calibrate=True`` measures again)."""
    from whisper_ft.models.registry import ModelSource

    kind = validate_kind(kind)
    source = model_name_or_source if isinstance(model_name_or_source, ModelSource) else None
    name = source.name if source is not None else model_name_or_source
    if source is None:
        for folder_kind in _REGISTERED:  # a recipe's own model folder (e.g. a speech-LLM run)
            if folder_kind.recognises(str(name)):
                return folder_kind.load(name, device=device, threads=threads, beam_size=beam_size,
                                        max_new_tokens=max_new_tokens)
    if kind == "auto":
        from whisper_ft.models.registry import resolve_model

        source = source or resolve_model(name)
        kind = "ctranslate2" if source.kind == "ct2" else "transformers"
    if calibrate and kind != "ctranslate2":
        raise WhisperFtError("--calibrate measures CTranslate2's compute type: use it with --backend ct2")
    if kind == "ctranslate2":
        return CTranslate2Backend(name, device=device, compute_type=compute_type, threads=threads,
                                  parallel_batches=parallel_batches, calibration_clips=calibration_clips,
                                  calibrate=calibrate)
    return TransformersBackend(name, device=device, threads=threads, source=source)
