"""The README's Python quick start runs as written, on the demo model."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL)


def test_quick_start_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the quick start writes explorer.html
    blocks = _python_blocks(README.read_text())
    quick_start = next(b for b in blocks if "load_demo_model" in b)
    namespace: dict = {}
    exec(compile(quick_start, "README quick start", "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["analyzer"].prediction is not None


def test_circuit_example_runs():
    blocks = _python_blocks(README.read_text())
    example = next(b for b in blocks if "find_circuit" in b)
    namespace: dict = {}
    exec(compile(example, "README circuit example", "exec"), namespace)  # noqa: S102 - our own README
    graph = namespace["graph"]
    assert {"L0H1", "L1H0", "L1H3"} <= {node.id for node in graph.heads}
    assert '"method": "attribution"' in namespace["graph_json"]
