"""``sliminfer demo``: the default model on a real long prompt, with and without pruning.

A passkey is hidden in Paul Graham essay text; both configs answer the same prompt and the demo prints
TTFT, the answer, tokens kept per layer, KV memory and the speedup, so a new user sees in one command
what pruning buys and whether the answer survives.
"""

from __future__ import annotations

import argparse
import random

import torch

from sliminfer.cli.format import layer_runs, mib, table
from sliminfer.core.config import load_config
from sliminfer.core.loading import load_model
from sliminfer.core.pipeline import SlimPipeline


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="passkey retrieval on the default model, unpruned vs pruned")
    parser.add_argument("--config", default="smollm2-135m", help="pruned config (preset or YAML)")
    parser.add_argument("--baseline", default="origin", help="unpruned config (preset or YAML)")
    parser.add_argument("--tokens", type=int, default=4000, help="prompt length in tokens (default 4000)")
    parser.add_argument("--depth", type=float, default=0.5, help="passkey depth in the text, 0..1 (default 0.5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the passkey")
    parser.set_defaults(func=_run)


def passkey_prompt(tokenizer, n_tokens: int, depth: float, passkey: str) -> str:
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


def _run(args: argparse.Namespace) -> int:
    if not 0.0 <= args.depth <= 1.0:
        raise SystemExit(f"--depth: got {args.depth}; must lie in [0, 1]")
    pruned_cfg = load_config(args.config)
    base_cfg = load_config(args.baseline)
    torch.manual_seed(args.seed)
    model, tokenizer = load_model(pruned_cfg.model)
    pipes = {"origin": SlimPipeline(model, tokenizer, base_cfg), "sliminfer": SlimPipeline(model, tokenizer, pruned_cfg)}
    passkey = str(random.Random(args.seed).randint(10000, 99999))
    prompt = passkey_prompt(tokenizer, args.tokens, args.depth, passkey)
    device = next(model.parameters()).device
    print(f"SlimInfer demo: {pruned_cfg.model.source} ({device}, {next(model.parameters()).dtype}); passkey "
          f"{passkey} at depth {args.depth:.0%} of the prompt")
    pipes["origin"].generate(prompt[:2000], max_new_tokens=2, chat_template=False)  # warm-up
    rows, results = [], {}
    for name, pipe in pipes.items():
        out = pipe.generate(prompt, max_new_tokens=10, chat_template=False)
        results[name] = out
    base_ttft = results["origin"].ttft_s
    for name, out in results.items():
        answer = out.text.strip().splitlines()[0] if out.text.strip() else ""
        rows.append([
            name, out.prompt_tokens, f"{out.ttft_s:.2f} s", f"{base_ttft / out.ttft_s:.2f}x",
            mib(out.prefill.kv_bytes), f"{out.prefill.kv_saved_fraction:.1%}", repr(answer[:24]),
            "yes" if passkey in out.text else "no",
        ])
    print(table(["mode", "prompt tokens", "TTFT", "speedup", "prompt KV", "KV saved", "answer", "correct"], rows))
    print(f"\ntokens kept per layer (sliminfer): {layer_runs(results['sliminfer'].prefill.tokens_per_layer)}")
    return 0
