"""Time `whisper-ft finetune`: seconds per optimizer step, samples/s and peak RSS.

    python scripts/bench_finetune.py --manifest dataset/train.jsonl --base_model base \
        --batch_size 8 --threads 2 --steps 6

The first ``--warmup`` steps are not timed (allocator and thread-pool warm-up). No evaluation
runs (eval/save steps beyond the run). Peak RSS is the process's high-water mark
(``ru_maxrss``; DataLoader workers are separate processes, reported on their own).
Prints one JSON object to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", required=True, help="training manifest (also used as the test set)")
    ap.add_argument("--base_model", default="base")
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--lora_r", type=int, default=32)
    ap.add_argument("--gradient_checkpointing", action="store_true")
    ap.add_argument("--use_adalora", action="store_true")
    args = ap.parse_args()

    from transformers import TrainerCallback

    from whisper_ft.training.config import DataSettings, FinetuneConfig, LoraSettings, TrainSettings
    from whisper_ft.training.trainer import finetune

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_end(self, a, state, control, **kwargs):
            self.times.append(time.perf_counter())

    timer = StepTimer()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        config = FinetuneConfig(
            base_model=args.base_model,
            output_dir=out,
            lora=LoraSettings(r=args.lora_r, alpha=2 * args.lora_r, use_adalora=args.use_adalora),
            data=DataSettings(train_data=args.manifest, test_data=args.manifest, num_workers=args.workers,
                              max_eval_samples=1),
            train=TrainSettings(max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                                num_threads=args.threads, eval_steps=10**6, save_steps=10**6,
                                logging_steps=1, warmup_steps=0,
                                gradient_checkpointing=args.gradient_checkpointing),
        )
        # eval/save happen at the last step anyway; they come after the last timed step.
        finetune(config, callbacks=[timer])
    steps = timer.times[args.warmup:]
    per_step = (steps[-1] - steps[0]) / max(1, len(steps) - 1)
    print(json.dumps({
        "base_model": args.base_model,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "gradient_checkpointing": args.gradient_checkpointing,
        "timed_steps": len(steps) - 1,
        "sec_per_step": round(per_step, 3),
        "samples_per_sec": round(args.batch_size / per_step, 3),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        "peak_rss_workers_gb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 3),
        "total_sec": round(time.perf_counter() - start, 1),
        "cpu_count": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
