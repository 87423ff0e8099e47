"""An independent oracle for pruned prefill and decode.

It runs the UNMODIFIED model at full length (stock forward, stock DynamicCache, every token's hidden
state computed at every layer) and only replaces each layer's attention mask, so that at layer ``i`` a
query may attend to a key iff the key is causal AND its original position is in ``kept_positions[i]``
(or it is a generated token). Survivors' hidden states then match the pruned pipeline's, whatever the
pipeline's gathers, index bookkeeping or RoPE slicing do.

:class:`MaskedReference` takes the kept positions from the pipeline under test (it checks what the
pipeline computes with them); :class:`ScoringReference` chooses them itself, layer by layer, from the
stock model's own queries and keys, a fresh scorer and schedule and the one block-selection policy
(so it also checks which positions the pipeline keeps, and that its scorer sees the right tensors).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from transformers import DynamicCache

from sliminfer.strategies.block_selection import blocks_to_keep, select_kept_indices

if TYPE_CHECKING:
    from sliminfer.core.pipeline import SlimPipeline
    from sliminfer.core.results import PrefillResult
    from sliminfer.strategies.base import Schedule, Scorer


def layer_mask(kept: torch.Tensor, n_prompt: int, q_positions: torch.Tensor, total: int) -> torch.Tensor:
    """Boolean ``[1, 1, queries, total]`` mask: causal, over the ``kept`` prompt positions and every
    generated position (generated tokens are never pruned)."""
    allowed = torch.zeros(total, dtype=torch.bool)
    allowed[kept.cpu()] = True
    allowed[n_prompt:] = True
    causal = torch.arange(total)[None, :] <= q_positions.cpu()[:, None]
    return (causal & allowed[None, :])[None, None]


def stock_queries(attn: torch.nn.Module, hidden_states: torch.Tensor,
                  position_embeddings: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The queries ``[b, heads, n, d]`` an attention module computes from its (normed) input: ``q_proj``
    (or the query rows that lead a fused ``qkv_proj``, Phi-3's), the per-head ``q_norm`` where it has
    one, then RoPE by its own modeling module's ``apply_rotary_pos_emb`` (partial rotary included);
    derived here from the module, not through any sliminfer adapter."""
    b, n = hidden_states.shape[:2]
    if hasattr(attn, "qkv_proj"):
        q = attn.qkv_proj(hidden_states)[..., : attn.config.num_attention_heads * attn.head_dim]
    else:
        q = attn.q_proj(hidden_states)
    q = q.view(b, n, -1, attn.head_dim)
    if hasattr(attn, "q_norm"):
        q = attn.q_norm(q)
    rope = sys.modules[type(attn).__module__].apply_rotary_pos_emb
    cos, sin = position_embeddings
    return rope(q.transpose(1, 2), q.transpose(1, 2), cos, sin)[0]


class MaskedReference:
    """Full-length forward with per-layer key masks; keeps its own full-length cache for decoding."""

    def __init__(self, model: torch.nn.Module, kept_positions: Sequence[torch.Tensor]) -> None:
        self.model = model
        self.kept = [k.cpu() for k in kept_positions]
        self.cache = DynamicCache()
        self.seen = 0
        self.n_prompt = int(self.kept[0].numel())

    def _before_attention(self, layer: int, attn: torch.nn.Module, kwargs: dict[str, Any]) -> None:
        """Replace the layer's attention mask (the keys it may see) before its attention runs."""
        hidden = kwargs["hidden_states"]
        total = self.seen + hidden.shape[1]
        mask = layer_mask(self.kept[layer], self.n_prompt, torch.arange(self.seen, total), total)
        kwargs["attention_mask"] = mask.to(hidden.device)

    def _after_attention(self, layer: int) -> None:
        """Called once the layer's attention has written its keys into :attr:`cache` (nothing to do here)."""

    def _run(self, ids: torch.Tensor) -> torch.Tensor:
        handles = []
        for i, block in enumerate(self.model.model.layers):
            def pre(module: torch.nn.Module, args: tuple, kwargs: dict[str, Any], i: int = i) -> tuple:
                self._before_attention(i, module, kwargs)
                return args, kwargs

            def post(module: torch.nn.Module, args: tuple, output: Any, i: int = i) -> None:
                self._after_attention(i)

            handles.append(block.self_attn.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(block.self_attn.register_forward_hook(post))
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


@dataclass(frozen=True)
class Scored:
    """One pruning decision of :class:`ScoringReference`: what its scorer saw and returned."""

    layer: int
    queries: torch.Tensor  # [1, q_heads, window, d]
    keys: torch.Tensor  # [1, kv_heads, n_full * block_size, d]
    scores: torch.Tensor  # [1, n_full]


class ScoringReference(MaskedReference):
    """A :class:`MaskedReference` that chooses each layer's kept positions itself during its prefill.

    At a layer where ``schedule`` prunes, the scorer gets the stock model's queries of the last
    ``window`` kept tokens (:func:`stock_queries`) and the stock cache's keys of the kept tokens in full
    blocks; :func:`select_kept_indices` picks the survivors, which the next layer's mask then allows.
    The prune point does not matter here: at full length, every token's MLP runs anyway.
    """

    def __init__(self, model: torch.nn.Module, n_prompt: int, scorer: Scorer, schedule: Schedule) -> None:
        super().__init__(model, [torch.arange(n_prompt)])
        self.scorer, self.schedule = scorer, schedule
        self.scored: list[Scored] = []
        self._pending: tuple[int, torch.Tensor] | None = None  # (full blocks to keep, window queries)

    def _before_attention(self, layer: int, attn: torch.nn.Module, kwargs: dict[str, Any]) -> None:
        """Mask as the base class does; during the prefill, ask the schedule and take the window queries."""
        super()._before_attention(layer, attn, kwargs)
        self._pending = None
        if self.seen or layer + 1 >= len(self.model.model.layers):
            return  # decode steps, and the last layer: no later layer sees what it would keep
        kept = self.kept[layer]
        budget = self.schedule.budget(layer, kept.numel())
        size = self.scorer.block_size
        keep_blocks = blocks_to_keep(kept.numel(), size, budget, self.scorer.window) if budget else None
        if keep_blocks is None:
            self.kept.append(kept)
            return
        window = kept[-self.scorer.window :]
        cos, sin = kwargs["position_embeddings"]
        queries = stock_queries(attn, kwargs["hidden_states"][:, window], (cos[:, window], sin[:, window]))
        self._pending = (keep_blocks, queries)

    def _after_attention(self, layer: int) -> None:
        """Score the layer's full blocks from the keys it just cached, and keep the selected positions."""
        if self._pending is None:
            return
        keep_blocks, queries = self._pending
        kept, size = self.kept[layer], self.scorer.block_size
        n_full = kept.numel() // size
        cached = self.cache.layers[layer].keys
        keys = cached[:, :, kept[: n_full * size].to(cached.device)]
        scores = self.scorer.score_blocks(queries, keys)
        if tuple(scores.shape) != (1, n_full):
            raise AssertionError(f"layer {layer}: score_blocks returned shape {tuple(scores.shape)} for {n_full} full "
                                 f"blocks of {size}; the documented shape is [batch, n_full_blocks] = [1, {n_full}]")
        self.scored.append(Scored(layer, queries, keys, scores))
        kept_now = select_kept_indices(scores[0], kept.numel(), size, keep_blocks, self.scorer.window)
        self.kept.append(kept[kept_now.cpu()])


def greedy(first_logits: torch.Tensor, step: Callable[[torch.Tensor, int], torch.Tensor],
           steps: int) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy tokens from ``first_logits`` on, with ``steps`` calls ``step(token [1, 1], i) -> logits``,
    and every logits tensor that chose a token (``first_logits`` included)."""
    logits = [first_logits]
    token = first_logits.argmax(-1, keepdim=True)
    tokens = [int(token)]
    for i in range(steps):
        logits.append(step(token, i))
        token = logits[-1].argmax(-1, keepdim=True)
        tokens.append(int(token))
    return tokens, logits


def pipeline_greedy(pipe: SlimPipeline, prefill: PrefillResult, steps: int) -> tuple[list[int], list[torch.Tensor]]:
    """:func:`greedy` through the pipeline's eager decode step, on the prefill's own cache."""
    n = prefill.next_position
    return greedy(prefill.logits, lambda token, i: pipe.forward.decode_step(token, n + i, prefill.cache), steps)


def greedy_decode_both(pipe: SlimPipeline, ref: MaskedReference, prefill: PrefillResult,
                       steps: int) -> tuple[list[int], list[int], float]:
    """Greedy-decode ``steps`` tokens with the pipeline and the reference; also the max logit gap of the steps."""
    ours, our_logits = pipeline_greedy(pipe, prefill, steps)
    theirs, their_logits = greedy(prefill.logits, lambda token, i: ref.step(token), steps)
    gap = max(((a - b).abs().max().item() for a, b in zip(our_logits[1:], their_logits[1:])), default=0.0)
    return ours, theirs, gap
