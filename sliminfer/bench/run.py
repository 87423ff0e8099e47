"""One bench run: the pipeline to time (a checkpoint, or a built-in shape with random weights), the
grid, and the record that goes to JSON (device, versions, date, config, the random-weights label)."""

from __future__ import annotations

import datetime as dt
import platform
from collections.abc import Callable
from typing import Any

import torch

from sliminfer.bench.cost import ModelCost
from sliminfer.bench.grid import GridRunner, GridSettings
from sliminfer.bench.shapes import RANDOM_LABEL, SHAPES, build_random_model
from sliminfer.core.config import SlimConfig
from sliminfer.core.loading import resolve_device, resolve_dtype
from sliminfer.core.pipeline import SlimPipeline

SCHEMA = "sliminfer-bench/1"


def load_bench_pipeline(config: SlimConfig, shape: str | None = None, seed: int = 0) -> tuple[SlimPipeline, dict[str, Any]]:
    """The pipeline and a description of its model. ``shape`` (or a ``model.source`` that names a
    built-in shape) builds that architecture with random weights on ``model.device``."""
    section = config.model
    shape = shape or (section.source if section.source in SHAPES else None)
    if shape is not None:
        device = resolve_device(section.device)
        model = build_random_model(shape, resolve_dtype(section.dtype, device), device, section.attention, seed)
        pipe = SlimPipeline(model, None, config)
        name, random_weights = shape, True
    else:
        pipe = SlimPipeline.from_config(config)
        name, random_weights = section.source, section.random_init
    model = pipe.model
    info = {
        "name": name,
        "shape": shape,
        "random_weights": random_weights,
        "label": RANDOM_LABEL if random_weights else "real weights",
        "model_type": model.config.model_type,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "attention": pipe.adapter.attention_implementation,
        "num_layers": pipe.adapter.num_layers,
        "hidden_size": int(model.config.hidden_size),
        "params": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
        "decode_weight_bytes": ModelCost.of(pipe.adapter).weight_bytes,
    }
    return pipe, info


def environment(device: torch.device) -> dict[str, Any]:
    import transformers

    import sliminfer

    cuda = device.type == "cuda"
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine() or "cpu"),
        "device_type": device.type,
        "gpu_memory_bytes": torch.cuda.get_device_properties(device).total_memory if cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "sliminfer": sliminfer.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
    }


def run_bench(pipe: SlimPipeline, model_info: dict[str, Any], settings: GridSettings,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Time the grid and return the whole JSON-ready record."""
    log(f"bench: {model_info['name']} ({model_info['label']}) on {environment(pipe.device)['device']}")
    points = GridRunner(pipe, settings, log).run()
    return {
        "schema": SCHEMA,
        **environment(pipe.device),
        "model": model_info,
        "config": pipe.config.model_dump(mode="json"),
        "settings": settings.to_dict(),
        "points": points,
    }
