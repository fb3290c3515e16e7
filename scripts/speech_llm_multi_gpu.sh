#!/usr/bin/env bash
# The speech-LLM recipe for real (not run on the development machine): AISHELL-1, a whisper-small
# (or medium) encoder, Qwen2.5-0.5B/1.5B-Instruct from the hub, several GPUs. Extra arguments go to
# `whisper-ft llm finetune` (they override the ones below).
#
#   scripts/speech_llm_multi_gpu.sh ddp                       # accelerate, all local GPUs
#   scripts/speech_llm_multi_gpu.sh deepspeed --lora_r 0      # ZeRO-2; projector only (SLAM-ASR)
#   scripts/speech_llm_multi_gpu.sh torchrun --llm Qwen/Qwen2.5-1.5B-Instruct --encoder openai/whisper-medium
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 scripts/speech_llm_multi_gpu.sh torchrun
#
# Data: `whisper-ft prepare aishell --target_dir dataset/` once (downloads data_aishell.tgz from
# OpenSLR), which writes dataset/train.jsonl and dataset/test.jsonl. The frozen encoder's outputs
# are cached once (--cache_encoder_outputs: about 0.5 MB per AISHELL clip in float16 for
# whisper-small, ~60 GB for the 120k training clips; drop the option to recompute them every step).
# --per_device_train_batch_size is per GPU: global batch = that x GPUs x accumulation steps.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-ddp}"
shift || true
NGPU="${NGPU:-$(nvidia-smi -L 2>/dev/null | wc -l)}"
NNODES="${NNODES:-1}"
NODE_RANK="${NODE_RANK:-0}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-29500}"
if [ "${NGPU}" -lt 1 ]; then echo "no GPU found (set NGPU)" >&2; exit 1; fi
if [ ! -f dataset/train.jsonl ]; then
  echo "no dataset/train.jsonl: run 'whisper-ft prepare aishell --target_dir dataset/' first" >&2; exit 1
fi

RECIPE=(llm finetune
  --encoder openai/whisper-small --llm Qwen/Qwen2.5-0.5B-Instruct --projector concat5-mlp
  --lora_r 8 --lora_target q_proj,v_proj --prompt "Transcribe speech to text."
  --train_data dataset/train.jsonl --test_data dataset/test.jsonl --language zh
  --cache_encoder_outputs --output_dir models/ --bf16
  --learning_rate 1e-4 --warmup_steps 1000 --max_steps 100000
  --per_device_train_batch_size 8 --per_device_eval_batch_size 16
  --eval_steps 2000 --save_steps 2000 --max_eval_samples 2000 --num_workers 4)

case "$mode" in
  ddp)
    exec accelerate launch --config_file scripts/accelerate_multi_gpu.yaml \
      --num_processes $((NGPU * NNODES)) --num_machines "$NNODES" --machine_rank "$NODE_RANK" \
      --main_process_ip "$MASTER_ADDR" --main_process_port "$MASTER_PORT" \
      -m whisper_ft "${RECIPE[@]}" "$@" ;;
  deepspeed)
    exec accelerate launch --config_file scripts/accelerate_deepspeed_zero2.yaml \
      --num_processes $((NGPU * NNODES)) --num_machines "$NNODES" --machine_rank "$NODE_RANK" \
      --main_process_ip "$MASTER_ADDR" --main_process_port "$MASTER_PORT" \
      -m whisper_ft "${RECIPE[@]}" "$@" ;;
  torchrun)
    exec torchrun --nproc_per_node "$NGPU" --nnodes "$NNODES" --node_rank "$NODE_RANK" \
      --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
      -m whisper_ft "${RECIPE[@]}" "$@" ;;
  *)
    echo "usage: $0 ddp|deepspeed|torchrun [whisper-ft llm finetune options]" >&2; exit 2 ;;
esac
