"""The ``sliminfer-text-generation`` task of transformers' ``pipeline()``: registered by ``import sliminfer``
(lazily, once), and answering as transformers' ``text-generation`` answers (strings, chats, batches,
``return_full_text``), with sliminfer's config and generation keywords passed through."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import GenerationConfig, TextIteratorStreamer, pipeline

import sliminfer
from sliminfer import ConfigError, InputError, SlimPipeline
from sliminfer.hf.text_generation import TASK, SlimTextGenerationPipeline
from sliminfer.testing import tiny_model, tiny_tokenizer

NEW = 8
CHAT = [{"role": "user", "content": "Hello there"}]
PRUNED = {"pruning": {"scorer": {"name": "token_unit", "block_size": 16, "unit_size": 4, "window": 4},
                      "schedule": {"name": "fixed", "layers": [2], "budgets": [64]}}}
LONG = "Once upon a time there was a tiny model that read long prompts. " * 3


@pytest.fixture(scope="module")
def parts() -> tuple[torch.nn.Module, object]:
    return tiny_model("llama"), tiny_tokenizer()


@pytest.fixture(scope="module")
def task(parts):
    model, tokenizer = parts
    return pipeline(TASK, model=model, tokenizer=tokenizer, device="cpu")


@pytest.fixture(scope="module")
def slim(parts) -> SlimPipeline:
    return SlimPipeline(*parts)


def _new_ids(slim: SlimPipeline, prompt, **kwargs) -> list[int]:
    """What SlimPipeline.generate answers for the ids text-generation would feed (no chat template on text)."""
    ids = torch.tensor([slim.tokenizer(prompt)["input_ids"]]) if isinstance(prompt, str) else prompt
    return slim.generate(ids, **kwargs).token_ids


def test_import_registers_the_task_lazily_and_once() -> None:
    """``import sliminfer`` does not import transformers' pipelines, yet ``pipeline()`` finds the task, once."""
    code = (
        "import sys, warnings\n"
        "warnings.simplefilter('error')\n"
        "import sliminfer\n"
        "assert 'transformers.pipelines' not in sys.modules\n"
        "from transformers import pipeline\n"
        "from transformers.pipelines import PIPELINE_REGISTRY\n"
        "from sliminfer.hf.text_generation import SlimTextGenerationPipeline\n"
        f"assert PIPELINE_REGISTRY.supported_tasks[{TASK!r}]['impl'] is SlimTextGenerationPipeline\n"
        "from sliminfer.hf import registration\n"
        "registration.register_task(); registration.register_task()\n"
        "assert not any(isinstance(f, registration._RegisterAfterImport) for f in sys.meta_path)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
    already = "import transformers.pipelines, sliminfer\nfrom transformers.pipelines import PIPELINE_REGISTRY\n" \
              f"print({TASK!r} in PIPELINE_REGISTRY.get_supported_tasks())\n"
    done = subprocess.run([sys.executable, "-c", already], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.stdout.strip() == "True", done.stderr[-2000:]


def test_registering_again_registers_nothing(monkeypatch) -> None:
    from transformers.pipelines import PIPELINE_REGISTRY

    calls = []
    monkeypatch.setattr(PIPELINE_REGISTRY, "register_pipeline", lambda *a, **k: calls.append(a))
    sliminfer.hf.registration.register_task()
    assert PIPELINE_REGISTRY.supported_tasks[TASK]["impl"] is SlimTextGenerationPipeline
    assert calls == []
    monkeypatch.delitem(PIPELINE_REGISTRY.supported_tasks, TASK)
    sliminfer.hf.registration.register_task()  # gone: registered again
    assert len(calls) == 1


def test_a_string_gives_the_full_text(task, slim: SlimPipeline) -> None:
    out = task("Hello", max_new_tokens=NEW)
    answer = slim.tokenizer.decode(_new_ids(slim, "Hello", max_new_tokens=NEW), skip_special_tokens=True)
    assert out == [{"generated_text": "Hello" + answer}]
    assert task("Hello", max_new_tokens=NEW, return_full_text=False) == [{"generated_text": answer}]
    ids = slim.tokenizer("Hello")["input_ids"]
    tensors = task("Hello", max_new_tokens=NEW, return_tensors=True)
    assert tensors == [{"generated_token_ids": ids + _new_ids(slim, "Hello", max_new_tokens=NEW)}]


def test_the_output_has_text_generations_shape(parts) -> None:
    """Same structure as transformers' own text-generation pipeline (the texts differ: its defaults sample)."""
    model, tokenizer = parts
    stock = pipeline("text-generation", model=model, tokenizer=tokenizer, device="cpu")
    ours = pipeline(TASK, model=model, tokenizer=tokenizer, device="cpu")
    for prompt in ("Hello", CHAT, ["Hi", "Bye"], [CHAT, CHAT]):
        a = ours(prompt, max_new_tokens=NEW)
        b = stock(prompt, max_new_tokens=NEW, do_sample=False)
        assert a == b  # greedy on both sides: identical


def test_chat_appends_the_assistant_reply(task, slim: SlimPipeline) -> None:
    out = task(CHAT, max_new_tokens=NEW)
    reply = slim.tokenizer.decode(slim.generate(CHAT, max_new_tokens=NEW).token_ids, skip_special_tokens=True)
    assert out == [{"generated_text": [*CHAT, {"role": "assistant", "content": reply}]}]
    assert task(CHAT, max_new_tokens=NEW, return_full_text=False) == [{"generated_text": reply}]


def test_a_batch_gives_a_list_of_lists(task) -> None:
    prompts = ["Hello", "Good morning", "Bye"]
    out = task(prompts, max_new_tokens=NEW)
    assert out == [task(p, max_new_tokens=NEW) for p in prompts]
    chats = [CHAT, [{"role": "user", "content": "Another one"}]]
    assert task(chats, max_new_tokens=NEW) == [task(c, max_new_tokens=NEW) for c in chats]


def test_generation_keywords_pass_through(task, slim: SlimPipeline) -> None:
    settings = {"do_sample": True, "temperature": 0.8, "top_k": 20, "top_p": 0.9, "repetition_penalty": 1.3,
                "min_p": 0.02}
    out = task("Hello", max_new_tokens=NEW, seed=5, return_full_text=False, **settings)
    expected = _new_ids(slim, "Hello", seed=5, generation_config=GenerationConfig(max_new_tokens=NEW, **settings))
    assert out == [{"generated_text": slim.tokenizer.decode(expected, skip_special_tokens=True)}]
    config = GenerationConfig(max_new_tokens=3, no_repeat_ngram_size=2)
    via_config = task("Hello", generation_config=config, return_tensors=True)[0]["generated_token_ids"]
    assert via_config[-3:] == _new_ids(slim, "Hello", generation_config=config)
    assert config.max_new_tokens == 3  # a keyword on top copies the caller's config, never changes it
    task("Hello", generation_config=config, max_new_tokens=5)
    assert config.max_new_tokens == 3


def test_stop_sequence_ends_the_text_after_it_like_text_generation(task) -> None:
    """As in transformers, the stop string stays in the output (characters are tokens here: exact)."""
    prompt = "Once upon a time"
    answer = task(prompt, max_new_tokens=20, return_full_text=False)[0]["generated_text"]
    stop = answer[6:8]
    cut = answer[: answer.index(stop) + len(stop)]
    assert 6 < len(cut) < len(answer)
    assert task(prompt, max_new_tokens=20, return_full_text=False, stop_sequence=stop) == [{"generated_text": cut}]


def test_init_keywords_are_defaults_for_every_call(parts, slim: SlimPipeline) -> None:
    model, tokenizer = parts
    task = pipeline(TASK, model=model, tokenizer=tokenizer, device="cpu", max_new_tokens=4, return_full_text=False)
    assert len(tokenizer(task("Hello")[0]["generated_text"])["input_ids"]) <= 4
    assert task("Hello", max_new_tokens=6) == task("Hello", max_new_tokens=6, return_full_text=False)


def test_the_slim_config_is_used(parts) -> None:
    model, tokenizer = parts
    task = pipeline(TASK, model=model, tokenizer=tokenizer, device="cpu", slim_config=PRUNED)
    assert task.slim.config.pruning is not None
    pruned = SlimPipeline.from_pretrained(model, tokenizer, PRUNED)
    ids = torch.tensor([tokenizer(LONG)["input_ids"]])
    assert pruned.prefill(ids).tokens_per_layer[-1] < ids.shape[1]  # it prunes this prompt
    out = task(LONG, max_new_tokens=NEW, return_tensors=True)[0]["generated_token_ids"]
    assert out[ids.shape[1]:] == pruned.generate(ids, max_new_tokens=NEW).token_ids
    preset = pipeline(TASK, model=model, tokenizer=tokenizer, device="cpu", slim_config="origin")
    assert preset.slim.config.pruning is None


def test_a_model_path_loads_through_pipeline(tmp_path: Path, parts, slim: SlimPipeline) -> None:
    model, tokenizer = parts
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    task = pipeline(TASK, model=str(tmp_path), device="cpu", dtype=torch.float32)
    assert task("Hello", max_new_tokens=NEW) == [{"generated_text": "Hello" + slim.tokenizer.decode(
        _new_ids(slim, "Hello", max_new_tokens=NEW), skip_special_tokens=True)}]


def test_streaming_and_the_static_decode(task, slim: SlimPipeline) -> None:
    streamer = TextIteratorStreamer(slim.tokenizer, skip_prompt=True, skip_special_tokens=True)
    out = task("Hello", max_new_tokens=NEW, return_full_text=False, streamer=streamer)
    assert "".join(streamer) == out[0]["generated_text"]
    assert task("Hello", max_new_tokens=NEW, fast=True) == task("Hello", max_new_tokens=NEW)


@pytest.mark.parametrize(("call", "error", "says"), [
    (lambda t: t("Hi", num_beams=2), ConfigError, ("num_beams=2",)),
    (lambda t: t("Hi", frobnicate=1), ConfigError, ("frobnicate: got 1", "not a parameter")),
    (lambda t: t("Hi", prefix="A"), ConfigError, ("prefix: got 'A'", "prepend it")),
    (lambda t: t("Hi", continue_final_message=True), ConfigError, ("continue_final_message",)),
    (lambda t: t(["Hi", "Yo"], batch_size=2), ConfigError, ("batch_size: got 2", "one prompt per forward pass")),
    (lambda t: t("Hi", return_full_text=True, return_tensors=True), ConfigError, ("give one of",)),
    (lambda t: t([*CHAT, {"role": "assistant", "content": "Hi"}]), InputError, ("ends with an assistant",)),
    (lambda t: t([{"role": "user", "content": "a"}, {"role": "user"}]), InputError, ("message 1 has no 'content'",)),
    (lambda t: t([{"role": "user"}]), InputError, ("message 0 has no 'content'",)),
    (lambda t: t(""), InputError, ("empty text",)),
    (lambda t: t(3), InputError, ("got a int",)),
    (lambda t: t("Hi", fast=True, repetition_penalty=1.5), ConfigError, ("static", "repetition_penalty=1.5")),
    (lambda t: t([]), InputError, ("inputs: an empty list",)),
    (lambda t: t("Hi", max_new_tokens=0), ConfigError, ("max_new_tokens: got 0", "int >= 1")),
    (lambda t: t("Hi", max_new_tokens="3"), ConfigError, ("max_new_tokens: got '3'",)),
    (lambda t: t("Hi", return_full_text="no"), ConfigError, ("return_full_text: got 'no'", "True, False or None")),
], ids=["beams", "unknown", "prefix", "continue_final_message", "batch_size", "two return types",
        "assistant last", "malformed message", "malformed first message", "empty", "not text", "static penalty",
        "no inputs", "zero new tokens", "new tokens as text", "flag as text"])
def test_what_the_task_cannot_honour_is_refused(task, call, error, says) -> None:
    with pytest.raises(error) as err:
        call(task)
    for text in says:
        assert text in str(err.value)


def test_construction_errors(parts) -> None:
    model, tokenizer = parts
    with pytest.raises(ConfigError, match="batch_size: got 4"):
        pipeline(TASK, model=model, tokenizer=tokenizer, device="cpu", batch_size=4)
    with pytest.raises(ConfigError, match="tokenizer"):
        SlimTextGenerationPipeline(model=model, tokenizer=None, device="cpu")
    with pytest.raises(ConfigError, match="num_return_sequences=3"):
        pipeline(TASK, model=model, tokenizer=tokenizer, device="cpu", do_sample=True, num_return_sequences=3)
