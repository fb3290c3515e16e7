"""The live endpoint's messages, in OpenAI's Realtime transcription shapes.

A session is configured with OpenAI's beta ``transcription_session.update`` (answered by
``transcription_session.updated``) or the GA ``session.update`` with ``session.type =
"transcription"`` (answered by ``session.updated``). What whisper-ft cannot do is refused with an
``error`` event naming the field, never ignored: ``semantic_vad``, noise reduction, logprobs, G.711.
Audio is PCM16 mono little-endian at 24 kHz (OpenAI's) or, as whisper-ft's addition, at the GA
format's ``rate`` (8-48 kHz; the web page sends 16 kHz).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

from whisper_ft.core.errors import WhisperFtError
from whisper_ft.decoding.streaming import TurnDetection

OPENAI_RATE = 24_000  # OpenAI's pcm16
MIN_RATE, MAX_RATE = 8_000, 48_000
CLIENT_EVENTS = ("transcription_session.update", "session.update", "input_audio_buffer.append",
                 "input_audio_buffer.commit", "input_audio_buffer.clear")


class LiveError(Exception):
    """A client event that cannot be done: sent back as an ``error`` event; the session goes on."""

    def __init__(self, message: str, *, code: str = "invalid_value", param: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.code, self.param, self.type = message, code, param, type

    def event(self, event_id: str | None = None) -> dict:
        return {"type": "error", "error": {"type": self.type, "code": self.code, "message": self.message,
                                           "param": self.param, "event_id": event_id}}


@dataclass(frozen=True)
class LiveConfig:
    """A session's settings (what ``*.updated`` shows)."""

    model: str  # as the client named it (whisper-1: the first served model)
    language: str | None = None  # None: detected per utterance
    prompt: str | None = None
    rate: int = OPENAI_RATE
    turn_detection: TurnDetection | None = TurnDetection()


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def _object(value, param: str) -> dict:
    if not isinstance(value, dict):
        raise LiveError(f"{param} must be a JSON object", param=param)
    return value


def _known(obj: dict, allowed: set[str], param: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise LiveError(f"unknown parameter '{param}.{unknown[0]}'; this server knows: {', '.join(sorted(allowed))}",
                        code="unknown_parameter", param=f"{param}.{unknown[0]}")


def _number(obj: dict, key: str, param: str, lo: float, hi: float, integer: bool = False):
    value = obj.get(key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and lo <= value <= hi
    if not ok or (integer and value != int(value)):
        kind = "an integer" if integer else "a number"
        raise LiveError(f"{param}.{key} must be {kind} from {lo:g} to {hi:g} (got {value!r})", param=f"{param}.{key}")
    return int(value) if integer else float(value)


def _turn_detection(value, current: TurnDetection | None, param: str) -> TurnDetection | None:
    if value is None:
        return None  # the client commits each utterance itself
    value = _object(value, param)
    _known(value, {"type", "threshold", "prefix_padding_ms", "silence_duration_ms", "create_response",
                   "interrupt_response", "idle_timeout_ms"}, param)
    kind = value.get("type", "server_vad")
    if kind != "server_vad":
        raise LiveError(f"{param}.type {kind!r} is not supported: use \"server_vad\" (Silero VAD) or null "
                        "(the client commits)", code="unsupported_value", param=f"{param}.type")
    if value.get("idle_timeout_ms") is not None:
        raise LiveError(f"{param}.idle_timeout_ms is not supported (it prompts a conversation model)",
                        code="unsupported_value", param=f"{param}.idle_timeout_ms")
    turn = current or TurnDetection()
    if "threshold" in value:
        turn = replace(turn, threshold=_number(value, "threshold", param, 0.0, 1.0))
    if "prefix_padding_ms" in value:
        turn = replace(turn, prefix_padding_ms=_number(value, "prefix_padding_ms", param, 0, 2000, integer=True))
    if "silence_duration_ms" in value:
        turn = replace(turn, silence_duration_ms=_number(value, "silence_duration_ms", param, 100, 10_000,
                                                         integer=True))
    return turn


def _transcription(value, config: LiveConfig, engine, param: str) -> LiveConfig:
    from whisper_ft.core.languages import normalize_language

    if value is None:
        raise LiveError(f"{param} cannot be null here: transcription is all this endpoint does", param=param)
    value = _object(value, param)
    _known(value, {"model", "language", "prompt"}, param)
    if value.get("model") is not None:
        if not isinstance(value["model"], str) or engine.find(value["model"]) is None:
            raise LiveError(f"model {value['model']!r} is not served here; choose one of: {', '.join(engine.names())} "
                            "(or whisper-1 for the first)", code="model_not_found", param=f"{param}.model")
        config = replace(config, model=value["model"])
    if "language" in value:
        try:
            config = replace(config, language=normalize_language(value["language"] or None))
        except (WhisperFtError, AttributeError, TypeError) as exc:
            raise LiveError(str(exc) if isinstance(exc, WhisperFtError) else "language must be a string",
                            param=f"{param}.language") from exc
    if "prompt" in value:
        if value["prompt"] is not None and not isinstance(value["prompt"], str):
            raise LiveError("prompt must be a string", param=f"{param}.prompt")
        config = replace(config, prompt=value["prompt"] or None)
    return config


def _refuse_unsupported(obj: dict, noise_key: str | None, param: str) -> None:
    if noise_key and obj.get(noise_key) is not None:
        raise LiveError(f"{param}.{noise_key} is not supported: leave it out or null", code="unsupported_value",
                        param=f"{param}.{noise_key}")
    include = obj.get("include") or []
    if include:
        raise LiveError(f"include {include!r} is not supported for Whisper models (OpenAI's whisper-1 does not "
                        "return logprobs either); leave include out", code="unsupported_value", param=f"{param}.include")


def apply_update(config: LiveConfig, event: dict, engine) -> LiveConfig:
    """The config after a ``transcription_session.update`` or ``session.update`` event (``engine``:
    the served models, for ``model``)."""
    session = _object(event.get("session"), "session")
    if event["type"] == "transcription_session.update":  # OpenAI's beta shape
        _known(session, {"input_audio_format", "input_audio_transcription", "turn_detection",
                         "input_audio_noise_reduction", "include", "modalities"}, "session")
        _refuse_unsupported(session, "input_audio_noise_reduction", "session")
        if "input_audio_format" in session:
            if session["input_audio_format"] != "pcm16":
                raise LiveError(f"input_audio_format {session['input_audio_format']!r} is not supported: send "
                                "\"pcm16\" (16-bit little-endian mono at 24 kHz)", code="unsupported_value",
                                param="session.input_audio_format")
            config = replace(config, rate=OPENAI_RATE)
        if "input_audio_transcription" in session:
            config = _transcription(session["input_audio_transcription"], config, engine,
                                    "session.input_audio_transcription")
        if "turn_detection" in session:
            config = replace(config, turn_detection=_turn_detection(session["turn_detection"], config.turn_detection,
                                                                    "session.turn_detection"))
        return config
    # the GA shape: session.audio.input.{format, transcription, turn_detection, noise_reduction}
    _known(session, {"type", "audio", "include"}, "session")
    if session.get("type", "transcription") != "transcription":
        raise LiveError(f"session.type {session.get('type')!r} is not served here: this endpoint transcribes only "
                        "(session.type \"transcription\")", code="unsupported_value", param="session.type")
    _refuse_unsupported(session, None, "session")
    audio = _object(session.get("audio", {}), "session.audio")
    _known(audio, {"input"}, "session.audio")
    inp = _object(audio.get("input", {}), "session.audio.input")
    _known(inp, {"format", "transcription", "turn_detection", "noise_reduction"}, "session.audio.input")
    _refuse_unsupported(inp, "noise_reduction", "session.audio.input")
    if "format" in inp:
        fmt = _object(inp["format"], "session.audio.input.format")
        _known(fmt, {"type", "rate"}, "session.audio.input.format")
        if fmt.get("type", "audio/pcm") != "audio/pcm":
            raise LiveError(f"session.audio.input.format.type {fmt.get('type')!r} is not supported: send "
                            "\"audio/pcm\" (16-bit little-endian mono)", code="unsupported_value",
                            param="session.audio.input.format.type")
        if "rate" in fmt:
            config = replace(config, rate=_number(fmt, "rate", "session.audio.input.format", MIN_RATE, MAX_RATE,
                                                  integer=True))
    if "transcription" in inp:
        config = _transcription(inp["transcription"], config, engine, "session.audio.input.transcription")
    if "turn_detection" in inp:
        config = replace(config, turn_detection=_turn_detection(inp["turn_detection"], config.turn_detection,
                                                                "session.audio.input.turn_detection"))
    return config


def _turn_dict(turn: TurnDetection | None) -> dict | None:
    if turn is None:
        return None
    return {"type": "server_vad", "threshold": turn.threshold, "prefix_padding_ms": turn.prefix_padding_ms,
            "silence_duration_ms": turn.silence_duration_ms}


def session_beta(config: LiveConfig, session_id: str) -> dict:
    """The session as OpenAI's beta ``transcription_session.*`` events show it."""
    return {"id": session_id, "object": "realtime.transcription_session", "input_audio_format": "pcm16",
            "input_audio_rate": config.rate,  # whisper-ft: the rate in use (OpenAI: always 24000)
            "input_audio_transcription": {"model": config.model, "language": config.language, "prompt": config.prompt},
            "turn_detection": _turn_dict(config.turn_detection), "input_audio_noise_reduction": None,
            "include": None, "modalities": ["text"]}


def session_ga(config: LiveConfig, session_id: str) -> dict:
    """The session as OpenAI's GA ``session.*`` events show it."""
    return {"id": session_id, "object": "realtime.transcription_session", "type": "transcription",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": config.rate},
                                "transcription": {"model": config.model, "language": config.language,
                                                  "prompt": config.prompt},
                                "turn_detection": _turn_dict(config.turn_detection), "noise_reduction": None}},
            "include": None}
