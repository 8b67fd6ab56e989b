"""Driving the explorer's analysis controls (js/controls.ts) through the DOM contract:
the statement bar (``statement-prev``/``statement-next``/``statement-picker``,
``sweep-all``, ``sweep-cancel``, ``sweep-all-progress``), the run switch
(``attention-run``, ``run-label``), ``undo``/``redo``, ``mode-value``, ``reference-name``;
the root's ``data-statement-index``."""

from __future__ import annotations

from explorer_page import ExplorerPage


class AnalysisPage(ExplorerPage):
    def testid(self, name: str):
        return self.root.locator(f"[data-testid={name}]")

    def text(self, name: str) -> str:
        return self.testid(name).first.inner_text()

    def statement_index(self) -> int:
        return int(self._js("return root.getAttribute('data-statement-index');"))

    def go_to_statement(self, button: str, expected: int, timeout_s: float = 120.0) -> None:
        """Press previous/next and wait until the new statement is drawn."""
        self.testid(button).click()
        self._wait(
            "return root.getAttribute('data-statement-index') === String(arg)"
            " && root.getAttribute('data-finwidget-ready') === '1'"
            " && root.getAttribute('data-finwidget-busy') !== '1'"
            " && [...root.querySelectorAll('[data-testid=span]')].some(s => s.hasAttribute('data-value'));",
            arg=expected,
            timeout_s=timeout_s,
        )

    def sweep_all(self, timeout_s: float = 300.0) -> dict[tuple[int, int], float]:
        """Press "Sweep all statements" and wait for the grid to show the sweep; the grid's values."""
        self.testid("sweep-all").click()
        self._wait(
            "const m = root.querySelector('[data-testid=grid-measure]');"
            " const cells = [...root.querySelectorAll('[data-testid=head-cell]')];"
            " return m && m.value === 'mean_abs_change'"
            " && !root.querySelector('[data-testid=controls][data-sweeping]')"
            " && cells.length && cells.every(c => c.getAttribute('data-value') && c.getAttribute('data-value') !== 'NaN');",
            timeout_s=timeout_s,
        )
        return self.grid()

    def grid(self) -> dict[tuple[int, int], float]:
        cells = self._js(
            "return [...root.querySelectorAll('[data-testid=head-cell]')]"
            ".map(c => [+c.dataset.layer, +c.dataset.head, parseFloat(c.getAttribute('data-value'))]);"
        )
        return {(layer, head): value for layer, head, value in cells}

    def set_select(self, name: str, value: str) -> None:
        self.testid(name).first.select_option(value)

    def wait_statement_values(self, timeout_s: float = 60.0) -> None:
        self._wait(
            "return root.getAttribute('data-finwidget-busy') !== '1'"
            " && [...root.querySelectorAll('[data-testid=span]')].some(s => s.hasAttribute('data-value'));",
            timeout_s=timeout_s,
        )

    def line_values(self) -> dict[str, float]:
        """What the statement view shows, summed per line item: ``{line item name: sum of its spans' values}``.

        A line item's name is its line's text before the first ":" (the statement's own words).
        """
        return self._js(
            """const out = {};
               for (const line of root.querySelectorAll('[data-testid=statement-view] .fw-line')) {
                 const spans = [...line.querySelectorAll('[data-testid=span]')];
                 if (!spans.some(s => s.dataset.kind === 'number')) continue;
                 const name = line.textContent.split(':')[0].trim();
                 out[name] = spans.reduce((a, s) => a + (parseFloat(s.getAttribute('data-value')) || 0), 0);
               }
               return out;"""
        )

    def wait_run_label(self, fragment: str, timeout_s: float = 60.0) -> None:
        self._wait(
            "const l = root.querySelector('[data-testid=run-label]');"
            " return l && l.textContent.includes(arg) && root.getAttribute('data-finwidget-busy') !== '1';",
            arg=fragment,
            timeout_s=timeout_s,
        )
