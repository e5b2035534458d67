"""The package's shape: light imports where they matter, layers that only import downwards, no circle."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "training"

# What each part of the package may import (besides itself): the layers, bottom to top.
BASE = {"errors", "files", "schema"}
ALLOWED = {
    "errors": set(),
    "files": set(),
    "schema": set(),
    "config": {"errors"},
    "text": {"schema"},
    "data": BASE | {"text", "config"},
    "modeling": {"errors"},
    "inference": BASE | {"text", "config", "modeling"},
    "evaluation": BASE | {"text", "config", "data"},
    "labelstudio": BASE | {"text", "config", "data", "inference"},
    "train": BASE | {"text", "config", "data", "modeling", "inference", "evaluation", "labelstudio"},
    "audit": BASE | {"text", "config", "data", "modeling", "inference", "evaluation", "labelstudio", "train"},
}


def _modules_loaded_by(code: str) -> set[str]:
    """``sys.modules`` after running ``code`` in a fresh interpreter (SystemExit is caught)."""
    script = (
        "import json, sys\n"
        f"try:\n    exec({code!r})\nexcept SystemExit:\n    pass\n"
        "print('\\nMODULES ' + json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LABEL_STUDIO_API_KEY": "not-a-real-key"},
    )
    line = [x for x in result.stdout.splitlines() if x.startswith("MODULES ")]
    assert line, result.stdout + result.stderr
    return set(json.loads(line[-1].removeprefix("MODULES ")))


def _verb(*argv: str) -> str:
    """Run ``python -m training ARGV`` in this interpreter."""
    return (
        f"import runpy, sys; sys.argv = ['training', *{list(argv)!r}];"
        " runpy.run_module('training', run_name='__main__')"
    )


def test_from_training_import_tagger_loads_no_data_config_or_label_studio_code():
    loaded = _modules_loaded_by("from training import Tagger")
    assert "training.inference.tagger" in loaded
    for heavy in ("datasets", "label_studio_sdk", "pydantic", "training.config", "training.data"):
        assert heavy not in loaded, f"from training import Tagger imports {heavy}"


@pytest.mark.parametrize(
    "argv",
    [
        ("pull", "--help"),
        ("push", "tasks", "--help"),
        # The verbs themselves, up to an error raised before any network call.
        ("pull", "--project", "1", "--url", "http://127.0.0.1:9", "--since", "not-a-time"),
        ("push", "tasks", "missing.json", "--project", "1", "--url", "http://127.0.0.1:9"),
    ],
)
def test_label_studio_verbs_do_not_import_torch(argv):
    loaded = _modules_loaded_by(_verb(*argv))
    if "--help" not in argv:
        assert "training.labelstudio.client" in loaded  # the verb really ran
    assert "torch" not in loaded and "transformers" not in loaded


def test_agreement_verb_does_not_import_torch(tmp_path):
    loaded = _modules_loaded_by(_verb("agreement", str(tmp_path / "missing.json"), "--out", str(tmp_path)))
    assert "training.evaluation.agreement" in loaded  # the verb really ran
    assert "torch" not in loaded and "transformers" not in loaded


def _part(module: str) -> str:
    """``training.data.dataset`` -> ``data``; ``training.cli`` -> ``cli``; ``training`` -> ``training``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every ``training`` module ``path`` imports anywhere (module level, functions, TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("training")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("training"):
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in modules else node.module)
    return found


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: _imports(path, set(paths)) - {name} for name, path in paths.items()}


def test_lower_layers_never_import_higher_ones():
    wrong = []
    for module, imported in _graph().items():
        part = _part(module)
        if part not in ALLOWED:  # cli, __main__, the package itself: the top
            continue
        for target in imported:
            if _part(target) != part and _part(target) not in ALLOWED[part]:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_circle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                circle = path[path.index(target) :] + [target]
                pytest.fail("import circle: " + " -> ".join(circle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
