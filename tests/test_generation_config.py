"""transformers' ``GenerationConfig`` and ``logits_processor`` in ``SlimPipeline.generate``: the eager
decode applies transformers' own processors and warpers, so on an unpruned tiny model its tokens equal
stock ``model.generate`` with the same settings, greedy and sampled (same seed: both draw with
``torch.multinomial`` from a CPU generator seeded alike); what it cannot honour is refused by name."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from sliminfer import ConfigError, SlimPipeline
from sliminfer.core.decoding import decoding_options
from sliminfer.core.sampling import logits_processors
from sliminfer.testing import random_prompt, tiny_model

PROMPT = 40
NEW = 14


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model("llama")


@pytest.fixture(scope="module")
def pipe(model) -> SlimPipeline:
    return SlimPipeline(model)


def _stock(model, ids: torch.Tensor, seed: int = 0, **settings) -> list[int]:
    torch.manual_seed(seed)
    return model.generate(ids, max_new_tokens=NEW, min_new_tokens=NEW, **settings)[0, ids.shape[1]:].tolist()


SETTINGS = {
    "repetition_penalty": {"repetition_penalty": 1.8},
    "no_repeat_ngram": {"no_repeat_ngram_size": 2},
    "suppress": {"suppress_tokens": [20, 125, 147]},
    "bad_words": {"bad_words_ids": [[170], [156, 20]]},
    "sampled": {"do_sample": True, "temperature": 0.8, "top_k": 0},
    "sampled_top_k_top_p": {"do_sample": True, "temperature": 1.3, "top_k": 30, "top_p": 0.8},
    "sampled_min_p": {"do_sample": True, "top_k": 0, "min_p": 0.05},
    "sampled_min_p_penalty": {"do_sample": True, "temperature": 0.7, "top_k": 0, "min_p": 0.1,
                              "repetition_penalty": 1.3},
    "sampled_typical": {"do_sample": True, "top_k": 0, "typical_p": 0.9},
    "sampled_epsilon_eta": {"do_sample": True, "top_k": 0, "epsilon_cutoff": 3e-3, "eta_cutoff": 3e-3},
    "renormalized": {"do_sample": True, "top_k": 10, "renormalize_logits": True},
}


@pytest.mark.parametrize("name", SETTINGS)
def test_tokens_equal_stock_generate(model, pipe: SlimPipeline, name: str) -> None:
    settings = SETTINGS[name]
    ids = random_prompt(PROMPT, seed=3)
    for seed in (0, 1):
        stock = _stock(model, ids, seed, **settings)
        ours = pipe.generate(ids, seed=seed, generation_config=GenerationConfig(max_new_tokens=NEW, **settings))
        assert ours.token_ids == stock, f"{name}, seed {seed}"


def test_greedy_with_a_penalty_differs_from_plain_greedy(pipe: SlimPipeline) -> None:
    """The processors act (the settings above are not no-ops on this model)."""
    ids = random_prompt(PROMPT, seed=3)
    plain = pipe.generate(ids, max_new_tokens=NEW).token_ids
    penalised = pipe.generate(ids, generation_config=GenerationConfig(max_new_tokens=NEW, repetition_penalty=1.8))
    assert plain != penalised.token_ids


def test_plain_greedy_is_unchanged(model, pipe: SlimPipeline) -> None:
    ids = random_prompt(PROMPT, seed=3)
    assert pipe.generate(ids, max_new_tokens=NEW).token_ids == _stock(model, ids, do_sample=False)
    config = GenerationConfig(max_new_tokens=NEW, do_sample=False)
    assert pipe.generate(ids, generation_config=config).token_ids == _stock(model, ids, do_sample=False)


class _Ban(LogitsProcessor):
    """Bans one token id: a caller's own processor."""

    def __init__(self, token: int) -> None:
        self.token = token

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores.index_fill(-1, torch.tensor([self.token]), float("-inf"))


def test_a_callers_logits_processor_equals_stock(model, pipe: SlimPipeline) -> None:
    ids = random_prompt(PROMPT, seed=3)
    banned = pipe.generate(ids, max_new_tokens=NEW).token_ids[0]
    processors = LogitsProcessorList([_Ban(banned)])
    ours = pipe.generate(ids, max_new_tokens=NEW, logits_processor=processors).token_ids
    assert banned not in ours
    assert ours == _stock(model, ids, logits_processor=processors)


def test_processed_scores_are_stock_ones(model) -> None:
    """The same processor objects as GenerationMixin builds, in its order (compared by their output)."""
    ids = random_prompt(PROMPT, seed=3)
    config = GenerationConfig(do_sample=True, temperature=0.7, top_k=40, top_p=0.9, min_p=0.02,
                              repetition_penalty=1.3, no_repeat_ngram_size=3)
    options = decoding_options(SlimPipeline(model).config.generation, {}, (), PROMPT, config)
    ours = logits_processors(options, PROMPT, torch.device("cpu"))
    stock = model._get_logits_processor(config, input_ids_seq_length=PROMPT)
    assert [type(p) for p in ours] == [type(p) for p in stock]
    scores = torch.randn(1, 256, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ours(ids, scores.clone()), stock(ids, scores.clone()))


def test_precedence_section_then_generation_config_then_keywords(pipe: SlimPipeline) -> None:
    section = pipe.config.generation.model_copy(update={"max_new_tokens": 5, "temperature": 0.5, "top_k": 7})
    config = GenerationConfig(max_new_tokens=9, top_p=0.8)
    merged = decoding_options(section, {"top_p": 0.6}, (), PROMPT, config).gen
    assert (merged.max_new_tokens, merged.temperature, merged.top_k, merged.top_p) == (9, 0.5, 7, 0.6)
    greedy = decoding_options(section, {}, (), PROMPT, GenerationConfig(do_sample=False)).gen
    assert greedy.temperature == 0.0  # do_sample=False wins over the section's temperature
    assert decoding_options(section, {}, (), PROMPT, GenerationConfig(max_length=50)).gen.max_new_tokens == 10
    assert decoding_options(section, {}, (), PROMPT, GenerationConfig(do_sample=True, top_k=0)).gen.top_k is None


def test_eos_of_the_generation_config_ends_the_text(pipe: SlimPipeline) -> None:
    ids = random_prompt(PROMPT, seed=3)
    tokens = pipe.generate(ids, max_new_tokens=NEW).token_ids
    out = pipe.generate(ids, generation_config=GenerationConfig(max_new_tokens=NEW, eos_token_id=tokens[3]))
    assert out.token_ids == tokens[: tokens.index(tokens[3]) + 1] and out.stopped_by == "eos"


@pytest.mark.parametrize(("config", "keywords", "says"), [
    ({"num_beams": 3}, {}, ("generation_config: got 'num_beams=3'", "one beam")),
    ({"do_sample": True, "num_return_sequences": 2, "max_time": 5.0}, {}, ("max_time=5.0", "num_return_sequences=2")),
    ({"watermarking_config": {"greenlist_ratio": 0.25}}, {}, ("watermarking_config",)),
    ({"my_field": 3}, {}, ("my_field=3",)),
    ({"temperature": 0.7}, {}, ("generation_config.temperature: got 0.7", "only act when sampling")),
    ({"do_sample": False, "min_p": 0.1}, {}, ("generation_config.min_p", "do_sample=True")),
    ({"do_sample": True, "min_p": 0.1}, {"temperature": 0.0}, ("generation_config.min_p",)),
    ({"do_sample": True, "temperature": 0.0}, {}, ("must be > 0 when sampling",)),
    ({"max_length": 30}, {}, ("generation_config.max_length: got 30", "40-token prompt")),
    ({"top_p": 1.5, "do_sample": True}, {}, ("generation_config.top_p",)),
], ids=["beams", "several", "watermark", "custom field", "temperature while greedy", "min_p while greedy",
        "min_p with temperature=0", "zero temperature", "max_length under the prompt", "top_p out of range"])
def test_unsupported_or_contradictory_settings_are_refused(pipe: SlimPipeline, config, keywords, says) -> None:
    with pytest.raises(ConfigError) as err:
        pipe.generate(random_prompt(PROMPT), generation_config=GenerationConfig(**config), **keywords)
    for text in says:
        assert text in str(err.value)


def test_no_effect_fields_are_accepted(model, pipe: SlimPipeline) -> None:
    ids = random_prompt(PROMPT, seed=3)
    config = GenerationConfig(max_new_tokens=NEW, num_beams=1, num_return_sequences=1, use_cache=True,
                              pad_token_id=2, bos_token_id=0, repetition_penalty=1.0)
    assert pipe.generate(ids, generation_config=config).token_ids == _stock(model, ids)


@pytest.mark.parametrize(("kwargs", "names"), [
    ({"generation_config": GenerationConfig(repetition_penalty=1.2)}, ("repetition_penalty=1.2",)),
    ({"logits_processor": LogitsProcessorList([_Ban(3)])}, ("logits_processor=",)),
    ({"generation_config": GenerationConfig(do_sample=True)}, ("temperature=1.0",)),
])
def test_the_static_decode_refuses_processors_by_name(pipe: SlimPipeline, kwargs, names) -> None:
    with pytest.raises(ConfigError) as err:
        pipe.generate(random_prompt(PROMPT), max_new_tokens=4, fast=True, **kwargs)
    assert "decode.mode: got 'static'" in str(err.value)
    for name in names:
        assert name in str(err.value)


def test_the_static_decode_takes_processors_that_do_nothing(pipe: SlimPipeline) -> None:
    ids = random_prompt(PROMPT, seed=3)
    config = GenerationConfig(max_new_tokens=NEW, repetition_penalty=1.0, no_repeat_ngram_size=0)
    fast = pipe.generate(ids, fast=True, generation_config=config).token_ids
    assert fast == pipe.generate(ids, max_new_tokens=NEW).token_ids


def test_a_generation_config_must_be_one(pipe: SlimPipeline) -> None:
    with pytest.raises(ConfigError, match="must be a transformers.GenerationConfig"):
        pipe.generate(random_prompt(PROMPT), generation_config={"max_new_tokens": 3})
