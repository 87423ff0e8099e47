"""The offload manager's counters: bytes moved, swaps, overlaps, and where its KV lives now."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sliminfer.cache.offload.manager import OffloadingKVManager


def gpu_kv_bytes(m: OffloadingKVManager) -> dict[str, int]:
    """Bytes on the model's device: active prompt KV (tails included), generated KV, score keys,
    and the buffers' capacity."""
    prompt = generated = capacity = 0
    bs = m.config.block_size
    for st in m.layers:
        if st is None:
            continue
        if st.loaded:
            prompt += (st.slots * bs + st.n_tail) * m.token_bytes
            capacity += st.buf.numel() * st.buf.element_size()
        else:
            prompt += st.n_tail * m.token_bytes
        generated += st.generated * m.token_bytes
    score = sum(g.unit_keys.numel() * 4 for g in m.groups if g.unit_keys is not None)
    score += sum(st.unit_keys.numel() * 4 for st in m.layers if st is not None and st.unit_keys is not None)
    return {"prompt": prompt, "generated": generated, "score_keys": score, "buffer_capacity": capacity}


def manager_stats(m: OffloadingKVManager) -> dict[str, Any]:
    """Counters: per decode step the bytes copied to the device (step 0: the initial load), the layers
    that swapped, the blocks swapped in and the mean overlap of the applied selections with the
    active sets; and the KV bytes on the GPU and on the host now."""
    gpu = gpu_kv_bytes(m)
    host = sum(st.host.numel() * st.host.element_size() for st in m.layers
               if st is not None and st.host is not None)
    seen = [o for step in m.overlaps for o in step]
    bs = m.config.block_size
    return {
        "steps": m.step + 1,
        "bytes_moved": list(m.bytes_moved),
        "swaps": list(m.swaps),
        "blocks_swapped": list(m.blocks_swapped),
        "overlap": [sum(o) / len(o) if o else None for o in m.overlaps],
        "bytes_moved_total": sum(m.bytes_moved),
        "swap_bytes_total": sum(m.bytes_moved[1:]),
        "swaps_total": sum(m.swaps),
        "mean_overlap": sum(seen) / len(seen) if seen else None,
        "prefill_d2h_bytes": m.prefill_d2h_bytes,
        "gpu_prompt_kv_bytes": gpu["prompt"],
        "gpu_generated_kv_bytes": gpu["generated"],
        "gpu_kv_bytes": gpu["prompt"] + gpu["generated"],
        "gpu_score_key_bytes": gpu["score_keys"],
        "gpu_total_bytes": gpu["prompt"] + gpu["generated"] + gpu["score_keys"],
        "gpu_buffer_capacity_bytes": gpu["buffer_capacity"],
        "host_kv_bytes": host,
        "resident_tokens": [0 if st is None else st.resident for st in m.layers],
        "active_tokens": [0 if st is None else st.slots * bs + st.n_tail for st in m.layers],
        "selecting_layers": sorted(i for g in m.groups for i in g.layers),
        "groups": [list(g.layers) for g in m.groups],
    }
