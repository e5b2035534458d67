"""Outputs that are never half-written, and digests of files."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path


def write_atomically(path: Path, write) -> None:
    """Run ``write(tmp_path)`` then move the result into ``path``: never a half-written output."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        target = tmp / path.name
        write(target)
        move_into_place(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def move_into_place(source: Path, destination: Path) -> None:
    """Replace ``destination`` (a file or a directory) by ``source`` on the same file system.

    The old one is renamed aside first and removed only once the new one is in place.
    """
    source, destination = Path(source), Path(destination)
    backup = None
    if destination.exists():
        backup = destination.with_name(f".{destination.name}.old-{os.getpid()}")
        if backup.exists():
            _remove(backup)
        os.replace(destination, backup)
    os.replace(source, destination)
    if backup is not None:
        _remove(backup)


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def apply_umask(paths: Iterable[str | Path]) -> None:
    """Give files the permissions a plain ``open`` would (some writers create them 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in paths:
        os.chmod(path, 0o666 & ~umask)


def sha256_of_files(paths: Iterable[str | Path]) -> str:
    """Hex sha256 of the files' bytes, read in order in 4 MiB blocks."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()
