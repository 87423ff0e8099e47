"""Tensor parallelism: what sliminfer needs to know when transformers has sharded the attention heads.

Under ``from_pretrained(..., distributed_config=DistributedConfig(tp_size=N))`` (or the older
``tp_plan="auto"``) each process's ``q_proj``/``k_proj``/``v_proj`` hold a slice of the heads
(``colwise`` DTensors) and ``o_proj``/``down_proj`` all-reduce their partial outputs, so the hidden
states are replicated and every layer writes only its own KV heads into the cache: the pruned cache is
sharded by KV head with no work from sliminfer. What sliminfer must add is scoring: a scorer sees this
process's query heads only, so its head-mean is combined across the ranks (:meth:`HeadShards.head_mean`)
and the final block scores are broadcast from the group's first rank, so that every rank keeps the same
blocks (different kept sets would give the ranks different sequence lengths and hang the next all-reduce).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class HeadShards:
    """This process's share of the attention heads, and the process group that holds the rest."""

    group: Any  # torch.distributed.ProcessGroup
    rank: int  # this process's rank in ``group``
    size: int  # processes in ``group``
    local_q_heads: int
    total_q_heads: int
    local_kv_heads: int
    total_kv_heads: int

    def head_mean(self, local_mean: torch.Tensor) -> torch.Tensor:
        """The mean over all query heads from this rank's mean over its own: an all-reduce (sum) of
        ``local_mean * local heads``, divided by the total (ranks may hold different head counts)."""
        import torch.distributed as dist

        total = (local_mean * self.local_q_heads).contiguous()
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=self.group)
        return total / self.total_q_heads

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` as the group's first rank has it (so a selection cannot diverge between ranks)."""
        import torch.distributed as dist

        tensor = tensor.contiguous()
        dist.broadcast(tensor, src=dist.get_global_rank(self.group, 0), group=self.group)
        return tensor

    def broadcast_int(self, value: int, device: torch.device | str = "cpu") -> int:
        """``value`` as the group's first rank has it (``device``: where the backend takes tensors)."""
        return int(self.broadcast(torch.tensor([value], dtype=torch.long, device=device))[0])


def is_sharded(weight: Any) -> bool:
    """Whether ``weight`` is a DTensor spread over more than one process (a TP plan's shard)."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(weight, DTensor) and weight.device_mesh.size() > 1


def find_head_shards(q_proj: Any, k_proj: Any, head_dim: int, total_q_heads: int,
                     total_kv_heads: int) -> HeadShards | None:
    """The head shards of an attention whose ``q_proj`` / ``k_proj`` transformers' TP plan has sharded
    (colwise: each process holds whole heads of ``head_dim`` rows), or None for unsharded ones (also when
    torch has no distributed support)."""
    if not is_sharded(q_proj.weight):
        return None
    from torch.distributed.tensor import DTensor

    def local_heads(proj: Any, total: int) -> int:
        w = proj.weight
        return w.to_local().shape[0] // head_dim if isinstance(w, DTensor) else total

    group = q_proj.weight.device_mesh.get_group()
    return HeadShards(
        group=group,
        rank=torch.distributed.get_rank(group),
        size=torch.distributed.get_world_size(group),
        local_q_heads=local_heads(q_proj, total_q_heads),
        total_q_heads=total_q_heads,
        local_kv_heads=local_heads(k_proj, total_kv_heads),
        total_kv_heads=total_kv_heads,
    )
