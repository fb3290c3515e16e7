"""Adaptation to one voice: how much does fine-tuning whisper-base on one speaker's sentences lower
the error on that speaker's unseen sentences, what does it cost elsewhere, and does the gain survive
deployment (merged, converted to CTranslate2, int8, packed)?

    flock /tmp/team/heavy.lock .venv/bin/python benchmarks/single_voice.py                 # default variants
    .venv/bin/python benchmarks/single_voice.py --variants lora-top2,full-dec --max_steps 40
    .venv/bin/python benchmarks/single_voice.py --reuse        # re-measure finished runs only

Data (``../shared/aishell_sample``, seeded): the train speaker's sentences are split into
``--held_out`` sentences never trained on and the rest (training). The held-out ones are split
again: ``--select`` of them choose ``best/`` during training (``finetune --test_data``), the others
are the ones reported (``same speaker``): no reported sentence ever chose a checkpoint. Also
reported: ``--other_clips`` sentences of the other speaker (test.jsonl), the general half of
``../shared/audio`` (the replay half is what ``--replay_data`` trains on: see
benchmarks/finetune_efficacy.py), and generated non-speech (compare's own clips).

Each variant is a `whisper-ft finetune` run (options below) of at most ``--max_steps`` steps, timed
and watched: peak RSS of the largest process (``/usr/bin/time -v``'s maximum resident set size)
and of the whole process tree (dataloader workers included, sampled every 0.5 s). Then every
variant is measured side by side in one `whisper-ft compare` per path, the zero-shot base as the
reference (deltas with paired bootstrap intervals):

  hf            transformers fp32, greedy, as trained (LoRA merged)
  ct2@TYPE      `whisper-ft convert` (float16 folder, as a user exports) decoded at TYPE, packed,
                greedy: how users serve it; TYPE from --compute_types (int8, int8_float32, float32)
  ct2-unpacked@TYPE  the same, one window per clip (`--no_pack`): what packing itself changes

Prints a Markdown table and writes JSON (command, commit, date, machine) to
benchmarks/results/single_voice.json. One heavy job at a time (flock /tmp/team/heavy.lock).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "scripts"))

AISHELL = ROOT.parent / "shared" / "aishell_sample"
SHARED_MANIFEST = ROOT.parent / "shared" / "audio" / "manifest.jsonl"
REPLAY = "{replay}"  # placeholder: the replay half of ../shared/audio
ANTI_FORGETTING = ["--replay_data", REPLAY, "--replay_ratio", "0.2", "--kl_to_base", "1", "--empty_audio_ratio", "0.1"]
LORA = ["--method", "lora", "--lora_r", "32", "--lora_alpha", "64", "--lora_dropout", "0"]

PROMPTS = ["--prompt_ratio", "0.5"]  # half the samples decoded after the previous utterance's text
# Trained on `prepare pack` windows of the training sentences (about 5 a window) with their times:
# the encoder sees ~5x the speech per step, and the decoder learns the timestamped text that the
# packed CTranslate2 path decodes.
PACKED = ["--timestamps"]
EXTRAS = {"af": ANTI_FORGETTING, "pr": PROMPTS, "pk": PACKED}
# name -> (help, finetune options). "+af" after a name adds ANTI_FORGETTING, "+pr" PROMPTS, "+pk" PACKED.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "lora-top2": ("LoRA r32 on the decoder + top 2 encoder layers, lr 5e-4",
                  [*LORA, "--lora_encoder_layers", "2", "--learning_rate", "5e-4"]),
    "lora-all": ("LoRA r32 on every layer, lr 5e-4", [*LORA, "--learning_rate", "5e-4"]),
    # lr 5e-5, not the method's 1e-5: the guide's 1e-5 is for thousands of steps, these runs have tens
    "full": ("every weight, lr 5e-5", ["--method", "full", "--learning_rate", "5e-5"]),
    "full-dec": ("every decoder weight, encoder frozen (--freeze_encoder), lr 5e-5",
                 ["--method", "full", "--freeze_encoder", "--learning_rate", "5e-5"]),
}
DEFAULT_VARIANTS = "lora-top2,lora-top2+af,full-dec+af,lora-top2+af+pr"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def variant_options(name: str, replay: Path | None, overrides: dict[str, str]) -> list[str]:
    base, *extras = name.split("+")
    if base not in VARIANTS or not set(extras) <= set(EXTRAS):
        sys.exit(f"single_voice: unknown variant {name!r}; choose from {', '.join(VARIANTS)}, each optionally "
                 "followed by +af, +pr and/or +pk")
    options = list(VARIANTS[base][1]) + [o for extra in extras for o in EXTRAS[extra]]
    if REPLAY in options:
        if replay is None:
            sys.exit(f"single_voice: {name} replays general speech and {SHARED_MANIFEST} is absent")
        options = [str(replay) if o == REPLAY else o for o in options]
    for flag, value in overrides.items():
        if value is None:
            continue
        if f"--{flag}" in options:
            at = options.index(f"--{flag}")
            options[at + 1] = value
        else:
            options += [f"--{flag}", value]
    return options


def split_data(work: Path, held_out: int, select: int, other_clips: int, seed: int) -> dict[str, Path]:
    """train / select / report (the train speaker) and other (the test speaker), absolute paths."""
    from whisper_ft.core.manifest import read_manifest, write_manifest

    speaker = sorted(read_manifest(AISHELL / "train.jsonl"), key=lambda u: u.key)
    order = list(range(len(speaker)))
    random.Random(seed).shuffle(order)
    held, train = order[:held_out], sorted(order[held_out:])
    other = read_manifest(AISHELL / "test.jsonl")
    other_pick = sorted(random.Random(seed).sample(range(len(other)), min(other_clips, len(other))))
    parts = {"train": [speaker[i] for i in train], "select": [speaker[i] for i in sorted(held[:select])],
             "report": [speaker[i] for i in sorted(held[select:])], "other": [other[i] for i in other_pick]}
    out = {}
    for name, utts in parts.items():
        out[name] = work / "data" / f"{name}.jsonl"
        out[name].parent.mkdir(parents=True, exist_ok=True)
        write_manifest(out[name], utts, relative=False)
    assert not {u.key for u in parts["train"]} & {u.key for u in parts["select"] + parts["report"]}
    log("data: " + ", ".join(f"{k} {len(v)}" for k, v in parts.items()))
    return out


def tree_rss_sampler(pid: int, peak: dict, stop: threading.Event, log_file: Path) -> None:
    """Largest sum of RSS over the process tree under ``pid`` (sampled every 0.5 s), and a timeline
    (seconds, largest process MB, tree MB, processes, the last log line then): where memory goes."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    t0, timeline = time.time(), peak.setdefault("timeline", [])
    while not stop.is_set():
        sizes = []
        try:
            for p in [root, *root.children(recursive=True)]:
                try:
                    sizes.append(p.memory_info().rss)
                except psutil.NoSuchProcess:
                    pass
        except psutil.NoSuchProcess:
            break
        peak["tree"] = max(peak.get("tree", 0), sum(sizes))
        lines = log_file.read_text(errors="replace").replace("\r", "\n").strip().splitlines()
        timeline.append((round(time.time() - t0, 1), round(max(sizes, default=0) / 2**20), round(sum(sizes) / 2**20),
                         len(sizes), lines[-1][-120:] if lines else ""))
        stop.wait(0.5)


def run_watched(cmd: list[str], log_file: Path) -> dict:
    """Run ``cmd`` under /usr/bin/time -v; wall minutes, peak RSS of its largest process and of
    its whole tree (GB)."""
    log("$ " + " ".join(cmd))
    peak, stop = {}, threading.Event()
    t0 = time.time()
    with open(log_file, "w") as err:
        proc = subprocess.Popen(["/usr/bin/time", "-v", *cmd], stdout=subprocess.DEVNULL, stderr=err)
        sampler = threading.Thread(target=tree_rss_sampler, args=(proc.pid, peak, stop, log_file), daemon=True)
        sampler.start()
        rc = proc.wait()
        stop.set()
        sampler.join()
    seconds = time.time() - t0
    text = log_file.read_text(errors="replace")
    if rc != 0:
        sys.exit(f"single_voice: command failed (exit {rc}), see {log_file}: {' '.join(cmd)}")
    largest_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    log_file.with_suffix(".memory.json").write_text(json.dumps(peak.get("timeline", []), ensure_ascii=False))
    return {"minutes": round(seconds / 60, 2), "peak_rss_gb": round(largest_kb / 2**20, 2),
            "peak_tree_rss_gb": round(peak.get("tree", 0) / 2**30, 2)}


def whisper_ft(*args: str) -> list[str]:
    exe = Path(sys.executable).parent / "whisper-ft"
    return [str(exe) if exe.exists() else "whisper-ft", *args]


def train(name: str, args, data: dict[str, Path], work: Path) -> dict:
    run_root = work / "runs" / name
    done = run_root / "measured.json"
    if args.reuse and done.is_file():
        return json.loads(done.read_text())
    options = variant_options(name, args.replay, {"learning_rate": args.learning_rate})
    train_data = packed_train_data(data["train"]) if "pk" in name.split("+")[1:] else data["train"]
    cmd = whisper_ft("finetune", "--base_model", "base", "--train_data", str(train_data),
                     "--test_data", str(data["select"]), "--language", "zh", "--output_dir", str(run_root),
                     "--overwrite_output_dir", "--max_steps", str(args.max_steps),
                     "--warmup_steps", str(args.warmup_steps), "--per_device_train_batch_size", str(args.batch_size),
                     "--eval_steps", str(args.eval_every), "--save_steps", str(args.eval_every),
                     "--save_total_limit", "1", "--eval_on_start", "--num_threads", str(args.threads),
                     "--report_to", "none", *options)
    run_root.mkdir(parents=True, exist_ok=True)
    row = run_watched(cmd, run_root / "finetune.log")
    run_dir = next(p for p in run_root.iterdir() if p.is_dir() and (p / "best").is_dir())
    best = json.loads((run_dir / "best" / "metrics.json").read_text())
    row |= {"run_dir": str(run_dir), "max_steps": args.max_steps, "best_step": best.get("step"),
            "select_cer_best": best.get("value"), "command": " ".join(cmd), "options": options}
    done.write_text(json.dumps(row, indent=1))
    return row


def packed_train_data(train: Path) -> Path:
    """The training sentences packed into 30 s windows by `whisper-ft prepare pack` (same seed)."""
    packed = train.with_name("train_packed.jsonl")
    subprocess.run(whisper_ft("prepare", "pack", "--manifest", str(train), "--output", str(packed)),
                   check=True, stdout=subprocess.DEVNULL)
    return packed


def export(name: str, trained: dict, work: Path, reuse: bool) -> tuple[Path, Path]:
    """(transformers folder, CTranslate2 float16 folder) of the variant's best/."""
    best = Path(trained["run_dir"]) / "best"
    hf = best
    if (best / "adapter_config.json").is_file():
        merged = work / "merged" / name  # merge writes OUTPUT_DIR/<base>-finetune
        done = [p for p in merged.glob("*") if (p / "config.json").is_file()] if merged.is_dir() else []
        if not (reuse and done):
            subprocess.run(whisper_ft("merge", "--lora_model", str(best), "--output_dir", str(merged), "--force"),
                           check=True, stdout=subprocess.DEVNULL)
        hf = next(p for p in merged.iterdir() if (p / "config.json").is_file())
    ct2 = work / "ct2" / name
    if not (reuse and (ct2 / "model.bin").is_file()):
        subprocess.run(whisper_ft("convert", "--model", str(hf), "--output_dir", str(ct2), "--force"),
                       check=True, stdout=subprocess.DEVNULL)
    return hf, ct2


def compare(path: str, models: list[str], sets: dict[str, Path], work: Path, threads: int, reuse: bool) -> dict:
    # one folder per path and model list: a report is reused only for exactly the models it compared
    out = work / "compare" / path.replace("@", "_") / "-".join(m.partition("=")[0] for m in models)
    if not (reuse and (out / "report.json").is_file()):
        kind, _, compute = path.partition("@")
        backend = "ct2" if kind.startswith("ct2") else kind
        cmd = whisper_ft("compare", "--backend", backend, "--models", ",".join(models),  # each clip's own language
                         "--cpu_threads", str(threads), "--output_dir", str(out), "--timestamp_clips", "0",
                         *[x for name, p in sets.items() for x in ("--test_data", f"{name}={p}")])
        if compute:
            cmd += ["--compute_type", compute]
        if kind == "ct2-unpacked":
            cmd.append("--no_pack")
        log("$ " + " ".join(cmd))
        t0 = time.time()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        log(f"{path}: {time.time() - t0:.0f} s")
    return json.loads((out / "report.json").read_text())


def summarise(report: dict) -> dict[str, dict]:
    """label -> {set: {rate, delta, low, high, significant}, nonspeech: with_text/decoded}."""
    labels = [m["label"] for m in report["models"]]
    out: dict[str, dict] = {label: {} for label in labels}
    for r in report["results"]:
        label = labels[r["model_index"]]
        cell = {"rate": round(100 * r["error_rate"], 2)}
        vs = r.get("vs_reference")
        if vs:
            cell |= {"delta": round(100 * vs["delta"], 2), "low": round(100 * vs["low"], 2),
                     "high": round(100 * vs["high"], 2), "significant": vs["significant"]}
        out[label][r["set"]] = cell
    for n in report["nonspeech"]["models"]:
        out[labels[n["model_index"]]]["nonspeech"] = f"{n['with_text']}/{n['decoded']}"
    return out


def parse_args(argv=None) -> argparse.Namespace:
    variants = "\n".join(f"  {k:<12} {v[0]}" for k, v in VARIANTS.items())
    ap = argparse.ArgumentParser(description=__doc__ + "\nvariants (+af: with --replay_data 0.2, --kl_to_base 1, "
                                 "--empty_audio_ratio 0.1; +pr: --prompt_ratio 0.5; +pk: trained on packed "
                                 "windows with --timestamps):\n" + variants,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated (default {DEFAULT_VARIANTS})")
    ap.add_argument("--held_out", type=int, default=60, help="train-speaker sentences never trained on (default 60)")
    ap.add_argument("--select", type=int, default=20, help="of those, the ones that choose best/ (default 20)")
    ap.add_argument("--other_clips", type=int, default=120, help="other-speaker sentences reported (default 120)")
    ap.add_argument("--max_steps", type=int, default=40)
    ap.add_argument("--eval_every", type=int, default=10, help="evaluate on the selection set every N steps")
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--warmup_steps", type=int, default=3)
    ap.add_argument("--learning_rate", default=None, help="replace every variant's learning rate")
    ap.add_argument("--compute_types", default="int8,int8_float32,float32", help="ct2 paths measured")
    ap.add_argument("--paths", default="hf,ct2", help="comma-separated: hf, ct2 (packed, as served), "
                    "ct2-unpacked (one window per clip)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work_dir", type=Path, default=ROOT / "benchmarks" / "work" / "single_voice")
    ap.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "single_voice.json")
    ap.add_argument("--reuse", action="store_true", help="reuse finished runs, exports and reports in --work_dir")
    args = ap.parse_args(argv)
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    if args.select >= args.held_out:
        ap.error("--select must be smaller than --held_out (the rest is what is reported)")
    return args


def main(argv=None) -> None:
    from inference import machine_info

    args = parse_args(argv)
    if not (AISHELL / "train.jsonl").is_file():
        sys.exit(f"single_voice: needs {AISHELL} (absent on this machine)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    work = args.work_dir
    data = split_data(work, args.held_out, args.select, args.other_clips, args.seed)
    args.replay, general = None, {}
    if SHARED_MANIFEST.is_file():
        from finetune_efficacy import split_general

        args.replay, general = split_general(SHARED_MANIFEST, work)
    started = time.time()
    runs = {name: train(name, args, data, work) for name in args.variant_list}
    exports = {name: export(name, runs[name], work, args.reuse) for name in args.variant_list}
    sets = {"same_speaker": data["report"], "other_speaker": data["other"],
            **{f"general_{lang}": p for lang, p in general.items()}}
    paths = []
    if "hf" in args.paths:
        paths.append("hf")
    for kind in ("ct2", "ct2-unpacked"):
        if kind in args.paths.split(","):
            paths += [f"{kind}@{c.strip()}" for c in args.compute_types.split(",") if c.strip()]
    measured = {}
    for path in paths:
        column = 0 if path == "hf" else 1
        models = ["base", *[f"{name}={exports[name][column]}" for name in args.variant_list]]
        measured[path] = summarise(compare(path, models, sets, work, args.threads, args.reuse))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    result = {"command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]), "commit": commit,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine_info(args.threads), "settings": {k: str(v) for k, v in vars(args).items()},
              "data": {k: str(v) for k, v in data.items()}, "runs": runs, "paths": measured,
              "minutes_total": round((time.time() - started) / 60, 1)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1, ensure_ascii=False))
    print(format_table(result))
    log(f"wrote {args.output}")


def _cell(c: dict | None, relative: bool = False) -> str:
    if not c:
        return "—"
    if "delta" not in c:
        return f"{c['rate']:.2f}%"
    change = f"{c['delta']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}]"
    if relative and c["rate"] - c["delta"] > 0:
        change += f", {100 * c['delta'] / (c['rate'] - c['delta']):+.0f}%"
    return f"{c['rate']:.2f}% ({change})"


def format_table(result: dict) -> str:
    head = ["variant", "path", "same speaker CER", "other speaker CER", "general zh", "general en",
            "non-speech with text", "train min (steps, best)", "peak RSS GB (tree)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for path, labels in result["paths"].items():
        for label, row in labels.items():
            run = result["runs"].get(label)
            train = f"{run['minutes']:.1f} ({run['max_steps']}, {run['best_step']})" if run else "—"
            rss = f"{run['peak_rss_gb']:.2f} ({run['peak_tree_rss_gb']:.2f})" if run else "—"
            lines.append("| " + " | ".join([
                "base (zero-shot)" if label == "base" else label, path, _cell(row.get("same_speaker"), True),
                _cell(row.get("other_speaker")), _cell(row.get("general_zh")), _cell(row.get("general_en")),
                row.get("nonspeech", "—"), train, rss]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
