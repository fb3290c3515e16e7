"""Soak test of `whisper-ft serve` under hostile load: N clients for several minutes, mixing

- ``good``: a real clip (../shared/audio and the AISHELL sample, else generated tones), expect 200;
- ``corrupt``: random bytes named .wav, expect 400;
- ``nan``: a float wav of NaN samples, expect 400;
- ``oversized``: a small file declaring far more audio than --max_audio_seconds (an hour of FLAC
  silence, or a wav header claiming 1 Hz), expect 413/400 without decoding it;
- ``stall``: headers and part of the body, then nothing, expect 408 after the stall timeout;
- ``leave``: a long file uploaded, the client disconnects 2 s into its decoding.

It reports requests by kind and status, p50/p95 latency of the good requests, the server's RSS
(after warm-up, peak, and at the end once the load stopped: no growth means nothing leaks), and
files left in the server's temp folder (must be none). Prints a Markdown table and writes JSON
(with the command, commit and date) to benchmarks/results/serve_soak.json.

    .venv/bin/python benchmarks/serve_soak.py --clients 64 --minutes 3 --model_path base
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from serve import free_port, load_clips  # noqa: E402
from serve import rss_mb as rss  # noqa: E402

KINDS = {"good": 50, "corrupt": 10, "nan": 10, "oversized": 10, "stall": 10, "leave": 10}


def _wav(audio: np.ndarray, sr: int = 16_000, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def payloads(seed: int) -> dict[str, list[tuple[str, bytes, str | None]]]:
    """(file name, bytes, language) per kind."""
    rng = np.random.default_rng(seed)
    try:
        good = [(Path(c["path"]).name, c["bytes"], c["language"]) for c in load_clips(40)]
    except SystemExit:
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16_000 * 4) / 16_000)).astype(np.float32)
        good = [("tone.wav", _wav(tone), "en")]
    one_hertz = bytearray(_wav(np.zeros(50_000, np.float32), sr=8_000))
    one_hertz[24:28], one_hertz[28:32] = struct.pack("<I", 1), struct.pack("<I", 2)
    hour = _wav(np.zeros((48_000 * 3600, 2), np.float32), sr=48_000, subtype="PCM_16", fmt="FLAC")
    import soundfile as sf

    first = sf.read(io.BytesIO(good[0][1]), dtype="float32", always_2d=True)
    five_min = np.tile(first[0].mean(axis=1), int(np.ceil(300 * first[1] / len(first[0]))))[: 300 * first[1]]
    return {
        "good": good,
        "corrupt": [("broken.wav", rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes(), "en")],
        "nan": [("nan.wav", _wav(np.full(16_000, np.nan, np.float32), subtype="FLOAT"), "en")],
        "oversized": [("one-hertz.wav", bytes(one_hertz), "en"), ("hour.flac", hour, "en")],
        "stall": [("stall.wav", good[0][1], good[0][2])],
        "leave": [("long.wav", _wav(five_min, sr=first[1]), good[0][2])],
        "warm_long": [("warm.wav", _wav(five_min[: 70 * first[1]], sr=first[1]), good[0][2])],
    }


def body_for(name: str, data: bytes, language: str | None) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                   for k, v in {"language": language}.items() if v)
    body = (head + f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def send(port: int, kind: str, payload, timeout: float) -> tuple[str, float]:
    """One request of ``kind``; returns (outcome, seconds)."""
    body, ctype = body_for(*payload)
    head = (f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            if kind == "stall":
                sock.sendall(head + body[: len(body) // 3])
            else:
                sock.sendall(head + body)
            if kind == "leave":
                time.sleep(2.0)
                return "left", time.perf_counter() - started
            data = b""
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    return "closed", time.perf_counter() - started
                data += chunk
            while chunk := sock.recv(65536):
                data += chunk
        return data.split(b" ", 2)[1].decode(), time.perf_counter() - started
    except OSError as exc:
        return type(exc).__name__, time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--model_path", default="base")
    p.add_argument("--threads", type=int, default=2, help="--cpu_threads of the server")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "serve_soak.json")
    args = p.parse_args()

    data = payloads(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="soak-tmp-"))
    port = free_port()
    cmd = [sys.executable, "-m", "whisper_ft", "serve", "--model_path", args.model_path, "--port", str(port),
           "--cpu_threads", str(args.threads), "--max_audio_seconds", "1800"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp)},
                            start_new_session=True)
    stderr_lines: list[str] = []
    threading.Thread(target=lambda: stderr_lines.extend(proc.stderr), daemon=True).start()
    deadline = time.time() + 300
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None:
            sys.exit("the server did not start:\n" + "".join(stderr_lines))
        time.sleep(0.2)
    # warm-up: every path once (a short clip, a long file through VAD + pieces, each refusal), so the
    # baseline holds the loaded VAD model and the allocator's steady state, not a cold start
    send(port, "good", data["good"][0], 600)
    send(port, "long", data["warm_long"][0], 900)
    for kind in ("corrupt", "nan", "oversized"):
        send(port, kind, data[kind][0], 600)
    rss_start = rss(proc.pid)[0]

    outcomes: dict[str, Counter] = defaultdict(Counter)
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.time() + args.minutes * 60
    peak = [rss_start]

    def client(i: int) -> None:
        rng = random.Random(args.seed * 1000 + i)
        kinds, weights = zip(*KINDS.items())
        while time.time() < stop_at:
            kind = rng.choices(kinds, weights)[0]
            outcome, seconds = send(port, kind, rng.choice(data[kind]), timeout=900)
            with lock:
                outcomes[kind][outcome] += 1
                if kind == "good" and outcome == "200":
                    latencies.append(seconds)

    def sample() -> None:
        while time.time() < stop_at + 30 and proc.poll() is None:
            peak[0] = max(peak[0], rss(proc.pid)[0])
            time.sleep(0.5)

    threading.Thread(target=sample, daemon=True).start()
    started = time.time()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - started
    time.sleep(20)  # the last stalled uploads time out, decodes of departed clients stop
    rss_end, hwm = rss(proc.pid)
    leftovers = [str(f.relative_to(tmp)) for f in tmp.glob("whisper-ft-serve-*/*")]  # the server's uploads
    os.killpg(proc.pid, signal.SIGTERM)
    t0 = time.time()
    proc.wait(60)
    exit_seconds = time.time() - t0

    lat = sorted(latencies)
    pct = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    result = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "commit": commit,
        "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPU cores", "server": " ".join(cmd[2:]),
        "clients": args.clients, "seconds": round(wall, 1),
        "requests": {k: dict(v) for k, v in sorted(outcomes.items())},
        "good_served": len(lat), "good_p50_s": round(pct(0.5), 2), "good_p95_s": round(pct(0.95), 2),
        "rss_mb": {"after_warmup": round(rss_start), "peak": round(max(peak[0], hwm)), "end": round(rss_end)},
        "temp_leftovers": leftovers, "sigterm_exit_seconds": round(exit_seconds, 1), "exit_code": proc.returncode,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print("| kind | requests | outcomes (HTTP status) |\n|---|---|---|")
    for kind, counter in sorted(outcomes.items()):
        print(f"| {kind} | {sum(counter.values())} | {', '.join(f'{k}: {v}' for k, v in sorted(counter.items()))} |")
    print(f"\ngood requests served: {len(lat)}, p50 {pct(0.5):.2f} s, p95 {pct(0.95):.2f} s over {wall:.0f} s "
          f"with {args.clients} clients")
    print(f"server RSS: {rss_start:.0f} MB after warm-up, peak {max(peak[0], hwm):.0f} MB, {rss_end:.0f} MB at the end")
    print(f"temp files left: {len(leftovers)}; SIGTERM: exit {proc.returncode} after {exit_seconds:.1f} s")
    print(f"(commit {commit}, {result['date']}; JSON: {args.output})")


if __name__ == "__main__":
    main()
