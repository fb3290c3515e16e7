"""The table of scripts/aishell1_gpu.sh, in Whisper-Finetune's shape, from the reports it wrote.

    python scripts/aishell1_table.py --work runs/aishell1 [--models "tiny base small"] [--methods "lora full"]

One row per model and method: CER on AISHELL-1 test before (the base) and after fine-tuning
(transformers, from `compare`), the CTranslate2 exports' CER (float16, int8_float16, from `eval
--backend ct2`), the training time, and Whisper-Finetune's published CER for the same model beside
ours. Prints a markdown table and writes WORK/results.json. A step that has not run shows as "-".

Whisper-Finetune's numbers (LoRA fine-tuning on AISHELL, AISHELL test CER) are copied from the
"模型测试表" (model test tables) of yeyupiaoling/Whisper-Finetune's README.md at commit
db8dad541434839de151f4c5d0808753852d3a0c (tables 1 and 2). Their notes there: punctuation removed
and traditional characters converted to simplified before scoring; trained on transcripts with
punctuation added ("slightly higher CER"); AISHELL fine-tuning without timestamps; one A100. They
publish no CTranslate2 CER and no training time. An older version of that README gave whisper-tiny
0.48265 -> 0.17926. Our scoring is whisper-ft's normaliser (docs/evaluate.md), so the columns are
close in spirit but not the same measurement.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

WHISPER_FINETUNE_SOURCE = ("yeyupiaoling/Whisper-Finetune README.md @ db8dad541434839de151f4c5d0808753852d3a0c, "
                           "model test tables 1-2 (aishell_test CER, LoRA)")
# model -> (CER before, CER after fine-tuning on AISHELL), fractions as published
WHISPER_FINETUNE_AISHELL = {
    "tiny": (0.31898, 0.13043),
    "base": (0.22196, 0.08999),
    "small": (0.13897, 0.05452),
    "medium": (0.09538, 0.03681),
    "large-v2": (0.08817, 0.03139),
    "large-v3": (0.08086, 0.03660),
}
QUANTIZATIONS = ("float16", "int8_float16")


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def row(work: Path, size: str, method: str) -> dict:
    tag = f"whisper-{size}-{method}"
    out: dict = {"model": f"whisper-{size}", "method": method, "cer_before": None, "cer_after": None,
                 "significant": None, "ct2": {}, "train_seconds": None}
    compare = _read(work / "compare" / tag / "report.json")
    if compare:
        rates = {r["model_index"]: r for r in compare.get("results", [])}
        if 0 in rates:
            out["cer_before"] = rates[0]["error_rate"]
        if 1 in rates:
            out["cer_after"] = rates[1]["error_rate"]
            vs = rates[1].get("vs_reference") or {}
            out["significant"] = vs.get("significant")
            out["interval"] = [vs.get("low"), vs.get("high")] if "low" in vs else None
    for quant in QUANTIZATIONS:
        report = _read(work / "eval" / f"{tag}-{quant}" / "report.json")
        if report:
            out["ct2"][quant] = {"cer": report["error_rate"], "rtf": report.get("rtf")}
    timing = _read(work / "time" / f"{tag}.json")
    if timing:
        out["train_seconds"], out["gpus"], out["precision"] = timing["seconds"], timing.get("gpus"), timing.get("precision")
    published = WHISPER_FINETUNE_AISHELL.get(size)
    out["whisper_finetune"] = {"cer_before": published[0], "cer_after": published[1]} if published else None
    return out


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _time(seconds) -> str:
    if seconds is None:
        return "-"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def render(rows: list[dict]) -> str:
    lines = ["| model | method | CER before | CER after | ct2 float16 | ct2 int8_float16 | train time | "
             "Whisper-Finetune before | Whisper-Finetune after (LoRA) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        wf = r["whisper_finetune"] or {}
        lines.append(" | ".join([
            f"| {r['model']}", r["method"], _pct(r["cer_before"]),
            _pct(r["cer_after"]) + ("*" if r.get("significant") else ""),
            _pct(r["ct2"].get("float16", {}).get("cer")), _pct(r["ct2"].get("int8_float16", {}).get("cer")),
            _time(r["train_seconds"]) + (f" ({r['gpus']} GPU)" if r.get("gpus") else ""),
            _pct(wf.get("cer_before")), _pct(wf.get("cer_after")) + " |"]))
    lines.append("")
    lines.append("CER in % on AISHELL-1 test (7176 utterances); * = significant change against the base (paired "
                 "bootstrap, 95%). Whisper-Finetune's columns: " + WHISPER_FINETUNE_SOURCE + ".")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/aishell1", help="the WORK folder of scripts/aishell1_gpu.sh")
    ap.add_argument("--models", default="tiny base small")
    ap.add_argument("--methods", default="lora full")
    args = ap.parse_args(argv)
    work = Path(args.work)
    rows = [row(work, size, method) for size in args.models.split() for method in args.methods.split()]
    print(render(rows))
    work.mkdir(parents=True, exist_ok=True)
    (work / "results.json").write_text(json.dumps({"rows": rows, "whisper_finetune_source": WHISPER_FINETUNE_SOURCE},
                                                  indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
