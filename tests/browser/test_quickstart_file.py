"""The committed quick-start notebook: valid nbformat, outputs cleared, runs on the demo model.

(Running it is the end-to-end browser test's first step; this only checks the file.)
"""

import nbformat
from browser_harness import REPO_ROOT

QUICKSTART = REPO_ROOT / "examples" / "quickstart.ipynb"


def test_quickstart_is_valid_with_outputs_cleared():
    notebook = nbformat.read(QUICKSTART, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, "the quick start has no code"
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code), "outputs not cleared"
    assert notebook.metadata.kernelspec.name == "python3"
    source = "\n".join(cell.source for cell in code)
    # offline, on the shipped demo model, and the explorer is shown
    assert "load_demo_model()" in source
    assert "AttentionExplorer(model, tokenizer, text)" in source
