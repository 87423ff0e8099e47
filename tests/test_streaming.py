"""Streaming: ``generate(streamer=...)`` hands a transformers streamer the prompt, then every token as
``model.generate`` does (eager decode, static decode, the offload manager's static decode), then ``end()``;
the streamed tokens are the generated ones, ``stream()`` yields the text, and ``sliminfer run`` streams."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import GenerationConfig, TextIteratorStreamer, TextStreamer

from sliminfer import ConfigError, SlimPipeline
from sliminfer.testing import random_prompt, tiny_model, tiny_tokenizer

NEW = 20
BLOCK, UNIT = 16, 4
OFFLOAD = {
    "pruning": {"scorer": {"name": "token_unit", "block_size": BLOCK, "unit_size": UNIT, "window": 4},
                "schedule": {"name": "fixed", "layers": [1, 3], "budgets": [160, 64]}},
    "cache": {"name": "offload", "block_size": BLOCK, "unit_size": UNIT, "decode_budget": 96, "gamma": 0.9,
              "recent_window": 4},
}


class Recorder:
    """A streamer that keeps what it is given."""

    def __init__(self) -> None:
        self.puts: list[torch.Tensor] = []
        self.ended = 0

    def put(self, value: torch.Tensor) -> None:
        assert self.ended == 0, "put after end()"
        self.puts.append(value)

    def end(self) -> None:
        self.ended += 1

    @property
    def tokens(self) -> list[int]:
        assert all(v.shape == (1,) for v in self.puts[1:]), "each new token comes as a one-element tensor"
        return [int(v) for v in self.puts[1:]]


@pytest.fixture(scope="module")
def pipe() -> SlimPipeline:
    return SlimPipeline(tiny_model("llama"), tiny_tokenizer())


@pytest.fixture(scope="module")
def offload_pipe() -> SlimPipeline:
    return SlimPipeline.from_pretrained(tiny_model("llama", seed=2), tiny_tokenizer(), OFFLOAD)


@pytest.mark.parametrize("fast", [False, True], ids=["eager", "static"])
def test_streamed_tokens_are_the_generated_ones(pipe: SlimPipeline, fast: bool) -> None:
    ids = random_prompt(50, seed=4)
    plain = pipe.generate(ids, max_new_tokens=NEW, fast=fast)
    streamer = Recorder()
    out = pipe.generate(ids, max_new_tokens=NEW, fast=fast, streamer=streamer)
    assert torch.equal(streamer.puts[0], ids)  # the prompt first, [1, n], as model.generate puts it
    assert streamer.tokens == out.token_ids == plain.token_ids
    assert streamer.ended == 1


def test_streamed_tokens_equal_stock_generate(pipe: SlimPipeline) -> None:
    ids = random_prompt(50, seed=4)
    ours, stock = Recorder(), Recorder()
    pipe.generate(ids, max_new_tokens=NEW, streamer=ours)
    pipe.model.generate(ids, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, streamer=stock)
    assert torch.equal(ours.puts[0], stock.puts[0])
    assert ours.tokens == [int(v) for v in stock.puts[1:]]


@pytest.mark.parametrize("fast", [False, True], ids=["eager", "static"])
def test_streaming_stops_at_eos_like_the_result(pipe: SlimPipeline, fast: bool) -> None:
    """The static decode, which otherwise runs every step and cuts afterwards, stops streaming at EOS."""
    ids = random_prompt(50, seed=4)
    tokens = pipe.generate(ids, max_new_tokens=NEW).token_ids
    eos = tokens[5]
    config = GenerationConfig(max_new_tokens=NEW, eos_token_id=eos)
    streamer = Recorder()
    out = pipe.generate(ids, fast=fast, generation_config=config, streamer=streamer)
    assert streamer.tokens == out.token_ids == tokens[: tokens.index(eos) + 1]
    assert out.stopped_by == "eos"
    first = GenerationConfig(max_new_tokens=NEW, eos_token_id=tokens[0])  # EOS as the very first token
    streamer = Recorder()
    assert pipe.generate(ids, fast=fast, generation_config=first, streamer=streamer).token_ids == tokens[:1]
    assert streamer.tokens == tokens[:1]


@pytest.mark.parametrize("new", [3, NEW], ids=["eager steps only", "static decoder"])
def test_the_offload_static_decode_streams(offload_pipe: SlimPipeline, new: int) -> None:
    ids = random_prompt(301, seed=7)
    eager = offload_pipe.generate(ids, max_new_tokens=new)
    streamer = Recorder()
    fast = offload_pipe.generate(ids, max_new_tokens=new, fast=True, streamer=streamer)
    assert streamer.tokens == fast.token_ids == eager.token_ids
    eos = eager.token_ids[-2]
    config = GenerationConfig(max_new_tokens=new, eos_token_id=eos)
    streamer = Recorder()
    cut = offload_pipe.generate(ids, fast=True, generation_config=config, streamer=streamer)
    assert streamer.tokens == cut.token_ids == eager.token_ids[: eager.token_ids.index(eos) + 1]


@pytest.mark.parametrize("fast", [False, True], ids=["eager", "static"])
def test_text_iterator_streamer_text_is_the_result_text(pipe: SlimPipeline, fast: bool) -> None:
    streamer = TextIteratorStreamer(pipe.tokenizer, skip_prompt=True, skip_special_tokens=True)
    out = pipe.generate("Once upon a time", max_new_tokens=NEW, fast=fast, streamer=streamer)
    assert "".join(streamer) == out.text == pipe.tokenizer.decode(out.token_ids, skip_special_tokens=True)


def test_text_streamer_prints_the_text(pipe: SlimPipeline, capsys) -> None:
    out = pipe.generate("Once upon a time", max_new_tokens=NEW,
                        streamer=TextStreamer(pipe.tokenizer, skip_prompt=True, skip_special_tokens=True))
    assert capsys.readouterr().out == out.text + "\n"


def test_stream_yields_the_text_and_returns_the_result(pipe: SlimPipeline) -> None:
    chat = [{"role": "user", "content": "Tell me a story"}]
    pieces = []
    stream = pipe.stream(chat, max_new_tokens=NEW, seed=3, temperature=0.8)
    while True:
        try:
            pieces.append(next(stream))
        except StopIteration as done:
            result = done.value
            break
    assert len(pieces) > 1 and "".join(pieces) == result.text
    assert result.token_ids == pipe.generate(chat, max_new_tokens=NEW, seed=3, temperature=0.8).token_ids


def test_stream_raises_the_decodes_error(pipe: SlimPipeline) -> None:
    with pytest.raises(ConfigError, match="generation.temperature"):
        list(pipe.stream("Hello", temperature=-1.0))  # refused before any text: the reader does not wait
    with pytest.raises(ConfigError, match="brings its own streamer"):
        pipe.stream("Hello", streamer=Recorder())  # refused by the call itself, before any next()
    with pytest.raises(ConfigError, match=r"stream.bogus: got 1; not a keyword of generate\(\)"):
        pipe.stream("Hello", bogus=1)


def test_a_failing_decode_still_ends_the_streamer(pipe: SlimPipeline, monkeypatch) -> None:
    calls = []

    def fail(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("step failed")

    monkeypatch.setattr(pipe.forward, "decode_step", fail)
    streamer = Recorder()
    with pytest.raises(RuntimeError, match="step failed"):
        pipe.generate(random_prompt(20), max_new_tokens=5, streamer=streamer)
    assert calls and streamer.ended == 1 and len(streamer.tokens) == 1


def test_not_a_streamer_is_refused_before_the_prefill(pipe: SlimPipeline) -> None:
    with pytest.raises(ConfigError, match="streamer: got '<list>'"):
        pipe.generate(random_prompt(20), max_new_tokens=3, streamer=[])


def _checkpoint_config(tmp_path: Path) -> Path:
    ckpt = tmp_path / "tiny"
    tiny_model("llama").save_pretrained(ckpt)
    tiny_tokenizer().save_pretrained(ckpt)
    config = tmp_path / "tiny.yaml"
    config.write_text(f"model: {{source: {ckpt}, dtype: float32, device: cpu}}\n"
                      f"generation: {{max_new_tokens: {NEW}}}\n")
    return config


@pytest.mark.parametrize("fast", [[], ["--fast"]], ids=["eager", "static"])
def test_cli_run_streams_what_no_stream_prints(tmp_path: Path, capsys, fast: list[str]) -> None:
    from sliminfer.cli.main import main

    args = ["run", str(_checkpoint_config(tmp_path)), "--prompt", "Once upon a time", *fast]
    assert main([*args, "--no-stream"]) == 0
    printed = capsys.readouterr().out
    assert main(args) == 0
    streamed = capsys.readouterr().out
    answer = printed.split("\n[")[0]
    assert answer.strip() and streamed.split("\n[")[0] == answer
    assert "prompt tokens" in streamed


def test_cli_run_takes_a_chat_file(tmp_path: Path, capsys) -> None:
    import json

    from sliminfer.cli.main import main

    config = _checkpoint_config(tmp_path)
    chat = [{"role": "user", "content": "Once upon a time"}]
    (tmp_path / "chat.json").write_text(json.dumps(chat))
    assert main(["run", str(config), "--chat-file", str(tmp_path / "chat.json"), "--no-stream"]) == 0
    from_file = capsys.readouterr().out.split("\n[")[0]
    assert main(["run", str(config), "--prompt", "Once upon a time", "--no-stream"]) == 0  # text: one user turn
    assert capsys.readouterr().out.split("\n[")[0] == from_file


@pytest.mark.parametrize(("content", "says"), [
    ('[{"role": "user"}]', "--chat-file {path}: message 0 has no 'content'"),
    ('{"role": "user", "content": "hi"}', "its JSON is a dict, not a list"),
    ("[{", "not valid JSON"),
])
def test_cli_run_refuses_a_bad_chat_file_before_loading(tmp_path: Path, capsys, content: str, says: str) -> None:
    from sliminfer.cli.main import main

    path = tmp_path / "chat.json"
    path.write_text(content)
    assert main(["run", str(tmp_path / "no-such-config.yaml"), "--chat-file", str(path)]) == 2
    assert says.format(path=path) in capsys.readouterr().err
