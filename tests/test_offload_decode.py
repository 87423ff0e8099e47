"""The offload manager's static decode (sliminfer/cache/offload/static_decode.py), on the CPU with tiny fp32
models: the same tokens, active sets, slot placement and slot contents as the manager's eager decode
(which tests/test_offload.py holds to an independent reference), the same swap counts, and clear
errors."""

from __future__ import annotations

import pytest
import torch

from sliminfer import ConfigError, InputError, SlimPipeline
from sliminfer.cache.offload.block_copy import copy_blocks
from sliminfer.cache.offload.static_decode import OffloadStaticDecoder
from sliminfer.core.config import DecodeSection
from sliminfer.decode.run import static_generate
from sliminfer.testing.tiny_models import ARCHS, tiny_model

BLOCK, UNIT = 16, 4
PRUNING = {
    "scorer": {"name": "token_unit", "block_size": BLOCK, "unit_size": UNIT, "window": 4},
    "schedule": {"name": "fixed", "layers": [1, 3], "budgets": [160, 64]},
}


def _pipe(arch: str, gamma: float, window: int = 4, selection: str = "token_unit") -> SlimPipeline:
    cache = {"name": "offload", "block_size": BLOCK, "unit_size": UNIT, "decode_budget": 96, "gamma": gamma,
             "recent_window": window, "selection": selection}
    return SlimPipeline.from_pretrained(tiny_model(arch, seed=2), config={"pruning": PRUNING, "cache": cache})


def _ids(n: int = 301) -> torch.Tensor:
    return torch.randint(0, 256, (1, n), generator=torch.Generator().manual_seed(7))


@torch.inference_mode()
def _apply_pending(manager) -> None:
    """What the eager manager would do at its next step: apply the selections still pending."""
    manager._begin_step()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("gamma,window,selection", [(1.0, 4, "token_unit"), (0.5, 4, "token_unit"),
                                                    (0.9, 2, "attention_unit")])
def test_static_decode_equals_the_eager_manager(arch: str, gamma: float, window: int, selection: str) -> None:
    new = 40
    pipe = _pipe(arch, gamma, window, selection)
    eager = pipe.generate(_ids(), max_new_tokens=new)
    fast = static_generate(pipe, _ids(), new, stop_at_eos=False)
    assert fast.token_ids == eager.token_ids
    decoder = fast.decoder
    assert isinstance(decoder, OffloadStaticDecoder) and decoder.steps_run == new - 1 - window
    manager = eager.prefill.cache
    _apply_pending(manager)  # the decoder applied its last selection already (for a next step)
    selecting = [st for st in manager.layers if st.selecting]
    assert selecting
    assert [st.slot_block for st in selecting] == [row for g in decoder.groups for row in g.slot_block.tolist()]
    for dg in decoder.groups:  # every slot holds the host KV of the block it claims (the run's own prefill:
        for row, layer in enumerate(dg.layers):  # CPU prefills of one prompt may differ in the last bits)
            host = fast.prefill.cache.layers[layer].host
            for slot, block in enumerate(dg.slot_block[row].tolist()):
                rows = slice(slot * BLOCK, (slot + 1) * BLOCK)
                assert torch.equal(decoder.keys[layer][0, :, rows], host[block, 0])
                assert torch.equal(decoder.values[layer][0, :, rows], host[block, 1])
    stats = decoder.stats()
    handed = fast.prefill.cache.stats()["swaps_total"]  # eager steps and the hand-over
    assert handed + round(stats["swaps_per_step"] * stats["steps"]) == manager.stats()["swaps_total"]
    if gamma == 1.0:
        assert stats["swaps_per_step"] > 0 and stats["bytes_moved_per_step"] > 0


def test_generate_fast_uses_the_offload_decoder() -> None:
    pipe = _pipe("llama", 0.9)
    fast = pipe.generate(_ids(), max_new_tokens=24, fast=True)
    assert fast.token_ids == pipe.generate(_ids(), max_new_tokens=24).token_ids


def test_short_generation_runs_eagerly_only() -> None:
    pipe = _pipe("llama", 0.9)
    out = static_generate(pipe, _ids(), 3, stop_at_eos=False)
    assert out.decoder is None and len(out.token_ids) == 3
    assert out.token_ids == pipe.generate(_ids(), max_new_tokens=3).token_ids


def test_copy_blocks_copies_only_the_counted_blocks() -> None:
    heads, d = 2, 4
    source = torch.arange(5 * 2 * heads * BLOCK * d, dtype=torch.float32).view(5, 2, heads, BLOCK, d)
    keys = torch.zeros(1, heads, 4 * BLOCK, d)
    values = torch.zeros_like(keys)
    copy_blocks(source, keys, values, torch.tensor([3, 1, 4]), torch.tensor([2, 0, 1]), torch.tensor([2]))
    view_k, view_v = keys.view(1, heads, 4, BLOCK, d), values.view(1, heads, 4, BLOCK, d)
    assert torch.equal(view_k[0, :, 2], source[3, 0]) and torch.equal(view_v[0, :, 2], source[3, 1])
    assert torch.equal(view_k[0, :, 0], source[1, 0]) and torch.equal(view_v[0, :, 0], source[1, 1])
    assert not view_k[0, :, 1].any() and not view_k[0, :, 3].any()  # count 2: the third pair is not copied


def test_errors_name_the_problem() -> None:
    pipe = _pipe("llama", 0.9)
    with torch.inference_mode():
        prefill = pipe.prefill(_ids(), reserve_tokens=8)
    with pytest.raises(InputError, match="first decode steps"):
        OffloadStaticDecoder(pipe.adapter, prefill.cache, 4, DecodeSection())
    with pytest.raises(ConfigError, match="decode.kernel: got 'flash'"):
        OffloadStaticDecoder(pipe.adapter, prefill.cache, 4, DecodeSection(kernel="flash"))
    with pytest.raises(ConfigError, match="decode.kernel: got 'flash'"):  # before any prefill work
        static_generate(pipe, _ids(), 8, options={"kernel": "flash"})


@pytest.mark.parametrize(("triton_runs", "expected"), [(True, "triton"), (False, "split")])
def test_auto_kernel_is_triton_where_it_runs(monkeypatch, triton_runs: bool, expected: str) -> None:
    """``decode.kernel: auto`` for the offload decode: the Triton kernel where it runs, ``split`` elsewhere;
    a kernel named explicitly is kept."""
    monkeypatch.setattr("sliminfer.decode.kernels.triton_decode_available", lambda device: triton_runs)
    cpu = torch.device("cpu")
    assert OffloadStaticDecoder.kernel(DecodeSection(), cpu) == expected
    assert OffloadStaticDecoder.kernel(DecodeSection(kernel="sdpa"), cpu) == "sdpa"


def test_bench_grid_times_the_offload_static_decode(tmp_path) -> None:
    import json

    from sliminfer.cli.main import main

    cache = ("cache={name: offload, block_size: 16, unit_size: 4, decode_budget: 96, gamma: 0.9}")
    pruning = ("pruning={scorer: {name: token_unit, block_size: 16, unit_size: 4, window: 4}, "
               "schedule: {name: fixed, layers: [1], budgets: [64]}}")
    assert main(["bench", "--shape", "tiny-llama", "model.device=cpu", "model.dtype=float32", pruning, cache,
                 "--prompt-lengths", "320", "--output-lengths", "12", "--repeats", "1", "--warmup", "0",
                 "--modes", "sliminfer", "--no-ttft", "--out", str(tmp_path), "--name", "o", "--no-plot"]) == 0
    (e2e,) = json.loads((tmp_path / "o.json").read_text())["points"][0]["e2e"]
    assert e2e["static"]["status"] == "ok" and e2e["static"]["new_tokens_made"] == 12
    assert e2e["static_matches_eager_tokens"] == 1.0
    assert e2e["static"]["decoder_stats"]["steps"] == 12 - 1 - 4


@pytest.mark.slow
def test_compiled_segments_give_the_same_tokens_and_swaps() -> None:
    """torch.compile of the layer segments (the copies stay between them, uncompiled): same tokens, slot
    placement and swap counts as the uncompiled static decode."""
    pipe = _pipe("qwen3", 0.5)
    plain = static_generate(pipe, _ids(), 24, stop_at_eos=False)
    compiled = static_generate(pipe, _ids(), 24, stop_at_eos=False, options={"compile": True})
    assert compiled.decoder.compiled and not plain.decoder.compiled
    assert [(first, last) for first, last, _ in compiled.decoder._segments] == [(0, 2), (2, 4), (4, 6)]
    assert compiled.token_ids == plain.token_ids
    assert compiled.decoder.stats() == plain.decoder.stats() and compiled.decoder.stats()["swaps_per_step"] > 0
    assert [g.slot_block.tolist() for g in compiled.decoder.groups] == [g.slot_block.tolist()
                                                                        for g in plain.decoder.groups]


def test_pipeline_keeps_no_offload_decoder_between_requests() -> None:
    pipe = _pipe("llama", 0.9)
    pipe.generate(_ids(), max_new_tokens=12, fast=True)
    assert pipe._static_decoder is None  # it would pin the request's host KV until the next call


class _HostTensors(torch.overrides.TorchFunctionMode):
    """Records tensors made from host data (``torch.tensor`` / ``as_tensor``, item assignment of a Python
    number): on CUDA each is a copy from pageable memory, which a CUDA graph capture refuses (the capture
    then fails and the decode runs without its graph, several times slower)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.tensor, torch.as_tensor) or (
                func is torch.Tensor.__setitem__ and not isinstance(args[2], torch.Tensor)):
            self.calls.append(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("arch", ARCHS)
def test_the_captured_step_makes_no_tensor_from_host_data(arch: str) -> None:
    pipe = _pipe(arch, gamma=1.0)
    decoder = static_generate(pipe, _ids(), 12, stop_at_eos=False).decoder
    assert isinstance(decoder, OffloadStaticDecoder) and decoder.stats()["swaps_per_step"] > 0
    with _HostTensors() as mode, torch.inference_mode():  # one more step: what a graph would capture
        decoder.step.zero_()
        decoder._step_fn()
    assert mode.calls == []
