"""``sliminfer compare``: one table of speed (tiny random shape) and accuracy (SmolLM2), the bootstrap,
the Pareto front, and bad inputs refused before any model work."""

from __future__ import annotations

import importlib.util
import json
import math
import random
import sys
from pathlib import Path

import pytest

from sliminfer.cli.main import main
from sliminfer.compare.report import pareto_front, pareto_plot
from sliminfer.core.errors import ConfigError
from sliminfer.eval.bootstrap import bootstrap_mean

# fits the tiny shape (4 layers) and SmolLM2 (30 layers): pruning after layers 1 and 2
PRUNED = """\
pruning:
  scorer: {name: attention_unit, block_size: 16, unit_size: 8, window: 4}
  schedule: {name: fixed, layers: [1, 2], budgets: [96, 64]}
"""
# names layer 31: neither the tiny shape nor SmolLM2 has it
DEEP = """\
pruning:
  scorer: {name: token_unit, block_size: 16, unit_size: 8, window: 4}
  schedule: {name: fixed, layers: [31], budgets: [64]}
"""
TINY = ["--device", "cpu", "--shape", "tiny-llama", "--lengths", "128,192", "--new-tokens", "3", "--stock",
        "stock_no_cudnn", "--repeats", "1", "--warmup", "0", "--no-progress"]
ACCURACY = ["--samples", "2", "--accuracy-lengths", "160", "--depths", "0.5"]


@pytest.mark.real_weights
def test_compare_writes_one_table_with_every_row_and_column(tmp_path, capsys):
    (tmp_path / "pruned.yaml").write_text(PRUNED)
    (tmp_path / "deep.yaml").write_text(DEEP)
    out = tmp_path / "out"
    code = main(["compare", "origin", str(tmp_path / "pruned.yaml"), str(tmp_path / "deep.yaml"), *TINY, *ACCURACY,
                 "--out", str(out)])
    assert code == 0
    md = (out / "compare.md").read_text()
    for head in ("TTFT 128 s", "x unpruned 128", "x best stock 128", "e2e 128+3 s", "e2e x unpruned 128",
                 "e2e x best stock 128", "KV 128 GiB", "TTFT 192 s", "KV 192 GiB", "needle_single % (n=2)",
                 "passkey % (n=2)", "mean % (tasks)", "kept % (acc.)"):
        assert head in md, head
    assert "e2e 192" not in md  # end to end at the shortest length only, by default
    table = [[c.strip() for c in line.strip().strip("|").split("|")]
             for line in md.splitlines() if line.startswith("| ")]
    assert [cells[0] for cells in table] == ["config", "origin", "pruned", "deep"]
    assert len(table[0]) == 16 and all(len(cells) == 16 for cells in table)  # every row has every column
    origin, pruned, deep = table[1:]
    assert origin[2] == "1.00x" and origin[5] == "1.00x" and origin[-1] == "100.0"  # its own baseline, unpruned
    assert pruned[4].endswith("(static)") and float(pruned[7]) < float(origin[7]) and float(pruned[-1]) < 100
    assert deep[1] == "n/a [1]" and deep[12] == "n/a [2]" and {*deep[2:12], *deep[13:]} == {"n/a"}
    assert "layer index in 0..3" in md and "layer index in 0..29" in md  # why, for each side
    record = json.loads((out / "compare.json").read_text())
    assert record["schema"] == "sliminfer-compare/1"
    assert [r["name"] for r in record["rows"]] == ["origin", "pruned", "deep"]
    assert record["speed"]["model"]["label"] == "random weights, speed only"
    assert record["summary"]["unpruned"] == "origin"
    scored = record["summary"]["rows"]["pruned"]["accuracy"]
    for task in ("needle_single", "passkey"):
        estimate = scored["tasks"][task]["estimate"]
        assert estimate["n"] == 2 and estimate["low"] <= estimate["mean"] <= estimate["high"]
    assert (out / "accuracy" / "passkey.jsonl").is_file() and (out / "accuracy" / "passkey.md").is_file()
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "compare_pareto.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "| origin |" in printed and "wrote " in printed.splitlines()[-1]


def test_bootstrap_of_all_ones_is_one_and_seeded():
    ones = bootstrap_mean([[1.0] * 50])
    assert (ones.mean, ones.low, ones.high, ones.n) == (1.0, 1.0, 1.0, 50)
    scores = [float(i % 3 == 0) for i in range(90)]
    assert bootstrap_mean([scores], seed=7) == bootstrap_mean([scores], seed=7)
    assert bootstrap_mean([scores], seed=7) != bootstrap_mean([scores], seed=8)


def test_bootstrap_is_the_percentile_interval_of_the_resampled_means():
    scores = [float(i % 2) for i in range(100)]
    estimate = bootstrap_mean([scores], resamples=1000, seed=3)
    rng = random.Random(3)  # the same draws, by hand: means sorted, 2.5 % and 97.5 % points interpolated
    means = sorted(sum(rng.choices(scores, k=100)) / 100 for _ in range(1000))

    def at(q: float) -> float:
        h = 999 * q
        return means[math.floor(h)] + (h - math.floor(h)) * (means[math.floor(h) + 1] - means[math.floor(h)])

    assert estimate.mean == 0.5
    assert estimate.low == pytest.approx(at(0.025)) and estimate.high == pytest.approx(at(0.975))
    assert 0.38 < estimate.low < 0.45 and 0.55 < estimate.high < 0.62  # about 0.5 +- 1.96 * 0.05


def test_bootstrap_of_several_tasks_weights_tasks_equally_and_refuses_empty_groups():
    assert bootstrap_mean([[1.0, 1.0, 1.0, 1.0], [0.0]]).mean == 0.5
    with pytest.raises(ConfigError, match="at least one value"):
        bootstrap_mean([[1.0], []])
    with pytest.raises(ConfigError, match="resamples"):
        bootstrap_mean([[1.0]], resamples=0)


def test_pareto_front_keeps_the_configs_nothing_beats():
    points = [(1.0, 50.0), (2.0, 60.0), (3.0, 55.0), (0.5, 40.0), (1.0, 45.0)]
    assert pareto_front(points) == [3, 0, 1]


def test_pareto_plot_without_matplotlib_says_so(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    record = {"speed": {"settings": {}}, "accuracy": {"tasks": {}}, "summary": {"rows": {}}}
    with pytest.warns(UserWarning, match="matplotlib is not installed"):
        assert pareto_plot(record, tmp_path / "p.png") is None
    assert not (tmp_path / "p.png").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["compare", "no-such-preset"], "unknown preset 'no-such-preset'"),
    (["compare", "origin", "--samples", "0"], "--samples: got 0; must be at least 1"),
    (["compare", "origin", "--lengths", "128", "--e2e-lengths", "256"], "--e2e-lengths: got [256]"),
    (["compare", "origin", "--shape", "tiny-llama", "--lengths", "4096", "--new-tokens", "8"],
     "does not fit the tiny-llama shape"),
    (["compare", "origin", "--accuracy-only", "--tasks", "needle", "--depths", "1.5"], "--depths: got [1.5]"),
    (["compare", "origin", "--new-tokens", "1"], "--new-tokens: got 1"),
    (["compare", "origin", "decode.nosuch=1"], "decode.nosuch"),  # overrides apply to every row, checked first
])
def test_bad_inputs_fail_before_any_model_work(argv, message, capsys, tmp_path):
    assert main([*argv, "--device", "cpu", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "compare.md").exists()


def test_gpu_script_refuses_a_run_over_its_budget(monkeypatch, capsys):
    """benchmarks/gpu/compare_gpu.py: the tasks that fit are chosen, a run that cannot fit is refused."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu" / "compare_gpu.py"
    spec = importlib.util.spec_from_file_location("compare_gpu", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(sys, "argv", ["compare_gpu.py", "--dry-run", "--rows", "origin", "llama-3.1-8b"])
    assert script.main() == 0
    assert "tasks: needle passkey, 100 samples" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["compare_gpu.py", "--dry-run", "--rows", *[f"r{i}" for i in range(12)]])
    assert script.main() == 2
    assert "over the budget of 8 min" in capsys.readouterr().out


def test_best_stock_ttft_falls_back_to_the_end_to_end_runs():
    """A run that timed only ``stock_static`` (the H100 comparison of 2026-12-07) still has a stock TTFT
    baseline: the one-token generate its end-to-end run measured; a timed stock prefill wins when present."""
    from sliminfer.compare.table import best_stock_ttft

    record = json.loads((Path(__file__).parents[1] / "eval/results/compare-gpu/compare.json").read_text())
    point = {p["prompt_tokens"]: p for p in record["speed"]["stock"]}[32768]
    name, measured = best_stock_ttft(point)
    assert name == "stock_static" and measured["median_s"] == point["e2e"][0]["stock_static"]["ttft_s"]
    timed = {**point, "ttft": {"stock": {"status": "ok", "median_s": 1.25}, "best_stock": "stock"}}
    assert best_stock_ttft(timed) == ("stock", {"status": "ok", "median_s": 1.25})
    assert best_stock_ttft({"ttft": {}, "e2e": []}) == (None, None)
    assert best_stock_ttft(None) == (None, None)
