"""The package's public surface: every exported name resolves, imports stay layered."""

import subprocess
import sys

import finwidget


def test_every_exported_name_resolves():
    for name in finwidget.__all__:
        assert getattr(finwidget, name) is not None, name


def test_unknown_name_is_an_attribute_error():
    try:
        finwidget.NoSuchAnalyzer  # noqa: B018 - a name finwidget does not have
    except AttributeError as err:
        assert "NoSuchAnalyzer" in str(err)
    else:
        raise AssertionError("expected AttributeError")


def test_analysis_layer_never_imports_the_widget_layer():
    code = (
        "import sys, finwidget.capture, finwidget.statement, finwidget.analysis, finwidget.interventions, "
        "finwidget.interpretability_tools, finwidget.task, finwidget.loading, finwidget.population\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('finwidget.widgets', 'anywidget', 'ipywidgets')))\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_import_is_light():
    code = "import sys, finwidget; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
