"""``sliminfer bench`` on the CPU: a tiny shape, two prompt lengths, one repeat; JSON fields, tables,
plot; the stock variants and the best stock; plus the FLOP model, the decode floor and OOM handling."""

from __future__ import annotations

import argparse
import importlib.util
import json

import pytest
import torch

from sliminfer.bench.cost import ModelCost
from sliminfer.bench.measure import Meter, copy_bandwidth, graph_seconds_per_call
from sliminfer.bench.report import e2e_table, ttft_table
from sliminfer.bench.shapes import (
    RANDOM_LABEL,
    build_random_model,
    shape_config,
    shape_names,
)
from sliminfer.bench.stock import (
    STOCK_MODES,
    attention_context,
    best_stock,
    enabled_sdpa_backends,
)
from sliminfer.cli.bench_cmd import bandwidth_arg, length_list
from sliminfer.cli.main import main
from sliminfer.core.pipeline import SlimPipeline

PRUNING = ("pruning={scorer: {name: token_unit, block_size: 16, unit_size: 4, window: 4}, "
           "schedule: {name: fixed, layers: [1], budgets: [64]}}")


def test_tiny_bench_writes_json_plot_and_prints_tables_last(tmp_path, capsys) -> None:
    code = main(["bench", "--shape", "tiny-llama", "model.device=cpu", "model.dtype=float32", PRUNING,
                 "--prompt-lengths", "256,320", "--output-lengths", "6", "--repeats", "1", "--warmup", "0",
                 "--out", str(tmp_path), "--name", "tiny"])
    assert code == 0
    record = json.loads((tmp_path / "tiny.json").read_text())
    for key in ("schema", "date", "device", "torch", "transformers", "sliminfer", "python", "config", "settings"):
        assert record[key] is not None, key
    assert record["model"]["label"] == RANDOM_LABEL and record["model"]["random_weights"] is True
    assert record["config"]["pruning"]["schedule"]["budgets"] == [64]
    assert [p["prompt_tokens"] for p in record["points"]] == [256, 320]
    for point in record["points"]:
        assert point["tokens_per_layer"][:2] == [point["prompt_tokens"]] * 2
        assert point["tokens_per_layer"][2] < point["prompt_tokens"]
        assert point["flops"]["ratio"] > 1
        ttft = point["ttft"]
        for mode in ("stock", "stock_no_cudnn", "sliminfer"):  # the default modes: every stock variant
            assert ttft[mode]["status"] == "ok" and ttft[mode]["median_s"] > 0
        assert ttft["best_stock"] == min(("stock", "stock_no_cudnn"), key=lambda m: ttft[m]["median_s"])
        assert ttft["speedup_vs_best_stock"] == pytest.approx(
            ttft[ttft["best_stock"]]["median_s"] / ttft["sliminfer"]["median_s"])
        assert "CUDNN_ATTENTION" in ttft["stock_no_cudnn"]["sdpa_backends"]  # on the CPU nothing is excluded
        (e2e,) = point["e2e"]
        assert e2e["new_tokens"] == 6
        for path in (*STOCK_MODES, "eager", "static"):
            assert e2e[path]["status"] == "ok", e2e[path]
            assert e2e[path]["new_tokens_made"] == 6 and "tokens" not in e2e[path]
            assert e2e[path]["decode_ms_per_token"] is not None  # stock: (generate - TTFT) / 5, noisy on a CPU
        assert e2e["no_cudnn_matches_stock_tokens"] == 1.0 and e2e["static_matches_stock_tokens"] == 1.0
        assert e2e["stock_no_cudnn"]["ttft_s"] == ttft["stock_no_cudnn"]["median_s"]  # its own TTFT
        assert e2e["stock_static"]["ttft_s"] > 0  # a one-token generate with the static cache
        assert e2e["speedup"]["static_vs_stock_static"] == pytest.approx(
            e2e["stock_static"]["median_s"] / e2e["static"]["median_s"])
        best = e2e["best_stock"]
        assert best == min(STOCK_MODES, key=lambda m: e2e[m]["median_s"])
        for path in ("eager", "static"):
            assert e2e["speedup"][f"{path}_vs_best_stock"] == pytest.approx(
                e2e[best]["median_s"] / e2e[path]["median_s"])
            assert e2e["speedup"][path] == pytest.approx(e2e["stock"]["median_s"] / e2e[path]["median_s"])
        assert e2e["eager"]["decode_ms_per_token"] > 0 and e2e["static"]["decode_ms_per_token"] > 0
        assert e2e["static_matches_eager_tokens"] == 1.0
        assert e2e["static"]["graph"] is False and e2e["static"]["attention"] == "sdpa"
        assert 0 < e2e["floor_ms_per_token"]["sliminfer"] < e2e["floor_ms_per_token"]["stock"]
        bandwidth = e2e["floor_ms_per_token"]["bandwidth_bytes_per_s"]
        for path, floor in (("static", "sliminfer"), ("stock", "stock")):  # bytes a step reads / its time
            if path == "stock" and e2e["stock"]["decode_ms_per_token"] <= 0:
                continue  # (generate - TTFT) / 5 on a loaded CPU: no rate to give
            step_bytes = e2e["floor_ms_per_token"][floor] * 1e-3 * bandwidth
            assert e2e["achieved_gb_per_s"][path] == pytest.approx(
                step_bytes / (e2e[path]["decode_ms_per_token"] * 1e-3) / 1e9)
    out = capsys.readouterr().out
    assert "Time to first token" in out
    for head in ("stock no-cuDNN TTFT s", "best stock TTFT s", "x vs best", "stock no-cuDNN s", "stock static s",
                 "best stock", "x eager vs best", "x static vs best", "stock no-cuDNN ms/tok", "slim static GB/s",
                 "static / floor"):
        assert head in out, head
    last = out.rstrip().splitlines()
    assert last[-1].split()[:2] == ["320", "6"]  # the end-to-end table is the last thing printed
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "tiny.png").stat().st_size > 0


def test_ttft_only_grid_without_stock(tmp_path, capsys) -> None:
    assert main(["bench", "model.device=cpu", "--shape", "tiny-llama", "--prompt-lengths", "128", "--repeats", "1",
                 "--warmup", "0", "--modes", "sliminfer", "--out", str(tmp_path), "--name", "t", "--no-plot"]) == 0
    point = json.loads((tmp_path / "t.json").read_text())["points"][0]
    assert point["ttft"]["sliminfer"]["status"] == "ok" and "stock" not in point["ttft"]
    assert point["ttft"]["speedup"] is None and point["e2e"] == []
    assert point["ttft"]["best_stock"] is None and point["ttft"]["speedup_vs_best_stock"] is None
    out = capsys.readouterr().out
    assert "Time to first token" in out and "stock" not in out.split("Time to first token")[1]


def test_flop_model_and_decode_floor_of_the_paper_schedule() -> None:
    llama = ModelCost(num_layers=32, hidden=4096, q_heads=32, kv_heads=8, head_dim=128, intermediate=14336,
                      vocab=128256, dtype_bytes=2, weight_bytes=15_000_000_000)

    def schedule(n: int) -> list[int]:
        return [n] * 10 + [min(n, 8192)] * 10 + [min(n, 4096)] * 10 + [min(n, 2048)] * 2

    # pruning after whole layers: the ratios ../shared/docs/gpu.md quotes (1.27x / 1.92x / 2.52x)
    ratios = [llama.prefill_flops([n] * 32) / llama.prefill_flops(schedule(n), prune_after_attention=False)
              for n in (8192, 16384, 32768)]
    assert [round(r, 2) for r in ratios] == [1.27, 1.92, 2.52]
    # the paper's prune point (after the attention) also saves the pruning layer's MLP work
    assert llama.prefill_flops(schedule(32768)) < llama.prefill_flops(schedule(32768), prune_after_attention=False)
    assert llama.kv_bytes_per_token_layer == 4096  # 4 KiB per token per layer (method.md)
    floor = llama.decode_floor_s(schedule(32768), 256)
    assert floor == pytest.approx((15e9 + sum(t + 128 for t in schedule(32768)) * 4096) / 3.35e12)


def test_weight_bytes_skip_the_embedding_unless_tied() -> None:
    model = build_random_model("tiny-llama", torch.float32, torch.device("cpu"))
    cost = ModelCost.of(SlimPipeline(model, None).adapter)
    total = sum(p.numel() * 4 for p in model.parameters())
    assert cost.weight_bytes == total - model.model.embed_tokens.weight.numel() * 4
    assert cost.head_dim == 16 and cost.vocab == 256


def test_shapes_have_the_real_dimensions() -> None:
    assert {"llama-3.1-8b", "qwen2.5-7b", "smollm2-135m"} <= set(shape_names())
    llama, qwen = shape_config("llama-3.1-8b"), shape_config("qwen2.5-7b")
    assert (llama.hidden_size, llama.num_hidden_layers, llama.num_attention_heads, llama.num_key_value_heads,
            llama.intermediate_size, llama.vocab_size, llama.max_position_embeddings) == (
            4096, 32, 32, 8, 14336, 128256, 131072)
    assert llama.rope_parameters["rope_type"] == "llama3" and llama.rope_parameters["rope_theta"] == 500000.0
    assert (qwen.hidden_size, qwen.num_hidden_layers, qwen.num_attention_heads, qwen.num_key_value_heads,
            qwen.intermediate_size, qwen.vocab_size, qwen.max_position_embeddings) == (
            3584, 28, 28, 4, 18944, 152064, 131072)
    assert qwen.rope_parameters["rope_theta"] == 1e6


def test_out_of_memory_is_recorded_not_raised() -> None:
    def boom():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")

    result = Meter(torch.device("cpu"), warmup=0, repeats=2).measure(boom)
    assert result["status"] == "oom" and "80 GiB" in result["error"]
    broken = Meter(torch.device("cpu"), warmup=0, repeats=1).measure(lambda: 1 / 0)
    assert broken["status"] == "error" and "ZeroDivisionError" in broken["error"]


def test_length_lists() -> None:
    assert length_list("8k, 16K,100") == [8192, 16384, 100]
    assert length_list("") == []


def test_bench_rejects_an_unknown_mode(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--shape", "tiny-llama", "--modes", "stock,fast"])
    assert "'stock,fast': choose from stock, stock_no_cudnn, stock_static, sliminfer" in capsys.readouterr().err


def _m(seconds: float, **extra: object) -> dict[str, object]:
    return {"status": "ok", "median_s": seconds, **extra}


def test_best_stock_is_the_fastest_stock_that_ran() -> None:
    """The argmin over the stock variants measured OK: sliminfer paths, failed runs and absent modes
    never win, and a TTFT dict is judged by the same rule."""
    row = {"new_tokens": 8, "stock": _m(11.3), "stock_no_cudnn": _m(6.4), "stock_static": _m(3.8),
           "eager": _m(2.0), "static": _m(1.5), "speedup": {}}
    assert best_stock(row) == "stock_static"
    assert best_stock({**row, "stock_static": {"status": "oom", "error": "out of memory"}}) == "stock_no_cudnn"
    assert best_stock({"stock": _m(2.0), "stock_no_cudnn": _m(1.0), "sliminfer": _m(0.5)}) == "stock_no_cudnn"
    assert best_stock({"stock": {"status": "error", "error": "x"}, "static": _m(1.0)}) is None
    assert best_stock({}) is None


def test_tables_name_the_best_stock_and_drop_unmeasured_modes() -> None:
    """From a hand-made point: the 'vs best' cells and the best stock's name; no column for a mode that
    was not run (here stock_no_cudnn and the eager decode)."""
    e2e = {"new_tokens": 128, "stock": _m(11.3, decode_ms_per_token=77.0), "stock_static": _m(3.77),
           "static": _m(1.49), "best_stock": "stock_static", "static_matches_stock_tokens": 1.0,
           "speedup": {"static": 11.3 / 1.49, "static_vs_best_stock": 3.77 / 1.49},
           "floor_ms_per_token": {"stock": 5.0, "sliminfer": 4.0, "bandwidth_bytes_per_s": 4.8e12}}
    ttft = {"stock": _m(1.4), "stock_no_cudnn": _m(1.2), "sliminfer": _m(0.5), "speedup": 2.8,
            "best_stock": "stock_no_cudnn", "speedup_vs_best_stock": 2.4}
    point = {"prompt_tokens": 32768, "flops": {"ratio": 2.6}, "kv_saved": 0.56, "ttft": ttft, "e2e": [e2e]}
    head, _, cells = e2e_table([point]).splitlines()
    assert "best stock" in head and "x static vs best" in head and "stock static ms/tok" in head
    assert "no-cuDNN" not in head and "eager" not in head
    assert "stock_static" in cells.split() and "2.53x" in cells.split() and "7.58x" in cells.split()
    head, _, cells = ttft_table([point]).splitlines()
    assert "stock no-cuDNN TTFT s" in head and "best stock TTFT s" in head and "x vs best" in head
    assert cells.split()[:7] == ["32768", "1.400", "1.200", "0.500", "2.80x", "stock_no_cudnn", "1.200"]


def test_no_cudnn_context_excludes_cudnn_on_cuda_only_for_its_mode() -> None:
    """sdpa_kernel sets torch's global flags, so the restriction (and its record) is checked without a
    GPU; the flags come back after the call."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    before = enabled_sdpa_backends()
    with attention_context("stock_no_cudnn", cuda):
        assert enabled_sdpa_backends() == ["FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH"]
    for mode, device in (("stock", cuda), ("stock_static", cuda), ("stock_no_cudnn", cpu)):
        with attention_context(mode, device):
            assert "CUDNN_ATTENTION" in enabled_sdpa_backends()
    assert enabled_sdpa_backends() == before


def test_bandwidth_flag_takes_bytes_per_second_or_copy() -> None:
    assert bandwidth_arg("4.3e12") == 4.3e12 and bandwidth_arg("copy") == "copy"
    for bad in ("fast", "0", "-1e12", "nan"):
        with pytest.raises(argparse.ArgumentTypeError, match="'copy'"):
            bandwidth_arg(bad)


def test_measure_or_raise_raises_what_measure_would_return_as_a_status() -> None:
    meter = Meter(torch.device("cpu"), warmup=0, repeats=2)
    assert meter.measure_or_raise(lambda: 1)["status"] == "ok"

    def broken() -> None:
        raise ValueError("no such thing")

    assert meter.measure(broken)["status"] == "error"
    with pytest.raises(RuntimeError, match=r"timing failed \(error\): ValueError: no such thing"):
        meter.measure_or_raise(broken)


def test_graph_seconds_per_call_runs_warm_up_then_repeats_of_calls_and_refuses_zero() -> None:
    seen = []
    seconds = graph_seconds_per_call(lambda: seen.append(1), calls=5, repeats=3, device=torch.device("cpu"))
    assert len(seen) == 5 * (1 + 3) and seconds >= 0.0  # one untimed round, then three timed rounds of five
    with pytest.raises(ValueError, match="calls=0"):
        graph_seconds_per_call(lambda: None, calls=0, repeats=3, device=torch.device("cpu"))


def test_measured_copy_bandwidth_sets_the_floor(tmp_path, capsys) -> None:
    assert copy_bandwidth(torch.device("cpu"), nbytes=1 << 20, repeats=3) > 0
    assert main(["bench", "model.device=cpu", "--shape", "tiny-llama", "--prompt-lengths", "64", "--output-lengths", "3",
                 "--repeats", "1", "--warmup", "0", "--modes", "sliminfer", "--decode", "static", "--no-ttft",
                 "--bandwidth", "copy", "--out", str(tmp_path), "--name", "c", "--no-plot"]) == 0
    floor = json.loads((tmp_path / "c.json").read_text())["points"][0]["e2e"][0]["floor_ms_per_token"]
    assert floor["bandwidth_source"] == "measured copy" and floor["bandwidth_bytes_per_s"] > 0
    out = capsys.readouterr().out
    assert f"at {floor['bandwidth_bytes_per_s'] / 1e12:.2f} TB/s, measured copy)" in out
