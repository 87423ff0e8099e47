#!/usr/bin/env bash
# Sparse prefill attention on the real SmolLM2-135M-Instruct weights (CPU, greedy): FlexPrefill and
# MInference alone and on top of the smollm2-135m pruning preset, against origin (dense, unpruned) and
# the preset alone, on the same samples: passkey and single needles at 2k and 4k tokens (depths 0, 0.5,
# 1) and at 8k (depth 0.5 only: an 8k prompt takes 2-5 minutes per config here), perplexity and greedy
# agreement at 2k and 4k; then the reports over all of it (--report-only). Two streams of one torch
# thread each (the shared 2-core machine). Re-running skips every finished (config, sample) pair.
set -euo pipefail
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1
C="--configs origin smollm2-135m eval/configs/smollm2-135m-flexprefill.yaml eval/configs/smollm2-135m-minference.yaml
   eval/configs/smollm2-135m-pruned-flexprefill.yaml eval/configs/smollm2-135m-pruned-minference.yaml
   --out eval/results/sparse --no-progress"
(
  sliminfer eval passkey $C --lengths 2048 4096 --depths 0 0.5 1 --samples 1 --no-chat
  sliminfer eval passkey $C --lengths 2048 4096 8000 --depths 0.5 --samples 1 --no-chat
  sliminfer eval lm $C --lengths 2048 4096 --samples 1
) &
(
  sliminfer eval needle $C --variant single --values number --lengths 2048 4096 --depths 0 0.5 1 --samples 1 --no-chat
  sliminfer eval needle $C --variant single --values number --lengths 2048 4096 8000 --depths 0.5 --samples 1 --no-chat
) &
wait
sliminfer eval passkey $C --lengths 2048 4096 8000 --depths 0 0.5 1 --samples 1 --no-chat --report-only
sliminfer eval needle $C --variant single --values number --lengths 2048 4096 8000 --depths 0 0.5 1 --samples 1 \
    --no-chat --report-only
# 2026-12-07 (third session): FlexPrefill at gamma 0.95, alone and with pruning, on the same samples
G="--configs eval/configs/smollm2-135m-flexprefill-g95.yaml eval/configs/smollm2-135m-pruned-flexprefill-g95.yaml
   --out eval/results/sparse --no-progress"
(
  sliminfer eval passkey $G --lengths 2048 4096 --depths 0 0.5 1 --samples 1 --no-chat
  sliminfer eval passkey $G --lengths 2048 4096 8000 --depths 0.5 --samples 1 --no-chat
) &
(
  sliminfer eval needle $G --variant single --values number --lengths 2048 4096 --depths 0 0.5 1 --samples 1 --no-chat
  sliminfer eval needle $G --variant single --values number --lengths 2048 4096 8000 --depths 0.5 --samples 1 --no-chat
) &
wait
C="--configs origin smollm2-135m eval/configs/smollm2-135m-flexprefill.yaml eval/configs/smollm2-135m-minference.yaml
   eval/configs/smollm2-135m-pruned-flexprefill.yaml eval/configs/smollm2-135m-pruned-minference.yaml
   eval/configs/smollm2-135m-flexprefill-g95.yaml eval/configs/smollm2-135m-pruned-flexprefill-g95.yaml
   --out eval/results/sparse --no-progress"
sliminfer eval passkey $C --lengths 2048 4096 8000 --depths 0 0.5 1 --samples 1 --no-chat --report-only
sliminfer eval needle $C --variant single --values number --lengths 2048 4096 8000 --depths 0 0.5 1 --samples 1 \
    --no-chat --report-only
