"""Model adapters: the one place that knows transformers' module layout.

The pipeline owns the layer loop and calls an adapter for each piece of a decoder layer, so pruning
can shrink the token set between (or inside) layers without copying any model's forward code: the
model's own modules (norms, attention with its backend, MLP, rotary embedding) do all the math, which
is what makes the unpruned path bit-identical to stock transformers. Where a caller runs the attention
itself (a cache that observes the decode queries, a prefill attention strategy), the adapter runs the
same attention module in its pieces (:meth:`ModelAdapter.attention_block_with`) and looks up the
attention function that module would call (:meth:`ModelAdapter.own_attention`).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from sliminfer.core.errors import UnsupportedModelError
from sliminfer.core.strategy import Strategy
from sliminfer.models.decode_parts import DecodeParts, project_qkv, uses_mixin
from sliminfer.models.prefill_ops import PrefillOps
from sliminfer.models.sharding import HeadShards, find_head_shards

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from sliminfer.cache.base import KVCacheManager

PositionEmbeddings = tuple[torch.Tensor, torch.Tensor]
#: ``attend(module, q, k, v, mask) -> [b, n, q_heads * d]``: a layer's attention between its q/k/v (after
#: RoPE; k/v every token the layer attends to, in a prefill the projections' own tensors) and its o_proj
#: (:meth:`ModelAdapter.own_attention` is one)
Attend = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


class ModelAdapter(Strategy, DecodeParts):
    """Adapter for decoder-only models laid out like Llama: ``model.model.{embed_tokens, layers, norm,
    rotary_emb}`` and layers with ``input_layernorm, self_attn, post_attention_layernorm, mlp``."""

    model_types: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model
        self.config = model.config
        self.base = model.model
        self.layers = self.base.layers
        self.check_supported()
        self._rope = sys.modules[type(self.layers[0].self_attn).__module__].apply_rotary_pos_emb
        #: transformers 5.24 renamed the attention's ``past_key_values`` to ``cache`` (the old name warns on
        #: every call); pass the one the installed modules take
        accepted = inspect.signature(type(self.layers[0].self_attn).forward).parameters
        self._cache_kwarg = "cache" if "cache" in accepted else "past_key_values"
        #: this process's attention heads when transformers' tensor parallelism has sharded them, else None
        self.head_shards: HeadShards | None = self._find_head_shards()
        #: each layer's device when ``device_map`` spreads the layers over several devices, else None
        self.layer_devices: list[torch.device | None] | None = self._layer_devices()

    def _layer_devices(self) -> list[torch.device | None] | None:
        """Each decoder layer's device (None for one offloaded to the meta device), or None unless
        accelerate's ``device_map`` put the layers on more than one device."""
        if len(set(map(str, (getattr(self.model, "hf_device_map", None) or {}).values()))) <= 1:
            return None
        devices = []
        for block in self.layers:
            param = next(block.parameters(), None)
            devices.append(param.device if param is not None and param.device.type != "meta" else None)
        return devices if len({d for d in devices if d is not None}) > 1 else None

    def _find_head_shards(self) -> HeadShards | None:
        """This process's share of the heads, read from the separate ``q_proj`` and ``k_proj`` (an adapter
        whose attention fuses them overrides this)."""
        attn = self.layers[0].self_attn
        return find_head_shards(attn.q_proj, attn.k_proj, int(attn.head_dim),
                                int(self.config.num_attention_heads), int(self.config.num_key_value_heads))

    def check_supported(self) -> None:
        """Refuse configurations the pipeline would run wrongly (raise UnsupportedModelError): the
        config's (:meth:`check_hf_config`), and a window set on an attention module itself."""
        self.check_hf_config(self.config)
        for block in self.layers:
            self._check_window(self.config, getattr(block.self_attn, "sliding_window", None))

    @classmethod
    def check_hf_config(cls, hf_config: Any) -> None:
        """Refuse, from a checkpoint's config alone (so before its weights load), what the pipeline would
        run wrongly: layer types other than full and sliding attention, and a sliding window that binds.

        The prefill gives SDPA no mask (its causal flag) and pruning changes which tokens a window covers,
        so a window is run only where it can never bind: ``sliding_window`` null, or at least
        ``max_position_embeddings`` (then no query is ``sliding_window`` positions past any key, and stock
        transformers skips the window too; Phi-3.5 and Phi-4-mini ship such a window). Models without
        ``layer_types`` (Mistral, Phi-3) apply ``config.sliding_window`` in every layer."""
        layer_types = list(getattr(hf_config, "layer_types", None) or [])
        other = sorted({t for t in layer_types if t not in ("full_attention", "sliding_attention")})
        if other:
            raise UnsupportedModelError(
                f"{hf_config.model_type}: layer_types include {other}; sliminfer supports full_attention layers, "
                "and sliding_attention layers whose window never binds"
            )
        if not layer_types or "sliding_attention" in layer_types:
            cls._check_window(hf_config, getattr(hf_config, "sliding_window", None))

    @classmethod
    def _check_window(cls, hf_config: Any, window: int | None) -> None:
        positions = cls.positions_in(hf_config)
        if window is not None and window < positions:
            raise UnsupportedModelError(
                f"{hf_config.model_type}: sliding_window={window} (config.json) limits each token's attention to "
                f"the {window} tokens before it, within max_position_embeddings={positions}; sliminfer supports "
                f"sliding_window null (full attention) or >= max_position_embeddings ({positions}: a window that "
                "never binds). Set sliding_window to null in config.json to run with full attention (outputs "
                f"then differ from the windowed model's for prompts longer than {window} tokens)"
            )

    # shapes -------------------------------------------------------------------------------
    @staticmethod
    def layers_in(hf_config: Any) -> int:
        """Decoder layers a checkpoint's config declares (read before the weights load)."""
        return int(hf_config.num_hidden_layers)

    @staticmethod
    def positions_in(hf_config: Any) -> int:
        """Positions a checkpoint's config allows (read before the weights load)."""
        return int(getattr(hf_config, "max_position_embeddings", 1 << 30))

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def max_positions(self) -> int:
        return self.positions_in(self.config)

    @property
    def vocab_size(self) -> int:
        """Token ids run from 0 to ``vocab_size - 1``."""
        return int(self.config.vocab_size)

    @property
    def num_kv_heads(self) -> int:
        """KV heads this process holds (all of them unless tensor parallelism shards them)."""
        if self.head_shards is not None:
            return self.head_shards.local_kv_heads
        return int(self.config.num_key_value_heads)

    @property
    def num_q_heads(self) -> int:
        """Query heads this process holds (all of them unless tensor parallelism shards them)."""
        if self.head_shards is not None:
            return self.head_shards.local_q_heads
        return int(self.config.num_attention_heads)

    @property
    def head_dim(self) -> int:
        return int(self.layers[0].self_attn.head_dim)

    def decode_weight_bytes(self) -> int:
        """Bytes of weights one decode step reads: every parameter (tied ones once) but the input
        embedding table, of which a step reads one row (unless it is tied to the LM head)."""
        params = {id(p): p for p in self.model.parameters()}
        total = sum(p.numel() * p.element_size() for p in params.values())
        embed = self.base.embed_tokens.weight
        return total if self.model.lm_head.weight is embed else total - embed.numel() * embed.element_size()

    @property
    def attention_implementation(self) -> str:
        return str(self.config._attn_implementation)

    # the forward pass, piece by piece ---------------------------------------------------------
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.base.embed_tokens(input_ids)

    def rotary(self, hidden: torch.Tensor, position_ids: torch.Tensor) -> PositionEmbeddings:
        """(cos, sin) for any positions, gapped ones included."""
        return self.base.rotary_emb(hidden, position_ids=position_ids)

    def causal_mask(self, n: int, hidden: torch.Tensor) -> torch.Tensor | None:
        """Mask for a prefill over ``n`` tokens: None where the backend applies causality itself."""
        if self.attention_implementation in ("sdpa", "flash_attention_2", "flash_attention_3"):
            return None
        mask = torch.full((n, n), torch.finfo(hidden.dtype).min, dtype=hidden.dtype, device=hidden.device)
        return mask.triu(1)[None, None]

    def attention_block(
        self,
        layer: int,
        hidden: torch.Tensor,
        position_embeddings: PositionEmbeddings,
        attention_mask: torch.Tensor | None,
        cache: KVCacheManager | None,
    ) -> torch.Tensor:
        """``hidden + self_attn(input_layernorm(hidden))``; the attention writes its KV into ``cache`` (None:
        nowhere, as in a prompt filter's first pass, whose KV nothing reads)."""
        block = self.layers[layer]
        attn_out, _ = block.self_attn(
            hidden_states=block.input_layernorm(hidden),
            position_embeddings=position_embeddings,
            attention_mask=attention_mask,
            **{self._cache_kwarg: cache},
        )
        return hidden + attn_out

    def attention_block_observed(
        self,
        layer: int,
        hidden: torch.Tensor,
        position_embeddings: PositionEmbeddings,
        attention_mask: torch.Tensor | None,
        cache: KVCacheManager,
    ) -> torch.Tensor:
        """:meth:`attention_block` for a cache that selects KV by the current queries: the layer's
        queries, as the attention uses them (after any q norm and RoPE), go to
        ``cache.observe_query(layer, q)`` before the cache update and the attention.

        The same modules and attention function as the layer's own forward, in the same order, with the
        projections run once (recomputing the queries with :meth:`window_queries` would cost a second
        q_proj per layer and step).
        """
        return self._decomposed_block(layer, hidden, position_embeddings, attention_mask, cache,
                                      self.own_attention, observe=True)

    def attention_block_with(
        self,
        layer: int,
        hidden: torch.Tensor,
        position_embeddings: PositionEmbeddings,
        attention_mask: torch.Tensor | None,
        cache: KVCacheManager | None,
        attend: Attend,
        ops: PrefillOps | None = None,
    ) -> torch.Tensor:
        """:meth:`attention_block` with ``attend(module, q, k, v, mask)`` in place of the layer's attention
        function (a prefill attention strategy): input norm, q/k/v projections with any q/k norm and RoPE,
        the cache update, ``attend``, then o_proj and the residual. With :meth:`own_attention` as
        ``attend`` it equals :meth:`attention_block` exactly; with ``ops`` (``prefill.compile``) the norm
        and RoPE run compiled, unless this adapter computes q/k/v its own way (overrides ``decode_qkv``).

        A prefill writes each layer's KV once: where the cache holds no earlier tokens of the layer, ``attend``
        gets the projections' own k/v (the same values) instead of the cache's views of them. Why: those views'
        strides depend on the buffer the cache writes into (prompt-sized for ``prefill``, with room for the new
        tokens in ``generate(fast=True)``'s static decoder), and a compiled attention kernel (FlexAttention)
        seeing a second layout recompiles as a dynamic kernel; the projections' layout is the same in both."""
        return self._decomposed_block(layer, hidden, position_embeddings, attention_mask, cache, attend, ops=ops,
                                      own_kv=True)

    def _decomposed_block(
        self,
        layer: int,
        hidden: torch.Tensor,
        position_embeddings: PositionEmbeddings,
        attention_mask: torch.Tensor | None,
        cache: KVCacheManager | None,
        attend: Attend,
        observe: bool = False,
        ops: PrefillOps | None = None,
        own_kv: bool = False,
    ) -> torch.Tensor:
        """The attention module's forward in its pieces (the decode parts' q/k/v and output), ``attend``
        between them; with ``observe``, the queries go to ``cache.observe_query`` first; with ``own_kv``,
        ``attend`` gets the projected k/v where the cache returned just those tokens (see
        :meth:`attention_block_with`)."""
        parts = self._attention_lookup()[0]
        if ops is not None and uses_mixin(self, "decode_qkv"):
            q, k, v = project_qkv(self, layer, hidden, position_embeddings, None, ops)
        else:
            q, k, v = parts.qkv(layer, hidden, position_embeddings)
        if cache is not None:  # None: a prompt filter's first pass, whose KV nothing reads
            if observe:
                cache.observe_query(layer, q)
            held_k, held_v = cache.update(k, v, layer)
            if not (own_kv and held_k.shape[2] == k.shape[2]):
                k, v = held_k, held_v
        out = attend(self.layers[layer].self_attn, q, k, v, attention_mask)
        return parts.output(layer, hidden, out)

    def own_attention(
        self,
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """The attention function ``module``'s forward calls for ``config._attn_implementation``, called
        as it calls it, on q/k/v after RoPE (``[b, q_heads, n, d]``, ``[b, kv_heads, n_kv, d]``, grouped heads
        not repeated): ``[b, n, q_heads * d]``, what o_proj takes."""
        function = self._attention_lookup()[1]
        out, _ = function(module, query, key, value, attention_mask, dropout=0.0, scaling=module.scaling,
                          sliding_window=self._attention_window(module))
        return out.reshape(*out.shape[:2], -1).contiguous()

    def _attention_window(self, module: torch.nn.Module) -> int | None:
        """The ``sliding_window`` the module's forward passes its attention function: its own attribute
        (Qwen2's per-layer windows), else its config's (Mistral, Phi-3); None for none. A window that
        binds is refused (:meth:`check_hf_config`), so it only chooses the backend's kernel arguments."""
        if hasattr(module, "sliding_window"):
            return module.sliding_window
        return getattr(self.config, "sliding_window", None)

    def _attention_lookup(self) -> tuple[Any, Any]:
        """(bound decode parts, the attention function the layer's module would call), looked up once
        per attention implementation (this runs for every layer of every decode step)."""
        impl = self.attention_implementation
        cached = self.__dict__.get("_attention_lookup_cache")
        if cached is None or cached[0] != impl:
            from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

            from sliminfer.models.decode_parts import bind_decode_parts

            attn = self.layers[0].self_attn
            eager = sys.modules[type(attn).__module__].eager_attention_forward
            if impl == "eager":
                function = eager
            elif hasattr(ALL_ATTENTION_FUNCTIONS, "get_interface"):
                function = ALL_ATTENTION_FUNCTIONS.get_interface(impl, eager)
            else:
                function = ALL_ATTENTION_FUNCTIONS[impl]
            cached = (impl, bind_decode_parts(self), function)
            self.__dict__["_attention_lookup_cache"] = cached
        return cached[1], cached[2]

    def compiled_prefill_ops(self) -> PrefillOps:
        """This model's norms, RoPE and MLP as compiled functions for the prefill (``prefill.compile``), taken by
        :meth:`attention_block_with` and :meth:`mlp_block`."""
        return PrefillOps(self._rope)

    def mlp_block(self, layer: int, hidden: torch.Tensor, chunk: int | None = None,
                  ops: PrefillOps | None = None) -> torch.Tensor:
        """``hidden + mlp(post_attention_layernorm(hidden))``; with ``chunk``, over at most that many tokens
        at a time, written into ``hidden`` in place (the caller's tensor is consumed), so the activations
        stay those of one chunk; with ``ops`` (``prefill.compile``), norm and MLP run compiled."""
        block = self.layers[layer]

        def mlp(x: torch.Tensor) -> torch.Tensor:
            if ops is None:
                return block.mlp(block.post_attention_layernorm(x))
            return ops.mlp(block.post_attention_layernorm, block.mlp, x)

        n = hidden.shape[1]
        if chunk is None or n <= chunk:
            return hidden + mlp(hidden)
        for start in range(0, n, chunk):
            part = hidden[:, start : start + chunk]
            part += mlp(part)
        return hidden

    def window_queries(self, layer: int, hidden: torch.Tensor, position_embeddings: PositionEmbeddings) -> torch.Tensor:
        """Queries of ``hidden``'s tokens at ``layer`` as the attention sees them: ``[b, q_heads, n, d]``.

        The decode parts' own computation (:meth:`DecodeParts.decode_qkv`: input norm, projections,
        any q norm, RoPE), so scoring and decoding cannot drift apart; the window's keys and values (a
        few tokens) come along and are dropped."""
        return self.decode_qkv(layer, hidden, position_embeddings)[0]

    def last_query_and_keys(
        self, layer: int, hidden: torch.Tensor, position_embeddings: PositionEmbeddings
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The last token's queries ``[b, q_heads, 1, d]`` and every token's keys ``[b, kv_heads, n, d]`` at
        ``layer``, from the layer's input ``hidden``, as the attention sees them (after any q/k norm and
        RoPE): what a prompt filter chooses tokens from.

        One :meth:`DecodeParts.decode_qkv` over all tokens, so the filter's scores cannot drift from the
        attention's own q/k; the other queries and the values it also computes are dropped (two
        projections over the prompt: about 1% of a Llama-3.1-8B filter pass of 13 layers)."""
        q, k, _ = self.decode_qkv(layer, hidden, position_embeddings)
        return q[:, :, -1:], k

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm and LM head of the given tokens: ``[b, n, vocab]``."""
        if self.layer_devices is not None:  # the last layer's device need not be the norm's
            hidden = hidden.to(self.base.norm.weight.device)
        return self.model.lm_head(self.base.norm(hidden))
