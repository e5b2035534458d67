"""How every benchmark ends: save its figures, name each missed target, exit 1 if any."""

from __future__ import annotations

import json
from pathlib import Path


def finish(results: dict, failures: list[str], json_path: str | None) -> int:
    """Write ``results`` (with ``failures``) to ``json_path`` if given; the exit status."""
    results["failures"] = failures
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=1) + "\n")
    for failure in failures:
        print("FAILED:", failure)
    return 1 if failures else 0
