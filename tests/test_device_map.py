"""Models whose layers accelerate's ``device_map`` spread over several devices: what the pipeline refuses
up front (the offload manager, the static fast decode keep one device's buffers). The placement itself
needs two devices: benchmarks/gpu/device_map_check.py runs it on two GPUs."""

from __future__ import annotations

import pytest
import torch

from sliminfer import ConfigError, InputError, SlimPipeline
from sliminfer.models.base import ModelAdapter
from sliminfer.testing.tiny_models import tiny_model

PRUNING = {"scorer": {"name": "token_unit", "block_size": 16, "unit_size": 4, "window": 4},
           "schedule": {"name": "fixed", "layers": [1, 3], "budgets": [160, 64]}}


@pytest.fixture
def spread(monkeypatch) -> None:
    """Adapters report their layers on two devices (both the CPU here: the moves are no-ops)."""
    def two_devices(self) -> list[torch.device]:
        return [torch.device("cpu")] * len(self.layers)

    monkeypatch.setattr(ModelAdapter, "_layer_devices", two_devices)


def test_offload_manager_is_refused_when_layers_are_spread(spread) -> None:
    with pytest.raises(ConfigError, match=r"cache\.name: got 'offload'.*device_map"):
        SlimPipeline.from_pretrained(tiny_model(), config={"pruning": PRUNING, "cache": {"name": "offload"}})


def test_fast_decode_is_refused_and_the_eager_decode_runs(spread) -> None:
    pipe = SlimPipeline.from_pretrained(tiny_model(), config={"pruning": PRUNING})
    assert pipe.adapter.layer_devices is not None
    ids = torch.randint(0, 256, (1, 301), generator=torch.Generator().manual_seed(3))
    with pytest.raises(InputError, match="device_map"):
        pipe.generate(ids, max_new_tokens=4, fast=True)
    plain = SlimPipeline.from_pretrained(tiny_model(), config={"pruning": PRUNING})
    assert pipe.generate(ids, max_new_tokens=8).token_ids == plain.generate(ids, max_new_tokens=8).token_ids
