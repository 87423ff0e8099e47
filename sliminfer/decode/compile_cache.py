"""torch.compile's on-disk caches under sliminfer's cache folder, so compiling is paid once per machine.

Why: the static decode compiles its step the first time it sees a model and shape (about 45 s for an
8B model on an H200). Inductor already caches FX graphs, Triton kernels and autotuning results on
disk and a later process reuses them, but by default under ``/tmp/torchinductor_<user>``, which a
reboot or a tmp cleaner empties. Before the first compile, sliminfer points ``TORCHINDUCTOR_CACHE_DIR``
at ``<sliminfer cache>/compile`` (``~/.cache/sliminfer/compile``; ``SLIMINFER_CACHE`` moves it).

Triton's own cache (compiled kernels, and the tile timings of sliminfer's Triton decode kernel) goes to
``<sliminfer cache>/compile/triton`` (``TRITON_CACHE_DIR``; otherwise inductor sets it for its kernels
only once it loads some, and a kernel launched outside a compiled graph would use ``~/.triton``).

A ``TORCHINDUCTOR_CACHE_DIR`` or ``TRITON_CACHE_DIR`` set before sliminfer was imported wins;
``SLIMINFER_COMPILE_CACHE=0`` leaves torch's and Triton's own choices alone. The variables are set for the
whole process (inductor and Triton read them there).

With ``autotune`` the compile also times inductor's alternatives for each matmul and reduction on this
GPU (:data:`AUTOTUNE_OPTIONS`): one token's matmuls are matrix-vector products, bound by reading the
weights, and the tuned, fused kernels read them faster than the default ones (8B shape at 32k on an
H100: 6.60 against 6.99 ms per token, benchmarks/results/h100-2026-12-07c). The timings land in the
same cache, yet a later process still re-times part of them: the first call of a new shape took 194 s
with it (55 s without), a second process's 34-51 s (13 s without; 8B at 32k, H100, 2026-12-07), so
``decode.autotune`` is opt-in. The likely cause, read from torch 2.11's inductor (not yet measured): on a warm
cache it re-runs coordinate-descent tuning for kernels whose cached winner it does not mark as found by it
(pytorch/pytorch#172819), and ``_dynamic_scale_rblock`` adds candidates after a cache hit (#181789); which
options avoid it without slowing the decode is the next GPU measurement (``benchmarks/gpu/README.md``).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from sliminfer.assets.cache_dir import cache_subdir
from sliminfer.core.errors import ConfigError

SWITCH = "SLIMINFER_COMPILE_CACHE"
INDUCTOR_DIR = "TORCHINDUCTOR_CACHE_DIR"
#: set by the user before sliminfer was imported (inductor sets it itself on its first compile)
_USER_DIR = os.environ.get(INDUCTOR_DIR)
TRITON_DIR = "TRITON_CACHE_DIR"
_USER_TRITON_DIR = os.environ.get(TRITON_DIR)

log = logging.getLogger(__name__)


def compile_cache_enabled() -> bool:
    """``SLIMINFER_COMPILE_CACHE``: unset, empty or ``1`` (on), or ``0`` (off); anything else is refused."""
    value = os.environ.get(SWITCH, "").strip()
    if value not in ("", "0", "1"):
        raise ConfigError(SWITCH, value, "allowed: 1 (cache torch.compile's work under sliminfer's cache folder, "
                          "the default) or 0 (leave torch's own cache location)")
    return value != "0"


def use_compile_cache() -> Path | None:
    """Point inductor at sliminfer's compile cache (unless switched off or the user chose a folder);
    returns the folder inductor will use when it is sliminfer's, else None."""
    if _USER_DIR or not compile_cache_enabled():
        log.debug("torch.compile cache: torch's own choice (%s)",
                  f"{INDUCTOR_DIR}={_USER_DIR}" if _USER_DIR else f"{SWITCH}=0")
        return None
    path = cache_subdir("compile")
    os.environ[INDUCTOR_DIR] = str(path)
    if not _USER_TRITON_DIR:
        os.environ[TRITON_DIR] = str(path / "triton")
    log.debug("torch.compile cache: %s (Triton's: %s)", path, os.environ[TRITON_DIR])
    return path


#: inductor settings of an autotuned compile (options of ``torch.compile``, not its "max-autotune" mode,
#: which would also add inductor's own CUDA graphs on top of the decoder's)
AUTOTUNE_OPTIONS: dict[str, Any] = {"max_autotune": True, "coordinate_descent_tuning": True}


def compile_static(fn: Callable[..., Any], autotune: bool = False) -> Callable[..., Any]:
    """``torch.compile(fn, dynamic=False)`` with the persistent cache (and :data:`AUTOTUNE_OPTIONS` when
    ``autotune``): the static decode's one way to compile."""
    use_compile_cache()
    return torch.compile(fn, dynamic=False, options=dict(AUTOTUNE_OPTIONS) if autotune else None)


@functools.lru_cache(maxsize=None)
def _missing_compiler(device_type: str) -> str | None:
    """What torch.compile lacks on this kind of device (a sentence), or None: Triton on CUDA (inductor's GPU
    kernels), a working C++ compiler on the CPU (inductor builds its CPU kernels with it). Probed once per
    process and device type; other device types are not probed."""
    if device_type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else ("Triton, which is unavailable here (not installed, or this GPU's compute "
                                           "capability is below 7.0)")
    if device_type == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler
        except ImportError:  # a torch without this probe: let the compile say it
            return None
        try:
            get_cpp_compiler()
        except Exception as exc:  # noqa: BLE001 - inductor's InvalidCxxCompiler, or the probe's own failure
            return (f"a working C++ compiler, and none was found ({' '.join(str(exc).split())[:200]}); install "
                    "g++ or point CXX at one")
    return None


def check_can_compile(field: str, devices: Iterable[torch.device]) -> None:
    """Refuse ``field: true`` before any work where torch.compile cannot run on one of ``devices`` (the model's:
    several with a ``device_map``), instead of an inductor error from inside the first forward pass."""
    for kind in sorted({torch.device(d).type for d in devices}):
        missing = _missing_compiler(kind)
        if missing is not None:
            raise ConfigError(field, True, f"torch.compile on {kind} needs {missing}; or set {field} to false")
