"""Inference benchmark: transformers vs faster-whisper vs whisper-ft's CTranslate2 fast path.

    .venv/bin/python benchmarks/inference.py                      # whisper-base, ../shared/audio, 2 threads
    .venv/bin/python benchmarks/inference.py --limit 8 --beam_size 1
    .venv/bin/python benchmarks/inference.py --model models/whisper-base-finetune --data dataset/test.jsonl
    .venv/bin/python benchmarks/inference.py --manifest ../shared/aishell_sample/test.jsonl --limit 80
    .venv/bin/python benchmarks/inference.py --long                # a 10-minute recording (long_recording.py)

Every row decodes the same clips (each clip's own language is passed in; no language detection,
no VAD) with the same beam size, on the same number of threads:

  hf        transformers fp32 ``generate``, one clip at a time (what Whisper-Finetune's infer.py does)
  fw-*      plain faster-whisper ``WhisperModel.transcribe`` (float32, int8), one clip at a time,
            temperature 0 (no fallback), otherwise its defaults
  ct2       whisper-ft's fast path, ``eval --backend ct2``'s default: ``generate_texts_ct2(...,
            pack=True)`` on batches as eval makes them (``whisper_ft.decoding.packing.decode_batches``)
  ct2-unpacked  the same without packing (``eval --backend ct2 --no_pack``: one 30 s window per clip)
  hf-packed the packed strategy with transformers (``eval --backend hf --pack``), batches as above

Audio is loaded before timing; feature extraction is timed. Each model is loaded once (load time
reported apart) and warmed up on one clip per beam size before it is timed. RTF = decoding
seconds / audio seconds; speedup = hf decoding time / the row's, at the same beam size. Error
rates are per language (CER for zh/ja/ko/..., WER otherwise, ``whisper_ft.core.scoring.score``);
the number in brackets is the difference to hf in points. The table goes to stdout, logs to
stderr, and everything (settings, machine, per-clip hypotheses) to ``--output`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a fresh clone
    sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared" / "audio" / "manifest.jsonl"
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "inference.json"
ROWS = ("hf", "fw-float32", "fw-int8", "ct2", "ct2-unpacked", "hf-packed")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Clip:
    id: str
    language: str
    text: str
    duration: float
    audio: object  # np.ndarray, 16 kHz mono float32


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="base", help="any model name whisper-ft accepts (default: the bundled whisper-base)")
    ap.add_argument("--data", "--manifest", dest="data", default=None,
                    help=f"manifest (JSONL): whisper-ft's format, or records {{id, language, text, duration, audio}} "
                         f"with audio relative to the manifest (default: {DEFAULT_DATA} when present)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for every backend (default 2)")
    ap.add_argument("--beam_size", default="1,5", help="comma-separated beam sizes (default 1,5: greedy and beam 5)")
    ap.add_argument("--batch_size", type=int, default=16, help="clips per batch on the ct2 rows (eval's default, 16)")
    ap.add_argument("--limit", type=int, default=None,
                    help="use N clips, taken in turn from each language (manifest order) so all languages stay in")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"rows to run (default: all of {','.join(ROWS)})")
    ap.add_argument("--ct2_compute_type", default="int8,float32",
                    help="compute type(s) of the fast-path rows, one row each (default int8,float32; "
                         "auto = what eval picks: int8 on CPU, float16 on CUDA)")
    ap.add_argument("--ct2_inter_threads", type=int, default=None,
                    help="fast path: workers decoding parts of a batch side by side, threads/workers threads each "
                         "(default: --threads, i.e. one thread per worker)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--repeats", type=int, default=1, help="time each row N times and keep the fastest (default 1)")
    ap.add_argument("--output", default=None, help=f"JSON results (default {DEFAULT_OUTPUT}, or inference_long.json)")
    ap.add_argument("--long", action="store_true",
                    help="the long-recording benchmark instead (see benchmarks/long_recording.py)")
    ap.add_argument("--long_minutes", type=float, default=10.0, help="--long: minutes of speech (default 10)")
    ap.add_argument("--long_timeout", type=float, default=1200.0,
                    help="--long: stop a row after this many seconds and record it as not finished (default 1200)")
    ap.add_argument("--long_data", default=None, help="--long: manifest whose utterances are joined "
                                                      "(default ../shared/aishell_sample/test.jsonl)")
    ap.add_argument("--long_rows", default=None, help="--long: comma-separated rows (default: all)")
    args = ap.parse_args(argv)
    if args.long:
        from long_recording import DEFAULT_LONG_DATA, LONG_ROWS

        args.long_data = args.long_data or str(DEFAULT_LONG_DATA)
        args.long_rows = [x.strip() for x in args.long_rows.split(",") if x.strip()] if args.long_rows else None
        if args.long_rows and set(args.long_rows) - set(LONG_ROWS):
            ap.error(f"unknown --long_rows {sorted(set(args.long_rows) - set(LONG_ROWS))}; choose from {', '.join(LONG_ROWS)}")
        if not Path(args.long_data).is_file():
            ap.error(f"--long needs {args.long_data}: pass --long_data MANIFEST.jsonl")
        args.output = args.output or str(DEFAULT_OUTPUT.with_name("inference_long.json"))
        return args
    args.output = args.output or str(DEFAULT_OUTPUT)
    args.beam_sizes = [int(x) for x in str(args.beam_size).split(",") if x.strip()]
    args.rows = [x.strip() for x in args.rows.split(",") if x.strip()]
    args.ct2_compute_types = [x.strip() for x in args.ct2_compute_type.split(",") if x.strip()] or ["auto"]
    if args.ct2_inter_threads is None:
        args.ct2_inter_threads = args.threads
    if not 1 <= args.ct2_inter_threads <= args.threads:
        ap.error("--ct2_inter_threads must be between 1 and --threads")
    unknown = [r for r in args.rows if r not in ROWS]
    if unknown or not args.rows:
        ap.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    if not args.beam_sizes or min(args.beam_sizes) < 1:
        ap.error("--beam_size: comma-separated integers >= 1")
    if args.threads < 1 or args.batch_size < 1 or args.repeats < 1:
        ap.error("--threads, --batch_size and --repeats must be at least 1")
    if args.data is None:
        if not DEFAULT_DATA.is_file():
            ap.error(f"no --data given and {DEFAULT_DATA} does not exist: pass --data MANIFEST.jsonl")
        args.data = str(DEFAULT_DATA)
    return args


def set_threads(threads: int) -> None:
    """Before torch/ctranslate2 are imported: every OpenMP/BLAS pool gets ``threads``."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def read_records(path: Path):
    """Utterances from either manifest format ("sentence" or "text" for the transcript)."""
    from whisper_ft.core.errors import DataError
    from whisper_ft.core.manifest import Utterance, read_manifest

    lines = [x for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    if lines and "sentence" in json.loads(lines[0]):
        return read_manifest(path)
    out = []
    for lineno, line in enumerate(lines, 1):
        rec = json.loads(line)
        rec.setdefault("sentence", rec.get("text"))
        try:
            out.append(Utterance.from_dict(rec, root=path.parent))
        except ValueError as exc:
            raise DataError(f"{path}:{lineno}: invalid record: {exc}") from exc
    return out


def load_clips(path: str, limit: int | None) -> list[Clip]:
    from whisper_ft.core.audio import N_SAMPLES, SAMPLE_RATE
    from whisper_ft.core.languages import normalize_language

    utterances = read_records(Path(path))
    by_lang: dict[str, list] = {}
    skipped = {"no language": 0, "over 30 s": 0}
    for u in utterances:
        lang = normalize_language(u.language) if u.language else None
        if lang is None:
            skipped["no language"] += 1
        elif u.duration > N_SAMPLES / SAMPLE_RATE:
            skipped["over 30 s"] += 1
        else:
            by_lang.setdefault(lang, []).append(u)
    for why, n in skipped.items():
        if n:
            log(f"skipped {n} clip(s): {why} (every row decodes one 30 s window per clip, language given)")
    picked = []
    queues = [list(v) for v in by_lang.values()]
    while queues and (limit is None or len(picked) < limit):  # round-robin over languages
        for q in queues:
            if q and (limit is None or len(picked) < limit):
                picked.append(q.pop(0))
        queues = [q for q in queues if q]
    clips = []
    for u in picked:
        audio = u.load_audio()
        clips.append(Clip(u.key, normalize_language(u.language), u.sentence, len(audio) / SAMPLE_RATE, audio))
    if not clips:
        raise SystemExit(f"no usable clips in {path}")
    return clips


# --- backends: load() -> (decode(clips, beam) -> list[str], info) --------------------------------

def load_hf(args):
    import torch

    from whisper_ft.core.audio import SAMPLE_RATE
    from whisper_ft.decoding.hf import generate_texts
    from whisper_ft.models.loading import load_whisper

    loaded = load_whisper(args.model, dtype=torch.float32, device=args.device)
    fe = loaded.processor.feature_extractor

    def decode(clips, beam):
        out = []
        for c in clips:  # one clip at a time, features included
            feats = fe([c.audio], sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
            out += generate_texts(loaded.model, loaded.processor, feats, language=c.language, num_beams=beam)
        if args.device == "cuda":
            torch.cuda.synchronize()
        return out

    return decode, {"path": str(loaded.hf_path), "dtype": "float32"}


def load_faster_whisper(args, compute_type: str):
    from faster_whisper import WhisperModel

    from whisper_ft.decoding.ct2_loading import ensure_ct2_folder

    path = ensure_ct2_folder(args.model)
    model = WhisperModel(str(path), device=args.device, compute_type=compute_type, cpu_threads=args.threads,
                         local_files_only=True)

    def decode(clips, beam):
        out = []
        for c in clips:
            segments, _ = model.transcribe(c.audio, language=c.language, beam_size=beam, temperature=0.0,
                                           vad_filter=False)
            out.append("".join(s.text for s in segments).strip())
        return out

    return decode, {"path": str(path), "compute_type": compute_type}


def load_ct2(args, pack: bool, compute_type: str = "auto", inter_threads: int = 1):
    from whisper_ft.decoding.ct2 import generate_texts_ct2
    from whisper_ft.decoding.ct2_loading import load_ct2_whisper
    from whisper_ft.decoding.packing import decode_batches

    ct2 = load_ct2_whisper(args.model, device=args.device, compute_type=compute_type, cpu_threads=args.threads,
                           inter_threads=inter_threads)

    def decode(clips, beam, stats=None):
        # as `eval --backend ct2`: longest first, batched by whisper_ft.decoding.packing.decode_batches
        out = [""] * len(clips)
        kwargs = {"pack": True, "stats": stats} if pack else {}
        for idx in decode_batches([c.duration for c in clips], args.batch_size, pack=pack):
            texts = generate_texts_ct2(ct2, [clips[i].audio for i in idx], language=[clips[i].language for i in idx],
                                       num_beams=beam, **kwargs)
            for i, t in zip(idx, texts):
                out[i] = t
        return out

    decode.counts_packing = pack
    return decode, {"path": str(ct2.path), "compute_type": ct2.compute_type, "batch_size": args.batch_size,
                    "pack": pack, "inter_threads": inter_threads,
                    "intra_threads": max(1, args.threads // inter_threads)}


def load_hf_packed(args):
    import torch

    from whisper_ft.decoding.hf import decode_text, generate_packed_token_ids
    from whisper_ft.decoding.packing import decode_batches
    from whisper_ft.models.loading import load_whisper

    loaded = load_whisper(args.model, dtype=torch.float32, device=args.device)

    def decode(clips, beam, stats=None):
        out = [""] * len(clips)
        for idx in decode_batches([c.duration for c in clips], args.batch_size, pack=True):
            ids = generate_packed_token_ids(loaded.model, loaded.processor, [clips[i].audio for i in idx],
                                            language=[clips[i].language for i in idx], num_beams=beam, stats=stats)
            for i, seq in zip(idx, ids):
                out[i] = decode_text(loaded.processor.tokenizer, seq)
        return out

    decode.counts_packing = True
    return decode, {"path": str(loaded.hf_path), "dtype": "float32", "batch_size": args.batch_size, "pack": True}


# --- measuring -------------------------------------------------------------------------------------

def score_by_language(clips: list[Clip], hyps: list[str]) -> dict:
    from whisper_ft.core.languages import default_metric
    from whisper_ft.core.scoring import score

    out = {}
    for lang in dict.fromkeys(c.language for c in clips):
        idx = [i for i, c in enumerate(clips) if c.language == lang]
        metric = default_metric(lang)
        r = score([clips[i].text for i in idx], [hyps[i] for i in idx], metric=metric, language=lang)
        out[lang] = {"metric": metric, "error_rate": round(100 * r.error_rate, 3), "substitutions": r.substitutions,
                     "deletions": r.deletions, "insertions": r.insertions, "ref_len": r.ref_len,
                     "n_clips": len(idx), "audio_seconds": round(sum(clips[i].duration for i in idx), 3)}
    return out


def machine_info(threads: int) -> dict:
    import ctranslate2
    import faster_whisper
    import torch
    import transformers

    model_name = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model_name in ("", platform.machine()):
                model_name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16") if f in flags]
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {"cpu": model_name, "isa": isa, "cores_available": cores, "threads": threads, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "ctranslate2": ctranslate2.__version__, "faster_whisper": faster_whisper.__version__,
            "ct2_cuda_devices": ctranslate2.get_cuda_device_count(), "load_average_at_start": load}


def run(args) -> dict:
    clips = load_clips(args.data, args.limit)
    audio_seconds = sum(c.duration for c in clips)
    langs = {lang: sum(c.language == lang for c in clips) for lang in dict.fromkeys(c.language for c in clips)}
    log(f"{len(clips)} clips ({', '.join(f'{n} {k}' for k, n in langs.items())}), {audio_seconds:.1f} s of audio, "
        f"mean {audio_seconds / len(clips):.2f} s; threads {args.threads}; beams {args.beam_sizes}")
    import torch

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    machine = machine_info(args.threads)

    loaders = {
        "hf": lambda: load_hf(args),
        "fw-float32": lambda: load_faster_whisper(args, "float32" if args.device == "cpu" else "float16"),
        "fw-int8": lambda: load_faster_whisper(args, "int8" if args.device == "cpu" else "int8_float16"),
        "ct2-unpacked": lambda: load_ct2(args, pack=False),  # eval --backend ct2 --no_pack: auto type, 1 worker
        "hf-packed": lambda: load_hf_packed(args),
    }
    for ct in args.ct2_compute_types:
        loaders[f"ct2-{ct}"] = lambda ct=ct: load_ct2(args, pack=True, compute_type=ct,
                                                      inter_threads=args.ct2_inter_threads)
    names = []
    for row in args.rows:
        names += [f"ct2-{ct}" for ct in args.ct2_compute_types] if row == "ct2" else [row]
    backends = {}
    for name in names:
        t0 = time.perf_counter()
        decode, info = loaders[name]()
        info["load_seconds"] = round(time.perf_counter() - t0, 3)
        log(f"loaded {name} in {info['load_seconds']:.1f} s")
        backends[name] = (decode, info)

    main_lang = max(langs, key=langs.get)
    warm = sorted((c for c in clips if c.language == main_lang), key=lambda c: c.duration)[:2]
    rows = []
    for beam in args.beam_sizes:  # all backends at one beam size close together in time
        for name, (decode, _) in backends.items():
            decode(warm if name.startswith("ct2") else warm[:1], beam)  # warm-up, not timed
        times: dict[str, list[float]] = {name: [] for name in backends}
        hyps: dict[str, list[str]] = {}
        packing: dict[str, dict] = {}
        for _ in range(args.repeats):  # repeats go round the rows, so drift hits them alike
            for name, (decode, _) in backends.items():
                kwargs = {"stats": {}} if getattr(decode, "counts_packing", False) else {}
                t0 = time.perf_counter()
                out = decode(clips, beam, **kwargs)
                times[name].append(time.perf_counter() - t0)
                hyps.setdefault(name, out)
                if kwargs:
                    packing.setdefault(name, kwargs["stats"])
        for name, (_, info) in backends.items():
            seconds = min(times[name])
            row = {"row": name, "beam_size": beam, "decode_seconds": round(seconds, 3),
                   "all_seconds": [round(t, 3) for t in times[name]], "rtf": round(seconds / audio_seconds, 4),
                   "scores": score_by_language(clips, hyps[name]), **info, "hyps": hyps[name]}
            if name in packing:
                row["packing"] = packing[name]
            rows.append(row)
            log(f"{name} beam {beam}: {seconds:.1f} s, RTF {row['rtf']:.3f}, "
                + ", ".join(f"{k} {v['metric'].upper()} {v['error_rate']:.2f}%" for k, v in row["scores"].items()))
    for beam in args.beam_sizes:
        base = next((r for r in rows if r["row"] == "hf" and r["beam_size"] == beam), None)
        for r in rows:
            if r["beam_size"] != beam:
                continue
            r["speedup_vs_hf"] = round(base["decode_seconds"] / r["decode_seconds"], 3) if base else None
            if base:
                r["error_rate_vs_hf"] = {k: round(v["error_rate"] - base["scores"][k]["error_rate"], 3)
                                         for k, v in r["scores"].items()}
    try:
        machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return {
        "benchmark": "inference",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {"model": args.model, "data": str(args.data), "threads": args.threads, "beam_sizes": args.beam_sizes,
                     "batch_size": args.batch_size, "limit": args.limit, "device": args.device,
                     "ct2_compute_types": args.ct2_compute_types, "ct2_inter_threads": args.ct2_inter_threads,
                     "repeats": args.repeats, "rows": names},
        "machine": machine,
        "clips": [{"id": c.id, "language": c.language, "duration": round(c.duration, 3), "ref": c.text} for c in clips],
        "audio_seconds": round(audio_seconds, 3),
        "rows": rows,
    }


LABELS = {
    "hf": "transformers fp32 generate, 1 clip at a time",
    "fw-float32": "faster-whisper transcribe, float32",
    "fw-int8": "faster-whisper transcribe, int8",
    "ct2": "whisper-ft eval --backend ct2 (packed: default)",
    "ct2-unpacked": "whisper-ft eval --backend ct2 --no_pack",
    "hf-packed": "whisper-ft eval --backend hf --pack",
}


def format_table(result: dict) -> str:
    langs = [lang for lang in dict.fromkeys(c["language"] for c in result["clips"])]
    metric = {lang: next(r["scores"][lang]["metric"] for r in result["rows"]).upper() for lang in langs}
    head = ["backend", "compute", "threads", "beam", "load s", "decode s", "RTF", "speedup"] + [f"{lang} {metric[lang]} %" for lang in langs]
    lines = []
    for r in result["rows"]:
        compute = r.get("compute_type") or r.get("dtype", "")
        threads = str(result["settings"]["threads"])
        if r.get("inter_threads", 1) > 1:
            threads = f"{r['inter_threads']}x{r['intra_threads']}"
        cells = [LABELS.get("ct2" if r["row"].startswith("ct2-") and r.get("pack") else r["row"], r["row"]), compute, threads,
                 str(r["beam_size"]), f"{r['load_seconds']:.1f}",
                 f"{r['decode_seconds']:.1f}", f"{r['rtf']:.3f}",
                 f"{r['speedup_vs_hf']:.2f}x" if r.get("speedup_vs_hf") else "-"]
        for lang in langs:
            s = f"{r['scores'][lang]['error_rate']:.2f}"
            delta = (r.get("error_rate_vs_hf") or {}).get(lang)
            if delta is not None and r["row"] != "hf":
                s += f" ({delta:+.2f})"
            cells.append(s)
        lines.append(cells)
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]
    fmt = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [fmt(c) for c in lines]
    m = result["machine"]
    n = {lang: sum(c["language"] == lang for c in result["clips"]) for lang in langs}
    out.append("")
    out.append(f"{len(result['clips'])} clips ({', '.join(f'{v} {k}' for k, v in n.items())}; "
               f"{result['audio_seconds']:.1f} s of audio), model {result['settings']['model']}, "
               f"{m['threads']} threads on {m['cpu']} ({m['cores_available']} cores available, "
               f"ISA {'/'.join(m['isa']) or '?'}; load average {m.get('load_average_at_start')} -> {m.get('load_average_at_end')}). "
               "Error rates per language; (+x) = points vs transformers at the same beam size.")
    return "\n".join(out)


def main(argv=None) -> None:
    args = parse_args(argv)
    set_threads(args.threads)
    if args.long:
        from long_recording import format_long_table, run_long

        result = run_long(args, log)
        table = format_long_table(result)
    else:
        result = run(args)
        table = format_table(result)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(table)
    print(f"\nJSON: {out}")


if __name__ == "__main__":
    main()
