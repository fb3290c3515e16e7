"""The table and JSON of benchmarks/gpu_check.sh, from what its steps left in WORK.

    python benchmarks/gpu_check_summary.py --work WORK [--result benchmarks/results/gpu_check.json]

Per step: exit code, wall seconds, peak GPU memory (MiB, the largest nvidia-smi sample while it ran;
the whole GPU, so other processes on it count too); training steps: samples/s and seconds per step
from the Trainer's own ``train_runtime``; decoding: CER, RTF and audio seconds decoded per second
from each ``eval`` report.json. Ratios side by side: CTranslate2 vs transformers throughput, packed
vs unpacked, int8_float16 vs float16.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _peak(path: Path) -> int | None:
    try:
        values = [int(v) for line in path.read_text().splitlines() for v in line.split(",") if v.strip().isdigit()]
    except OSError:
        return None
    return max(values) if values else None


def _train(work: Path, name: str) -> dict:
    states = sorted((work / name).glob("*/checkpoint-*/trainer_state.json"))
    state = _read(states[-1]) if states else None
    if not state:
        return {}
    end = next((h for h in reversed(state.get("log_history", [])) if "train_runtime" in h), {})
    losses = [h["loss"] for h in state.get("log_history", []) if "loss" in h]
    steps = state.get("global_step") or 0
    return {"steps": steps, "train_runtime": end.get("train_runtime"),
            "samples_per_second": end.get("train_samples_per_second"),
            "seconds_per_step": round(end["train_runtime"] / steps, 4) if end.get("train_runtime") and steps else None,
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}


def _decode(work: Path, folder: str) -> dict:
    report = _read(work / folder / "report.json")
    if not report:
        return {}
    audio = report.get("data", {}).get("audio_seconds")
    seconds = report.get("time", {}).get("decode_seconds")
    return {"cer": report.get("error_rate"), "rtf": report.get("rtf"), "decode_seconds": seconds,
            "audio_seconds_per_second": round(audio / seconds, 1) if audio and seconds else None,
            "compute_type": report.get("model", {}).get("compute_type"), "n_utterances": report.get("n_utterances")}


def _machine() -> dict:
    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    return {"gpu": out(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]),
            "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
            "commit": out(["git", "rev-parse", "--short", "HEAD"]), "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}


def summarize(work: Path) -> dict:
    steps = []
    for line in (work / "phases.tsv").read_text(encoding="utf-8").splitlines():
        name, rc, seconds, command = line.split("\t", 3)
        row = {"step": name, "exit_code": int(rc), "seconds": round(float(seconds), 1), "command": command,
               "peak_gpu_mib": _peak(work / f"mem-{name}.log")}
        if name.startswith(("lora-", "full-")):
            row.update(_train(work, name))
        elif name.startswith("ct2-"):
            row.update(_decode(work, f"eval-{name}"))
        elif name == "hf-cuda":
            row.update(_decode(work, "eval-hf"))
        steps.append(row)
    by = {s["step"]: s for s in steps}

    def ratio(a: str, b: str, key: str = "audio_seconds_per_second"):
        x, y = by.get(a, {}).get(key), by.get(b, {}).get(key)
        return round(x / y, 2) if x and y else None

    ratios = {
        "ct2_float16_unpacked_vs_transformers": ratio("ct2-float16-no_pack", "hf-cuda"),
        "ct2_float16_packed_vs_unpacked": ratio("ct2-float16-pack", "ct2-float16-no_pack"),
        "ct2_int8_float16_vs_float16_unpacked": ratio("ct2-int8_float16-no_pack", "ct2-float16-no_pack"),
        "lora_bf16_vs_fp16_samples_per_second": ratio("lora-bf16", "lora-fp16", "samples_per_second"),
    }
    return {"machine": _machine(), "steps": steps, "ratios": ratios}


def render(summary: dict) -> str:
    head = "| step | exit | s | peak GPU MiB | train samples/s | s/step | loss first→last | CER % | audio s/s |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for s in summary["steps"]:
        loss = (f"{s['first_loss']:.3f}→{s['last_loss']:.3f}" if s.get("first_loss") is not None
                and s.get("last_loss") is not None else "")
        cer = f"{100 * s['cer']:.2f}" if s.get("cer") is not None else ""
        lines.append(f"| {s['step']} | {s['exit_code']} | {s['seconds']} | {s.get('peak_gpu_mib') or ''} | "
                     f"{s.get('samples_per_second') or ''} | {s.get('seconds_per_step') or ''} | {loss} | {cer} | "
                     f"{s.get('audio_seconds_per_second') or ''} |")
    lines.append("")
    lines += [f"{k}: {v}" for k, v in summary["ratios"].items()]
    m = summary["machine"]
    lines.append(f"machine: {m['gpu']}; commit {m['commit']}; {m['date']}")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="the WORK folder of benchmarks/gpu_check.sh")
    ap.add_argument("--result", default="benchmarks/results/gpu_check.json")
    args = ap.parse_args(argv)
    summary = summarize(Path(args.work))
    print(render(summary))
    result = Path(args.result)
    result.parent.mkdir(parents=True, exist_ok=True)
    result.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
