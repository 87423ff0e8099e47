#!/usr/bin/env bash
# The tensor-parallel runs on a 2-GPU machine (see tp_prefill.py): tp=2 vs tp=1 at 32k (kept positions,
# logits, TTFT), tp=2 TTFT at 128k, the 70B shape at 64k (random shards), then the 32k comparison in float32.
# BF16=0 / FP32=0 skip a part. Logs to $OUT (default ./out).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # no NVLink multicast
OUT=${OUT:-out}
mkdir -p "$OUT"
S=benchmarks/gpu/tp_prefill.py
CK=${CHECKPOINT:-/tmp/l8b}
run() { echo "+ $*"; "$@" 2>&1 | grep -v -e Warning -e "warnings.warn" -e "it/s]" ; }
if [ "${BF16:-1}" = 1 ]; then
{
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  nvidia-smi topo -m
  run python3 -m torch.distributed.run --nproc-per-node 2 $S --shape llama-3.1-8b --checkpoint "$CK" --tokens 32768 --save "$OUT/tp2_32k.pt"
  run python3 $S --shape llama-3.1-8b --checkpoint "$CK" --tokens 32768 --save "$OUT/tp1_32k.pt"
  run python3 $S --compare "$OUT/tp1_32k.pt" "$OUT/tp2_32k.pt"
  run python3 -m torch.distributed.run --nproc-per-node 2 $S --shape llama-3.1-8b --checkpoint "$CK" --tokens 131072
  run python3 -m torch.distributed.run --nproc-per-node 2 $S --shape llama-70b --tokens 65536 --repeat 2
} 2>&1 | tee "$OUT/tp_runs.log"
fi
# the same comparison in float32 (bf16 rounding differs between one GEMM and a sharded GEMM + all-reduce,
# which flips near-tied blocks of random weights): tp=2 must keep exactly tp=1's positions
if [ "${FP32:-1}" = 1 ]; then
  {
    [ -f "$CK/config.json" ] || run python3 $S --shape llama-3.1-8b --checkpoint "$CK" --tokens 1024 --repeat 1 \
        --no-stock  # the same bf16 weights as above (upcast on load)
    run python3 -m torch.distributed.run --nproc-per-node 2 $S --shape llama-3.1-8b --checkpoint "$CK" --tokens 32768 \
        --dtype float32 --repeat 1 --no-stock --save "$OUT/tp2_32k_fp32.pt"
    run python3 $S --shape llama-3.1-8b --checkpoint "$CK" --tokens 32768 --dtype float32 --repeat 1 --no-stock \
        --save "$OUT/tp1_32k_fp32.pt"
    run python3 $S --compare "$OUT/tp1_32k_fp32.pt" "$OUT/tp2_32k_fp32.pt"
  } 2>&1 | tee "$OUT/tp_runs_fp32.log"
fi
