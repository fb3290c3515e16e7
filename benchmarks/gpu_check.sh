#!/usr/bin/env bash
# A short GPU check (under 8 minutes on one GPU), ready for the moment a device is lent:
#
#   LoRA training steps in bf16 and fp16, and a full fine-tune in bf16, on real clips with the bundled
#   whisper-base; CTranslate2 float16 and int8_float16 exports decoded with `eval --backend ct2`, packed
#   and unpacked; transformers vs CTranslate2 decoding throughput on the same clips; peak GPU memory of
#   each step (nvidia-smi, sampled every 100 ms). One table on stdout and a JSON (with each command,
#   the commit, the date and the machine) in RESULT.
#
#   benchmarks/gpu_check.sh                          # clips: ../shared/aishell_sample (or shared/ in the repo)
#   CLIPS=/data/aishell_sample benchmarks/gpu_check.sh   # a folder with train.jsonl and test.jsonl
#   DRY_RUN=1 benchmarks/gpu_check.sh                # print the commands, run none
#
# Settings (environment): CLIPS (folder of train.jsonl/test.jsonl; default the AISHELL sample beside or
# inside the checkout), STEPS (training steps per run, 30), BATCH (16), N_EVAL (test clips decoded, 200),
# WORK (scratch folder, default a new temp folder), RESULT (default benchmarks/results/gpu_check.json),
# WHISPER_FT (default: python -m whisper_ft), PYTHON (default python). Nothing is downloaded: the
# bundled whisper-base ('base') is the model. Untested until a device is lent (docs/finetune.md).
set -euo pipefail
cd "$(dirname "$0")/.."

DRY_RUN="${DRY_RUN:-0}"
STEPS="${STEPS:-30}"
BATCH="${BATCH:-16}"
N_EVAL="${N_EVAL:-200}"
PYTHON="${PYTHON:-python}"
RESULT="${RESULT:-benchmarks/results/gpu_check.json}"
read -r -a WFT <<< "${WHISPER_FT:-$PYTHON -m whisper_ft}"
export HF_HUB_OFFLINE=1 WHISPER_FT_OFFLINE=1 PYTHONUNBUFFERED=1

if [ -z "${CLIPS:-}" ]; then
  for candidate in shared/aishell_sample ../shared/aishell_sample; do
    if [ -s "$candidate/train.jsonl" ]; then CLIPS="$candidate"; break; fi
  done
fi
if [ "$DRY_RUN" = 1 ]; then
  CLIPS="${CLIPS:-../shared/aishell_sample}"
  WORK="${WORK:-/tmp/gpu_check}"
elif [ -z "${CLIPS:-}" ] || [ ! -s "$CLIPS/train.jsonl" ] || [ ! -s "$CLIPS/test.jsonl" ]; then
  echo "error: no real clips: set CLIPS to a folder with train.jsonl and test.jsonl (e.g. the AISHELL sample)" >&2
  exit 1
elif ! nvidia-smi -L >/dev/null 2>&1; then
  echo "error: no GPU (nvidia-smi fails): this check is for a machine with a CUDA GPU" >&2
  exit 1
fi
WORK="${WORK:-$(mktemp -d)}"
if [ "$DRY_RUN" != 1 ]; then
  mkdir -p "$WORK"
  : > "$WORK/phases.tsv"
fi

# The test clips decoded (the first N_EVAL, paths made absolute) and a small set scored during training.
if [ "$DRY_RUN" != 1 ]; then
  "$PYTHON" - "$CLIPS" "$WORK" "$N_EVAL" <<'EOF'
import json, sys
from pathlib import Path
clips, work, n = Path(sys.argv[1]).resolve(), Path(sys.argv[2]), int(sys.argv[3])
def absolute(name, limit):
    rows = [json.loads(line) for line in (clips / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    for r in rows:
        r["audio"]["path"] = str((clips / r["audio"]["path"]).resolve())
    return rows[:limit]
for name, out, limit in (("train.jsonl", "train.jsonl", None), ("test.jsonl", "test.jsonl", n),
                         ("test.jsonl", "dev.jsonl", 32)):
    (work / out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in absolute(name, limit)))
EOF
fi

# phase NAME COMMAND...: run it, time it, sample the GPU's memory meanwhile; one line in phases.tsv.
phase() {
  local name="$1"; shift
  echo "+ $*"
  if [ "$DRY_RUN" = 1 ]; then return 0; fi
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$WORK/mem-$name.log" 2>/dev/null &
  local sampler=$! rc=0 started ended
  started=$(date +%s.%N)
  "$@" > "$WORK/$name.out" 2> "$WORK/$name.err" || rc=$?
  ended=$(date +%s.%N)
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(awk -v a="$started" -v b="$ended" 'BEGIN { print b - a }')" "$*" \
    >> "$WORK/phases.tsv"
  if [ "$rc" != 0 ]; then echo "  $name failed (exit $rc): $(tail -n 1 "$WORK/$name.err")" >&2; fi
}

train=(finetune --base_model base --language zh --train_data "$WORK/train.jsonl" --test_data "$WORK/dev.jsonl"
       --max_steps "$STEPS" --eval_steps "$STEPS" --save_steps "$STEPS" --warmup_steps 5
       --per_device_train_batch_size "$BATCH" --per_device_eval_batch_size "$BATCH" --num_workers 4
       --report_to none --overwrite_output_dir)
phase lora-bf16 "${WFT[@]}" "${train[@]}" --bf16 --output_dir "$WORK/lora-bf16"
phase lora-fp16 "${WFT[@]}" "${train[@]}" --fp16 --output_dir "$WORK/lora-fp16"
phase full-bf16 "${WFT[@]}" "${train[@]}" --method full --bf16 --output_dir "$WORK/full-bf16"

evaluate=(eval --test_data "$WORK/test.jsonl" --language zh --metric cer --device cuda --batch_size "$BATCH")
for quant in float16 int8_float16; do
  phase "convert-$quant" "${WFT[@]}" convert --model base --quantization "$quant" --output_dir "$WORK/base-$quant" --force
  for pack in pack no_pack; do
    phase "ct2-$quant-$pack" "${WFT[@]}" "${evaluate[@]}" --model_path "$WORK/base-$quant" --backend ct2 \
      --compute_type "$quant" "--$pack" --output_dir "$WORK/eval-ct2-$quant-$pack"
  done
done
phase hf-cuda "${WFT[@]}" "${evaluate[@]}" --model_path base --backend hf --output_dir "$WORK/eval-hf"

if [ "$DRY_RUN" = 1 ]; then
  echo "+ $PYTHON benchmarks/gpu_check_summary.py --work $WORK --result $RESULT"
else
  "$PYTHON" benchmarks/gpu_check_summary.py --work "$WORK" --result "$RESULT"
fi
