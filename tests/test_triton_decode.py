"""The Triton decode kernel (``decode.kernel: triton``): its chunk plan, its refusal where it cannot run, and
its arithmetic in Triton's CPU interpreter (float32, against masked SDPA and the eager decode's tokens).

On the GPU, ``benchmarks/gpu/decode_kernels.py`` checks it in bfloat16 and times it against the other
kernels. Without Triton (a CPU build of torch and no ``triton`` package) the interpreter test is skipped;
``make test`` installs Triton (requirements-cpu.txt), so CI runs it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sliminfer import ConfigError, SlimPipeline
from sliminfer.decode import kernels
from sliminfer.decode.run import static_generate
from sliminfer.decode.triton_attention import CHUNK_ALIGN, MAX_SPLITS, split_plan
from sliminfer.testing.tiny_models import tiny_model

CHECKS = Path(__file__).with_name("triton_interpreter_checks.py")


@pytest.mark.parametrize("capacity", [256, 2304, 4352, 8448, 33024, 131328, 1_000_192])
@pytest.mark.parametrize("kv_heads", [1, 3, 8])
def test_split_plan_covers_the_buffer_in_aligned_chunks(capacity: int, kv_heads: int) -> None:
    splits, chunk = split_plan(capacity, kv_heads, programs=528)
    assert chunk % CHUNK_ALIGN == 0
    assert 1 <= splits <= MAX_SPLITS
    assert splits * chunk >= capacity > (splits - 1) * chunk  # every slot in a chunk, no chunk wholly past the end
    assert splits <= max(1, min(MAX_SPLITS, -(-528 // kv_heads)))  # never more programs than asked for


def test_triton_kernel_is_refused_off_cuda() -> None:
    pipe = SlimPipeline.from_pretrained(tiny_model("llama", seed=0))
    ids = torch.randint(0, 256, (1, 40), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ConfigError, match=r"decode.kernel: got 'triton'.*needs a CUDA device and Triton.*cpu"):
        static_generate(pipe, ids, 4, options={"kernel": "triton"})


@pytest.mark.parametrize(("compiled", "triton_runs", "expected"), [
    (True, True, "triton"), (True, False, "split"), (False, True, "sdpa"), (False, False, "sdpa")])
def test_auto_picks_triton_for_compiled_decodes_where_it_runs(monkeypatch: pytest.MonkeyPatch, compiled: bool,
                                                              triton_runs: bool, expected: str) -> None:
    """``auto``'s rule (measured on an H100: Triton 0.81 ms of attention per step at 32k, compiled split 1.27 ms);
    on the CPU no FlashAttention, so the uncompiled choice is SDPA."""
    monkeypatch.setattr(kernels, "triton_decode_available", lambda device: triton_runs)
    assert kernels.resolve_kernel("auto", compiled, torch.device("cpu"), torch.float32) == expected


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_triton_kernel_in_the_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    run = subprocess.run([sys.executable, str(CHECKS)], env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr[-4000:]
    lines = run.stdout.splitlines()
    assert sum(line.startswith("ok kernel") for line in lines) == 5, run.stdout
    assert sum(line.startswith("ok decode") for line in lines) == 3, run.stdout
