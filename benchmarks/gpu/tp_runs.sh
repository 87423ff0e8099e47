#!/usr/bin/env bash
# The tensor-parallel runs on a 2-GPU machine (see tp_prefill.py): tp=2 vs tp=1 at 32k (kept positions,
# logits, TTFT), tp=2 TTFT at 128k, and the 70B shape at 64k (random shards). Logs to $OUT (default ./out).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # no NVLink multicast
OUT=${OUT:-out}
mkdir -p "$OUT"
S=benchmarks/gpu/tp_prefill.py
CK=${CHECKPOINT:-/tmp/l8b}
run() { echo "+ $*"; "$@" 2>&1 | grep -v -e Warning -e "warnings.warn" -e "it/s]" ; }
{
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  nvidia-smi topo -m
  run python3 -m torch.distributed.run --nproc-per-node 2 $S --shape llama-3.1-8b --checkpoint "$CK" --tokens 32768 --save "$OUT/tp2_32k.pt"
  run python3 $S --shape llama-3.1-8b --checkpoint "$CK" --tokens 32768 --save "$OUT/tp1_32k.pt"
  run python3 $S --compare "$OUT/tp1_32k.pt" "$OUT/tp2_32k.pt"
  run python3 -m torch.distributed.run --nproc-per-node 2 $S --shape llama-3.1-8b --checkpoint "$CK" --tokens 131072
  run python3 -m torch.distributed.run --nproc-per-node 2 $S --shape llama-70b --tokens 65536 --repeat 2
} 2>&1 | tee "$OUT/tp_runs.log"
