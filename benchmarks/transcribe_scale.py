"""Measure `whisper-ft transcribe` on one machine: --engine local against --engine ray with 1 and 2
workers, on the same hour of real speech (the AISHELL test speaker's clips, round after round, as
a list of symbolic links: each round's links are inputs of their own, no audio is copied).

Each configuration is the real CLI in a process of its own (its own session), started when the
load average is under --max_load (waiting at most --wait_minutes), one at a time, OMP_NUM_THREADS=1
(CTranslate2's threads are set by the command). While it runs, the RSS of every process of its
tree (driver, Ray's services, Ray Data's actors and tasks, the model workers) is sampled every
0.5 s. Reported: wall time of the whole process, hours of audio per hour, Ray's start
(``ray.init``) and the time to the first worker ready, peak RSS per process, CPU seconds per kind
of process (where the cores went), and whether every configuration wrote the same text for every
file. Run it alone (`flock /tmp/team/heavy.lock`).

    flock /tmp/team/heavy.lock .venv/bin/python benchmarks/transcribe_scale.py --minutes 60 --out /tmp/scale_bench
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "aishell_sample"
CONFIGS = {
    "local": ["--engine", "local"],
    "ray-1": ["--engine", "ray", "--workers", "1"],
    "ray-2": ["--engine", "ray", "--workers", "2"],
}


def build_set(out: Path, minutes: float) -> tuple[Path, int, float]:
    """A list of links to the test speaker's clips, round after round, until ``minutes`` of audio."""
    rows = [json.loads(line) for line in (SHARED / "test.jsonl").read_text(encoding="utf-8").splitlines() if line]
    links = out / "set"
    shutil.rmtree(links, ignore_errors=True)
    paths, total = [], 0.0
    for n, row in enumerate(itertools.cycle(rows)):
        if total >= minutes * 60:
            break
        source = (SHARED / row["audio"]["path"]).resolve()
        link = links / f"r{n // len(rows)}" / source.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source)
        paths.append(str(link))
        total += row["duration"]
    listing = out / f"aishell_test_{minutes:g}min.txt"
    listing.write_text("\n".join(paths) + "\n", encoding="utf-8")
    print(f"set: {listing}: {len(paths)} clips, {total / 60:.1f} min", file=sys.stderr)
    return listing, len(paths), total


def wait_for_quiet(max_load: float, wait_minutes: float) -> float:
    deadline = time.monotonic() + wait_minutes * 60
    while True:
        load = os.getloadavg()[0]
        if load < max_load or time.monotonic() > deadline:
            return load
        time.sleep(10)


def kind(proc) -> str:
    title = " ".join(proc.cmdline())
    if title.startswith("ray::MapWorker"):
        return "model worker"
    if title.startswith("ray::") and any(x in title for x in ("StatsActor", "ActorLocationTracker", "Autoscal")):
        return "Ray Data's own actors"
    if title.startswith("ray::"):
        return "Ray task workers (audio reading; idle workers)"
    if "whisper_ft" in title and "transcribe" in title:
        return "driver"
    return "Ray services (gcs, raylet, agents, monitors)"


def run_one(name: str, args: list[str], listing: Path, out: Path, max_load: float, wait_minutes: float) -> dict:
    import psutil

    load = wait_for_quiet(max_load, wait_minutes)
    target = out / name
    shutil.rmtree(target, ignore_errors=True)
    cmd = [sys.executable, "-m", "whisper_ft", "transcribe", str(listing), "--output_dir", str(target),
           "--language", "zh", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    with open(out / f"{name}.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        peak: dict[int, tuple[str, int]] = {}
        cpu: dict[int, tuple[str, float]] = {}  # last seen user + system seconds of each process
        peak_total = 0
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            total = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for p in procs:
                try:
                    rss = p.memory_info().rss
                    k = kind(p)
                    times = p.cpu_times()
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                cpu[p.pid] = (k, times.user + times.system)
                total += rss
                if rss > peak.get(p.pid, ("", 0))[1]:
                    peak[p.pid] = (k, rss)
            peak_total = max(peak_total, total)
            time.sleep(0.5)
        stdout = proc.communicate()[0].decode()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}): see {out / f'{name}.log'}")
    summary = json.loads((target / "summary.json").read_text())
    run = summary["this_run"]
    by_kind: dict[str, list[int]] = {}
    for k, rss in peak.values():
        by_kind.setdefault(k, []).append(rss)
    cpu_by_kind: dict[str, float] = {}  # CPU seconds (to the last sample: a process's last 0.5 s is missed)
    for k, seconds in cpu.values():
        cpu_by_kind[k] = cpu_by_kind.get(k, 0.0) + seconds
    return {
        "config": name, "command": " ".join(["whisper-ft", *cmd[3:]]), "load_at_start": round(load, 2),
        "load_at_end": round(os.getloadavg()[0], 2), "process_wall_seconds": round(wall, 1),
        "run_wall_seconds": run["wall_seconds"], "audio_hours": summary["audio_hours"],
        "audio_hours_per_hour": round(summary["audio_hours"] * 3600 / wall, 2),
        "audio_hours_per_hour_decoding": run["audio_hours_per_hour"], "workers": run["workers"],
        "cpus_per_worker": run["cpus_per_worker"], "startup_seconds": run["startup_seconds"],
        "ray_init_seconds": run["ray_init_seconds"],
        "peak_rss_mb": {k: [round(v / 2**20) for v in sorted(vs, reverse=True)] for k, vs in by_kind.items()},
        "peak_tree_rss_mb": round(peak_total / 2**20),
        "cpu_seconds": {k: round(v, 1) for k, v in sorted(cpu_by_kind.items(), key=lambda kv: -kv[1])},
        "files": summary["files"],
        "failures": summary["failures"]["files"], "stdout": stdout,
    }


def texts(folder: Path) -> dict[str, str]:
    out = {}
    for part in sorted(folder.glob("part-*.jsonl")):
        for line in part.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            out[r["audio"]["path"]] = r["text"]
    return out


def compare_texts(out: Path, names: list[str]) -> dict:
    first = texts(out / names[0])
    result = {}
    for name in names:
        mine = texts(out / name)
        result[name] = {"files": len(mine), "differ_from_" + names[0]: sum(
            1 for k in set(first) | set(mine) if first.get(k) != mine.get(k))}
    return result


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        cores = os.cpu_count()
    mem = next((int(line.split()[1]) // 2**20 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), None)
    return {"cpu": model, "cores": cores, "memory_gb": mem, "gpu": None,
            "avx512": "avx512f" in flags, "amx": "amx_tile" in flags}


def versions() -> dict:
    out = {}
    for name in ("ray", "ctranslate2", "faster_whisper"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    return out


def stages(n: int, threads: int) -> dict:
    """Where one worker's time goes on ``n`` test clips (in this process, whisper-base int8 on CPU,
    ``threads`` threads): reading the audio (decode + resample), log-mel features and the encoder of
    the packed windows, and the rest of the packed decode (the decoder's beam search, splitting)."""
    import ctranslate2
    import numpy as np

    from whisper_ft.core.audio import load_audio
    from whisper_ft.decoding.backend import load_backend
    from whisper_ft.decoding.batched import Clip
    from whisper_ft.decoding.ct2_loading import ct2_features
    from whisper_ft.decoding.packing import PACK_GAP_SECONDS, packed_audio, plan_packed_windows

    rows = [json.loads(line) for line in (SHARED / "test.jsonl").read_text(encoding="utf-8").splitlines() if line][:n]
    paths = [SHARED / r["audio"]["path"] for r in rows]
    for p in paths:  # the files in the page cache: what is timed is decoding them, not the disk
        p.read_bytes()
    t0 = time.perf_counter()
    audios = [load_audio(p) for p in paths]
    read = time.perf_counter() - t0
    seconds = sum(len(a) for a in audios) / 16_000
    backend = load_backend("base", kind="ctranslate2", device="cpu", compute_type="int8", threads=threads)
    ct2 = backend.ct2
    batch = 16  # as the worker: --batch_size clips per packed call
    windows = []
    for k in range(0, n, batch):
        part = audios[k:k + batch]
        for w in plan_packed_windows([len(a) / 16_000 for a in part], ["zh"] * len(part)):
            windows.append(packed_audio(part, w, PACK_GAP_SECONDS))
    t0 = time.perf_counter()
    feats = [ct2_features(ct2, windows[k:k + batch]) for k in range(0, len(windows), batch)]
    features = time.perf_counter() - t0
    t0 = time.perf_counter()
    for f in feats:
        ct2.engine.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(f)))
    encoder = time.perf_counter() - t0
    t0 = time.perf_counter()
    for k in range(0, n, batch):
        backend.transcribe_clips([Clip(a, "zh") for a in audios[k:k + batch]], beam_size=5, pack=True)
    decode = time.perf_counter() - t0
    rest = max(0.0, decode - features - encoder)
    per_hour = {name: round(seconds / t, 1) for name, t in (("read", read), ("features", features),
                                                               ("encoder", encoder), ("decoder_and_rest", rest),
                                                               ("whole_decode", decode))}
    return {"clips": n, "audio_minutes": round(seconds / 60, 2), "threads": threads, "packed_windows": len(windows),
            "seconds": {"read": round(read, 2), "features": round(features, 2), "encoder": round(encoder, 2),
                        "decoder_and_rest": round(rest, 2), "whole_decode": round(decode, 2)},
            "audio_hours_per_hour": per_hour}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--out", type=Path, default=Path("/tmp/scale_bench"))
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--max_load", type=float, default=1.5)
    ap.add_argument("--wait_minutes", type=float, default=10.0)
    ap.add_argument("--reuse", action="store_true", help="take configurations already measured into --out "
                    "(their <config>.json) instead of running them again")
    ap.add_argument("--stages", type=int, default=0, help="instead: time one worker's stages on this many clips")
    ap.add_argument("--threads", default="1,2", help="--stages: thread counts")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.stages:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True).stdout.strip()
        rows = [stages(a.stages, int(t)) for t in a.threads.split(",")]
        report = {"benchmark": "benchmarks/transcribe_scale.py --stages", "command": " ".join(sys.argv),
                  "commit": commit, "date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine(),
                  "versions": versions(), "stages": rows}
        (a.out / "stages.json").write_text(json.dumps(report, indent=2) + "\n")
        print(f"# {report['date']}, commit {commit}, {report['machine']['cpu']}; {rows[0]['clips']} clips, "
              f"{rows[0]['audio_minutes']} min, {rows[0]['packed_windows']} packed windows; hours of audio per hour")
        print("| threads | read (decode + resample) | features | encoder | decoder and the rest | whole decode |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            h, t = r["audio_hours_per_hour"], r["seconds"]
            print(f"| {r['threads']} | {h['read']} ({t['read']} s) | {h['features']} ({t['features']} s) | "
                  f"{h['encoder']} ({t['encoder']} s) | {h['decoder_and_rest']} ({t['decoder_and_rest']} s) | "
                  f"{h['whole_decode']} ({t['whole_decode']} s) |")
        return
    listing, n_clips, seconds = build_set(a.out, a.minutes)  # the same links again: same paths, same text
    names = a.configs.split(",")
    results = []
    for name in names:
        saved = a.out / f"{name}.json"
        if a.reuse and saved.is_file():  # a configuration measured before (e.g. when a later one failed)
            results.append(json.loads(saved.read_text()))
            continue
        r = run_one(name, CONFIGS[name], listing, a.out, a.max_load, a.wait_minutes)
        r["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                     text=True).stdout.strip()
        r["date"] = time.strftime("%Y-%m-%d %H:%M %Z")
        saved.write_text(json.dumps(r, indent=2, ensure_ascii=False) + "\n")
        print(json.dumps({k: v for k, v in r.items() if k != "stdout"}), file=sys.stderr)
        results.append(r)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    report = {"benchmark": "benchmarks/transcribe_scale.py", "command": " ".join(sys.argv), "commit": commit,
              "date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine(), "versions": versions(),
              "set": {"list": str(listing), "clips": n_clips, "minutes": round(seconds / 60, 2)},
              "results": results, "same_text": compare_texts(a.out, names)}
    (a.out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    base = next((r for r in results if r["config"] == "local"), results[0])
    print(f"# {report['date']}, commit {commit}, {report['machine']['cpu']} ({report['machine']['cores']} cores); "
          f"{n_clips} clips, {seconds / 60:.1f} min; report: {a.out / 'report.json'}")
    print("| configuration | load start -> end | wall s | audio h per hour | x local | ray.init s | "
          "to first worker s | peak RSS MB: tree (per process) | CPU s: all (per kind) | text differs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        per = "; ".join(f"{k} {'+'.join(map(str, v))}" for k, v in r["peak_rss_mb"].items())
        differ = report["same_text"][r["config"]][f"differ_from_{names[0]}"]
        cpu = r.get("cpu_seconds")  # absent from results measured before it was sampled
        cpu = f"{sum(cpu.values()):.0f} ({'; '.join(f'{k} {v:.0f}' for k, v in cpu.items())})" if cpu else "-"
        print(f"| {r['config']} ({r['workers']} x {r['cpus_per_worker']} threads) | {r['load_at_start']} -> "
              f"{r['load_at_end']} | {r['process_wall_seconds']} | {r['audio_hours_per_hour']} | "
              f"{r['audio_hours_per_hour'] / base['audio_hours_per_hour']:.2f} | {r['ray_init_seconds'] or '-'} | "
              f"{r['startup_seconds']} | {r['peak_tree_rss_mb']} ({per}) | {cpu} | {differ} of {r['files']} |")


if __name__ == "__main__":
    main()
