"""Bring the default model's GGUF (93.8 MiB) to a GPU machine whose calls carry at most 64 MiB each.

Why: the accuracy side of ``sliminfer compare`` needs the real SmolLM2 weights, and the GPU machine
reaches no package index. The GGUF travels in two halves over two calls on the same warm machine (the
first call keeps its half in the cache folder outside the working tree, because a carried folder does
not stay there for the next call: seen on 2026-12-07), and is joined there;
the joined file must have the sha256 that sliminfer pins (``GGUF_SHA256``), so a half from another
file, a truncated transfer or a missing half is an error, never a different model. The essays the
needle and passkey haystacks are cut from travel with the first half.

Here (after ``make test`` or ``make demo`` fetched the model into the cache):

    python benchmarks/gpu/stage_default_model.py split            # writes .stage1/ and .stage2/

There, with ``SLIMINFER_CACHE`` set to the cache folder the runs should use (the same in both calls):

    python3 benchmarks/gpu/stage_default_model.py keep            # call 1, carrying .stage2/
    python3 benchmarks/gpu/stage_default_model.py join            # call 2, carrying .stage1/

``.stage1/`` and ``.stage2/`` must be ignored by git (``.git/info/exclude``); nothing here is committed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sliminfer.assets.cache_dir import cache_subdir, sha256_file  # noqa: E402
from sliminfer.assets.default_model import GGUF_MEMBER, GGUF_SHA256  # noqa: E402

GGUF_NAME = Path(GGUF_MEMBER).name
STAGES = (ROOT / ".stage1", ROOT / ".stage2")
DATA_FILES = ("PaulGrahamEssays.json",)


def split() -> None:
    source = cache_subdir("downloads") / GGUF_NAME
    if not source.is_file() or sha256_file(source) != GGUF_SHA256:
        raise SystemExit(f"{source}: missing or not the pinned GGUF; run `make demo` (or `make test`) first")
    payload = source.read_bytes()
    half = len(payload) // 2
    for index, (stage, part) in enumerate(zip(STAGES, (payload[:half], payload[half:])), start=1):
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        (stage / f"{GGUF_NAME}.part{index}").write_bytes(part)
    data = STAGES[0] / "data"
    data.mkdir()
    for name in DATA_FILES:
        shutil.copy2(cache_subdir("data") / name, data / name)
    for stage in STAGES:
        size = sum(f.stat().st_size for f in stage.rglob("*") if f.is_file())
        print(f"{stage.name}: {size / 2**20:.1f} MiB")


def keep() -> None:
    """Copy the halves (and data) this call carried into the cache folder, where the next call finds them."""
    kept = []
    for stage in STAGES:
        for f in sorted(stage.rglob("*")):
            if f.is_file():
                target = cache_subdir("staging") / stage.name / f.relative_to(stage)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, target)
                kept.append(f"{stage.name}/{f.relative_to(stage)}")
    if not kept:
        raise SystemExit("nothing to keep: this call carried neither .stage1/ nor .stage2/")
    print(f"kept in {cache_subdir('staging')}: {', '.join(kept)}")


def _staged(stage: Path, relative: str) -> Path:
    """``relative`` under ``stage`` as this call carried it, else as an earlier call kept it."""
    carried = stage / relative
    return carried if carried.is_file() else cache_subdir("staging") / stage.name / relative


def join() -> None:
    parts = [_staged(stage, f"{GGUF_NAME}.part{index}") for index, stage in enumerate(STAGES, start=1)]
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise SystemExit(f"missing: {', '.join(missing)} (each half travels in its own call on one warm machine; "
                         "run `keep` in the first)")
    dest = cache_subdir("downloads") / GGUF_NAME
    tmp = dest.with_suffix(".joining")
    with tmp.open("wb") as out:
        for part in parts:
            out.write(part.read_bytes())
    got = sha256_file(tmp)
    if got != GGUF_SHA256:
        tmp.unlink()
        raise SystemExit(f"joined GGUF has sha256 {got}, expected {GGUF_SHA256}: the halves do not match")
    tmp.replace(dest)
    for name in DATA_FILES:
        shutil.copy2(_staged(STAGES[0], f"data/{name}"), cache_subdir("data") / name)
    print(f"{dest}: sha256 {got} (pinned); data: {', '.join(DATA_FILES)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("split", "keep", "join"))
    {"split": split, "keep": keep, "join": join}[parser.parse_args().action]()


if __name__ == "__main__":
    main()
