"""One frozen record of decoding choices, shared by every backend (:mod:`whisper_ft.decoding.backend`).

Commands build a :class:`DecodingOptions` once from their flags; backends read it instead of a
dozen keyword arguments (``num_beams`` in one backend and ``beam_size`` in the other before).
Every value is checked when the record is made, and a bad one names the valid choices.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from whisper_ft.errors import WhisperFtError
from whisper_ft.models.generation import TASKS

# OpenAI's and faster-whisper's schedule: a doubtful window is decoded again at the next temperature
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass(frozen=True)
class DecodingOptions:
    """How to decode (not what model, device or threads: that is :func:`load_backend`'s business).

    ``temperature``: 0.0 (deterministic greedy/beam search, the default) or a tuple tried in turn on
    a doubtful long-form window (:data:`FALLBACK_TEMPERATURES` via :meth:`with_fallback`).
    ``timestamps``: long-form segments of a few seconds (None: the backend's own default).
    ``pack``: short same-language clips share 30 s windows in :meth:`Backend.texts` (the fast path).
    ``batch_size``: long-form chunks per batch in CTranslate2's batched VAD pipeline (1: sequential).
    """

    language: str | None = None  # None: detected
    task: str = "transcribe"
    beam_size: int = 1
    temperature: float | tuple[float, ...] = 0.0
    max_new_tokens: int | None = None
    timestamps: bool | None = None
    word_timestamps: bool = False
    initial_prompt: str | None = None
    vad: bool = False
    pack: bool = False
    condition_on_previous_text: bool = True
    batch_size: int = 1

    def __post_init__(self) -> None:
        from whisper_ft.models.languages import normalize_language

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

    @property
    def temperatures(self) -> tuple[float, ...]:
        """The schedule as a tuple (one entry: no fallback)."""
        return self.temperature if isinstance(self.temperature, tuple) else (float(self.temperature),)

    @property
    def temperature_fallback(self) -> bool:
        return len(self.temperatures) > 1

    def with_fallback(self, fallback: bool = True) -> DecodingOptions:
        """The same options with OpenAI's temperature fallback schedule (or temperature 0 only)."""
        return replace(self, temperature=FALLBACK_TEMPERATURES if fallback else 0.0)

    def replace(self, **changes) -> DecodingOptions:
        return replace(self, **changes)
