"""The ``offload`` KV cache manager (sliminfer/cache/offload/), on the CPU with tiny fp32 models.

1. With every resident block active (``decode_budget`` null or at least the resident size) it is the
   GPU-resident manager exactly: prefill logits and 32 greedy decode steps' logits bit for bit.
2. With a budget smaller than the resident sets, it equals an independent reference: the stock model
   at full length (DynamicCache) whose per-layer attention masks allow, at each decode step, exactly the
   prompt blocks that the reference itself selects from scratch (token-unit scores of the resident keys
   with its own queries, top-k, sink and most recent block forced, hysteresis gamma, the selection from
   step t's queries applied at step t + 1, step 0 from its own query).
3. Counters: swaps, bytes moved, overlaps, GPU/host bytes; the device slots hold the host blocks.
4. Config errors name the field; YAML selects the manager.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from sliminfer import ConfigError, SlimPipeline, load_config
from sliminfer.cache.base import NoOptions
from sliminfer.cache.gpu_resident import GPUResidentCache
from sliminfer.cache.offload import OffloadConfig, OffloadingKVManager
from sliminfer.strategies.token_unit import TokenUnitConfig, TokenUnitScorer
from sliminfer.testing.reference import MaskedReference, stock_queries
from sliminfer.testing.tiny_models import ARCHS, tiny_model

BLOCK, UNIT = 16, 4
PRUNING = {
    "scorer": {"name": "token_unit", "block_size": BLOCK, "unit_size": UNIT, "window": 4},
    "schedule": {"name": "fixed", "layers": [1, 3], "budgets": [160, 64]},
}


def _ids(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (1, n), generator=torch.Generator().manual_seed(seed))


def _config(pruned: bool, cache: dict | None = None) -> dict:
    config: dict = {"pruning": PRUNING} if pruned else {}
    if cache is not None:
        config["cache"] = {"name": "offload", "block_size": BLOCK, "unit_size": UNIT, **cache}
    return config


# 1. every block active: the GPU-resident manager, exactly -------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("pruned", [False, True], ids=["unpruned", "pruned"])
@pytest.mark.parametrize("budget", [None, 320], ids=["budget_null", "budget_320"])
def test_all_active_equals_gpu_resident_exactly(arch: str, pruned: bool, budget: int | None) -> None:
    model = tiny_model(arch)
    gpu = SlimPipeline.from_pretrained(model, config=_config(pruned))
    off = SlimPipeline.from_pretrained(model, config=_config(pruned, {"decode_budget": budget}))
    ids = _ids(301)
    a, b = gpu.prefill(ids, reserve_tokens=32), off.prefill(ids, reserve_tokens=32)
    assert isinstance(b.cache, OffloadingKVManager)
    assert torch.equal(a.logits, b.logits)
    assert a.tokens_per_layer == b.tokens_per_layer and a.kv_bytes_per_layer == b.kv_bytes_per_layer
    assert (a.tokens_per_layer[-1] < 301) == pruned
    tok_a = tok_b = a.logits.argmax(-1, keepdim=True)
    for step in range(32):
        la = gpu.forward.decode_step(tok_a, 301 + step, a.cache)
        lb = off.forward.decode_step(tok_b, 301 + step, b.cache)
        assert torch.equal(la, lb), step
        tok_a, tok_b = la.argmax(-1, keepdim=True), lb.argmax(-1, keepdim=True)
    stats = b.cache.stats()
    assert not b.cache.wants_queries and stats["selecting_layers"] == []
    assert stats["swaps_total"] == 0 and sum(stats["bytes_moved"][1:]) == 0
    for layer in range(model.config.num_hidden_layers):  # the host copy is the prompt KV, in order
        assert torch.equal(a.cache.layer_keys(layer), b.cache.layer_keys(layer))


def test_all_active_generate_and_buffer_growth_equal_gpu_resident() -> None:
    model = tiny_model("qwen3", seed=3)
    gpu = SlimPipeline.from_pretrained(model, config=_config(True))
    off = SlimPipeline.from_pretrained(model, config=_config(True, {}))
    ids = _ids(250, seed=4)
    assert off.generate(ids, max_new_tokens=20).token_ids == gpu.generate(ids, max_new_tokens=20).token_ids
    a, b = gpu.prefill(ids, reserve_tokens=3), off.prefill(ids, reserve_tokens=3)  # both grow their buffers
    tok = a.logits.argmax(-1, keepdim=True)
    for step in range(12):
        la, lb = gpu.forward.decode_step(tok, 250 + step, a.cache), off.forward.decode_step(tok, 250 + step, b.cache)
        assert torch.equal(la, lb)
        tok = la.argmax(-1, keepdim=True)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("pruned", [False, True], ids=["unpruned", "pruned"])
def test_prefill_in_mlp_chunks_gives_the_same_result(arch: str, pruned: bool) -> None:
    """``prefill_chunk`` bounds the MLP's activations (the GPU memory the offload manager exists to
    save); each token's MLP reads only that token, so the prefill is the same up to GEMM rounding."""
    model = tiny_model(arch)
    whole = SlimPipeline.from_pretrained(model, config=_config(pruned, {"prefill_chunk": None}))
    chunked = SlimPipeline.from_pretrained(model, config=_config(pruned, {"prefill_chunk": 48}))
    assert chunked.new_cache(1).prefill_chunk_tokens == 48 and whole.new_cache(1).prefill_chunk_tokens is None
    ids = _ids(301)
    a, b = whole.prefill(ids), chunked.prefill(ids)
    torch.testing.assert_close(b.logits, a.logits, rtol=1e-5, atol=1e-5)
    assert [p.tolist() for p in a.kept_positions] == [p.tolist() for p in b.kept_positions]
    for layer in range(model.config.num_hidden_layers):
        torch.testing.assert_close(b.cache.layer_keys(layer), a.cache.layer_keys(layer), rtol=1e-5, atol=1e-5)


def test_the_gpu_resident_cache_prefills_whole() -> None:
    assert GPUResidentCache(NoOptions()).prefill_chunk_tokens is None


# 2. selection: an independent masked reference -------------------------------------------------------
class SelectingReference(MaskedReference):
    """Full-length stock forward; each layer's attention mask is replaced through a pre-hook.

    Prefill: layer i sees the prompt positions it kept (MaskedReference's own mask). Decode step t:
    layer i sees all generated tokens, its tail (resident tokens after the last full block) and the
    resident blocks of its active set A_t(i), derived here: with K = max(sink + 1, (budget - tail) // block)
    blocks (all if K >= full blocks), S(q) = sink blocks + last full block + the top blocks by the
    token-unit score of local query q over the layer's resident keys; A_0 = S(q_0),
    A_t = S(mean q_{t-w..t-1}) if it overlaps A_{t-1} by less than gamma, else A_{t-1}.
    """

    def __init__(self, model, kept: list[torch.Tensor], budget: int, window: int, gamma: float, sink: int = 1):
        super().__init__(model, kept)
        self.budget, self.window, self.gamma, self.sink = budget, window, gamma, sink
        self.scorer = TokenUnitScorer(TokenUnitConfig(block_size=BLOCK, unit_size=UNIT, window=window))
        self.t = -1  # decode step (-1: the prefill)
        n_layers = len(kept)
        self.queries: list[list[torch.Tensor]] = [[] for _ in range(n_layers)]
        self.active: list[set[int] | None] = [None] * n_layers
        self.history: list[list[set[int]]] = [[] for _ in range(n_layers)]

    def _select(self, layer: int, q: torch.Tensor) -> set[int]:
        kept = self.kept[layer]
        n_blocks, tail = divmod(kept.numel(), BLOCK)
        keep = max(self.sink + 1, (self.budget - tail) // BLOCK)
        if keep >= n_blocks:
            return set(range(n_blocks))
        forced = set(range(self.sink)) | {n_blocks - 1}
        keys = self.cache.layers[layer].keys[:, :, kept[: n_blocks * BLOCK]]
        scores = self.scorer.score_blocks(q, keys)[0].tolist()
        middle = sorted(range(self.sink, n_blocks - 1), key=lambda b: -scores[b])
        return forced | set(middle[: keep - len(forced)])

    def _decode_mask(self, layer: int, attn, kwargs) -> torch.Tensor:
        q = stock_queries(attn, kwargs["hidden_states"], kwargs["position_embeddings"])
        t = self.t
        if t == 0:
            self.active[layer] = self._select(layer, q)
        else:
            previous = torch.cat(self.queries[layer][max(0, t - self.window) : t], dim=2)
            selected = self._select(layer, previous)
            overlap = len(selected & self.active[layer]) / len(selected)
            if overlap < self.gamma:
                self.active[layer] = selected
        self.queries[layer].append(q)
        self.history[layer].append(set(self.active[layer]))
        kept = self.kept[layer]
        n_blocks = kept.numel() // BLOCK
        allowed = torch.zeros(self.seen + 1, dtype=torch.bool)
        for b in self.active[layer]:
            allowed[kept[b * BLOCK : (b + 1) * BLOCK]] = True
        allowed[kept[n_blocks * BLOCK :]] = True
        allowed[self.n_prompt :] = True
        return allowed[None, None, None, :]

    def _before_attention(self, layer: int, attn, kwargs) -> None:
        if self.t < 0:
            super()._before_attention(layer, attn, kwargs)
        else:
            kwargs["attention_mask"] = self._decode_mask(layer, attn, kwargs)

    def step_token(self, token: torch.Tensor) -> torch.Tensor:
        self.t += 1
        return self._run(token.reshape(1, 1))


def _active_sets(cache: OffloadingKVManager) -> list[set[int]]:
    return [set(st.block_slot) for st in cache.layers]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("pruned", [False, True], ids=["unpruned", "pruned"])
@pytest.mark.parametrize("gamma,window", [(1.0, 4), (0.5, 4), (1.0, 1)])
def test_selection_equals_independent_reference(arch: str, pruned: bool, gamma: float, window: int) -> None:
    budget, steps, n = 96, 24, 301
    model = tiny_model(arch, seed=2)
    cache = {"decode_budget": budget, "gamma": gamma, "recent_window": window}
    pipe = SlimPipeline.from_pretrained(model, config=_config(pruned, cache))
    ids = _ids(n, seed=7)
    result = pipe.prefill(ids, reserve_tokens=steps)
    manager = result.cache
    ref = SelectingReference(model, result.kept_positions, budget, window, gamma)
    assert (result.logits - ref.prefill(ids)).abs().max().item() <= 1e-4
    tok_p = tok_r = result.logits.argmax(-1, keepdim=True)
    gap = 0.0
    for step in range(steps):
        lp = pipe.forward.decode_step(tok_p, n + step, manager)
        lr = ref.step_token(tok_r)
        gap = max(gap, (lp - lr).abs().max().item())
        assert _active_sets(manager) == [h[step] for h in ref.history], step
        tok_p, tok_r = lp.argmax(-1, keepdim=True), lr.argmax(-1, keepdim=True)
        assert int(tok_p) == int(tok_r), (step, gap)
    assert gap <= 1e-4
    stats = manager.stats()
    # the selection matters: some layers attend to fewer prompt tokens than they hold, and sets change
    assert stats["selecting_layers"] and all(
        stats["active_tokens"][i] <= budget < stats["resident_tokens"][i] for i in stats["selecting_layers"]
    )
    if gamma == 1.0:
        assert stats["swaps_total"] > 0


# 3. counters and invariants ---------------------------------------------------------------------------
def _decode(pipe: SlimPipeline, n: int, steps: int, seed: int = 7):
    result = pipe.prefill(_ids(n, seed=seed), reserve_tokens=steps)
    tok = result.logits.argmax(-1, keepdim=True)
    for step in range(steps):
        tok = pipe.forward.decode_step(tok, n + step, result.cache).argmax(-1, keepdim=True)
    return result


@pytest.mark.parametrize("pruned", [False, True], ids=["unpruned", "pruned"])
def test_counters(pruned: bool) -> None:
    model = tiny_model("llama", seed=2)
    steps, n = 20, 301
    token_bytes = 2 * 2 * 16 * 4  # K and V, 2 KV heads, head_dim 16, float32
    block_bytes = BLOCK * token_bytes
    by_gamma = {}
    for gamma in (0.0, 1.0):
        pipe = SlimPipeline.from_pretrained(model, config=_config(pruned, {"decode_budget": 96, "gamma": gamma}))
        manager = _decode(pipe, n, steps).cache
        s = manager.stats()
        by_gamma[gamma] = s
        assert s["steps"] == steps
        assert len(s["bytes_moved"]) == len(s["swaps"]) == len(s["overlap"]) == steps
        # step 0 loads every layer's first active set (tails already on the device)
        assert s["bytes_moved"][0] == sum(t // BLOCK for t in s["active_tokens"]) * block_bytes
        assert s["swaps"][0] == 0 and s["overlap"][0] is None
        for t in range(1, steps):
            assert s["bytes_moved"][t] == s["blocks_swapped"][t] * block_bytes
            assert 0.0 <= s["overlap"][t] <= 1.0
        # every layer's blocks swap together with its incoming count; each swap moves at least one block
        assert all(b >= w for b, w in zip(s["blocks_swapped"], s["swaps"]))
        assert s["gpu_prompt_kv_bytes"] == sum(s["active_tokens"]) * token_bytes
        assert s["gpu_generated_kv_bytes"] == steps * model.config.num_hidden_layers * token_bytes
        assert s["gpu_kv_bytes"] == s["gpu_prompt_kv_bytes"] + s["gpu_generated_kv_bytes"]
        assert s["host_kv_bytes"] == sum(r // BLOCK for r in s["resident_tokens"]) * block_bytes
        assert s["prefill_d2h_bytes"] == s["host_kv_bytes"]
        units = sum(s["resident_tokens"][i] // BLOCK * BLOCK // UNIT for i in s["selecting_layers"])
        assert s["gpu_score_key_bytes"] == units * 2 * 16 * 4
        _check_slots(manager)
    assert by_gamma[0.0]["swaps_total"] == 0 and by_gamma[0.0]["swap_bytes_total"] == 0
    assert by_gamma[1.0]["swaps_total"] > 0 and by_gamma[1.0]["swap_bytes_total"] > 0
    # gamma 1 swaps exactly when the applied selection differs from the active set
    s = by_gamma[1.0]
    assert any(o is not None and o < 1.0 for o in s["overlap"][1:])


def _check_slots(manager: OffloadingKVManager) -> None:
    """Every device slot holds the host copy of the block the manager says it holds."""
    for st in manager.layers:
        heads, d = st.buf.shape[2], st.buf.shape[4]
        view = st.buf[:, 0, :, : st.slots * BLOCK].view(2, heads, st.slots, BLOCK, d)
        assert sorted(st.slot_block) == sorted(st.block_slot) and len(st.slot_block) == st.slots
        for slot, block in enumerate(st.slot_block):
            assert st.block_slot[block] == slot
            assert torch.equal(view[:, :, slot], st.host[block])  # K and V


def test_gamma_zero_keeps_the_first_selection() -> None:
    model = tiny_model("qwen2", seed=1)
    pipe = SlimPipeline.from_pretrained(model, config=_config(False, {"decode_budget": 64, "gamma": 0.0}))
    result = pipe.prefill(_ids(200), reserve_tokens=10)
    tok = result.logits.argmax(-1, keepdim=True)
    pipe.forward.decode_step(tok, 200, result.cache)
    first = _active_sets(result.cache)
    for step in range(1, 10):
        pipe.forward.decode_step(tok, 200 + step, result.cache)
    assert _active_sets(result.cache) == first


def test_scoring_unit_keys_equals_token_unit_scorer_on_full_keys() -> None:
    gen = torch.Generator().manual_seed(0)
    queries = torch.randn(3, 8, 4, 32, generator=gen)
    keys = torch.randn(3, 2, 20 * 64, 32, generator=gen)
    full = TokenUnitScorer(TokenUnitConfig(block_size=64, unit_size=8, window=4)).score_blocks(queries, keys)
    manager = OffloadingKVManager(OffloadConfig(block_size=64, unit_size=8, recent_window=4))
    units = keys.float().reshape(3, 2, 20 * 8, 8, 32).mean(dim=3)
    assert torch.equal(manager.unit_scorer.score_blocks(queries, units), full)


def test_attention_unit_selection_picks_the_blocks_with_the_most_softmax_mass() -> None:
    gen = torch.Generator().manual_seed(1)
    queries = torch.randn(1, 4, 4, 16, generator=gen)
    units = torch.randn(1, 2, 12 * 8, 16, generator=gen)  # 12 blocks of 8 units
    manager = OffloadingKVManager(OffloadConfig(block_size=64, unit_size=8, recent_window=4,
                                                selection="attention_unit"))
    scores = manager.unit_scorer.score_blocks(queries, units)[0]
    q = queries.reshape(1, 2, 8, 16)  # query heads grouped by their KV head, all window queries as rows
    mass = torch.einsum("bgqd,bgkd->bgqk", q, units).div(4.0).softmax(-1).mean(dim=(1, 2))[0]
    assert torch.allclose(scores, mass.reshape(12, 8).amax(-1), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("selection", ["token_unit", "attention_unit"])
def test_selection_option_runs_and_swaps(selection: str) -> None:
    model = tiny_model("llama", seed=2)
    cache = {"decode_budget": 64, "gamma": 1.0, "selection": selection}
    pipe = SlimPipeline.from_pretrained(model, config=_config(True, cache))
    out = pipe.generate(_ids(300), max_new_tokens=12)
    assert len(out.token_ids) == 12
    assert out.prefill.cache.stats()["selecting_layers"]


class _ObservingCache(GPUResidentCache):
    def __init__(self) -> None:
        super().__init__(NoOptions())
        self.queries: dict[int, torch.Tensor] = {}

    def observe_query(self, layer: int, q: torch.Tensor) -> None:
        assert self.lengths[layer] == 0 or layer not in self.queries  # before the layer's update
        self.queries[layer] = q


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_attention_block_observed_equals_attention_block(arch: str, attention: str) -> None:
    model = tiny_model(arch, attention=attention)
    pipe = SlimPipeline.from_pretrained(model)
    adapter = pipe.adapter
    ids = _ids(40)
    plain, observed = pipe.new_cache(4), _ObservingCache()
    observed.setup(adapter.num_layers, 4)
    with torch.inference_mode():
        hidden = adapter.embed(ids)
        pe = adapter.rotary(hidden, torch.arange(40)[None])
        mask = adapter.causal_mask(40, hidden)
        for layer in range(adapter.num_layers):
            a = adapter.attention_block(layer, hidden, pe, mask, plain)
            b = adapter.attention_block_observed(layer, hidden, pe, mask, observed)
            assert torch.equal(a, b)
            q = adapter.window_queries(layer, hidden, pe)
            assert torch.allclose(observed.queries[layer], q, atol=1e-6)
            hidden = adapter.mlp_block(layer, a)


# 4. configuration -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options,field",
    [
        ({"decode_budget": 500}, "cache.decode_budget"),
        ({"decode_budget": 64}, "cache.decode_budget"),  # no room for sink + most recent block
        ({"unit_size": 5}, "cache.unit_size"),
        ({"gamma": 1.5}, "cache.gamma"),
        ({"recent_window": 0}, "cache.recent_window"),
        ({"decode_budgets": 512}, "cache.decode_budgets"),
        ({"prefill_chunk": 0}, "cache.prefill_chunk"),
    ],
)
def test_config_errors_name_the_field(options: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config({"cache": {"name": "offload", **options}})
    assert err.value.field == field
    assert str(err.value).startswith(field)


def test_budget_error_message_says_multiple_of_block_size() -> None:
    with pytest.raises(ConfigError, match=r"cache\.decode_budget: got 500; .*multiple of block_size \(64\)"):
        load_config({"cache": {"name": "offload", "decode_budget": 500}})


def test_yaml_selects_offload(tmp_path) -> None:
    path = tmp_path / "offload.yaml"
    path.write_text("cache: {name: offload, decode_budget: 512}\n")
    config = load_config(path)
    pipe = SlimPipeline(tiny_model("llama"), config=config)
    cache = pipe.new_cache(8)
    assert isinstance(cache, OffloadingKVManager)
    assert cache.config.decode_budget == 512 and cache.config.gamma == 0.9 and cache.config.block_size == 64


# the CUDA code paths, driven on the CPU with stand-in streams and events ----------------------------
class _FakeEvent:
    done = True  # what query() answers: False plays a GPU that is a step behind the host
    log: list[str] = []

    def record(self, stream=None) -> None:
        self.log.append("record")

    def query(self) -> bool:
        self.log.append("query")
        return self.done

    def synchronize(self) -> None:
        self.log.append("synchronize")


class _FakeStream:
    def __init__(self, *args) -> None:
        pass

    def wait_stream(self, other) -> None:
        _FakeEvent.log.append("wait_stream")

    def wait_event(self, event) -> None:
        assert isinstance(event, _FakeEvent)
        _FakeEvent.log.append("wait_event")

    def synchronize(self) -> None:
        _FakeEvent.log.append("stream_synchronize")


class _CudaPathsOnCPU(OffloadingKVManager):
    def _init_device(self, device: torch.device) -> None:
        super()._init_device(device)
        self.cuda = True
        self._d2h, self._h2d = _FakeStream(), _FakeStream()


@pytest.mark.parametrize("done", [True, False], ids=["readback_ready", "gpu_behind"])
def test_cuda_code_paths_give_the_same_decode(monkeypatch, done: bool) -> None:
    main = _FakeStream()
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "Stream", _FakeStream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: main)
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, stream: None, raising=False)
    monkeypatch.setattr(_FakeEvent, "done", done)
    monkeypatch.setattr(_FakeEvent, "log", [])
    model = tiny_model("llama", seed=2)
    options = {"decode_budget": 96, "gamma": 0.9, "pin_memory": False}
    plain = SlimPipeline.from_pretrained(model, config=_config(True, options))
    faked = SlimPipeline.from_pretrained(model, config=_config(True, options))
    a = plain.prefill(_ids(301, seed=7), reserve_tokens=16)
    options_model = OffloadConfig(block_size=BLOCK, unit_size=UNIT, **options)
    cache = _CudaPathsOnCPU(options_model)
    cache.setup(model.config.num_hidden_layers, 16)
    b = faked.forward.prefill(_ids(301, seed=7), cache)
    assert torch.equal(a.logits, b.logits)
    tok = a.logits.argmax(-1, keepdim=True)
    logs = []
    for step in range(16):
        _FakeEvent.log.clear()
        la = plain.forward.decode_step(tok, 301 + step, a.cache)
        lb = faked.forward.decode_step(tok, 301 + step, b.cache)
        assert torch.equal(la, lb)
        logs.append(list(_FakeEvent.log))
        tok = la.argmax(-1, keepdim=True)
    assert a.cache.stats()["swaps"] == b.cache.stats()["swaps"]
    assert _active_sets(a.cache) == _active_sets(b.cache)
    _check_slots(b.cache)
    steady = [entry for log in logs[1:] for entry in log]
    assert ("synchronize" in steady) == (not done)  # waits on an event only when the GPU lags the host
    assert "stream_synchronize" not in steady
    swapped = [t for t, n in enumerate(b.cache.stats()["swaps"]) if n]
    assert swapped and all("wait_event" in logs[t] for t in swapped)  # compute waits for the copies


# out-of-memory message ----------------------------------------------------------------------------
def test_oom_becomes_a_clear_error_naming_the_cap(monkeypatch) -> None:
    from sliminfer.cache import memory

    gib = 1 << 30
    monkeypatch.setattr(memory, "memory_cap", lambda device=None: (24 * gib, 80 * gib, 0.3))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 23 * gib)

    def fail():
        big = torch.zeros(10)  # noqa: F841 - a frame local the error must not keep alive
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.50 GiB. GPU 0 has ...")

    with pytest.raises(memory.GPUOutOfMemoryError) as err:
        memory.call_with_oom_message(fail, "cuda:0", phase="prefill", prompt_tokens=73728, pruning=False,
                                     cache_advice=SlimPipeline.from_pretrained(tiny_model(), config=_config(False)).memory_advice(), weights_bytes=15 * gib)
    message = str(err.value)
    assert message.startswith("prefill: out of GPU memory on cuda:0 with a 73728-token prompt "
                              "(tried to allocate 3.50 GiB")
    assert "24.0 GiB of the GPU's 80.0 GiB" in message and "set_per_process_memory_fraction(0.300)" in message
    assert "offload KV cache manager (cache: {name: offload" in message and "enable pruning" in message
    assert "15.0 GiB" in message and "23.0 GiB were allocated" in message
    assert err.value.__context__ is None and err.value.cap_bytes == 24 * gib
    assert isinstance(err.value, memory.SlimInferError)
    advice = SlimPipeline.from_pretrained(tiny_model(), config=_config(True, {"decode_budget": 96})).memory_advice()  # the manager in use says what to lower
    offload = memory.describe_oom("CUDA out of memory.", "cuda:0", phase="decode", cache_advice=advice, pruning=True)
    assert "decode_budget" in str(offload) and "enable pruning" not in str(offload)
    assert memory.call_with_oom_message(lambda: 3) == 3


def test_oom_message_names_a_cap_that_torch_reports_in_its_message() -> None:
    from sliminfer.cache.memory import describe_oom

    torch_message = ("CUDA out of memory. Tried to allocate 1.75 GiB. GPU 0 has a total capacity of 79.19 GiB of "
                     "which 50.12 GiB is free. Of the allocated memory 22.94 GiB is allocated by PyTorch, with "
                     "24.00 GiB allowed, and 0.23 GiB is reserved by PyTorch but unallocated.")
    err = describe_oom(torch_message, "cpu", phase="prefill", prompt_tokens=65536, pruning=True,
                       cache_advice=SlimPipeline.from_pretrained(tiny_model(), config=_config(False)).memory_advice())
    text = str(err)
    assert "24.00 GiB" in text and "cap" in text and "65536-token prompt" in text
    assert "offload" in text and "tried to allocate 1.75 GiB" in text
