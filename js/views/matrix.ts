// Attention matrix of the focused head on a canvas: causal triangle, wheel zoom and drag
// pan up to T = 4096 (max-pooled levels so no strong cell disappears), hover shows the
// query and key spans and the value, optional aggregation to spans or line items, and
// shift-drag selects a key range that becomes the selection of every view.

import { ColorScale, formatValue } from "../colors";
import { el, listen, select } from "../dom";
import { aggregateMatrix, kvGroupOf, MaxPyramid, paintMatrix, tokenGroups, Viewport, type TokenGroup } from "../layout";
import { matrixByte, quantizeSqrt, type MatrixAggregate, type QuantizedMatrix } from "../protocol";
import { selectionFromTokenRange, selectionTokenRange } from "../selection";
import type { ExplorerStore } from "../store";
import type { View } from "./view";

const PIXELS = 480;

interface Shown {
  source: QuantizedMatrix; // the head's token matrix (as received)
  drawn: QuantizedMatrix; // what is painted: tokens, or the aggregated groups
  groups: TokenGroup[] | null;
  pyramid: MaxPyramid;
  scale: ColorScale;
  lut: Uint8ClampedArray;
}

export class AttentionMatrixView implements View {
  readonly name = "matrix";
  readonly root: HTMLElement;
  readonly canvas: HTMLCanvasElement;
  private ctx: CanvasRenderingContext2D | null;
  private image: ImageData | null = null;
  private title: HTMLElement;
  private info: HTMLElement;
  private shown: Shown | null = null;
  private view: Viewport | null = null;
  private drawCount = 0;
  private frame = 0;
  private drag: { x: number; y: number; select: boolean; cell: { row: number; col: number } | null } | null = null;
  private brush: { c0: number; c1: number } | null = null;
  private cleanups: (() => void)[] = [];

  constructor(private readonly store: ExplorerStore) {
    const aggregate = select<MatrixAggregate>(
      [
        { value: "tokens", label: "tokens" },
        { value: "spans", label: "spans" },
        { value: "line_items", label: "line items" },
      ],
      store.get("settings").matrix_aggregate,
      (v) => store.set({ settings: { ...store.get("settings"), matrix_aggregate: v } }),
      { "data-testid": "matrix-aggregate" },
    );
    const reset = el("button", { class: "fw-button", type: "button", text: "Reset zoom", "data-testid": "matrix-reset-zoom" });
    reset.addEventListener("click", () => {
      this.view?.reset();
      this.requestDraw();
    });
    this.canvas = el("canvas", { class: "fw-matrix-canvas", "data-testid": "attention-matrix", width: PIXELS, height: PIXELS, "data-draw-count": 0 });
    this.ctx = this.canvas.getContext("2d");
    this.title = el("span", { class: "fw-title", text: "Attention" });
    this.info = el("div", { class: "fw-hover-info", "data-testid": "matrix-info" });
    this.root = el("div", { class: "fw-view fw-matrix", "data-testid": "matrix-view" }, [
      el("div", { class: "fw-view-header" }, [this.title, el("span", { class: "fw-label", text: "aggregate" }), aggregate, reset]),
      el("div", { class: "fw-hint", text: "wheel: zoom · drag: pan · shift-drag: select a key range · rows = queries, columns = keys" }),
      this.canvas,
      this.info,
    ]);
    this.cleanups.push(
      store.on("matrix", () => this.rebuild(true)),
      store.on("settings", () => {
        aggregate.value = store.get("settings").matrix_aggregate;
        this.rebuild(true);
      }),
      store.on("selection", () => this.requestDraw()),
      store.on("hover", () => this.requestDraw()),
      listen(this.canvas, "wheel", (ev) => this.wheel(ev), { passive: false }),
      listen(this.canvas, "mousedown", (ev) => this.down(ev)),
      listen(this.canvas, "mousemove", (ev) => this.move(ev)),
      listen(window, "mouseup", (ev) => this.up(ev)),
      listen(this.canvas, "mouseleave", () => {
        this.info.textContent = "";
      }),
    );
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
    let drawn = source;
    let groups: TokenGroup[] | null = null;
    if (mode !== "tokens") {
      groups = tokenGroups(this.store.get("statement_layout"), mode);
      const { bytes, table } = quantizeSqrt(aggregateMatrix(source, groups));
      drawn = { n: groups.length, bytes, table };
    }
    let maxByte = 0;
    const all = drawn.bytes;
    for (let i = 0; i < all.length; i++) if (all[i] > maxByte) maxByte = all[i];
    const scale = new ColorScale([], false, drawn.table[maxByte]);
    // Square-root colour scale: attention rows hold a few large values and many small ones.
    this.shown = { source, drawn, groups, pyramid: new MaxPyramid(drawn), scale, lut: scale.tableColors(drawn.table, 0.5) };
    if (resetView || !this.view || this.view.n !== drawn.n) this.view = new Viewport(drawn.n, PIXELS);
    this.canvas.setAttribute("data-layer", String(data.layer));
    this.canvas.setAttribute("data-head", String(data.head));
    this.title.textContent = `Attention L${data.layer} H${data.head} (KV ${kvGroupOf(data.head, g.num_heads, g.num_kv_heads)}) · ` +
      `max ${formatValue(scale.max)} (√ colour scale)${mode === "tokens" ? "" : ` · ${mode.replace("_", " ")}`}`;
    this.drawNow();
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
    paintMatrix(this.image.data, PIXELS, shown.pyramid, view, shown.lut);
    this.ctx.putImageData(this.image, 0, 0);
    this.drawOverlays(shown, view);
    this.drawCount += 1;
    this.canvas.setAttribute("data-draw-count", String(this.drawCount));
  }

  private drawOverlays(shown: Shown, view: Viewport): void {
    const ctx = this.ctx!;
    const toPx = (cell: number, origin: number) => (cell - origin) / view.cellsPerPixel;
    const range = selectionTokenRange(this.store.get("selection"), this.store.get("statement_layout"));
    if (range) {
      const [c0, c1] = shown.groups ? this.groupRange(shown.groups, range) : range;
      ctx.strokeStyle = "rgba(230, 120, 0, 0.9)";
      ctx.lineWidth = 1.5;
      const x0 = toPx(c0, view.x0);
      const x1 = toPx(c1, view.x0);
      ctx.strokeRect(x0, 0, Math.max(1, x1 - x0), PIXELS);
      const y0 = toPx(c0, view.y0);
      const y1 = toPx(c1, view.y0);
      ctx.strokeRect(0, y0, PIXELS, Math.max(1, y1 - y0));
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
      ctx.fillStyle = "#000";
      const first = Math.floor(view.x0);
      const firstRow = Math.floor(view.y0);
      const count = Math.ceil(PIXELS * view.cellsPerPixel) + 1;
      for (let r = firstRow; r < Math.min(shown.drawn.n, firstRow + count); r++) {
        for (let c = first; c < Math.min(r + 1, first + count); c++) {
          const v = shown.drawn.table[matrixByte(shown.drawn, r, c)];
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
    this.describe(cell);
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

  private describe(cell: { row: number; col: number } | null): void {
    const shown = this.shown;
    if (!cell || !shown) {
      this.info.textContent = "";
      return;
    }
    const { row, col } = cell;
    const m = shown.drawn;
    const masked = col > row;
    const value = masked ? 0 : m.table[matrixByte(m, row, col)];
    const name = (i: number) => (shown.groups ? shown.groups[i].label : this.tokenLabel(i));
    this.info.textContent = `query ${name(row)} → key ${name(col)}: ` + (masked ? "masked (future token)" : formatValue(value));
  }

  private tokenLabel(t: number): string {
    const layout = this.store.get("statement_layout");
    const tok = JSON.stringify(layout.tokens[t] ?? "");
    const s = layout.token_to_span[t];
    const span = s >= 0 ? layout.spans[s] : null;
    const where = t === layout.answer_position ? "answer position" : span ? `“${span.text}”` : "template";
    return `#${t} ${tok} (${where})`;
  }

  ready(): boolean {
    return this.drawCount > 0;
  }

  toPNG(): string {
    return this.canvas.toDataURL("image/png");
  }

  destroy(): void {
    for (const c of this.cleanups) c();
    this.root.remove();
  }
}
