"""How often the offload manager swaps with a trained model: SmolLM2-135M-Instruct (real weights), CPU.

Random-weight GPU benchmarks make every selection nearly random (every layer swaps at every step); this
measures the regime the manager was designed for. A 4,096-token essay prompt, 64 greedy decode steps,
for each offload preset; per preset: selecting layers, layer swaps per step (and as a fraction of the
selecting layer-steps), mean overlap of each new selection with the active set, bytes copied per step,
and the GPU-resident prompt KV against the unpruned model's. Writes ``eval/results/offload_swaps.json``.

    .venv/bin/python eval/offload_swaps.py
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sliminfer import SlimPipeline
from sliminfer.assets.texts import essay_text

HERE = Path(__file__).resolve().parent
PRESETS = ("smollm2-135m-offload", "smollm2-135m-offload-attn", str(HERE / "configs/smollm2-135m-offload-attn-1024.yaml"),
           str(HERE / "configs/smollm2-135m-offload-attn-2048.yaml"))
PROMPT, STEPS = 4096, 64


def main() -> None:
    torch.set_num_threads(2)
    text = essay_text(progress=False)
    out = {"model": "smollm2-135m-instruct (real weights)", "prompt_tokens": PROMPT, "decode_steps": STEPS,
           "presets": {}}
    for preset in PRESETS:
        pipe = SlimPipeline.from_config(preset)
        ids = pipe.tokenizer(text, return_tensors="pt").input_ids[:, :PROMPT]
        result = pipe.prefill(ids, reserve_tokens=STEPS + 1)
        token = result.logits.argmax(-1, keepdim=True)
        for i in range(STEPS):
            token = pipe.forward.decode_step(token, PROMPT + i, result.cache).argmax(-1, keepdim=True)
        s = result.cache.stats()
        steps = s["steps"] - 1  # step 0 loads the first active sets
        selecting = len(s["selecting_layers"])
        options = result.cache.config  # the validated manager options, defaults filled in
        preset = Path(preset).stem
        out["presets"][preset] = {
            "decode_budget": options.decode_budget, "selection": options.selection, "gamma": options.gamma,
            "selecting_layers": selecting,
            "swaps_per_step": s["swaps_total"] / steps,
            "swapping_fraction_of_layer_steps": s["swaps_total"] / (steps * selecting),
            "blocks_per_swap": sum(s["blocks_swapped"][1:]) / max(s["swaps_total"], 1),
            "mean_overlap": s["mean_overlap"], "swap_bytes_per_step": s["swap_bytes_total"] / steps,
            "gpu_prompt_kv_fraction": s["gpu_prompt_kv_bytes"] / result.full_kv_bytes,
        }
        print(preset, json.dumps(out["presets"][preset]), flush=True)
    path = HERE / "results" / "offload_swaps.json"
    path.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
