"""Accuracy of the server's packing: the same clips decoded packed and unpacked, per clip and pooled.

    .venv/bin/python benchmarks/pack_accuracy.py                       # ../shared/audio + aishell test, beam 5 and 1
    .venv/bin/python benchmarks/pack_accuracy.py --pack_max_seconds none --limit 60

The server decodes the short clips of concurrent requests together
(``whisper_ft.decoding.batched.transcribe_clips_ct2``); with packing, clips of one language share
30 s windows. This decodes every clip through that function twice per beam size, in the batches a
busy server forms (``--batch`` clips, seeded shuffle of all clips, the same batches for every row):
``unpacked`` (one window per clip) and ``packed`` (one row per ``--pack_max_seconds`` value: clips
longer than it are decoded alone; ``none``: every clip may share). Each row gets the pooled error
rate per data set and language (CER for zh, WER for en; ``whisper_ft.core.scoring``), its difference
to unpacked with a paired bootstrap 95 % interval over clips
(``whisper_ft.workflows.compare.stats.paired_bootstrap``), how many clips got better or worse, and
the clips whose text changed. Decode time is reported too (load average beside it: not a speed
benchmark; benchmarks/serve.py is). Table to stdout, JSON to ``--output``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SHARED = ROOT.parent / "shared"
DEFAULT_DATA = [SHARED / "audio" / "manifest.jsonl", SHARED / "aishell_sample" / "test.jsonl"]
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "pack_accuracy.json"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="base", help="model name (default: the bundled whisper-base)")
    ap.add_argument("--data", nargs="+", default=[str(p) for p in DEFAULT_DATA], help="manifests (JSONL)")
    ap.add_argument("--compute_type", default="int8", help="CTranslate2 compute type (default int8)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--beam_size", default="5,1", help="comma-separated beam sizes (default 5,1)")
    ap.add_argument("--batch", type=int, default=16, help="clips per server batch (serve's --max_batch_size, 16)")
    ap.add_argument("--pack_max_seconds", default="none,10",
                    help="comma-separated: one packed row per value; clips longer than it are decoded alone "
                         "(none: all clips may share a window)")
    ap.add_argument("--limit", type=int, default=None, help="at most N clips per manifest")
    ap.add_argument("--seed", type=int, default=0, help="the shuffle that forms the batches")
    ap.add_argument("--output", default=str(DEFAULT_OUTPUT))
    args = ap.parse_args(argv)
    args.beams = [int(b) for b in args.beam_size.split(",") if b.strip()]
    args.limits = [float("inf") if v.strip().lower() == "none" else float(v) for v in args.pack_max_seconds.split(",")
                   if v.strip()]
    for path in args.data:
        if not Path(path).is_file():
            ap.error(f"{path} does not exist: pass --data MANIFEST.jsonl ...")
    return args


def row_name(limit: float) -> str:
    return "packed" if limit == float("inf") else f"packed<={limit:g}s"


def main(argv=None) -> None:
    args = parse_args(argv)
    from inference import load_clips, machine_info, set_threads

    set_threads(args.threads)
    from whisper_ft.core.languages import default_metric
    from whisper_ft.core.scoring import score
    from whisper_ft.decoding.batched import Clip, transcribe_clips_ct2
    from whisper_ft.decoding.ct2_loading import load_ct2_whisper
    from whisper_ft.workflows.compare.stats import paired_bootstrap

    clips, sets = [], []
    for path in args.data:
        part = load_clips(path, args.limit)
        clips += part
        sets += [Path(path).parent.name] * len(part)
    order = list(range(len(clips)))
    random.Random(args.seed).shuffle(order)
    batches = [order[k:k + args.batch] for k in range(0, len(order), args.batch)]
    ct2 = load_ct2_whisper(args.model, compute_type=args.compute_type, cpu_threads=args.threads)
    log(f"{len(clips)} clips, {len(batches)} batches of up to {args.batch}; {ct2.path} ({ct2.compute_type})")
    machine = machine_info(args.threads)

    def decode(beam: int, pack: bool, limit: float) -> tuple[list[str], float]:
        texts = [""] * len(clips)
        t0 = time.perf_counter()
        for idx in batches:
            out = transcribe_clips_ct2(ct2, [Clip(clips[i].audio, clips[i].language) for i in idx], beam_size=beam,
                                       pack=pack, pack_max_seconds=limit)
            for i, r in zip(idx, out):
                texts[i] = " ".join(s.text for s in r.transcription.segments).strip()
        return texts, time.perf_counter() - t0

    groups: dict[tuple[str, str], list[int]] = {}
    for i, c in enumerate(clips):
        groups.setdefault((sets[i], c.language), []).append(i)

    def per_clip(texts: list[str]) -> list[tuple[int, int]]:
        out = []
        for c, t in zip(clips, texts):
            r = score([c.text], [t], metric=default_metric(c.language), language=c.language)
            out.append((r.errors, r.ref_len))
        return out

    rows = []
    for beam in args.beams:
        base_texts, base_s = decode(beam, False, float("inf"))
        base = per_clip(base_texts)
        rows.append({"row": "unpacked", "beam_size": beam, "decode_seconds": round(base_s, 2), "texts": base_texts})
        log(f"beam {beam} unpacked: {base_s:.1f} s")
        for limit in args.limits:
            texts, seconds = decode(beam, True, limit)
            cand = per_clip(texts)
            row = {"row": row_name(limit), "beam_size": beam, "decode_seconds": round(seconds, 2), "texts": texts,
                   "groups": {}, "changed": []}
            for (name, lang), idx in groups.items():
                diff = paired_bootstrap([base[i][0] for i in idx], [cand[i][0] for i in idx], [base[i][1] for i in idx])
                n = sum(base[i][1] for i in idx)
                row["groups"][f"{name}/{lang}"] = {
                    "metric": default_metric(lang), "clips": len(idx),
                    "unpacked": round(100 * sum(base[i][0] for i in idx) / n, 3),
                    "packed": round(100 * sum(cand[i][0] for i in idx) / n, 3),
                    "delta_points": round(100 * diff.delta, 3),
                    "ci95_points": [round(100 * diff.low, 3), round(100 * diff.high, 3)],
                    "better": sum(cand[i][0] < base[i][0] for i in idx),
                    "worse": sum(cand[i][0] > base[i][0] for i in idx)}
            for i in range(len(clips)):
                if texts[i] != base_texts[i]:
                    row["changed"].append({"id": clips[i].id, "set": sets[i], "duration": round(clips[i].duration, 2),
                                           "errors": [base[i][0], cand[i][0]], "ref_len": base[i][1],
                                           "unpacked": base_texts[i], "packed": texts[i]})
            rows.append(row)
            log(f"beam {beam} {row['row']}: {seconds:.1f} s")
    try:
        machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    result = {"benchmark": "pack_accuracy", "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "settings": {k: v for k, v in vars(args).items() if k not in {"beams", "limits"}},
              "machine": machine, "clips": [{"id": c.id, "set": s, "language": c.language,
                                             "duration": round(c.duration, 3), "ref": c.text}
                                            for c, s in zip(clips, sets)], "rows": rows}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(format_table(result))
    print(f"\nJSON: {out}")


def format_table(result: dict) -> str:
    lines = ["| beam | row | set/language | clips | unpacked % | packed % | Δ points [95 % CI] | better / worse | "
             "decode s (unpacked -> packed) |", "|---|---|---|---|---|---|---|---|---|"]
    unpacked = {r["beam_size"]: r for r in result["rows"] if r["row"] == "unpacked"}
    for r in result["rows"]:
        if r["row"] == "unpacked":
            continue
        for name, g in r["groups"].items():
            lines.append(f"| {r['beam_size']} | {r['row']} | {name} ({g['metric'].upper()}) | {g['clips']} | "
                         f"{g['unpacked']:.2f} | {g['packed']:.2f} | {g['delta_points']:+.2f} "
                         f"[{g['ci95_points'][0]:+.2f}, {g['ci95_points'][1]:+.2f}] | {g['better']} / {g['worse']} | "
                         f"{unpacked[r['beam_size']]['decode_seconds']:.0f} -> {r['decode_seconds']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
