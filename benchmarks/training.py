"""Training speed: `whisper-ft finetune` vs a plain Seq2SeqTrainer LoRA baseline, side by side.

    .venv/bin/python benchmarks/training.py                     # demo's espeak set, 12 steps per row
    .venv/bin/python benchmarks/training.py --train dataset/train.jsonl --test dataset/test.jsonl --steps 20

Rows (same base model, training clips, batch size, learning rate, LoRA rank and steps):

  baseline           the HF fine-tuning blog recipe: Seq2SeqTrainer + peft LoRA (q/k/v/out/fc1/fc2,
                     every layer), features computed on the fly in the training process, random
                     order (no length grouping), eager attention
  finetune           `whisper-ft finetune` with its defaults (SDPA, frozen base without grads,
                     features in a DataLoader worker, duration-grouped batches)
  finetune-top2      + `--lora_encoder_layers 2` (adapters on the decoder + top 2 encoder layers:
                     no backward through the lower encoder)
  finetune-packed    + the clips packed into 30 s windows first (`whisper-ft prepare pack`,
                     `--timestamps`): Whisper always encodes 30 s, so a window of ~5 clips costs
                     what one clip costs

Columns: seconds per optimizer step (the first --warmup steps not timed), clips/s and speech
seconds/s (training throughput), peak RSS of the run's process tree, and the held-out loss after
the run (teacher-forced cross-entropy on --test, plain labels, the same code for every row) --
"faster at equal loss" needs both. Each row runs in its own process, one at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "training.json"
LORA_MODULES = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
ROWS = ["baseline", "finetune", "finetune-top2", "finetune-packed"]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base_model", default="base", help="bundled name, local folder or hub id (default base)")
    ap.add_argument("--train", default=None, help="training manifest (default: the demo's espeak Mandarin set)")
    ap.add_argument("--test", default=None, help="held-out manifest for the loss (default: the demo's)")
    ap.add_argument("--language", default="zh")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    ap.add_argument("--steps", type=int, default=12, help="optimizer steps per row (default 12)")
    ap.add_argument("--warmup", type=int, default=2, help="first steps not timed (default 2)")
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lora_r", type=int, default=32)
    ap.add_argument("--learning_rate", type=float, default=1e-3)
    ap.add_argument("--test_clips", type=int, default=32, help="held-out clips for the loss (default 32)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                    help="cuda: bf16 training where supported (default auto)")
    ap.add_argument("--work_dir", default=str(ROOT / "benchmarks" / "work" / "training"))
    ap.add_argument("--output", default=str(DEFAULT_OUTPUT))
    ap.add_argument("--_row", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.row_list = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in args.row_list if r not in ROWS]
    if unknown or not args.row_list:
        ap.error(f"unknown row(s) {unknown}; choose from {', '.join(ROWS)}")
    if args.steps <= args.warmup + 1:
        ap.error("--steps must exceed --warmup by at least 2 (two timed step ends)")
    return args


def use_cuda(args) -> bool:
    import torch

    return args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())


# ----------------------------------------------------------------------------------------------
# Shared by every row: held-out loss and step timing.


def heldout_loss(model, processor, manifest: Path, language: str, n_clips: int, batch_size: int) -> float:
    """Mean teacher-forced cross-entropy per label token on the first ``n_clips`` of ``manifest``."""
    import torch

    from whisper_ft.core.manifest import read_manifest
    from whisper_ft.training.data import SpeechCollator
    from whisper_ft.training.labels import LabelBuilder, encode_text

    builder = LabelBuilder.from_tokenizer(processor.tokenizer)
    utts = read_manifest(manifest)[:n_clips]
    texts = encode_text(processor.tokenizer, [u.sentence for u in utts])
    collate = SpeechCollator(builder.sot)
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(utts), batch_size):
            items = [{"input_features": processor.feature_extractor(u.load_audio(), sampling_rate=16000,
                                                                     return_tensors="np")["input_features"][0],
                      "labels": builder.plain(language, ids)} for u, ids in zip(utts[i:i + batch_size],
                                                                                 texts[i:i + batch_size])]
            batch = collate(items)
            n = int((batch["labels"] != -100).sum())
            dtype = next(p for p in model.parameters()).dtype
            out = model(input_features=batch["input_features"].to(device, dtype), labels=batch["labels"].to(device))
            total += float(out.loss) * n
            tokens += n
    return total / tokens


def step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []
            self.model = None
            self.losses: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

        def on_train_end(self, args, state, control, model=None, **kwargs):
            self.model = model

    return StepTimer()


# ----------------------------------------------------------------------------------------------
# The rows.


def run_baseline(args, train: Path, timer):
    """The plain recipe, written as the HF blog / Whisper-Finetune write it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, WhisperForConditionalGeneration

    from whisper_ft.core.manifest import read_manifest
    from whisper_ft.training.model import load_processor, resolve_base_model

    base = resolve_base_model(args.base_model)
    processor = load_processor(base)
    processor.tokenizer.set_prefix_tokens(language=args.language, task="transcribe", predict_timestamps=False)
    cuda = use_cuda(args)
    model = WhisperForConditionalGeneration.from_pretrained(str(base.hf_path), attn_implementation="eager")
    model.config.forced_decoder_ids = None
    model = get_peft_model(model, LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.05,
                                             target_modules=LORA_MODULES))
    utts = read_manifest(train)

    class OnTheFly(torch.utils.data.Dataset):
        def __len__(self):
            return len(utts)

        def __getitem__(self, i):
            u = utts[i]
            feats = processor.feature_extractor(u.load_audio(), sampling_rate=16000).input_features[0]
            return {"input_features": feats, "labels": processor.tokenizer(u.sentence).input_ids}

    def collate(items):
        batch = processor.feature_extractor.pad([{"input_features": x["input_features"]} for x in items],
                                                return_tensors="pt")
        labels = processor.tokenizer.pad([{"input_ids": x["labels"]} for x in items], return_tensors="pt")
        ids = labels["input_ids"].masked_fill(labels.attention_mask.ne(1), -100)
        if (ids[:, 0] == model.config.decoder_start_token_id).all():
            ids = ids[:, 1:]
        batch["labels"] = ids
        return batch

    targs = Seq2SeqTrainingArguments(
        output_dir=str(Path(args.work_dir) / "baseline_out"), max_steps=args.steps,
        per_device_train_batch_size=args.batch_size, learning_rate=args.learning_rate, warmup_steps=0,
        lr_scheduler_type="linear", logging_steps=1, save_strategy="no", eval_strategy="no", report_to=[],
        remove_unused_columns=False, label_names=["labels"], use_cpu=not cuda, bf16=cuda, seed=0,
        dataloader_num_workers=0, disable_tqdm=True,
    )
    trainer = Seq2SeqTrainer(model=model, args=targs, train_dataset=OnTheFly(), data_collator=collate,
                             callbacks=[timer])
    trainer.train()
    return model, processor


def run_finetune(args, train: Path, test: Path, timer, *, encoder_layers: int | None, timestamps: bool):
    from whisper_ft.training.config import DataSettings, FinetuneConfig, LoraSettings, TrainSettings
    from whisper_ft.training.model import load_processor, resolve_base_model
    from whisper_ft.training.trainer import finetune

    cuda = use_cuda(args)
    config = FinetuneConfig(
        base_model=args.base_model,
        output_dir=str(Path(args.work_dir) / f"finetune_out_{encoder_layers}_{timestamps}"),
        lora=LoraSettings(r=args.lora_r, alpha=2 * args.lora_r, encoder_layers=encoder_layers),
        data=DataSettings(train_data=str(train), test_data=str(test), language=args.language,
                          timestamps=timestamps, max_eval_samples=1),
        # eval/save steps beyond the run: no evaluation inside the timed steps
        train=TrainSettings(max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                            learning_rate=args.learning_rate, warmup_steps=0, num_threads=args.threads,
                            eval_steps=10**6, save_steps=10**6, logging_steps=1, bf16=cuda),
    )
    finetune(config, callbacks=[timer])
    return timer.model, load_processor(resolve_base_model(args.base_model))


def packed_manifest(args, train: Path) -> Path:
    out = Path(args.work_dir) / "packed" / "train.jsonl"
    if not out.is_file():
        exe = Path(sys.executable).parent / "whisper-ft"
        subprocess.run([str(exe), "prepare", "pack", "--manifest", str(train), "--output", str(out)], check=True,
                       stdout=subprocess.DEVNULL)
    return out


def run_row(args) -> None:
    """In a child process: train one row, print its measurements as one JSON line."""
    import torch

    from whisper_ft.core.manifest import read_manifest

    torch.set_num_threads(args.threads)
    train, test = Path(args.train), Path(args.test)
    data = packed_manifest(args, train) if args._row == "finetune-packed" else train
    timer = step_timer()
    if args._row == "baseline":
        model, processor = run_baseline(args, data, timer)
    else:
        layers = None if args._row == "finetune" else 2
        model, processor = run_finetune(args, data, test, timer, encoder_layers=layers,
                                        timestamps=args._row == "finetune-packed")
    steps = timer.times[args.warmup:]
    per_step = (steps[-1] - steps[0]) / (len(steps) - 1)
    utts = read_manifest(data)
    clips_per_item = sum(len(u.extra.get("packed", [])) or 1 for u in utts) / len(utts)
    seconds_per_item = sum(u.duration or 0.0 for u in utts) / len(utts)
    loss = heldout_loss(model, processor, test, args.language, args.test_clips, args.batch_size)
    print(json.dumps({
        "sec_per_step": round(per_step, 3),
        "clips_per_sec": round(args.batch_size * clips_per_item / per_step, 3),
        "speech_sec_per_sec": round(args.batch_size * seconds_per_item / per_step, 2),
        "clips_per_window": round(clips_per_item, 2),
        "train_loss_last": timer.losses[-1] if timer.losses else None,
        "heldout_loss": round(loss, 4),
    }))


def measure_row(name: str, args, train: Path, test: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_row", name, "--rows", name, "--train", str(train),
           "--test", str(test), "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch_size",
           str(args.batch_size), "--threads", str(args.threads), "--lora_r", str(args.lora_r), "--learning_rate",
           str(args.learning_rate), "--test_clips", str(args.test_clips), "--base_model", args.base_model,
           "--language", args.language, "--device", args.device, "--work_dir", args.work_dir]
    log(f"\n== {name}: $ {' '.join(cmd)}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"training benchmark: row {name} failed (exit {code})")
    row = json.loads(stdout.strip().splitlines()[-1])
    row["peak_rss_gb"] = round(usage.ru_maxrss / 2**20, 2)  # the largest process of the row's tree
    return row


def default_data(args) -> tuple[Path, Path]:
    from demo import build_domain_set

    work = Path(args.work_dir)
    train, test = work / "tts" / "train.jsonl", work / "tts" / "test_small.jsonl"
    if not (train.is_file() and test.is_file()):
        work.mkdir(parents=True, exist_ok=True)
        train, test = build_domain_set(work, 400, 100, args.test_clips, seed=0)
    return train, test


def main(argv=None) -> None:
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "4194304")  # glibc: give freed activations back
    if args._row:
        return run_row(args)
    if not (args.train and args.test):
        args.train, args.test = default_data(args)
    train, test = Path(args.train), Path(args.test)
    results = {"settings": {k: v for k, v in vars(args).items() if k not in {"row_list", "_row"}} | {
        "train": str(train), "test": str(test), "cpu_count": os.cpu_count()}, "rows": {}}
    output = Path(args.output)
    for name in args.row_list:
        results["rows"][name] = measure_row(name, args, train, test)
        results["rows"][name]["load_average"] = os.getloadavg()
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=1))
    print_table(results)
    log(f"wrote {output}")


def print_table(results: dict) -> None:
    rows = results["rows"]
    base = rows.get("baseline")
    head = ["row", "s/step", "clips/s", "speech s/s", "speedup (clips/s)", "held-out loss", "peak RSS GB"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for name, r in rows.items():
        speed = f"{r['clips_per_sec'] / base['clips_per_sec']:.2f}×" if base else "—"
        print(f"| {name} | {r['sec_per_step']:.2f} | {r['clips_per_sec']:.2f} | {r['speech_sec_per_sec']:.1f} | "
              f"{speed} | {r['heldout_loss']:.3f} | {r['peak_rss_gb']:.2f} |")


if __name__ == "__main__":
    main()
