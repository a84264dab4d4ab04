"""Files: what olmo-exp ships (``conf/``, ``sweeps/``, ``README.md``), writes whole, and hashes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _shipped(name: str) -> Path:
    """``name`` in the source tree (a checkout or an editable install), else the copy an installed
    wheel carries inside the package (pyproject.toml maps ``conf/`` and ``sweeps/`` there)."""
    package = Path(__file__).resolve().parents[1]  # olmo_exp/ (this file is olmo_exp/base/files.py)
    source = package.parent / name
    return source if source.exists() else package / name


CONF_DIR = _shipped("conf")
SWEEPS_DIR = _shipped("sweeps")
"""Named sweep presets: the ``sweep`` group, ``-m +sweep=NAME``."""


def readme_text() -> str:
    """The README: the file in a source tree, else the installed package's long description."""
    readme = CONF_DIR.parent / "README.md"
    if readme.is_file():
        return readme.read_text()
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        return str(metadata("olmo-exp").get_payload())  # type: ignore[attr-defined]
    except PackageNotFoundError:
        return ""


@contextlib.contextmanager
def atomic_path(path: Path, *, fsync: bool = False) -> Iterator[Path]:
    """A temporary sibling to write instead of ``path``, renamed onto it when the block completes:
    a kill at any moment leaves the old content or the new, never a torn file. The temporary name
    keeps the suffix (matplotlib picks the format from it)."""
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: str | bytes, *, fsync: bool = False) -> None:
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data) if isinstance(data, bytes) else tmp.write_text(data)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2), fsync=True)


def remove_created_dir(path: Path) -> None:
    """Remove a directory this process created (a rejected run's, an unstarted sweep's) and the
    then-empty parents up to the working directory; never a non-empty parent, nothing above."""
    shutil.rmtree(path, ignore_errors=True)
    cwd = Path.cwd().resolve()
    parent = path.resolve().parent
    while parent != cwd and cwd in parent.parents:
        try:
            parent.rmdir()  # only ever removes an empty directory
        except OSError:
            return
        parent = parent.parent


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The whole records of a JSON-lines file ([] if there is none): a torn last line (a kill
    mid-write, or a writer still at it) is left out."""
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except ValueError:
            break  # only the last line can be torn; nothing after it was ever written
    return records


def write_jsonl_atomic(path: Path, records: list[dict[str, Any]]) -> None:
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def truncate_to_step(path: Path, step: int) -> list[dict[str, Any]]:
    """Keep the records up to ``step`` (the checkpoint training restarts from), drop the rest.

    A run killed after step N and resumed from checkpoint C < N trains C+1..N again; without this
    those steps would be recorded twice. Returns the records kept.
    """
    kept = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
    if path.exists() and len(path.read_text().splitlines()) != len(kept):  # dropped or torn
        write_jsonl_atomic(path, kept)
    return kept


@contextlib.contextmanager
def file_lock(lock_file: Path, timeout: float = 300.0) -> Iterator[None]:
    """An exclusive lock across processes and machines, on ``lock_file`` (created, left in place).

    filelock opens the file for writing, as NFS needs (it emulates flock with POSIX locks, which
    refuse a descriptor opened read-only: EBADF); where the filesystem has no flock at all (Lustre
    mounted without it: ENOSYS) filelock falls back to a lock held by the file's existence. Waits
    at most ``timeout`` seconds, then raises filelock.Timeout (a soft lock a killed process left).
    """
    from filelock import FileLock

    with FileLock(str(lock_file), timeout=timeout):
        yield


def attempt_dirs(run_dir: Path) -> list[Path]:
    """``.hydra/attempt-N/`` of the attempts after the first (whose config is ``.hydra/``'s), by N."""
    found = [p for p in (run_dir / ".hydra").glob("attempt-*") if p.name[8:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[8:]))


def latest_attempt_config(run_dir: Path) -> Path | None:
    """The config of the run dir's latest attempt (written as the attempt starts, after its
    checks), None if it has none."""
    for path in [*(d / "config.yaml" for d in reversed(attempt_dirs(run_dir))),
                 run_dir / ".hydra" / "config.yaml"]:
        if path.exists():
            return path
    return None
