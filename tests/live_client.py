"""A live-captions client (the `websocket-client` package, a real WebSocket) for the tests and
benchmarks/live_captions.py: streams audio to ``/v1/realtime`` as base64 PCM16, in real time or
``speed`` times faster, and records every server event with its arrival time."""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 16_000
END_OF_STREAM = "end-of-stream"  # event_id of the commit sent after the last audio


@dataclass
class LiveRun:
    events: list[dict] = field(default_factory=list)  # each with "_t": seconds since the first audio was sent
    close_code: int | None = None
    close_reason: str = ""
    subprotocol: str | None = None
    audio_seconds: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e.get("type") == kind]

    def finished(self) -> list[dict]:
        """completed and failed events, in order."""
        return [e for e in self.events if e.get("type") in ("conversation.item.input_audio_transcription.completed",
                                                             "conversation.item.input_audio_transcription.failed")]

    def errors(self) -> list[dict]:
        """error events, but the answer to the end-of-stream commit when nothing was left to commit."""
        return [e for e in self.of("error") if e["error"].get("event_id") != END_OF_STREAM]

    def end_of_stream_error(self) -> dict | None:
        return next((e for e in self.of("error") if e["error"].get("event_id") == END_OF_STREAM), None)

    def transcripts(self) -> list[str]:
        return [e["transcript"] for e in self.of("conversation.item.input_audio_transcription.completed")]


def connect(port: int, *, key: str | None = None, key_as_subprotocol: bool = False, query: str = "intent=transcription",
            headers: dict | None = None, timeout: float = 30.0):
    import websocket

    headers = dict(headers or {})
    host = headers.pop("Host", None)  # the client's own Host header, replaced (two would be a bad request)
    header = [f"{k}: {v}" for k, v in headers.items()]
    subprotocols = None
    if key and key_as_subprotocol:
        subprotocols = ["realtime", f"openai-insecure-api-key.{key}"]
    elif key:
        header.append(f"Authorization: Bearer {key}")
    return websocket.create_connection(f"ws://127.0.0.1:{port}/v1/realtime?{query}", header=header,
                                       subprotocols=subprotocols, timeout=timeout, suppress_origin=True,
                                       **({"host": host} if host else {}))


def receive_into(ws, run: LiveRun, started: list[float]) -> threading.Thread:
    """Read events in a thread until the server closes (or the socket fails)."""
    import websocket

    def loop():
        try:
            while True:
                opcode, frame = ws.recv_data_frame(True)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    if len(frame.data) >= 2:
                        run.close_code = struct.unpack("!H", frame.data[:2])[0]
                        run.close_reason = frame.data[2:].decode("utf-8", "replace")
                    break
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    event = json.loads(frame.data.decode("utf-8"))
                    event["_t"] = time.perf_counter() - started[0]
                    run.events.append(event)
        except Exception:  # noqa: BLE001 - the socket closed under us: the run ends
            pass
        finally:
            run.done.set()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def append_event(audio: np.ndarray) -> str:
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})


def stream(port: int, audio: np.ndarray, *, speed: float = 1.0, chunk_seconds: float = 0.1, key: str | None = None,
           session: dict | None = None, tail_silence: float = 1.5, wait: float = 120.0) -> LiveRun:
    """Stream 16 kHz ``audio`` (then ``tail_silence`` s of silence, so the last utterance ends) and
    wait until every committed utterance is completed (or failed), then close."""
    ws = connect(port, key=key)
    run, started = LiveRun(subprotocol=ws.getsubprotocol()), [time.perf_counter()]
    receive_into(ws, run, started)
    update = {"type": "session.update", "session": session or {
        "type": "transcription", "audio": {"input": {"format": {"type": "audio/pcm", "rate": SAMPLE_RATE}}}}}
    ws.send(json.dumps(update))
    audio = np.concatenate([audio.astype(np.float32), np.zeros(int(tail_silence * SAMPLE_RATE), np.float32)])
    step = int(chunk_seconds * SAMPLE_RATE)
    started[0] = time.perf_counter()
    for i, at in enumerate(range(0, len(audio), step)):
        delay = started[0] + (i + 1) * chunk_seconds / speed - time.perf_counter()  # once a microphone has it
        if delay > 0:
            time.sleep(delay)
        ws.send(append_event(audio[at: at + step]))
    run.audio_seconds = len(audio) / SAMPLE_RATE
    # a commit after the audio: once it is answered (committed, or an error if VAD has committed
    # everything already), every append before it has been seen; then wait for the final texts
    before = len(run.of("input_audio_buffer.committed"))
    ws.send(json.dumps({"type": "input_audio_buffer.commit", "event_id": END_OF_STREAM}))
    deadline = time.perf_counter() + wait
    while time.perf_counter() < deadline and not run.done.is_set():
        answered = run.end_of_stream_error() is not None or len(run.of("input_audio_buffer.committed")) > before
        if answered and len(run.finished()) >= len(run.of("input_audio_buffer.committed")):
            break
        time.sleep(0.05)
    ws.close()
    run.done.wait(5)
    return run
