#!/usr/bin/env bash
# AISHELL-1 on 1 or N GPUs, end to end, and one table in Whisper-Finetune's shape:
#
#   prepare (from the release archive data_aishell.tgz, or its extracted folder; downloads it when absent)
#   -> for each of whisper-tiny/base/small and each method (LoRA, full):
#      finetune (best/ chosen on dev, never on test) -> merge (LoRA only; a full run's best/ is the model)
#      -> compare with the base model on test (transformers; paired bootstrap) -> convert to float16 and
#      int8_float16 -> eval on test with CTranslate2 (each precision); model cards with the results
#   -> the table: model, method, CER before/after, ct2 CER, training time, and Whisper-Finetune's
#      published AISHELL numbers beside ours (scripts/aishell1_table.py says where they come from).
#
#   scripts/aishell1_gpu.sh                                            # ./data_aishell.tgz, all GPUs
#   ARCHIVE=/data/data_aishell.tgz MODELS="tiny base" METHODS=lora NGPU=1 scripts/aishell1_gpu.sh
#   DRY_RUN=1 scripts/aishell1_gpu.sh                                  # print every command, run none
#
# Settings (environment): ARCHIVE (data_aishell.tgz or data_aishell/; default ./data_aishell.tgz, else
# downloaded), WORK (default runs/aishell1), MODELS (default "tiny base small"), METHODS (default
# "lora full"), NGPU (default: every GPU nvidia-smi lists), PRECISION (bf16 where the GPU has it, else
# fp16), EPOCHS (3), BATCH (per GPU, 32), EVAL_SAMPLES (dev utterances decoded at each evaluation,
# 1000), EVAL_STEPS (1000), LR_LORA / LR_FULL (default: finetune's per-method defaults, 1e-3 / 1e-5),
# EXTRA (more `whisper-ft finetune` options), WHISPER_FT (the command, default whisper-ft),
# PYTHON (default python). Re-running skips finished steps (prepared data, finished runs, reports).
#
# Untested on a GPU so far (no device was lent while it was written): see docs/finetune.md.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY_RUN="${DRY_RUN:-0}"
WORK="${WORK:-runs/aishell1}"
MODELS="${MODELS:-tiny base small}"
METHODS="${METHODS:-lora full}"
EPOCHS="${EPOCHS:-3}"
BATCH="${BATCH:-32}"
EVAL_SAMPLES="${EVAL_SAMPLES:-1000}"
EVAL_STEPS="${EVAL_STEPS:-1000}"
WHISPER_FT="${WHISPER_FT:-whisper-ft}"
PYTHON="${PYTHON:-python}"
EXTRA="${EXTRA:-}"
DATA="$WORK/data"

say() { echo "[aishell1] $*" >&2; }
fresh() { [ "$DRY_RUN" != 1 ] && [ -e "$1" ] && [ "$1" -nt "$2" ]; }  # $1 exists and is newer than $2
run() {  # print the command; run it unless DRY_RUN=1
  echo "+ $*"
  if [ "$DRY_RUN" != 1 ]; then "$@"; fi
}

if [ -z "${NGPU:-}" ]; then
  NGPU="$(nvidia-smi -L 2>/dev/null | wc -l || true)"
  if [ "$DRY_RUN" = 1 ] && [ "$NGPU" -lt 1 ]; then NGPU=1; fi
fi
if [ "$NGPU" -lt 1 ]; then
  echo "error: no GPU found (nvidia-smi lists none); set NGPU, or use DRY_RUN=1 to see the commands" >&2
  exit 1
fi
if [ -z "${PRECISION:-}" ]; then
  PRECISION=bf16
  if [ "$DRY_RUN" != 1 ]; then
    PRECISION="$("$PYTHON" -c 'import torch; print("bf16" if torch.cuda.is_bf16_supported() else "fp16")')"
  fi
fi
case "$PRECISION" in bf16|fp16) ;; *) echo "error: PRECISION must be bf16 or fp16 (got $PRECISION)" >&2; exit 2 ;; esac
ARCHIVE="${ARCHIVE:-}"
if [ -z "$ARCHIVE" ] && [ -e data_aishell.tgz ]; then ARCHIVE=data_aishell.tgz; fi
say "work folder $WORK, models: $MODELS, methods: $METHODS, $NGPU GPU(s), $PRECISION"

# 1. Data: train/dev/test manifests (AISHELL-1's own split: 340 / 40 / 20 speakers).
if [ "$DRY_RUN" != 1 ] && [ -s "$DATA/test.jsonl" ] && [ -s "$DATA/train.jsonl" ] && [ -s "$DATA/dev.jsonl" ]; then
  say "prepared data found in $DATA"
elif [ -n "$ARCHIVE" ]; then
  run "$WHISPER_FT" prepare aishell --filepath "$ARCHIVE" --target_dir "$DATA"
else
  say "no ARCHIVE: downloading data_aishell.tgz from OpenSLR (15 GB, resumable)"
  run "$WHISPER_FT" prepare aishell --target_dir "$DATA"
fi

# One launcher for every training process: accelerate on several GPUs, a plain process on one.
launch() {
  if [ "$NGPU" -gt 1 ]; then
    run accelerate launch --config_file scripts/accelerate_multi_gpu.yaml --num_processes "$NGPU" -m whisper_ft "$@"
  else
    run "$PYTHON" -m whisper_ft "$@"
  fi
}

for size in $MODELS; do
  base="openai/whisper-$size"
  for method in $METHODS; do
    case "$method" in lora|full|adalora) ;; *) echo "error: METHODS takes lora, full, adalora (got $method)" >&2; exit 2 ;; esac
    tag="whisper-$size-$method"
    run_dir="$WORK/runs/$method/whisper-$size"
    lr=()
    if [ "$method" = full ] && [ -n "${LR_FULL:-}" ]; then lr=(--learning_rate "$LR_FULL"); fi
    if [ "$method" != full ] && [ -n "${LR_LORA:-}" ]; then lr=(--learning_rate "$LR_LORA"); fi
    if [ "$DRY_RUN" != 1 ]; then mkdir -p "$WORK/time"; fi

    # 2. Fine-tune; best/ by CER on (part of) dev. A finished run is kept.
    if [ "$DRY_RUN" != 1 ] && [ -e "$run_dir/best/metrics.json" ] && [ -e "$WORK/time/$tag.json" ]; then
      say "$tag: trained already ($run_dir/best)"
    else
      started=$(date +%s)
      # shellcheck disable=SC2086  # EXTRA is a list of options
      launch finetune --base_model "$base" --method "$method" --language zh \
        --train_data "$DATA/train.jsonl" --test_data "$DATA/dev.jsonl" --max_eval_samples "$EVAL_SAMPLES" \
        --output_dir "$WORK/runs/$method" --overwrite_output_dir --num_train_epochs "$EPOCHS" \
        --per_device_train_batch_size "$BATCH" --per_device_eval_batch_size "$BATCH" --"$PRECISION" \
        --eval_steps "$EVAL_STEPS" --save_steps "$EVAL_STEPS" --metric_for_best cer "${lr[@]}" $EXTRA
      if [ "$DRY_RUN" != 1 ]; then
        echo "{\"seconds\": $(( $(date +%s) - started )), \"gpus\": $NGPU, \"precision\": \"$PRECISION\"}" \
          > "$WORK/time/$tag.json"
      fi
    fi

    # 3. The model to deploy: LoRA merged into its base; a full fine-tune's best/ as it is.
    if [ "$method" = full ]; then
      model="$run_dir/best"
    else
      model="$WORK/merged/$method/whisper-$size-finetune"
      if ! fresh "$model/whisper_ft_merge.json" "$run_dir/best/metrics.json"; then
        run "$WHISPER_FT" merge --lora_model "$run_dir/best" --output_dir "$WORK/merged/$method" --force
      fi
    fi

    # 4. Before vs after on test (transformers, the same decoding for both; paired bootstrap); the
    #    model's card gets the comparison.
    if ! fresh "$WORK/compare/$tag/report.json" "$run_dir/best/metrics.json"; then
      run "$WHISPER_FT" compare --models "base=$base,$method=$model" --test_data "aishell_test=$DATA/test.jsonl" \
        --backend hf --device cuda --language zh --batch_size "$BATCH" --output_dir "$WORK/compare/$tag"
    fi
    run "$WHISPER_FT" card --model "$model" --compare_report "$WORK/compare/$tag"

    # 5. CTranslate2 exports and their CER on test (the GPU precisions faster-whisper serves with);
    #    each export's card gets its own result.
    for quant in float16 int8_float16; do
      ct2="$WORK/ct2/$tag-$quant"
      if ! fresh "$ct2/model.bin" "$WORK/compare/$tag/report.json"; then
        run "$WHISPER_FT" convert --model "$model" --output_dir "$ct2" --quantization "$quant" --force
      fi
      if ! fresh "$WORK/eval/$tag-$quant/report.json" "$ct2/model.bin"; then
        run "$WHISPER_FT" eval --model_path "$ct2" --test_data "$DATA/test.jsonl" --backend ct2 --device cuda \
          --compute_type "$quant" --language zh --metric cer --batch_size "$BATCH" --output_dir "$WORK/eval/$tag-$quant"
      fi
      run "$WHISPER_FT" card --model "$ct2" --eval_report "$WORK/eval/$tag-$quant"
    done
  done
done

# One table (stdout) and results.json.
if [ "$DRY_RUN" = 1 ]; then
  echo "+ $PYTHON scripts/aishell1_table.py --work $WORK --models '$MODELS' --methods '$METHODS'"
else
  "$PYTHON" scripts/aishell1_table.py --work "$WORK" --models "$MODELS" --methods "$METHODS"
fi
