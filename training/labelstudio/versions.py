"""The ML backend's model versions: ``<store>/versions/<version>/`` and a ``current`` pointer.

A store is a directory the backend owns::

    <store>/current             the serving version's name (one line, replaced atomically)
    <store>/versions/<version>/ a model directory written by ``python -m training train``
    <store>/jobs/<job>/         training jobs: logs, the candidate, its comparison (``jobs``)

Versions are never changed once added; promoting or restoring a version only rewrites
``current``, so the previous model stays on disk and can be served again.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from training.errors import ModelError
from training.files import write_atomically
from training.labelstudio.predictions import model_version

CURRENT_FILE = "current"
VERSIONS_DIR = "versions"
JOBS_DIR = "jobs"
VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def is_store(path: str | Path) -> bool:
    """Whether ``path`` is a version store (it has a ``versions`` directory)."""
    return (Path(path) / VERSIONS_DIR).is_dir()


class VersionStore:
    """The versions of a served model and which one is current."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / VERSIONS_DIR
        self.jobs_dir = self.root / JOBS_DIR

    def versions(self) -> list[str]:
        """Version names, oldest first (by the time they were added)."""
        if not self.versions_dir.is_dir():
            return []
        found = [p for p in self.versions_dir.iterdir() if p.is_dir() and VERSION_NAME.match(p.name)]
        return [p.name for p in sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name))]

    def path(self, version: str) -> Path:
        """The directory of ``version`` (an error naming the store when it has no such version)."""
        if not VERSION_NAME.match(version) or not (self.versions_dir / version).is_dir():
            known = ", ".join(self.versions()) or "none"
            raise ModelError(f"{self.root}: no model version {version!r} (versions: {known})")
        return self.versions_dir / version

    def current(self) -> str | None:
        """The serving version's name, or None for an empty store."""
        pointer = self.root / CURRENT_FILE
        if not pointer.is_file():
            return None
        name = pointer.read_text(encoding="utf-8").strip()
        self.path(name)  # a pointer to a missing version is an error, not a silent fallback
        return name

    def set_current(self, version: str) -> None:
        """Point ``current`` at ``version`` (atomically: readers see the old or the new name)."""
        self.path(version)
        write_atomically(
            self.root / CURRENT_FILE, lambda target: target.write_text(version + "\n", encoding="utf-8")
        )

    def add(self, model_dir: str | Path, version: str | None = None, move: bool = False) -> str:
        """Add a model directory as a version (``model_version`` names it by default); its name.

        A version already in the store is left as it is. ``move`` moves the directory in (a
        candidate a job trained); otherwise it is copied (hard links where the file system
        allows), so the caller's directory stays untouched.
        """
        model_dir = Path(model_dir)
        version = version or model_version(model_dir)
        if not VERSION_NAME.match(version):
            raise ModelError(f"{version!r} is not a usable version name (letters, digits, . _ -)")
        target = self.versions_dir / version
        if target.is_dir():
            return version
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        if move:
            os.replace(model_dir, target)
        else:
            write_atomically(target, lambda tmp: shutil.copytree(model_dir, tmp, copy_function=_link_or_copy))
        return version


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)
