"""The elementwise-heavy pieces of a prefill layer, compiled to fused kernels (``prefill.compile``).

Why: a profile of the 8B shape's pruned prefill at 32k (H100, pruning + FlexPrefill @10 %,
benchmarks/results/h100-2026-12-07d/prefill-flexprefill10.json) spent about 130 of its 452 ms in
elementwise kernels and copies around the matmuls: transformers' RMSNorm runs about seven kernels over
float32 copies of the 32k x 4096 activations, RoPE's ``rotate_half`` a concatenation and four more, the
MLP's SiLU and product two more over 32k x 14336. ``torch.compile`` fuses each piece into one or two
kernels; the matmuls stay cuBLAS's.

The pieces take the layer's modules as arguments, so one compiled graph serves every layer (torch inlines
built-in modules: their weights are graph inputs, not constants), and shapes are dynamic after the first
(one graph for the full-length layers, one for all the pruned lengths). Off by default: the fused
kernels round differently from the eager ones (float32 tolerance, not bit equality), and the speed-up is
still to be measured on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from sliminfer.decode.compile_cache import use_compile_cache


def _norm(norm: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    return norm(hidden)


def _mlp(norm: torch.nn.Module, mlp: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    return mlp(norm(hidden))


class PrefillOps:
    """A prefill layer's norm, RoPE and MLP, each as one compiled function (see the module docstring)."""

    def __init__(self, rope: Callable[..., Any]) -> None:
        use_compile_cache()
        #: ``norm(hidden)``
        self.norm = torch.compile(_norm)
        #: ``(q, k)`` after RoPE, the model's own ``apply_rotary_pos_emb(q, k, cos, sin)``
        self.rope = torch.compile(rope)
        #: ``mlp(norm(hidden))``, without the residual (a chunked MLP adds it in place)
        self.mlp = torch.compile(_mlp)
