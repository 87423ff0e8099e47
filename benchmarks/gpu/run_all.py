"""Everything the GPU machine has to do, in one call: correctness checks, then the timing grid.

Run on the device machine through the wrapper (installs carried wheels, tees a log under $OUT):

    bash scripts/gpu_bench.sh

or directly: ``PYTHONPATH=$PWD python3 benchmarks/gpu/run_all.py --out $OUT``. The same code path runs
on a CPU with tiny shapes in seconds: ``python benchmarks/gpu/run_all.py --smoke --out /tmp/smoke``.

Stages (each one's failure is printed and the next one runs; results are saved after every stage):
1. small model (SmolLM2-135M shape, random weights): fp32 unpruned == stock, pruned == the masked
   full-length reference (sliminfer.testing.reference), graph decode == eager decode; bf16 unpruned vs stock
   closeness, pruned vs unpruned sanity, graph vs eager agreement;
2. Llama-3.1-8B shape (random bf16 weights, the paper's schedule): graph-captured decode vs eager
   decode at a 16k prompt, 64 tokens, free-running and teacher-forced (agreement rate), per attention
   kernel;
3. Llama-3.1-8B grid: (3a) TTFT at 8k/16k/32k/64k/128k, (3b) end-to-end at 32k with 256 new tokens
   (every stock variant of :mod:`sliminfer.bench.stock`: generate as it comes, with cuDNN attention
   excluded, with a static cache that transformers compiles; sliminfer eager decode and graph decode);
4. decode variants at 32k (graph decode with SDPA / FlashAttention varlen / torch.compile), ms/token
   against the bandwidth floor;
5. Qwen2.5-7B grid: TTFT at 16k/32k/64k.
Writes ``gpu_bench.json`` (all stages), ``bench-<model>.json`` (bench records) and PNG plots under
``--out``; prints the tables last. All numbers: random weights, speed only.
"""

from __future__ import annotations

import argparse
import gc
import json
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from sliminfer import SlimConfig, SlimPipeline, load_config  # noqa: E402
from sliminfer.bench.grid import GridRunner, GridSettings, free_memory, prompt_ids  # noqa: E402
from sliminfer.bench.report import plot, summary, write_json  # noqa: E402
from sliminfer.bench.run import environment  # noqa: E402
from sliminfer.bench.shapes import RANDOM_LABEL, build_random_model  # noqa: E402
from sliminfer.bench.stock import STOCK_MODES  # noqa: E402
from sliminfer.decode.kernels import flash_decode_available  # noqa: E402
from sliminfer.decode.run import static_generate  # noqa: E402

K = 1024
PAPER = {  # used when the presets of the same name cannot be loaded
    "llama-3.1-8b": {"pruning": {"scorer": {"name": "token_unit", "block_size": 64, "unit_size": 8, "window": 4},
                                 "schedule": {"name": "fixed", "layers": [9, 19, 29], "budgets": [8192, 4096, 2048]}}},
    "qwen2.5-7b": {"pruning": {"scorer": {"name": "token_unit", "block_size": 64, "unit_size": 8, "window": 4},
                               "schedule": {"name": "fixed", "layers": [8, 17, 25], "budgets": [12288, 6144, 4096]}}},
}
TINY_PRUNING = {"pruning": {"scorer": {"name": "token_unit", "block_size": 16, "unit_size": 4, "window": 4},
                            "schedule": {"name": "fixed", "layers": [1, 2], "budgets": [128, 64]}}}


def profile(smoke: bool) -> dict[str, Any]:
    """What to run: the real plan, or the same stages with tiny shapes for a CPU smoke run."""
    if smoke:
        return dict(device="cpu", dtype=torch.float32, small="tiny-llama", small_config=TINY_PRUNING, small_prompt=300,
                    llama="tiny-llama", llama_config=TINY_PRUNING, check_prompt=400,
                    llama_ttft=[(256, 1, 1), (384, 0, 1)], llama_e2e=(512, 16, 0, 1), variants_prompt=512,
                    variant_tokens=16, qwen="tiny-qwen2", qwen_config=TINY_PRUNING, qwen_ttft=[(256, 0, 1)])
    return dict(device="cuda", dtype=torch.bfloat16, small="smollm2-135m", small_config="smollm2-135m",
                small_prompt=3000, llama="llama-3.1-8b", llama_config="llama-3.1-8b", check_prompt=16 * K,
                # (prompt tokens, warm-up runs, timed repeats): ~12 s per stock run at 128k
                llama_ttft=[(8 * K, 1, 3), (16 * K, 1, 3), (64 * K, 1, 2), (128 * K, 1, 2)],
                llama_e2e=(32 * K, 256, 1, 2), variants_prompt=32 * K, variant_tokens=128,
                qwen="qwen2.5-7b", qwen_config="qwen2.5-7b", qwen_ttft=[(16 * K, 1, 3), (32 * K, 1, 3), (64 * K, 1, 2)])


def pruning_config(name_or_dict: str | dict[str, Any]) -> SlimConfig:
    """The preset's pruning and cache sections (its model section is not used: shapes are built in code)."""
    if isinstance(name_or_dict, dict):
        return load_config(name_or_dict)
    try:
        return load_config(name_or_dict)
    except Exception as exc:  # noqa: BLE001
        print(f"preset {name_or_dict!r} not loadable ({exc}); using the paper's schedule from this script")
        return load_config(PAPER[name_or_dict])


class Stages:
    """Runs named stages under a time budget; a failing stage is recorded and the next one runs."""

    def __init__(self, out: Path, budget_s: float) -> None:
        self.out, self.budget_s, self.t0 = out, budget_s, time.perf_counter()
        self.results: dict[str, Any] = {"stages": {}, "records": {}}

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)

    def run(self, name: str, fn: Callable[[], Any], need_s: float = 0.0) -> Any:
        elapsed = time.perf_counter() - self.t0
        if self.left() < need_s:
            print(f"\n== {name}: skipped ({self.left():.0f} s left, needs ~{need_s:.0f} s)", flush=True)
            self.results["stages"][name] = {"status": "skipped", "left_s": self.left()}
            self.save()
            return None
        print(f"\n== {name} (t = {elapsed:.0f} s)", flush=True)
        start = time.perf_counter()
        try:
            value, status = fn(), "ok"
        except Exception as exc:  # noqa: BLE001 - print, record, go on with the next stage
            traceback.print_exc()
            value, status = {"error": f"{type(exc).__name__}: {exc}"}, "error"
        self.results["stages"][name] = {"status": status, "seconds": time.perf_counter() - start, "result": value}
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.save()
        return value

    def save(self) -> None:
        self.results["elapsed_s"] = time.perf_counter() - self.t0
        self.out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.results, indent=1, default=lambda o: f"<{type(o).__name__}>")
        (self.out / "gpu_bench.json").write_text(text + "\n", encoding="utf-8")


# correctness -------------------------------------------------------------------------------------------
def agreeing_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def graph_vs_eager(pipe: SlimPipeline, ids: torch.Tensor, steps: int, attention: str) -> dict[str, Any]:
    """Free-running and teacher-forced agreement of the static (graph) decode with the eager decode."""
    eager = pipe.generate(ids, max_new_tokens=steps)
    fast = static_generate(pipe, ids, steps, stop_at_eos=False, options={"kernel": attention})
    decoder = fast.decoder
    out: dict[str, Any] = {
        "attention": decoder.attention, "graph": decoder.graph is not None, "graph_error": decoder.graph_error,
        "capture_s": decoder.capture_s, "tokens": steps,
        "free_running_identical_prefix": agreeing_prefix(eager.token_ids, fast.token_ids),
        "eager_ms_per_token": eager.decode_s_per_token * 1e3, "graph_ms_per_token": fast.decode_s_per_token * 1e3,
    }
    prefill = pipe.forward.prefill(ids, decoder.prefill_cache())
    decoder.load(prefill, prefill.logits.argmax(-1, keepdim=True))
    picked, logits = decoder.decode_forced(eager.token_ids[:-1])
    reference = pipe.prefill(ids, reserve_tokens=steps)
    gaps, scale = [], []
    for i, token in enumerate(eager.token_ids[:-1]):
        want = pipe.forward.decode_step(torch.tensor([[token]], device=ids.device), ids.shape[1] + i, reference.cache)
        gaps.append((logits[i] - want.float()).abs().max().item())
        scale.append(want.float().abs().max().item())
    same = [p == e for p, e in zip(picked, eager.token_ids[1:])]
    out.update({"teacher_forced_agreement": sum(same) / len(same), "max_logit_gap": max(gaps),
                "median_logit_gap": statistics.median(gaps), "max_abs_logit": max(scale)})
    return out


def check_small(p: dict[str, Any]) -> dict[str, Any]:
    from sliminfer.testing.reference import MaskedReference, greedy_decode_both

    device, res = torch.device(p["device"]), {}
    config = pruning_config(p["small_config"])
    # fp32: exactness against stock transformers and against the independent masked reference
    model = build_random_model(p["small"], torch.float32, device)
    ids = prompt_ids(p["small_prompt"], model.config.vocab_size, device, seed=1)
    plain, pruned = SlimPipeline(model, None, SlimConfig()), SlimPipeline(model, None, config)
    with torch.inference_mode():
        stock = model(ids, use_cache=True, logits_to_keep=1).logits[:, -1]
    res["fp32_unpruned_vs_stock_max_abs"] = (plain.prefill(ids).logits - stock).abs().max().item()
    ours = plain.generate(ids, max_new_tokens=32).token_ids
    with torch.inference_mode():
        theirs = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=32,
                                min_new_tokens=32)[0, ids.shape[1]:].tolist()
    res["fp32_unpruned_greedy_equals_stock_generate"] = ours == theirs
    result = pruned.prefill(ids, reserve_tokens=16)
    res["tokens_per_layer"] = result.tokens_per_layer
    reference = MaskedReference(model, result.kept_positions)
    res["fp32_pruned_vs_masked_reference_max_abs"] = (result.logits - reference.prefill(ids)).abs().max().item()
    a, b, gap = greedy_decode_both(pruned, reference, result, steps=16)
    res["fp32_pruned_decode_equals_reference"], res["fp32_pruned_decode_max_gap"] = a == b, gap
    del reference, result
    for name, pipe in (("unpruned", plain), ("pruned", pruned)):
        eager = pipe.generate(ids, max_new_tokens=64).token_ids
        res[f"fp32_{name}_graph_equals_eager_64"] = static_generate(pipe, ids, 64).token_ids == eager
    del model, plain, pruned
    free_memory(device)
    # bf16 (the dtype the speed runs use)
    if p["dtype"] != torch.float32:
        model = build_random_model(p["small"], p["dtype"], device)
        plain, pruned = SlimPipeline(model, None, SlimConfig()), SlimPipeline(model, None, config)
        with torch.inference_mode():
            stock = model(ids, use_cache=True, logits_to_keep=1).logits[:, -1].float()
        full = plain.prefill(ids).logits.float()
        res["bf16_unpruned_vs_stock_max_abs"] = (full - stock).abs().max().item()
        res["bf16_unpruned_vs_stock_same_argmax"] = bool(full.argmax() == stock.argmax())
        slim = pruned.prefill(ids)
        res["bf16_pruned_kv_saved"] = slim.kv_saved_fraction
        res["bf16_pruned_vs_unpruned_cosine"] = torch.nn.functional.cosine_similarity(slim.logits.float(), full).item()
        res["bf16_pruned_logits_finite"] = bool(torch.isfinite(slim.logits).all())
        res["bf16_pruned_graph_vs_eager"] = graph_vs_eager(pruned, ids, 64, "auto")
        del model, plain, pruned
        free_memory(device)
    return res


# the big models -------------------------------------------------------------------------------------------
def build(p: dict[str, Any], key: str) -> SlimPipeline:
    device = torch.device(p["device"])
    start = time.perf_counter()
    model = build_random_model(p[key], p["dtype"], device)
    print(f"built {p[key]} ({RANDOM_LABEL}) in {time.perf_counter() - start:.1f} s", flush=True)
    return SlimPipeline(model, None, pruning_config(p[f"{key}_config"]))


def grid(pipe: SlimPipeline, plan: list[tuple[int, int, int]], new_tokens: int = 0,
         decoders: tuple[str, ...] = ("eager", "graph"),
         modes: tuple[str, ...] = ("stock", "sliminfer")) -> list[dict[str, Any]]:
    points = []
    for n, warmup, repeats in plan:
        settings = GridSettings(prompt_lengths=[n], output_lengths=[new_tokens] if new_tokens else [],
                                warmup=warmup, repeats=repeats, decoders=decoders, modes=modes)
        points += GridRunner(pipe, settings, log=lambda m: print(m, flush=True)).run()
    return points


def record(pipe: SlimPipeline, name: str, points: list[dict[str, Any]]) -> dict[str, Any]:
    model = pipe.model
    return {
        "schema": "sliminfer-bench/1", **environment(pipe.device),
        "model": {"name": name, "shape": name, "random_weights": True, "label": RANDOM_LABEL,
                  "model_type": model.config.model_type, "dtype": str(next(model.parameters()).dtype)[6:],
                  "attention": model.config._attn_implementation, "num_layers": pipe.adapter.num_layers,
                  "hidden_size": model.config.hidden_size},
        "config": pipe.config.model_dump(mode="json"),
        "settings": {"plan": "benchmarks/gpu/run_all.py"},
        "points": sorted(points, key=lambda q: q["prompt_tokens"]),
    }


def decode_variants(pipe: SlimPipeline, p: dict[str, Any], stages: Stages) -> dict[str, Any]:
    """Graph decode ms/token per attention kernel (and compiled), one prompt, against the floor."""
    from sliminfer.bench.cost import ModelCost

    device = pipe.device
    ids = prompt_ids(p["variants_prompt"], pipe.model.config.vocab_size, device)
    new = p["variant_tokens"]
    variants = [("split", {"kernel": "split"}), ("split+compile", {"kernel": "split", "compile": True})]
    if flash_decode_available(device, p["dtype"]):
        variants += [("flash", {"kernel": "flash"}), ("flash+compile", {"kernel": "flash", "compile": True})]
    variants.append(("sdpa", {"kernel": "sdpa"}))
    if p.get("only_variants"):
        variants = [v for v in variants if v[0] in p["only_variants"]]
    out: dict[str, Any] = {}
    for label, options in variants:
        if options.get("compile") and stages.left() < 200:  # keep time for the Qwen grid after this stage
            out[label] = {"status": "skipped", "left_s": stages.left()}
            continue
        try:
            with _deadline(max(30.0, stages.left() - 120)):
                first = static_generate(pipe, ids, new, stop_at_eos=False, options={**options})
                again = static_generate(pipe, ids, new, decoder=first.decoder, stop_at_eos=False)
            floor = ModelCost.of(pipe.adapter).decode_floor_s(again.prefill.tokens_per_layer, new) * 1e3
            out[label] = {"status": "ok", "ms_per_token": again.decode_s_per_token * 1e3, "floor_ms": floor,
                          "x_floor": again.decode_s_per_token * 1e3 / floor, "graph": again.graph,
                          "graph_error": first.decoder.graph_error, "setup_first_s": first.setup_s,
                          "same_tokens_as_sdpa": again.token_ids == out.get("_tokens", again.token_ids)}
            out.setdefault("_tokens", again.token_ids)
            print(f"  {label}: {out[label]['ms_per_token']:.2f} ms/token (floor {floor:.2f})", flush=True)
            del first, again
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            out[label] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
        free_memory(device)
    out.pop("_tokens", None)
    return out


class _deadline:
    """Raise TimeoutError in the main thread after ``seconds`` (SIGALRM; a no-op where unsupported)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = int(seconds)

    def __enter__(self) -> None:
        if hasattr(signal, "SIGALRM"):
            signal.signal(signal.SIGALRM, self._fire)
            signal.alarm(max(1, self.seconds))

    def __exit__(self, *exc: Any) -> None:
        if hasattr(signal, "SIGALRM"):
            signal.alarm(0)

    def _fire(self, *_: Any) -> None:
        raise TimeoutError(f"stage ran past its {self.seconds} s deadline")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for the whole run (stages check it)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU: check the code path only")
    parser.add_argument("--skip", default="", help="comma list of stage numbers to skip, e.g. 4,5 (3a: the TTFT "
                        "grid only)")
    parser.add_argument("--variants", default="", help="stage 4 only: comma list, e.g. split+compile,flash")
    args = parser.parse_args()
    p = profile(args.smoke)
    p["only_variants"] = set(filter(None, args.variants.split(",")))
    skip = set(filter(None, args.skip.split(",")))
    if p["device"] == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: use --smoke for a CPU run")
        return 2
    stages = Stages(args.out, args.budget)
    device = torch.device(p["device"])
    env = environment(device)
    env["flash_decode"] = flash_decode_available(device, p["dtype"])
    stages.results["environment"] = env
    print(json.dumps(env, indent=1), flush=True)

    if "1" not in skip:
        stages.run("1 small model: exactness, bf16 sanity, graph vs eager", lambda: check_small(p), need_s=60)
    pipe = stages.run("build " + p["llama"], lambda: build(p, "llama"))
    llama_points: list[dict[str, Any]] = []
    if pipe is not None:
        if "2" not in skip:
            ids = prompt_ids(p["check_prompt"], pipe.model.config.vocab_size, device, seed=2)
            kernels = ["split"] + (["flash"] if env["flash_decode"] else [])
            stages.run(f"2 {p['llama']}: graph vs eager decode, {p['check_prompt']} prompt, 64 tokens",
                       lambda: {k: graph_vs_eager(pipe, ids, 64, k) for k in kernels}, need_s=60)
            del ids
        if "3" not in skip:
            ttft = None
            if "3a" not in skip:
                ttft = stages.run(f"3a {p['llama']}: TTFT grid", lambda: grid(pipe, p["llama_ttft"]), need_s=120)
            n, new, warmup, repeats = p["llama_e2e"]
            e2e = stages.run(f"3b {p['llama']}: end to end, {n} prompt, {new} new (every stock variant: as it comes, "
                             "cuDNN excluded, static cache + compile; sliminfer eager and graph decode)",
                             lambda: grid(pipe, [(n, warmup, repeats)], new, modes=(*STOCK_MODES, "sliminfer")),
                             need_s=90)
            llama_points = [q for part in (ttft, e2e) if isinstance(part, list) for q in part]
            stages.results["records"][p["llama"]] = record(pipe, p["llama"], llama_points)
            stages.save()
        if "4" not in skip:
            stages.run(f"4 {p['llama']}: graph decode variants", lambda: decode_variants(pipe, p, stages), need_s=45)
        pipe.model.to("meta")  # release the weights before the next model
        del pipe
        free_memory(device)
    if "5" not in skip:
        qwen = stages.run("build " + p["qwen"], lambda: build(p, "qwen"), need_s=60)
        if qwen is not None:
            points = stages.run(f"5 {p['qwen']}: TTFT grid", lambda: grid(qwen, p["qwen_ttft"]), need_s=30)
            if isinstance(points, list):
                stages.results["records"][p["qwen"]] = record(qwen, p["qwen"], points)
            del qwen
            free_memory(device)

    # files and the tables, last
    texts = []
    for name, rec in stages.results["records"].items():
        write_json(rec, args.out / f"bench-{name}.json")
        try:
            plot(rec, args.out / f"bench-{name}.png")
        except Exception as exc:  # noqa: BLE001
            print(f"plot of {name} failed: {exc}")
        texts.append(summary(rec))
    stages.save()
    print("\n" + "=" * 100)
    for name, stage in stages.results["stages"].items():
        print(f"{stage['status']:>7}  {stage.get('seconds', 0):6.1f} s  {name}")
    print(_checks_line(stages.results["stages"]))
    for text in texts:
        print("\n" + text)
    return 0


def _checks_line(stage_results: dict[str, Any]) -> str:
    """The correctness figures in one block (agreement rates and gaps)."""
    lines = []
    for name, stage in stage_results.items():
        value = stage.get("result")
        if not isinstance(value, dict) or not (name.startswith("1 ") or name.startswith("2 ") or name.startswith("4 ")):
            continue
        flat = {k: v for k, v in value.items() if not isinstance(v, (dict, list))}
        nested = {k: v for k, v in value.items() if isinstance(v, dict)}
        if flat:
            lines.append(f"{name.split(':')[0]}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in flat.items()))
        for key, sub in nested.items():
            keys = ("free_running_identical_prefix", "teacher_forced_agreement", "max_logit_gap", "graph",
                    "eager_ms_per_token", "graph_ms_per_token", "ms_per_token", "floor_ms", "x_floor", "status")
            lines.append(f"{name.split(':')[0]} [{key}]: " + ", ".join(f"{k}={_fmt(sub[k])}" for k in keys if k in sub))
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


if __name__ == "__main__":
    sys.exit(main())
