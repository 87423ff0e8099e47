"""What one ``generate`` call decodes with: the config's ``generation:`` section, a transformers
``GenerationConfig`` and the call's own keywords, merged into one :class:`DecodingOptions`.

Why one merge: the same knobs arrive three ways (YAML, a ``GenerationConfig`` or pipeline keywords, and
``generate(temperature=...)``), with two conventions (sliminfer's "temperature 0 is greedy" and
transformers' ``do_sample``). Precedence, lowest first: the config's section, then the fields the
``GenerationConfig`` sets (in transformers 5 an unset field is None), then the call's keywords. Unset
fields keep the section's values, not transformers' global defaults (``max_length=20``, ``top_k=50``):
the section is the one source of defaults, and the model's ``generation_config.json`` is not read
(except for its EOS ids, which :meth:`SlimPipeline.eos_ids` takes).

Every field a ``GenerationConfig`` can set is either honoured, has no effect on one unpadded prompt
decoded by one beam (``pad_token_id``, ``num_beams=1`` ...), or is refused with a ConfigError naming it:
beam search, assistants, watermarks and the rest are never silently dropped.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from sliminfer.core.config import (
    GenerationSection,
    config_error_from_validation,
    updated_section,
)
from sliminfer.core.errors import ConfigError

if TYPE_CHECKING:
    from transformers import GenerationConfig, LogitsProcessor

#: GenerationConfig fields that only shape the distribution a token is drawn from (transformers' warpers):
#: meaningful only when sampling
SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff")
#: GenerationConfig fields that become logits processors (sampling or not), built by
#: :func:`sliminfer.core.sampling.logits_processors`
PROCESSOR_FIELDS = ("repetition_penalty", "no_repeat_ngram_size", "bad_words_ids", "min_length", "min_new_tokens",
                    "suppress_tokens", "sequence_bias", "renormalize_logits")
#: GenerationConfig fields that go into the generation section itself
SECTION_FIELDS = ("max_new_tokens", "max_length", "do_sample", "stop_strings", "eos_token_id")
#: fields without effect here at the values shown (None: at any value): one prompt, no padding, one beam,
#: one sequence, the KV cache of the config's cache manager, no extra outputs
NO_EFFECT: Mapping[str, Any] = {
    "pad_token_id": None, "bos_token_id": None, "decoder_start_token_id": None, "transformers_version": None,
    "early_stopping": None, "length_penalty": None,  # beam search only, and there is one beam
    "num_beams": 1, "num_return_sequences": 1, "use_cache": True, "guidance_scale": 1.0,
    "remove_invalid_values": False, "output_attentions": False, "output_hidden_states": False,
    "output_scores": False, "output_logits": False, "return_dict_in_generate": False,
}


@dataclass(frozen=True)
class DecodingOptions:
    """The merged options of one generation.

    ``gen`` holds the length, the sampling mode (``temperature`` 0: greedy), top-k/top-p, the seed and the
    stop strings; ``processor_fields`` the other GenerationConfig fields that become logits processors or
    warpers (``repetition_penalty``, ``min_p`` ...); ``logits_processor`` the caller's own processors,
    applied after the built-in ones and before the warpers, as in transformers; ``eos`` the ids that end it.
    """

    gen: GenerationSection
    eos: frozenset[int]
    processor_fields: Mapping[str, Any] = field(default_factory=dict)
    logits_processor: Sequence[LogitsProcessor] = ()

    @property
    def sampling(self) -> bool:
        return self.gen.temperature > 0


def decoding_options(
    section: GenerationSection,
    overrides: Mapping[str, Any],
    eos: Collection[int],
    prompt_tokens: int,
    generation_config: GenerationConfig | None = None,
    logits_processor: Sequence[LogitsProcessor] | None = None,
) -> DecodingOptions:
    """Merge ``section`` < ``generation_config``'s set fields < ``overrides`` (the keywords of ``generate``,
    None meaning not given) into the options of one generation of a ``prompt_tokens``-token prompt."""
    fields: dict[str, Any] = {}
    configured = section
    if generation_config is not None:
        gen_fields, fields, config_eos = _from_generation_config(generation_config, section, prompt_tokens)
        section = _section_with(section, gen_fields)
        if config_eos is not None:
            eos = config_eos
    gen = updated_section(section, "generation", overrides)
    if not gen.temperature > 0:
        _refuse_idle_warpers(fields)
        _refuse_idle_sampling_knobs(configured, overrides)
    return DecodingOptions(gen, frozenset(eos), fields, checked_logits_processors(logits_processor))


def _refuse_idle_sampling_knobs(section: GenerationSection, overrides: Mapping[str, Any]) -> None:
    """top_k / top_p given for a greedy generation (by the call's keywords, or by a config section that is
    greedy itself) could not act: refused rather than silently dropped. A sampling section's top_k / top_p
    are its defaults for sampling calls; a call that asks for greedy (``temperature=0``, ``do_sample=False``)
    leaves them unused."""
    given = {k: overrides[k] for k in ("top_k", "top_p") if overrides.get(k) is not None}
    field = "generate"
    if not given and not section.temperature > 0:
        given = {k: getattr(section, k) for k in ("top_k", "top_p") if getattr(section, k) is not None}
        field = "generation"
    if given:
        name = next(iter(given))
        raise ConfigError(f"{field}.{name}", given[name],
                          f"{', '.join(given)} only act when sampling and this generation is greedy (temperature 0); "
                          "set temperature > 0 to sample, or leave them unset")


def checked_logits_processors(processors: Any) -> tuple[Any, ...]:
    """The caller's ``logits_processor``: None, or a list (tuple, ``LogitsProcessorList``) of callables
    ``(input_ids, scores) -> scores``; a bare callable or anything else is refused before the prefill, not
    at the first token."""
    if processors is None:
        return ()
    if isinstance(processors, (str, bytes)) or not isinstance(processors, Sequence):
        raise ConfigError("logits_processor", processors,
                          "must be a list of callables (input_ids, scores) -> scores, such as transformers "
                          "LogitsProcessors (a single one: wrap it in a list)")
    for processor in processors:
        if not callable(processor):
            raise ConfigError("logits_processor", processor,
                              "each item must be a callable (input_ids, scores) -> scores, such as a transformers "
                              "LogitsProcessor")
    return tuple(processors)


def _refuse_idle_warpers(given: Mapping[str, Any]) -> None:
    """A warper set for a greedy generation could not act: refused rather than silently dropped."""
    knobs = [name for name in SAMPLING_FIELDS if name in given]
    if knobs:
        raise ConfigError(f"generation_config.{knobs[0]}", given[knobs[0]],
                          f"{', '.join(knobs)} only act when sampling and this generation is greedy; set "
                          "do_sample=True (or temperature > 0) to sample, or leave them unset")


def _from_generation_config(
    config: GenerationConfig, section: GenerationSection, prompt_tokens: int
) -> tuple[dict[str, Any], dict[str, Any], frozenset[int] | None]:
    """(section fields, processor fields, EOS ids or None) from the fields ``config`` sets."""
    given = set_fields(config)
    check_supported(given)
    out: dict[str, Any] = {}
    if given.get("max_new_tokens") is not None:
        out["max_new_tokens"] = given["max_new_tokens"]
    elif "max_length" in given:  # a total length: what the prompt leaves of it
        out["max_new_tokens"] = given["max_length"] - prompt_tokens
        if out["max_new_tokens"] < 1:
            raise ConfigError("generation_config.max_length", given["max_length"],
                              f"a total length; it leaves no new token after the {prompt_tokens}-token prompt; "
                              "give max_new_tokens instead")
    sample = given.get("do_sample")
    sampling = section.temperature > 0 if sample is None else bool(sample)
    if not sampling:
        _refuse_idle_warpers(given)
        out["temperature"] = 0.0
    else:
        temperature = given.get("temperature", section.temperature if section.temperature > 0 else 1.0)
        if not temperature > 0:
            raise ConfigError("generation_config.temperature", temperature,
                              "must be > 0 when sampling (do_sample=True); for greedy decoding set do_sample=False")
        out["temperature"] = float(temperature)
        if "top_k" in given:
            out["top_k"] = given["top_k"] or None  # transformers: top_k=0 turns top-k off
        if "top_p" in given:
            out["top_p"] = float(given["top_p"])
    if "stop_strings" in given:
        stops = given["stop_strings"]
        out["stop"] = [stops] if isinstance(stops, str) else list(stops)
    # the section holds temperature, top-k and top-p; the rest become processors and warpers
    fields = {k: v for k, v in given.items() if k in PROCESSOR_FIELDS or k in SAMPLING_FIELDS[3:]}
    eos = given.get("eos_token_id")
    eos_ids = None if eos is None else frozenset([eos] if isinstance(eos, int) else eos)
    return out, fields, eos_ids


def set_fields(config: GenerationConfig) -> dict[str, Any]:
    """The fields ``config`` sets (not None), custom attributes included, without private ones."""
    from transformers import GenerationConfig

    if not isinstance(config, GenerationConfig):
        raise ConfigError("generation_config", f"<{type(config).__name__}>", "must be a transformers.GenerationConfig")
    return {k: v for k, v in config.to_dict().items() if v is not None and not k.startswith("_")}


def check_supported(given: Mapping[str, Any]) -> None:
    """Refuse every set field that sliminfer's decode would not honour, naming them all at once."""
    handled = {*SECTION_FIELDS, *SAMPLING_FIELDS, *PROCESSOR_FIELDS}
    refused = sorted(
        f"{k}={v!r}" for k, v in given.items()
        if k not in handled and not (k in NO_EFFECT and NO_EFFECT[k] in (None, v))
    )
    if refused:
        raise ConfigError(
            "generation_config", ", ".join(refused),
            "sliminfer decodes one sequence with one beam and honours only "
            f"{', '.join((*SECTION_FIELDS, *SAMPLING_FIELDS, *PROCESSOR_FIELDS))} (and "
            f"{', '.join(f'{k}={v}' for k, v in NO_EFFECT.items() if v is not None)}); unset the others",
        )


def _section_with(section: GenerationSection, updates: Mapping[str, Any]) -> GenerationSection:
    """``section`` with ``updates`` (None included: ``top_k=None`` turns top-k off), checked as YAML values."""
    try:
        return type(section).model_validate({**section.model_dump(), **updates})
    except ValidationError as exc:
        raise config_error_from_validation(exc, prefix="generation_config", model=type(section)) from None
