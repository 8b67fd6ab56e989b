// Selection logic shared by the views: spans, span ranges, token ranges, layer ranges,
// and the ablation set as a value. Pure functions (unit-tested without a DOM).

import type { Ablation, AblationMode, LayoutState, Selection } from "./protocol";

export function hasSelection(sel: Selection | null | undefined): sel is Required<Selection> {
  return !!sel && typeof sel.start === "number" && typeof sel.end === "number" && sel.end > sel.start;
}

export function isSpanSelected(sel: Selection | null | undefined, span: number): boolean {
  return hasSelection(sel) && span >= sel.start && span < sel.end;
}

/**
 * The selection after a click on span `span`.
 * - plain click on the only selected span: clears the selection;
 * - plain click elsewhere: selects that span alone;
 * - shift-click: extends the current selection to cover `span` (a range of spans).
 */
export function selectionAfterClick(current: Selection | null | undefined, span: number, extend: boolean): Selection {
  if (extend && hasSelection(current)) {
    return { start: Math.min(current.start, span), end: Math.max(current.end, span + 1) };
  }
  if (hasSelection(current) && current.start === span && current.end === span + 1) return {};
  return { start: span, end: span + 1 };
}

/** A brushed range between two spans (either order) as a selection. */
export function selectionFromBrush(a: number, b: number): Selection {
  return { start: Math.min(a, b), end: Math.max(a, b) + 1 };
}

/** Half-open token range covered by a span selection, or null when nothing is selected. */
export function selectionTokenRange(sel: Selection | null | undefined, layout: LayoutState): [number, number] | null {
  if (!hasSelection(sel)) return null;
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = sel.start; i < sel.end && i < layout.spans.length; i++) {
    const s = layout.spans[i];
    if (s.token_start < lo) lo = s.token_start;
    if (s.token_end > hi) hi = s.token_end;
  }
  return Number.isFinite(lo) && hi > lo ? [lo, hi] : null;
}

/** The spans that tokens t0..t1 (inclusive, either order) belong to, as a selection; {} if none. */
export function selectionFromTokenRange(t0: number, t1: number, layout: LayoutState): Selection {
  const lo = Math.max(0, Math.min(t0, t1));
  const hi = Math.min(layout.token_to_span.length - 1, Math.max(t0, t1));
  let first = Infinity;
  let last = -Infinity;
  for (let t = lo; t <= hi; t++) {
    const s = layout.token_to_span[t];
    if (s < 0) continue;
    if (s < first) first = s;
    if (s > last) last = s;
  }
  return Number.isFinite(first) ? { start: first, end: last + 1 } : {};
}

/** Short human label of the selection ("Net income", "12,345 … 2023"). */
export function selectionLabel(sel: Selection | null | undefined, layout: LayoutState, maxChars = 48): string {
  if (!hasSelection(sel)) return "";
  const first = layout.spans[sel.start];
  const last = layout.spans[Math.min(sel.end, layout.spans.length) - 1];
  if (!first || !last) return "";
  const text = layout.text.slice(first.char_start, last.char_end).replace(/\s+/g, " ").trim();
  return text.length > maxChars ? `${text.slice(0, maxChars - 1)}…` : text;
}

/** Layer range from a brush between two layers (inclusive, either order). */
export function layerRangeFromBrush(a: number, b: number): number[] {
  return [Math.min(a, b), Math.max(a, b)];
}

export function layerInRange(range: number[] | null | undefined, layer: number): boolean {
  if (!range || range.length !== 2) return true;
  return layer >= range[0] && layer <= range[1];
}

// ---------------------------------------------------------------- ablation set
export function findAblation(set: Ablation[], layer: number, head: number): Ablation | undefined {
  return set.find((a) => a.layer === layer && a.head === head);
}

/** The set with head (layer, head) restored if it was ablated, else ablated with `mode`
 * (carrying `value` when given: pass it only for a mode that takes one). Sorted. */
export function toggleAblation(set: Ablation[], layer: number, head: number, mode: AblationMode, value?: number): Ablation[] {
  if (findAblation(set, layer, head)) return set.filter((a) => !(a.layer === layer && a.head === head));
  return sortAblations([...set, ablation(layer, head, mode, value)]);
}

/** The set with one head's mode changed (`value` as in toggleAblation). */
export function setAblationMode(set: Ablation[], layer: number, head: number, mode: AblationMode, value?: number): Ablation[] {
  return set.map((a) => (a.layer === layer && a.head === head ? ablation(layer, head, mode, value) : a));
}

function ablation(layer: number, head: number, mode: AblationMode, value?: number): Ablation {
  return value === undefined ? { layer, head, mode } : { layer, head, mode, value };
}

export function sortAblations(set: Ablation[]): Ablation[] {
  return [...set].sort((a, b) => a.layer - b.layer || a.head - b.head);
}

/** "L2 H4 (zero)", or with a value "L2 H4 (scale ×2)" (`valueSymbol`: the mode's, from the catalogue). */
export function ablationLabel(a: Ablation, valueSymbol = "×"): string {
  const mode = a.value === undefined ? a.mode : `${a.mode} ${valueSymbol}${a.value}`;
  return `L${a.layer} H${a.head} (${mode})`;
}
