"""The browser harness itself, proven on a plain ipywidgets button (no finwidget code).

A click in the page must reach the kernel through the widget comm and come back: the
button's click handler (Python) changes the button's description, which the page shows.
"""

from browser_harness import NotebookDriver, output_text, write_notebook

BUTTON_CELLS = [
    (
        "import ipywidgets as widgets\n"
        "clicks = []\n"
        "button = widgets.Button(description='click me')\n"
        "button.add_class('fw-harness-button')\n"
        "def on_click(b):\n"
        "    clicks.append(1)\n"
        "    b.description = f'clicked {len(clicks)}'\n"
        "button.on_click(on_click)\n"
        "button"
    ),
]


def test_widget_click_round_trips_through_the_kernel(notebook_dir, page, artifacts):
    server, folder, name = notebook_dir
    page, watch = page
    write_notebook(folder / "button.ipynb", BUTTON_CELLS)

    driver = NotebookDriver(page, server)
    driver.open(f"{name}/button.ipynb")
    loaded = watch.snapshot()
    assert watch.unknown_load_problems(loaded) == [], watch.summary()
    artifacts.shot(page, "opened")
    driver.run_all()
    driver.wait_all_executed()
    button = page.locator(".fw-harness-button")
    button.wait_for(state="visible", timeout=60_000)
    assert button.inner_text().strip() == "click me"
    artifacts.shot(page, "drawn")

    button.click()
    page.wait_for_function(
        "() => document.querySelector('.fw-harness-button').innerText.trim() === 'clicked 1'",
        timeout=30_000,
    )
    artifacts.shot(page, "clicked")
    # The kernel saw the click too (not only the page).
    assert output_text(driver.append_and_run("print(len(clicks))")).strip() == "1"
    assert driver.cell_errors() == []
    assert watch.problems_since(loaded) == [], watch.summary()


def test_missing_chromium_skips_outside_ci_and_fails_in_ci(monkeypatch):
    import _pytest.outcomes
    import browser_harness
    import pytest

    monkeypatch.setattr(browser_harness, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="sudo apt-get install chromium"):
        browser_harness.chromium_or_skip()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(_pytest.outcomes.Failed, match="CI=true"):
        browser_harness.chromium_or_skip()
