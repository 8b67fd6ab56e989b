"""The built wheel is a complete, installable finwidget.

Builds the wheel from this checkout, installs it into a fresh virtual environment
(dependencies are borrowed from the test environment through a path entry, so the
check is about the wheel's own contents, not about downloading torch again),
then imports finwidget from the wheel, loads the demo model and finds the
frontend bundle the widgets point at.
"""

import subprocess
import sys
import sysconfig
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    wheels = list(out.glob("finwidget-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_contains_bundle_and_demo_model(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in [
        "finwidget/static/widget.js",
        "finwidget/static/widget.css",
        "finwidget/demo/model/model.safetensors",
        "finwidget/demo/model/config.json",
        "finwidget/demo/model/tokenizer.json",
        "finwidget/demo/model/MODEL_CARD.md",
        "finwidget/demo/layouts_model/model.safetensors",
        "finwidget/demo/layouts_model/config.json",
        "finwidget/demo/layouts_model/tokenizer.json",
        "finwidget/demo/layouts_model/MODEL_CARD.md",
    ]:
        assert required in names, f"{required} missing from {wheel.name}"
    assert not any(n.startswith(("tests/", "js/", "node_modules/")) for n in names)


def test_wheel_installs_and_runs_in_a_fresh_environment(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site_packages = Path(subprocess.check_output(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    # Borrow the dependencies (torch, transformers, ...) without the editable finwidget:
    # a plain path entry does not run the test environment's .pth files.
    (site_packages / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "--quiet", str(wheel)], check=True)
    check = textwrap.dedent(f"""
        import pathlib, finwidget
        where = pathlib.Path(finwidget.__file__).resolve()
        assert where.is_relative_to(pathlib.Path({str(site_packages)!r}).resolve()), where
        model, tokenizer = finwidget.load_demo_model()
        prediction = finwidget.predict(model, tokenizer, "Net income: change +1,200 | 2022: 5,000 | 2021: 3,800")
        assert prediction.label in ("increase", "decrease")
        layouts_model, layouts_tokenizer = finwidget.load_demo_model(variant="layouts")
        table = "| Item | Change | 2022 | 2021 |\\n|---|---|---|---|\\n| Net income | +1,200 | 5,000 | 3,800 |"
        assert finwidget.predict(layouts_model, layouts_tokenizer, table).label in ("increase", "decrease")
        bundle = where.parent / "static" / "widget.js"
        assert bundle.is_file() and bundle.stat().st_size > 1000, bundle
        from finwidget.widgets import AttentionExplorer
        # anywidget turns a file path given as _esm into FileContents, which keeps the path.
        esm_path = pathlib.Path(AttentionExplorer._esm._path).resolve()
        assert esm_path == bundle.resolve(), (esm_path, bundle)
        print("OK", where)
    """)
    result = subprocess.run([str(python), "-c", check], capture_output=True, text=True, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("OK")
