"""The staged forward pass: sliminfer owns the layer loop, the model's modules do the math.

Prefill runs embeddings, then each decoder layer as two stages (attention block, MLP block) with a
pruning hook point between them (``after_attention``, the paper's) or after the layer
(``after_layer``). When a stage prunes, the surviving tokens' hidden states, original positions and
rotary (cos, sin) are gathered together, so every later layer sees a shorter, gap-free sequence whose
RoPE still encodes the original positions; ``position_ids`` never reach the attention modules (a
FlashAttention backend would take gapped ones for packed sequences). Each layer writes its own KV into
the cache manager, so a layer holds exactly the tokens it saw.

A layer in an ``attention:`` strategy's set (:mod:`sliminfer.strategies.attention`) runs the adapter's
decomposed attention block with the strategy's attention instead of its module's forward, in the
prefill only; decode steps run every layer's own attention.

A ``prompt_filter:`` strategy (:mod:`sliminfer.strategies.prompt_filter`, GemFilter) makes the prefill
two passes: the first runs the layers below the filter's layer over the whole prompt, keeping no KV, and
the filter picks tokens from that layer's queries and keys; the second is the prefill above (pruning and
attention strategies included) over only the picked tokens, at positions ``0 .. m - 1``. The engine asks
the filter (:meth:`~sliminfer.strategies.prompt_filter.PromptFilter.filters`) whether a prompt is long
enough to filter; decoding continues at position ``m`` (``PrefillResult.next_position``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING

import torch

from sliminfer.core import events
from sliminfer.core.errors import InputError
from sliminfer.core.prompts import check_length
from sliminfer.core.results import PrefillResult, PromptSelection
from sliminfer.core.timing import now
from sliminfer.decode.kernels import decode_attention_kernels
from sliminfer.strategies.block_selection import blocks_to_keep, select_kept_indices

if TYPE_CHECKING:
    from sliminfer.cache.base import KVCacheManager
    from sliminfer.core.registry import Registry
    from sliminfer.models.base import Attend, ModelAdapter, PositionEmbeddings
    from sliminfer.models.prefill_ops import PrefillOps
    from sliminfer.strategies.attention import AttentionStrategy
    from sliminfer.strategies.base import Schedule, Scorer
    from sliminfer.strategies.prompt_filter import PromptFilter


class StagedForward:
    """Prefill with pruning hook points, and single-token decode steps, over one model adapter."""

    def __init__(
        self,
        adapter: ModelAdapter,
        registry: Registry,
        scorer: Scorer | None = None,
        schedule: Schedule | None = None,
        prune_point: str = "after_attention",
        attention: AttentionStrategy | None = None,
        attention_layers: Iterable[int] = (),
        prompt_filter: PromptFilter | None = None,
        compile_prefill: bool = False,
    ) -> None:
        self.adapter = adapter
        #: the layers' norms, RoPE and MLP compiled (``prefill.compile``), else None: the modules' own forwards
        self.prefill_ops: PrefillOps | None = adapter.compiled_prefill_ops() if compile_prefill else None
        self.scorer = scorer
        self.schedule = schedule
        self.attention = attention
        self.prompt_filter = prompt_filter
        #: per layer in ``attention_layers``, the prefill attention the strategy computes (bound once)
        self.attend: dict[int, Attend] = (
            {layer: partial(attention.attend, adapter, layer) for layer in sorted(attention_layers)}
            if attention is not None else {}
        )
        self.prune_after_attention = prune_point == "after_attention"
        self.hook = registry.pm.hook
        self.observe_prune = registry.has_observers("sliminfer_prune")
        self.observe_prefill = registry.has_observers("sliminfer_prefill_start") or registry.has_observers(
            "sliminfer_prefill_end"
        )
        # tensor parallelism: the scorer's head-means span all ranks, and the first rank's block scores decide
        self.head_shards = getattr(adapter, "head_shards", None)
        if prompt_filter is not None:
            prompt_filter.head_shards = self.head_shards
        if self.head_shards is not None and scorer is not None:
            scorer.head_shards = self.head_shards
            if not scorer.combines_heads:
                warnings.warn(
                    f"{type(scorer).__name__} does not combine its head-mean across tensor-parallel ranks "
                    "(Scorer.mean_over_heads); its blocks are chosen from the first rank's heads only",
                    stacklevel=2,
                )
        # device_map placements over several devices: the hidden state follows each layer's device
        self.layer_devices = getattr(adapter, "layer_devices", None)

    @property
    def pruning(self) -> bool:
        return self.scorer is not None and self.schedule is not None

    def check_prompt(self, input_ids: torch.Tensor, new_tokens: int = 1) -> None:
        """Refuse ids the staged forward cannot run: not ``[1, n]``, empty, or past the model's positions
        once ``new_tokens`` are generated."""
        if input_ids.dim() != 2:
            raise InputError(f"input_ids: expected shape [batch, tokens], got {tuple(input_ids.shape)}")
        batch, n = input_ids.shape
        if n == 0:
            raise InputError("prompt: empty (0 tokens); give at least one token")
        if batch != 1:
            raise InputError(
                f"input_ids: batch size {batch}; sliminfer runs one prompt at a time (each prompt keeps its own "
                "tokens), so call prefill/generate once per prompt"
            )
        check_length(n, new_tokens, self.adapter.max_positions)

    @torch.inference_mode()
    def prefill(self, input_ids: torch.Tensor, cache: KVCacheManager) -> PrefillResult:
        self.check_prompt(input_ids)
        adapter = self.adapter
        n_prompt = input_ids.shape[1]
        if self.observe_prefill:
            self.hook.sliminfer_prefill_start(
                event=events.PrefillStart(n_prompt, adapter.num_layers, self.pruning)
            )
        start = now(input_ids.device)
        selection = None
        positions = torch.arange(n_prompt, device=input_ids.device)
        if self.prompt_filter is not None and self.prompt_filter.filters(n_prompt):
            selection = PromptSelection(self.prompt_filter.layer, n_prompt, self._filter(input_ids, cache))
            input_ids, positions = input_ids[:, selection.kept], selection.kept
        hidden, kept = self._layers(input_ids, positions, cache)
        logits = adapter.logits(hidden[:, -1:])[:, -1]
        ttft = now(logits.device) - start
        per_token = 2 * adapter.num_kv_heads * adapter.head_dim * hidden.element_size() * hidden.shape[0]
        result = PrefillResult(
            logits=logits,
            cache=cache,
            kept_positions=kept,
            ttft_s=ttft,
            kv_bytes_per_layer=cache.kv_bytes(),
            full_kv_bytes=per_token * n_prompt * adapter.num_layers,
            filtered=selection,
        )
        if self.observe_prefill:
            self.hook.sliminfer_prefill_end(
                event=events.PrefillEnd(tuple(result.tokens_per_layer), result.kv_bytes, ttft)
            )
        return result

    def _layers(self, input_ids: torch.Tensor, positions: torch.Tensor,
                cache: KVCacheManager) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Every layer over ``input_ids`` (RoPE positions ``0 .. n - 1``), pruning as scheduled: the last
        layer's hidden states and, per layer, the ``positions`` (each token's place in the user's prompt:
        ``0 .. n - 1`` too unless a prompt filter chose the tokens) whose KV it wrote into ``cache``."""
        adapter = self.adapter
        n_prompt = input_ids.shape[1]
        hidden = adapter.embed(input_ids)
        cos, sin = adapter.rotary(hidden, torch.arange(n_prompt, device=input_ids.device)[None])
        mask = adapter.causal_mask(n_prompt, hidden)
        kept: list[torch.Tensor] = []
        chunk = cache.prefill_chunk_tokens
        for layer in range(adapter.num_layers):
            hidden, (cos, sin), mask, positions = self._to_layer_device(layer, hidden, (cos, sin), mask, positions)
            kept.append(positions)
            budget = self.schedule.budget(layer, positions.numel()) if self.pruning else None
            keep_blocks = (blocks_to_keep(positions.numel(), self.scorer.block_size, budget, self.scorer.window)
                           if budget else None)
            window_in = hidden[:, -self.scorer.window :] if keep_blocks else None
            hidden = self._attention_block(layer, hidden, (cos, sin), mask, cache, self.attend.get(layer))
            if not self.prune_after_attention:
                hidden = adapter.mlp_block(layer, hidden, chunk, self.prefill_ops)
            if keep_blocks:
                w = window_in.shape[1]
                idx = self._select(layer, window_in, (cos[:, -w:], sin[:, -w:]), cache, keep_blocks, budget, positions)
                hidden, positions = hidden[:, idx], positions[idx]
                cos, sin = cos[:, idx], sin[:, idx]
                mask = adapter.causal_mask(positions.numel(), hidden)
            if self.prune_after_attention:
                hidden = adapter.mlp_block(layer, hidden, chunk, self.prefill_ops)
        return hidden, kept

    def _attention_block(self, layer: int, hidden: torch.Tensor, pe: PositionEmbeddings, mask: torch.Tensor | None,
                         cache: KVCacheManager | None, attend: Attend | None) -> torch.Tensor:
        """A prefill layer's attention block: with ``attend`` (an attention strategy's), the decomposed block
        around it; else the model's own, also decomposed (the same attention function) when the prefill ops
        are compiled, so that its norm and RoPE run compiled too."""
        if attend is None and self.prefill_ops is None:
            return self.adapter.attention_block(layer, hidden, pe, mask, cache)
        return self.adapter.attention_block_with(layer, hidden, pe, mask, cache, attend or self.adapter.own_attention,
                                                 self.prefill_ops)

    def _filter(self, input_ids: torch.Tensor, cache: KVCacheManager) -> torch.Tensor:
        """The prompt filter's first pass: layers ``0 .. layer - 1`` over the whole prompt with each layer's
        own attention and no KV kept, then the filter's choice from the last token's query and every
        token's key at its layer. Returns the kept original positions, ascending, on the prompt's device."""
        adapter, chosen_by = self.adapter, self.prompt_filter
        n = input_ids.shape[1]
        hidden = adapter.embed(input_ids)
        pe = adapter.rotary(hidden, torch.arange(n, device=input_ids.device)[None])
        mask = adapter.causal_mask(n, hidden)
        for layer in range(chosen_by.layer):
            hidden, pe, mask, _ = self._to_layer_device(layer, hidden, pe, mask)
            hidden = self._attention_block(layer, hidden, pe, mask, None, None)  # no strategy in this pass
            hidden = adapter.mlp_block(layer, hidden, cache.prefill_chunk_tokens, self.prefill_ops)
        hidden, pe, _, _ = self._to_layer_device(chosen_by.layer, hidden, pe)
        query, keys = adapter.last_query_and_keys(chosen_by.layer, hidden, pe)
        kept = chosen_by.select(query, keys)
        if self.head_shards is not None:  # every rank must run its second pass on the same tokens
            kept = self.head_shards.broadcast(kept)
        return kept.to(input_ids.device)

    def _select(
        self,
        layer: int,
        window_in: torch.Tensor,
        window_pe: PositionEmbeddings,
        cache: KVCacheManager,
        keep_blocks: int,
        budget: int,
        positions: torch.Tensor,
    ) -> torch.Tensor:
        """Score the layer's full blocks and return the indices of the tokens that survive."""
        size = self.scorer.block_size
        n = positions.numel()
        n_full = n // size
        queries = self.adapter.window_queries(layer, window_in, window_pe)
        keys = cache.layer_keys(layer)[:, :, : n_full * size]
        scores = self.scorer.score_blocks(queries, keys)[0]
        if self.head_shards is not None:  # every rank must keep the same blocks
            scores = self.head_shards.broadcast(scores)
        idx = select_kept_indices(scores, n, size, keep_blocks, self.scorer.window)
        if self.observe_prune:
            self.hook.sliminfer_prune(
                event=events.PruneDecision(layer, budget, n, positions[idx], scores)
            )
        return idx

    @torch.inference_mode()
    def decode_step(self, token: torch.Tensor, position: int, cache: KVCacheManager) -> torch.Tensor:
        """Run one token at ``position`` through every layer; return its logits ``[batch, vocab]``."""
        with decode_attention_kernels(token.device):
            return self._decode_step(token, position, cache)

    def _decode_step(self, token: torch.Tensor, position: int, cache: KVCacheManager) -> torch.Tensor:
        adapter = self.adapter
        hidden = adapter.embed(token)
        pos = torch.full((1, 1), position, dtype=torch.long, device=token.device)
        pe = adapter.rotary(hidden, pos)
        # a manager that picks KV by the current queries receives them before the attention
        query_layers = cache.query_layers if cache.wants_queries else ()
        spread = self.layer_devices is not None
        for layer in range(adapter.num_layers):
            if spread:
                hidden, pe, _, _ = self._to_layer_device(layer, hidden, pe)
            if layer in query_layers:
                hidden = adapter.attention_block_observed(layer, hidden, pe, None, cache)
            else:
                hidden = adapter.attention_block(layer, hidden, pe, None, cache)
            hidden = adapter.mlp_block(layer, hidden)
        return adapter.logits(hidden)[:, -1]

    def _to_layer_device(
        self, layer: int, hidden: torch.Tensor, pe: PositionEmbeddings, mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, PositionEmbeddings, torch.Tensor | None, torch.Tensor | None]:
        """``hidden``, the rotary (cos, sin), ``mask`` and ``positions`` on ``layer``'s device (layers spread
        by ``device_map``; unchanged otherwise)."""
        to = self.layer_devices[layer] if self.layer_devices is not None else None
        if to is None or hidden.device == to:
            return hidden, pe, mask, positions
        return (hidden.to(to), (pe[0].to(to), pe[1].to(to)), mask.to(to) if mask is not None else None,
                positions.to(to) if positions is not None else None)
