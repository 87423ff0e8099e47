"""The fast (static) decode leaves the user's model exactly as it was (issue 13, item 6).

The decoder fuses q/k/v and gate/up into one matmul each from its own copies of those weights: every
parameter keeps its storage, address, shape, strides and values. Linears that cannot be fused
(quantized, LoRA-wrapped, hooked) run through their own forwards, token-identical to the eager decode.
In-place weight changes reach the copies; replaced modules get a new decoder.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

import pytest
import torch

from sliminfer import SlimPipeline
from sliminfer.decode.run import static_generate
from sliminfer.testing.tiny_models import ARCHS, FUSABLE_ARCHS, tiny_model

PRUNED = {
    "pruning": {
        "scorer": {"name": "token_unit", "block_size": 16, "unit_size": 4, "window": 4},
        "schedule": {"name": "fixed", "layers": [1, 3], "budgets": [96, 48]},
    }
}


def _ids(n: int = 150, seed: int = 3) -> torch.Tensor:
    return torch.randint(0, 256, (1, n), generator=torch.Generator().manual_seed(seed))


def _snapshot(model: torch.nn.Module) -> dict[str, tuple]:
    """Each parameter: the object, its address, shape, strides, offset, its storage (address, size) and a
    copy of its values."""
    return {
        name: (p, p.data_ptr(), tuple(p.shape), p.stride(), p.storage_offset(), p.untyped_storage().data_ptr(),
               p.untyped_storage().nbytes(), p.detach().clone())
        for name, p in model.named_parameters()
    }


def _assert_intact(model: torch.nn.Module, before: dict[str, tuple]) -> None:
    after = _snapshot(model)
    assert after.keys() == before.keys()
    for name, (p, *layout, values) in before.items():
        q, *layout_now, values_now = after[name]
        assert q is p, name
        assert layout_now == layout, name  # data_ptr, shape, stride, offset, storage address and size
        assert p.untyped_storage().nbytes() == p.numel() * p.element_size(), name  # its own storage, no view
        assert torch.equal(values_now, values), name
    storages = {entry[5] for entry in before.values()}
    assert len({entry[5] for entry in after.values()}) == len(storages) == len(before)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("pruned", [False, True], ids=["unpruned", "pruned"])
def test_fast_decode_leaves_every_parameter_as_it_was(arch: str, pruned: bool) -> None:
    pipe = SlimPipeline.from_pretrained(tiny_model(arch, seed=1), config=PRUNED if pruned else {})
    before = _snapshot(pipe.model)
    ids = _ids()
    eager = pipe.generate(ids, max_new_tokens=8).token_ids
    first = pipe.generate(ids, max_new_tokens=8, fast=True).token_ids
    _assert_intact(pipe.model, before)
    second = pipe.generate(ids, max_new_tokens=8, fast=True).token_ids  # the kept decoder, reused
    _assert_intact(pipe.model, before)
    assert first == second == eager


@pytest.mark.parametrize("arch", FUSABLE_ARCHS)
def test_the_decoder_fuses_from_its_own_copies(arch: str) -> None:
    pipe = SlimPipeline.from_pretrained(tiny_model(arch, seed=2))
    ids = _ids(seed=4)
    out = static_generate(pipe, ids, 8)
    fused = out.decoder.fused
    assert fused is not None and all(g is not None for layer in fused.layers for g in layer)
    model_storages = {p.untyped_storage().data_ptr() for p in pipe.model.parameters()}
    projections = 0
    for block, layer in zip(pipe.adapter.layers, fused.layers):
        attn, mlp = block.self_attn, block.mlp
        assert torch.equal(layer.qkv.weight, torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
        assert torch.equal(layer.gate_up.weight, torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]))
        for t in (layer.qkv.weight, layer.qkv.bias, layer.gate_up.weight):
            assert t is None or t.untyped_storage().data_ptr() not in model_storages
        projections += sum(lin.weight.numel() + (lin.bias.numel() if lin.bias is not None else 0)
                           for lin in (attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj))
    assert fused.nbytes() == projections * 4  # float32: one copy of the fused projections, no more
    unfused = static_generate(pipe, ids, 8, options={"fuse": False})
    assert unfused.decoder.fused is None and unfused.token_ids == out.token_ids == pipe.generate(
        ids, max_new_tokens=8).token_ids


def test_phi3_projections_are_fused_already_so_nothing_is_copied() -> None:
    pipe = SlimPipeline.from_pretrained(tiny_model("phi3", seed=2), config=PRUNED)
    ids = _ids(seed=4)
    out = static_generate(pipe, ids, 8)
    assert out.decoder.fused is None  # qkv_proj and gate_up_proj run as the model's own single matmuls
    assert out.token_ids == static_generate(pipe, ids, 8, options={"fuse": False}).token_ids == pipe.generate(
        ids, max_new_tokens=8).token_ids


@pytest.mark.parametrize("cache,fuse,gate_up", [
    ({"name": "gpu"}, None, True),  # the GPU-resident decoder's default: q/k/v and gate/up
    ({"name": "gpu"}, "qkv", False),
    ({"name": "offload", "block_size": 16, "unit_size": 4, "decode_budget": 96}, None, False),  # offload: q/k/v
    ({"name": "offload", "block_size": 16, "unit_size": 4, "decode_budget": 96}, True, True),
], ids=["gpu-default", "gpu-qkv", "offload-default", "offload-all"])
def test_the_fuse_choice_decides_which_copies_exist(cache: dict, fuse: bool | str | None, gate_up: bool) -> None:
    """``decode.fuse`` null is the decoder's own choice (the offload decoder keeps GPU memory low: q/k/v only);
    whatever is fused, the tokens are the eager decode's."""
    pipe = SlimPipeline.from_pretrained(tiny_model("llama", seed=5), config={**PRUNED, "cache": cache})
    ids = _ids(301, seed=6)
    out = static_generate(pipe, ids, 12, stop_at_eos=False, options={"fuse": fuse})
    layers = out.decoder.fused.layers
    assert all(layer.qkv is not None for layer in layers)
    assert all((layer.gate_up is not None) == gate_up for layer in layers)
    assert out.token_ids == pipe.generate(ids, max_new_tokens=12).token_ids


def test_a_qkv_only_decoder_reuses_a_live_full_copy() -> None:
    """A live copy with gate/up serves a q/k/v-only decoder at no cost; the reverse builds the full copy."""
    pipe = SlimPipeline.from_pretrained(tiny_model("llama", seed=3))
    full = static_generate(pipe, _ids(60, seed=1), 8)
    qkv = static_generate(pipe, _ids(400, seed=2), 8, options={"fuse": "qkv"})
    assert qkv.decoder.fused is full.decoder.fused
    del full, qkv
    gc.collect()
    only = static_generate(pipe, _ids(60, seed=1), 8, options={"fuse": "qkv"})
    again = static_generate(pipe, _ids(400, seed=2), 8, options={"fuse": True})
    assert only.decoder.fused.gate_up is False and again.decoder.fused.gate_up is True


def test_live_decoders_share_one_copy() -> None:
    pipe = SlimPipeline.from_pretrained(tiny_model("llama", seed=3))
    small = static_generate(pipe, _ids(60, seed=1), 8)
    big = static_generate(pipe, _ids(400, seed=2), 8, decoder=small.decoder)  # does not fit: a new decoder
    assert big.decoder is not small.decoder
    assert big.decoder.fused is small.decoder.fused


CALLS: list[torch.nn.Module] = []  # every forward of a wrapped module, in order


class _LoraLinear(torch.nn.Module):
    """A LoRA-style wrapper like peft's: ``weight``/``bias`` of the base layer, forward adds B(A(x))."""

    def __init__(self, base: torch.nn.Linear, rank: int = 4) -> None:
        super().__init__()
        self.base_layer = base
        self.lora_A = torch.nn.Linear(base.in_features, rank, bias=False)
        self.lora_B = torch.nn.Linear(rank, base.out_features, bias=False)
        torch.nn.init.normal_(self.lora_B.weight, std=0.5)

    @property
    def weight(self) -> torch.nn.Parameter:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.nn.Parameter | None:
        return self.base_layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        CALLS.append(self)
        return self.base_layer(x) + self.lora_B(self.lora_A(x))


class _ScaledLinear(torch.nn.Linear):
    """A Linear subclass with its own forward (as parametrized or quantization-aware modules have)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        CALLS.append(self)
        return super().forward(x) * 1.5


def _quantized(model: torch.nn.Module) -> list[torch.nn.Module]:
    model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    q_projs = [block.self_attn.q_proj for block in model.model.layers]
    for module in q_projs:  # counts the calls (a hooked module is never fused either; quantized ones cannot be)
        module.register_forward_pre_hook(lambda m, args: CALLS.append(m))
    return [model, *q_projs]


def _lora_q(model: torch.nn.Module) -> list[torch.nn.Module]:
    torch.manual_seed(7)
    for block in model.model.layers:
        block.self_attn.q_proj = _LoraLinear(block.self_attn.q_proj)
    return [model, *[block.self_attn.q_proj for block in model.model.layers]]


def _subclassed_gate(model: torch.nn.Module) -> list[torch.nn.Module]:
    for block in model.model.layers:
        old = block.mlp.gate_proj
        new = _ScaledLinear(old.in_features, old.out_features, bias=old.bias is not None)
        new.load_state_dict(old.state_dict())
        block.mlp.gate_proj = new
    return [model, *[block.mlp.gate_proj for block in model.model.layers]]


def _hooked_up(model: torch.nn.Module) -> list[torch.nn.Module]:
    for block in model.model.layers:
        block.mlp.up_proj.register_forward_hook(lambda module, args, out: CALLS.append(module) or out * 1.5)
    return [model, *[block.mlp.up_proj for block in model.model.layers]]


def _hooked_mlp(model: torch.nn.Module) -> list[torch.nn.Module]:
    for block in model.model.layers:  # the fused MLP would skip a hook on the MLP module itself
        block.mlp.register_forward_hook(lambda module, args, out: CALLS.append(module) or out * 1.5)
    return [model, *[block.mlp for block in model.model.layers]]


# (name, wrap(model) -> [model, the modules that must run their own forward], fused groups left: qkv, gate_up)
WRAPPED: list[tuple[str, Callable[[torch.nn.Module], list[torch.nn.Module]], tuple[bool, bool] | None]] = [
    ("quantize_dynamic", _quantized, None),  # nothing fusable: no fused copy at all
    ("lora_q_proj", _lora_q, (False, True)),
    ("linear_subclass_gate", _subclassed_gate, (True, False)),
    ("forward_hook_up", _hooked_up, (True, False)),
    ("forward_hook_mlp", _hooked_mlp, (True, False)),
]


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch.ao's quantization deprecation notes
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("arch", FUSABLE_ARCHS)
@pytest.mark.parametrize(("name", "wrap", "left"), WRAPPED, ids=[w[0] for w in WRAPPED])
def test_unfusable_linears_decode_through_their_own_forward(arch, name, wrap, left) -> None:
    model, *modules = wrap(tiny_model(arch, seed=4))
    pipe = SlimPipeline.from_pretrained(model)
    before = _snapshot(pipe.model)
    ids = _ids(seed=5)
    eager = pipe.generate(ids, max_new_tokens=8).token_ids
    CALLS.clear()
    out = static_generate(pipe, ids, 8)
    assert out.token_ids == eager
    # the prefill (one call each) and each of the 7 static steps ran every wrapped module's own forward
    assert CALLS == modules * 8
    fused = out.decoder.fused
    if left is None:
        assert fused is None
    else:
        assert fused is not None
        assert [(layer.qkv is not None, layer.gate_up is not None) for layer in fused.layers] == [left] * len(modules)
    assert pipe.generate(ids, max_new_tokens=8, fast=True).token_ids == eager
    _assert_intact(pipe.model, before)


def test_in_place_weight_changes_reach_the_fused_copies() -> None:
    pipe = SlimPipeline.from_pretrained(tiny_model("qwen2", seed=5))
    ids = _ids(seed=6)
    first = pipe.generate(ids, max_new_tokens=8, fast=True).token_ids
    source = tiny_model("qwen2", seed=6).state_dict()
    pipe.model.load_state_dict(source)  # copies in place: same storage, new values
    eager = pipe.generate(ids, max_new_tokens=8).token_ids
    assert eager != first  # the new weights change the tokens, so a stale copy would show
    assert pipe.generate(ids, max_new_tokens=8, fast=True).token_ids == eager
    with torch.no_grad():  # one bias of one group
        pipe.adapter.layers[0].self_attn.v_proj.bias.add_(torch.randn(32, generator=torch.Generator().manual_seed(0)))
    changed = pipe.generate(ids, max_new_tokens=8).token_ids
    assert changed != eager
    eager = changed
    assert pipe.generate(ids, max_new_tokens=8, fast=True).token_ids == eager


def test_replaced_projections_get_a_new_decoder() -> None:
    pipe = SlimPipeline.from_pretrained(tiny_model("llama", seed=7))
    ids = _ids(seed=8)
    first = static_generate(pipe, ids, 8)
    block = pipe.adapter.layers[1]
    torch.manual_seed(9)
    block.self_attn.k_proj = torch.nn.Linear(64, block.self_attn.k_proj.out_features, bias=False)
    block.mlp.up_proj = _LoraLinear(block.mlp.up_proj)
    eager = pipe.generate(ids, max_new_tokens=8).token_ids
    assert eager != first.token_ids
    again = static_generate(pipe, ids, 8, decoder=first.decoder)
    assert again.decoder is not first.decoder and again.token_ids == eager
    assert again.decoder.fused.layers[1].gate_up is None and again.decoder.fused.layers[1].qkv is not None
