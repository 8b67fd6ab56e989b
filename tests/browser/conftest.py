"""Fixtures for the browser end-to-end tests (headless Chromium, JupyterLab 4, Notebook 7).

Skip rule: without /usr/bin/chromium (or the playwright package) the tests are skipped
with a message saying how to install it, unless ``CI=true``, where they fail.

Servers and the browser are session-scoped (a cold JupyterLab start costs seconds on
two cores) and are always stopped in the fixture teardown. Each test gets its own page,
its own folder under the server's root, and ``test-artifacts/browser/<test>/`` for
screenshots.
"""

from __future__ import annotations

import pytest
from browser_harness import Artifacts, BrowserSession, JupyterServer, chromium_or_skip, save_failure


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/browser/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so fixtures can tell a failure in teardown."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture(scope="session")
def chromium_executable():
    return chromium_or_skip()


@pytest.fixture(scope="session")
def browser(chromium_executable, tmp_path_factory):
    session = BrowserSession(tmp_path_factory.mktemp("chromium-profile"), executable=chromium_executable)
    try:
        yield session
    finally:
        session.close()


def _server(flavour, tmp_path_factory):
    server = JupyterServer(
        flavour=flavour,
        root_dir=tmp_path_factory.mktemp(f"{flavour}-root"),
        state_dir=tmp_path_factory.mktemp(f"{flavour}-state"),
    )
    server.start()
    return server


@pytest.fixture(scope="session")
def lab_server(chromium_executable, tmp_path_factory):
    server = _server("lab", tmp_path_factory)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def notebook_server(chromium_executable, tmp_path_factory):
    server = _server("notebook", tmp_path_factory)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["lab", "notebook"])
def jupyter(request):
    """The server of each flavour in turn: JupyterLab 4, then Notebook 7."""
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture
def artifacts(request):
    return Artifacts(request.node.name)


@pytest.fixture
def page(browser, request):
    """(page, watch): a fresh tab whose console errors, dialogs and requests are recorded.

    When the test fails, a screenshot of the page and its console are saved under
    ``test-artifacts/browser/<test>/failure.*``.
    """
    page, watch = browser.new_page()
    try:
        yield page, watch
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            save_failure(page, watch, request.node.name)
        page.close()


@pytest.fixture
def notebook_dir(jupyter, request):
    """A fresh folder under the server's root for this test's notebooks: (server, path, relative name)."""
    import re

    name = re.sub(r"[^A-Za-z0-9_-]+", "_", request.node.name)
    folder = jupyter.root_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    return jupyter, folder, name
