"""Load benchmark of `whisper-ft serve`: N concurrent clients sending real clips to the real server.

For each concurrency level (default 1, 4, 16, 64) it measures requests/s, p50/p95 latency,
audio-seconds per second, errors (must be 0), the server's peak RSS and the mean batch size the
server formed, for

- ``packed``: ``whisper-ft serve`` as shipped (batched, and short clips of one language share 30 s windows);
- ``batched``: ``whisper-ft serve --no_pack`` (requests within --batch_window_ms decoded together, a window each);
- ``sequential``: the same server decoding one request at a time (``--batch_window_ms 0 --max_batch_size 1``);
- ``faster-whisper``: ``WhisperModel.transcribe`` called directly, one clip at a time, no server.

Clips: ``../shared/audio`` (24 zh/en clips) and the first clips of ``../shared/aishell_sample/test.jsonl``,
each sent with its language. Prints a Markdown table and writes JSON to benchmarks/results/.

    .venv/bin/python benchmarks/serve.py --requests 32 --threads 2
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def load_clips(n_aishell: int) -> list[dict]:
    clips = []
    manifest = SHARED / "audio" / "manifest.jsonl"
    if manifest.is_file():
        for line in manifest.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            clips.append({"path": SHARED / "audio" / r["audio"], "language": r["language"], "duration": r["duration"]})
    aishell = SHARED / "aishell_sample" / "test.jsonl"
    if aishell.is_file():
        for line in aishell.read_text(encoding="utf-8").splitlines()[:n_aishell]:
            r = json.loads(line)
            clips.append({"path": aishell.parent / r["audio"]["path"], "language": r.get("language", "zh"),
                          "duration": r["duration"]})
    if not clips:
        sys.exit(f"no clips: needs {SHARED}/audio or {SHARED}/aishell_sample")
    for c in clips:
        c["bytes"] = Path(c["path"]).read_bytes()
    return clips


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_clip(port: int, clip: dict, model: str) -> tuple[bool, float, str]:
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{model}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="language"\r\n\r\n{clip["language"]}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{Path(clip["path"]).name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + clip["bytes"] + f"\r\n--{boundary}--\r\n".encode()
    started = time.perf_counter()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
        conn.request("POST", "/v1/audio/transcriptions", body=body,
                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        r = conn.getresponse()
        data = r.read()
        conn.close()
        ok = r.status == 200
        text = json.loads(data)["text"] if ok else data.decode("utf-8", "replace")[:200]
    except Exception as exc:  # noqa: BLE001 - counted as an error
        ok, text = False, f"{type(exc).__name__}: {exc}"
    return ok, time.perf_counter() - started, text


def get_json(port: int, path: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    data = json.loads(conn.getresponse().read())
    conn.close()
    return data


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


def summarize(mode: str, concurrency: int, results: list[tuple[bool, float, str]], wall: float, audio: float, **extra) -> dict:
    lat = sorted(r[1] for r in results if r[0])
    errors = sum(1 for r in results if not r[0])
    q = (lambda p: lat[min(len(lat) - 1, int(round(p * (len(lat) - 1))))] if lat else float("nan"))
    return {"mode": mode, "concurrency": concurrency, "requests": len(results), "errors": errors,
            "wall_s": round(wall, 2), "rps": round(len(results) / wall, 3), "p50_s": round(q(0.5), 2),
            "p95_s": round(q(0.95), 2), "audio_s_per_s": round(audio / wall, 2), **extra}


def run_server_mode(mode: str, args, clips: list[dict], levels: list[int]) -> list[dict]:
    port = free_port()
    cmd = [sys.executable, "-m", "whisper_ft", "serve", "--model_path", args.model, "--port", str(port),
           "--beam_size", str(args.beam_size), "--cpu_threads", str(args.threads), "--max_concurrency", "256",
           "--compute_type", args.compute_type]
    if mode == "sequential":
        cmd += ["--batch_window_ms", "0", "--max_batch_size", "1"]
    else:
        cmd += ["--batch_window_ms", str(args.batch_window_ms), "--max_batch_size", str(args.max_batch_size)]
        if mode == "batched":
            cmd += ["--no_pack"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rows = []
    try:
        deadline = time.time() + 300
        while True:
            try:
                model = get_json(port, "/health")["models"][0]
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"server did not start: {proc.stderr.read()[-2000:]}") from None
                time.sleep(0.5)
        post_clip(port, clips[0], model)  # warm-up
        for c in levels:
            n = max(args.requests, c)
            batch = [clips[i % len(clips)] for i in range(n)]
            before = get_json(port, "/health")
            peak = [0.0]
            stop = threading.Event()

            def sample(stop=stop, peak=peak):
                while not stop.is_set():
                    peak[0] = max(peak[0], rss_mb(proc.pid)[0])
                    stop.wait(0.2)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            started = time.perf_counter()
            with ThreadPoolExecutor(c) as pool:
                results = list(pool.map(lambda clip: post_clip(port, clip, model), batch))
            wall = time.perf_counter() - started
            stop.set()
            sampler.join()
            after = get_json(port, "/health")
            sizes = {int(k): v - before["batches"].get(k, 0) for k, v in after["batches"].items()}
            n_batches = sum(v for v in sizes.values() if v > 0)
            mean_batch = sum(k * v for k, v in sizes.items() if v > 0) / n_batches if n_batches else 0.0
            row = summarize(mode, c, results, wall, sum(cl["duration"] for cl in batch),
                            server_rss_mb=round(peak[0]), mean_batch=round(mean_batch, 2), max_batch=max(
                                (k for k, v in sizes.items() if v > 0), default=0))
            bad = [r[2] for r in results if not r[0]][:3]
            if bad:
                row["error_samples"] = bad
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return rows


def run_direct(args, clips: list[dict]) -> dict:
    """faster-whisper itself, one clip at a time (the same CTranslate2 folder, threads and beam)."""
    from faster_whisper import WhisperModel

    from whisper_ft.core.audio import load_audio
    from whisper_ft.decoding.ct2_loading import ensure_ct2_folder

    model = WhisperModel(str(ensure_ct2_folder(args.model)), device="cpu", compute_type=args.compute_type,
                         cpu_threads=args.threads)
    n = max(args.requests, 1)
    batch = [clips[i % len(clips)] for i in range(n)]
    audios = [load_audio(c["path"]) for c in batch]
    list(model.transcribe(audios[0], language=batch[0]["language"], beam_size=args.beam_size)[0])  # warm-up
    results = []
    started = time.perf_counter()
    for clip, audio in zip(batch, audios):
        t = time.perf_counter()
        segments, _ = model.transcribe(audio, language=clip["language"], beam_size=args.beam_size)
        text = "".join(s.text for s in segments)
        results.append((True, time.perf_counter() - t, text))
    wall = time.perf_counter() - started
    row = summarize("faster-whisper", 1, results, wall, sum(c["duration"] for c in batch),
                    server_rss_mb=round(rss_mb(os.getpid())[1]), mean_batch=1.0, max_batch=1)
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def markdown(rows: list[dict]) -> str:
    head = "| mode | clients | requests | errors | req/s | p50 s | p95 s | audio s/s | mean batch | server RSS MB |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['concurrency']} | {r['requests']} | {r['errors']} | {r['rps']:.2f} | "
                     f"{r['p50_s']:.2f} | {r['p95_s']:.2f} | {r['audio_s_per_s']:.2f} | {r['mean_batch']:.2f} | "
                     f"{r['server_rss_mb']} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="base")
    p.add_argument("--concurrency", default="1,4,16,64", type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--baseline_concurrency", default=None, type=lambda s: [int(x) for x in s.split(",")],
                   help="levels for the batched/sequential rows (default: --concurrency); keeps the run short")
    p.add_argument("--requests", type=int, default=32, help="requests per level (at least the level's clients)")
    p.add_argument("--modes", default="packed,batched,sequential,faster-whisper")
    p.add_argument("--beam_size", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch_window_ms", type=float, default=30.0)
    p.add_argument("--compute_type", default="int8", help="every row's (default int8; auto: the server's calibrated choice)")
    p.add_argument("--max_batch_size", type=int, default=16)
    p.add_argument("--aishell", type=int, default=40, help="clips taken from aishell_sample/test.jsonl")
    p.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "serve.json")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    clips = load_clips(args.aishell)
    load_before = os.getloadavg()
    rows = []
    for mode in args.modes.split(","):
        if mode == "faster-whisper":
            rows.append(run_direct(args, clips))
        elif mode in ("batched", "packed", "sequential"):
            levels = args.concurrency if mode == "packed" else (args.baseline_concurrency or args.concurrency)
            rows += run_server_mode(mode, args, clips, levels)
    table = markdown(rows)
    note = (f"{len(clips)} clips ({sum(c['duration'] for c in clips):.0f} s), model {args.model}, beam {args.beam_size}, "
            f"{args.threads} threads, {platform.processor() or platform.machine()} ({os.cpu_count()} cores visible); "
            f"load average {[round(x, 2) for x in load_before]} -> {[round(x, 2) for x in os.getloadavg()]}")
    print(table)
    print(note)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(args.output.name + ".tmp")
    tmp.write_text(json.dumps({"rows": rows, "note": note, "args": {k: str(v) for k, v in vars(args).items()}}, indent=2))
    tmp.replace(args.output)


if __name__ == "__main__":
    main()
