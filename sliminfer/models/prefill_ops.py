"""The elementwise-heavy pieces of a prefill layer, compiled to fused kernels (``prefill.compile``).

Why: a profile of the 8B shape's pruned prefill at 32k (H100, pruning + FlexPrefill @10 %,
benchmarks/results/h100-2026-12-07d/prefill-flexprefill10.json) spent about 130 of its 452 ms in
elementwise kernels and copies around the matmuls: transformers' RMSNorm runs about seven kernels over
float32 copies of the 32k x 4096 activations, RoPE's ``rotate_half`` a concatenation and four more, the
MLP's SiLU and product two more over 32k x 14336. ``torch.compile`` fuses each piece into one or two
kernels; the matmuls stay cuBLAS's.

The pieces take the layer's modules as arguments, so one compiled graph serves every layer (torch inlines
built-in modules: their weights are graph inputs, not constants), and the token dimension is dynamic from
the first call: one graph per piece for every prompt length (a one-token input, a new dtype or device
still gets its own). (Letting torch specialise the first length and recompile dynamically for the next meant
the same prompt ran through other kernels once another length had been seen: other roundings, and in bf16 on
an H100 other pruning choices and other tokens.) Off by
default: the fused kernels round differently from the eager ones (float32 tolerance, not bit equality).
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


def _tokens_dynamic(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` compiled, with the second-to-last (token) dimension of each tensor argument marked dynamic
    before every call (see the module docstring)."""
    compiled = torch.compile(fn)

    def call(*args: Any) -> Any:
        for arg in args:
            if isinstance(arg, torch.Tensor) and arg.dim() >= 2:
                torch._dynamo.maybe_mark_dynamic(arg, arg.dim() - 2)
        return compiled(*args)

    return call


def _contiguous_qkv(rope: Callable[..., Any]) -> Callable[..., Any]:
    """``(q, k, v, cos, sin) -> (q, k, v)``: ``rope(q, k, cos, sin)`` (the model's ``apply_rotary_pos_emb``) with
    q, k and v each made contiguous ``[b, heads, n, d]``.

    Why contiguous: the projections give ``[b, n, heads, d]`` seen as ``[b, heads, n, d]``, and on Hopper
    FlexAttention loads contiguous inputs with the Tensor Memory Accelerator (``flex_kernel_options``): at 128k
    and 10 % of the blocks 32.6 against 34.7 ms per layer (H100, benchmarks/results/h100-2026-12-07c; at 32k no
    difference showed in a whole prefill, h100-2026-12-07f). Compiled, the RoPE kernel writes its output in that
    layout at no extra cost, and v's copy is one small kernel (v has a quarter of q's size in the 8B models);
    the cache and every attention take either layout."""

    def apply(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor,
              sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k = rope(q, k, cos, sin)
        return q.contiguous(), k.contiguous(), v.contiguous()

    return apply


class PrefillOps:
    """A prefill layer's norm, RoPE and MLP, each as one compiled function (see the module docstring)."""

    def __init__(self, rope: Callable[..., Any]) -> None:
        use_compile_cache()
        #: ``norm(hidden)``
        self.norm = _tokens_dynamic(_norm)
        #: ``(q, k, v)`` from the projections' ``(q, k, v, cos, sin)``: q and k after the model's own
        #: ``apply_rotary_pos_emb(q, k, cos, sin)``, all three contiguous (:func:`_contiguous_qkv`)
        self.rope_qkv = _tokens_dynamic(_contiguous_qkv(rope))
        #: ``mlp(norm(hidden))``, without the residual (a chunked MLP adds it in place)
        self.mlp = _tokens_dynamic(_mlp)
