"""Llama 2/3.x and SmolLM2 (the base adapter already matches their layout)."""

from sliminfer.models.base import ModelAdapter


class LlamaAdapter(ModelAdapter):
    """Llama-family decoder (Llama 2/3.x, SmolLM2)."""

    model_types = ("llama",)
