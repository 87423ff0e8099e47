"""A CUDA view of pinned host memory, so that a GPU kernel can gather host blocks in one launch.

Why: the offload manager brings a layer's newly active blocks back at decode. Chosen by score, they
are scattered over the host buffer, and one ``cudaMemcpyAsync`` per run of consecutive blocks meant
about 30 copies per layer per step (host work on the decode's critical path). With unified virtual
addressing (every 64-bit CUDA process on Linux), memory from ``cudaHostAlloc`` (PyTorch's pinned
allocator) is mapped into the device's address space at the same address, so a device kernel may
read it directly: ``alias.index_select(0, ids)`` then reads just the chosen blocks over PCIe, on
the stream it is launched on, in one launch (measured on an H100: 36-49 GB/s for 7.5-30 MiB, the
same as one contiguous host-to-device copy; ``benchmarks/gpu/uva_check.py``).

The alias is made through the ``__cuda_array_interface__`` protocol, which PyTorch accepts for any
pointer CUDA knows (``cudaPointerGetAttributes``); pinned host memory qualifies. The alias does not
own the memory: the caller keeps the host tensor alive as long as the alias.
"""

from __future__ import annotations

import torch

_TYPESTR = {1: "|u1", 2: "<i2", 4: "<i4", 8: "<i8"}


class _Interface:
    """The minimum of the CUDA array interface (version 3) describing ``tensor``'s memory."""

    def __init__(self, tensor: torch.Tensor, bits: torch.Tensor) -> None:
        self.__cuda_array_interface__ = {
            "shape": tuple(bits.shape),
            "typestr": _TYPESTR[bits.element_size()],
            "data": (tensor.data_ptr(), False),
            "strides": tuple(s * bits.element_size() for s in bits.stride()),
            "version": 3,
        }


def device_alias(host: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """A tensor on ``device`` that reads ``host``'s pinned memory in place, or None where that is not
    possible (not CUDA, memory not pinned, or the driver refuses the pointer)."""
    if device.type != "cuda" or host.device.type != "cpu" or not host.is_pinned() or host.numel() == 0:
        return None
    if host.element_size() not in _TYPESTR:
        return None
    bits = host.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[host.element_size()])
    try:
        alias = torch.as_tensor(_Interface(host, bits), device=device)
    except (RuntimeError, TypeError, ValueError):
        return None
    if alias.data_ptr() != host.data_ptr():
        return None
    return alias.view(host.dtype)
