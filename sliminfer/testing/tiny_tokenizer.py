"""A character-level tokenizer with a chat template, built in-process (no files, no downloads).

It fits the tiny models of :mod:`sliminfer.testing.tiny_models`: exactly their 256 ids, every one a single
character or a special token, so any id a random model produces decodes, and text decodes back to itself.
Special tokens: ``<s>`` (id 0, BOS, as the tiny models' ``bos_token_id``), ``</s>`` (EOS), ``<pad>``,
``<unk>``, and the chat markers ``<|system|>``, ``<|user|>``, ``<|assistant|>``, ``<|end|>``.
"""

from __future__ import annotations

from typing import Any

SPECIAL = ("<s>", "</s>", "<pad>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
#: one turn per message, then the assistant marker when a reply is wanted (``add_generation_prompt``)
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_tokenizer(vocab_size: int = 256) -> Any:
    """A ``PreTrainedTokenizerFast`` over ``vocab_size`` ids: the special tokens, then printable ASCII and
    newline, then further Latin-1 and other characters to fill the vocabulary."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)] + ["\n"] + [chr(c) for c in range(161, 0x2FF)]
    tokens = [*SPECIAL, *chars][:vocab_size]
    if len(tokens) < vocab_size:
        raise ValueError(f"tiny_tokenizer: at most {len(SPECIAL) + len(chars)} ids, got vocab_size={vocab_size}")
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character a token
    backend.decoder = decoders.Fuse()  # characters join without spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>",
                                        additional_special_tokens=list(SPECIAL[4:]))
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
