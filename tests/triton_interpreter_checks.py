"""Run by tests/test_triton_decode.py in a subprocess with TRITON_INTERPRET=1 (Triton's CPU interpreter reads
that variable when the kernels are defined, so it cannot be switched on inside the test process).

Checks the Triton decode kernel, in float32 on the CPU, against a float32 masked SDPA, and the static
decode with ``decode.kernel: triton`` (GPU-resident and the offload manager's) against the eager decode's
greedy tokens. Prints one ``ok`` line
per check; any failure raises.
"""

from __future__ import annotations

import torch

import sliminfer.decode.kernels as kernels
from sliminfer import SlimPipeline
from sliminfer.decode.kernels import sdpa_decode_attention
from sliminfer.decode.run import static_generate
from sliminfer.decode.triton_attention import split_plan, triton_decode_attention
from sliminfer.testing.tiny_models import tiny_model

PRUNED = {"pruning": {"scorer": {"name": "token_unit", "block_size": 16, "unit_size": 4, "window": 4},
                      "schedule": {"name": "fixed", "layers": [1, 3], "budgets": [160, 64]}}}


def kernel_checks() -> None:
    gen = torch.Generator().manual_seed(0)
    # (query heads, KV heads, head dim, capacity, written slots, holes): groups of 1, 3, 4 and 8; a head dim
    # that is no power of two; one written slot; a capacity split into several chunks with whole chunks
    # masked; masked slots inside the written range (the offload decoder's free slots)
    cases = ((8, 8, 64, 256, 200, ()), (9, 3, 64, 256, 1, ()), (4, 1, 96, 768, 700, (5, 300)),
             (32, 8, 128, 1280, 1000, (0, 511, 512)), (16, 2, 32, 2304, 130, ()))
    for q_heads, kv_heads, d, cap, used, holes in cases:
        q = torch.randn(1, q_heads, 1, d, generator=gen)
        keys = torch.randn(1, kv_heads, cap, d, generator=gen) * 3  # peaked softmax: exercises the running max
        values = torch.randn(1, kv_heads, cap, d, generator=gen)
        bias = torch.full((1, 1, 1, cap), float("-inf"))
        bias[..., :used] = 0.0
        for h in holes:
            bias[..., h] = float("-inf")
        scale = d**-0.5
        got = triton_decode_attention(q, keys, values, bias, scale)
        want = sdpa_decode_attention(q, keys, values, bias, scale)
        err = (got - want).abs().max().item()
        splits, chunk = split_plan(cap, kv_heads, 4 * kv_heads)
        assert got.shape == (1, 1, q_heads * d), got.shape
        assert err <= 1e-5, f"{(q_heads, kv_heads, d, cap, used, holes)}: max |diff| {err}"
        print(f"ok kernel q{q_heads} kv{kv_heads} d{d} cap{cap} used{used} splits{splits}x{chunk} err{err:.1e}")


def decode_checks() -> None:
    kernels.triton_decode_available = lambda device: True  # the interpreter runs the kernel on the CPU
    ids = torch.randint(0, 256, (1, 301), generator=torch.Generator().manual_seed(5))
    for arch, name, config in (("llama", "pruned", PRUNED), ("qwen3", "unpruned", {})):
        pipe = SlimPipeline.from_pretrained(tiny_model(arch, seed=0), config=config)
        eager = pipe.generate(ids, max_new_tokens=12).token_ids
        fast = static_generate(pipe, ids, 12, options={"kernel": "triton"})
        assert fast.decoder.attention == "triton"
        assert fast.token_ids == eager, f"{arch} {name}: {fast.token_ids} != {eager}"
        print(f"ok decode {arch} {name} 12 tokens equal")
    # the offload manager's decode, whose `auto` is this kernel on GPUs: its buffers hold swapped blocks in
    # slots, with free slots masked inside the written range; swapping on every step (gamma 1)
    cache = {"name": "offload", "block_size": 16, "unit_size": 4, "decode_budget": 96, "gamma": 1.0,
             "recent_window": 4}
    pipe = SlimPipeline.from_pretrained(tiny_model("llama", seed=2), config={**PRUNED, "cache": cache})
    eager = pipe.generate(ids, max_new_tokens=24).token_ids
    fast = static_generate(pipe, ids, 24, stop_at_eos=False, options={"kernel": "triton"})
    assert type(fast.decoder).__name__ == "OffloadStaticDecoder" and fast.decoder.attention == "triton"
    assert fast.decoder.stats()["swaps_per_step"] > 0
    assert fast.token_ids == eager, f"offload: {fast.token_ids} != {eager}"
    print("ok decode offload llama pruned 24 tokens equal")


if __name__ == "__main__":
    kernel_checks()
    decode_checks()
