#!/usr/bin/env bash
# Multi-GPU / multi-node recipes for `whisper-ft finetune` (DDP; the frozen base needs no gradient
# sync, only the LoRA weights are all-reduced). Every extra argument goes to `whisper-ft finetune`.
#
#   scripts/finetune_multi_gpu.sh ddp       --base_model openai/whisper-base --language zh --fp16
#   scripts/finetune_multi_gpu.sh deepspeed --base_model openai/whisper-base --language zh --fp16
#   scripts/finetune_multi_gpu.sh torchrun  --base_model openai/whisper-base --language zh --fp16
#
# Multi-node (run on every node; NODE_RANK 0..NNODES-1, MASTER_ADDR = node 0's address):
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 scripts/finetune_multi_gpu.sh torchrun --fp16 ...
#
# --per_device_train_batch_size is per GPU: the global batch is that x GPUs x accumulation steps.
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

case "$mode" in
  ddp)
    exec accelerate launch --config_file scripts/accelerate_multi_gpu.yaml \
      --num_processes $((NGPU * NNODES)) --num_machines "$NNODES" --machine_rank "$NODE_RANK" \
      --main_process_ip "$MASTER_ADDR" --main_process_port "$MASTER_PORT" \
      -m whisper_ft finetune "$@" ;;
  deepspeed)
    exec accelerate launch --config_file scripts/accelerate_deepspeed_zero2.yaml \
      --num_processes $((NGPU * NNODES)) --num_machines "$NNODES" --machine_rank "$NODE_RANK" \
      --main_process_ip "$MASTER_ADDR" --main_process_port "$MASTER_PORT" \
      -m whisper_ft finetune "$@" ;;
  torchrun)
    exec torchrun --nproc_per_node "$NGPU" --nnodes "$NNODES" --node_rank "$NODE_RANK" \
      --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
      -m whisper_ft finetune "$@" ;;
  *)
    echo "usage: $0 ddp|deepspeed|torchrun [whisper-ft finetune options]" >&2; exit 2 ;;
esac
