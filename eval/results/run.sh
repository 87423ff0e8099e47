#!/usr/bin/env bash
# Re-creates everything in eval/results: SmolLM2-135M-Instruct (real weights), CPU, greedy decoding,
# `origin` (unpruned, the reference) vs `smollm2-135m` (the SlimInfer preset), the same samples.
# Re-running skips every (config, sample) pair already in the .jsonl files and only rewrites the
# .md/.png reports; delete a .jsonl to redo that task. Two streams of one torch thread each: on the
# shared 2-core machine one thread per process was 2-20x faster than two.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
C="--configs origin smollm2-135m --out eval/results --no-progress"
(
  sliminfer eval needle $C --variant single     --lengths 1024 2048 4096 --depths 0 0.25 0.5 0.75 1 --samples 1
  sliminfer eval needle $C --variant multikey   --lengths 1024 2048 4096 --depths 0 0.5 1 --samples 1
  sliminfer eval needle $C --variant multivalue --lengths 1024 2048 --depths 0 0.5 1 --samples 1
  sliminfer eval needle $C --variant multiquery --lengths 1024 2048 --depths 0 0.5 1 --samples 1
  sliminfer eval needle $C --variant single --values uuid --lengths 1024 2048 --depths 0 0.5 1 --samples 1
  sliminfer eval passkey $C --lengths 1024 2048 4096 --depths 0 0.5 1 --samples 1
) &
(
  sliminfer eval lm $C --lengths 1024 2048 4096 8192 --samples 2
  sliminfer eval squad $C --lengths 1024 2048 4096 --samples 5
  sliminfer eval hotpotqa $C --lengths 1024 2048 4096 --samples 5
) &
wait
# the offload KV manager's decode budget (adds two configs; the first two are reused)
O="--configs origin smollm2-135m smollm2-135m-offload smollm2-135m-offload-attn --out eval/results --no-progress"
sliminfer eval needle $O --variant single --lengths 1024 2048 4096 --depths 0 0.25 0.5 0.75 1 --samples 1
sliminfer eval lm $O --lengths 1024 2048 4096 8192 --samples 2
