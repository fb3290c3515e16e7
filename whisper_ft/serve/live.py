"""Live captions: ``GET /v1/realtime?intent=transcription`` (a WebSocket), OpenAI's Realtime
transcription session (messages: :mod:`whisper_ft.serve.live_protocol`).

The client appends PCM16 audio (``input_audio_buffer.append``, base64); the server cuts it into
utterances (Silero VAD: :class:`whisper_ft.decoding.streaming.Endpointer`, or the client's
``commit``), decodes the open utterance again each time it has grown by ``PARTIAL_STEP_SECONDS``
and sends what two successive decodes agree on as ``...transcription.delta`` (local agreement), and
once an utterance ends, decodes it whole and sends ``...transcription.completed``. Every decode is a
job of the served model's worker (:class:`whisper_ft.serve.engine.Engine`): live sessions and file
requests share its batches, and each session has at most one job queued, so no stream can crowd
out the others.

Bounds: ``--max_live_sessions`` at once (more are told so and closed, 4429); an utterance is cut at
``MAX_UTTERANCE_SECONDS``; a session holds at most ``MAX_BACKLOG_SECONDS`` of undecoded audio (it
stops reading from a client that sends faster than it is decoded); ``--live_idle_timeout`` seconds
without a message (and nothing left to decode) closes it (4408); the API key and the browser
checks (:mod:`whisper_ft.serve.guard`) apply. A client that leaves stops its decodes; on SIGTERM
uvicorn closes every session (1012).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from whisper_ft.core.audio import SAMPLE_RATE
from whisper_ft.core.errors import WhisperFtError
from whisper_ft.decoding.streaming import Endpointer, LocalAgreement, Started, Utterance
from whisper_ft.serve.live_protocol import (
    CLIENT_EVENTS,
    LiveConfig,
    LiveError,
    apply_update,
    new_id,
    session_beta,
    session_ga,
)

logger = logging.getLogger("whisper_ft.serve")

PARTIAL_STEP_SECONDS = 0.5  # decode the open utterance again once it has grown this much (decoder idle)
PARTIAL_BEAM_SIZE = 1  # partial text is greedy, without the temperature fallback: cheap, and it may change
# once a pause has lasted this long, the utterance so far is decoded as a final would be; if the VAD
# then ends it, that is its final text (the completed event comes as the pause reaches silence_duration_ms)
PAUSE_DECODE_SECONDS = 0.2
MAX_UTTERANCE_SECONDS = 25.0  # Whisper sees 30 s; the cut goes at the quietest moment before this
MAX_BACKLOG_SECONDS = 120.0  # undecoded audio a session holds before it stops reading its client
KEY_SUBPROTOCOL = "openai-insecure-api-key."  # how a browser sends a key (it cannot set headers)
# close codes: 4000 + the HTTP status the same refusal gets over HTTP
CLOSE_BAD_REQUEST, CLOSE_UNAUTHORIZED, CLOSE_OFF, CLOSE_IDLE, CLOSE_BUSY = 4400, 4401, 4403, 4408, 4429


class _Pcm16:
    """Little-endian 16-bit mono at ``rate`` -> float32 at 16 kHz, across message boundaries."""

    def __init__(self, rate: int):
        import soxr

        self.rate, self._odd = rate, b""
        self._resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32") if rate != SAMPLE_RATE else None

    def decode(self, data: bytes) -> np.ndarray:
        data = self._odd + data
        whole = len(data) - len(data) % 2
        self._odd = data[whole:]
        audio = np.frombuffer(data[:whole], "<i2").astype(np.float32) / 32768.0
        return self._resampler.resample_chunk(audio) if self._resampler is not None else audio


@dataclass
class _Item:
    """One utterance: OpenAI's conversation item, from speech_started to completed."""

    id: str
    agreement: LocalAgreement = field(default_factory=LocalAgreement)
    language: str | None = None  # detected by its first decode, kept for the next ones
    decoded_samples: int = 0  # length of the open audio at its last partial decode
    pending: str = ""
    heard: tuple[int, str, str | None] | None = None  # the last final-quality decode: (samples, text, language)


class LiveSession:
    """One WebSocket's session: reads client events, and decodes in a task of its own."""

    def __init__(self, websocket, engine, config: LiveConfig, idle_timeout: float):
        self.ws, self.engine, self.config, self.idle_timeout = websocket, engine, config, idle_timeout
        self.id = new_id("sess")
        self.endpointer = Endpointer(config.turn_detection, MAX_UTTERANCE_SECONDS)
        self.pcm = _Pcm16(config.rate)
        self.open: _Item | None = None
        self.finals: deque[tuple[_Item, Utterance]] = deque()
        self.last_committed: str | None = None
        self.wake, self.drained = asyncio.Event(), asyncio.Event()
        self.decoding = False
        self.last_active = asyncio.get_running_loop().time()  # the last client message or decode (idle timeout)
        self.gone = False
        self.disconnect_code: int | None = None
        self._send_lock = asyncio.Lock()
        self.audio_seconds = 0.0
        self.utterances = 0
        self.reused = 0  # final texts taken from a partial decode

    async def send(self, event: dict) -> None:
        if self.gone:
            return
        event = {"event_id": new_id("event"), **event}
        try:
            async with self._send_lock:
                await self.ws.send_text(json.dumps(event, ensure_ascii=False))
        except (OSError, RuntimeError, WebSocketDisconnect):  # the client left: the receive loop sees it next
            self.gone = True

    async def run(self) -> tuple[int, str] | None:
        """Serve until the client leaves (None) or the session must close: (code, reason)."""
        await self.send({"type": "transcription_session.created", "session": session_beta(self.config, self.id)})
        decoder = asyncio.create_task(self._decode_loop(), name=f"live-{self.id}")
        try:
            return await self._receive_loop()
        finally:
            decoder.cancel()  # a decode in the engine is cancelled with it (its job skipped or stopped)
            try:
                await decoder
            except asyncio.CancelledError:
                pass

    # --- client events ---------------------------------------------------------------------

    async def _receive_loop(self) -> tuple[int, str] | None:
        while True:
            while self._backlog_seconds() > MAX_BACKLOG_SECONDS and not self.gone:  # backpressure: read on once
                # decoding catches up (a client gone meanwhile is seen when its next event cannot be sent)
                self.drained.clear()
                await self.drained.wait()
            loop = asyncio.get_running_loop()
            try:
                message = await asyncio.wait_for(self.ws.receive(),
                                                 max(0.05, self.idle_timeout - (loop.time() - self.last_active)))
            except asyncio.TimeoutError:
                if self.finals or self.decoding or loop.time() - self.last_active < self.idle_timeout:
                    continue  # the client waits for our results, or has just had them: not idle
                reason = f"no message for {self.idle_timeout:g} s (--live_idle_timeout)"
                await self.send(LiveError(f"closing the session: {reason}", code="idle_timeout").event())
                return CLOSE_IDLE, "idle timeout"
            if message["type"] == "websocket.disconnect":
                self.disconnect_code = message.get("code")  # 1012: the server is shutting down (SIGTERM)
                return None
            self.last_active = loop.time()
            event_id = None
            try:
                if message.get("text") is None:
                    raise LiveError("binary messages are not understood: send JSON text messages, e.g. "
                                    '{"type": "input_audio_buffer.append", "audio": "<base64 PCM16>"}',
                                    code="invalid_message")
                event = _parse(message["text"])
                event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
                await self._handle(event)
            except LiveError as exc:
                await self.send(exc.event(event_id))

    async def _handle(self, event: dict) -> None:
        kind = event["type"]
        if kind == "input_audio_buffer.append":
            audio = event.get("audio")
            if not isinstance(audio, str):
                raise LiveError('input_audio_buffer.append needs "audio": base64 of 16-bit little-endian mono PCM',
                                param="audio")
            try:
                data = base64.b64decode(audio, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise LiveError('"audio" is not valid base64: send the PCM16 bytes base64-encoded (standard '
                                "alphabet, with padding)", param="audio") from exc
            samples = self.pcm.decode(data)
            self.audio_seconds += len(samples) / SAMPLE_RATE
            probs = await asyncio.get_running_loop().run_in_executor(None, self.endpointer.vad.push, samples)
            for ev in self.endpointer.feed(samples, probs):
                await (self._started(ev) if isinstance(ev, Started) else self._stopped(ev.utterance, vad=True))
            self.wake.set()
        elif kind in ("transcription_session.update", "session.update"):
            config = apply_update(self.config, event, self.engine)
            if config.rate != self.config.rate:
                self.pcm = _Pcm16(config.rate)
            self.endpointer.turn = config.turn_detection  # an open utterance goes on under the new rule
            self.config = config
            shape = session_beta if kind == "transcription_session.update" else session_ga
            await self.send({"type": kind.replace(".update", ".updated"), "session": shape(config, self.id)})
        elif kind == "input_audio_buffer.commit":
            utterance = self.endpointer.commit()
            if utterance is None:
                raise LiveError("the input audio buffer is empty: append audio before input_audio_buffer.commit"
                                + (" (with turn detection on, the server has already committed what it heard)"
                                   if self.config.turn_detection else ""), code="input_audio_buffer_commit_empty")
            await self._stopped(utterance, vad=False)
            self.wake.set()
        elif kind == "input_audio_buffer.clear":
            self.endpointer.clear()
            self.open = None
            await self.send({"type": "input_audio_buffer.cleared"})
        else:
            raise LiveError(f"unknown event type {kind!r}; this server accepts: {', '.join(CLIENT_EVENTS)}",
                            param="type")

    async def _started(self, event: Started) -> None:
        self.open = _Item(new_id("item"))
        if self.config.turn_detection is not None:
            await self.send({"type": "input_audio_buffer.speech_started", "audio_start_ms": round(event.at * 1000),
                             "item_id": self.open.id})

    async def _stopped(self, utterance: Utterance, *, vad: bool) -> None:
        item, self.open = self.open or _Item(new_id("item")), None
        if vad and self.config.turn_detection is not None:
            await self.send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": round(utterance.end * 1000),
                             "item_id": item.id})
        await self.send({"type": "input_audio_buffer.committed", "item_id": item.id,
                         "previous_item_id": self.last_committed})
        self.last_committed = item.id
        self.finals.append((item, utterance))

    def _backlog_seconds(self) -> float:
        return sum(len(u.audio) for _, u in self.finals) / SAMPLE_RATE + self.endpointer.held_seconds

    # --- decoding --------------------------------------------------------------------------

    async def _decode_loop(self) -> None:
        step = int(PARTIAL_STEP_SECONDS * SAMPLE_RATE)
        while True:
            await self.wake.wait()
            self.wake.clear()
            while True:
                if self.finals:  # an ended utterance first: its final text is what the client waits for
                    item, utterance = self.finals[0]
                    await self._final(item, utterance)
                    self.finals.popleft()
                    if self.gone:  # it could not be sent: nobody is listening, decode nothing more
                        self.finals.clear()
                    self.drained.set()
                    continue
                item, audio = self.open, self.endpointer.open_audio
                if item is None or audio is None:
                    break
                pause, needed = self.endpointer.pause_start, int(PAUSE_DECODE_SECONDS * SAMPLE_RATE)
                if pause is not None and len(audio) >= pause + needed and (item.heard or (0,))[0] < pause + needed:
                    final_quality = True  # a pause: what a final decode would give, ready when the VAD ends it
                elif (len(audio) >= step and len(audio) - item.decoded_samples >= step
                      and self.engine.queued(self._model()) == 0):
                    final_quality = False  # partial text only when the decoder has nothing else to do
                else:
                    break
                item.decoded_samples = len(audio)
                await self._partial(item, audio, final_quality)

    def _model(self):
        return self.engine.find(self.config.model)

    async def _decode(self, item: _Item, audio: np.ndarray, *, final_quality: bool = True):
        from whisper_ft.serve.engine import DecodeJob

        job = DecodeJob(audio, task="transcribe", language=self.config.language or item.language,
                        prompt=self.config.prompt, beam_size=None if final_quality else PARTIAL_BEAM_SIZE,
                        fallback=final_quality)
        self.decoding = True
        try:
            return await self.engine.transcribe(self._model(), job)
        finally:
            self.decoding = False
            self.last_active = asyncio.get_running_loop().time()

    async def _partial(self, item: _Item, audio: np.ndarray, final_quality: bool) -> None:
        try:
            transcription = await self._decode(item, audio, final_quality=final_quality)
        except WhisperFtError as exc:  # the final decode will say so if it fails too
            logger.info("live session %s: a partial decode failed: %s", self.id, exc)
            return
        except Exception:  # noqa: BLE001 - a bug must not end the session's decoding
            logger.exception("live session %s: a partial decode failed", self.id)
            return
        item.language = item.language or transcription.language
        if final_quality:
            item.heard = (len(audio), transcription.text, transcription.language)
        delta, pending = item.agreement.update(transcription.text)
        if delta:
            await self.send({"type": "conversation.item.input_audio_transcription.delta", "item_id": item.id,
                             "content_index": 0, "delta": delta})
        if delta or pending != item.pending:  # whisper-ft's addition: what may still change
            item.pending = pending
            await self.send({"type": "conversation.item.input_audio_transcription.partial", "item_id": item.id,
                             "content_index": 0, "stable": item.agreement.stable, "pending": pending})

    async def _final(self, item: _Item, utterance: Utterance) -> None:
        seconds = len(utterance.audio) / SAMPLE_RATE
        text, language = "", item.language
        needed = min(len(utterance.audio), utterance.speech_samples + int(PAUSE_DECODE_SECONDS * SAMPLE_RATE))
        if item.heard is not None and item.heard[0] >= needed:
            _, text, language = item.heard  # the decode at the pause heard it all
            self.reused += 1
        elif len(utterance.audio):
            try:
                transcription = await self._decode(item, utterance.audio)
                text, language = transcription.text, transcription.language
            except Exception as exc:  # noqa: BLE001 - this utterance fails, the session goes on
                if not isinstance(exc, WhisperFtError):
                    logger.exception("live session %s: decoding an utterance failed", self.id)
                message = str(exc) if isinstance(exc, WhisperFtError) else "internal error (see the server log)"
                await self.send({"type": "conversation.item.input_audio_transcription.failed", "item_id": item.id,
                                 "content_index": 0, "error": {"type": "server_error", "code": "decoding_error",
                                                               "message": message, "param": None}})
                return
        self.utterances += 1
        await self.send({"type": "conversation.item.input_audio_transcription.completed", "item_id": item.id,
                         "content_index": 0, "transcript": text, "language": language,
                         "usage": {"type": "duration", "seconds": round(seconds, 3)}})


def _parse(text: str) -> dict:
    try:
        event = json.loads(text)
    except ValueError as exc:
        raise LiveError("a message is not JSON: send JSON text messages such as "
                        '{"type": "input_audio_buffer.append", "audio": "<base64 PCM16>"}', code="invalid_json") from exc
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise LiveError(f'each message must be a JSON object with a "type" (one of: {", ".join(CLIENT_EVENTS)})',
                        param="type")
    return event


def _subprotocol(offered: list[str]) -> str | None:
    """The subprotocol to answer with (a browser drops a connection whose answer it did not offer),
    never the one carrying the key."""
    for name in offered:
        if not name.startswith(KEY_SUBPROTOCOL):
            return "realtime" if "realtime" in offered else name
    return None


def _key_given(websocket, api_key: str) -> bool | None:
    """True/False: the right/wrong key was sent (header or subprotocol); None: no key at all."""
    scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
    tokens = [token.strip()] if scheme.lower() == "bearer" else []
    tokens += [p[len(KEY_SUBPROTOCOL):] for p in websocket.scope.get("subprotocols") or [] if p.startswith(KEY_SUBPROTOCOL)]
    if not tokens:
        return None
    return any(hmac.compare_digest(t.encode("utf-8", "replace"), api_key.encode()) for t in tokens)


def _refusal(websocket, app, engine, settings) -> tuple[int, LiveError] | None:
    if settings.api_key:
        given = _key_given(websocket, settings.api_key)
        if not given:
            what = "no API key given" if given is None else "wrong API key"
            return CLOSE_UNAUTHORIZED, LiveError(
                f"{what}: send the server's --api_key as 'Authorization: Bearer KEY' or, from a browser, as the "
                f"subprotocol '{KEY_SUBPROTOCOL}KEY'", code="invalid_api_key")
    intent = websocket.query_params.get("intent", "transcription")
    if intent != "transcription":
        return CLOSE_BAD_REQUEST, LiveError(f"intent {intent!r} is not served here: this server transcribes only; "
                                            "connect to /v1/realtime?intent=transcription", param="intent")
    model = websocket.query_params.get("model")
    if model and engine.find(model) is None:
        return CLOSE_BAD_REQUEST, LiveError(f"model {model!r} is not served here; choose one of: "
                                            f"{', '.join(engine.names())} (or whisper-1 for the first)",
                                            code="model_not_found", param="model")
    if settings.max_live_sessions == 0:
        return CLOSE_OFF, LiveError("live captions are off on this server (--max_live_sessions 0): send files to "
                                    "POST /v1/audio/transcriptions instead", code="live_captions_off")
    if app.state.live_sessions >= settings.max_live_sessions:
        return CLOSE_BUSY, LiveError(f"the server is busy: {settings.max_live_sessions} live sessions are open "
                                     "(--max_live_sessions); retry shortly", code="rate_limit_exceeded",
                                     type="rate_limit_exceeded")
    return None


def add_live_route(app, engine, settings) -> None:
    """Serve ``/v1/realtime`` on ``app`` (``settings``: the server's ServerSettings)."""
    app.state.live_sessions = 0
    access = logging.getLogger("whisper_ft.serve.access")

    @app.websocket("/v1/realtime")
    async def realtime(websocket: WebSocket):
        started = time.perf_counter()
        await websocket.accept(subprotocol=_subprotocol(websocket.scope.get("subprotocols") or []))
        session, outcome = None, _refusal(websocket, app, engine, settings)
        if outcome is None:
            app.state.live_sessions += 1
            session = LiveSession(websocket, engine,
                                  LiveConfig(model=websocket.query_params.get("model") or engine.names()[0]),
                                  settings.live_idle_timeout)
            try:
                outcome = await session.run()
            except Exception:  # noqa: BLE001 - logged; the client gets a close code, never a traceback
                logger.exception("live session %s failed", session.id)
                outcome = (1011, LiveError("internal server error (the server log has the details)",
                                           type="server_error", code="server_error"))
            finally:
                app.state.live_sessions -= 1
        if isinstance(outcome, tuple) and isinstance(outcome[1], LiveError):
            code, error = outcome
            await _send_quietly(websocket, json.dumps({"event_id": new_id("event"), **error.event()}))
            outcome = (code, error.code or "")
        if outcome is not None:
            try:
                await websocket.close(code=outcome[0], reason=outcome[1][:120])
            except (OSError, RuntimeError, WebSocketDisconnect):
                pass
        client = websocket.client or ("-", 0)
        access.info('%s "WS %s" %s audio %.2f s utterances %d (%d final from a partial) total %.2f s', client[0],
                    websocket.url.path, outcome[0] if outcome else f"disconnected {session.disconnect_code}",
                    session.audio_seconds if session else 0.0, session.utterances if session else 0,
                    session.reused if session else 0, time.perf_counter() - started)


async def _send_quietly(websocket, text: str) -> None:
    try:
        await websocket.send_text(text)
    except (OSError, RuntimeError, WebSocketDisconnect):
        pass
