// Layer flow / decision pathway: for the selection, how its attention spreads over the
// statement's spans in every layer (mean over heads), how much attention it gets, and the
// logit-lens logit difference after each layer (where the decision forms). Dragging over
// layers selects a layer range that filters the grid; double-click clears it.

import { joinCaption, stateCaption } from "../caption";
import { ColorScale, css, diverging, divergingBar, formatValue, getRampBackground, isDarkBackground, rampWords, sequential } from "../colors";
import { el, listen } from "../dom";
import { frame, INK, MUTED, type Figure, type Prim } from "../export";
import { shortLabel, thinLabels } from "../layout";
import { ColorBar, type LegendSpec } from "../legend";
import { hasSelection, layerRangeFromBrush, selectionLabel } from "../selection";
import type { ExplorerStore } from "../store";
import { Tooltip } from "../tooltip";
import { exportsOf, messageFigure, type View } from "./view";

const WIDTH = 480;
const LABEL_W = 34;
const LENS_W = 120;

export class LayerFlowView implements View {
  readonly name = "flow";
  readonly root: HTMLElement;
  readonly canvas: HTMLCanvasElement;
  private ctx: CanvasRenderingContext2D | null;
  private info: HTMLElement;
  private caption: HTMLElement;
  private drawn = false;
  private rowH = 12;
  private brush: { a: number; b: number } | null = null;
  private cleanups: (() => void)[] = [];
  private colorBar = new ColorBar("flow-legend");
  private axis: HTMLElement;
  private tip: Tooltip;
  readonly toPNG: () => string;
  readonly toSVG: () => string;

  constructor(private readonly store: ExplorerStore) {
    const L = store.get("geometry").num_layers;
    this.rowH = Math.max(6, Math.min(26, Math.floor(420 / Math.max(1, L))));
    this.canvas = el("canvas", { class: "fw-flow-canvas", width: WIDTH, height: this.rowH * L + 20, "data-testid": "layer-flow-canvas" });
    this.ctx = this.canvas.getContext("2d");
    this.info = el("div", { class: "fw-hover-info", "data-testid": "flow-info" });
    this.caption = el("div", { class: "fw-caption" });
    const clear = el("button", { class: "fw-button", type: "button", text: "All layers", "data-testid": "clear-layer-range" });
    clear.addEventListener("click", () => store.set({ layer_range: [] }));
    this.root = el("div", { class: "fw-view fw-flow", "data-testid": "layer-flow" }, [
      el("div", { class: "fw-view-header" }, [el("span", { class: "fw-title", text: "Layer flow" }), clear]),
      this.caption,
      el("div", { class: "fw-hint", text: "rows = layers · left: where the selection's attention goes (spans, mean over heads) · right: logit-lens logit difference · drag over layers to filter the grid" }),
      el("div", { class: "fw-flow-stack" }, [
        (this.axis = el("div", { class: "fw-axis fw-axis-cols fw-flow-axis", "data-testid": "flow-span-labels", "aria-hidden": "true" })),
        this.canvas,
      ]),
      this.colorBar.root,
      this.info,
    ]);
    this.canvas.setAttribute("role", "img");
    this.canvas.setAttribute("aria-label", "layer flow: per layer, where the selection's attention goes over the statement's spans, and the logit-lens logit difference");
    this.tip = new Tooltip(this.info, this.root);
    const exports = exportsOf(() => this.figure());
    this.toPNG = exports.toPNG;
    this.toSVG = exports.toSVG;
    this.cleanups.push(
      store.on("flow", () => this.draw()),
      store.on("layer_range", () => this.draw()),
      store.on("selection", () => this.draw()),
      listen(this.canvas, "mousedown", (ev) => {
        const l = this.layerAt(ev);
        if (l !== null) this.brush = { a: l, b: l };
        ev.preventDefault();
      }),
      listen(this.canvas, "mousemove", (ev) => {
        const l = this.layerAt(ev);
        if (this.brush && l !== null && l !== this.brush.b) {
          this.brush.b = l;
          this.draw();
        }
        this.describe(l, ev);
      }),
      listen(window, "mouseup", () => {
        if (!this.brush) return;
        const range = layerRangeFromBrush(this.brush.a, this.brush.b);
        this.brush = null;
        store.set({ layer_range: range });
      }),
      listen(this.canvas, "dblclick", () => store.set({ layer_range: [] })),
      listen(this.canvas, "mouseleave", () => this.tip.hide()),
    );
    if (typeof ResizeObserver !== "undefined") {
      const ro = new ResizeObserver(() => this.updateAxis());
      ro.observe(this.canvas);
      this.cleanups.push(() => ro.disconnect());
    }
    this.draw();
  }

  private layerAt(ev: MouseEvent): number | null {
    const rect = this.canvas.getBoundingClientRect();
    const y = (ev.clientY - rect.top) * (rect.height ? this.canvas.height / rect.height : 1) - 16;
    const l = Math.floor(y / this.rowH);
    const L = this.store.get("geometry").num_layers;
    return l >= 0 && l < L ? l : null;
  }

  private describe(layer: number | null, ev: MouseEvent): void {
    const flow = this.store.flow;
    if (layer === null || !flow) {
      this.tip.hide();
      return;
    }
    const rect = this.canvas.getBoundingClientRect();
    const x = (ev.clientX - rect.left) * (rect.width ? this.canvas.width / rect.width : 1);
    const spreadW = WIDTH - LABEL_W - LENS_W - 8;
    let spanText = "";
    if (x >= LABEL_W && x < LABEL_W + spreadW && flow.numSpans > 0) {
      const s = Math.floor(((x - LABEL_W) / spreadW) * flow.numSpans);
      const span = this.store.get("statement_layout").spans[s];
      if (span) spanText = ` · “${span.text}”: ${formatValue(flow.spread[layer * flow.numSpans + s])}`;
    }
    this.info.textContent =
      `layer ${layer}: attention on selection ${formatValue(flow.selectionMass[layer])}` +
      ` · logit-lens logit diff ${formatValue(flow.logitLens[layer])}${spanText}`;
    this.tip.show(this.info.textContent, ev.clientX, ev.clientY);
  }

  /** Span names above the spread columns, thinned to the shown width (line items first). */
  private updateAxis(): void {
    const flow = this.store.flow;
    if (!flow) return;
    const layout = this.store.get("statement_layout");
    const S = flow.numSpans;
    const shown = this.canvas.clientWidth || WIDTH;
    const k = shown / WIDTH;
    const spreadW = WIDTH - LABEL_W - LENS_W - 8;
    const cands = layout.spans.slice(0, S).map((sp, i) => ({
      center: (LABEL_W + ((i + 0.5) / S) * spreadW) * k,
      extent: 12,
      priority: sp.kind === "line_item_name" ? 3 : sp.kind === "number" ? 2 : sp.kind === "punct" || sp.kind === "break" ? -1 : 1,
    }));
    const kept = thinLabels(cands, 1).filter((i) => cands[i].priority >= 0);
    this.axis.style.width = `${shown}px`;
    this.axis.replaceChildren(
      ...kept.map((i) => {
        const node = el("span", { class: "fw-axis-label", "data-index": i, title: layout.spans[i].text, text: shortLabel(layout.spans[i].text, 14) });
        node.style.left = `${((100 * cands[i].center) / shown).toFixed(3)}%`;
        return node;
      }),
    );
  }

  /** The difference run (ablated − clean) is signed: diverging colours around 0. */
  private signed(): boolean {
    return this.store.attentionRun === "difference";
  }

  private legend(): LegendSpec | null {
    if (!this.store.flow) return null;
    if (this.signed())
      return {
        title: "attention from the selection, per layer (mean over heads): ablated − clean",
        unit: "share of the layer's largest |change|",
        min: -1,
        max: 1,
        colorAt: divergingBar,
        low: "blue = ablated attends less than clean",
        high: "red = ablated attends more · logit lens: red = towards 'increase', blue = towards 'decrease'",
      };
    return {
      title: "attention from the selection, per layer (mean over heads)",
      unit: "share of the layer's largest span",
      min: 0,
      max: 1,
      colorAt: sequential,
      low: `${rampWords().less} = less`,
      high: `${rampWords().more} = more attention from the selection · logit lens: red = towards 'increase', blue = towards 'decrease'`,
    };
  }

  /** Layers down, spans across (labelled where they fit), the logit lens beside, the
   * selection marked, the colour bar and the state. */
  figure(withState = true): Figure {
    const flow = this.store.flow;
    const caption = withState ? stateCaption(this.store) : "";
    const layout = this.store.get("statement_layout");
    const sel = this.store.get("selection");
    const who = hasSelection(sel) ? `“${selectionLabel(sel, layout)}”` : "the answer position";
    const title = this.store.get("direction") === "to"
      ? `Layer flow: which spans look at ${who}, layer by layer`
      : `Layer flow: where ${who} looks, layer by layer`;
    if (!flow) return messageFigure(title, "no layer flow yet", caption);
    const L = this.store.get("geometry").num_layers;
    const S = flow.numSpans;
    const left = 36;
    const top = 90;
    const spreadW = 460;
    const lensW = 140;
    const rowH = Math.max(8, Math.min(28, Math.floor(420 / Math.max(1, L))));
    const prims: Prim[] = [];
    const cands = layout.spans.slice(0, S).map((sp, i) => ({
      center: ((i + 0.5) / S) * spreadW,
      extent: 11,
      priority: sp.kind === "line_item_name" ? 2 : sp.kind === "number" ? 1 : 0,
    }));
    for (const i of thinLabels(cands, 1)) {
      prims.push({ t: "text", x: left + cands[i].center + 3, y: top - 4, text: shortLabel(layout.spans[i].text, 14), size: 9, fill: INK, rotate: -90 });
    }
    for (let l = 0; l < L; l++) {
      const y = top + l * rowH;
      prims.push({ t: "text", x: left - 4, y: y + rowH / 2 + 3, text: `L${l}`, size: 9, anchor: "end", fill: INK });
      const row = flow.spread.subarray(l * S, (l + 1) * S);
      const scale = new ColorScale(row, this.signed());
      for (let s = 0; s < S; s++) {
        const x0 = (s / S) * spreadW;
        prims.push({ t: "rect", x: left + x0, y, w: spreadW / S + 0.3, h: rowH - 1, fill: scale.css(row[s]) });
      }
    }
    if (hasSelection(sel) && S > 0) {
      prims.push({ t: "rect", x: left + (sel.start / S) * spreadW, y: top - 3, w: Math.max(2, ((sel.end - sel.start) / S) * spreadW), h: 2, fill: "#e67800" });
    }
    let m = 0;
    for (const v of flow.logitLens) if (Number.isFinite(v)) m = Math.max(m, Math.abs(v));
    m = m || 1;
    const zero = left + spreadW + 16 + lensW / 2;
    prims.push({ t: "text", x: zero, y: top - 6, text: "logit-lens logit diff", size: 9, anchor: "middle", fill: MUTED });
    prims.push({ t: "line", x1: zero, y1: top, x2: zero, y2: top + L * rowH, stroke: "#999" });
    flow.logitLens.forEach((v, l) => {
      if (v === null || !Number.isFinite(v)) return;
      const w = (v / m) * (lensW / 2 - 4);
      prims.push({ t: "rect", x: Math.min(zero, zero + w), y: top + l * rowH + 1, w: Math.abs(w), h: rowH - 3, fill: css(diverging(v / m)) });
      prims.push({ t: "text", x: v >= 0 ? zero - 3 : zero + 3, y: top + l * rowH + rowH / 2 + 3, text: formatValue(v), size: 9, anchor: v >= 0 ? "end" : "start", fill: INK });
    });
    prims.push({ t: "text", x: left + spreadW / 2, y: 10, text: "spans of the statement →", size: 10, anchor: "middle", fill: MUTED });
    return frame({
      title,
      body: { width: zero + lensW / 2, height: top + L * rowH, prims },
      legend: this.legend(),
      caption: joinCaption("each layer's row is scaled to its own largest span", caption),
    });
  }

  private draw(): void {
    const ctx = this.ctx;
    const flow = this.store.flow;
    const L = this.store.get("geometry").num_layers;
    if (!ctx) return;
    // The page's background (the ramp starts from it: 0 = no colour), ink that reads on it.
    const dark = isDarkBackground();
    const ink = dark ? "#ddd" : "#333";
    ctx.fillStyle = css(getRampBackground());
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (!flow) {
      this.caption.textContent = "loading…";
      return;
    }
    this.caption.textContent = flow.label;
    this.colorBar.update(this.legend());
    this.updateAxis();
    const top = 16;
    const spreadW = WIDTH - LABEL_W - LENS_W - 8;
    ctx.font = "10px sans-serif";
    ctx.fillStyle = ink;
    ctx.fillText("spans →", LABEL_W, 11);
    ctx.fillText("logit-lens logit diff", WIDTH - LENS_W, 11);
    const S = flow.numSpans;
    // Each layer row scaled to its own max, so the spread in weak layers stays visible.
    for (let l = 0; l < L; l++) {
      const y = top + l * this.rowH;
      ctx.fillStyle = ink;
      ctx.fillText(`L${l}`, 2, y + this.rowH - 2);
      const row = flow.spread.subarray(l * S, (l + 1) * S);
      const scale = new ColorScale(row, this.signed());
      for (let s = 0; s < S; s++) {
        const x0 = LABEL_W + Math.floor((s / S) * spreadW);
        const x1 = LABEL_W + Math.floor(((s + 1) / S) * spreadW);
        ctx.fillStyle = scale.css(row[s]);
        ctx.fillRect(x0, y, Math.max(1, x1 - x0), this.rowH - 1);
      }
    }
    // Logit lens: bars around zero.
    let m = 0;
    for (const v of flow.logitLens) if (Number.isFinite(v)) m = Math.max(m, Math.abs(v));
    m = m || 1;
    const zero = WIDTH - LENS_W / 2 - 4;
    ctx.strokeStyle = "#999";
    ctx.beginPath();
    ctx.moveTo(zero, top);
    ctx.lineTo(zero, top + L * this.rowH);
    ctx.stroke();
    flow.logitLens.forEach((v, l) => {
      if (v === null || !Number.isFinite(v)) return;
      const w = (v / m) * (LENS_W / 2 - 4);
      ctx.fillStyle = css(diverging(v / m));
      ctx.fillRect(Math.min(zero, zero + w), top + l * this.rowH + 1, Math.abs(w), this.rowH - 3);
      if (this.rowH >= 12) {
        // The number itself, on the side away from the bar.
        ctx.fillStyle = dark ? "#eee" : "#222";
        ctx.font = "9px sans-serif";
        ctx.textAlign = v >= 0 ? "right" : "left";
        ctx.fillText(formatValue(v), v >= 0 ? zero - 2 : zero + 2, top + l * this.rowH + this.rowH - 3);
        ctx.textAlign = "left";
      }
    });
    // The selection's spans, marked above the rows.
    const sel = this.store.get("selection");
    if (hasSelection(sel) && S > 0) {
      ctx.fillStyle = "rgba(230, 120, 0, 0.95)";
      const x0 = LABEL_W + Math.floor((sel.start / S) * spreadW);
      const x1 = LABEL_W + Math.floor((sel.end / S) * spreadW);
      ctx.fillRect(x0, top - 4, Math.max(2, x1 - x0), 3);
    }
    // Layer range and brush.
    const range = this.brush ? layerRangeFromBrush(this.brush.a, this.brush.b) : this.store.get("layer_range");
    if (range.length === 2) {
      ctx.strokeStyle = "rgba(230, 120, 0, 0.95)";
      ctx.lineWidth = 2;
      ctx.strokeRect(1, top + range[0] * this.rowH, WIDTH - 2, (range[1] - range[0] + 1) * this.rowH);
      ctx.lineWidth = 1;
    }
    this.drawn = true;
    this.root.setAttribute("data-drawn", "1");
  }

  ready(): boolean {
    return this.drawn;
  }

  destroy(): void {
    for (const c of this.cleanups) c();
    this.tip.destroy();
    this.root.remove();
  }
}
