// Statement view: the statement as written, line by line, with tokens grouped into
// words, numbers and line items; each span coloured by attention from (or to) the
// selection. Click selects a span, shift-click or drag selects a range of spans.

import { DIRECTION_WORDS, joinCaption, stateCaption } from "../caption";
import { ColorScale, css, divergingBar, formatValue, rampWords, sequential, textColorOn } from "../colors";
import { el, listen, ownKeys, select, setFlag } from "../dom";
import { frame, INK, MUTED, type Figure, type Prim } from "../export";
import { statementLines, aggregateToSpans } from "../layout";
import { ColorBar, type LegendSpec } from "../legend";
import type { Direction, SpanRecord, StatementHeads } from "../protocol";
import { hasSelection, isSpanSelected, selectionAfterClick, selectionFromBrush, selectionLabel } from "../selection";
import type { ExplorerStore } from "../store";
import { Tooltip } from "../tooltip";
import { exportsOf, messageFigure, type View } from "./view";
import { attachNumberEditor, markChangedSpans, whatIfScaleMax } from "../what_if";

export class StatementView implements View {
  readonly name = "statement";
  readonly root: HTMLElement;
  private body: HTMLElement;
  private info: HTMLElement;
  private caption: HTMLElement;
  private spanEls: HTMLElement[] = [];
  private spanValues: Float32Array | null = null;
  private scale: ColorScale | null = null;
  private colorBar = new ColorBar("statement-legend");
  /** What the what-if editor says about a span it cannot edit. */
  private whatIfMessage: HTMLElement;
  private tip: Tooltip;
  /** The span that holds the roving tabindex (the one Tab lands on). */
  private current = 0;
  private drawn = false;
  private brushAnchor: number | null = null;
  private brushMoved = false;
  private cleanups: (() => void)[] = [];
  readonly toPNG: () => string;
  readonly toSVG: () => string;

  constructor(private readonly store: ExplorerStore) {
    const t = store.traits;
    const direction = select<Direction>(
      [
        { value: "from", label: DIRECTION_WORDS.from.menu },
        { value: "to", label: DIRECTION_WORDS.to.menu },
      ],
      t.direction,
      (v) => store.set({ direction: v }),
      {
        "data-testid": "direction",
        "aria-label": "direction",
        title: `colour spans by ${DIRECTION_WORDS.from.short} (from) or ${DIRECTION_WORDS.to.short} (to); the matrix highlights the matching rows or columns`,
      },
    );
    const heads = select<StatementHeads>(
      [
        { value: "focus", label: "focused head" },
        { value: "layer", label: "all heads of the focused layer" },
        { value: "range", label: "all heads in the layer range" },
      ],
      t.settings.statement_heads,
      (v) => store.set({ settings: { ...store.get("settings"), statement_heads: v } }),
      { "data-testid": "statement-heads", "aria-label": "heads averaged" },
    );
    this.caption = el("div", { class: "fw-caption" });
    this.info = el("div", { class: "fw-hover-info", "data-testid": "span-info" });
    this.whatIfMessage = el("div", { class: "fw-what-if-message", "data-testid": "what-if-message", role: "status", hidden: true });
    this.body = el("div", {
      class: "fw-statement-body",
      role: "group",
      // The notebook must not take the arrows, Enter and space (Lumino skips its shortcuts here).
      "data-lm-suppress-shortcuts": "true",
      "aria-label": "statement spans: arrow keys move between spans, Enter or space selects one, shift extends the selection",
    });
    this.root = el("div", { class: "fw-view fw-statement", "data-testid": "statement-view" }, [
      el("div", { class: "fw-view-header" }, [el("span", { class: "fw-title", text: "Statement" }), direction, heads]),
      this.caption,
      this.whatIfMessage,
      this.body,
      this.colorBar.root,
      el("div", {
        class: "fw-hint",
        text: "click a span to select it · shift-click or drag for a range · double-click a number to try another value (what-if) · keyboard: Tab to the statement, arrows move, Enter selects · underlined: financial terms and numbers · grey: added by the prompt template",
      }),
      this.info,
    ]);
    this.tip = new Tooltip(this.info, this.root);
    const exports = exportsOf(() => this.figure());
    this.toPNG = exports.toPNG;
    this.toSVG = exports.toSVG;
    this.build();
    this.cleanups.push(attachNumberEditor(this.body, this.whatIfMessage, store));
    const redraw = () => this.paint();
    for (const topic of ["tokens", "selection"] as const) this.cleanups.push(store.on(topic, redraw));
    this.cleanups.push(store.on("what_if", () => markChangedSpans(this.spanEls, store)));
    this.cleanups.push(
      store.on("direction", () => {
        direction.value = store.get("direction");
        this.paint();
      }),
      store.on("settings", () => {
        heads.value = store.get("settings").statement_heads;
      }),
      listen(window, "mouseup", () => this.endBrush(null)),
    );
    this.paint();
  }

  private build(): void {
    const layout = this.store.get("statement_layout");
    this.spanEls = new Array(layout.spans.length);
    for (const pieces of statementLines(layout)) {
      const line = el("div", { class: "fw-line" });
      for (const piece of pieces) {
        if ("gap" in piece) {
          line.append(document.createTextNode(piece.gap));
          continue;
        }
        const s = piece.span;
        const node = el("span", {
          class: `fw-span fw-kind-${cssIdent(s.kind)}${s.category ? " fw-cat" : ""}${s.in_statement === false ? " fw-template" : ""}`,
          "data-testid": "span",
          "data-span-index": s.index,
          "data-kind": s.kind,
          "data-category": s.category ?? undefined,
          role: "button",
          "aria-pressed": "false",
          tabindex: -1,
          text: s.text,
        });
        node.addEventListener("mousedown", (ev) => this.startBrush(s.index, ev));
        node.addEventListener("mouseenter", (ev) => this.hover(s, ev));
        node.addEventListener("mousemove", (ev) => this.moveTip(ev));
        node.addEventListener("focus", () => {
          this.current = s.index;
          this.hover(s);
          this.tip.showAt(this.info.textContent ?? "", node);
        });
        node.addEventListener("mouseup", (ev) => this.endBrush(s.index, ev));
        this.spanEls[s.index] = node;
        line.append(node);
      }
      // Keep empty lines visible.
      if (!pieces.length) line.append(document.createTextNode("\u00a0"));
      this.body.append(line);
    }
    this.body.addEventListener("mouseleave", () => {
      this.tip.hide();
      this.store.setHoverSpan(null);
    });
    this.body.addEventListener("focusout", (ev) => {
      if (!this.body.contains(ev.relatedTarget as Node | null)) {
        this.tip.hide();
        this.store.setHoverSpan(null);
      }
    });
    this.cleanups.push(ownKeys(this.body, (ev) => this.key(ev)));
    markChangedSpans(this.spanEls, this.store);
    const sel = this.store.get("selection");
    this.current = hasSelection(sel) ? sel.start : this.spanEls.findIndex((n) => !!n);
    this.rove(Math.max(0, this.current), false);
  }

  /** The spans in reading order (line by line), as indices. */
  private order(): number[] {
    return [...this.body.querySelectorAll<HTMLElement>("[data-span-index]")].map((n) => Number(n.getAttribute("data-span-index")));
  }

  /** Give span `index` the tab stop (and the focus when `focus`). */
  private rove(index: number, focus = true): void {
    const node = this.spanEls[index];
    if (!node) return;
    for (const n of this.spanEls) if (n && n !== node) n.tabIndex = -1;
    node.tabIndex = 0;
    this.current = index;
    if (focus) node.focus();
  }

  /** Arrows move between spans (up / down: the nearest span on the line above / below),
   * Home / End to the first / last, Enter or space selects (shift extends). */
  private key(ev: KeyboardEvent): void {
    // The what-if editor's input keeps its keys (Enter applies, arrows move the caret).
    if (ev.target instanceof Element && ev.target.closest(".fw-what-if-editor")) return;
    const order = this.order();
    const at = order.indexOf(this.current);
    if (at < 0 || !order.length) return;
    let next: number | null = null;
    if (ev.key === "ArrowRight") next = order[Math.min(order.length - 1, at + 1)];
    else if (ev.key === "ArrowLeft") next = order[Math.max(0, at - 1)];
    else if (ev.key === "Home") next = order[0];
    else if (ev.key === "End") next = order[order.length - 1];
    else if (ev.key === "ArrowUp" || ev.key === "ArrowDown") next = this.vertical(this.current, ev.key === "ArrowUp" ? -1 : 1);
    else if (ev.key === "Enter" || ev.key === " ") {
      this.store.set({ selection: selectionAfterClick(this.store.get("selection"), this.current, ev.shiftKey) });
      ev.preventDefault();
      ev.stopPropagation();
      return;
    } else return;
    ev.preventDefault();
    ev.stopPropagation();
    if (next !== null && next !== undefined) this.rove(next);
  }

  /** The span on the line above / below whose left edge is nearest to span `index`'s. */
  private vertical(index: number, dir: -1 | 1): number | null {
    const node = this.spanEls[index];
    const line = node?.parentElement;
    if (!node || !line) return null;
    let other = dir < 0 ? line.previousElementSibling : line.nextElementSibling;
    while (other && !other.querySelector("[data-span-index]")) other = dir < 0 ? other.previousElementSibling : other.nextElementSibling;
    if (!other) return null;
    const x = node.offsetLeft;
    let best: number | null = null;
    let dist = Infinity;
    for (const n of other.querySelectorAll<HTMLElement>("[data-span-index]")) {
      const d = Math.abs(n.offsetLeft - x);
      if (d < dist) {
        dist = d;
        best = Number(n.getAttribute("data-span-index"));
      }
    }
    return best;
  }

  private moveTip(ev: MouseEvent): void {
    if (this.info.textContent) this.tip.show(this.info.textContent, ev.clientX, ev.clientY);
  }

  private startBrush(index: number, ev: MouseEvent): void {
    if (ev.button !== 0) return;
    ev.preventDefault();
    this.brushAnchor = index;
    this.brushMoved = false;
  }

  private hover(s: SpanRecord, ev?: MouseEvent): void {
    this.store.setHoverSpan(s.index);
    const v = this.spanValues ? this.spanValues[s.index] : undefined;
    const parts = [`“${s.text}”`, s.kind.replace(/_/g, " ")];
    if (s.category) parts.push(s.category.replace(/_/g, " "));
    if (s.line_item) parts.push(`line item: ${s.line_item}`);
    if (s.year !== null && s.year !== undefined) parts.push(`year ${s.year}`);
    if (s.value !== null && s.value !== undefined) parts.push(`value ${s.value.toLocaleString("en-US")}`);
    const what = this.store.tokens?.spanValues
      ? "attention from the answer position, edited − original"
      : this.store.get("direction") === "to" ? "attention to the selection" : "attention from the selection";
    if (v !== undefined) parts.push(`${what}: ${formatValue(v)}`);
    this.info.textContent = parts.join(" · ");
    if (ev) this.tip.show(this.info.textContent, ev.clientX, ev.clientY);
    if (this.brushAnchor !== null && this.brushAnchor !== s.index) {
      this.brushMoved = true;
      this.preview(selectionFromBrush(this.brushAnchor, s.index));
    }
  }

  private endBrush(index: number | null, ev?: MouseEvent): void {
    const anchor = this.brushAnchor;
    this.brushAnchor = null;
    if (anchor === null || index === null) return;
    const current = this.store.get("selection");
    const next = this.brushMoved && anchor !== index
      ? selectionFromBrush(anchor, index)
      : selectionAfterClick(current, index, !!ev?.shiftKey);
    this.brushMoved = false;
    this.store.set({ selection: next });
  }

  private preview(sel: { start?: number; end?: number }): void {
    this.spanEls.forEach((node, i) => {
      if (!node) return;
      const on = isSpanSelected(sel, i);
      setFlag(node, "data-selected", on);
      node.setAttribute("aria-pressed", on ? "true" : "false");
    });
  }

  private paint(): void {
    const store = this.store;
    const layout = store.get("statement_layout");
    const sel = store.get("selection");
    const data = store.tokens;
    this.preview(sel);
    const label = selectionLabel(sel, layout);
    if (!data) {
      this.caption.textContent = "loading attention…";
      return;
    }
    // A what-if's difference comes per span (edited − original, spans matched between the runs).
    const whatIf = !!data.spanValues && data.spanValues.length === layout.spans.length;
    const values = whatIf ? data.spanValues! : aggregateToSpans(data.values, layout, data.reduce);
    this.spanValues = values;
    // Scale over the spans outside the selection (a selection attending to itself would
    // otherwise wash out everything else).
    const others = Array.from(values).filter((_, i) => !isSpanSelected(sel, i));
    // The difference run (ablated − clean) is signed: diverging colours around 0.
    // A what-if difference below WHAT_IF_SPAN_FLOOR is not coloured as if it were large.
    const scale = new ColorScale(others, whatIf || this.store.attentionRun === "difference", whatIf ? whatIfScaleMax(others) : undefined);
    this.scale = scale;
    values.forEach((v, i) => {
      const node = this.spanEls[i];
      if (!node) return;
      const rgb = scale.rgb(v);
      // Next to no attention: no box at all (the page's own colours, light or dark theme).
      const faint = Math.abs(scale.position(v)) < 0.02;
      node.style.backgroundColor = faint ? "" : css(rgb);
      node.style.color = faint ? "" : textColorOn(rgb);
      node.setAttribute("data-value", String(v));
    });
    this.caption.textContent = whatIf ? `What-if difference — ${data.label}` : `${this.heading(label)} — ${data.label}`;
    setFlag(this.root, "data-what-if-difference", whatIf);
    // A tooltip written before this repaint may quote the old values or direction.
    this.tip.hide();
    this.colorBar.update(this.legend());
    this.drawn = true;
  }

  ready(): boolean {
    return this.drawn;
  }

  /** "Where “Net income” looks" / "Who looks at “Net income”", one wording for both. */
  private heading(label: string): string {
    const sel = this.store.get("selection");
    const who = hasSelection(sel) ? `“${label}”` : "the answer position";
    return this.store.get("direction") === "to" ? `Who looks at ${who} (${DIRECTION_WORDS.to.menu})` : `Where ${who} looks (${DIRECTION_WORDS.from.menu})`;
  }

  private legend(): LegendSpec | null {
    const scale = this.scale;
    if (!scale) return null;
    const dir = this.store.get("direction");
    if (scale.signed && this.store.tokens?.spanValues)
      return {
        title: "attention from the answer position: edited − original",
        unit: "attention mass per span",
        min: -scale.max,
        max: scale.max,
        colorAt: divergingBar,
        low: "blue = the edited statement's run attends less to the span",
        high: "red = attends more (spans with no original counterpart: uncoloured)",
      };
    if (scale.signed)
      return {
        title: `${DIRECTION_WORDS[dir].menu}: ablated − clean`,
        unit: "attention mass per span",
        min: -scale.max,
        max: scale.max,
        colorAt: divergingBar,
        low: "blue = ablated attends less than clean",
        high: "red = ablated attends more (selected spans excluded from the scale)",
      };
    return {
      title: DIRECTION_WORDS[dir].menu,
      unit: "attention mass per span",
      min: 0,
      max: scale.max,
      colorAt: sequential,
      low: `${rampWords().less} = less`,
      high: `${rampWords().more} = more attention ${dir === "to" ? "to" : "from"} the selection (selected spans excluded from the scale)`,
    };
  }

  /** The statement as written with each span's colour, the colour bar and the state. */
  figure(withState = true): Figure {
    const caption = withState ? stateCaption(this.store) : "";
    const layout = this.store.get("statement_layout");
    const lines = statementLines(layout);
    const label = selectionLabel(this.store.get("selection"), layout);
    const title = `Statement: ${this.heading(label)}`;
    if (!this.spanValues || !this.scale) return messageFigure(title, "no attention values yet", caption);
    const charW = 7.2; // 12 px monospace
    const lineH = 17;
    const prims: Prim[] = [];
    let widest = 0;
    const sel = this.store.get("selection");
    const changed = new Set(this.store.get("what_if_state")?.changed_spans ?? []);
    lines.forEach((pieces, row) => {
      let col = 0;
      const y = row * lineH;
      for (const p of pieces) {
        const text = "gap" in p ? p.gap : p.span.text;
        if ("span" in p) {
          const rgb = this.scale!.rgb(this.spanValues![p.span.index]);
          prims.push({ t: "rect", x: col * charW, y, w: text.length * charW, h: lineH - 2, fill: css(rgb) });
          if (changed.has(p.span.index)) prims.push({ t: "rect", x: col * charW - 2, y: y - 2, w: text.length * charW + 4, h: lineH + 2, stroke: "#e67800", lw: 1 });
          if (isSpanSelected(sel, p.span.index)) prims.push({ t: "rect", x: col * charW - 1, y: y - 1, w: text.length * charW + 2, h: lineH, stroke: "#e67800", lw: 2 });
          prims.push({ t: "text", x: col * charW, y: y + 12, text, size: 12, mono: true, fill: p.span.in_statement === false ? MUTED : textColorOn(rgb) });
        } else prims.push({ t: "text", x: col * charW, y: y + 12, text, size: 12, mono: true, fill: INK });
        col += text.length;
      }
      widest = Math.max(widest, col);
    });
    return frame({
      title,
      body: { width: widest * charW + 4, height: lines.length * lineH, prims },
      legend: this.legend(),
      caption: joinCaption(
        hasSelection(sel) ? "orange box: the selection" : "",
        changed.size ? "thin orange box: numbers changed by the what-if (the statement shown is the edited one)" : "",
        caption,
      ),
    });
  }

  destroy(): void {
    for (const c of this.cleanups) c();
    this.tip.destroy();
    this.root.remove();
  }
}

/** A span kind as a safe CSS class suffix. */
function cssIdent(s: string): string {
  return s.replace(/[^a-zA-Z0-9_-]/g, "_");
}
