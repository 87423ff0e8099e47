"""Can a GPU kernel read pinned host memory in place here, and how fast? (sliminfer.cache.offload.host_alias)

Makes the device alias of a pinned ``[512, 2, 8, 64, 128]`` bf16 host buffer (512 KV blocks of the
Llama-3.1-8B shape), checks that a gather through it equals the same gather on the host, and times
gathers of 30 and 120 scattered blocks against one contiguous host-to-device copy (CUDA events, mean
of 10). Measured on an H100 (PCIe): 36.5 GB/s (30 blocks), 49.3 GB/s (120), contiguous copy 49.8 GB/s.

    PYTHONPATH=$PWD python3 benchmarks/gpu/uva_check.py
"""

from __future__ import annotations

import torch

from sliminfer.cache.offload.host_alias import device_alias

BLOCK_BYTES = 2 * 8 * 64 * 128 * 2


def timed(fn, repeats: int = 10) -> float:
    """Mean milliseconds of ``fn`` over ``repeats`` calls, CUDA events."""
    fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / repeats


def main() -> None:
    host = torch.randn(512, 2, 8, 64, 128, dtype=torch.bfloat16).pin_memory()
    alias = device_alias(host, torch.device("cuda"))
    if alias is None:
        print("no device alias for pinned memory on this machine")
        return
    print("alias:", alias.device, tuple(alias.shape), "same address:", alias.data_ptr() == host.data_ptr())
    ids = torch.randperm(512, device="cuda")[:30]
    print("gather equals the host gather:", torch.equal(alias.index_select(0, ids), host[ids.cpu()].cuda()))
    for n in (30, 120):
        ids = torch.randperm(512, device="cuda")[:n]
        ms = timed(lambda: alias.index_select(0, ids))
        print(f"gather of {n} scattered blocks ({n * BLOCK_BYTES / 2**20:.1f} MiB): {ms:.3f} ms = "
              f"{n * BLOCK_BYTES / ms / 1e6:.1f} GB/s")
    out = torch.empty(30, 2, 8, 64, 128, dtype=torch.bfloat16, device="cuda")
    ms = timed(lambda: out.copy_(host[:30], non_blocking=True))
    print(f"contiguous copy of 30 blocks: {ms:.3f} ms = {30 * BLOCK_BYTES / ms / 1e6:.1f} GB/s")


if __name__ == "__main__":
    main()
