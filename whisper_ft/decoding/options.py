"""One frozen record of decoding choices, shared by every backend (:mod:`whisper_ft.decoding.backend`).

Commands build a :class:`DecodingOptions` once from their flags; backends read it instead of a
dozen keyword arguments (``num_beams`` in one backend and ``beam_size`` in the other before).
Every value is checked when the record is made, and a bad one names the valid choices.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from whisper_ft.core.errors import WhisperFtError
from whisper_ft.models.generation import TASKS

# OpenAI's and faster-whisper's schedule: a doubtful window is decoded again at the next temperature
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# faster-whisper's VadOptions fields (the CLI's --vad_* options set the first four)
VAD_PARAMETERS = ("threshold", "min_silence_duration_ms", "speech_pad_ms", "min_speech_duration_ms",
                  "neg_threshold", "max_speech_duration_s")


@dataclass(frozen=True)
class DecodingOptions:
    """How to decode (not what model, device or threads: that is :func:`load_backend`'s business).

    ``temperature``: 0.0 (deterministic greedy/beam search, the default) or a tuple tried in turn on
    a doubtful long-form window (:data:`FALLBACK_TEMPERATURES` via :meth:`with_fallback`).
    ``timestamps``: long-form segments of a few seconds (None: the backend's own default).
    ``pack``: short same-language clips share 30 s windows in :meth:`Backend.texts` (the fast path).
    ``batch_size``: long-form chunks per batch in CTranslate2's batched VAD pipeline (1: sequential).
    ``initial_prompt``: text given to the decoder as if it came before (faster-whisper's name; ``--prompt``).
    ``hotwords``: words to favour (faster-whisper's ``hotwords``; the transformers backend folds them
    into the prompt). ``vad``: decode the speech only (Silero VAD), with ``vad_parameters``
    (faster-whisper's ``VadOptions`` fields, as ``(name, value)`` pairs; :attr:`vad_options` as a dict).
    """

    language: str | None = None  # None: detected
    task: str = "transcribe"
    beam_size: int = 1
    temperature: float | tuple[float, ...] = 0.0
    max_new_tokens: int | None = None
    timestamps: bool | None = None
    word_timestamps: bool = False
    initial_prompt: str | None = None
    hotwords: str | None = None
    vad: bool = False
    vad_parameters: tuple[tuple[str, float], ...] = ()
    pack: bool = False
    condition_on_previous_text: bool = True
    batch_size: int = 1

    def __post_init__(self) -> None:
        from whisper_ft.core.languages import normalize_language

        object.__setattr__(self, "language", normalize_language(self.language))
        task = (self.task or "").strip().lower()
        if task not in TASKS:
            raise WhisperFtError(f"unknown task {self.task!r}; choose one of: {', '.join(TASKS)}")
        object.__setattr__(self, "task", task)
        for name in ("beam_size", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise WhisperFtError(f"{name} must be a whole number of at least 1 (got {value!r})")
        if self.max_new_tokens is not None and (not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1):
            raise WhisperFtError(f"max_new_tokens must be at least 1, or None for no cap (got {self.max_new_tokens!r})")
        temps = self.temperature if isinstance(self.temperature, tuple) else (self.temperature,)
        try:
            temps = tuple(float(t) for t in temps)
        except (TypeError, ValueError):
            raise WhisperFtError(f"temperature must be a number from 0 to 1, or a tuple of them "
                                 f"(got {self.temperature!r})") from None
        if not temps or any(not 0.0 <= t <= 1.0 for t in temps):
            raise WhisperFtError(f"temperature must be a number from 0 to 1, or a tuple of them (got {self.temperature!r})")
        object.__setattr__(self, "temperature", temps[0] if len(temps) == 1 else temps)
        params = self.vad_parameters.items() if isinstance(self.vad_parameters, dict) else self.vad_parameters or ()
        params = tuple(sorted((str(k), v) for k, v in params if v is not None))
        unknown = [k for k, _ in params if k not in VAD_PARAMETERS]
        if unknown:
            raise WhisperFtError(f"unknown VAD parameter {unknown[0]!r}; choose from: {', '.join(VAD_PARAMETERS)}")
        for k, v in params:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (k.endswith("threshold") and v > 1):
                raise WhisperFtError(f"VAD {k} must be a number{' from 0 to 1' if k.endswith('threshold') else ' of at least 0'}"
                                     f" (got {v!r})")
        object.__setattr__(self, "vad_parameters", params)
        for name in ("initial_prompt", "hotwords"):
            value = getattr(self, name)
            object.__setattr__(self, name, value.strip() if isinstance(value, str) and value.strip() else None)

    @property
    def text_prompt(self) -> str | None:
        """What a short clip is conditioned on as its previous text: ``initial_prompt`` then
        ``hotwords`` (how the transformers long-form path folds them too); None for neither."""
        return " ".join(p for p in (self.initial_prompt, self.hotwords) if p) or None

    @property
    def vad_options(self) -> dict[str, float]:
        """``vad_parameters`` as keyword arguments of faster-whisper's ``VadOptions``."""
        return dict(self.vad_parameters)

    @property
    def temperatures(self) -> tuple[float, ...]:
        """The schedule as a tuple (one entry: no fallback)."""
        return self.temperature if isinstance(self.temperature, tuple) else (float(self.temperature),)

    @property
    def temperature_fallback(self) -> bool:
        return len(self.temperatures) > 1

    def with_fallback(self, fallback: bool = True) -> DecodingOptions:
        """The same options with OpenAI's temperature fallback schedule from the first temperature on
        (0.0, 0.2, ... 1.0 from 0; steps of 0.2), or the first temperature only."""
        start = self.temperatures[0]
        if not fallback:
            return replace(self, temperature=start)
        schedule = (start,) + tuple(t for t in FALLBACK_TEMPERATURES if t > start + 1e-9)
        return replace(self, temperature=schedule if len(schedule) > 1 else start)

    def replace(self, **changes) -> DecodingOptions:
        return replace(self, **changes)
