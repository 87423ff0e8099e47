"""The static-shape (CUDA-graph) decode is token-identical to the eager decode, pruned and unpruned.

On the CPU the same static step runs eagerly: fixed buffers, slot writes at device-tensor indices,
per-layer masks over the whole buffer, RoPE from a device position, the greedy token fed back on the
device. Only the attention call differs from the eager path (the model's modules do the rest).
"""

from __future__ import annotations

import pytest
import torch

from sliminfer import ConfigError, InputError, SlimPipeline
from sliminfer.core.config import DecodeSection
from sliminfer.decode.kernels import flex_decode_attention, split_attention
from sliminfer.decode.run import static_generate
from sliminfer.decode.static import StaticDecoder
from sliminfer.testing.tiny_models import ARCHS, FUSABLE_ARCHS, tiny_model

PRUNED = {
    "pruning": {
        "scorer": {"name": "token_unit", "block_size": 16, "unit_size": 4, "window": 4},
        "schedule": {"name": "fixed", "layers": [1, 3], "budgets": [160, 64]},
    }
}


def _ids(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (1, n), generator=torch.Generator().manual_seed(seed))


def _pipe(arch: str, pruned: bool, seed: int = 0, **config) -> SlimPipeline:
    return SlimPipeline.from_pretrained(tiny_model(arch, seed=seed), config={**(PRUNED if pruned else {}), **config})


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("pruned", [False, True], ids=["unpruned", "pruned"])
@pytest.mark.parametrize("attention", ["sdpa", "split"])
def test_static_decode_is_token_identical_to_eager(arch: str, pruned: bool, attention: str) -> None:
    pipe = _pipe(arch, pruned)
    ids = _ids(301, seed=5)
    eager = pipe.generate(ids, max_new_tokens=64)
    fast = static_generate(pipe, ids, 64, options={"kernel": attention})
    assert fast.token_ids == eager.token_ids
    assert len(fast.token_ids) == 64
    assert fast.prefill.tokens_per_layer == eager.prefill.tokens_per_layer
    if pruned:
        assert fast.prefill.tokens_per_layer[-1] < 301
    assert fast.decoder.graph is None  # CPU: the same static step, run eagerly
    assert fast.decode_s_per_token > 0 and fast.total_s >= fast.ttft_s


def test_after_layer_prune_point() -> None:
    config = {"pruning": {**PRUNED["pruning"], "prune_point": "after_layer"}}
    pipe = SlimPipeline.from_pretrained(tiny_model("qwen2", seed=1), config=config)
    ids = _ids(260, seed=2)
    assert static_generate(pipe, ids, 32).token_ids == pipe.generate(ids, max_new_tokens=32).token_ids


def test_teacher_forced_logits_match_eager_decode_steps() -> None:
    pipe = _pipe("qwen3", pruned=True, seed=2)
    ids = _ids(290, seed=7)
    eager = pipe.generate(ids, max_new_tokens=24)
    fast = static_generate(pipe, ids, 24)
    decoder = fast.decoder
    first = fast.prefill.logits.argmax(-1, keepdim=True)
    cache = pipe.new_cache(24)
    decoder.offer_buffers(cache)
    prefill = pipe.forward.prefill(ids, cache)
    assert cache.layer_keys(0).data_ptr() == decoder.keys[0].data_ptr()  # written into the offered buffers
    decoder.load(prefill, first)
    picked, logits = decoder.decode_forced(eager.token_ids[:-1])
    assert picked == eager.token_ids[1:]
    reference = pipe.prefill(ids, reserve_tokens=24)
    position = ids.shape[1]
    for step, token in enumerate(eager.token_ids[:-1]):
        want = pipe.forward.decode_step(torch.tensor([[token]]), position + step, reference.cache)
        assert (logits[step] - want.float()).abs().max().item() <= 1e-4


def test_decoder_is_reused_across_prompts_without_copies() -> None:
    pipe = _pipe("llama", pruned=True, seed=3)
    first = static_generate(pipe, _ids(301, seed=1), 40)
    decoder = first.decoder
    pointers = [k.data_ptr() for k in decoder.keys]
    for n, seed in ((301, 2), (250, 3), (180, 4)):  # same length, then shorter prompts that fit
        ids = _ids(n, seed)
        out = static_generate(pipe, ids, 40, decoder=decoder)
        assert out.decoder is decoder
        assert [k.data_ptr() for k in decoder.keys] == pointers
        assert out.token_ids == pipe.generate(ids, max_new_tokens=40).token_ids


def test_a_prompt_that_does_not_fit_gets_a_new_decoder() -> None:
    pipe = _pipe("llama", pruned=False, seed=4)
    small = static_generate(pipe, _ids(100, seed=1), 8)
    ids = _ids(400, seed=2)
    big = static_generate(pipe, ids, 8, decoder=small.decoder)
    assert big.decoder is not small.decoder
    assert big.token_ids == pipe.generate(ids, max_new_tokens=8).token_ids


def test_one_new_token_and_eos_cut() -> None:
    pipe = _pipe("llama", pruned=False)
    ids = _ids(120, seed=9)
    eager = pipe.generate(ids, max_new_tokens=12).token_ids
    assert static_generate(pipe, ids, 1).token_ids == eager[:1]
    pipe.model.generation_config.eos_token_id = eager[3]
    try:
        out = static_generate(pipe, ids, 12)
    finally:
        pipe.model.generation_config.eos_token_id = None
    cut = eager.index(eager[3]) + 1
    assert out.token_ids == eager[:cut] and out.stopped_by == "eos"


def test_bad_arguments_raise_input_errors() -> None:
    pipe = _pipe("llama", pruned=False)
    with pytest.raises(InputError, match="max_new_tokens"):
        static_generate(pipe, _ids(50, seed=1), 0)
    with pytest.raises(ConfigError, match="decode.kernel: got 'flash'.*CUDA"):
        StaticDecoder(pipe.adapter, [64] * pipe.adapter.num_layers, 8, dtype=torch.float32,
                      device=torch.device("cpu"), options=DecodeSection(kernel="flash"))
    with pytest.raises(ConfigError, match="decode.graph: got True.*CUDA"):
        StaticDecoder(pipe.adapter, [64] * pipe.adapter.num_layers, 8, dtype=torch.float32,
                      device=torch.device("cpu"), options=DecodeSection(graph=True))
    with pytest.raises(ConfigError, match="decode.kernel: got 'fastest'"):
        static_generate(pipe, _ids(50, seed=1), 4, options={"kernel": "fastest"})
    with pytest.raises(ConfigError, match="decode.autotune: got True.*decode.compile"):  # on the CPU: not compiled
        static_generate(pipe, _ids(50, seed=1), 4, options={"autotune": True})


@pytest.mark.parametrize(("compile", "autotune"), [(None, False), (True, False), (True, True)])
def test_autotune_reaches_the_compile_when_asked(monkeypatch, compile, autotune) -> None:
    """``decode.autotune`` (off unless asked: it doubles a cold first call) is passed to the one compile."""
    seen: list[bool] = []
    monkeypatch.setattr("sliminfer.decode.static.compile_static", lambda fn, tune: seen.append(tune) or fn)
    pipe = _pipe("llama", pruned=False)
    decoder = StaticDecoder(pipe.adapter, [64] * pipe.adapter.num_layers, 8, dtype=torch.float32,
                            device=torch.device("cpu"), options=DecodeSection(compile=compile, autotune=autotune))
    assert decoder.autotune is autotune and seen == ([autotune] if compile else [])
    assert DecodeSection().autotune is False


@pytest.mark.slow
def test_compiled_static_step_is_token_identical() -> None:
    pipe = _pipe("qwen3", pruned=True, seed=1)
    ids = _ids(260, seed=4)
    assert static_generate(pipe, ids, 12, options={"compile": True}).token_ids == pipe.generate(ids, max_new_tokens=12).token_ids


@pytest.mark.slow
def test_compiled_flex_kernel_is_token_identical() -> None:
    """``decode.kernel: flex`` (FlexAttention, compiled) gives the eager decode's tokens, pruned, GQA."""
    pipe = _pipe("llama", pruned=True, seed=2)
    ids = _ids(300, seed=6)
    fast = static_generate(pipe, ids, 12, options={"compile": True, "kernel": "flex"})
    assert fast.decoder.attention == "flex" and fast.token_ids == pipe.generate(ids, max_new_tokens=12).token_ids


@pytest.mark.parametrize("group", [1, 4])
def test_flex_kernel_computes_the_masked_attention(group: int) -> None:
    """FlexAttention with the buffer's additive mask equals SDPA over the written slots alone (and the split
    kernel), grouped-query heads included; uncompiled here, which is its reference mode."""
    gen = torch.Generator().manual_seed(0)
    kv_heads, d, cap, used = 2, 32, 512, 301
    q = torch.randn(1, kv_heads * group, 1, d, generator=gen)
    keys, values = torch.randn(1, kv_heads, cap, d, generator=gen), torch.randn(1, kv_heads, cap, d, generator=gen)
    bias = torch.full((1, 1, 1, cap), float("-inf"))
    bias[..., :used] = 0.0
    got = flex_decode_attention(q, keys, values, bias, d**-0.5)
    want = torch.nn.functional.scaled_dot_product_attention(
        q.reshape(1, kv_heads, group, d), keys[:, :, :used], values[:, :, :used], scale=d**-0.5).reshape(1, 1, -1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, split_attention(q, keys, values, bias, d**-0.5), atol=1e-5, rtol=1e-5)


def test_flex_kernel_needs_a_compiled_decode() -> None:
    with pytest.raises(ConfigError, match="decode.kernel: got 'flex'.*compiled"):
        static_generate(_pipe("llama", pruned=False), _ids(100, seed=1), 4, options={"kernel": "flex"})


def test_flash_layout_with_a_stand_in_kernel(monkeypatch) -> None:
    """The FlashAttention path's plumbing (token-major buffers seen through [1, kv, cap, d] views, the
    prefill writing through them, ``seqused_k`` per layer) with a CPU stand-in for the CUDA kernel."""
    from sliminfer.decode import kernels

    def varlen_flash(q, k, v, cu_q, cu_k, max_q, max_k, dropout, causal, debug, *, scale, seqused_k):
        assert k.shape[0] == max_k == int(cu_k[1]) and k.is_contiguous() and not causal
        n = int(seqused_k[0])
        keys, values = (t[:n].permute(1, 0, 2)[None] for t in (k, v))
        heads, d = q.shape[1], q.shape[2]
        out = torch.nn.functional.scaled_dot_product_attention(
            q.reshape(1, keys.shape[1], -1, d), keys, values, scale=scale)
        return (out.reshape(1, heads, d),)

    monkeypatch.setattr(kernels, "flash_op", lambda: varlen_flash)
    monkeypatch.setattr(kernels, "flash_decode_available", lambda device, dtype: True)
    pipe = _pipe("qwen3", pruned=True, seed=5)
    ids = _ids(280, seed=6)
    eager = pipe.generate(ids, max_new_tokens=24).token_ids
    first = static_generate(pipe, ids, 24, options={"kernel": "flash"})
    assert first.decoder.attention == "flash" and first.token_ids == eager
    again = static_generate(pipe, ids, 24, decoder=first.decoder)  # the prefill writes into the views
    assert again.decoder is first.decoder and again.token_ids == eager


def test_steps_past_the_buffers_are_refused_on_the_host() -> None:
    pipe = _pipe("llama", pruned=False)
    ids = _ids(90, seed=3)
    decoder = static_generate(pipe, ids, 10).decoder  # all 9 decode steps used
    with pytest.raises(InputError, match="holds 9"):
        decoder.decode(1)
    fresh = StaticDecoder(pipe.adapter, [128] * pipe.adapter.num_layers, 4, dtype=torch.float32,
                          device=torch.device("cpu"))
    with pytest.raises(InputError, match="load a prefill first"):
        fresh.decode(1)


def test_pipeline_generate_fast_equals_generate() -> None:
    pipe = _pipe("llama", pruned=True)
    ids = _ids(280, seed=4)
    slow = pipe.generate(ids, max_new_tokens=20)
    fast = pipe.generate(ids, max_new_tokens=20, fast=True)
    again = pipe.generate(ids, max_new_tokens=20, fast=True)  # reuses the decoder
    assert fast.token_ids == slow.token_ids == again.token_ids
    assert fast.prefill.tokens_per_layer == slow.prefill.tokens_per_layer
    with pytest.raises(ConfigError, match="greedy"):
        pipe.generate(ids, max_new_tokens=4, temperature=0.7, fast=True)


@pytest.mark.parametrize("arch", FUSABLE_ARCHS)
def test_fused_projections_are_copies_and_change_nothing(arch: str) -> None:
    from sliminfer.models.decode_parts import fuse_projections

    pipe = _pipe(arch, pruned=False)
    ids = _ids(120, seed=3)
    before = pipe.prefill(ids).logits
    pointers = [p.data_ptr() for p in pipe.model.parameters()]
    fused = fuse_projections(pipe.adapter)
    assert fused is not None and fuse_projections(pipe.adapter) is fused  # one copy while it lives
    attn = pipe.adapter.layers[0].self_attn
    qkv = fused.layers[0].qkv
    assert qkv.sizes == (attn.q_proj.out_features, attn.k_proj.out_features, attn.v_proj.out_features)
    assert torch.equal(qkv.weight[qkv.sizes[0]:qkv.sizes[0] + qkv.sizes[1]], attn.k_proj.weight)
    assert qkv.weight.untyped_storage().data_ptr() != attn.k_proj.weight.untyped_storage().data_ptr()
    assert [p.data_ptr() for p in pipe.model.parameters()] == pointers
    assert torch.equal(pipe.prefill(ids).logits, before)


def test_eager_decode_steps_exclude_cudnn_attention_on_cuda() -> None:
    """cuDNN builds an execution plan per new KV length (a decode step meets new lengths every step)."""
    from sliminfer.core.forward import decode_attention_kernels

    was = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(True)  # the flag the CUDA context turns off, on to begin with
    try:
        with decode_attention_kernels(torch.device("cuda")):
            assert not torch.backends.cuda.cudnn_sdp_enabled()
            assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()
        assert torch.backends.cuda.cudnn_sdp_enabled()  # restored on the way out
        with decode_attention_kernels(torch.device("cpu")):
            assert torch.backends.cuda.cudnn_sdp_enabled()  # the CPU leaves the kernel choice alone
        assert torch.backends.cuda.cudnn_sdp_enabled()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(was)


def test_no_device_alias_without_cuda_and_pinned_memory() -> None:
    from sliminfer.cache.offload.host_alias import device_alias

    assert device_alias(torch.zeros(4), torch.device("cpu")) is None
    assert device_alias(torch.zeros(4), torch.device("cuda")) is None  # not pinned (no CUDA here)
