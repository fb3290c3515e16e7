"""Measure `whisper-ft transcribe` on one machine: --engine local against --engine ray with 1 and 2
workers, on the same set (the AISHELL test speaker's clips repeated to --minutes of audio, as a
manifest that references the same files again; no audio is copied).

Each configuration is the real CLI in a process of its own, started when the load average is under
--max_load (waiting at most --wait_minutes), one at a time. While it runs, the RSS of every process
of its tree (driver, Ray's own processes, the workers) is sampled every 0.5 s. Reported: wall time,
hours of audio per hour, start-up (to the first shard), Ray's start, peak RSS per process kind and
of the whole tree, and whether every configuration wrote the same training manifest.

    .venv/bin/python benchmarks/transcribe_scale.py --minutes 60 --out /tmp/scale_bench
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
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


def build_set(out: Path, minutes: float) -> Path:
    """The test speaker's clips, round after round, until ``minutes`` of audio (absolute paths)."""
    rows = [json.loads(line) for line in (SHARED / "test.jsonl").read_text(encoding="utf-8").splitlines() if line]
    manifest, total = out / f"aishell_test_{minutes:g}min.jsonl", 0.0
    lines = []
    for n, row in enumerate(itertools.cycle(rows)):
        if total >= minutes * 60:
            break
        rec = dict(row, id=f"{row['id']}-r{n // len(rows)}")
        rec["audio"] = {"path": str((SHARED / row["audio"]["path"]).resolve())}
        lines.append(json.dumps(rec, ensure_ascii=False))
        total += row["duration"]
    out.mkdir(parents=True, exist_ok=True)
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"set: {manifest}: {len(lines)} clips, {total / 60:.1f} min", file=sys.stderr)
    return manifest


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
        return "worker"
    if title.startswith("ray::") and any(x in title for x in ("StatsActor", "ActorLocationTracker", "Autoscaling")):
        return "Ray Data's own actors"
    if "whisper_ft" in title and "transcribe" in title:
        return "driver"
    return "Ray services (gcs, raylet, dashboard/runtime-env agents, monitors, idle workers)"


def run_one(name: str, args: list[str], manifest: Path, out: Path, max_load: float, wait_minutes: float) -> dict:
    import psutil

    load = wait_for_quiet(max_load, wait_minutes)
    target = out / name
    cmd = [sys.executable, "-m", "whisper_ft", "transcribe", str(manifest), "--output_dir", str(target), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OMP_NUM_THREADS", None)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=open(out / f"{name}.log", "w"),
                            start_new_session=True)
    peak: dict[int, tuple[str, int]] = {}
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
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
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
    by_kind: dict[str, list[int]] = {}
    for k, rss in peak.values():
        by_kind.setdefault(k, []).append(rss)
    return {
        "config": name, "command": " ".join(["whisper-ft", *cmd[3:]]), "load_at_start": round(load, 2),
        "load_at_end": round(os.getloadavg()[0], 2), "process_wall_seconds": round(wall, 1),
        "run_wall_seconds": summary["this_run"]["wall_seconds"], "audio_hours": summary["audio_hours"],
        "audio_hours_per_hour": round(summary["audio_hours"] * 3600 / wall, 2),
        "audio_hours_per_hour_run": summary["this_run"]["audio_hours_per_hour"],
        "startup_seconds": summary["this_run"]["startup_seconds"],
        "ray_init_seconds": summary["this_run"]["ray_init_seconds"],
        "peak_rss_mb": {k: [round(v / 2**20) for v in sorted(vs, reverse=True)] for k, vs in by_kind.items()},
        "peak_tree_rss_mb": round(peak_total / 2**20), "summary": summary, "stdout": stdout,
    }


def same_text(out: Path, names: list[str]) -> dict:
    texts = {}
    for name in names:
        rows = [json.loads(line) for line in (out / name / "train.jsonl").read_text(encoding="utf-8").splitlines()]
        texts[name] = {r["id"]: r["sentence"] for r in rows}
    first = texts[names[0]]
    return {name: {"records": len(t), "differ": sum(1 for k in set(first) | set(t) if first.get(k) != t.get(k)),
                   "bytes_identical": (out / name / "train.jsonl").read_bytes() == (out / names[0] / "train.jsonl").read_bytes()}
            for name, t in texts.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--out", type=Path, default=Path("/tmp/scale_bench"))
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--max_load", type=float, default=1.5)
    ap.add_argument("--wait_minutes", type=float, default=15.0)
    a = ap.parse_args()
    manifest = build_set(a.out, a.minutes)
    names = a.configs.split(",")
    results = []
    for name in names:
        r = run_one(name, CONFIGS[name], manifest, a.out, a.max_load, a.wait_minutes)
        print(json.dumps({k: v for k, v in r.items() if k not in ("summary", "stdout")}), file=sys.stderr)
        results.append(r)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "commit": subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip(),
        "cpus": os.cpu_count(), "results": results, "same_text": same_text(a.out, names)}
    (a.out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(report["same_text"], indent=2))
    for r in results:
        print(f"| {r['config']} | {r['load_at_start']} | {r['process_wall_seconds']} | {r['audio_hours_per_hour']} | "
              f"{r['startup_seconds']} | {r['ray_init_seconds']} | {r['peak_rss_mb']} | {r['peak_tree_rss_mb']} |")


if __name__ == "__main__":
    main()
