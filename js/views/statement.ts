// Statement view: the statement as written, line by line, with tokens grouped into
// words, numbers and line items; each span coloured by attention from (or to) the
// selection. Click selects a span, shift-click or drag selects a range of spans.

import { ColorScale, css, formatValue, textColorOn } from "../colors";
import { el, listen, select, setFlag } from "../dom";
import { statementLines, aggregateToSpans } from "../layout";
import type { Direction, SpanRecord, StatementHeads } from "../protocol";
import { hasSelection, isSpanSelected, selectionAfterClick, selectionFromBrush, selectionLabel } from "../selection";
import type { ExplorerStore } from "../store";
import { exportCanvas, type View } from "./view";

export class StatementView implements View {
  readonly name = "statement";
  readonly root: HTMLElement;
  private body: HTMLElement;
  private info: HTMLElement;
  private caption: HTMLElement;
  private spanEls: HTMLElement[] = [];
  private spanValues: Float32Array | null = null;
  private drawn = false;
  private brushAnchor: number | null = null;
  private brushMoved = false;
  private cleanups: (() => void)[] = [];

  constructor(private readonly store: ExplorerStore) {
    const t = store.traits;
    const direction = select<Direction>(
      [
        { value: "from", label: "attention from selection" },
        { value: "to", label: "attention to selection" },
      ],
      t.direction,
      (v) => store.set({ direction: v }),
      { "data-testid": "direction", title: "colour spans by where the selection looks (from) or who looks at it (to)" },
    );
    const heads = select<StatementHeads>(
      [
        { value: "focus", label: "focused head" },
        { value: "layer", label: "all heads of the focused layer" },
        { value: "range", label: "all heads in the layer range" },
      ],
      t.settings.statement_heads,
      (v) => store.set({ settings: { ...store.get("settings"), statement_heads: v } }),
      { "data-testid": "statement-heads" },
    );
    this.caption = el("div", { class: "fw-caption" });
    this.info = el("div", { class: "fw-hover-info", "data-testid": "span-info" });
    this.body = el("div", { class: "fw-statement-body" });
    this.root = el("div", { class: "fw-view fw-statement", "data-testid": "statement-view" }, [
      el("div", { class: "fw-view-header" }, [el("span", { class: "fw-title", text: "Statement" }), direction, heads]),
      this.caption,
      this.body,
      el("div", {
        class: "fw-hint",
        text: "click a span to select it · shift-click or drag for a range · underlined: financial terms and numbers (hover for category and value) · grey: added by the prompt template",
      }),
      this.info,
    ]);
    this.build();
    const redraw = () => this.paint();
    for (const topic of ["tokens", "selection"] as const) this.cleanups.push(store.on(topic, redraw));
    this.cleanups.push(
      store.on("direction", () => {
        direction.value = store.get("direction");
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
          text: s.text,
        });
        node.addEventListener("mousedown", (ev) => this.startBrush(s.index, ev));
        node.addEventListener("mouseenter", () => this.hover(s));
        node.addEventListener("mouseup", (ev) => this.endBrush(s.index, ev));
        this.spanEls[s.index] = node;
        line.append(node);
      }
      // Keep empty lines visible.
      if (!pieces.length) line.append(document.createTextNode("\u00a0"));
      this.body.append(line);
    }
    this.body.addEventListener("mouseleave", () => {
      this.info.textContent = "";
      this.store.setHoverSpan(null);
    });
  }

  private startBrush(index: number, ev: MouseEvent): void {
    if (ev.button !== 0) return;
    ev.preventDefault();
    this.brushAnchor = index;
    this.brushMoved = false;
  }

  private hover(s: SpanRecord): void {
    this.store.setHoverSpan(s.index);
    const v = this.spanValues ? this.spanValues[s.index] : undefined;
    const parts = [`“${s.text}”`, s.kind.replace(/_/g, " ")];
    if (s.category) parts.push(s.category.replace(/_/g, " "));
    if (s.line_item) parts.push(`line item: ${s.line_item}`);
    if (s.year !== null && s.year !== undefined) parts.push(`year ${s.year}`);
    if (s.value !== null && s.value !== undefined) parts.push(`value ${s.value.toLocaleString("en-US")}`);
    if (v !== undefined) parts.push(`attention ${formatValue(v)}`);
    this.info.textContent = parts.join(" · ");
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
    this.spanEls.forEach((node, i) => node && setFlag(node, "data-selected", isSpanSelected(sel, i)));
  }

  private paint(): void {
    const store = this.store;
    const layout = store.get("statement_layout");
    const sel = store.get("selection");
    const data = store.tokens;
    this.preview(sel);
    const label = selectionLabel(sel, layout);
    const dir = store.get("direction");
    if (!data) {
      this.caption.textContent = "loading attention…";
      return;
    }
    const values = aggregateToSpans(data.values, layout, data.reduce);
    this.spanValues = values;
    // Scale over the spans outside the selection (a selection attending to itself would
    // otherwise wash out everything else).
    const others = Array.from(values).filter((_, i) => !isSpanSelected(sel, i));
    const scale = new ColorScale(others, false);
    values.forEach((v, i) => {
      const node = this.spanEls[i];
      if (!node) return;
      const rgb = scale.rgb(v);
      node.style.backgroundColor = css(rgb);
      node.style.color = textColorOn(rgb);
      node.setAttribute("data-value", String(v));
    });
    const who = hasSelection(sel) ? `“${label}”` : "the answer position";
    this.caption.textContent =
      `${dir === "from" ? "Where" : "Who"} ${dir === "from" ? `${who} looks` : `looks at ${who}`} — ${data.label}` +
      ` (max ${formatValue(scale.max)})`;
    this.drawn = true;
  }

  ready(): boolean {
    return this.drawn;
  }

  toPNG(): string {
    const layout = this.store.get("statement_layout");
    const lines = statementLines(layout);
    const lineH = 18;
    const { canvas, ctx } = exportCanvas(900, Math.max(40, lines.length * lineH + 16));
    if (!ctx) return "";
    ctx.font = "13px monospace";
    ctx.textBaseline = "top";
    lines.forEach((pieces, row) => {
      let x = 8;
      const y = 8 + row * lineH;
      for (const p of pieces) {
        const text = "gap" in p ? p.gap : p.span.text;
        const w = ctx.measureText(text).width;
        if ("span" in p) {
          const node = this.spanEls[p.span.index];
          if (node?.style.backgroundColor) {
            ctx.fillStyle = node.style.backgroundColor;
            ctx.fillRect(x, y - 1, w, lineH - 2);
          }
          ctx.fillStyle = node?.style.color || "#111";
        } else ctx.fillStyle = "#111";
        ctx.fillText(text, x, y);
        x += w;
      }
    });
    return canvas.toDataURL("image/png");
  }

  destroy(): void {
    for (const c of this.cleanups) c();
    this.root.remove();
  }
}

/** A span kind as a safe CSS class suffix. */
function cssIdent(s: string): string {
  return s.replace(/[^a-zA-Z0-9_-]/g, "_");
}
