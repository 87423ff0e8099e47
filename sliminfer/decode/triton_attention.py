"""Split-KV decode attention as one Triton kernel pass (flash-decoding), for the static decoder.

Why: at decode time a layer's attention reads its whole KV once for one query token. The ``split``
kernel does that with two batched matmuls, a softmax and a chunked reduction: four kernels that each
write and re-read the scores, measured at about a third of the memory bandwidth (1.3-1.4 ms of a
5.7 ms step for 1.9 GB of KV, 8B shape at 32k on an H200: benchmarks/results/README.md). Here each
program streams one chunk of one KV head's keys and values once, with an online softmax, for all the
query heads of that KV group at once (grouped-query attention without repeating KV); a second small
kernel merges the chunks' partial results by their log-sum-exp. Both read the buffer's additive mask
(0 for written slots, -inf for the rest), so the result is the same attention as ``sdpa`` / ``split``.

The launch is a ``torch.library`` custom op: ``torch.compile`` treats it as one opaque op (no tracing
into Triton) and a CUDA graph captures its two launches. The chunk count is fixed by the buffer's
capacity and the device's multiprocessor count, so a captured graph stays valid for every step.
"""

from __future__ import annotations

import functools

import torch

try:  # Triton comes with CUDA builds of torch
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU builds
    triton = None

#: most chunks one KV head's buffer is split into (the merge kernel holds them all in registers)
MAX_SPLITS = 64
#: programs to aim for per multiprocessor: enough loads in flight to stream at the memory bandwidth
PROGRAMS_PER_SM = 4
#: key rows a program reads per iteration when not autotuned (the interpreter, tests)
DEFAULT_BLOCK_N = 64
#: a chunk is a multiple of this, and so of every tile size the autotuner may pick
CHUNK_ALIGN = 128


def triton_decode_available(device: torch.device) -> bool:
    """Whether the Triton decode kernel can run on ``device`` (CUDA, Triton importable)."""
    return device.type == "cuda" and triton is not None


if triton is not None:

    @triton.jit
    def _partial_kernel(q_ptr, k_ptr, v_ptr, bias_ptr, acc_ptr, m_ptr, l_ptr, scale, cap, n_splits,
                        stride_qh, stride_kh, stride_kn, stride_vh, stride_vn,
                        GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
                        BLOCK_D: tl.constexpr, CHUNK: tl.constexpr, BLOCK_N: tl.constexpr, IEEE: tl.constexpr):
        """Program (kv head, split): online softmax over keys [split * CHUNK, (split + 1) * CHUNK) for the GROUP query
        heads of this KV head; writes the unnormalised output, the running max and the sum of weights."""
        kv_head = tl.program_id(0)
        split = tl.program_id(1)
        rows = tl.arange(0, GROUP_PAD)
        dims = tl.arange(0, BLOCK_D)
        row_ok = rows < GROUP
        dim_ok = dims < HEAD_DIM
        q = tl.load(q_ptr + (kv_head * GROUP + rows)[:, None] * stride_qh + dims[None, :],
                    mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
        start = split * CHUNK
        # a finite floor, not -inf: a chunk whose slots are all masked then gives weights exp(-inf) = 0,
        # never exp(-inf - -inf) = NaN
        m_i = tl.full([GROUP_PAD], -1.0e30, tl.float32)
        l_i = tl.zeros([GROUP_PAD], tl.float32)
        acc = tl.zeros([GROUP_PAD, BLOCK_D], tl.float32)
        k_base = k_ptr + kv_head * stride_kh
        v_base = v_ptr + kv_head * stride_vh
        for offset in range(0, CHUNK, BLOCK_N):
            cols = start + offset + tl.arange(0, BLOCK_N)
            col_ok = cols < cap
            tile_ok = col_ok[:, None] & dim_ok[None, :]
            k = tl.load(k_base + cols[:, None] * stride_kn + dims[None, :], mask=tile_ok, other=0.0)
            bias = tl.load(bias_ptr + cols, mask=col_ok, other=float("-inf")).to(tl.float32)
            if IEEE:
                s = tl.dot(q, tl.trans(k), input_precision="ieee")
            else:
                s = tl.dot(q, tl.trans(k))
            s = s * scale + bias[None, :]
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(v_base + cols[:, None] * stride_vn + dims[None, :], mask=tile_ok, other=0.0)
            if IEEE:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
            else:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        out = (kv_head * n_splits + split) * GROUP + rows
        tl.store(m_ptr + out, m_i, mask=row_ok)
        tl.store(l_ptr + out, l_i, mask=row_ok)
        tl.store(acc_ptr + out[:, None] * HEAD_DIM + dims[None, :], acc, mask=row_ok[:, None] & dim_ok[None, :])

    @triton.jit
    def _merge_kernel(acc_ptr, m_ptr, l_ptr, out_ptr, n_splits, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
                      BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr):
        """Program (query head): the splits' partial outputs weighted by exp(m - max) and normalised."""
        q_head = tl.program_id(0)
        kv_head = q_head // GROUP
        row = q_head % GROUP
        splits = tl.arange(0, BLOCK_S)
        dims = tl.arange(0, BLOCK_D)
        split_ok = splits < n_splits
        index = (kv_head * n_splits + splits) * GROUP + row
        m = tl.load(m_ptr + index, mask=split_ok, other=float("-inf"))
        l_s = tl.load(l_ptr + index, mask=split_ok, other=0.0)
        weight = tl.exp(m - tl.max(m, 0))
        acc = tl.load(acc_ptr + index[:, None] * HEAD_DIM + dims[None, :],
                      mask=split_ok[:, None] & (dims < HEAD_DIM)[None, :], other=0.0)
        out = tl.sum(acc * weight[:, None], 0) / tl.sum(l_s * weight, 0)
        tl.store(out_ptr + q_head * HEAD_DIM + dims, out.to(out_ptr.dtype.element_ty), mask=dims < HEAD_DIM)

    #: the partial kernel's tile and launch choices, timed once per buffer capacity on first use; the
    #: timings go to Triton's on-disk cache, so a later process does not time them again (about 4.4 s of
    #: a second process's first 8B decode at 32k went to this tuning on an H100, 2026-12-07)
    _AUTOTUNE_CONFIGS = [
        triton.Config({"BLOCK_N": n}, num_warps=w, num_stages=s)
        for n, w, s in ((32, 4, 3), (64, 4, 3), (64, 4, 4), (64, 8, 3), (128, 4, 3), (128, 8, 3), (128, 8, 2))
    ]
    _partial_tuned = triton.autotune(configs=_AUTOTUNE_CONFIGS, key=["cap", "n_splits"], cache_results=True)(
        _partial_kernel)


@functools.lru_cache(maxsize=None)
def _multiprocessors(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _ceil_div(n: int, d: int) -> int:
    return -(-n // d)


def split_plan(capacity: int, kv_heads: int, programs: int) -> tuple[int, int]:
    """``(chunks per KV head, tokens per chunk)``: about ``programs`` programs in all, at most
    :data:`MAX_SPLITS` chunks, each a multiple of :data:`CHUNK_ALIGN` tokens, together covering ``capacity``."""
    wanted = max(1, min(MAX_SPLITS, _ceil_div(programs, kv_heads)))
    chunk = _ceil_div(_ceil_div(capacity, wanted), CHUNK_ALIGN) * CHUNK_ALIGN
    return _ceil_div(capacity, chunk), chunk


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _launch(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor, scale: float) -> torch.Tensor:
    """``q`` ``[q_heads, d]``, ``keys``/``values`` ``[kv_heads, capacity, d]`` (rows contiguous), ``bias``
    ``[capacity]``: the attention output ``[q_heads, d]`` in the dtype of ``values``. Autotuned on CUDA; the
    interpreter (CPU tensors) runs one fixed tile size."""
    q_heads, d = q.shape
    kv_heads, cap, _ = keys.shape
    group = q_heads // kv_heads
    if keys.is_cuda:
        programs = PROGRAMS_PER_SM * _multiprocessors(keys.device.index or 0)
    else:  # the interpreter: a few splits exercise the merge
        programs = 4 * kv_heads
    n_splits, chunk = split_plan(cap, kv_heads, programs)
    acc = torch.empty(kv_heads * n_splits * group, d, dtype=torch.float32, device=keys.device)
    m = torch.empty(kv_heads * n_splits * group, dtype=torch.float32, device=keys.device)
    l_sum = torch.empty_like(m)
    meta = dict(GROUP=group, GROUP_PAD=max(16, _next_pow2(group)), HEAD_DIM=d, BLOCK_D=max(16, _next_pow2(d)),
                CHUNK=chunk, IEEE=keys.dtype == torch.float32)
    args = (q, keys, values, bias, acc, m, l_sum, scale, cap, n_splits, q.stride(0), keys.stride(0),
            keys.stride(1), values.stride(0), values.stride(1))
    if keys.is_cuda:
        _partial_tuned[(kv_heads, n_splits)](*args, **meta)
    else:
        _partial_kernel[(kv_heads, n_splits)](*args, BLOCK_N=DEFAULT_BLOCK_N, **meta)
    out = torch.empty(q_heads, d, dtype=values.dtype, device=values.device)
    _merge_kernel[(q_heads,)](acc, m, l_sum, out, n_splits, GROUP=group, HEAD_DIM=d, BLOCK_D=meta["BLOCK_D"],
                              BLOCK_S=max(16, _next_pow2(n_splits)))
    return out


@torch.library.custom_op("sliminfer::triton_decode_attention", mutates_args=())
def _decode_attention_op(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor,
                         scale: float) -> torch.Tensor:
    return _launch(q, keys, values, bias, scale)


@_decode_attention_op.register_fake
def _(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor, scale: float) -> torch.Tensor:
    return q.new_empty(q.shape, dtype=values.dtype)


def triton_decode_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor,
                            scale: float) -> torch.Tensor:
    """Decode attention of one query token ``[1, q_heads, 1, d]`` over a buffer ``[1, kv_heads, capacity, d]``
    with the additive mask ``bias`` (``[..., capacity]``); returns ``[1, 1, q_heads * d]``, as
    :func:`~sliminfer.decode.kernels.split_attention` does."""
    if triton is None:
        raise RuntimeError("the triton decode kernel needs Triton (it ships with CUDA builds of torch)")
    q_heads, d = q.shape[1], q.shape[-1]
    out = _decode_attention_op(q.reshape(q_heads, d).contiguous(), keys[0], values[0], bias.reshape(-1), scale)
    return out.reshape(1, 1, q_heads * d)
