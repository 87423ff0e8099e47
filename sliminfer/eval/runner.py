"""Runs a task for several configs on the same samples, resumably, one model load for all.

Why this shape: comparisons are only fair on identical prompts, so samples are built once (fixed
seeds) and every config answers each of them before the next sample starts; an interrupted run
therefore leaves comparable partial results. Each finished (config, sample) pair is appended to
``<out>/<task>.jsonl`` at once and skipped by the next run. A record is keyed by config name, a
digest of the config's content (editing a YAML re-runs it), a digest of the task's settings (answer
length, stop strings) and the sample id (which digests the prompt, so a changed generator never
reuses stale answers).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from sliminfer.core.config import SlimConfig
from sliminfer.core.errors import ConfigError
from sliminfer.core.pipeline import SlimPipeline, load_config
from sliminfer.eval.base import Record, Task


#: what the config gained since result files were first written, newest first: each generation's added
#: fields (a path into ``model_dump()``) with the value that means "as before they existed". A record
#: carries the digest of its config as the schema was then; a config whose newer fields all sit at these
#: values still matches it (:func:`config_digests`), so its recorded samples are reused, not run again.
#: A field added to the config goes into a new first entry here, with its default.
ADDED_FIELDS: tuple[dict[tuple[str, ...], Any], ...] = (
    {("prefill",): {"compile": False}},  # 2026-12-07, fourth session
    {("decode", "autotune"): False},  # 2026-12-07
    {  # between 2026-11-23 (eval/results/*.jsonl) and 2026-12-07 (eval/results/sparse/)
        ("attention",): None,
        ("prompt_filter",): None,
        ("decode",): {"mode": "eager", "kernel": "auto", "graph": None, "compile": None, "fuse": None},
    },
)


def _digest(content: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(content, sort_keys=True).encode()).hexdigest()[:10]


def config_digests(config: SlimConfig) -> tuple[str, ...]:
    """Ten hex digits of the config's content, then of the same config as each older schema saw it (newest
    first, see :data:`ADDED_FIELDS`) while the fields added since sit at their "as before" values: the
    first is what new records carry, any of them identifies the config in a result file."""
    content = config.model_dump()
    digests = [_digest(content)]
    for added in ADDED_FIELDS:
        for path, before in added.items():
            *parents, leaf = path
            holder: Any = content
            for key in parents:
                holder = holder.get(key) if isinstance(holder, dict) else None
            if not isinstance(holder, dict) or leaf not in holder or holder[leaf] != before:
                return tuple(digests)
            del holder[leaf]
        digests.append(_digest(content))
    return tuple(digests)


@dataclass(frozen=True)
class EvalConfig:
    """A named config; ``digest`` identifies its content in new records, ``digests`` in any record
    (:func:`config_digests`)."""

    name: str
    config: SlimConfig

    @cached_property
    def digests(self) -> tuple[str, ...]:  # worked out once: run_task asks for it per written record
        return config_digests(self.config)

    @property
    def digest(self) -> str:
        return self.digests[0]

    def describe(self) -> str:
        pruning = self.config.pruning
        return "unpruned" if pruning is None else json.dumps(pruning.model_dump(), separators=(", ", ": "))


def named_configs(sources: Sequence[str | Path | Mapping[str, Any]], field: str = "--configs",
                  overrides: Sequence[str] = ()) -> list[EvalConfig]:
    """Load preset names, YAML paths or dicts (each with ``overrides``), named for tables and result
    files: a YAML file by its stem, a preset by itself, a dict ``config<i>``. Names must be unique."""
    configs: list[EvalConfig] = []
    for i, source in enumerate(sources):
        if isinstance(source, Mapping):
            name = f"config{i}"
        else:  # a YAML file is named by its stem, a preset by itself ("llama-3.1-8b" has no suffix)
            name = Path(source).stem if Path(source).is_file() else str(source)
        if any(c.name == name for c in configs):
            raise ConfigError(field, str(source), f"gives the name {name!r} twice; rename one file")
        configs.append(EvalConfig(name, load_config(source, overrides)))
    if not configs:
        raise ConfigError(field, [], "give at least one config (preset name or YAML path)")
    return configs


def resolve_configs(sources: Sequence[str | Path | Mapping[str, Any]]) -> list[EvalConfig]:
    """:func:`named_configs`, which must also share the model section.

    One shared model section is what lets the runner load the weights once for every config.
    """
    configs = named_configs(sources)
    first = configs[0]
    for other in configs[1:]:
        if other.config.model != first.config.model:
            raise ConfigError(
                f"{other.name}.model", other.config.model.model_dump(),
                f"differs from {first.name}'s model section {first.config.model.model_dump()}; configs compared "
                "in one eval must share the model (it is loaded once)",
            )
    return configs


def build_pipelines(configs: Sequence[EvalConfig], model: Any = None, tokenizer: Any = None) -> list[SlimPipeline]:
    """One pipeline per config around one shared model (loaded from the first config if not given)."""
    if model is None:
        from sliminfer.core.loading import load_model

        model, tokenizer = load_model(configs[0].config.model)
    return [SlimPipeline(model, tokenizer, c.config) for c in configs]


def read_records(path: Path) -> list[Record]:
    """Records of a results file; a torn last line (a run killed mid-write) is ignored."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def run_task(task: Task, configs: Sequence[EvalConfig], pipes: Sequence[SlimPipeline], out_dir: Path,
             progress: bool = True, evaluate: bool = True) -> list[Record]:
    """Evaluate every (sample, config) pair not already in ``out_dir/<task>.jsonl``.

    Returns the records of this run's samples and configs (old and new), with the fields the task
    derives from the reference (first) config's record of the same sample. With ``evaluate=False``
    nothing is evaluated: the records already there for these samples and configs are returned (a
    report over runs that covered different parts of the grid).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{task.name}.jsonl"
    records = read_records(path)
    if path.is_file() and path.read_bytes()[-1:] not in (b"", b"\n"):
        with path.open("a", encoding="utf-8") as fh:  # end a torn line so appends stay parseable
            fh.write("\n")
    current = [r for r in records if r.get("task_digest") == task.digest]
    wanted = {(c.name, d) for c in configs for d in c.digests}
    done = {(r["config"], r["sample_id"]) for r in current if (r["config"], r["config_digest"]) in wanted}
    samples = task.samples(pipes[0])
    todo = [(s, c, p) for s in samples for c, p in zip(configs, pipes) if evaluate and (c.name, s.id) not in done]
    with path.open("a", encoding="utf-8") as fh, tqdm(total=len(todo), desc=task.name, disable=not progress) as bar:
        for sample, config, pipe in todo:
            bar.set_postfix_str(f"{config.name} {sample.key}", refresh=False)
            record = {"config": config.name, "config_digest": config.digest, "task_digest": task.digest,
                      "sample_id": sample.id, "key": sample.key, **sample.meta, "answers": list(sample.answers),
                      **task.evaluate(pipe, sample)}
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            current.append(record)
            bar.update()
    ids = {s.id for s in samples}
    latest = {(r["config"], r["sample_id"]): r for r in current
              if (r["config"], r["config_digest"]) in wanted and r["sample_id"] in ids}
    reference = configs[0].name
    for (name, sample_id), record in latest.items():
        ref = latest.get((reference, sample_id))
        if ref is not None:
            record.update(task.compare(record, ref))
    return list(latest.values())
