"""`whisper-ft serve` under hostile input: every request's cost is bounded (decoded length, stalled
uploads, clients that leave, NaN audio, huge prompts), browsers on other origins cannot drive it,
and it starts (or refuses to) and stops as an operator expects. The real server on loopback."""

from __future__ import annotations

import http.client
import io
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")

from tests.conftest import make_tone  # noqa: E402
from tests.test_serve import (  # noqa: E402
    API_KEY,
    AUTH,
    _port_open,
    _wait_for,
    assert_error,
    free_port,
    get,
    multipart,
    post,
    running_server,
    transcribe_raw,
    wav_bytes,
)

pytestmark = pytest.mark.server


def _wav(audio: np.ndarray, sr: int = 16_000, subtype: str = "PCM_16") -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def _flac_silence(seconds: float, sr: int = 48_000, channels: int = 2) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros((int(seconds * sr), channels), np.float32), sr, format="FLAC")
    return buf.getvalue()


def _one_hertz_wav() -> bytes:
    """A 100 KB wav whose header declares 1 Hz: 50,000 s of audio if believed."""
    data = bytearray(_wav(np.zeros(50_000, np.float32), sr=8_000))
    data[24:28] = struct.pack("<I", 1)  # sample rate
    data[28:32] = struct.pack("<I", 2)  # byte rate
    return bytes(data)


@pytest.fixture(scope="module")
def guarded(tiny_ct2):
    with running_server([tiny_ct2], engine={"temperature_fallback": False, "long_batch_size": 1},
                        api_key=API_KEY, max_audio_seconds=600) as (port, app):
        yield port, app


def _no_uploads_left(app) -> bool:
    return list(app.state.upload_dir.iterdir()) == []


@pytest.mark.slow
def test_declared_length_and_rate_are_checked_before_decoding(guarded):
    port, app = guarded
    err = assert_error(*transcribe_raw(port, {"language": "zh"}, file=("one-hertz.wav", _one_hertz_wav()))[::2],
                       400, "file", "sample rate of 1 Hz")
    assert err["code"] == "invalid_audio"
    hour = _flac_silence(3600)  # about 700 KB: far under the upload limit (made before the clock starts)
    started = time.time()
    err = assert_error(*transcribe_raw(port, {"language": "zh"}, file=("hour.flac", hour))[::2], 413, "file",
                       "3600 s", "--max_audio_seconds")
    assert err["code"] == "audio_too_long" and time.time() - started < 10  # refused from the header
    assert _no_uploads_left(app)
    assert transcribe_raw(port, {"language": "zh"})[0] == 200


def test_non_finite_and_absurd_samples(guarded):
    port, app = guarded
    nan = np.full(16_000, np.nan, np.float32)
    err = assert_error(*transcribe_raw(port, {"language": "zh"}, file=("nan.wav", _wav(nan, subtype="FLOAT")))[::2],
                       400, "file", "NaN")
    assert err["code"] == "invalid_audio"
    loud = make_tone(1.0) * np.float32(1e30)
    started = time.time()
    status, _, body = transcribe_raw(port, {"language": "zh"}, file=("loud.wav", _wav(loud, subtype="FLOAT")))
    assert status == 200, body  # scaled back to full scale, decoded like any clip
    assert time.time() - started < 30
    assert _no_uploads_left(app)


def test_huge_prompt_is_cut_to_whisper_limit(guarded):
    port, _ = guarded
    started = time.time()
    status, _, body = transcribe_raw(port, {"language": "zh", "prompt": "重复的提示词 " * 3000,
                                            "response_format": "verbose_json"})
    assert status == 200, body
    assert time.time() - started < 30
    from whisper_ft.decoding.batched import MIN_NEW_TOKENS, TOKENS_PER_SECOND

    tokens = sum(len(s["tokens"]) for s in json.loads(body)["segments"])
    assert tokens <= MIN_NEW_TOKENS + TOKENS_PER_SECOND * 2  # a 2 s clip's budget


def test_prompt_tokens_keep_the_end(tiny_ct2):
    from whisper_ft.decoding.backend import load_backend
    from whisper_ft.decoding.batched import MAX_PROMPT_TOKENS, _tokenizer, prompt_tokens

    backend = load_backend(str(tiny_ct2), kind="ctranslate2", compute_type="float32", threads=1)
    tok = _tokenizer(backend.ct2, "zh", "transcribe")
    long = "first " + "x" * 2000 + " last words"
    tokens = prompt_tokens(tok, long)
    assert len(tokens) == MAX_PROMPT_TOKENS and tok.decode(tokens).endswith("last words")
    assert prompt_tokens(tok, "short") == tok.encode(" short")


def _slow_upload(port, body: bytes, ctype: str, head_bytes: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(60)
    head = (f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nAuthorization: Bearer {API_KEY}\r\n\r\n").encode()
    sock.sendall(head + body[:head_bytes])
    return sock


def _response(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
            data.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0] if b"content-length: " in data else 0):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1] or b"{}")


@pytest.mark.slow
def test_stalled_and_trickling_uploads_time_out(tiny_ct2, monkeypatch):
    import whisper_ft.serve.app as serve_app

    monkeypatch.setattr(serve_app, "STALL_SECONDS", 1.0)
    body, ctype = multipart({"language": "zh"}, ("slow.wav", wav_bytes(2.0)))
    with running_server([tiny_ct2], api_key=API_KEY, upload_timeout=3.0, max_concurrency=1) as (port, app):
        stalled = _slow_upload(port, body, ctype, 200)
        started = time.time()
        status, err = _response(stalled)
        assert status == 408 and err["error"]["code"] == "upload_timeout" and time.time() - started < 5
        trickle = _slow_upload(port, body, ctype, 200)
        started = time.time()
        for i in range(200, 400):  # one byte every 0.3 s: never stalls, but never finishes in time
            if select.select([trickle], [], [], 0.3)[0] or time.time() - started > 10:
                break  # the server answered
            trickle.sendall(body[i:i + 1])
        assert time.time() - started < 6
        status, err = _response(trickle)
        assert status == 408 and "--upload_timeout" in err["error"]["message"]
        for s in (stalled, trickle):
            s.close()
        assert _wait_for(lambda: _no_uploads_left(app) and app.state.uploading == 0 and app.state.in_flight == 0)
        assert transcribe_raw(port, {"language": "zh"})[0] == 200


@pytest.mark.slow
def test_client_that_leaves_mid_decode_stops_costing(guarded):
    port, app = guarded
    before = json.loads(get(port, "/health", AUTH)[1])
    body, ctype = multipart({"language": "zh"}, ("long.wav", wav_bytes(540.0)))  # about 15 s of decoding
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall((f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
                  f"Content-Length: {len(body)}\r\nAuthorization: Bearer {API_KEY}\r\n\r\n").encode() + body)
    assert _wait_for(lambda: app.state.in_flight == 1, timeout=30)
    time.sleep(1.0)  # decoding has started
    sock.close()
    left = time.time()
    assert _wait_for(lambda: json.loads(get(port, "/health", AUTH)[1])["cancelled"] == before["cancelled"] + 1,
                     timeout=10)
    assert time.time() - left < 5
    assert _wait_for(lambda: app.state.in_flight == 0 and _no_uploads_left(app))
    assert transcribe_raw(port, {"language": "zh"})[0] == 200


@pytest.mark.slow
def test_other_hosts_and_origins_are_refused(tiny_ct2):
    with running_server([tiny_ct2]) as (port, _):
        body, ctype = multipart({"language": "zh"}, ("a.wav", wav_bytes()))
        # DNS rebinding: a hostile name resolving to 127.0.0.1
        status, _, raw = post(port, "/v1/audio/transcriptions", body, ctype, {"Host": f"rebind.example:{port}"})
        assert_error(status, raw, 400, None, "rebind.example", "--allowed_hosts")
        assert get(port, "/health", {"Host": "evil.example"})[0] == 400
        # a page on another origin posting audio (a "simple" request: no preflight)
        status, _, raw = post(port, "/v1/audio/transcriptions", body, ctype, {"Origin": "https://evil.example"})
        err = assert_error(status, raw, 403, None, "https://evil.example", "--cors_origins")
        assert err["code"] == "origin_not_allowed"
        assert post(port, "/v1/audio/transcriptions", body, ctype, {"Origin": "null"})[0] == 403
        # the built-in page (same origin), localhost by name, and clients without Origin work
        assert post(port, "/v1/audio/transcriptions", body, ctype, {"Origin": f"http://127.0.0.1:{port}"})[0] == 200
        assert post(port, "/v1/audio/transcriptions", body, ctype, {"Host": f"localhost:{port}"})[0] == 200
        assert get(port, "/", {"Host": f"[::1]:{port}"})[0] == 200
    with running_server([tiny_ct2], cors_origins=("https://app.example",), allowed_hosts=("asr.internal",)) as (port, _):
        status, headers, _ = post(port, "/v1/audio/transcriptions", body, ctype, {"Origin": "https://app.example"})
        assert status == 200 and headers.get("access-control-allow-origin") == "https://app.example"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("OPTIONS", "/v1/audio/transcriptions", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization"})
        r = conn.getresponse()
        assert r.status == 200 and r.getheader("access-control-allow-origin") == "https://app.example"
        conn.close()
        assert post(port, "/v1/audio/transcriptions", body, ctype, {"Origin": "https://evil.example"})[0] == 403
        assert get(port, "/health", {"Host": f"asr.internal:{port}"})[0] == 200


def _serve(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "whisper_ft", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def test_start_up_refusals_come_before_loading(tiny_ct2):
    proc = _serve("--model_path", str(tiny_ct2), "--api_key", "clé-secrète", "--port", str(free_port()))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and err.strip().splitlines()[-1].startswith("error: --api_key must be ASCII")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _serve("--model_path", str(tiny_ct2), "--port", str(port))
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "cannot listen on 127.0.0.1:" in err and "--port" in err
    assert "serving" not in err and "Traceback" not in err


@pytest.mark.slow
def test_sigterm_to_the_group_during_a_decode_exits_in_seconds(tiny_ct2, tmp_path):
    port = free_port()
    proc = _serve("--model_path", str(tiny_ct2), "--port", str(port), "--language", "zh", "--cpu_threads", "1",
                  "--long_batch_size", "1")
    try:
        assert _wait_for(lambda: _port_open(port) or proc.poll() is not None, timeout=120) and proc.poll() is None
        body, ctype = multipart({"language": "zh"}, ("long.wav", wav_bytes(900.0)))
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall((f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
        time.sleep(3.0)  # uploaded and decoding
        os.killpg(proc.pid, signal.SIGTERM)
        started = time.time()
        _, err = proc.communicate(timeout=30)
        took = time.time() - started
        sock.close()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert took < 8, err
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
