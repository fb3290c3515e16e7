"""Fine-tune efficacy: does LoRA teach whisper-base a new domain without forgetting real speech?

    .venv/bin/python benchmarks/finetune_efficacy.py                       # default recipe, 30 min budget
    .venv/bin/python benchmarks/finetune_efficacy.py --recipes packed-top2,packed-top2-r8 --minutes 20
    .venv/bin/python benchmarks/finetune_efficacy.py --preset aishell --recipes aishell-plain,aishell-kl --max_steps 30

The domain: HSK Mandarin sentences spoken by espeak-ng (built like `make demo` builds it, or
--train/--test manifests). For each recipe (a set of `whisper-ft finetune` options, below) the
script trains for at most --minutes of wall time (``--max_steps`` from a measured step time), then
measures with the same commands a user runs (`whisper-ft eval`, transformers greedy):

  domain CER      held-out espeak sentences (no sentence shared with training), before and after
  real zh / en    the real clips of ../shared/audio (forgetting; within +2 points is the target)
  loops           hypotheses that repeat themselves (a 1-4 token n-gram 4+ times in a row, or
                  twice the reference's length): hallucination loops
  minutes, s/step training wall time (evaluations during training included) and seconds per step
  peak RSS        the largest process of the run (``ru_maxrss`` of the finetune process tree)

  non-speech      words written on generated silence / noise / hum (``training.empty_audio``, a seed
                  no training run uses): any text there is a hallucination

``best/`` is chosen on a selection set that is never reported: ``--select_clips`` utterances from
the same pool as the reported ones (the held-out TTS sentences, or test.jsonl with ``--preset
aishell``), none of them a reported utterance or sentence (with ``--train/--test``: split off the
given test manifest). Training-time evaluation reads only that set.

``--preset aishell`` trains on real Mandarin instead (``../shared/aishell_sample``: train.jsonl, one
speaker, 33 min -> test.jsonl, another speaker; ``--domain_clips`` of it, seeded, for the final
measurement) with the anti-forgetting recipes ``aishell-*`` (one clip per sample, lr 1e-4, LoRA on
the decoder + top 2 encoder layers). Replay needs general speech with transcripts, and offline
there is none but the clips of ../shared/audio, which are also the general test set. So the preset
splits them (seeded, per language) into a replay half and a general-test half, and every row of
the preset, the base model's included, is measured on the general-test half only: no row is tested
on a clip it trained on. That leaves 4 zh and 8 en test clips: only large changes show, and the
replay half comes from the same sources as the test half (favourable to replay; say so when
quoting it).

The table goes to stdout and everything to --output (JSON). One heavy job at a time: timings on
a shared machine drift, so each row also records the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "finetune_efficacy.json"
SHARED_MANIFEST = ROOT.parent / "shared" / "audio" / "manifest.jsonl"
AISHELL = ROOT.parent / "shared" / "aishell_sample"
REPLAY = "{replay}"  # placeholder in recipe options: the replay manifest of the run
DOMAIN_MAX_NEW_TOKENS = "96"  # domain sentences are < 60 tokens; caps the base model's loops


def packed_recipe(*, r: int = 32, lr: str = "1e-3", encoder_layers: int | None = None) -> list[str]:
    """finetune options of a packed-window recipe (--timestamps: the windows carry clip times)."""
    layers = [] if encoder_layers is None else ["--lora_encoder_layers", str(encoder_layers)]
    return ["--lora_r", str(r), "--lora_alpha", str(2 * r), "--lora_dropout", "0", *layers,
            "--timestamps", "--learning_rate", lr, "--warmup_steps", "5"]


# name -> (help, pack the training clips?, finetune options). Common options are added in train().
RECIPES: dict[str, tuple[str, bool, list[str]]] = {
    "issue-probe": (
        "the issue's throwaway recipe: LoRA r32 on every layer, one clip per window, lr 1e-3",
        False, ["--lora_r", "32", "--lora_alpha", "64", "--learning_rate", "1e-3", "--warmup_steps", "0"],
    ),
    "packed-top2": ("packed windows (--timestamps), LoRA r32 on the decoder + top 2 encoder layers, lr 1e-3",
                    True, packed_recipe(encoder_layers=2)),
    "packed-top2-lr5e-4": ("packed-top2 with lr 5e-4 (gentler: less forgetting, slower learning)",
                           True, packed_recipe(lr="5e-4", encoder_layers=2)),
    "packed-top2-r8": ("packed-top2 with rank 8 (alpha 16)", True, packed_recipe(r=8, encoder_layers=2)),
    "packed-all": ("packed windows (--timestamps), LoRA r32 on every layer (encoder included), lr 1e-3",
                   True, packed_recipe()),
    "packed-decoder": ("packed windows, LoRA r32 on the decoder only (encoder frozen)",
                       True, packed_recipe(encoder_layers=0)),
}

def aishell_recipe(*extra: str) -> list[str]:
    """One clip per sample (no packing), lr 1e-4, LoRA r32 on the decoder + top 2 encoder layers."""
    return ["--lora_r", "32", "--lora_alpha", "64", "--lora_dropout", "0", "--lora_encoder_layers", "2",
            "--learning_rate", "1e-4", "--warmup_steps", "3", *extra]


RECIPES |= {
    "aishell-plain": ("aishell: plain LoRA (decoder + top 2 encoder layers, lr 1e-4, unpacked clips)",
                      False, aishell_recipe()),
    "aishell-replay": ("aishell-plain + --replay_data (half of ../shared/audio) --replay_ratio 0.2",
                       False, aishell_recipe("--replay_data", REPLAY, "--replay_ratio", "0.2")),
    "aishell-kl": ("aishell-plain + --kl_to_base 1", False, aishell_recipe("--kl_to_base", "1")),
    "aishell-empty": ("aishell-plain + --empty_audio_ratio 0.1", False, aishell_recipe("--empty_audio_ratio", "0.1")),
    "aishell-all": ("aishell-plain + replay 0.2 + --kl_to_base 1 + --empty_audio_ratio 0.1",
                    False, aishell_recipe("--replay_data", REPLAY, "--replay_ratio", "0.2", "--kl_to_base", "1",
                                          "--empty_audio_ratio", "0.1")),
}
DEFAULT_RECIPES = "packed-top2"
AISHELL_DEFAULT_RECIPES = "aishell-plain,aishell-replay,aishell-kl,aishell-empty,aishell-all"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    recipes = "\n".join(f"  {k:<20} {v[0]}" for k, v in RECIPES.items())
    ap = argparse.ArgumentParser(description=__doc__ + "\nrecipes:\n" + recipes,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=("espeak", "aishell"), default="espeak",
                    help="espeak: the demo's synthetic domain (default); aishell: real Mandarin from ../shared/aishell_sample")
    ap.add_argument("--recipes", default=None,
                    help=f"comma-separated (default {DEFAULT_RECIPES}; with --preset aishell {AISHELL_DEFAULT_RECIPES})")
    ap.add_argument("--domain_clips", type=int, default=60,
                    help="--preset aishell: measure on this many test.jsonl utterances (seeded; default 60)")
    ap.add_argument("--nonspeech_clips", type=int, default=8, help="generated non-speech clips decoded per model")
    ap.add_argument("--minutes", type=float, default=30.0, help="training budget per recipe, wall minutes (default 30)")
    ap.add_argument("--max_steps", type=int, default=None, help="fixed step count instead of --minutes")
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--learning_rate", default=None, help="replace every recipe's learning rate (e.g. 5e-4)")
    ap.add_argument("--warmup_steps", default=None, help="replace every recipe's warmup steps")
    ap.add_argument("--eval_every", type=int, default=20, help="training-time domain CER every N steps (default 20)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train", default=None, help="training manifest (default: build the demo's espeak set)")
    ap.add_argument("--test", default=None, help="held-out domain manifest (default: the demo's)")
    ap.add_argument("--real", default=str(SHARED_MANIFEST), help="real clips for forgetting (default ../shared/audio)")
    ap.add_argument("--train_sentences", type=int, default=400)
    ap.add_argument("--test_sentences", type=int, default=100)
    ap.add_argument("--test_clips", type=int, default=32, help="held-out TTS clips reported (default 32)")
    ap.add_argument("--select_clips", type=int, default=16,
                    help="held-out clips that choose best/ during training, never reported (default 16)")
    ap.add_argument("--work_dir", default=None, help="default benchmarks/work/efficacy[-aishell]")
    ap.add_argument("--scales", default="1.0,0.5",
                    help="merge each adapter at these --scale values (WiSE-FT interpolation toward the base; default 1.0,0.5)")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse finished runs and reports under --work_dir instead of training/evaluating again")
    ap.add_argument("--output", default=None, help=f"default {DEFAULT_OUTPUT} (finetune_efficacy_aishell.json)")
    args = ap.parse_args(argv)
    suffix = "-aishell" if args.preset == "aishell" else ""
    args.work_dir = args.work_dir or str(ROOT / "benchmarks" / "work" / f"efficacy{suffix}")
    args.output = args.output or str(DEFAULT_OUTPUT.with_name(f"finetune_efficacy{suffix.replace('-', '_')}.json"))
    if args.recipes is None:
        args.recipes = AISHELL_DEFAULT_RECIPES if args.preset == "aishell" else DEFAULT_RECIPES
    args.recipe_list = [r.strip() for r in args.recipes.split(",") if r.strip()]
    try:
        args.scale_list = [float(x) for x in args.scales.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--scales {args.scales!r}: give comma-separated numbers, e.g. 1.0,0.5")
    unknown = [r for r in args.recipe_list if r not in RECIPES]
    if unknown or not args.recipe_list:
        ap.error(f"unknown recipe(s) {unknown}; choose from {', '.join(RECIPES)}")
    return args


def whisper_ft_exe() -> str:
    exe = Path(sys.executable).parent / "whisper-ft"
    return str(exe) if exe.exists() else "whisper-ft"


def run_measured(cmd: list[str], env: dict) -> tuple[float, float]:
    """Run ``cmd``; (wall seconds, peak RSS GB of its largest process), via a small wrapper process
    so that ru_maxrss covers this command only."""
    wrapper = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[2:]).returncode; "
               "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
               "sys.exit(rc)")
    rss_file = Path(env["WF_BENCH_TMP"]) / "rss.txt"
    log("$ " + " ".join(cmd))
    t0 = time.time()
    rc = subprocess.run([sys.executable, "-c", wrapper, str(rss_file), *cmd], env=env).returncode
    if rc != 0:
        sys.exit(f"finetune_efficacy: command failed (exit {rc}): {' '.join(cmd)}")
    return time.time() - t0, int(rss_file.read_text()) / 2**20


REUSE = False  # --reuse: an existing report.json is read instead of evaluating again


def evaluate(model: str, manifest: Path, out: Path, metric: str, threads: int, cap: str | None = None) -> dict:
    if REUSE and (out / "report.json").is_file() and (out / "predictions.jsonl").is_file():
        return score(out)
    cmd = [whisper_ft_exe(), "eval", "--model_path", model, "--test_data", str(manifest), "--metric", metric,
           "--batch_size", "8", "--cpu_threads", str(threads), "--output_dir", str(out)]
    if cap:
        cmd += ["--max_new_tokens", cap]
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return score(out)


def score(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    return {"error_rate": 100 * report["error_rate"], "loops": sum(is_loop(p) for p in preds), "n": len(preds)}


_REPEAT = re.compile(r"(.{1,8}?)\1{3,}")  # a 1-8 character unit 4+ times in a row


def is_loop(pred: dict) -> bool:
    """A hallucination loop: a short unit repeated 4+ times in a row that the reference does not
    repeat, or a hypothesis over twice the reference's length (+10 characters)."""
    hyp, ref = pred.get("hyp_norm", ""), pred.get("ref_norm", "")
    squeezed_hyp, squeezed_ref = hyp.replace(" ", ""), ref.replace(" ", "")
    if _REPEAT.search(squeezed_hyp) and not _REPEAT.search(squeezed_ref):
        return True
    return len(squeezed_hyp) > 2 * len(squeezed_ref) + 10


def real_manifests(path: Path, work: Path) -> dict[str, Path]:
    from demo import shared_manifests

    if not path.is_file():
        log(f"{path} not found: forgetting on real speech is not measured")
        return {}
    if path == SHARED_MANIFEST:
        return shared_manifests(work)
    return {"real": path}


def split_general(path: Path, work: Path, seed: int = 0) -> tuple[Path, dict[str, Path]]:
    """../shared/audio split per language (seeded) into a replay half and a general-test half."""
    import random

    from whisper_ft.core.manifest import read_manifest, write_manifest

    replay, tests = [], {}
    by_lang: dict[str, list] = {}
    for utt in read_manifest(path):
        by_lang.setdefault(utt.language, []).append(utt)
    for lang, utts in sorted(by_lang.items()):
        utts = sorted(utts, key=lambda u: u.key)
        random.Random(seed).shuffle(utts)
        half = len(utts) // 2
        replay += utts[:half]
        tests[lang] = work / f"general_test_{lang}.jsonl"
        write_manifest(tests[lang], utts[half:], relative=False)
    replay_path = work / "general_replay.jsonl"
    write_manifest(replay_path, replay, relative=False)
    log(f"general speech split: {len(replay)} clips for replay, "
        + ", ".join(f"{len(read_manifest(p))} {lang}" for lang, p in tests.items()) + " for testing")
    return replay_path, tests


def selection_set(pool: Path, reported: Path, n: int, work: Path, seed: int = 0) -> Path:
    """``n`` utterances of ``pool`` (seeded) that choose ``best/``: none is a reported utterance or
    says a reported sentence (TTS pools hold each sentence in several voices)."""
    import random

    from whisper_ft.core.manifest import read_manifest, write_manifest

    shown = read_manifest(reported)
    keys, texts = {u.key for u in shown}, {u.sentence.strip() for u in shown}
    free = [u for u in read_manifest(pool) if u.key not in keys and u.sentence.strip() not in texts]
    if len(free) < n:
        sys.exit(f"finetune_efficacy: only {len(free)} utterances of {pool} are not reported; "
                 f"--select_clips {n} needs more (lower it, or give a larger --test)")
    chosen = sorted(random.Random(seed).sample(range(len(free)), n))
    out = work / f"select_{n}.jsonl"
    write_manifest(out, [free[i] for i in chosen], relative=False)
    return out


def split_off_selection(path: Path, n: int, work: Path, seed: int = 0) -> tuple[Path, Path]:
    """A user's --test manifest split (seeded) into ``n`` selection utterances and the reported rest."""
    import random

    from whisper_ft.core.manifest import read_manifest, write_manifest

    utts = read_manifest(path)
    if len(utts) <= n:
        sys.exit(f"finetune_efficacy: --test {path} has {len(utts)} utterances; --select_clips {n} "
                 "leaves none to report (lower it)")
    order = list(range(len(utts)))
    random.Random(seed).shuffle(order)
    select, report = work / f"select_{n}.jsonl", work / "domain_test_reported.jsonl"
    write_manifest(select, [utts[i] for i in sorted(order[:n])], relative=False)
    write_manifest(report, [utts[i] for i in sorted(order[n:])], relative=False)
    return select, report


def domain_subset(path: Path, n: int, work: Path, seed: int = 0) -> Path:
    """``n`` utterances of ``path`` (seeded), in a manifest with absolute paths."""
    import random

    from whisper_ft.core.manifest import read_manifest, write_manifest

    utts = read_manifest(path)
    chosen = sorted(random.Random(seed).sample(range(len(utts)), min(n, len(utts))))
    out = work / f"domain_test_{len(chosen)}.jsonl"
    write_manifest(out, [utts[i] for i in chosen], relative=False)
    return out


NONSPEECH_SEED = 424242  # no training run draws non-speech with this seed


def nonspeech_words(model: str, n_clips: int, threads: int, language: str = "zh") -> dict:
    """Decode generated non-speech (each kind in turn, 2-10 s) with the model's own generation
    config (transformers, greedy): any text is a hallucination."""
    import numpy as np
    import torch

    from whisper_ft.decoding.hf import generate_texts
    from whisper_ft.models.loading import load_whisper
    from whisper_ft.training.empty_audio import KINDS, generate_nonspeech

    torch.set_num_threads(threads)
    loaded = load_whisper(model)
    rng = np.random.default_rng(NONSPEECH_SEED)
    clips = [generate_nonspeech(KINDS[k % len(KINDS)], float(rng.uniform(2, 10)), rng) for k in range(n_clips)]
    feats = np.stack([loaded.processor.feature_extractor(c, sampling_rate=16000, return_tensors="np")["input_features"][0]
                      for c in clips])
    hyps = generate_texts(loaded.model, loaded.processor, torch.from_numpy(feats), language=language, max_new_tokens=48)
    return {"clips": n_clips, "with_text": sum(bool(h.strip()) for h in hyps), "texts": hyps}


def measure(model: str, domain: Path, real: dict[str, Path], out: Path, threads: int, nonspeech: int = 0) -> dict:
    row = {"domain": evaluate(model, domain, out / "domain", "cer", threads, DOMAIN_MAX_NEW_TOKENS)}
    if nonspeech:
        row["nonspeech"] = nonspeech_words(model, nonspeech, threads)
    for lang, manifest in real.items():
        row[f"real_{lang}"] = evaluate(model, manifest, out / f"real_{lang}", "cer" if lang == "zh" else "wer", threads)
    return row


def curve(run_dir: Path) -> list[dict]:
    """Training-time domain CER per evaluation (from the last checkpoint's trainer_state.json)."""
    states = sorted(run_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    if not states:
        return []
    history = json.loads(states[-1].read_text())["log_history"]
    return [{"step": h["step"], "cer": round(100 * h["eval_cer"], 2)} for h in history if "eval_cer" in h]


def step_seconds(run_dir: Path, wall_seconds: float) -> float | None:
    """Seconds per optimizer step: the run's wall time less its evaluations, per step (an upper
    bound: model loading and checkpoint saving are included)."""
    states = sorted(run_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    if not states:
        return None
    state = json.loads(states[-1].read_text())
    evals = sum(h.get("eval_runtime", 0.0) for h in state["log_history"])
    return round((wall_seconds - evals) / max(1, state["global_step"]), 1)


def train(name: str, args, train_manifest: Path, select_manifest: Path, work: Path, env: dict,
          max_steps: int) -> dict:
    _, pack, options = RECIPES[name]
    if REPLAY in options:
        if args.replay_manifest is None:
            sys.exit(f"finetune_efficacy: recipe {name} needs general speech to replay ({SHARED_MANIFEST} is absent)")
        options = [str(args.replay_manifest) if o == REPLAY else o for o in options]
    for flag in ("learning_rate", "warmup_steps"):
        if getattr(args, flag) is not None:  # --learning_rate/--warmup_steps override the recipe's
            at = options.index(f"--{flag}")
            options = [*options[:at + 1], str(getattr(args, flag)), *options[at + 2:]]
    run_root = work / "runs" / name
    data = train_manifest
    if pack:
        data = work / "packed" / "train.jsonl"
        if not data.is_file():
            subprocess.run([whisper_ft_exe(), "prepare", "pack", "--manifest", str(train_manifest), "--output", str(data)],
                           check=True, stdout=subprocess.DEVNULL)
    cmd = [whisper_ft_exe(), "finetune", "--base_model", "base", "--train_data", str(data),
           "--test_data", str(select_manifest), "--language", "zh", "--output_dir", str(run_root),
           "--per_device_train_batch_size", str(args.batch_size), "--max_steps", str(max_steps),
           "--eval_steps", str(args.eval_every), "--save_steps", str(args.eval_every), "--save_total_limit", "1",
           "--max_eval_samples", str(args.select_clips), "--num_threads", str(args.threads), *options]
    done = run_root / "measured.json"
    if REUSE and done.is_file():
        return json.loads(done.read_text())
    seconds, rss = run_measured(cmd, env)
    run_dir = next(p for p in run_root.iterdir() if p.is_dir())
    row = {"run_dir": str(run_dir), "train_minutes": round(seconds / 60, 2), "max_steps": max_steps,
           "seconds_per_step": step_seconds(run_dir, seconds), "peak_rss_gb": round(rss, 2), "curve": curve(run_dir),
           "command": " ".join(cmd)}
    done.write_text(json.dumps(row, indent=1))
    return row


def main(argv=None) -> None:
    global REUSE
    args = parse_args(argv)
    REUSE = args.reuse
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "4194304")  # glibc: give freed activation memory back
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WF_BENCH_TMP": str(work)}
    args.replay_manifest = None
    if args.preset == "aishell":
        if not (AISHELL / "train.jsonl").is_file():
            sys.exit(f"finetune_efficacy: --preset aishell needs {AISHELL} (absent on this machine)")
        train_manifest = Path(args.train or AISHELL / "train.jsonl")
        pool = Path(args.test or AISHELL / "test.jsonl")
        test_manifest = domain_subset(pool, args.domain_clips, work)
        select_manifest = selection_set(pool, test_manifest, args.select_clips, work)
    elif args.train and args.test:
        train_manifest = Path(args.train)
        select_manifest, test_manifest = split_off_selection(Path(args.test), args.select_clips, work)
    else:
        from demo import build_domain_set

        train_manifest, test_manifest = work / "tts" / "train.jsonl", work / "tts" / "test_small.jsonl"
        if not (train_manifest.is_file() and test_manifest.is_file()):
            train_manifest, test_manifest = build_domain_set(work, args.train_sentences, args.test_sentences,
                                                             args.test_clips, seed=0)
        select_manifest = selection_set(work / "tts" / "test.jsonl", test_manifest, args.select_clips, work)
    real = real_manifests(Path(args.real), work)
    if args.preset == "aishell" and real:  # replay half / general-test half: see the module docstring
        args.replay_manifest, real = split_general(Path(args.real), work)
    output = Path(args.output)
    results = json.loads(output.read_text()) if output.is_file() else {}
    results.setdefault("rows", {})
    results["settings"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                           if k not in {"recipe_list", "scale_list"}} | {
        "train": str(train_manifest), "test": str(test_manifest), "select": str(select_manifest),
        "cpu": os.cpu_count()}

    log("measuring the base model")
    results["base"] = measure("base", test_manifest, real, work / "reports" / "base", args.threads,
                              args.nonspeech_clips)
    for name in args.recipe_list:
        if args.max_steps:
            steps = args.max_steps
        else:  # a short timing run sets max_steps for the minute budget
            probe = train(name, args, train_manifest, select_manifest, work / "probe", env, max_steps=3)
            per_step = probe["seconds_per_step"] or 60.0
            steps = max(args.eval_every, int(args.minutes * 60 * 0.9 / per_step) // args.eval_every * args.eval_every)
            log(f"{name}: {per_step:.1f} s/step -> {steps} steps in {args.minutes:g} min")
        trained = train(name, args, train_manifest, select_manifest, work, env, steps)
        for scale in args.scale_list:
            label = name if scale == 1.0 else f"{name} --scale {scale:g}"
            merged = work / "merged" / label.replace(" --scale ", "_x")
            subprocess.run([whisper_ft_exe(), "merge", "--lora_model", str(Path(trained["run_dir"]) / "best"),
                            "--output_dir", str(merged), "--force", "--scale", str(scale)],
                           check=True, stdout=subprocess.DEVNULL)
            model = next(p for p in merged.iterdir() if p.is_dir())
            row = dict(trained, scale=scale, help=RECIPES[name][0], load_average=os.getloadavg())
            row |= measure(str(model), test_manifest, real, work / "reports" / merged.name, args.threads,
                           args.nonspeech_clips)
            results["rows"][label] = row
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print_table(results)
    log(f"wrote {output}")


def print_table(results: dict) -> None:
    base = results["base"]
    real_keys = [k for k in base if k.startswith("real_")]
    head = ["recipe", "domain CER", *[k.replace("_", " ") for k in real_keys], "loops", "non-speech with text",
            "train min", "s/step", "peak RSS GB"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")

    def cells(name: str, row: dict, train: bool) -> list[str]:
        loops = sum(row[k]["loops"] for k in ["domain", *real_keys] if k in row)
        out = [name, f"{row['domain']['error_rate']:.1f}%"]
        out += [f"{row[k]['error_rate']:.1f}% ({row[k]['error_rate'] - base[k]['error_rate']:+.1f})" if train and k in row
                else f"{row[k]['error_rate']:.1f}%" for k in real_keys]
        out.append(str(loops))
        ns = row.get("nonspeech")
        out.append(f"{ns['with_text']}/{ns['clips']}" if ns else "—")
        if train:
            sps = row.get("seconds_per_step")
            out += [f"{row['train_minutes']:.1f} ({row['max_steps']} steps)", f"{sps:.1f}" if sps else "—",
                    f"{row['peak_rss_gb']:.2f}"]
        else:
            out += ["—", "—", "—"]
        return out

    print("| " + " | ".join(cells("base (zero-shot)", base, False)) + " |")
    for name, row in results["rows"].items():
        print("| " + " | ".join(cells(name, row, True)) + " |")


if __name__ == "__main__":
    main()
