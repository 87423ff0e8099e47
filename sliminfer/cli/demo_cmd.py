"""``sliminfer demo``: the default model on a real long prompt, with and without pruning.

A passkey is hidden in Paul Graham essay text; both configs answer the same prompt and the demo prints
TTFT, the answer, tokens kept per layer, KV memory and the speedup, so a new user sees in one command
what pruning buys and whether the answer survives.

Why the measuring is careful: one run per mode after one short warm-up of the first mode once showed
12x "speedups" on a prompt that pruned nothing. So both modes are warmed up on the real prompt, the
measured runs alternate the modes (and which one goes first), the median TTFT is reported with its
range, and a prefill that kept every token says so instead of claiming a speedup.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from sliminfer.cli import checks
from sliminfer.cli.format import layer_runs, mib, table
from sliminfer.core.config import SlimConfig
from sliminfer.core.errors import ConfigError, InputError
from sliminfer.core.loading import load_model, read_model_config
from sliminfer.core.pipeline import SlimPipeline, load_config
from sliminfer.core.preflight import check_config_fits_checkpoint
from sliminfer.core.prompts import check_length
from sliminfer.core.registry import get_registry
from sliminfer.core.results import GenerationResult, PrefillResult

#: tokens each run generates (the passkey and a little more)
NEW_TOKENS = 10
#: the passkey frame (instruction, passkey sentence, question) is 58 tokens with the default tokenizer;
#: 128 leaves room for a tokenizer that splits it finer and for essay text around the passkey
MIN_TOKENS = 128
#: the same bounds as ``generation.seed`` (torch's generators take no larger seed)
SEED_LIMIT = 1 << 64
BASELINE, PRUNED = "origin", "sliminfer"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="passkey retrieval on the default model, unpruned vs pruned")
    parser.add_argument("--config", default="smollm2-135m", help="pruned config (preset or YAML)")
    parser.add_argument("--baseline", default="origin",
                        help="unpruned config (preset or YAML), same model: no pruning, prompt_filter or attention "
                             "section (default origin)")
    parser.add_argument("--tokens", type=int, default=4000, help="prompt length in tokens (default 4000)")
    parser.add_argument("--depth", type=float, default=0.5, help="passkey depth in the text, 0..1 (default 0.5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the passkey")
    parser.add_argument("--repeats", type=int, default=3,
                        help="measured runs per mode after one warm-up each; the median TTFT is shown (default 3)")
    parser.add_argument("--json", metavar="PATH", help="also write every run's measurements to this JSON file")
    parser.set_defaults(func=_run)


# checks, all before any weight loads -------------------------------------------------------------
def check_arguments(args: argparse.Namespace) -> None:
    """Refuse the values that need no model to judge, so a typo costs no model load."""
    if args.tokens < MIN_TOKENS:
        raise ConfigError("--tokens", args.tokens, f"must be at least {MIN_TOKENS}, to fit the passkey sentence, "
                          "the question and some text around them")
    checks.fraction("--depth", args.depth, "0: the start of the text, 1: its end")
    checks.positive_int("--repeats", args.repeats, "measured runs per mode")
    if not 0 <= args.seed < SEED_LIMIT:
        raise ConfigError("--seed", args.seed, "must be an integer in 0..2**64-1")
    if args.json is not None:
        check_json_path(args.json)


def check_baseline(name: str, config: SlimConfig) -> None:
    """The baseline row is the unpruned model: a config that drops prompt tokens (pruning, a prompt filter)
    or replaces the prefill attention (an attention strategy) would make the speedup against it meaningless."""
    changed = [section for section in ("pruning", "prompt_filter", "attention") if getattr(config, section) is not None]
    if changed:
        raise ConfigError("--baseline", name, "the baseline must run unpruned (no pruning section, no prompt_filter, "
                          f"no attention section), e.g. origin; it has {', '.join(changed)}")


def check_json_path(path: str) -> None:
    """Refuse a ``--json`` path that cannot be written now, rather than after minutes of runs."""
    target = Path(path)
    if target.is_dir():
        raise ConfigError("--json", path, "is a directory; give the path of a file to write")
    if not target.parent.is_dir():
        raise ConfigError("--json", path, f"its folder {str(target.parent)!r} does not exist; create it first")
    if not os.access(target.parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise ConfigError("--json", path, "is not writable; pick a path you may write to")


def check_model_fits(args: argparse.Namespace, pruned: SlimConfig, baseline: SlimConfig) -> None:
    """From the checkpoint's config.json alone: both configs fit its layers, and the prompt plus the
    generated tokens fit its positions (the rule of :func:`check_length`, which the run applies)."""
    if baseline.model != pruned.model:
        raise ConfigError("--baseline", args.baseline, f"its model section ({baseline.model.source!r}) differs "
                          f"from that of --config ({pruned.model.source!r}); the demo runs both on one model")
    _, hf_config = read_model_config(pruned.model)
    registry = get_registry()
    for config in (pruned, baseline):
        check_config_fits_checkpoint(config, registry, hf_config)
    max_positions = registry.adapter_for(hf_config).cls.positions_in(hf_config)
    try:
        check_length(args.tokens, NEW_TOKENS, max_positions)
    except InputError:
        raise ConfigError(
            "--tokens", args.tokens,
            f"the prompt plus the {NEW_TOKENS} generated tokens must fit the model's {max_positions} positions "
            f"(max_position_embeddings); use --tokens between {MIN_TOKENS} and {max_positions - NEW_TOKENS + 1}",
        ) from None


# the prompt ---------------------------------------------------------------------------------------
def passkey_prompt(tokenizer: Any, n_tokens: int, depth: float, passkey: str) -> str:
    """Essay text of about ``n_tokens`` tokens with the passkey sentence at ``depth``."""
    from sliminfer.assets.texts import essay_text, split_sentences

    head = "There is a pass key hidden inside a lot of irrelevant text. Find it and memorize it.\n\n"
    tail = "\n\nWhat is the pass key? The pass key is"
    needle = f"The pass key is {passkey}. Remember it. {passkey} is the pass key."
    budget = n_tokens - len(tokenizer(head + needle + tail, add_special_tokens=False)["input_ids"])
    sentences: list[str] = []
    used = 0
    for sentence in split_sentences(essay_text()):
        cost = len(tokenizer(" " + sentence, add_special_tokens=False)["input_ids"])
        if used + cost > budget:
            break
        sentences.append(sentence)
        used += cost
    sentences.insert(round(len(sentences) * depth), needle)
    return head + " ".join(sentences) + tail


# measuring ----------------------------------------------------------------------------------------
@dataclass
class ModeRuns:
    """One mode's measured runs: the TTFT varies from run to run, the prompt, KV and kept tokens do not."""

    results: list[GenerationResult]

    @property
    def ttfts(self) -> list[float]:
        return [r.ttft_s for r in self.results]

    @property
    def median_ttft(self) -> float:
        return statistics.median(self.ttfts)

    @property
    def prefill(self) -> PrefillResult:
        return self.results[0].prefill


def run_order(modes: Sequence[str], repeats: int) -> list[str]:
    """The measured runs' modes: each round runs every mode once, and every other round reverses the
    order (AB BA AB ...), so a drift in machine speed (heat, caches, other load) hits all modes alike."""
    return [name for r in range(repeats) for name in (modes if r % 2 == 0 else modes[::-1])]


def measure(runners: Mapping[str, Callable[[], GenerationResult]], repeats: int) -> dict[str, ModeRuns]:
    """Warm every mode up once (allocator, thread pools, first-call costs; not counted), then run
    :func:`run_order`, with a progress bar on stderr since one long CPU run takes seconds."""
    modes = list(runners)
    order = [(name, False) for name in modes] + [(name, True) for name in run_order(modes, repeats)]
    runs: dict[str, ModeRuns] = {name: ModeRuns([]) for name in modes}
    with tqdm(total=len(order), desc="demo runs", unit="run", file=sys.stderr) as bar:
        for name, counted in order:
            bar.set_postfix_str(name if counted else f"{name} (warm-up)")
            result = runners[name]()
            if counted:
                runs[name].results.append(result)
            bar.update()
    return runs


# reporting ----------------------------------------------------------------------------------------
def pruned_nothing(prefill: PrefillResult) -> bool:
    """Every layer kept the whole prompt, so the pruned mode did the unpruned mode's work."""
    return all(n == prefill.prompt_tokens for n in prefill.tokens_per_layer)


def unpruned_reason(pipe: SlimPipeline, n_tokens: int) -> str:
    """Why a prefill of ``n_tokens`` kept every token: no pruning configured, or no budget the schedule
    set for this prompt was tight enough to drop a whole block."""
    forward = pipe.forward
    if not forward.pruning:
        return "its config has no pruning section"
    budgets = [(forward.schedule.budget(layer, n_tokens), layer) for layer in range(pipe.adapter.num_layers)]
    set_budgets = [(budget, layer) for budget, layer in budgets if budget is not None]
    if not set_budgets:
        return f"its schedule sets no budget for a {n_tokens}-token prompt"
    budget, layer = min(set_budgets)
    smallest = f"{budget} tokens after layer {layer}"
    if n_tokens <= budget:
        return f"the {n_tokens}-token prompt fits within every budget of its schedule (the smallest: {smallest})"
    return (f"the {n_tokens}-token prompt is too short to drop a whole {forward.scorer.block_size}-token block "
            f"even at the smallest budget ({smallest})")


def answer_of(result: GenerationResult) -> str:
    """The answer's first line: the model may run on past the passkey within its new tokens."""
    text = result.text.strip()
    return text.splitlines()[0] if text else ""


def correct_cell(runs: ModeRuns, passkey: str) -> str:
    """'yes' or 'no', or 'k of n' when sampling made the runs disagree."""
    hits = sum(passkey in r.text for r in runs.results)
    return "yes" if hits == len(runs.results) else "no" if hits == 0 else f"{hits} of {len(runs.results)}"


def ttft_range(ttfts: Sequence[float]) -> str:
    """'min-max' of the runs, the noise to read a speedup against; one run has no spread to show."""
    return f"{min(ttfts):.2f}-{max(ttfts):.2f} s" if len(ttfts) > 1 else "- (1 run)"


def table_rows(runs: Mapping[str, ModeRuns], passkey: str, same_work: bool) -> list[list[object]]:
    """One row per mode; the speedup is the ratio of median TTFTs, or '~1x' when both did the same work."""
    base = runs[BASELINE].median_ttft
    rows: list[list[object]] = []
    for name, mode in runs.items():
        speedup = "~1x" if same_work and name != BASELINE else f"{base / mode.median_ttft:.2f}x"
        rows.append([
            name, mode.prefill.prompt_tokens, f"{mode.median_ttft:.2f} s",
            ttft_range(mode.ttfts), speedup, mib(mode.prefill.kv_bytes),
            f"{mode.prefill.kv_saved_fraction:.1%}", repr(answer_of(mode.results[0])[:24]), correct_cell(mode, passkey),
        ])
    return rows


def timing_note(runs: Mapping[str, ModeRuns], repeats: int) -> str:
    """How the TTFT was measured, and a warning when the two ranges overlap (the gap is noise-sized)."""
    runs_text = f"{repeats} runs" if repeats > 1 else "1 run"
    note = f"TTFT: median (and range) of {runs_text} per mode, modes alternated, each warmed up once first"
    ranges = [(min(m.ttfts), max(m.ttfts)) for m in runs.values()]
    if repeats > 1 and max(low for low, _ in ranges) <= min(high for _, high in ranges):
        note += "; the ranges overlap, so the difference is within run-to-run noise"
    return note


def json_report(runs: Mapping[str, ModeRuns], passkey: str, meta: Mapping[str, object]) -> dict[str, object]:
    """Every measured number, for scripts: each run's TTFT and answer, the medians and the kept tokens."""
    modes = {
        name: {
            "prompt_tokens": mode.prefill.prompt_tokens,
            "ttft_s": mode.ttfts,
            "median_ttft_s": mode.median_ttft,
            "tokens_per_layer": mode.prefill.tokens_per_layer,
            "kv_bytes": mode.prefill.kv_bytes,
            "kv_saved_fraction": mode.prefill.kv_saved_fraction,
            "answers": [r.text for r in mode.results],
            "correct": [passkey in r.text for r in mode.results],
        }
        for name, mode in runs.items()
    }
    speedup = runs[BASELINE].median_ttft / runs[PRUNED].median_ttft
    return {**meta, "passkey": passkey, "modes": modes, "median_speedup": speedup,
            "pruned_nothing": pruned_nothing(runs[PRUNED].prefill)}


def write_json(path: str, report: Mapping[str, object]) -> None:
    """Write the report; a failure is one error line (the table above already holds the results)."""
    try:
        Path(path).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise ConfigError("--json", path, f"cannot be written ({exc.strerror or exc}); the table above has "
                          "the results") from None


def _run(args: argparse.Namespace) -> int:
    check_arguments(args)
    pruned_cfg = load_config(args.config)
    base_cfg = load_config(args.baseline)
    check_baseline(args.baseline, base_cfg)
    check_model_fits(args, pruned_cfg, base_cfg)
    torch.manual_seed(args.seed)
    model, tokenizer = load_model(pruned_cfg.model)
    if tokenizer is None:
        raise ConfigError("model.source", pruned_cfg.model.source, "has no tokenizer files; the demo needs text")
    pipes = {BASELINE: SlimPipeline(model, tokenizer, base_cfg), PRUNED: SlimPipeline(model, tokenizer, pruned_cfg)}
    passkey = str(random.Random(args.seed).randint(10000, 99999))
    prompt = passkey_prompt(tokenizer, args.tokens, args.depth, passkey)
    param = next(model.parameters())
    print(f"SlimInfer demo: {pruned_cfg.model.source} ({param.device}, {param.dtype}); passkey "
          f"{passkey} at depth {args.depth:.0%} of the prompt", flush=True)
    runs = measure({name: partial(pipe.generate, prompt, max_new_tokens=NEW_TOKENS, chat_template=False)
                    for name, pipe in pipes.items()}, args.repeats)
    prefill = runs[PRUNED].prefill
    same_work = pruned_nothing(prefill)
    print(table(["mode", "prompt tokens", "TTFT", "TTFT range", "speedup", "prompt KV", "KV saved", "answer",
                 "correct"], table_rows(runs, passkey, same_work)))
    print(f"\n{timing_note(runs, args.repeats)}")
    print(f"tokens kept per layer ({PRUNED}): {layer_runs(prefill.tokens_per_layer)}")
    if same_work:
        print(f"\n{PRUNED} pruned nothing: {unpruned_reason(pipes[PRUNED], prefill.prompt_tokens)}; both modes ran "
              "the same computation, so the speedup is 1x up to noise")
    if args.json is not None:
        meta = {"model": pruned_cfg.model.source, "device": str(param.device), "dtype": str(param.dtype),
                "config": args.config, "baseline": args.baseline, "requested_tokens": args.tokens,
                "depth": args.depth, "seed": args.seed, "repeats": args.repeats,
                "run_order": run_order(list(pipes), args.repeats)}
        write_json(args.json, json_report(runs, passkey, meta))
    return 0
