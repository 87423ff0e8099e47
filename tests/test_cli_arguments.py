"""The commands refuse bad flag values up front: exit 2, one ``sliminfer CMD: error: ...`` line naming the flag,
the value and what is allowed, and nothing loaded or measured before (the work functions fail the test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sliminfer.cli import bench_cmd, checks, demo_cmd
from sliminfer.cli.main import main
from sliminfer.compare import rows, run, speed
from sliminfer.core.errors import ConfigError, SlimInferError
from sliminfer.eval import runner

REACHED = "reached the work past the checks"


def _never(*_: object, **__: object) -> None:
    pytest.fail("work ran before the arguments were checked")


def _reached(*_: object, **__: object) -> None:
    raise SlimInferError(REACHED)


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Every command's first config load, model load or measurement fails the test if called."""
    for module, name in [(bench_cmd, "load_config"), (bench_cmd, "load_bench_pipeline"), (bench_cmd, "run_bench"),
                         (runner, "resolve_configs"), (runner, "build_pipelines"), (runner, "run_task"),
                         (rows, "load_rows"), (run, "run_compare"), (speed, "load_bench_pipeline"),
                         (demo_cmd, "read_model_config"), (demo_cmd, "load_model")]:
        monkeypatch.setattr(module, name, _never)
    return monkeypatch


def _one_error_line(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"sliminfer {command}: error: "), err
    return lines[0]


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "results.json"
    path.write_text("{}")
    return path


BAD = {
    # bench
    "bench repeats 0": (["bench", "--repeats", "0"], "--repeats: got 0; must be at least 1"),
    "bench repeats -1": (["bench", "--repeats", "-1"], "--repeats: got -1; must be at least 1"),
    "bench warmup -1": (["bench", "--warmup", "-1"], "--warmup: got -1; must be at least 0"),
    "bench prompt length 0": (["bench", "--prompt-lengths", "0"], "--prompt-lengths: got [0]; each must be at least 1"),
    "bench prompt lengths 0 among others": (["bench", "--prompt-lengths", "256,0"],
                                            "--prompt-lengths: got [256, 0]; each must be at least 1 (prompt tokens)"
                                            "; not 0"),
    "bench no prompt length": (["bench", "--prompt-lengths", ","], "--prompt-lengths: got []; give at least one"),
    "bench output length 1": (["bench", "--output-lengths", "1"], "--output-lengths: got [1]; each must be at least 2"),
    "bench output length 0 among others": (["bench", "--output-lengths", "0,8"],
                                           "--output-lengths: got [0, 8]; each must be at least 2"),
    "bench measuring nothing": (["bench", "--no-ttft"], "--no-ttft: got True; with no --output-lengths there is "
                                                       "nothing left to measure"),
    "bench out a file": (["bench", "--out", "{file}"], "--out: got '{file}'; an existing file, give a directory "
                                                       "(created if missing)"),
    "bench out under a file": (["bench", "--out", "{file}/sub"], "--out: got '{file}/sub'; '{file}' above it is an "
                                                                 "existing file"),
    # eval
    "eval samples 0": (["eval", "needle", "--samples", "0"], "--samples: got 0; must be at least 1"),
    "eval samples -2": (["eval", "needle", "--samples", "-2"], "--samples: got -2; must be at least 1"),
    "eval depth 1.5": (["eval", "needle", "--depths", "0.5", "1.5"],
                       "--depths: got [0.5, 1.5]; each must be a number in [0, 1]"),
    "eval depth nan": (["eval", "passkey", "--depths", "nan"], "--depths: got [nan]; each must be a number in [0, 1]"),
    "eval depth inf": (["eval", "needle", "--depths", "inf"], "--depths: got [inf]; each must be a number in [0, 1]"),
    "eval length 0": (["eval", "needle", "--lengths", "0"], "--lengths: got [0]; each must be at least 1"),
    "eval out a file": (["eval", "needle", "--out", "{file}"], "--out: got '{file}'; an existing file, give a "
                                                               "directory (created if missing)"),
    # compare
    "compare device mps": (["compare", "origin", "--device", "mps", "--shape", "tiny-llama", "--speed-only"],
                           "--device: got 'mps'; choose auto, cpu, cuda or cuda:N"),
    "compare device gpu": (["compare", "origin", "--device", "gpu0", "--accuracy-only"],
                           "--device: got 'gpu0'; choose auto, cpu, cuda or cuda:N"),
    "compare repeats 0": (["compare", "origin", "--device", "cpu", "--repeats", "0"],
                          "--repeats: got 0; must be at least 1"),
    "compare warmup -1": (["compare", "origin", "--device", "cpu", "--warmup", "-1"],
                          "--warmup: got -1; must be at least 0"),
    "compare samples 0": (["compare", "origin", "--device", "cpu", "--samples", "0"],
                          "--samples: got 0; must be at least 1"),
    "compare depth nan": (["compare", "origin", "--device", "cpu", "--depths", "nan"], "--depths: got [nan]"),
    "compare lengths 0": (["compare", "origin", "--device", "cpu", "--lengths", "0"], "--lengths: got [0]"),
    "compare accuracy length 0": (["compare", "origin", "--device", "cpu", "--accuracy-lengths", "0"],
                                  "--accuracy-lengths: got [0]"),
    "compare out a file": (["compare", "origin", "--device", "cpu", "--out", "{file}"],
                           "--out: got '{file}'; an existing file, give a directory (created if missing)"),
    # demo
    "demo repeats 0": (["demo", "--repeats", "0"], "--repeats: got 0; must be at least 1"),
    "demo depth nan": (["demo", "--depth", "nan"], "--depth: got nan; must be a number in [0, 1]"),
}


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_bad_value_is_refused_before_any_work(case: tuple[list[str], str], no_work: pytest.MonkeyPatch,
                                              a_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv, message = ([a.replace("{file}", str(a_file)) for a in case[0]], case[1].replace("{file}", str(a_file)))
    assert main(argv) == 2
    line = _one_error_line(capsys, argv[0])
    assert message in line, line


@pytest.mark.parametrize(("baseline", "section"), [
    ("smollm2-135m", "pruning"), ("smollm2-135m-gemfilter", "prompt_filter"),
    ("llama-3.1-8b-flexprefill-only", "attention"),
])
def test_demo_refuses_a_pruned_baseline(baseline: str, section: str, no_work: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--baseline", baseline]) == 2
    line = _one_error_line(capsys, "demo")
    assert line == (f"sliminfer demo: error: --baseline: got {baseline!r}; the baseline must run unpruned (no pruning "
                    f"section, no prompt_filter, no attention section), e.g. origin; it has {section}")


def test_demo_takes_an_unpruned_baseline(no_work: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """origin (and a YAML with only a model section) pass the baseline check and go on to the model checks."""
    no_work.setattr(demo_cmd, "read_model_config", _reached)
    assert main(["demo", "--baseline", "origin"]) == 2
    assert REACHED in _one_error_line(capsys, "demo")


GOOD = {  # valid edge values pass the checks and reach the work (stopped there by a stand-in)
    "bench output 0 alone": (["bench", "--output-lengths", "0", "--repeats", "1", "--warmup", "0", "--out", "{dir}"],
                             (bench_cmd, "load_config")),
    "bench output 2, new out dir": (["bench", "--output-lengths", "2", "--prompt-lengths", "1", "--out",
                                     "{dir}/new/sub"], (bench_cmd, "load_config")),
    "eval edge values": (["eval", "needle", "--samples", "1", "--depths", "0", "1", "--lengths", "1", "--out",
                          "{dir}"], (runner, "resolve_configs")),
    "compare device cpu": (["compare", "origin", "--device", "cpu", "--warmup", "0", "--repeats", "1", "--out",
                            "{dir}"], (rows, "load_rows")),
}


@pytest.mark.parametrize("case", GOOD.values(), ids=GOOD.keys())
def test_edge_values_pass_the_checks(case: tuple[list[str], tuple[object, str]], no_work: pytest.MonkeyPatch,
                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv, (module, name) = [a.replace("{dir}", str(tmp_path)) for a in case[0]], case[1]
    no_work.setattr(module, name, _reached)
    assert main(argv) == 2
    assert REACHED in _one_error_line(capsys, argv[0])


def test_bench_records_the_settings_it_was_given(no_work: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing is coerced on the way: the grid gets the repeats and warmup as given (0 warm-ups included)."""
    seen = {}
    no_work.setattr(bench_cmd, "load_config", lambda *a: None)
    no_work.setattr(bench_cmd, "load_bench_pipeline", lambda *a: (None, {"name": "x"}))

    def run_bench(pipe: object, info: object, settings: object) -> None:
        seen["settings"] = settings
        raise SlimInferError(REACHED)

    no_work.setattr(bench_cmd, "run_bench", run_bench)
    assert main(["bench", "--repeats", "1", "--warmup", "0", "--prompt-lengths", "1", "--out", str(tmp_path)]) == 2
    assert (seen["settings"].repeats, seen["settings"].warmup, seen["settings"].prompt_lengths) == (1, 0, [1])


def test_checkers_refuse_and_accept(tmp_path: Path) -> None:
    """The shared rules themselves, at their edges."""
    checks.positive_int("--n", 1)
    checks.non_negative_int("--n", 0)
    checks.fraction("--f", 0.0)
    checks.fractions("--f", [0.0, 1.0])
    checks.output_dir("--out", tmp_path)
    checks.output_dir("--out", tmp_path / "missing" / "deeper")
    checks.device("--device", "cpu")
    checks.device("--device", "auto")
    for call, message in [
        (lambda: checks.positive_int("--n", 0, "runs"), "--n: got 0; must be at least 1 (runs)"),
        (lambda: checks.non_negative_int("--n", -1), "--n: got -1; must be at least 0"),
        (lambda: checks.fraction("--f", float("inf")), "--f: got inf; must be a number in [0, 1]"),
        (lambda: checks.fractions("--f", [-0.1]), "--f: got [-0.1]; each must be a number in [0, 1]"),
        (lambda: checks.positive_ints("--l", []), "--l: got []; give at least one value"),
        (lambda: checks.device("--device", "cuda:x"), "--device: got 'cuda:x'; choose auto, cpu, cuda or cuda:N"),
        (lambda: checks.device("--device", "CPU"), "--device: got 'CPU'; choose auto, cpu, cuda or cuda:N"),
    ]:
        with pytest.raises(ConfigError) as refused:
            call()
        assert str(refused.value) == message


def test_device_without_cuda_names_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"--device: got 'cuda:0'; CUDA is not available on this machine"):
        checks.device("--device", "cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    checks.device("--device", "cuda:1")
    with pytest.raises(ConfigError, match=r"--device: got 'cuda:2'; this machine has 2 CUDA device\(s\)"):
        checks.device("--device", "cuda:2")
