"""What a caller may pass as a prompt, turned into token ids ``[1, n]``; everything else refused early.

Why one module: ``prefill`` and ``generate`` take text, chat messages, a list of ids or a tensor, and each
form has its own ways to go wrong (a batch, a nested list, float ids that torch would truncate, ids
outside the vocabulary that would fail as an IndexError deep inside the embedding, a message without a
``content``). Checking them here, before any forward pass, gives one
:class:`~sliminfer.core.errors.InputError` naming the prompt, the value and the accepted forms, and
nothing is silently reshaped or coerced.

Chat messages (``[{"role": "user", "content": "..."}, ...]``, transformers' chat format) are rendered with
the tokenizer's chat template and ``add_generation_prompt=True``, as ``apply_chat_template`` would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import Any

import torch

from sliminfer.core.errors import InputError

FORMS = ("text (str), chat messages (a list of {'role': str, 'content': str} dicts), token ids (a flat list of "
         "ints) or an integer tensor of shape [n] or [1, n]")
ONE_PROMPT = "sliminfer runs one prompt per call (each prompt keeps its own tokens); call it once per prompt"


def _short(value: Any, limit: int = 60) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} ({value.dtype})"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refuse(value: Any, why: str) -> InputError:
    return InputError(f"prompt: got {_short(value)}; {why}")


def text_ids(text: str, tokenizer: Any, chat_template: bool) -> list[int]:
    """Token ids of a text prompt, wrapped in the tokenizer's chat template (as one user message) when asked
    and present."""
    if tokenizer is None:
        raise _refuse(text, "text needs a tokenizer and this pipeline has none; pass token ids instead")
    if not text:
        raise InputError("prompt: empty text ''; give some text")
    if chat_template and getattr(tokenizer, "chat_template", None):
        return _rendered_chat_ids([{"role": "user", "content": text}], tokenizer)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def is_chat(prompt: Any) -> bool:
    """Whether ``prompt`` is meant as chat messages: a non-empty list (or tuple) whose first item is a dict."""
    return isinstance(prompt, (list, tuple)) and bool(prompt) and isinstance(prompt[0], Mapping)


def check_messages(messages: Sequence[Any]) -> None:
    """Refuse malformed chat messages, naming the message's index and the field, before any template runs."""
    if not messages:
        raise InputError("prompt: an empty list of chat messages; give at least one {'role': ..., 'content': ...}")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InputError(f"prompt: message {i} is {_short(message)}, not a dict; each chat message is a "
                             "{'role': str, 'content': str} dict")
        for field in ("role", "content"):
            if field not in message:
                raise InputError(f"prompt: message {i} has no '{field}' (its keys: {', '.join(map(str, message))}); "
                                 "each chat message needs a 'role' and a 'content'")
            if not isinstance(message[field], str):
                raise InputError(f"prompt: message {i} field '{field}' is {_short(message[field])} "
                                 f"({type(message[field]).__name__}); it must be a str")
        if not message["role"]:
            raise InputError(f"prompt: message {i} field 'role' is empty; give a role such as 'user' or 'system'")


def chat_ids(messages: Sequence[Any], tokenizer: Any) -> list[int]:
    """Token ids of chat messages rendered with the tokenizer's chat template (``add_generation_prompt=True``)."""
    check_messages(messages)
    if tokenizer is None:
        raise InputError("prompt: chat messages need a tokenizer (its chat template) and this pipeline has none; "
                         "pass a tokenizer, or token ids")
    if not getattr(tokenizer, "chat_template", None):
        raise InputError("prompt: chat messages need the tokenizer's chat template and this tokenizer has none "
                         "(tokenizer.chat_template is not set); set one, or pass text or token ids")
    return _rendered_chat_ids(messages, tokenizer)


def _rendered_chat_ids(messages: Sequence[Mapping[str, Any]], tokenizer: Any) -> list[int]:
    """The template's text already holds the special tokens (BOS, turn markers), so none are added again."""
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _tensor_ids(prompt: torch.Tensor) -> torch.Tensor:
    if prompt.dtype == torch.bool or prompt.is_floating_point() or prompt.is_complex():
        raise _refuse(prompt, f"a {prompt.dtype} tensor; token ids must be an integer tensor (torch.long)")
    if prompt.dim() == 2 and prompt.shape[0] != 1:
        raise _refuse(prompt, f"a batch of {prompt.shape[0]} prompts (shape {tuple(prompt.shape)}); {ONE_PROMPT}")
    if prompt.dim() not in (1, 2):
        raise _refuse(prompt, f"a tensor of shape {tuple(prompt.shape)}; give {FORMS}")
    return prompt.reshape(1, -1).long()


def _list_ids(prompt: Sequence[Any]) -> torch.Tensor:
    for item in prompt:
        if isinstance(item, (str, Sequence, dict)):
            kind = "strings" if isinstance(item, str) else "dicts" if isinstance(item, dict) else "lists"
            raise _refuse(prompt, f"a list of {kind}: a batch or nested list; {ONE_PROMPT}, as {FORMS}")
        if isinstance(item, bool) or not isinstance(item, Integral):
            raise _refuse(prompt, f"the element {item!r} ({type(item).__name__}) is not an int; token ids are ints")
        if not -(2**63) <= item < 2**63:
            raise _refuse(prompt, f"token id {item} is outside any vocabulary (not even a 64-bit integer)")
    return torch.tensor([list(prompt)], dtype=torch.long)


def prompt_ids(prompt: Any, tokenizer: Any, vocab_size: int, chat_template: bool) -> torch.Tensor:
    """Token ids ``[1, n]`` (CPU, ``torch.long``) of ``prompt``, checked against the vocabulary.

    ``chat_template`` applies to text: chat messages always go through the template (they have no other
    rendering), token ids never do."""
    if isinstance(prompt, str):
        ids = torch.tensor([text_ids(prompt, tokenizer, chat_template)], dtype=torch.long)
    elif is_chat(prompt):
        ids = torch.tensor([chat_ids(prompt, tokenizer)], dtype=torch.long)
    elif isinstance(prompt, torch.Tensor):
        ids = _tensor_ids(prompt)
    elif isinstance(prompt, (bytes, bytearray)):
        raise _refuse(prompt, f"bytes; decode them to str first, or give {FORMS}")
    elif isinstance(prompt, Sequence):
        ids = _list_ids(prompt)
    else:
        raise _refuse(prompt, f"a {type(prompt).__name__}; give {FORMS}")
    if ids.shape[1] == 0:
        raise InputError("prompt: empty (0 tokens); give at least one token")
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise _refuse(prompt, f"token id {bad} is outside the model's vocabulary 0..{vocab_size - 1}")
    return ids


def check_chat_choice(prompt: Any, chat_template: bool | None) -> None:
    """Refuse ``chat_template=False`` for chat messages instead of ignoring it: they have no rendering but the
    template (text with ``chat_template=True`` is wrapped when the tokenizer has a template, else used raw)."""
    if chat_template is False and is_chat(prompt):
        raise InputError("chat_template: got False; chat messages are rendered only through the tokenizer's chat "
                         "template; pass the text itself for a raw prompt, or leave chat_template unset")


def check_length(prompt_tokens: int, new_tokens: int, max_positions: int) -> None:
    """Refuse a request whose prompt plus generated tokens would run past the model's positions.

    The last generated token is never fed back, so ``prompt_tokens + new_tokens - 1`` positions are used.
    """
    if prompt_tokens > max_positions:
        raise InputError(
            f"prompt: {prompt_tokens} tokens is longer than the model's maximum of {max_positions} positions "
            "(max_position_embeddings); shorten the prompt"
        )
    needed = prompt_tokens + new_tokens - 1
    if needed > max_positions:
        raise InputError(
            f"max_new_tokens: got {new_tokens}; a {prompt_tokens}-token prompt plus {new_tokens} new tokens needs "
            f"{needed} positions and the model has {max_positions} (max_position_embeddings); use "
            f"max_new_tokens <= {max_positions - prompt_tokens + 1} or a shorter prompt"
        )
