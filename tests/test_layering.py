"""Dependencies point one way: every import inside finwidget goes down the stack.

Each module of the package belongs to one layer (``LAYERS``, bottom first). A module may
import modules of its own layer group or of a lower rank; anything else is an upward
(or sideways) import and fails this test with the module, the line and the two layers.
Imports are read with ``ast`` from the source, so imports inside functions, methods and
``if TYPE_CHECKING:`` blocks count as much as the ones at the top of a file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# (rank, group, module prefixes): bottom first. Groups of equal rank may not import each other.
LAYERS = [
    (0, "errors", ["finwidget.errors"]),
    (1, "model_parts", ["finwidget.model_parts"]),
    (1, "strict json", ["finwidget.strict_json"]),
    (1, "lazy names", ["finwidget.lazy_names"]),
    (2, "task", ["finwidget.task"]),
    (2, "loading", ["finwidget.loading"]),
    (3, "capture", ["finwidget.capture"]),
    (3, "statement", ["finwidget.statement"]),
    (3, "demo", ["finwidget.demo"]),
    # interventions as values (no model): below the rest of the interventions package
    (4, "intervention values", ["finwidget.interventions.modes", "finwidget.interventions.spec"]),
    (5, "analysis", ["finwidget.analysis"]),
    (5, "interventions", ["finwidget.interventions"]),
    (6, "population", ["finwidget.population"]),
    (6, "counterfactuals", ["finwidget.counterfactuals"]),  # edited statements run through the model
    (6, "circuits", ["finwidget.circuits"]),
    (7, "widgets", ["finwidget.widgets"]),
    # the layouts demo model's head findings: measured with capture and interventions
    (7, "demo findings", ["finwidget.demo.layout_heads"]),
    (8, "guide", ["finwidget.interpretability_tools", "finwidget.comparative"]),
    (8, "cli", ["finwidget.cli"]),
    (9, "package root", ["finwidget"]),
]

# Known crossings being removed elsewhere: (importing module, imported module) -> why.
# A listed crossing that no longer occurs fails the test, so the list cannot go stale.
KNOWN_CROSSINGS: dict[tuple[str, str], str] = {}  # (importer, imported) -> why it is allowed for now


def layer_of(module: str) -> tuple[int, str]:
    """``(rank, group)`` of a finwidget module: the longest matching prefix in LAYERS."""
    best = None
    for rank, group, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), rank, group)
    if best is None:
        raise AssertionError(f"{module} has no layer: add it to LAYERS in {Path(__file__).name}")
    return best[1], best[2]


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(path, root): path for path in sorted((root / "finwidget").rglob("*.py"))}


def imported_modules(path: Path, known: set[str], root: Path = ROOT) -> list[tuple[int, str]]:
    """``(line, module)`` for every finwidget module ``path`` imports, anywhere in the file."""
    this = module_name(path, root)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                # ``from finwidget.analysis import figures`` imports the submodule itself
                found.append((node.lineno, submodule if submodule in known else target))
    return [(line, name) for line, name in found if name == "finwidget" or name.startswith("finwidget.")]


def crossings(root: Path = ROOT) -> list[tuple[str, str, str]]:
    """``(importer, imported, message)`` for every import that does not go down the stack."""
    known = set(modules(root))
    bad = []
    for name, path in modules(root).items():
        rank, group = layer_of(name)
        for line, target in imported_modules(path, known, root):
            target_rank, target_group = layer_of(target)
            if target_group == group or target_rank < rank:
                continue
            message = (f"{path.relative_to(root)}:{line}: {name} ({group}, rank {rank}) imports "
                       f"{target} ({target_group}, rank {target_rank})")
            bad.append((name, target, message))
    return bad


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)


def test_no_import_points_up_or_sideways():
    unexpected = [message for importer, imported, message in crossings()
                  if not any(importer == a and (imported == b or imported.startswith(b + "."))
                             for a, b in KNOWN_CROSSINGS)]
    assert not unexpected, "imports against the layering:\n" + "\n".join(unexpected)


def test_known_crossings_still_exist():
    found = {(importer, imported) for importer, imported, _ in crossings()}
    stale = [pair for pair in KNOWN_CROSSINGS
             if not any(i == pair[0] and (t == pair[1] or t.startswith(pair[1] + ".")) for i, t in found)]
    assert not stale, f"remove these from KNOWN_CROSSINGS, they no longer occur: {stale}"


@pytest.mark.parametrize("source, words", [
    ("from finwidget.widgets.views import heatmap_view\n",
     "finwidget/analysis/upward.py:1: finwidget.analysis.upward (analysis, rank 5) imports finwidget.widgets.views"),
    ("def f():\n    from ..interventions import applying\n",
     ("finwidget/analysis/upward.py:2: finwidget.analysis.upward (analysis, rank 5) imports "
      "finwidget.interventions.applying (interventions, rank 5)")),
    ("import finwidget.model_parts\nfrom finwidget.analysis import source\n", None),
])
def test_the_check_names_an_upward_import(tmp_path, source, words):
    """The check itself, on a small tree: an upward or sideways import (even inside a
    function, even relative) is named with its file and line; downward ones pass."""
    for name in ("__init__", "model_parts", "analysis/__init__", "analysis/source", "widgets/__init__",
                 "widgets/views", "interventions/__init__", "interventions/applying"):
        (tmp_path / "finwidget" / f"{name}.py").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "finwidget" / f"{name}.py").touch()
    (tmp_path / "finwidget" / "analysis" / "upward.py").write_text(source)
    messages = [message for _, _, message in crossings(tmp_path)]
    assert len(messages) == (0 if words is None else 1), messages
    if words is not None:
        assert messages[0].startswith(words)
