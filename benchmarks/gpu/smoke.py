"""Quick GPU smoke check: exactness of the unpruned path in bf16 and one TTFT comparison.

Random weights with the Llama-3.1-8B config (speed only). Run on the device machine:
    PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu/smoke.py
"""

from __future__ import annotations

import sys

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

from sliminfer import SlimPipeline
from sliminfer.bench.measure import Meter


def llama8b_config() -> LlamaConfig:
    return LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072, rope_theta=500000.0,
                       rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})


def cuda_time(fn, repeats: int = 3) -> float:
    """Median seconds of ``fn`` after one warm-up call (CUDA events: the bench's own :class:`Meter`)."""
    return Meter(torch.device("cuda"), warmup=1, repeats=repeats).measure_or_raise(fn)["median_s"]


def main() -> None:
    print(torch.__version__, transformers.__version__, torch.cuda.get_device_name())
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(llama8b_config()).to(torch.bfloat16).eval()
    model.config._attn_implementation = "sdpa"
    plain = SlimPipeline.from_pretrained(model)
    paper = SlimPipeline.from_pretrained(model, config={"pruning": {"schedule": {
        "name": "fixed", "layers": [9, 19, 29], "budgets": [8192, 4096, 2048]}}})
    ids = torch.randint(0, 128256, (1, 4096), device="cuda")
    with torch.inference_mode():
        stock = model(ids, use_cache=True, logits_to_keep=1).logits[:, -1]
    ours = plain.prefill(ids).logits
    print("unpruned bf16 max |logit diff| vs stock:", (ours.float() - stock.float()).abs().max().item())
    for n in [int(x) for x in sys.argv[1:]] or [32768]:
        ids = torch.randint(0, 128256, (1, n), device="cuda")

        def hf() -> None:
            with torch.inference_mode():
                model(ids, use_cache=True, logits_to_keep=1)

        t_hf = cuda_time(hf)
        t_plain = cuda_time(lambda: plain.prefill(ids))
        t_paper = cuda_time(lambda: paper.prefill(ids))
        print(f"{n:>7} tokens: HF {t_hf:.3f} s | sliminfer unpruned {t_plain:.3f} s | "
              f"sliminfer paper schedule {t_paper:.3f} s | speedup {t_hf / t_paper:.2f}x")
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
