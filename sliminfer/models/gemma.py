"""Gemma (v1): the Llama layout with Gemma's own modules doing what differs.

Its RMS norms scale by ``1 + weight`` and compute in float32 (``GemmaRMSNorm``), its embedding scales by
``sqrt(hidden_size)`` (``GemmaTextScaledWordEmbedding``, inside ``embed_tokens``), its MLP is GELU-tanh
gated: all inside the modules the adapter calls, so the base adapter runs them as stock does. Gemma 2
and 3 (``gemma2`` / ``gemma3``: attention-logit and final-logit soft-capping, alternating sliding-window
layers, extra norms around attention and MLP) are a different layout and have no adapter.
"""

from __future__ import annotations

from typing import Any

from sliminfer.core.errors import UnsupportedModelError
from sliminfer.models.base import ModelAdapter


class GemmaAdapter(ModelAdapter):
    """Gemma (v1) decoder."""

    model_types = ("gemma",)

    @classmethod
    def check_hf_config(cls, hf_config: Any) -> None:
        """Also refuse ``use_bidirectional_attention`` (an encoder-style Gemma): the prefill is causal."""
        super().check_hf_config(hf_config)
        if getattr(hf_config, "use_bidirectional_attention", False):
            raise UnsupportedModelError(
                "gemma: use_bidirectional_attention=true (config.json) lets every token attend to later ones; "
                "sliminfer runs causal decoders only (use_bidirectional_attention false or absent)"
            )
