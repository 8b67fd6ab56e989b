"""Headless Chromium + Jupyter servers for the browser end-to-end tests.

Everything here listens on 127.0.0.1, runs with fresh JUPYTER_* directories (so the
user's own Jupyter settings never leak in) and is stopped by whoever started it.

- :class:`JupyterServer` starts ``jupyter lab`` or ``jupyter notebook`` (Notebook 7)
  from this virtual environment, waits for ``/api/status`` and shuts it down with
  ``POST /api/shutdown`` (then terminate/kill if it lingers).
- :class:`BrowserSession` wraps a Playwright persistent Chromium context.
- :class:`PageWatch` records console errors, page errors, dialogs and non-local
  requests of one page, so tests can assert "nothing ran, nothing failed, no network".
- :class:`NotebookDriver` drives one open notebook (Lab or Notebook 7) through the
  application object the page exposes (``window.jupyterapp``): wait for the kernel,
  Run All, run extra code, read cell outputs.
- :class:`Artifacts` numbers and saves screenshots under ``test-artifacts/browser/``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS_ROOT = REPO_ROOT / "test-artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"

# Flags known to work for root, headless, no GPU, on these machines (see
# ../shared/notes/browser-and-widgets.md). No network features that phone home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

# Console lines Chromium or Jupyter print that say nothing about the page under test.
_HARMLESS_CONSOLE = (
    re.compile(r"favicon\.ico"),
    re.compile(r"DevTools"),
)


# Errors the Jupyter front end itself raises while opening a plain notebook with no
# widget in it, on a fresh profile (seen with Notebook 7.6.5: its keyboard-shortcut
# settings handler reads the schema of a plugin the registry does not hold). They
# happen before any cell runs; tests check that nothing new appears after that point.
KNOWN_HOST_LOAD_ERRORS = (
    re.compile(r"^page error: Cannot read properties of undefined \(reading 'schema'\)$"),
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def chromium_or_skip():
    """Return the Chromium path, or skip (outside CI) / fail (CI=true) when it is missing."""
    import pytest

    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} is missing (install it with: sudo apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the Python package playwright is missing (pip install -e '.[test]')")
    if missing:
        message = "browser tests need: " + "; ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and " + message, pytrace=False)
        pytest.skip(message)
    return CHROMIUM


# --------------------------------------------------------------------------------------
# Jupyter servers
# --------------------------------------------------------------------------------------


@dataclass
class JupyterServer:
    """A JupyterLab 4 (``flavour="lab"``) or Notebook 7 (``flavour="notebook"``) server.

    ``root_dir`` is where notebooks are served from; ``state_dir`` holds the fresh
    JUPYTER_* / IPYTHONDIR directories and the server log.
    """

    flavour: str
    root_dir: Path
    state_dir: Path
    port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    process: subprocess.Popen | None = None
    startup_seconds: float = 0.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.state_dir / f"jupyter-{self.flavour}.log"

    def notebook_url(self, relative_path: str) -> str:
        """The page that opens ``relative_path`` (relative to ``root_dir``) in this server's UI."""
        if self.flavour == "lab":
            return f"{self.base_url}/lab/tree/{relative_path}?reset&token={self.token}"
        return f"{self.base_url}/notebooks/{relative_path}?token={self.token}"

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        dirs = {
            "JUPYTER_CONFIG_DIR": "config",
            "JUPYTER_DATA_DIR": "data",
            "JUPYTER_RUNTIME_DIR": "runtime",
            "JUPYTERLAB_SETTINGS_DIR": "lab-settings",
            "JUPYTERLAB_WORKSPACES_DIR": "lab-workspaces",
            "IPYTHONDIR": "ipython",
        }
        for variable, name in dirs.items():
            path = self.state_dir / name
            path.mkdir(parents=True, exist_ok=True)
            env[variable] = str(path)
        # The kernel spec runs "python": make that this virtual environment's python.
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        # Kernels import finwidget from this working tree, installed or not.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        env.pop("JUPYTER_PATH", None)
        env["PYTHONUNBUFFERED"] = "1"
        # No announcement pop-up ("get notified about news?") covering the page.
        labconfig = self.state_dir / "config" / "labconfig"
        labconfig.mkdir(parents=True, exist_ok=True)
        (labconfig / "page_config.json").write_text(
            json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
        )
        return env

    def start(self, timeout: float = 90.0) -> JupyterServer:
        self.root_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        jupyter = str(Path(sys.executable).parent / "jupyter")
        app = "LabApp" if self.flavour == "lab" else "JupyterNotebookApp"
        command = [
            jupyter,
            "lab" if self.flavour == "lab" else "notebook",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            "--ServerApp.allow_root=True",
            f"--ServerApp.root_dir={self.root_dir}",
            "--ServerApp.disable_check_xsrf=False",
            f"--{app}.expose_app_in_browser=True",
        ]
        if self.flavour == "lab":
            command.append("--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate")
        started = time.monotonic()
        with open(self.log_path, "wb") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                command,
                cwd=self.root_dir,
                env=self._environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"{self.base_url}/api/status?token={self.token}"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"jupyter {self.flavour} exited with {self.process.returncode}; log:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.25)
        raise TimeoutError(f"jupyter {self.flavour} not ready after {timeout:.0f} s; log:\n{self.log_tail()}")

    def log_tail(self, characters: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-characters:]
        except OSError:
            return "(no log)"

    def api(self, method: str, path: str, body: dict | None = None, timeout: float = 10.0):
        """Call the server's REST API; returns the decoded JSON (or None for an empty body)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.base_url}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def stop(self) -> None:
        """Shut the server (and its kernels) down; always leaves no process behind."""
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                self.api("POST", "/api/shutdown", timeout=5)
            except (urllib.error.URLError, OSError) as err:  # then terminate / kill below
                print(f"jupyter {self.flavour}: POST /api/shutdown failed ({err}); terminating it")
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGTERM)
                try:
                    self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._signal_group(signal.SIGKILL)
                    self.process.wait(timeout=5)
        # Kernels run in the server's process group: make sure none outlives it.
        self._signal_group(signal.SIGKILL)
        self.process = None

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


# --------------------------------------------------------------------------------------
# Browser
# --------------------------------------------------------------------------------------


class PageWatch:
    """Collects what a page reports: console errors, uncaught errors, dialogs, requests.

    Dialogs (``alert``/``confirm``/``prompt``) are recorded and dismissed, so a payload
    that manages to run ``alert(1)`` is seen by the test instead of blocking the page.
    """

    def __init__(self, page, local_hosts=("127.0.0.1", "localhost")):
        self.page = page
        self.console_errors: list[str] = []
        self.console_lines: list[str] = []
        self.page_errors: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        self.failed_requests: list[str] = []
        self.local_hosts = local_hosts
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("dialog", self._on_dialog)
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("requestfailed", lambda request: self.failed_requests.append(request.url))

    def _on_console(self, message) -> None:
        text = f"{message.type}: {message.text}"
        self.console_lines.append(text)
        if message.type == "error" and not any(p.search(message.text) for p in _HARMLESS_CONSOLE):
            self.console_errors.append(text)

    def _on_dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        from playwright.sync_api import Error as PlaywrightError

        try:
            dialog.dismiss()
        except PlaywrightError as err:  # the page closed meanwhile: the dialog is recorded anyway
            self.dialogs.append(f"(could not dismiss: {err})")

    def external_requests(self) -> list[str]:
        """Requests that left the machine (anything but file:, data:, blob: and local hosts)."""
        external = []
        for url in self.requests:
            if url.startswith(("file:", "data:", "blob:", "about:")):
                continue
            host = re.sub(r"^[a-z]+://", "", url).split("/")[0].split(":")[0]
            if host not in self.local_hosts:
                external.append(url)
        return external

    def snapshot(self) -> tuple[int, int, int]:
        return (len(self.console_errors), len(self.page_errors), len(self.dialogs))

    def problems_since(self, snapshot: tuple[int, int, int]) -> list[str]:
        """Console errors, uncaught page errors and dialogs recorded after ``snapshot``."""
        console, errors, dialogs = snapshot
        return (
            [f"console {e}" for e in self.console_errors[console:]]
            + [f"page error: {e}" for e in self.page_errors[errors:]]
            + [f"dialog {d}" for d in self.dialogs[dialogs:]]
        )

    def unknown_load_problems(self, snapshot: tuple[int, int, int]) -> list[str]:
        """Problems recorded before ``snapshot`` that are not known Jupyter front-end noise."""
        before = (
            [f"console {e}" for e in self.console_errors[: snapshot[0]]]
            + [f"page error: {e}" for e in self.page_errors[: snapshot[1]]]
            + [f"dialog {d}" for d in self.dialogs[: snapshot[2]]]
        )
        return [p for p in before if not any(k.search(p) for k in KNOWN_HOST_LOAD_ERRORS)]

    def summary(self) -> str:
        return (
            f"console errors: {self.console_errors}\npage errors: {self.page_errors}\n"
            f"dialogs: {self.dialogs}\nfailed requests: {self.failed_requests}"
        )


class BrowserSession:
    """One headless Chromium (Playwright persistent context) for a whole test session."""

    def __init__(self, profile_dir: Path, executable: str = CHROMIUM, viewport=(1500, 1100)):
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        try:
            self.context = self._playwright.chromium.launch_persistent_context(
                str(profile_dir),
                executable_path=executable,
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": viewport[0], "height": viewport[1]},
            )
        except BaseException:
            self._playwright.stop()
            raise

    def new_page(self):
        page = self.context.new_page()
        return page, PageWatch(page)

    def close(self) -> None:
        try:
            self.context.close()
        finally:
            self._playwright.stop()


class Artifacts:
    """Numbered screenshots of a test's steps under ``test-artifacts/browser/<test>/``."""

    def __init__(self, test_name: str):
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        self.directory = ARTIFACTS_ROOT / safe
        if self.directory.exists():
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True)
        self._counter = 0

    def shot(self, page_or_locator, name: str, full_page: bool = False) -> Path:
        self._counter += 1
        path = self.directory / f"{self._counter:02d}-{name}.png"
        if hasattr(page_or_locator, "screenshot") and hasattr(page_or_locator, "goto"):
            page_or_locator.screenshot(path=str(path), full_page=full_page)
        else:
            page_or_locator.screenshot(path=str(path))
        return path

    def write(self, name: str, text: str) -> Path:
        path = self.directory / name
        path.write_text(text)
        return path


def save_failure(page, watch: PageWatch, test_name: str) -> None:
    """Screenshot and console of a page whose test failed, next to the test's other artifacts."""
    directory = ARTIFACTS_ROOT / re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
    directory.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import Error as PlaywrightError

    try:
        page.screenshot(path=str(directory / "failure.png"), full_page=False)
    except PlaywrightError as err:  # the page may be gone; the console still helps
        (directory / "failure-screenshot-error.txt").write_text(repr(err))
    (directory / "failure-console.txt").write_text(
        watch.summary() + "\n\nall console lines:\n" + "\n".join(watch.console_lines)
    )


# --------------------------------------------------------------------------------------
# Driving a notebook in the page
# --------------------------------------------------------------------------------------

# JavaScript that finds the open notebook panel in JupyterLab or Notebook 7.
_CURRENT_NOTEBOOK_JS = """
() => {
  const app = window.jupyterapp;
  if (!app) return null;
  const tracker = app.shell.currentWidget;
  let panel = tracker && tracker.content && tracker.sessionContext ? tracker : null;
  if (!panel) {
    for (const w of app.shell.widgets('main')) {
      if (w.sessionContext && w.content && w.content.model) { panel = w; break; }
    }
  }
  return panel;
}
"""


class NotebookDriver:
    """Drive the notebook open in ``page`` (JupyterLab 4 or Notebook 7)."""

    def __init__(self, page, server: JupyterServer):
        self.page = page
        self.server = server

    def _eval(self, body: str, arg=None):
        script = f"async (arg) => {{ const panel = ({_CURRENT_NOTEBOOK_JS})(); {body} }}"
        return self.page.evaluate(script, arg)

    def open(self, relative_path: str, timeout: float = 90.0) -> None:
        self.page.goto(self.server.notebook_url(relative_path), wait_until="domcontentloaded")
        self.wait_kernel_idle(timeout)

    def wait_kernel_idle(self, timeout: float = 90.0) -> None:
        self.page.wait_for_function(
            f"""() => {{
              const panel = ({_CURRENT_NOTEBOOK_JS})();
              if (!panel) return false;
              const ctx = panel.sessionContext;
              const kernel = ctx && ctx.session && ctx.session.kernel;
              return !!kernel && ctx.isReady && kernel.status === 'idle'
                     && kernel.connectionStatus === 'connected';
            }}""",
            timeout=timeout * 1000,
            polling=200,
        )

    def activate(self) -> None:
        """Make the notebook the application's current widget (notebook commands act on it)."""
        self._eval("window.jupyterapp.shell.activateById(panel.id);")
        self.page.wait_for_function(
            f"""() => {{
              const panel = ({_CURRENT_NOTEBOOK_JS})();
              return !!panel && window.jupyterapp.shell.currentWidget === panel;
            }}""",
            timeout=30_000,
            polling=100,
        )

    def run_all(self) -> None:
        """Run every cell (the "Run All Cells" command), once.

        The command acts on the current notebook; right after the page opens the shell
        may not have made it current yet, so the notebook is activated first.
        """
        self.activate()
        self._eval("await window.jupyterapp.commands.execute('notebook:run-all-cells');")

    def wait_all_executed(self, timeout: float = 180.0) -> None:
        """Wait until every code cell has an execution count and the kernel is idle again."""
        self.page.wait_for_function(
            f"""() => {{
              const panel = ({_CURRENT_NOTEBOOK_JS})();
              if (!panel) return false;
              const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
              if (!kernel || kernel.status !== 'idle') return false;
              const cells = panel.content.model.cells;
              for (let i = 0; i < cells.length; i++) {{
                const c = cells.get(i);
                if (c.type === 'code' && c.sharedModel.getSource().trim() && !c.executionCount) return false;
              }}
              return true;
            }}""",
            timeout=timeout * 1000,
            polling=250,
        )

    def wait_until(self, condition, timeout: float = 120.0, what: str = "the page") -> None:
        """Wait until ``condition()`` (a Python callable) is true, failing at once if a cell errors.

        A cell that raises stops Run All, so whatever the test waits for would never
        come: report the cell's error instead of a timeout.
        """
        deadline = time.monotonic() + timeout
        while True:
            if condition():
                return
            errors = self.cell_errors()
            if errors:
                raise AssertionError(f"a notebook cell failed while waiting for {what}: {errors}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not reached within {timeout:.0f} s")
            self.page.wait_for_timeout(250)

    def selected_cells(self) -> list[int]:
        """Indices of the notebook cells that are selected or active (what "run" would run)."""
        return self._eval(
            "return panel.content.widgets.map((w, i) => [i, panel.content.isSelectedOrActive(w)])"
            ".filter(x => x[1]).map(x => x[0]);"
        )

    def deselect_cells(self) -> None:
        """Collapse the notebook's cell selection to the active cell."""
        self._eval("panel.content.deselectAll();")

    def cell_errors(self) -> list[str]:
        """Error outputs (ename: evalue) of all code cells."""
        return self._eval(
            """
            const errors = [];
            const cells = panel.content.model.cells;
            for (let i = 0; i < cells.length; i++) {
              const c = cells.get(i);
              if (c.type !== 'code') continue;
              const outputs = c.outputs;
              for (let j = 0; j < outputs.length; j++) {
                const o = outputs.get(j).toJSON();
                if (o.output_type === 'error') errors.push(`cell ${i}: ${o.ename}: ${o.evalue}`);
              }
            }
            return errors;
            """
        )

    def append_cell_and_start(self, source: str) -> int:
        """Append a code cell and start running it without waiting for it; returns its index."""
        return self._eval(
            """
            const notebook = panel.content;
            const count = notebook.model.cells.length;
            notebook.model.sharedModel.insertCell(count, {cell_type: 'code', source: arg});
            window.jupyterapp.shell.activateById(panel.id);
            notebook.deselectAll();
            notebook.activeCellIndex = count;
            notebook.deselectAll();
            void window.jupyterapp.commands.execute('notebook:run-cell');
            return count;
            """,
            source,
        )

    def append_and_run(self, source: str, timeout: float = 120.0) -> list[dict]:
        """Append a code cell at the end, run it, wait for it, and return its outputs (JSON)."""
        index = self._eval(
            """
            const notebook = panel.content;
            const count = notebook.model.cells.length;
            notebook.model.sharedModel.insertCell(count, {cell_type: 'code', source: arg});
            window.jupyterapp.shell.activateById(panel.id);
            // run exactly this cell, whatever cells a click in an output may have selected
            notebook.deselectAll();
            notebook.activeCellIndex = count;
            notebook.deselectAll();
            await window.jupyterapp.commands.execute('notebook:run-cell');
            return count;
            """,
            source,
        )
        self.page.wait_for_function(
            f"""(index) => {{
              const panel = ({_CURRENT_NOTEBOOK_JS})();
              const c = panel.content.model.cells.get(index);
              const kernel = panel.sessionContext.session.kernel;
              return !!c.executionCount && kernel.status === 'idle';
            }}""",
            arg=index,
            timeout=timeout * 1000,
            polling=200,
        )
        return self._eval(
            """
            const c = panel.content.model.cells.get(arg);
            const out = [];
            for (let j = 0; j < c.outputs.length; j++) out.push(c.outputs.get(j).toJSON());
            return out;
            """,
            index,
        )


def output_text(outputs: list[dict]) -> str:
    """The text of a cell's stream / text-plain outputs, joined; raises on an error output."""
    parts = []
    for output in outputs:
        if output.get("output_type") == "error":
            raise AssertionError(f"cell failed: {output.get('ename')}: {output.get('evalue')}")
        if output.get("output_type") == "stream":
            text = output.get("text", "")
            parts.append("".join(text) if isinstance(text, list) else text)
        elif "data" in output and "text/plain" in output["data"]:
            text = output["data"]["text/plain"]
            parts.append("".join(text) if isinstance(text, list) else text)
    return "".join(parts)


def write_notebook(path: Path, cells: list[str]) -> Path:
    """Write a minimal nbformat-4 notebook of code cells with the python3 kernel spec."""
    notebook = {
        "cells": [
            {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}
            for source in cells
        ],
        "metadata": {
            "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(notebook, indent=1))
    return path
