"""Phi-3 / Phi-3.5 / Phi-4-mini (``model_type: phi3``): fused projections and partial RoPE.

Each attention has one ``qkv_proj`` whose output rows are the query heads, then the key heads, then the
value heads, and each MLP one ``gate_up_proj`` (gate rows, then up rows). The adapter splits
``qkv_proj``'s output where ``Phi3Attention`` does (:meth:`Phi3Adapter.qkv_projections`), so the
decomposed attention block, the scorer's window queries and the static decode see the queries and keys
the attention computes; RoPE is the model's own ``apply_rotary_pos_emb``, which rotates only the first
``partial_rotary_factor`` of each head (Phi-4-mini: 3/4). The MLP always runs its own forward: its
gate/up matmul is already one, so the static decoder's ``decode.fuse`` copies nothing for Phi-3.

Windows: Phi-3.5 and Phi-4-mini ship ``sliding_window`` 262144 over 131072 positions (never binds: run
as full attention); Phi-3-mini-4k's 2047 binds and is refused (:meth:`ModelAdapter.check_hf_config`).
Tensor parallelism would shard ``qkv_proj`` by output rows, cutting across the q/k/v boundary, so a
sharded ``qkv_proj`` is refused.
"""

from __future__ import annotations

import torch

from sliminfer.core.errors import UnsupportedModelError
from sliminfer.models.base import ModelAdapter
from sliminfer.models.sharding import HeadShards, is_sharded


class Phi3Adapter(ModelAdapter):
    """Phi-3 family decoder (fused ``qkv_proj`` and ``gate_up_proj``, partial rotary)."""

    model_types = ("phi3",)

    def _find_head_shards(self) -> HeadShards | None:
        """None, or refuse: the fused ``qkv_proj`` cannot be split into heads once it is sharded."""
        if any(is_sharded(block.self_attn.qkv_proj.weight) for block in self.layers):
            raise UnsupportedModelError(
                "phi3: tensor parallelism has sharded the fused qkv_proj; sliminfer runs Phi-3 under tensor "
                "parallelism only with separate q_proj/k_proj/v_proj, so load it without tp_plan / "
                "distributed_config (one device, or device_map to spread the layers)"
            )
        return None

    def qkv_projections(self, layer: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``qkv_proj(x)`` split as ``Phi3Attention`` splits it: query heads, key heads, value heads."""
        attn = self.layers[layer].self_attn
        q_size = int(self.config.num_attention_heads) * int(attn.head_dim)
        kv_size = int(attn.num_key_value_heads) * int(attn.head_dim)
        q, k, v = attn.qkv_proj(x).split((q_size, kv_size, kv_size), dim=-1)
        return q, k, v
