"""Attention kernels of the decode: the static decoder's three, and the SDPA backends of the eager step.

The static decoder attends one query token to fixed-capacity per-layer buffers, written up to a used
length; :data:`KERNELS` are its choices:

- ``sdpa``: ``scaled_dot_product_attention`` over the whole buffer with an additive mask (0 for written
  slots, -inf for the rest);
- ``flash``: FlashAttention's varlen kernel reads only the used part of each buffer (``seqused_k``;
  CUDA, half precision, a torch whose op takes it: :func:`flash_decode_available`);
- ``split``: :func:`split_attention`, split-KV attention from two batched matmuls (flash-decoding's
  idea in plain ops), the fastest under ``torch.compile`` (measured: benchmarks/results);
- ``flex``: :func:`flex_decode_attention`, torch's FlexAttention with the buffer's additive mask as a
  score modification; compiled, it lowers to FlexAttention's own split-KV decoding kernel (one pass
  over K and V, the softmax fused), so it needs a compiled decode;
- ``triton``: :func:`~sliminfer.decode.triton_attention.triton_decode_attention`, this project's Triton
  flash-decoding kernel (one pass over K and V per chunk, all query heads of a KV group together, then a
  log-sum-exp merge); CUDA with Triton, compiled or not;
- ``auto``: when compiled, ``triton`` where Triton runs on the device, else ``split``; uncompiled, ``flash``
  where available, else ``sdpa``. The Triton kernel measured 0.81 ms of attention per step against 1.27 ms
  for compiled ``split`` (8B shape, 32k prompt, H100, 2026-12-07: benchmarks/results/h100-2026-12-07),
  with the same tokens as ``split`` in every static decode variant checked there.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F

from sliminfer.core.errors import ConfigError
from sliminfer.decode.triton_attention import triton_decode_attention, triton_decode_available

KERNELS = ("auto", "sdpa", "flash", "split", "flex", "triton")
CAPACITY_ALIGN = 256  # buffer capacities are multiples of this; also the chunk of the split kernel's reduction


def fastest_masked_kernel(device: torch.device) -> str:
    """The fastest kernel over a masked buffer on ``device``: ``triton`` where Triton runs, else ``split``
    (H100, 8B shape: 0.81 against 1.27 ms of attention per step at 32k, benchmarks/results/README.md). What
    ``auto`` means for a compiled decode, and for the offload manager's (which has only masked buffers)."""
    return "triton" if triton_decode_available(device) else "split"


def resolve_kernel(kernel: str, compiled: bool, device: torch.device, dtype: torch.dtype) -> str:
    """The kernel ``auto`` stands for here, or ``kernel`` itself when it can run here."""
    if kernel == "auto":
        if compiled:
            return fastest_masked_kernel(device)
        return "flash" if flash_decode_available(device, dtype) else "sdpa"
    if kernel == "flash" and not flash_decode_available(device, dtype):
        raise ConfigError("decode.kernel", "flash", "needs CUDA, float16/bfloat16 and a torch whose FlashAttention "
                          "op takes seqused_k; use 'sdpa', 'split' or 'auto'")
    if kernel == "triton" and not triton_decode_available(device):
        raise ConfigError("decode.kernel", "triton", f"needs a CUDA device and Triton (this decode runs on {device}); "
                          "use 'sdpa', 'split' or 'auto'")
    if kernel == "flex" and not compiled:
        raise ConfigError("decode.kernel", "flex", "needs a compiled decode (decode.compile: true, the default on "
                          "CUDA): uncompiled FlexAttention is a slow reference; use 'sdpa', 'split' or 'auto'")
    return kernel


def flash_decode_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether this torch build's FlashAttention varlen op takes ``seqused_k`` and computes decode
    attention correctly here (checked once against SDPA on a small problem)."""
    if device.type != "cuda" or dtype not in (torch.float16, torch.bfloat16):
        return False
    key = (str(device), dtype)
    if key not in _FLASH_OK:
        _FLASH_OK[key] = _check_flash(device, dtype)
    return _FLASH_OK[key]


_FLASH_OK: dict[tuple[str, torch.dtype], bool] = {}


def flash_op() -> Any:
    op = getattr(torch.ops.aten, "_flash_attention_forward", None)
    if op is None:
        return None
    names = {a.name for a in op.default._schema.arguments}
    return op if "seqused_k" in names else None


def flash_attend(op: Any, q: torch.Tensor, k_rows: torch.Tensor, v_rows: torch.Tensor, cu_q: torch.Tensor,
                  cu_k: torch.Tensor, used: torch.Tensor, scale: float) -> torch.Tensor:
    """One query token against the first ``used`` rows of ``k_rows``/``v_rows`` (``[capacity, kv_heads, d]``)."""
    out = op(q, k_rows, v_rows, cu_q, cu_k, 1, k_rows.shape[0], 0.0, False, False, scale=scale, seqused_k=used)
    return out[0]


def _check_flash(device: torch.device, dtype: torch.dtype) -> bool:
    op = flash_op()
    if op is None:
        return False
    try:
        gen = torch.Generator(device=device).manual_seed(0)
        heads, kv_heads, d, cap, used = 8, 2, 128, 640, 333
        q = torch.randn(1, heads, d, device=device, dtype=dtype, generator=gen)
        k = torch.randn(cap, kv_heads, d, device=device, dtype=dtype, generator=gen)
        v = torch.randn(cap, kv_heads, d, device=device, dtype=dtype, generator=gen)
        cu_q = torch.tensor([0, 1], dtype=torch.int32, device=device)
        cu_k = torch.tensor([0, cap], dtype=torch.int32, device=device)
        used_t = torch.tensor([used], dtype=torch.int32, device=device)
        got = flash_attend(op, q, k, v, cu_q, cu_k, used_t, d**-0.5)
        keys, values = (t[:used].permute(1, 0, 2).unsqueeze(0).float() for t in (k, v))
        ref = F.scaled_dot_product_attention(q.float().reshape(1, kv_heads, heads // kv_heads, d), keys, values)
        ref = ref.reshape(1, heads, d)
        return bool(torch.allclose(got.float(), ref, atol=2e-2, rtol=2e-2))
    except Exception:  # noqa: BLE001 - any failure means: use SDPA
        return False


def split_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor,
                    scale: float) -> torch.Tensor:
    """Decode attention of one query token over a buffer ``[1, kv_heads, capacity, d]``: ``[1, 1, q_heads * d]``.

    One query row per head leaves fused kernels with one thread block per head, far too few to stream a
    long KV at full bandwidth. Here the scores are one batched GEMM parallel over the KV length, and
    probabilities @ values is split into ``CAPACITY_ALIGN``-token chunks reduced afterwards, so both
    reads of the KV spread over the whole GPU.
    """
    kv_heads, cap, d = keys.shape[1], keys.shape[2], keys.shape[3]
    qg = q.reshape(1, kv_heads, -1, d)
    group = qg.shape[2]
    scores = torch.matmul(qg, keys.transpose(-1, -2)).float() * scale + bias.float()
    probs = scores.softmax(dim=-1).to(values.dtype)
    chunks = cap // CAPACITY_ALIGN
    parts = torch.matmul(probs.view(1, kv_heads, group, chunks, CAPACITY_ALIGN).transpose(2, 3),
                         values.view(1, kv_heads, chunks, CAPACITY_ALIGN, d))
    return parts.float().sum(dim=2).to(values.dtype).reshape(1, 1, -1)


def flex_decode_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor,
                          scale: float) -> torch.Tensor:
    """Decode attention of one query token ``[1, q_heads, 1, d]`` over a buffer ``[1, kv_heads, capacity, d]``
    with FlexAttention; ``bias`` (``[..., capacity]``: 0 for written slots, -inf for the rest) is added
    to the scores. Returns ``[1, 1, q_heads * d]``.

    Why: the split kernel's scores, softmax and chunked reduction are separate kernels that each touch the
    scores; FlexAttention's decoding kernel streams K and V once with an online softmax, split over the
    KV length. The grouped-query heads are FlexAttention's own (``enable_gqa``): no KV copy."""
    from torch.nn.attention.flex_attention import flex_attention

    row = bias.reshape(-1)

    def add_bias(score: torch.Tensor, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> torch.Tensor:
        return score + row[kv_idx]

    out = flex_attention(q, keys, values, score_mod=add_bias, scale=scale, enable_gqa=True)
    return out.transpose(1, 2).reshape(1, 1, -1)


def sdpa_decode_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor,
                          scale: float) -> torch.Tensor:
    """Decode attention of one query token ``[1, q_heads, 1, d]`` over a buffer ``[1, kv_heads, capacity, d]`` with
    ``scaled_dot_product_attention`` and the additive mask ``bias``; ``[1, 1, q_heads * d]``. GQA without copying
    KV: the query heads of one KV group become that group's query rows."""
    qg = q.reshape(1, keys.shape[1], -1, q.shape[-1])
    return F.scaled_dot_product_attention(qg, keys, values, attn_mask=bias, scale=scale).reshape(1, 1, -1)


#: the kernels that take ``(q, keys, values, bias, scale)`` over ``[1, kv_heads, capacity, d]`` buffers, by name
MASKED_KERNELS = {"sdpa": sdpa_decode_attention, "split": split_attention, "flex": flex_decode_attention,
                  "triton": triton_decode_attention}


def decode_attention_kernels(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """SDPA kernels for eager decode steps: on CUDA every kernel but cuDNN's.

    Why: torch picks cuDNN attention first on Hopper, and cuDNN builds an execution plan for every new
    sequence length; a decode step meets new KV lengths at every step (one per distinct layer length),
    so each step paid several plan builds: measured on an H100 (benchmarks/gpu/decode_probe.py, 8B
    shape, 32k prompt, pruned): 194-226 ms/token with cuDNN against 24.7 ms/token with FlashAttention.
    The prefill (one shape per layer) keeps torch's choice. The kernels compute the same attention.
    """
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])
