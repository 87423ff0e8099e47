"""CPU speed benchmarks of prefill and decode, unpruned against pruned, on a tiny random Llama.

Why: a change to the staged forward pass, the scorer or the cache can slow every request while the
tests stay green; timing the four paths on a fixed tiny model makes such regressions visible in
``pytest-benchmark compare``. Each benchmark stores tokens per layer, KV bytes and a FLOP estimate in
``extra_info`` so a speed change can be told apart from a change in the work done.

Run (see benchmarks/README.md): ``.venv/bin/python -m pytest benchmarks/ --benchmark-only``.
Not collected by a plain ``pytest`` (pyproject's testpaths is ``tests``).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("pytest_benchmark", reason="needs pytest-benchmark (pip install -e '.[dev]')")

from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from sliminfer.bench.cost import ModelCost  # noqa: E402
from sliminfer.core.config import SlimConfig  # noqa: E402
from sliminfer.core.pipeline import SlimPipeline  # noqa: E402
from sliminfer.core.results import PrefillResult  # noqa: E402

PROMPT_TOKENS = 2048
DECODE_TOKENS = 16
MODEL = dict(
    vocab_size=256,
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=8,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    rope_theta=10000.0,
    eos_token_id=None,
    bos_token_id=0,
    pad_token_id=None,
)
PRUNED = {  # prunes twice: 2048 -> 1024 tokens after layer 2, -> 512 after layer 5
    "pruning": {
        "scorer": {"name": "token_unit", "block_size": 64, "unit_size": 8, "window": 4},
        "schedule": {"name": "fixed", "layers": [2, 5], "budgets": [1024, 512]},
    }
}
VARIANTS = {"unpruned": {}, "pruned": PRUNED}


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(**MODEL)
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def prompt() -> torch.Tensor:
    return torch.randint(0, MODEL["vocab_size"], (1, PROMPT_TOKENS), generator=torch.Generator().manual_seed(0))


def pipeline(model: LlamaForCausalLM, variant: str) -> SlimPipeline:
    return SlimPipeline(model, config=SlimConfig.model_validate(VARIANTS[variant]))


def record(benchmark, result: PrefillResult, flops: float) -> None:
    benchmark.extra_info.update(
        prompt_tokens=result.prompt_tokens,
        tokens_per_layer=result.tokens_per_layer,
        kv_bytes=result.kv_bytes,
        full_kv_bytes=result.full_kv_bytes,
        kv_saved_fraction=round(result.kv_saved_fraction, 4),
        flops=flops,
        torch_threads=torch.get_num_threads(),
    )


# --- the benchmarks ----------------------------------------------------------------------------


@pytest.mark.benchmark(group="prefill")
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_prefill(benchmark, model, prompt, variant):
    pipe = pipeline(model, variant)
    pipe.prefill(prompt)  # warm-up outside the timing (allocator, kernels)

    result = benchmark.pedantic(pipe.prefill, args=(prompt,), rounds=5, iterations=1, warmup_rounds=1)

    expected = [2048] * 8 if variant == "unpruned" else [2048] * 3 + [1024] * 3 + [512] * 2
    assert result.tokens_per_layer == expected
    flops = ModelCost.of(pipe.adapter).prefill_flops(result.tokens_per_layer)
    record(benchmark, result, flops)
    benchmark.extra_info["gflop_per_s"] = round(flops / benchmark.stats.stats.mean / 1e9, 2)


def decode(pipe: SlimPipeline, result: PrefillResult, steps: int) -> torch.Tensor:
    """Greedy decode of ``steps`` tokens after a prefill (the first comes from the prefill's logits)."""
    token = result.logits.argmax(dim=-1, keepdim=True)
    position = result.prompt_tokens
    for _ in range(steps):
        logits = pipe.forward.decode_step(token, position, result.cache)
        token = logits.argmax(dim=-1, keepdim=True)
        position += 1
    return token


@pytest.mark.benchmark(group="decode")
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_decode(benchmark, model, prompt, variant):
    pipe = pipeline(model, variant)
    prefills: list[PrefillResult] = []

    def fresh_prefill() -> tuple[tuple, dict]:  # untimed: each round decodes from its own new cache
        prefills.append(pipe.prefill(prompt, reserve_tokens=DECODE_TOKENS))
        return (pipe, prefills[-1], DECODE_TOKENS), {}

    benchmark.pedantic(decode, setup=fresh_prefill, rounds=5, iterations=1, warmup_rounds=1)

    last = prefills[-1]
    assert [last.cache.layer_tokens(i) for i in range(MODEL["num_hidden_layers"])] == [t + DECODE_TOKENS for t in last.tokens_per_layer]
    flops = ModelCost.of(pipe.adapter).decode_flops(last.tokens_per_layer, DECODE_TOKENS)
    record(benchmark, last, flops)
    benchmark.extra_info.update(
        decode_tokens=DECODE_TOKENS,
        ms_per_token=round(1e3 * benchmark.stats.stats.mean / DECODE_TOKENS, 3),
        gflop_per_s=round(flops / benchmark.stats.stats.mean / 1e9, 2),
    )
