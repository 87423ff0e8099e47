"""Mistral (v0.2 / v0.3, Mistral-Nemo and other ``model_type: mistral`` checkpoints): the Llama layout.

Its attention passes ``config.sliding_window`` to the attention function; a window that binds (smaller
than ``max_position_embeddings``, as Mistral-7B-v0.1's 4096 tokens and transformers' own MistralConfig
default) is refused by :meth:`ModelAdapter.check_hf_config`, before the weights load: pruning changes
which tokens a window would cover, and the masked reference could not check it.
"""

from sliminfer.models.base import ModelAdapter


class MistralAdapter(ModelAdapter):
    """Mistral decoder (full attention: ``sliding_window`` null or never binding)."""

    model_types = ("mistral",)
