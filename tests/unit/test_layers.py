"""Imports point down only: common <- rewards <- rollout, learner <- cluster (rollout and learner are peers)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYER = {"common": 0, "rewards": 1, "rollout": 2, "learner": 2, "cluster": 3}


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every module imported anywhere in the file (also inside functions and TYPE_CHECKING)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_module_imports_a_layer_above_or_beside_it() -> None:
    upward = []
    for package, level in LAYER.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in imported_packages(path):
                if name in LAYER and name != package and LAYER[name] >= level:
                    upward.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not upward, "\n".join(upward)


def test_the_walk_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from cluster.train import train\n    import learner.worker\n")
    assert imported_packages(source) == {"cluster", "learner"}
