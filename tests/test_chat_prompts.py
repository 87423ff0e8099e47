"""Chat messages are a prompt wherever text is: rendered with the tokenizer's chat template
(``add_generation_prompt=True``), exactly as ``apply_chat_template`` renders them; malformed ones are
refused naming the message's index and field."""

from __future__ import annotations

import pytest
import torch

from sliminfer import InputError, SlimPipeline
from sliminfer.testing import tiny_model, tiny_tokenizer

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]


@pytest.fixture(scope="module")
def pipe() -> SlimPipeline:
    return SlimPipeline(tiny_model("llama"), tiny_tokenizer())


def _template_ids(tokenizer, messages) -> list[int]:
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)


def test_encode_renders_messages_like_apply_chat_template(pipe: SlimPipeline) -> None:
    ids = pipe.encode(CHAT)
    expected = _template_ids(pipe.tokenizer, CHAT)
    assert ids.tolist() == [expected]
    assert pipe.tokenizer.decode(expected).endswith("<|assistant|>")  # the generation prompt is there


def test_prefill_and_generate_take_messages(pipe: SlimPipeline) -> None:
    manual = torch.tensor([_template_ids(pipe.tokenizer, CHAT)])
    assert torch.equal(pipe.prefill(CHAT).logits, pipe.prefill(manual).logits)
    assert pipe.generate(CHAT, max_new_tokens=6).token_ids == pipe.generate(manual, max_new_tokens=6).token_ids


def test_messages_always_go_through_the_template(pipe: SlimPipeline) -> None:
    """``chat_template=False`` is about text; messages have no other rendering, so it is refused for them."""
    with pytest.raises(InputError, match="chat_template: got False; chat messages are rendered only through"):
        pipe.encode(CHAT, chat_template=False)
    assert pipe.encode(CHAT, chat_template=True).tolist() == pipe.encode(CHAT).tolist()
    assert pipe.encode("Hi", chat_template=False).tolist() == [pipe.tokenizer("Hi")["input_ids"]]
    assert pipe.encode("Hi").tolist() == [_template_ids(pipe.tokenizer, [{"role": "user", "content": "Hi"}])]


@pytest.mark.parametrize(("messages", "says"), [
    ([{"role": "user"}], ("message 0 has no 'content'",)),
    ([{"role": "user", "content": "a"}, {"content": "b"}], ("message 1 has no 'role'",)),
    ([{"role": "user", "content": "a"}, "hello"], ("message 1 is 'hello', not a dict",)),
    ([{"role": "user", "content": 3}], ("message 0 field 'content' is 3 (int)", "must be a str")),
    ([{"role": "", "content": "a"}], ("message 0 field 'role' is empty",)),
    ((), ("an empty list of chat messages",)),
], ids=["no content", "no role", "not a dict", "content not a str", "empty role", "empty"])
def test_malformed_messages_are_refused_naming_index_and_field(pipe: SlimPipeline, messages, says) -> None:
    from sliminfer.core.prompts import check_messages

    with pytest.raises(InputError) as err:
        check_messages(messages)
    for text in says:
        assert text in str(err.value)
    if messages:  # through the pipeline too, before any forward pass
        with pytest.raises(InputError, match="message"):
            pipe.generate(list(messages))


def test_messages_without_a_chat_template_are_refused() -> None:
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = None
    pipe = SlimPipeline(tiny_model("llama"), tokenizer)
    with pytest.raises(InputError, match="chat template and this tokenizer has none"):
        pipe.generate(CHAT)


def test_messages_without_a_tokenizer_are_refused() -> None:
    with pytest.raises(InputError, match="need a tokenizer"):
        SlimPipeline(tiny_model("llama")).prefill(CHAT)


def test_a_batch_of_chats_is_refused(pipe: SlimPipeline) -> None:
    with pytest.raises(InputError, match="a list of lists"):
        pipe.generate([CHAT, CHAT])
