"""An independent oracle for pruned prefill and decode.

It runs the UNMODIFIED model at full length (stock forward, stock DynamicCache, every token's hidden
state computed at every layer) and only replaces each decoder layer's attention mask, so that at
layer ``i`` a query may attend to a key iff the key is causal AND its original position is in the
pipeline's ``kept_positions[i]`` (or it is a generated token). Survivors' hidden states then match the
pruned pipeline's, whatever the pipeline's gathers, index bookkeeping or RoPE slicing do.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache


def _layer_masks(kept_positions: list[torch.Tensor], n_prompt: int, q_positions: torch.Tensor, total: int):
    masks = []
    for kept in kept_positions:
        allowed = torch.zeros(total, dtype=torch.bool)
        allowed[kept.cpu()] = True
        allowed[n_prompt:] = True  # generated tokens are never pruned
        causal = torch.arange(total)[None, :] <= q_positions[:, None]
        masks.append((causal & allowed[None, :])[None, None])
    return masks


class MaskedReference:
    """Full-length forward with per-layer key masks; keeps its own full-length cache for decoding."""

    def __init__(self, model: torch.nn.Module, kept_positions: list[torch.Tensor]) -> None:
        self.model = model
        self.kept = kept_positions
        self.cache = DynamicCache()
        self.seen = 0
        self.n_prompt = int(kept_positions[0].numel())

    def _run(self, ids: torch.Tensor) -> torch.Tensor:
        q_pos = torch.arange(self.seen, self.seen + ids.shape[1])
        masks = _layer_masks(self.kept, self.n_prompt, q_pos, self.seen + ids.shape[1])
        handles = []
        for layer, mask in zip(self.model.model.layers, masks):
            def pre(module, args, kwargs, mask=mask):
                kwargs["attention_mask"] = mask.to(args[0].device if args else kwargs["hidden_states"].device)
                return args, kwargs

            handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
        try:
            with torch.inference_mode():
                out = self.model(ids, past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        finally:
            for h in handles:
                h.remove()
        self.seen += ids.shape[1]
        return out.logits[:, -1]

    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        return self._run(ids)

    def step(self, token: torch.Tensor) -> torch.Tensor:
        return self._run(token.reshape(1, 1))


def greedy_decode_both(pipe, ref: MaskedReference, prefill, steps: int) -> tuple[list[int], list[int], float]:
    """Greedy-decode ``steps`` tokens with the pipeline and the reference; also the max logit gap."""
    tok_p = prefill.logits.argmax(-1, keepdim=True)
    tok_r = tok_p.clone()
    ours, theirs, gap = [int(tok_p)], [int(tok_r)], 0.0
    position = prefill.prompt_tokens
    for _ in range(steps):
        lp = pipe.forward.decode_step(tok_p, position, prefill.cache)
        lr = ref.step(tok_r)
        gap = max(gap, (lp - lr).abs().max().item())
        tok_p, tok_r = lp.argmax(-1, keepdim=True), lr.argmax(-1, keepdim=True)
        ours.append(int(tok_p))
        theirs.append(int(tok_r))
        position += 1
    return ours, theirs, gap
