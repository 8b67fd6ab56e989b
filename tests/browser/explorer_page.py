"""Reading and driving one AttentionExplorer in a page, through its DOM contract only.

The contract (implemented by ``js/``): root ``.fw-explorer`` with
``data-finwidget-ready="1"`` once drawn and ``data-finwidget-busy``; statement spans
``[data-testid=span]`` (``data-span-index``, ``data-kind``, ``data-selected``); grid
cells ``[data-testid=head-cell]`` (``data-layer``, ``data-head``, ``data-ablated``,
``data-focused``, ``data-value``); ``canvas[data-testid=attention-matrix]``
(``data-layer``, ``data-head``, ``data-draw-count``); ``[data-testid=prediction-panel]``
holding ``[data-testid=logit-diff]`` (``data-value``, ``data-clean-value``) and
``[data-testid=p-increase]``; ``[data-testid=ablated-list]``; buttons ``reset``,
``sweep``, ``export-png``; ``[data-testid=status]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: the views of a full AttentionExplorer (single-view widgets, such as the one
#: ``analyzer.plot_attention_heatmap`` returns, share the root class but not all views)
FULL_EXPLORER_VIEWS = ("statement-view", "head-grid", "matrix-view", "layer-flow", "prediction-panel")

# JS: the index-th root under `selector` that holds every view in `views`
_FIND_ROOT = (
    "const root = [...document.querySelectorAll(selector)]"
    ".filter(r => views.every(v => r.querySelector(`[data-testid=${v}]`)))[index];"
)


@dataclass
class ExplorerPage:
    """The ``index``-th explorer root in ``page`` (or inside ``scope``, a CSS selector)
    that shows every view in ``views`` (default: a full explorer)."""

    page: object
    index: int = 0
    scope: str = ""
    views: tuple = field(default=FULL_EXPLORER_VIEWS)

    @property
    def selector(self) -> str:
        return f"{self.scope} .fw-explorer".strip()

    @property
    def root(self):
        locator = self.page.locator(self.selector)
        for view in self.views:
            locator = locator.filter(has=self.page.locator(f"[data-testid={view}]"))
        return locator.nth(self.index)

    def _args(self, arg=None) -> list:
        return [self.selector, self.index, list(self.views), arg]

    def _js(self, body: str, arg=None):
        """Evaluate ``body`` with ``root`` bound to this explorer's root element."""
        script = (
            "([selector, index, views, arg]) => { " + _FIND_ROOT + " if (!root) throw new Error("
            "'no explorer root ' + selector + ' #' + index); " + body + " }"
        )
        return self.page.evaluate(script, self._args(arg))

    def _wait(self, predicate_body: str, arg=None, timeout_s: float = 30.0) -> None:
        script = "([selector, index, views, arg]) => { " + _FIND_ROOT + " if (!root) return false; "
        script += predicate_body + " }"
        self.page.wait_for_function(script, arg=self._args(arg), timeout=timeout_s * 1000, polling=100)

    # ------------------------------------------------------------------ waiting
    def wait_ready(self, timeout_s: float = 120.0) -> None:
        self._wait("return root.getAttribute('data-finwidget-ready') === '1';", timeout_s=timeout_s)

    def is_ready(self) -> bool:
        script = "([selector, index, views]) => { " + _FIND_ROOT
        script += " return !!root && root.getAttribute('data-finwidget-ready') === '1'; }"
        return bool(self.page.evaluate(script, self._args()[:3]))

    def wait_idle(self, timeout_s: float = 60.0) -> None:
        self._wait("return root.getAttribute('data-finwidget-busy') !== '1';", timeout_s=timeout_s)

    # ------------------------------------------------------------------ reading
    def geometry(self) -> tuple[int, int]:
        """(layers, heads) as the grid shows them."""
        return tuple(
            self._js(
                """const cells = root.querySelectorAll('[data-testid=head-cell]');
                   let L = 0, H = 0;
                   for (const c of cells) { L = Math.max(L, +c.dataset.layer + 1); H = Math.max(H, +c.dataset.head + 1); }
                   return [L, H];"""
            )
        )

    def grid_values(self) -> list[str]:
        return self._js(
            "return [...root.querySelectorAll('[data-testid=head-cell]')].map(c => c.getAttribute('data-value') + '|' + c.style.backgroundColor);"
        )

    def matrix_state(self) -> dict:
        return self._js(
            """const c = root.querySelector('canvas[data-testid=attention-matrix]');
               return {layer: c.getAttribute('data-layer'), head: c.getAttribute('data-head'),
                       draws: +c.getAttribute('data-draw-count'), pixels: c.toDataURL().length,
                       hash: (() => { const d = c.toDataURL(); let h = 0; for (let i = 0; i < d.length; i++) h = (h * 31 + d.charCodeAt(i)) | 0; return h; })()};"""
        )

    def prediction(self) -> dict:
        """{"value", "clean"} of the logit difference and "p_increase", as floats, plus "ablated" labels."""
        return self._js(
            """const ld = root.querySelector('[data-testid=logit-diff]');
               const p = root.querySelector('[data-testid=p-increase]');
               const list = root.querySelector('[data-testid=ablated-list]');
               return {value: parseFloat(ld.getAttribute('data-value')),
                       clean: parseFloat(ld.getAttribute('data-clean-value')),
                       p_increase: parseFloat(p.getAttribute('data-value')),
                       text: ld.textContent,
                       ablated: [...list.querySelectorAll('li')].map(li => [+li.dataset.layer, +li.dataset.head, li.dataset.mode])};"""
        )

    def spans(self) -> list[dict]:
        return self._js(
            """return [...root.querySelectorAll('[data-testid=span]')].map(s => ({
                 index: +s.dataset.spanIndex, kind: s.dataset.kind, text: s.textContent,
                 selected: s.getAttribute('data-selected') === '1'}));"""
        )

    def statement_text(self) -> str:
        return self._js("return root.querySelector('[data-testid=statement-view]').textContent;")

    def cell(self, layer: int, head: int):
        return self.root.locator(f'[data-testid=head-cell][data-layer="{layer}"][data-head="{head}"]')

    def span(self, index: int):
        return self.root.locator(f'[data-testid=span][data-span-index="{index}"]')

    # ------------------------------------------------------------------ acting
    def select_span(self, index: int, timeout_s: float = 30.0) -> None:
        self.span(index).click()
        self._wait(
            'const s = root.querySelector(`[data-testid=span][data-span-index="${arg}"]`);'
            " return s && s.getAttribute('data-selected') === '1';",
            arg=index,
            timeout_s=timeout_s,
        )

    def focus_head(self, layer: int, head: int, timeout_s: float = 30.0) -> None:
        before = self.matrix_state()["draws"]
        self.cell(layer, head).click()
        self._wait(
            """const c = root.querySelector('canvas[data-testid=attention-matrix]');
               return c.getAttribute('data-layer') === String(arg[0]) && c.getAttribute('data-head') === String(arg[1])
                      && +c.getAttribute('data-draw-count') > arg[2];""",
            arg=[layer, head, before],
            timeout_s=timeout_s,
        )

    def toggle_ablation(self, layer: int, head: int, ablated_after: bool, timeout_s: float = 60.0) -> None:
        """Shift+click a grid cell and wait until it is (not) ablated and the widget is idle again."""
        self.cell(layer, head).click(modifiers=["Shift"])
        self._wait(
            """const cell = root.querySelector(`[data-testid=head-cell][data-layer="${arg[0]}"][data-head="${arg[1]}"]`);
               const ablated = cell.getAttribute('data-ablated') === '1';
               const panel = root.querySelector('[data-testid=prediction-panel]');
               return ablated === arg[2] && root.getAttribute('data-finwidget-busy') !== '1'
                      && panel.getAttribute('data-pending') !== '1';""",
            arg=[layer, head, ablated_after],
            timeout_s=timeout_s,
        )
