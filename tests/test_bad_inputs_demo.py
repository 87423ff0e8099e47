"""``sliminfer demo``: bad arguments fail in one line before any weight loads, and the timing is honest.

Every bad-argument case runs ``main`` in-process with ``load_model`` replaced by a stand-in that records
the call and stops the command with a sentinel error: a refused case must not reach it, and the valid
boundary cases must (which proves the checks let them through, without paying for a model load).
A small real run checks that a prompt too short to prune says so instead of claiming a speedup, and
fake runners check the warm-up, the alternating order and the median without a model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from sliminfer.cli import demo_cmd
from sliminfer.cli.main import main
from sliminfer.core.errors import SlimInferError

REACHED_LOAD = "stand-in load_model reached"
#: the default model's max_position_embeddings, and so the longest prompt its 10 new tokens leave room for
POSITIONS = 8192
LONGEST = POSITIONS - demo_cmd.NEW_TOKENS + 1

OTHER_MODEL = "model: {source: smollm2-135m-instruct, dtype: bfloat16}\n"
LAYER_40 = ("pruning:\n  scorer: {name: attention_unit}\n"
            "  schedule: {name: fixed, layers: [40], budgets: [512]}\n")
MISSING_SOURCE = "model: {source: {tmp}/no-such-checkpoint}\n"


@dataclass(frozen=True)
class Case:
    argv: list[str]
    code: int
    stderr: list[str]
    loads: bool = False  # True: a valid value, so the checks pass and the command reaches load_model


CASES = {
    "tokens past the positions": Case(["--tokens", "9000"], 2, ["--tokens: got 9000", f"{POSITIONS} positions",
                                                               f"between {demo_cmd.MIN_TOKENS} and {LONGEST}"]),
    "tokens one past the longest": Case(["--tokens", str(LONGEST + 1)], 2, [f"--tokens: got {LONGEST + 1}"]),
    "tokens the longest": Case(["--tokens", str(LONGEST)], 2, [REACHED_LOAD], loads=True),
    "tokens below the minimum": Case(["--tokens", str(demo_cmd.MIN_TOKENS - 1)], 2,
                                     [f"--tokens: got {demo_cmd.MIN_TOKENS - 1}", f"at least {demo_cmd.MIN_TOKENS}"]),
    "tokens the minimum": Case(["--tokens", str(demo_cmd.MIN_TOKENS)], 2, [REACHED_LOAD], loads=True),
    "tokens negative": Case(["--tokens", "-5"], 2, ["--tokens: got -5"]),
    "tokens not an int": Case(["--tokens", "4.5"], 2, ["--tokens", "invalid int value: '4.5'"]),
    "depth above 1": Case(["--depth", "1.5"], 2, ["--depth: got 1.5", "[0, 1]"]),
    "depth below 0": Case(["--depth", "-0.1"], 2, ["--depth: got -0.1"]),
    "depth nan": Case(["--depth", "nan"], 2, ["--depth: got nan"]),
    "depth 1": Case(["--depth", "1"], 2, [REACHED_LOAD], loads=True),
    "depth not a number": Case(["--depth", "half"], 2, ["--depth", "invalid float value: 'half'"]),
    "repeats 0": Case(["--repeats", "0"], 2, ["--repeats: got 0", "at least 1"]),
    "repeats negative": Case(["--repeats", "-2"], 2, ["--repeats: got -2"]),
    "repeats 1": Case(["--repeats", "1"], 2, [REACHED_LOAD], loads=True),
    "seed negative": Case(["--seed", "-1"], 2, ["--seed: got -1", "0..2**64-1"]),
    "seed too large": Case(["--seed", str(2**64)], 2, [f"--seed: got {2**64}"]),
    "json a directory": Case(["--json", "{tmp}"], 2, ["--json: got", "is a directory"]),
    "json in a missing folder": Case(["--json", "{tmp}/none/out.json"], 2, ["--json: got", "does not exist"]),
    "json a new file": Case(["--json", "{tmp}/out.json"], 2, [REACHED_LOAD], loads=True),
    "unknown config": Case(["--config", "smollm2-13m"], 2, ["smollm2-13m"]),
    "baseline on another model": Case(["--baseline", "{tmp}/other.yaml"], 2,
                                      ["--baseline: got", "differs from that of --config"]),
    "schedule past the layers": Case(["--config", "{tmp}/layer40.yaml"], 2, ["pruning.schedule.layers: got 40"]),
    "checkpoint missing": Case(["--config", "{tmp}/missing.yaml", "--baseline", "{tmp}/missing.yaml"], 2,
                               ["model.source: got", "no-such-checkpoint"]),
}


@pytest.fixture
def loads(monkeypatch) -> list[object]:
    """Calls of the demo's ``load_model``, which stops the command right there with a sentinel error."""
    calls: list[object] = []

    def stand_in(section: object, *_: object) -> None:
        calls.append(section)
        raise SlimInferError(REACHED_LOAD)

    monkeypatch.setattr(demo_cmd, "load_model", stand_in)
    return calls


def _run_main(argv: list[str]) -> int:
    """``main``'s exit code; argparse's own refusals (a non-number) exit through SystemExit."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


@pytest.mark.real_weights  # the checks read the default model's config.json (no weights)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_demo_argument(case: Case, loads: list[object], tmp_path: Path, capsys) -> None:
    for name, text in {"other.yaml": OTHER_MODEL, "layer40.yaml": LAYER_40, "missing.yaml": MISSING_SOURCE}.items():
        (tmp_path / name).write_text(text.replace("{tmp}", str(tmp_path)))
    argv = ["demo", *(arg.replace("{tmp}", str(tmp_path)) for arg in case.argv)]
    assert _run_main(argv) == case.code
    err = capsys.readouterr().err
    for part in case.stderr:
        assert part in err
    assert "Traceback" not in err
    assert bool(loads) == case.loads, "the checks must refuse a bad argument before load_model"
    assert err.count("error:") == 1 and err.strip().splitlines()[-1].startswith("sliminfer demo: error: ")


@pytest.mark.real_weights
def test_min_tokens_fit_the_passkey_frame() -> None:
    """MIN_TOKENS holds the passkey sentence and the question with essay text around the passkey."""
    from transformers import AutoTokenizer

    from sliminfer.assets.default_model import default_model_dir

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir(progress=False))
    prompt = demo_cmd.passkey_prompt(tokenizer, demo_cmd.MIN_TOKENS, 0.5, "12345")
    assert len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) <= demo_cmd.MIN_TOKENS
    before, after = prompt.split("The pass key is 12345.")
    assert len(before) > 120 and len(after) > 80  # essay text on both sides of the needle


def fake_result(ttft: float, text: str = "12345.", kept: tuple[int, ...] = (300, 300)) -> SimpleNamespace:
    prefill = SimpleNamespace(prompt_tokens=kept[0], tokens_per_layer=list(kept), kv_bytes=1 << 20,
                              kv_saved_fraction=0.0)
    return SimpleNamespace(ttft_s=ttft, text=text, prefill=prefill)


def test_measure_warms_up_alternates_and_takes_the_median() -> None:
    calls: list[str] = []
    ttfts = {"a": iter([100.0, 5.0, 1.0, 2.0]), "b": iter([200.0, 2.0, 9.0, 4.0])}  # warm-up first

    def runner(name: str):
        def run() -> SimpleNamespace:
            calls.append(name)
            return fake_result(next(ttfts[name]))
        return run

    runs = demo_cmd.measure({"a": runner("a"), "b": runner("b")}, repeats=3)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert runs["a"].ttfts == [5.0, 1.0, 2.0] and runs["b"].ttfts == [2.0, 9.0, 4.0]  # warm-ups dropped
    assert runs["a"].median_ttft == 2.0 and runs["b"].median_ttft == 4.0


def test_run_order_reverses_every_other_round() -> None:
    assert demo_cmd.run_order(["a", "b"], 1) == ["a", "b"]
    assert demo_cmd.run_order(["a", "b"], 4) == ["a", "b", "b", "a", "a", "b", "b", "a"]


@pytest.mark.parametrize(("kept", "nothing"), [((300, 300, 300), True), ((300, 300, 128), False)])
def test_pruned_nothing_reads_the_kept_tokens(kept: tuple[int, ...], nothing: bool) -> None:
    assert demo_cmd.pruned_nothing(fake_result(1.0, kept=kept).prefill) is nothing


def test_speedup_cell_says_1x_only_for_the_same_work() -> None:
    runs = {"origin": demo_cmd.ModeRuns([fake_result(4.0)]), "sliminfer": demo_cmd.ModeRuns([fake_result(2.0)])}
    assert [row[4] for row in demo_cmd.table_rows(runs, "12345", same_work=True)] == ["1.00x", "~1x"]
    assert [row[4] for row in demo_cmd.table_rows(runs, "12345", same_work=False)] == ["1.00x", "2.00x"]


def test_correct_cell_counts_disagreeing_runs() -> None:
    mode = demo_cmd.ModeRuns([fake_result(1.0, "12345"), fake_result(1.0, "54321"), fake_result(1.0, "12345")])
    assert demo_cmd.correct_cell(mode, "12345") == "2 of 3"
    assert demo_cmd.correct_cell(mode, "99999") == "no"


@pytest.mark.real_weights
@pytest.mark.slow
def test_short_prompt_says_nothing_was_pruned(tmp_path: Path, capsys) -> None:
    report = tmp_path / "demo.json"
    assert main(["demo", "--tokens", "300", "--repeats", "1", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "sliminfer pruned nothing" in out and "budget" in out and "speedup is 1x up to noise" in out
    assert re.findall(r"\d+\.\d+x", out) == ["1.00x"]  # the baseline's own row; the pruned row says ~1x
    data = json.loads(report.read_text())
    assert data["pruned_nothing"] is True and data["run_order"] == ["origin", "sliminfer"]
    for mode in data["modes"].values():
        assert len(mode["ttft_s"]) == 1 and mode["median_ttft_s"] == mode["ttft_s"][0]
        assert set(mode["tokens_per_layer"]) == {mode["prompt_tokens"]} and len(mode["answers"]) == 1


def test_json_write_failure_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(SlimInferError, match=r"--json: got .*cannot be written"):
        demo_cmd.write_json(str(tmp_path / "gone" / "out.json"), {"x": 1})
