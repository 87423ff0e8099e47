#!/usr/bin/env bash
# Sparse prefill attention on the real SmolLM2-135M-Instruct weights (CPU, greedy): FlexPrefill and
# MInference alone and on top of the smollm2-135m pruning preset, against origin (dense, unpruned) and
# the preset alone, on the same samples: passkey and single needles at 2k / 4k / 8k tokens (3 depths),
# perplexity and greedy agreement at 2k / 4k / 8k. The .jsonl files started as copies of
# eval/results' (the origin and smollm2-135m records of the same samples are reused, not re-run).
# Two streams of one torch thread each (the shared 2-core machine).
set -euo pipefail
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1
C="--configs origin smollm2-135m eval/configs/smollm2-135m-flexprefill.yaml eval/configs/smollm2-135m-minference.yaml
   eval/configs/smollm2-135m-pruned-flexprefill.yaml eval/configs/smollm2-135m-pruned-minference.yaml
   --out eval/results/sparse --no-progress"
(
  sliminfer eval passkey $C --lengths 2048 4096 8000 --depths 0 0.5 1 --samples 1 --no-chat
  sliminfer eval lm $C --lengths 2048 4096 8192 --samples 2
) &
(
  sliminfer eval needle $C --variant single --values number --lengths 2048 4096 8000 --depths 0 0.5 1 --samples 1 --no-chat
) &
wait
