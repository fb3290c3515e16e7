"""Start-up benchmark: `whisper-ft infer-ct2` on one short clip vs faster-whisper in a script.

Whole-process wall time (interpreter start, imports, model load, decoding, exit), median of
``--runs`` runs each, of

- ``whisper-ft infer-ct2``: ``python -m whisper_ft infer-ct2 CLIP --model_path base --language zh --beam_size 5``;
- ``faster-whisper``: ``python -c`` a script doing ``WhisperModel(<the CTranslate2 folder whisper-ft
  uses for the model>, device, compute_type, cpu_threads).transcribe(CLIP, language='zh', beam_size=5)``
  and consuming the segments (same folder, device, compute type and threads as whisper-ft picks).

The two commands alternate, after one untimed warm-up run of each (file cache). Prints a Markdown
table and writes JSON (command, commit, date, machine load) to benchmarks/results/startup.json.

    .venv/bin/python benchmarks/startup.py
    .venv/bin/python benchmarks/startup.py --clip ../shared/audio/zh/BAC009S0764W0121.wav --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = REPO.parent / "shared" / "audio" / "zh" / "BAC009S0764W0121.wav"
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "startup.json"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", default=str(DEFAULT_CLIP), help="Audio clip (default: %(default)s).")
    ap.add_argument("--model", default="base", help="Model name as whisper-ft takes it (default: base, bundled).")
    ap.add_argument("--language", default="zh")
    ap.add_argument("--beam_size", type=int, default=5)
    ap.add_argument("--runs", type=int, default=5, help="Timed runs of each command (median reported).")
    ap.add_argument("--output", default=str(DEFAULT_OUTPUT), help="JSON results (default: %(default)s).")
    return ap.parse_args(argv)


def whisper_ft_choice(model: str) -> dict:
    """The CTranslate2 folder, device, compute type and threads `infer-ct2` uses for ``model``
    (asked in this process, outside the timed ones)."""
    sys.path.insert(0, str(REPO))
    from whisper_ft.decoding.ct2_loading import default_cpu_threads, ensure_ct2_folder, resolve_device

    device, compute_type = resolve_device("auto", "auto")
    return {"folder": str(ensure_ct2_folder(model)), "device": device, "compute_type": compute_type,
            "cpu_threads": default_cpu_threads()}


def commands(args, choice: dict) -> dict[str, list[str]]:
    script = (
        "from faster_whisper import WhisperModel\n"
        f"model = WhisperModel({choice['folder']!r}, device={choice['device']!r}, "
        f"compute_type={choice['compute_type']!r}, cpu_threads={choice['cpu_threads']})\n"
        f"segments, info = model.transcribe({args.clip!r}, language={args.language!r}, beam_size={args.beam_size})\n"
        "print(''.join(s.text for s in segments))\n"
    )
    return {
        "whisper-ft infer-ct2": [sys.executable, "-m", "whisper_ft", "infer-ct2", args.clip, "--model_path",
                                 args.model, "--language", args.language, "--beam_size", str(args.beam_size)],
        "faster-whisper script": [sys.executable, "-c", script],
    }


def timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    out = proc.stdout.strip()
    try:  # infer-ct2 prints JSON
        out = json.loads(out)["text"]
    except (ValueError, KeyError, TypeError):
        pass
    return seconds, out


def commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=REPO).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None
    except OSError:
        return None


def main(argv=None) -> None:
    args = parse_args(argv)
    if not Path(args.clip).is_file():
        sys.exit(f"no clip at {args.clip}: pass --clip AUDIO")
    choice = whisper_ft_choice(args.model)
    cmds = commands(args, choice)
    load_start = os.getloadavg()[0]
    for cmd in cmds.values():  # warm-up: file cache, the bundled model's folder already built
        timed(cmd)
    times: dict[str, list[float]] = {name: [] for name in cmds}
    texts: dict[str, str] = {}
    for _ in range(args.runs):
        for name, cmd in cmds.items():
            seconds, texts[name] = timed(cmd)
            times[name].append(round(seconds, 3))
    load_end = os.getloadavg()[0]
    medians = {name: statistics.median(t) for name, t in times.items()}
    rows = [{"row": name, "median_s": round(medians[name], 3), "runs_s": times[name], "text": texts[name],
             "command": " ".join(cmds[name]) if name.startswith("whisper-ft") else cmds[name][-1]}
            for name in cmds]
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "clip": args.clip, "model": args.model, "choice": choice,
        "settings": {"language": args.language, "beam_size": args.beam_size, "runs": args.runs},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores_available": len(os.sched_getaffinity(0)),
                    "load_average_at_start": round(load_start, 2), "load_average_at_end": round(load_end, 2)},
        "rows": rows,
        "difference_s": round(medians["whisper-ft infer-ct2"] - medians["faster-whisper script"], 3),
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print("| command | median wall time (s) | runs (s) |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['row']} | {r['median_s']:.2f} | {', '.join(f'{t:.2f}' for t in r['runs_s'])} |")
    print(f"\ndifference: {result['difference_s']:+.2f} s; {choice['folder']} on {choice['device']} "
          f"({choice['compute_type']}, {choice['cpu_threads']} threads); load average {load_start:.2f} -> {load_end:.2f}")
    print(f"JSON: {out}")


if __name__ == "__main__":
    main()
