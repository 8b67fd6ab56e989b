// Layout computations of the views, kept free of the DOM so they can be unit-tested:
// statement lines and spans, token -> span aggregation, span / line-item groups for the
// matrix, the layer x head grid's KV groups, and the matrix viewport (zoom, pan, max-pooled levels).

import { rowStart, type LayoutState, type QuantizedMatrix, type SpanRecord } from "./protocol";

// ---------------------------------------------------------------- statement text
/** One piece of a statement line: a span, or the plain text (spaces) between spans. */
export type LinePiece = { span: SpanRecord } | { gap: string };

/**
 * The statement as written, line by line: each line is the spans in it in text order with
 * the characters between them kept as gaps, so the page shows exactly the original text.
 */
export function statementLines(layout: LayoutState): LinePiece[][] {
  const byLine = new Map<number, SpanRecord[]>();
  for (const s of layout.spans) {
    // Line breaks are the layout itself; special tokens (chat markers) have no text to show.
    if (s.kind === "break" || s.kind === "special") continue;
    const list = byLine.get(s.line) ?? [];
    list.push(s);
    byLine.set(s.line, list);
  }
  const out: LinePiece[][] = [];
  for (const [line, start, end] of layout.lines) {
    const spans = (byLine.get(line) ?? []).slice().sort((a, b) => a.char_start - b.char_start);
    const pieces: LinePiece[] = [];
    let pos = start;
    for (const s of spans) {
      if (s.char_start > pos) pieces.push({ gap: layout.text.slice(pos, s.char_start) });
      pieces.push({ span: s });
      pos = Math.max(pos, s.char_end);
    }
    if (end > pos) pieces.push({ gap: layout.text.slice(pos, end) });
    out.push(pieces);
  }
  return out;
}

/**
 * Token values [T] -> span values [S]: "sum" adds the span's tokens (attention *to* keys:
 * a number's mass is the sum over its digits), "mean" averages them (attention *from*
 * query tokens).
 */
export function aggregateToSpans(values: ArrayLike<number>, layout: LayoutState, reduce: "sum" | "mean"): Float32Array {
  const out = new Float32Array(layout.spans.length);
  layout.spans.forEach((s, i) => {
    let acc = 0;
    let n = 0;
    for (let t = s.token_start; t < s.token_end && t < values.length; t++) {
      acc += values[t];
      n++;
    }
    out[i] = reduce === "mean" && n > 0 ? acc / n : acc;
  });
  return out;
}

// ---------------------------------------------------------------- matrix groups
export interface TokenGroup {
  label: string;
  tokens: number[]; // token positions, increasing
}

/**
 * Token groups for the aggregated matrix: one per span, or one per statement line
 * (line items), plus the answer position as its own last group.
 */
export function tokenGroups(layout: LayoutState, mode: "spans" | "line_items"): TokenGroup[] {
  const groups: TokenGroup[] = [];
  if (mode === "spans") {
    for (const s of layout.spans) {
      const tokens: number[] = [];
      for (let t = s.token_start; t < s.token_end; t++) tokens.push(t);
      if (tokens.length) groups.push({ label: s.text, tokens });
    }
  } else {
    const byLine = new Map<number, number[]>();
    for (const s of layout.spans) {
      const list = byLine.get(s.line) ?? [];
      for (let t = s.token_start; t < s.token_end; t++) list.push(t);
      byLine.set(s.line, list);
    }
    for (const [line, start, end] of layout.lines) {
      const tokens = byLine.get(line);
      if (!tokens || !tokens.length) continue;
      const item = layout.line_items.find((li) => li.line === line);
      const label = item ? item.name : layout.text.slice(start, end).trim().slice(0, 24);
      groups.push({ label, tokens: tokens.sort((a, b) => a - b) });
    }
  }
  groups.push({ label: "answer position", tokens: [layout.answer_position] });
  return groups;
}

/**
 * Aggregate a square attention matrix to groups: cell (g, h) = mean over query tokens of
 * group g of the summed attention onto key tokens of group h. Returns [G * G] row-major.
 */
export function aggregateMatrix(m: QuantizedMatrix, groups: TokenGroup[]): Float32Array {
  const G = groups.length;
  const out = new Float32Array(G * G);
  for (let g = 0; g < G; g++) {
    const qs = groups[g].tokens;
    for (let h = 0; h < G; h++) {
      const ks = groups[h].tokens;
      let acc = 0;
      for (const q of qs) {
        const row = rowStart(m, q);
        for (const k of ks) acc += !m.packed || k <= q ? m.table[m.bytes[row + k]] : m.table[0];
      }
      out[g * G + h] = qs.length ? acc / qs.length : 0;
    }
  }
  return out;
}

// ---------------------------------------------------------------- grid
/** The KV head a query head reads (grouped-query attention): h // (H / Hkv). */
export function kvGroupOf(head: number, numHeads: number, numKvHeads: number): number {
  const perGroup = Math.max(1, Math.floor(numHeads / Math.max(1, numKvHeads)));
  return Math.floor(head / perGroup);
}

// ---------------------------------------------------------------- matrix viewport
/**
 * Max-pooled copies of a square byte matrix: level k has cells of 2^k x 2^k original cells.
 * The matrix is causal (zero above the diagonal), so only blocks on or below the diagonal
 * are pooled; the rest stay zero (and are painted as masked anyway).
 */
export class MaxPyramid {
  /** Level 0 is the matrix itself (packed lower triangle or dense); coarser levels are dense. */
  readonly levels: { size: number; bytes: Uint8Array; packed: boolean }[] = [];

  constructor(m: QuantizedMatrix, minSize = 64) {
    let size = m.n;
    let bytes = m.bytes;
    let packed = !!m.packed;
    this.levels.push({ size, bytes, packed });
    while (size > minSize) {
      const half = Math.ceil(size / 2);
      const next = new Uint8Array(half * half);
      for (let r2 = 0; r2 < half; r2++) {
        const ra = 2 * r2;
        const a = packed ? (ra * (ra + 1)) / 2 : ra * size;
        const hasB = ra + 1 < size;
        const b = packed ? ((ra + 1) * (ra + 2)) / 2 : a + size;
        const out = r2 * half;
        const last = Math.min(r2, half - 1);
        for (let c2 = 0; c2 <= last; c2++) {
          const c = 2 * c2;
          let v = bytes[a + c];
          const hasC = c + 1 < size;
          // Row ra's cell c + 1 lies above the diagonal when c2 == r2 (absent when packed).
          if (hasC && (!packed || c + 1 <= ra) && bytes[a + c + 1] > v) v = bytes[a + c + 1];
          if (hasB) {
            if (bytes[b + c] > v) v = bytes[b + c];
            if (hasC && bytes[b + c + 1] > v) v = bytes[b + c + 1];
          }
          next[out + c2] = v;
        }
      }
      size = half;
      bytes = next;
      packed = false;
      this.levels.push({ size, bytes, packed });
    }
  }

  /** The finest level whose cells are at least `cellsPerPixel` original cells wide (max pooled). */
  levelFor(cellsPerPixel: number): number {
    let k = 0;
    while (k + 1 < this.levels.length && 2 ** (k + 1) <= cellsPerPixel) k++;
    return k;
  }
}

/**
 * What part of an n x n matrix a square canvas of `pixels` shows: cell (x0, y0) at the
 * top-left corner and `cellsPerPixel` cells per pixel (<= n / pixels when zoomed out fully).
 */
export class Viewport {
  x0 = 0;
  y0 = 0;
  cellsPerPixel: number;

  constructor(
    readonly n: number,
    readonly pixels: number,
  ) {
    this.cellsPerPixel = n / pixels;
  }

  get maxCellsPerPixel(): number {
    return this.n / this.pixels;
  }

  /** Most zoomed in: 1/24 cell per pixel, i.e. 24 pixels per cell. */
  get minCellsPerPixel(): number {
    return Math.min(1 / 24, this.maxCellsPerPixel);
  }

  get zoom(): number {
    return this.maxCellsPerPixel / this.cellsPerPixel;
  }

  /** Cell (column = key, row = query) under a canvas pixel, or null outside the matrix. */
  cellAt(px: number, py: number): { row: number; col: number } | null {
    const col = Math.floor(this.x0 + px * this.cellsPerPixel);
    const row = Math.floor(this.y0 + py * this.cellsPerPixel);
    if (col < 0 || row < 0 || col >= this.n || row >= this.n) return null;
    return { row, col };
  }

  /** Zoom by `factor` (>1 zooms in) keeping the cell under pixel (px, py) fixed. */
  zoomAt(px: number, py: number, factor: number): void {
    const cx = this.x0 + px * this.cellsPerPixel;
    const cy = this.y0 + py * this.cellsPerPixel;
    const next = Math.max(this.minCellsPerPixel, Math.min(this.maxCellsPerPixel, this.cellsPerPixel / factor));
    this.cellsPerPixel = next;
    this.x0 = cx - px * next;
    this.y0 = cy - py * next;
    this.clamp();
  }

  /** Move the view by a drag of (dx, dy) pixels. */
  panBy(dx: number, dy: number): void {
    this.x0 -= dx * this.cellsPerPixel;
    this.y0 -= dy * this.cellsPerPixel;
    this.clamp();
  }

  reset(): void {
    this.cellsPerPixel = this.maxCellsPerPixel;
    this.x0 = 0;
    this.y0 = 0;
  }

  clamp(): void {
    const span = this.pixels * this.cellsPerPixel;
    const maxStart = Math.max(0, this.n - span);
    this.x0 = Math.max(0, Math.min(maxStart, this.x0));
    this.y0 = Math.max(0, Math.min(maxStart, this.y0));
  }
}

/**
 * Paint the visible part of the matrix into an RGBA buffer of pixels x pixels, using the
 * max-pooled level that matches the zoom (so a single strong cell never disappears) and a
 * 256-entry colour table indexed by the quantized byte. Cells above the diagonal (masked by
 * causality) are painted `masked`.
 */
export function paintMatrix(
  out: Uint8ClampedArray,
  pixels: number,
  pyramid: MaxPyramid,
  view: Viewport,
  lut: Uint8ClampedArray,
  masked: [number, number, number] = [238, 238, 238],
): void {
  const k = pyramid.levelFor(view.cellsPerPixel);
  const { size, bytes, packed } = pyramid.levels[k];
  const f = 2 ** k;
  // Level column of every pixel column (-1: outside the matrix).
  const colOf = new Int32Array(pixels);
  for (let px = 0; px < pixels; px++) {
    const col = Math.floor(view.x0 + px * view.cellsPerPixel);
    colOf[px] = col >= view.n ? -1 : Math.min(size - 1, Math.floor(col / f));
  }
  for (let py = 0; py < pixels; py++) {
    const row = Math.floor(view.y0 + py * view.cellsPerPixel);
    const lr = Math.min(size - 1, Math.floor(row / f));
    const base = packed ? (lr * (lr + 1)) / 2 : lr * size;
    let o = 4 * py * pixels;
    for (let px = 0; px < pixels; px++, o += 4) {
      const lc = colOf[px];
      if (row >= view.n || lc < 0) {
        out[o] = 255;
        out[o + 1] = 255;
        out[o + 2] = 255;
      } else if (lc > lr) {
        // A pooled block that straddles the diagonal still holds real values: only blocks
        // entirely above it are masked.
        out[o] = masked[0];
        out[o + 1] = masked[1];
        out[o + 2] = masked[2];
      } else {
        const b = 4 * bytes[base + lc];
        out[o] = lut[b];
        out[o + 1] = lut[b + 1];
        out[o + 2] = lut[b + 2];
      }
      out[o + 3] = 255;
    }
  }
}

// ---------------------------------------------------------------- axis labels
/** One candidate label along an axis: its centre and extent in display pixels, and how
 * much it matters (higher wins when two would overlap). */
export interface AxisCandidate {
  center: number;
  extent: number;
  priority: number;
}

/**
 * Which labels of an axis to draw so that none overlap: greedy by priority (then by
 * position, so equal priorities thin evenly from the start), keeping a label only if it
 * stays `minGap` pixels clear of every label already kept. Returns the kept indices in
 * increasing order. Pure (unit-tested): the views call it on every zoom.
 */
export function thinLabels(candidates: AxisCandidate[], minGap = 2): number[] {
  const order = candidates.map((_, i) => i);
  order.sort((a, b) => candidates[b].priority - candidates[a].priority || candidates[a].center - candidates[b].center);
  const kept: number[] = [];
  for (const i of order) {
    const c = candidates[i];
    let clear = true;
    for (const k of kept) {
      const o = candidates[k];
      if (Math.abs(c.center - o.center) < (c.extent + o.extent) / 2 + minGap) {
        clear = false;
        break;
      }
    }
    if (clear) kept.push(i);
  }
  return kept.sort((a, b) => a - b);
}

/**
 * The cells of one matrix axis that a viewport shows: `[first, last]` inclusive, and the
 * centre of cell `i` in display pixels (`display` = the canvas's shown size in CSS pixels).
 */
export function visibleCells(view: Viewport, origin: number, display: number): { first: number; last: number; center: (i: number) => number } {
  const span = view.pixels * view.cellsPerPixel;
  const first = Math.max(0, Math.floor(origin));
  const last = Math.min(view.n - 1, Math.ceil(origin + span) - 1);
  const k = display / view.pixels / view.cellsPerPixel;
  return { first, last, center: (i: number) => (i + 0.5 - origin) * k };
}

/** A label no longer than `max` characters (an ellipsis marks the cut); whitespace trimmed. */
export function shortLabel(text: string, max = 16): string {
  const t = text.replace(/\s+/g, " ").trim();
  return t.length > max ? `${t.slice(0, max - 1)}…` : t;
}
