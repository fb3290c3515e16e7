"""Live captions under load: N concurrent WebSocket streams of real speech, each sent in real time
(100 ms PCM16 pieces, each sent once a microphone would have it), to `whisper-ft serve` (its
``/v1/realtime?intent=transcription``).

For `whisper-ft serve` as shipped (it packs: short clips of one language from different requests
share a 30 s window) and with ``--no_pack``, per level (default 1, 4 and 8 streams) it measures, over every
utterance of every stream:

- final latency: from the end of speech (the server's ``speech_stopped.audio_end_ms``, as sent in
  real time) to the utterance's ``completed`` event; it includes the 500 ms of silence the VAD waits
  for, as a user sees it;
- first partial: from the start of speech to the utterance's first partial text;
- real-time factor: seconds the server's decoding thread was busy (``/health`` busy_seconds) per
  second of audio streamed (partial decodes included: they fill the decoder's idle time, so with
  several streams it is busy most of the time; whether it keeps up shows in the final latency);
- error rate of the final texts against the clips' references (CER for zh, WER for en), and
  errors (must be 0).

Streams alternate English and Mandarin (session language given), each the `../shared/audio`
clips of its language from its own starting point, joined with 1 s pauses, until ``--seconds``.
Prints a Markdown table and writes JSON (command, commit, date, machine) to benchmarks/results/.

    flock /tmp/team/heavy.lock .venv/bin/python benchmarks/live_captions.py --threads 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from serve import free_port, get_json, rss_mb  # noqa: E402

from tests.live_client import stream  # noqa: E402

SHARED_AUDIO = REPO.parent / "shared" / "audio"
PAUSE_SECONDS = 1.0
PREFIX_PADDING = 0.3  # the server's default speech_started padding (seconds before speech)


def load_streams(n: int, seconds: float) -> list[dict]:
    """``n`` streams: {language, audio, references}."""
    from whisper_ft.core.audio import load_audio

    manifest = SHARED_AUDIO / "manifest.jsonl"
    if not manifest.is_file():
        sys.exit(f"needs real speech clips at {SHARED_AUDIO}")
    by_lang: dict[str, list[dict]] = {}
    for line in manifest.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        r["samples"] = load_audio(SHARED_AUDIO / r["audio"])
        by_lang.setdefault(r["language"], []).append(r)
    streams = []
    pause = np.zeros(int(PAUSE_SECONDS * 16_000), np.float32)
    for i in range(n):
        lang = ("en", "zh")[i % 2]
        clips = by_lang[lang]
        pieces, refs, total, k = [], [], 0.0, i // 2 * 3
        while total < seconds:
            clip = clips[k % len(clips)]
            pieces += [clip["samples"], pause]
            refs.append(clip["text"])
            total += clip["duration"] + PAUSE_SECONDS
            k += 1
        streams.append({"language": lang, "audio": np.concatenate(pieces), "references": refs})
    return streams


def utterance_times(run) -> tuple[list[float], list[float]]:
    """(final latencies, first-partial delays) of one stream's utterances, in seconds."""
    finals, firsts = [], []
    done = {e["item_id"]: e["_t"] for e in run.of("conversation.item.input_audio_transcription.completed")}
    partial_types = ("conversation.item.input_audio_transcription.partial",
                     "conversation.item.input_audio_transcription.delta")
    for stop in run.of("input_audio_buffer.speech_stopped"):
        if stop["item_id"] in done:
            finals.append(done[stop["item_id"]] - stop["audio_end_ms"] / 1000)
    for start in run.of("input_audio_buffer.speech_started"):
        first = [e["_t"] for e in run.events if e.get("item_id") == start["item_id"] and e["type"] in partial_types]
        if first:
            firsts.append(min(first) - (start["audio_start_ms"] / 1000 + (PREFIX_PADDING if start["audio_start_ms"] else 0)))
    return finals, firsts


def error_rate(streams: list[dict], runs: list) -> dict:
    from whisper_ft.core.scoring import score

    out = {}
    for lang, metric in (("en", "wer"), ("zh", "cer")):
        pairs = [(" ".join(s["references"]), " ".join(t.strip() for t in r.transcripts()))
                 for s, r in zip(streams, runs) if s["language"] == lang]
        if pairs:
            result = score([p[0] for p in pairs], [p[1] for p in pairs], metric=metric, language=lang)
            out[lang] = {"metric": metric, "error_rate": round(100 * result.error_rate, 2)}
    return out


def pct(values: list[float], p: float) -> float:
    return round(float(np.percentile(values, p)), 2) if values else float("nan")


def run_level(port: int, n: int, seconds: float, pid: int) -> dict:
    streams = load_streams(n, seconds)
    before = get_json(port, "/health")
    runs: list = [None] * n
    peak = [0.0]
    stop = threading.Event()

    def watch_rss():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb(pid)[0])
            time.sleep(0.5)

    def one(i: int):
        time.sleep(0.37 * i)  # streams do not start in lockstep
        s = streams[i]
        runs[i] = stream(port, s["audio"], speed=1.0, session={"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 16000}, "transcription": {"language": s["language"]}}}}, wait=300)

    watcher = threading.Thread(target=watch_rss, daemon=True)
    watcher.start()
    started = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    stop.set()
    after = get_json(port, "/health")
    finals, firsts, errors, utterances = [], [], 0, 0
    for run in runs:
        f, p = utterance_times(run)
        finals += f
        firsts += p
        errors += len(run.errors()) + len(run.of("conversation.item.input_audio_transcription.failed"))
        errors += run.close_code not in (None, 1000)
        utterances += len(run.transcripts())
    audio = sum(r.audio_seconds for r in runs)
    busy = after["busy_seconds"] - before["busy_seconds"]
    return {"streams": n, "audio_s": round(audio, 1), "wall_s": round(wall, 1), "utterances": utterances,
            "errors": errors, "final_p50_s": pct(finals, 50), "final_p90_s": pct(finals, 90),
            "final_max_s": round(max(finals), 2) if finals else float("nan"),
            "first_partial_p50_s": pct(firsts, 50), "first_partial_p90_s": pct(firsts, 90),
            "utterances_with_partial": f"{len(firsts)}/{utterances}", "rtf": round(busy / audio, 3),
            "decode_busy": round(busy / wall, 2), "peak_rss_mb": round(peak[0]),
            "accuracy": error_rate(streams, runs)}


def markdown(rows: list[dict]) -> str:
    head = ("| server | streams | final latency p50 / p90 / max (s) | first partial p50 / p90 (s) | utterances with a "
            "partial | RTF | decoder busy | WER en / CER zh % | errors | server RSS |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        acc = r["accuracy"]
        lines.append(f"| {r['mode']} | {r['streams']} | {r['final_p50_s']} / {r['final_p90_s']} / {r['final_max_s']} | "
                     f"{r['first_partial_p50_s']} / {r['first_partial_p90_s']} | {r['utterances_with_partial']} | "
                     f"{r['rtf']} | {round(100 * r['decode_busy'])}% | "
                     f"{acc.get('en', {}).get('error_rate', '-')} / {acc.get('zh', {}).get('error_rate', '-')} | "
                     f"{r['errors']} | {r['peak_rss_mb']} MB |")
    return "\n".join(lines)


MODES = {"default": [], "no_pack": ["--no_pack"]}  # `whisper-ft serve` as shipped (packs); with --no_pack


def run_mode(mode: str, args, levels: list[int]) -> tuple[list[dict], list[str]]:
    port = free_port()
    cmd = [sys.executable, "-m", "whisper_ft", "serve", "--model_path", args.model, "--port", str(port),
           "--cpu_threads", str(args.threads), "--compute_type", args.compute_type, "--beam_size", str(args.beam_size),
           "--max_live_sessions", str(max(levels)), "--log_level", "warning", *MODES[mode]]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    rows = []
    try:
        deadline = time.time() + 600
        while True:
            try:
                get_json(port, "/health")
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"server did not start: {proc.stderr.read()[-2000:]}") from None
                time.sleep(0.5)
        run_level(port, 1, 6.0, proc.pid)  # warm-up
        for n in levels:
            rows.append({"mode": mode, **run_level(port, n, args.seconds, proc.pid)})
            print(markdown(rows[-1:]).splitlines()[-1], file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return rows, cmd


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="base")
    p.add_argument("--streams", default="1,4,8", help="concurrency levels")
    p.add_argument("--modes", default="default,no_pack", help=f"server configurations: {', '.join(MODES)}")
    p.add_argument("--seconds", type=float, default=45.0, help="audio per stream (clips and 1 s pauses)")
    p.add_argument("--threads", type=int, default=2, help="--cpu_threads of the server")
    p.add_argument("--beam_size", type=int, default=5)
    p.add_argument("--compute_type", default="int8")
    p.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "live_captions.json")
    args = p.parse_args()
    from inference import machine_info

    levels = [int(x) for x in args.streams.split(",")]
    load_before = os.getloadavg()
    rows, servers = [], []
    for mode in args.modes.split(","):
        mode_rows, cmd = run_mode(mode, args, levels)
        rows += mode_rows
        servers.append(" ".join(cmd[1:]))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "whisper_ft"], capture_output=True, text=True,
                                cwd=REPO).stdout.strip())
    note = (f"{args.model} ({args.compute_type}, beam {args.beam_size}), {args.threads} threads, "
            f"{args.seconds:g} s of speech per stream in real time; load average {[round(x, 2) for x in load_before]} "
            f"-> {[round(x, 2) for x in os.getloadavg()]}")
    print(markdown(rows))
    print(note)
    out = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "servers": servers,
           "commit": commit + ("+uncommitted" if dirty else ""),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "machine": machine_info(args.threads), "platform": platform.platform(), "note": note, "rows": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(args.output.name + ".tmp")
    tmp.write_text(json.dumps(out, indent=2, ensure_ascii=False))
    tmp.replace(args.output)


if __name__ == "__main__":
    main()
