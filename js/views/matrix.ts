// Attention matrix of the focused head on a canvas: causal triangle, wheel zoom and drag
// pan up to T = 4096 (max-pooled levels so no strong cell disappears), axes labelled with
// tokens, spans or line items (thinned so labels never overlap), a colour bar, a tooltip
// at the cursor, keyboard operation (arrows move a cursor cell, Enter selects its key,
// +/- zoom), optional aggregation to spans or line items, and shift-drag selects a key
// range that becomes the selection of every view.

import { ColorScale, divergingBar, formatValue, maskedColor, rampWords, sequential, textColorOn, type RGB } from "../colors";
import { DIRECTION_WORDS, joinCaption, stateCaption } from "../caption";
import { el, listen, ownKeys, select } from "../dom";
import { frame, INK, MUTED, type Figure, type Prim } from "../export";
import {
  aggregateMatrix,
  kvGroupOf,
  MaxPyramid,
  paintMatrix,
  shortLabel,
  thinLabels,
  tokenGroups,
  Viewport,
  visibleCells,
  type TokenGroup,
} from "../layout";
import { ColorBar, type LegendSpec } from "../legend";
import { matrixByte, quantizeSqrt, type MatrixAggregate, type QuantizedMatrix } from "../protocol";
import { selectionFromTokenRange, selectionTokenRange } from "../selection";
import type { ExplorerStore } from "../store";
import { Tooltip } from "../tooltip";
import { exportsOf, messageFigure, type View } from "./view";

const PIXELS = 480;
/** The room one axis label takes along its axis (CSS pixels). */
const LABEL_EXTENT = 12;
/** Square-root colour scale: attention rows hold a few large values and many small ones. */
const GAMMA = 0.5;

interface Shown {
  source: QuantizedMatrix; // the head's token matrix (as received)
  drawn: QuantizedMatrix; // what is painted: tokens, or the aggregated groups
  groups: TokenGroup[] | null;
  pyramid: MaxPyramid;
  scale: ColorScale;
  lut: Uint8ClampedArray;
}

interface AxisLabel {
  text: string;
  full: string;
  priority: number;
  /** A token inside a span (a digit of a number): labelled only when every token fits. */
  inner?: boolean;
}

/** The colour a lookup table gives byte `b`. */
function lutColor(lut: Uint8ClampedArray, b: number): RGB {
  return [lut[4 * b], lut[4 * b + 1], lut[4 * b + 2]];
}

/**
 * Signed values -> linear bytes around 0 (byte 0 = -m, 255 = +m, m = the largest |value|)
 * and the table of their values: a difference of aggregated attention keeps its sign.
 */
export function quantizeSigned(values: ArrayLike<number>): { bytes: Uint8Array; table: Float32Array } {
  let m = 0;
  for (let i = 0; i < values.length; i++) if (Number.isFinite(values[i]) && Math.abs(values[i]) > m) m = Math.abs(values[i]);
  if (m === 0) m = 1;
  const bytes = new Uint8Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = Number.isFinite(values[i]) ? values[i] : 0;
    bytes[i] = Math.round(((v / m + 1) / 2) * 255);
  }
  const table = new Float32Array(256);
  for (let b = 0; b < 256; b++) table[b] = -m + (2 * m * b) / 255;
  return { bytes, table };
}

export class AttentionMatrixView implements View {
  readonly name = "matrix";
  readonly root: HTMLElement;
  readonly canvas: HTMLCanvasElement;
  private ctx: CanvasRenderingContext2D | null;
  private image: ImageData | null = null;
  private title: HTMLElement;
  private info: HTMLElement;
  private tip: Tooltip;
  private caption: HTMLElement;
  private rowAxis: HTMLElement;
  private colAxis: HTMLElement;
  private colorBar = new ColorBar("matrix-legend");
  private shown: Shown | null = null;
  private view: Viewport | null = null;
  private drawCount = 0;
  private frame = 0;
  private drag: { x: number; y: number; select: boolean; cell: { row: number; col: number } | null } | null = null;
  private brush: { c0: number; c1: number } | null = null;
  /** The keyboard cursor (a cell), drawn while the canvas has the focus. */
  private cursor: { row: number; col: number } | null = null;
  private cleanups: (() => void)[] = [];
  readonly toPNG: () => string;
  readonly toSVG: () => string;

  constructor(private readonly store: ExplorerStore) {
    const aggregate = select<MatrixAggregate>(
      [
        { value: "tokens", label: "tokens" },
        { value: "spans", label: "spans" },
        { value: "line_items", label: "line items" },
      ],
      store.get("settings").matrix_aggregate,
      (v) => store.set({ settings: { ...store.get("settings"), matrix_aggregate: v } }),
      { "data-testid": "matrix-aggregate", "aria-label": "aggregate the matrix to" },
    );
    const reset = el("button", { class: "fw-button", type: "button", text: "Reset zoom", "data-testid": "matrix-reset-zoom" });
    reset.addEventListener("click", () => {
      this.view?.reset();
      this.requestDraw();
    });
    this.canvas = el("canvas", {
      class: "fw-matrix-canvas",
      "data-testid": "attention-matrix",
      width: PIXELS,
      height: PIXELS,
      "data-draw-count": 0,
      tabindex: 0,
      role: "application",
      // The notebook must not take the arrows, Enter and space (Lumino skips its shortcuts here).
      "data-lm-suppress-shortcuts": "true",
      "aria-roledescription": "attention matrix",
      "aria-label": "attention matrix: arrow keys move the cursor cell, Enter or space selects its key, + and - zoom, 0 resets",
    });
    this.ctx = this.canvas.getContext("2d");
    this.title = el("span", { class: "fw-title", text: "Attention" });
    this.info = el("div", { class: "fw-hover-info", "data-testid": "matrix-info" });
    this.caption = el("div", { class: "fw-caption", "data-testid": "matrix-caption" });
    this.rowAxis = el("div", { class: "fw-axis fw-axis-rows", "data-testid": "matrix-row-labels", "aria-hidden": "true" });
    this.colAxis = el("div", { class: "fw-axis fw-axis-cols", "data-testid": "matrix-col-labels", "aria-hidden": "true" });
    const corner = el("div", { class: "fw-axis-corner" }, [
      el("span", { class: "fw-axis-title", text: "keys (attended to) →" }),
      el("span", { class: "fw-axis-title", text: "↓ queries (attending)" }),
    ]);
    const frameEl = el("div", { class: "fw-matrix-frame" }, [corner, this.colAxis, this.rowAxis, this.canvas]);
    this.root = el("div", { class: "fw-view fw-matrix", "data-testid": "matrix-view" }, [
      el("div", { class: "fw-view-header" }, [this.title, el("span", { class: "fw-label", text: "aggregate" }), aggregate, reset]),
      this.caption,
      el("div", {
        class: "fw-hint",
        text: "rows = queries (the token that attends), columns = keys (the token attended to) · wheel or +/−: zoom · drag: pan · shift-drag: select a key range · keyboard: arrows move, Enter selects the key",
      }),
      frameEl,
      this.colorBar.root,
      this.info,
    ]);
    this.tip = new Tooltip(this.info, this.root);
    const exports = exportsOf(() => this.figure());
    this.toPNG = exports.toPNG;
    this.toSVG = exports.toSVG;
    this.cleanups.push(
      store.on("matrix", () => this.rebuild(true)),
      store.on("settings", () => {
        aggregate.value = store.get("settings").matrix_aggregate;
        this.rebuild(true);
      }),
      store.on("selection", () => this.requestDraw()),
      store.on("direction", () => this.requestDraw()),
      store.on("hover", () => this.requestDraw()),
      listen(this.canvas, "wheel", (ev) => this.wheel(ev), { passive: false }),
      listen(this.canvas, "mousedown", (ev) => this.down(ev)),
      listen(this.canvas, "mousemove", (ev) => this.move(ev)),
      listen(window, "mouseup", (ev) => this.up(ev)),
      listen(this.canvas, "mouseleave", () => this.tip.hide()),
      ownKeys(this.canvas, (ev) => this.key(ev)),
      listen(this.canvas, "focus", () => {
        if (!this.cursor && this.shown) {
          const n = this.shown.drawn.n;
          this.cursor = { row: n - 1, col: 0 };
        }
        this.requestDraw();
        this.describeCursor();
      }),
      listen(this.canvas, "blur", () => {
        this.tip.hide();
        this.requestDraw();
      }),
    );
    if (typeof ResizeObserver !== "undefined") {
      const ro = new ResizeObserver(() => this.updateAxes());
      ro.observe(this.canvas);
      this.cleanups.push(() => ro.disconnect());
    }
    this.rebuild(true);
  }

  private rebuild(resetView: boolean): void {
    const data = this.store.matrix;
    const g = this.store.get("geometry");
    if (!data) {
      this.title.textContent = "Attention (loading…)";
      return;
    }
    const mode = this.store.get("settings").matrix_aggregate;
    const source = data.matrix;
    // The difference run (ablated − clean) is signed: diverging colours around 0.
    const signed = this.store.attentionRun === "difference";
    let drawn = source;
    let groups: TokenGroup[] | null = null;
    if (mode !== "tokens") {
      groups = tokenGroups(this.store.get("statement_layout"), mode);
      const aggregated = aggregateMatrix(source, groups);
      const { bytes, table } = signed ? quantizeSigned(aggregated) : quantizeSqrt(aggregated);
      drawn = { n: groups.length, bytes, table };
    }
    let maxByte = 0;
    let minByte = 255;
    const all = drawn.bytes;
    for (let i = 0; i < all.length; i++) {
      if (all[i] > maxByte) maxByte = all[i];
      if (all[i] < minByte) minByte = all[i];
    }
    const scale = signed
      ? new ColorScale([drawn.table[minByte] ?? 0, drawn.table[maxByte] ?? 0], true)
      : new ColorScale([], false, drawn.table[maxByte]);
    this.shown = { source, drawn, groups, pyramid: new MaxPyramid(drawn), scale, lut: scale.tableColors(drawn.table, GAMMA) };
    if (resetView || !this.view || this.view.n !== drawn.n) this.view = new Viewport(drawn.n, PIXELS);
    if (this.cursor && (this.cursor.row >= drawn.n || this.cursor.col >= drawn.n)) this.cursor = null;
    this.canvas.setAttribute("data-layer", String(data.layer));
    this.canvas.setAttribute("data-head", String(data.head));
    this.title.textContent = `Attention of head L${data.layer} H${data.head} (KV ${kvGroupOf(data.head, g.num_heads, g.num_kv_heads)})` +
      `${mode === "tokens" ? "" : ` · ${mode.replace("_", " ")}`}`;
    this.colorBar.update(this.legend());
    this.drawNow();
  }

  /** The colour bar: attention weight, 0 .. the largest cell, square-root colours. */
  private legend(): LegendSpec | null {
    const shown = this.shown;
    if (!shown) return null;
    const mode = this.store.get("settings").matrix_aggregate;
    const title = mode === "tokens" ? "attention weight" : "attention (summed over the key group, mean over the query group)";
    if (shown.scale.signed)
      return {
        title: `${title}: ablated − clean`,
        unit: "attention mass",
        min: -shown.scale.max,
        max: shown.scale.max,
        colorAt: (t) => divergingBar(t, GAMMA),
        low: "blue = ablated attends less than clean",
        high: "red = ablated attends more (√ scale)",
      };
    return {
      title,
      unit: "attention mass",
      min: 0,
      max: shown.scale.max,
      colorAt: (t) => sequential(t ** GAMMA),
      low: `${rampWords().less} = less`,
      high: `${rampWords().more} = more attention (√ scale)`,
    };
  }

  private requestDraw(): void {
    if (this.frame) return;
    const raf = typeof requestAnimationFrame === "function" ? requestAnimationFrame : (fn: FrameRequestCallback) => setTimeout(() => fn(0), 16) as unknown as number;
    this.frame = raf(() => {
      this.frame = 0;
      this.drawNow();
    });
  }

  /** Paint the visible part, the selection band and the brush; bump data-draw-count. */
  drawNow(): void {
    const shown = this.shown;
    const view = this.view;
    if (!shown || !view || !this.ctx) return;
    if (!this.image) this.image = this.ctx.createImageData(PIXELS, PIXELS);
    paintMatrix(this.image.data, PIXELS, shown.pyramid, view, shown.lut, maskedColor());
    this.ctx.putImageData(this.image, 0, 0);
    this.drawOverlays(shown, view);
    this.drawCursor(view);
    this.updateAxes();
    this.drawCount += 1;
    this.canvas.setAttribute("data-draw-count", String(this.drawCount));
  }

  private drawOverlays(shown: Shown, view: Viewport): void {
    const ctx = this.ctx!;
    const toPx = (cell: number, origin: number) => (cell - origin) / view.cellsPerPixel;
    const range = selectionTokenRange(this.store.get("selection"), this.store.get("statement_layout"));
    const dir = this.store.get("direction");
    this.caption.textContent = range ? DIRECTION_WORDS[dir].matrix : "select a span to highlight it (rows when looking from it, columns when looking to it)";
    if (range) {
      // The direction switch decides which band: the selection's rows (as query: where it
      // looks) or its columns (as key: who looks at it).
      const [c0, c1] = shown.groups ? this.groupRange(shown.groups, range) : range;
      ctx.strokeStyle = "rgba(230, 120, 0, 0.95)";
      ctx.lineWidth = 2;
      if (dir === "to") {
        const x0 = toPx(c0, view.x0);
        const x1 = toPx(c1, view.x0);
        ctx.strokeRect(x0, 0, Math.max(1, x1 - x0), PIXELS);
      } else {
        const y0 = toPx(c0, view.y0);
        const y1 = toPx(c1, view.y0);
        ctx.strokeRect(0, y0, PIXELS, Math.max(1, y1 - y0));
      }
      ctx.lineWidth = 1;
    }
    // The span under the pointer in the statement view: its rows and columns, dashed.
    const hovered = this.store.hoverSpan;
    const span = hovered === null ? undefined : this.store.get("statement_layout").spans[hovered];
    if (span) {
      const [h0, h1] = shown.groups ? this.groupRange(shown.groups, [span.token_start, span.token_end]) : [span.token_start, span.token_end];
      ctx.save();
      ctx.setLineDash([3, 3]);
      ctx.strokeStyle = "rgba(120, 60, 160, 0.9)";
      ctx.lineWidth = 1;
      const x0 = toPx(h0, view.x0);
      const y0 = toPx(h0, view.y0);
      ctx.strokeRect(x0, 0, Math.max(1, toPx(h1, view.x0) - x0), PIXELS);
      ctx.strokeRect(0, y0, PIXELS, Math.max(1, toPx(h1, view.y0) - y0));
      ctx.restore();
    }
    if (this.brush) {
      ctx.fillStyle = "rgba(230, 120, 0, 0.25)";
      const lo = Math.min(this.brush.c0, this.brush.c1);
      const hi = Math.max(this.brush.c0, this.brush.c1) + 1;
      ctx.fillRect(toPx(lo, view.x0), 0, (hi - lo) / view.cellsPerPixel, PIXELS);
    }
    // Cell labels once cells are large enough to hold text (canvas text only).
    const pxPerCell = 1 / view.cellsPerPixel;
    if (pxPerCell >= 22) {
      ctx.font = "9px sans-serif";
      const first = Math.floor(view.x0);
      const firstRow = Math.floor(view.y0);
      const count = Math.ceil(PIXELS * view.cellsPerPixel) + 1;
      for (let r = firstRow; r < Math.min(shown.drawn.n, firstRow + count); r++) {
        for (let c = first; c < Math.min(r + 1, first + count); c++) {
          const byte = matrixByte(shown.drawn, r, c);
          const v = shown.drawn.table[byte];
          ctx.fillStyle = textColorOn(lutColor(shown.lut, byte));
          ctx.fillText(v.toFixed(2), toPx(c, view.x0) + 2, toPx(r, view.y0) + pxPerCell / 2 + 3);
        }
      }
    }
  }

  /** The group indices covering a token range (for overlays in aggregated mode). */
  private groupRange(groups: TokenGroup[], [t0, t1]: [number, number]): [number, number] {
    let lo = Infinity;
    let hi = -Infinity;
    groups.forEach((g, i) => {
      if (g.tokens.some((t) => t >= t0 && t < t1)) {
        lo = Math.min(lo, i);
        hi = Math.max(hi, i + 1);
      }
    });
    return Number.isFinite(lo) ? [lo, hi] : [0, 0];
  }

  private pixel(ev: MouseEvent): { x: number; y: number } {
    const rect = this.canvas.getBoundingClientRect();
    const sx = rect.width ? PIXELS / rect.width : 1;
    const sy = rect.height ? PIXELS / rect.height : 1;
    return { x: (ev.clientX - rect.left) * sx, y: (ev.clientY - rect.top) * sy };
  }

  private wheel(ev: WheelEvent): void {
    if (!this.view) return;
    ev.preventDefault();
    const p = this.pixel(ev);
    this.view.zoomAt(p.x, p.y, ev.deltaY < 0 ? 1.25 : 0.8);
    this.requestDraw();
  }

  private down(ev: MouseEvent): void {
    if (ev.button !== 0 || !this.view) return;
    const p = this.pixel(ev);
    const cell = this.view.cellAt(p.x, p.y);
    this.drag = { x: ev.clientX, y: ev.clientY, select: ev.shiftKey, cell };
    if (ev.shiftKey && cell) this.brush = { c0: cell.col, c1: cell.col };
    ev.preventDefault();
  }

  private move(ev: MouseEvent): void {
    const view = this.view;
    const shown = this.shown;
    if (!view || !shown) return;
    const p = this.pixel(ev);
    if (this.drag && !this.drag.select) {
      view.panBy(ev.clientX - this.drag.x, ev.clientY - this.drag.y);
      this.drag.x = ev.clientX;
      this.drag.y = ev.clientY;
      this.requestDraw();
    }
    const cell = view.cellAt(p.x, p.y);
    if (this.drag?.select && this.brush && cell) {
      this.brush.c1 = cell.col;
      this.requestDraw();
    }
    this.describe(cell, ev);
  }

  private up(ev: MouseEvent): void {
    const drag = this.drag;
    this.drag = null;
    if (!drag) return;
    if (drag.select && this.brush && this.shown) {
      const lo = Math.min(this.brush.c0, this.brush.c1);
      const hi = Math.max(this.brush.c0, this.brush.c1);
      this.brush = null;
      const layout = this.store.get("statement_layout");
      const groups = this.shown.groups;
      const [t0, t1] = groups ? [groups[lo].tokens[0], groups[hi].tokens[groups[hi].tokens.length - 1]] : [lo, hi];
      const sel = selectionFromTokenRange(t0, t1, layout);
      this.store.set({ selection: sel });
      this.requestDraw();
    }
    void ev;
  }

  /** The hover text of a cell. */
  private cellText(cell: { row: number; col: number }): string {
    const shown = this.shown!;
    const { row, col } = cell;
    const m = shown.drawn;
    const masked = col > row;
    const value = masked ? 0 : m.table[matrixByte(m, row, col)];
    const name = (i: number) => (shown.groups ? shown.groups[i].label : this.tokenLabel(i));
    return `query ${name(row)}\n→ key ${name(col)}\n` + (masked ? "masked (a future token: causal attention)" : `attention ${formatValue(value)}`);
  }

  private describe(cell: { row: number; col: number } | null, ev?: MouseEvent): void {
    if (!cell || !this.shown || !ev) {
      this.tip.hide();
      return;
    }
    this.tip.show(this.cellText(cell), ev.clientX, ev.clientY);
  }

  private describeCursor(): void {
    const cur = this.cursor;
    const view = this.view;
    if (!cur || !view || !this.shown) return;
    const rect = this.canvas.getBoundingClientRect();
    const k = (rect.width || PIXELS) / PIXELS / view.cellsPerPixel;
    const text = this.cellText(cur);
    this.canvas.setAttribute("aria-description", text.replace(/\n/g, " "));
    this.tip.show(text, rect.left + (cur.col + 1 - view.x0) * k, rect.top + (cur.row + 1 - view.y0) * k);
  }

  private tokenLabel(t: number): string {
    const layout = this.store.get("statement_layout");
    const tok = JSON.stringify(layout.tokens[t] ?? "");
    const s = layout.token_to_span[t];
    const span = s >= 0 ? layout.spans[s] : null;
    const where = t === layout.answer_position ? "answer position" : span ? `“${span.text}”` : "template";
    return `#${t} ${tok} (${where})`;
  }

  // ------------------------------------------------------------ axes
  /** The label of row / column `i`: a span's text at its first token (line-item names
   * first when thinning), the token's text elsewhere; the group's name when aggregated. */
  private axisLabel(i: number): AxisLabel {
    const shown = this.shown!;
    const layout = this.store.get("statement_layout");
    if (shown.groups) {
      const g = shown.groups[i];
      const answer = g.tokens.length === 1 && g.tokens[0] === layout.answer_position;
      return { text: shortLabel(g.label, 18), full: g.label, priority: answer ? 2 : 1 };
    }
    if (i === layout.answer_position) return { text: "answer pos.", full: "answer position", priority: 4 };
    const s = layout.token_to_span[i];
    const span = s >= 0 ? layout.spans[s] : null;
    if (span && span.token_start === i) {
      // Punctuation and line breaks say little on an axis: shown only when every token fits.
      const quiet = span.kind === "punct" || span.kind === "break";
      const priority = span.kind === "line_item_name" ? 3 : span.kind === "number" ? 2 : quiet ? 0 : 1;
      return { text: shortLabel(span.text, 16), full: span.text, priority, inner: quiet };
    }
    const tok = (layout.tokens[i] ?? "").replace(/\s+/g, " ").trim() || "␣";
    return { text: shortLabel(tok, 12), full: layout.tokens[i] ?? "", priority: 0, inner: !!span };
  }

  /** Labels of one axis for the current viewport, thinned for the shown size. */
  private axisLabels(origin: number, display: number, extent = LABEL_EXTENT): { index: number; at: number; label: AxisLabel }[] {
    const view = this.view!;
    const cells = visibleCells(view, origin, display);
    const cands: { index: number; at: number; label: AxisLabel }[] = [];
    // A label at either end is moved inwards by up to half its extent, so the axis box
    // never cuts it (and thinning sees where it is really drawn).
    const half = extent / 2;
    const everyTokenFits = cells.center(1) - cells.center(0) >= extent + 1;
    for (let i = cells.first; i <= cells.last; i++) {
      const at = cells.center(i);
      if (at < 0 || at > display) continue;
      const label = this.axisLabel(i);
      if (label.inner && !everyTokenFits) continue;
      cands.push({ index: i, at: Math.max(half, Math.min(display - half, at)), label });
    }
    const kept = thinLabels(cands.map((c) => ({ center: c.at, extent, priority: c.label.priority })), 1);
    return kept.map((k) => cands[k]);
  }

  private updateAxes(): void {
    if (!this.shown || !this.view) return;
    const display = this.canvas.clientWidth || PIXELS;
    const put = (axis: HTMLElement, origin: number, vertical: boolean) => {
      const labels = this.axisLabels(origin, display);
      axis.replaceChildren(
        ...labels.map((l) => {
          const node = el("span", { class: "fw-axis-label", "data-index": l.index, title: l.label.full, text: l.label.text });
          const pct = `${((100 * l.at) / display).toFixed(3)}%`;
          if (vertical) node.style.left = pct;
          else node.style.top = pct;
          return node;
        }),
      );
    };
    put(this.rowAxis, this.view.y0, false);
    put(this.colAxis, this.view.x0, true);
  }

  // ------------------------------------------------------------ keyboard
  private drawCursor(view: Viewport): void {
    const cur = this.cursor;
    if (!cur || !this.ctx || typeof document === "undefined" || document.activeElement !== this.canvas) return;
    const k = 1 / view.cellsPerPixel;
    const x = (cur.col - view.x0) * k;
    const y = (cur.row - view.y0) * k;
    const ctx = this.ctx;
    ctx.save();
    ctx.strokeStyle = "#e67800";
    ctx.lineWidth = 2;
    ctx.strokeRect(x - 1, y - 1, Math.max(4, k) + 2, Math.max(4, k) + 2);
    ctx.restore();
  }

  /** Keep the cursor cell inside the viewport (pan as little as needed). */
  private revealCursor(): void {
    const cur = this.cursor;
    const view = this.view;
    if (!cur || !view) return;
    const span = view.pixels * view.cellsPerPixel;
    if (cur.col < view.x0) view.x0 = cur.col;
    else if (cur.col + 1 > view.x0 + span) view.x0 = cur.col + 1 - span;
    if (cur.row < view.y0) view.y0 = cur.row;
    else if (cur.row + 1 > view.y0 + span) view.y0 = cur.row + 1 - span;
    view.clamp();
  }

  private key(ev: KeyboardEvent): void {
    const shown = this.shown;
    const view = this.view;
    if (!shown || !view) return;
    const n = shown.drawn.n;
    const cur = this.cursor ?? { row: n - 1, col: 0 };
    const moves: Record<string, [number, number]> = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    let handled = true;
    if (ev.key in moves) {
      const [dr, dc] = moves[ev.key];
      const step = ev.shiftKey ? 10 : 1;
      this.cursor = { row: Math.max(0, Math.min(n - 1, cur.row + dr * step)), col: Math.max(0, Math.min(n - 1, cur.col + dc * step)) };
      this.revealCursor();
    } else if (ev.key === "Home") {
      this.cursor = { row: cur.row, col: 0 };
      this.revealCursor();
    } else if (ev.key === "End") {
      this.cursor = { row: cur.row, col: Math.min(cur.row, n - 1) };
      this.revealCursor();
    } else if (ev.key === "+" || ev.key === "=" || ev.key === "-" || ev.key === "_") {
      const k = 1 / view.cellsPerPixel;
      view.zoomAt((cur.col + 0.5 - view.x0) * k, (cur.row + 0.5 - view.y0) * k, ev.key === "+" || ev.key === "=" ? 1.5 : 1 / 1.5);
      this.cursor = cur;
      this.revealCursor();
    } else if (ev.key === "0") {
      view.reset();
    } else if (ev.key === "Enter" || ev.key === " ") {
      this.cursor = cur;
      const layout = this.store.get("statement_layout");
      const g = shown.groups;
      const [t0, t1] = g ? [g[cur.col].tokens[0], g[cur.col].tokens[g[cur.col].tokens.length - 1]] : [cur.col, cur.col];
      this.store.set({ selection: selectionFromTokenRange(t0, t1, layout) });
    } else handled = false;
    if (!handled) return;
    ev.preventDefault();
    ev.stopPropagation();
    this.drawNow();
    this.describeCursor();
  }

  // ------------------------------------------------------------ export
  /** The matrix as the viewport shows it, with both axes labelled, the colour bar and the state. */
  figure(withState = true): Figure {
    const shown = this.shown;
    const view = this.view;
    const caption = withState ? stateCaption(this.store) : "";
    if (!shown || !view) return messageFigure("Attention", "no attention matrix drawn yet", caption);
    const size = PIXELS;
    const left = 130;
    const top = 110;
    const prims: Prim[] = [];
    const rgba = new Uint8ClampedArray(size * size * 4);
    const lut = shown.scale.tableColors(shown.drawn.table, GAMMA); // on the export's page
    paintMatrix(rgba, size, shown.pyramid, view, lut, maskedColor());
    prims.push({ t: "raster", x: left, y: top, w: size, h: size, width: size, height: size, rgba });
    prims.push({ t: "rect", x: left, y: top, w: size, h: size, stroke: "#999", lw: 0.5 });
    const range = selectionTokenRange(this.store.get("selection"), this.store.get("statement_layout"));
    if (range) {
      const [c0, c1] = shown.groups ? this.groupRange(shown.groups, range) : range;
      const k = 1 / view.cellsPerPixel;
      if (this.store.get("direction") === "to") prims.push({ t: "rect", x: left + (c0 - view.x0) * k, y: top, w: (c1 - c0) * k, h: size, stroke: "#e67800", lw: 2 });
      else prims.push({ t: "rect", x: left, y: top + (c0 - view.y0) * k, w: size, h: (c1 - c0) * k, stroke: "#e67800", lw: 2 });
    }
    const pxPerCell = 1 / view.cellsPerPixel;
    if (pxPerCell >= 22) {
      const first = Math.floor(view.x0);
      const firstRow = Math.floor(view.y0);
      const count = Math.ceil(size * view.cellsPerPixel) + 1;
      for (let r = firstRow; r < Math.min(shown.drawn.n, firstRow + count); r++)
        for (let c = first; c < Math.min(r + 1, first + count); c++) {
          const byte = matrixByte(shown.drawn, r, c);
          const v = shown.drawn.table[byte];
          const fill = textColorOn(lutColor(lut, byte)) === "#fff" ? "#fff" : INK;
          prims.push({ t: "text", x: left + (c - view.x0 + 0.5) * pxPerCell, y: top + (r - view.y0 + 0.5) * pxPerCell + 3, text: v.toFixed(2), size: 9, anchor: "middle", fill });
        }
    }
    for (const l of this.axisLabels(view.y0, size, 11)) {
      prims.push({ t: "text", x: left - 4, y: top + l.at + 3, text: l.label.text, size: 9, anchor: "end", fill: INK });
    }
    for (const l of this.axisLabels(view.x0, size, 11)) {
      prims.push({ t: "text", x: left + l.at + 3, y: top - 4, text: l.label.text, size: 9, fill: INK, rotate: -90 });
    }
    prims.push({ t: "text", x: left + size / 2, y: 10, text: "keys (attended to) →", size: 10, anchor: "middle", fill: MUTED });
    prims.push({ t: "text", x: 12, y: top + size / 2, text: "queries (attending) →", size: 10, anchor: "middle", fill: MUTED, rotate: 90 });
    const data = this.store.matrix;
    const mode = this.store.get("settings").matrix_aggregate;
    const zoom = view.zoom > 1.001 ? ` · zoom ×${view.zoom.toFixed(1)}` : "";
    return frame({
      title: `Attention of head L${data?.layer ?? "?"} H${data?.head ?? "?"}${mode === "tokens" ? "" : ` (${mode.replace("_", " ")})`}${zoom}`,
      body: { width: left + size, height: top + size, prims },
      legend: this.legend(),
      caption: joinCaption(caption, range ? DIRECTION_WORDS[this.store.get("direction")].matrix : ""),
    });
  }

  ready(): boolean {
    return this.drawCount > 0;
  }

  destroy(): void {
    for (const c of this.cleanups) c();
    this.tip.destroy();
    this.root.remove();
  }
}
