"""The ``sliminfer-text-generation`` task of transformers' ``pipeline()``: SlimInfer behind the interface of
transformers' ``text-generation`` pipeline.

    import sliminfer  # registers the task
    from transformers import pipeline

    pipe = pipeline("sliminfer-text-generation", model=model, tokenizer=tokenizer, slim_config="llama-3.1-8b")
    pipe("The capital of France is", max_new_tokens=20)       # [{"generated_text": "The capital ... Paris"}]
    pipe([{"role": "user", "content": "Hi"}])                  # [{"generated_text": [..., {"role": "assistant", ...}]}]

Inputs and outputs are those of ``text-generation``: a string gives ``[{"generated_text": prompt + answer}]``
(``return_full_text=False``: the answer only; ``return_tensors=True``: ``generated_token_ids``); chat
messages give the messages with the assistant's reply appended; a list of prompts a list of such lists.
Strings are tokenized as ``text-generation`` tokenizes them (the tokenizer's special tokens, no chat
template); chats go through the chat template (``add_generation_prompt=True``).

What differs, on purpose:

- ``slim_config`` is anything :meth:`SlimPipeline.from_pretrained` takes (a SlimConfig, a dict, a YAML path,
  a preset name); its ``model:`` section is not used, since ``pipeline()`` loads the model itself.
- Generation defaults come from that config's ``generation:`` section (greedy and 128 new tokens unless it
  says otherwise), not from the model's ``generation_config.json`` nor from ``text-generation``'s own
  defaults (sampling at temperature 0.7, 256 tokens): pass ``do_sample=True`` etc. per call. Generation
  keywords (``max_new_tokens``, ``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``min_p``,
  ``repetition_penalty``, ``no_repeat_ngram_size``, ``stop_sequence``, ``streamer``, ``logits_processor``,
  ``generation_config``, ...) pass through to :meth:`SlimPipeline.generate`, as do ``seed`` and ``fast``
  (the static decode).
- One prompt per forward pass: ``batch_size`` must be 1, ``num_return_sequences`` 1, ``num_beams`` 1. A chat
  that ends with an assistant message (transformers continues it) is refused, as are ``prefix``,
  ``handle_long_generation``, ``truncation``, ``continue_final_message``, ``tools`` and ``documents``:
  every parameter this pipeline would not honour is a ConfigError naming it, never silently ignored.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from transformers import GenerationConfig, Pipeline
from transformers.utils.chat_template_utils import Chat

from sliminfer.core.decoding import check_supported
from sliminfer.core.errors import ConfigError, InputError
from sliminfer.core.pipeline import ConfigSource, SlimPipeline
from sliminfer.core.prompts import check_messages, is_chat

TASK = "sliminfer-text-generation"

#: what ``generate`` takes besides GenerationConfig fields
FORWARD_KEYS = ("generation_config", "logits_processor", "streamer", "seed", "fast", "stop_sequence")
PREPROCESS_KEYS = ("add_special_tokens",)
POSTPROCESS_KEYS = ("return_full_text", "return_text", "return_tensors", "clean_up_tokenization_spaces",
                    "skip_special_tokens")
#: text-generation parameters this task refuses, and why
REFUSED = {
    "prefix": "prepend it to the prompt",
    "handle_long_generation": "shorten the prompt (sliminfer refuses prompts past the model's positions)",
    "truncation": "shorten the prompt", "padding": "one prompt per forward pass: nothing is padded",
    "continue_final_message": "end the chat with a user message", "tools": "render tools into the messages",
    "documents": "render documents into the messages", "tokenizer_encode_kwargs": "pass token ids instead",
    "assistant_model": "no assisted decoding", "assistant_tokenizer": "no assisted decoding",
}


def generation_fields() -> frozenset[str]:
    """The public field names of transformers' GenerationConfig."""
    return frozenset(k for k in vars(GenerationConfig()) if not k.startswith("_"))


class SlimTextGenerationPipeline(Pipeline):
    """transformers ``text-generation``, with SlimInfer's pruned prefill and KV managers (module docstring)."""

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False
    # Why not the base class's generation handling: it differs between transformers 5 releases and brings
    # text-generation's defaults (sampling at 0.7); the sliminfer config is the one source of defaults here
    _pipeline_calls_generate = False

    def __init__(self, model: Any, tokenizer: Any = None, slim_config: ConfigSource = None, **kwargs: Any) -> None:
        if tokenizer is None:
            raise ConfigError("tokenizer", None, f"the {TASK} task tokenizes text and chats: pass tokenizer=..., "
                              "or a model directory that holds tokenizer files")
        super().__init__(model=model, tokenizer=tokenizer, **kwargs)
        if (self._batch_size or 1) != 1:
            raise ConfigError("batch_size", self._batch_size, "must be 1: sliminfer runs one prompt per forward "
                              "pass (each prompt keeps its own tokens); pass a list of prompts to run them in turn")
        self.slim = SlimPipeline.from_pretrained(self.model, self.tokenizer, slim_config)

    def __call__(self, inputs: Any, *args: Any, batch_size: int | None = None, **kwargs: Any) -> Any:
        """``inputs``: a string, chat messages, or a list of either (answered one by one)."""
        if batch_size not in (None, 1):
            raise ConfigError("batch_size", batch_size, "must be 1: sliminfer runs one prompt per forward pass; "
                              "a list of prompts runs them in turn")
        if isinstance(inputs, (list, tuple)) and not inputs:
            raise InputError("inputs: an empty list; give a string, chat messages, or a list of either")
        for chat in _chats(inputs):
            check_messages(chat)  # before transformers' own check, which names neither the index nor the field
        return super().__call__(inputs, *args, **kwargs)

    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        fields = generation_fields()
        refused = sorted(set(kwargs) & set(REFUSED))
        if refused:
            name = refused[0]
            raise ConfigError(name, kwargs[name], f"the {TASK} task does not take it: {REFUSED[name]}")
        unknown = sorted(set(kwargs) - fields - {*FORWARD_KEYS, *PREPROCESS_KEYS, *POSTPROCESS_KEYS})
        if unknown:
            raise ConfigError(unknown[0], kwargs[unknown[0]], f"not a parameter of the {TASK} task; it takes "
                              f"{', '.join((*PREPROCESS_KEYS, *FORWARD_KEYS, *POSTPROCESS_KEYS))} and "
                              "transformers GenerationConfig fields (max_new_tokens, do_sample, temperature, ...)")
        generation = {k: v for k, v in kwargs.items() if k in fields}
        check_supported(generation)  # here, so that a bad one fails before the prompt is tokenized
        count = generation.get("max_new_tokens")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ConfigError("max_new_tokens", count, "must be an int >= 1 (tokens to generate at most)")
        for name in (*PREPROCESS_KEYS, *POSTPROCESS_KEYS):  # flags: a string such as "no" is not False
            if kwargs.get(name) is not None and not isinstance(kwargs[name], bool):
                raise ConfigError(name, kwargs[name], "must be True, False or None")
        forward = {**generation, **{k: kwargs[k] for k in FORWARD_KEYS if k in kwargs}}
        preprocess = {k: kwargs[k] for k in PREPROCESS_KEYS if k in kwargs}
        postprocess = {k: kwargs[k] for k in POSTPROCESS_KEYS if k in kwargs}
        return preprocess, forward, postprocess

    def preprocess(self, prompt: Any, add_special_tokens: bool | None = None) -> dict[str, Any]:
        if isinstance(prompt, Chat):
            messages = prompt.messages
            if messages and isinstance(messages[-1], Mapping) and messages[-1].get("role") == "assistant":
                raise InputError(f"prompt: the chat ends with an assistant message, which {TASK} would not "
                                 "continue (transformers' continue_final_message); end it with a user message")
            ids = self.slim.encode(messages)
        elif isinstance(prompt, str):
            if not prompt:
                raise InputError("prompt: empty text ''; give some text")
            special = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
            ids = self.tokenizer(prompt, return_tensors="pt", **special)["input_ids"]
        else:
            raise InputError(f"prompt: got a {type(prompt).__name__}; the {TASK} task takes a string, chat messages "
                             "(a list of {'role', 'content'} dicts) or a list of either")
        return {"input_ids": ids, "prompt": prompt}

    def _forward(self, model_inputs: dict[str, Any], **params: Any) -> dict[str, Any]:
        fields = generation_fields()
        generation = {k: v for k, v in params.items() if k in fields}
        config = params.get("generation_config")
        if generation:  # the call's fields over its generation_config's (a copy: the caller's stays as it was)
            config = copy.deepcopy(config) if config is not None else GenerationConfig()
            config.update(**generation)
        stop = params.get("stop_sequence")
        result = self.slim.generate(
            model_inputs["input_ids"], stop=[stop] if isinstance(stop, str) else stop, seed=params.get("seed"),
            fast=params.get("fast"), streamer=params.get("streamer"), generation_config=config,
            logits_processor=params.get("logits_processor"),
        )
        return {"input_ids": model_inputs["input_ids"], "token_ids": torch.tensor(result.token_ids),
                "prompt": model_inputs["prompt"]}

    def postprocess(self, outputs: dict[str, Any], return_full_text: bool | None = None,
                    return_text: bool | None = None, return_tensors: bool | None = None,
                    clean_up_tokenization_spaces: bool | None = None,
                    skip_special_tokens: bool = True) -> list[dict[str, Any]]:
        chosen = {"return_full_text": return_full_text, "return_text": return_text, "return_tensors": return_tensors}
        given = [name for name, value in chosen.items() if value is not None]
        if len(given) > 1:
            raise ConfigError(given[1], chosen[given[1]], f"give one of return_full_text, return_text and "
                              f"return_tensors (got {', '.join(given)})")
        new = outputs["token_ids"].tolist()
        if return_tensors:
            return [{"generated_token_ids": outputs["input_ids"][0].tolist() + new}]
        text = self.tokenizer.decode(new, skip_special_tokens=skip_special_tokens,
                                     clean_up_tokenization_spaces=clean_up_tokenization_spaces)
        if return_full_text is False:
            return [{"generated_text": text}]
        prompt = outputs["prompt"]
        if isinstance(prompt, Chat):
            return [{"generated_text": [*prompt.messages, {"role": "assistant", "content": text}]}]
        return [{"generated_text": prompt + text}]


def _chats(inputs: Any) -> list[Any]:
    """The chats among ``inputs`` (one chat, or a list of them), as transformers' pipelines detect them."""
    if is_chat(inputs):
        return [inputs]
    if isinstance(inputs, (list, tuple)):
        return [item for item in inputs if is_chat(item)]
    return []
