"""Short clips, whole process: `whisper-ft eval` as a user runs it, CTranslate2 against transformers.

    .venv/bin/python benchmarks/whole_process.py                  # ../shared/audio, greedy and beam 5, 2 threads
    .venv/bin/python benchmarks/whole_process.py --data ../shared/aishell_sample/test.jsonl --beam_size 1

Each row is one `whisper-ft eval` process on the same manifest (each clip's own language), timed
from its start to its exit: interpreter start, imports, model load, reading the audio, decoding,
writing the report. Rows:

  hf            transformers fp32, one clip at a time: ``eval --backend hf --batch_size 1``
  ct2           ``eval --backend ct2`` as shipped (compute type auto: the calibrated choice, packed)
  ct2-<type>    the same with ``--compute_type <type>`` (int8, int8_float32, float32 by default)

Before timing, every command is run once untimed (the auto row with ``--calibrate`` the first time:
its choice is measured in this run, on the manifest's first clips; and the OS has the files cached
for all rows alike). Then the rows run
one after another, ``--repeats`` times round the rows, and the fastest run of each counts. Speedup =
hf's seconds / the row's at the same beam size; error rates come from each run's report.json (CER
for zh, WER for en). Table to stdout, JSON (with the commands and the calibration) to ``--output``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT_DATA = ROOT.parent / "shared" / "audio" / "manifest.jsonl"
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "whole_process.json"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="base", help="model name (default: the bundled whisper-base)")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="manifest (JSONL, eval's format or ../shared/audio's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--beam_size", default="1,5", help="comma-separated beam sizes (default 1,5)")
    ap.add_argument("--compute_types", default="int8,int8_float32,float32",
                    help="ct2 rows with an explicit --compute_type (default int8,int8_float32,float32)")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per row (round the rows); the fastest counts")
    ap.add_argument("--output", default=str(DEFAULT_OUTPUT))
    args = ap.parse_args(argv)
    args.beams = [int(b) for b in args.beam_size.split(",") if b.strip()]
    args.types = [t.strip() for t in args.compute_types.split(",") if t.strip()]
    if not Path(args.data).is_file():
        ap.error(f"{args.data} does not exist: pass --data MANIFEST.jsonl")
    return args


def eval_manifest(path: Path, folder: Path) -> Path:
    """eval's manifest format ({audio: {path}, sentence, language, duration}); ../shared/audio's
    records ({audio, text}) are rewritten with absolute paths."""
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    if lines and "sentence" in lines[0]:
        return path
    out = folder / "manifest.jsonl"
    with out.open("w", encoding="utf-8") as f:
        for r in lines:
            f.write(json.dumps({"audio": {"path": str((path.parent / r["audio"]).resolve())}, "sentence": r["text"],
                                "language": r["language"], "duration": r["duration"], "id": r["id"]},
                               ensure_ascii=False) + "\n")
    return out


def commands(args, manifest: Path, out: Path, beam: int) -> dict[str, list[str]]:
    base = [sys.executable, "-m", "whisper_ft", "eval", "--model_path", args.model, "--test_data", str(manifest),
            "--beam_size", str(beam), "--cpu_threads", str(args.threads)]
    rows = {"hf": base + ["--backend", "hf", "--batch_size", "1", "--output_dir", str(out / f"hf-{beam}")],
            "ct2": base + ["--backend", "ct2", "--output_dir", str(out / f"ct2-{beam}")]}
    for t in args.types:
        rows[f"ct2-{t}"] = base + ["--backend", "ct2", "--compute_type", t, "--output_dir", str(out / f"ct2-{t}-{beam}")]
    return rows


def run_once(cmd: list[str], env: dict) -> tuple[float, dict, str]:
    """Wall seconds of the whole process, its report.json, its stderr."""
    out_dir = Path(cmd[cmd.index("--output_dir") + 1])
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return seconds, json.loads((out_dir / "report.json").read_text()), proc.stderr


def main(argv=None) -> None:
    args = parse_args(argv)
    from inference import machine_info

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    machine = machine_info(args.threads)
    work = Path(tempfile.mkdtemp(prefix="whole_process_"))
    manifest = eval_manifest(Path(args.data), work)
    rows, calibration = [], None
    for beam in args.beams:
        cmds = commands(args, manifest, work, beam)
        for name, cmd in cmds.items():  # untimed: the auto row measures its choice again here; file cache
            _, _, err = run_once(cmd + (["--calibrate"] if name == "ct2" and calibration is None else []), env)
            if name == "ct2" and calibration is None:
                calibration = [line for line in err.splitlines() if line.startswith("compute type")]
            log(f"warm-up beam {beam} {name} done")
        best: dict[str, tuple[float, dict]] = {}
        for _ in range(args.repeats):
            for name, cmd in cmds.items():
                seconds, report, _ = run_once(cmd, env)
                if name not in best or seconds < best[name][0]:
                    best[name] = (seconds, report)
                log(f"beam {beam} {name}: {seconds:.1f} s")
        for name, (seconds, report) in best.items():
            rows.append({"row": name, "beam_size": beam, "seconds": round(seconds, 2), "command": " ".join(cmds[name][1:]),
                         "compute_type": report["model"].get("compute_type") or report["model"].get("dtype"),
                         "decode_seconds": report["time"]["decode_seconds"],
                         "load_model_seconds": report["time"]["load_model_seconds"],
                         "audio_seconds": report["data"]["audio_seconds"],
                         "error_rates": _error_rates(report)})
        hf = next(r for r in rows if r["row"] == "hf" and r["beam_size"] == beam)
        for r in rows:
            if r["beam_size"] == beam:
                r["speedup_vs_hf"] = round(hf["seconds"] / r["seconds"], 2)
    try:
        machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    result = {"benchmark": "whole_process", "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "commit": commit, "date": time.strftime("%Y-%m-%d"), "settings": vars(args), "machine": machine,
              "calibration": calibration, "rows": rows}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(format_table(result))
    print(f"\nJSON: {out}")


def _error_rates(report: dict) -> dict[str, float]:
    """Per-language error rate in % from eval's report.json (one language: the overall rate)."""
    per = report.get("by_language")
    if isinstance(per, dict) and per:
        return {lang: round(100 * v["error_rate"], 2) for lang, v in per.items() if isinstance(v, dict) and "error_rate" in v}
    return {"all": round(100 * report["error_rate"], 2)}


def format_table(result: dict) -> str:
    langs = list(dict.fromkeys(k for r in result["rows"] for k in r["error_rates"]))
    lines = ["| row | compute | beam | whole process s | speedup vs hf | " + " | ".join(f"{k} %" for k in langs) + " |",
             "|---|---|---|---|---|" + "---|" * len(langs)]
    for r in result["rows"]:
        lines.append(f"| {r['row']} | {r['compute_type']} | {r['beam_size']} | {r['seconds']:.1f} | "
                     f"{r['speedup_vs_hf']:.2f}x | " + " | ".join(f"{r['error_rates'].get(k, float('nan')):.2f}"
                                                           for k in langs) + " |")
    m = result["machine"]
    lines.append("")
    lines.append(f"{m['cpu']} ({'/'.join(m['isa']) or 'no AVX2/AVX-512'}), {m['threads']} threads, commit "
                 f"{result['commit']}, {result['date']}; load average {m.get('load_average_at_start')} -> "
                 f"{m.get('load_average_at_end')}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
