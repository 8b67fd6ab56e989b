// The circuit view's data and layout, free of the DOM (unit-tested): the graph as Python
// sends it (finwidget.circuits' CircuitGraph.to_json()), checked; pruned for display (the
// strongest edges); placed in columns: spans at the left, one column per layer, the answer
// at the right; labels thinned so that none overlap.

import { thinLabels } from "./layout";

export type CircuitChannel = "q" | "k" | "v" | "direct" | "reads";
export type CircuitMethod = "attribution" | "path_patching";
export const CIRCUIT_CHANNELS: CircuitChannel[] = ["q", "k", "v", "direct", "reads"];

export interface CircuitNode {
  id: string;
  kind: "head" | "span" | "answer";
  layer?: number; // heads
  head?: number; // heads
  effect?: number; // heads: effect on the metric (NaN when the kernel sent none)
  label?: string; // spans and the answer
  token_range?: [number, number]; // spans: half-open token range in the prompt
}

export interface CircuitEdge {
  source: string;
  target: string;
  channel: CircuitChannel;
  effect: number;
  exact: boolean;
}

export interface Faithfulness {
  mode: "mean" | "zero";
  kept_when_outside_ablated: number;
  removed_when_circuit_ablated: number;
}

export interface CircuitGraph {
  metric: string;
  clean_value: number;
  method: CircuitMethod;
  nodes: CircuitNode[];
  edges: CircuitEdge[];
  faithfulness: Faithfulness | null;
}

/** What the view says a method is. */
export const METHOD_WORDS: Record<CircuitMethod, string> = {
  attribution: "first-order estimate (attribution patching)",
  path_patching: "exact path patching",
};

/** What each channel means, for the legend and the tooltip. */
export const CHANNEL_WORDS: Record<CircuitChannel, string> = {
  q: "Q: the earlier head's output feeds the later head's query",
  k: "K: feeds the later head's keys",
  v: "V: feeds the later head's values",
  direct: "direct: the head writes the answer's logit difference itself",
  reads: "reads: the head reads this line of the statement",
};

function num(v: unknown): number {
  // Strict JSON sends a non-finite float as null.
  return typeof v === "number" ? v : NaN;
}

/** The kernel's `graph` field -> a checked CircuitGraph; throws an Error naming the problem. */
export function parseCircuit(raw: unknown): CircuitGraph {
  if (raw === null || typeof raw !== "object") throw new Error("the circuit reply has no graph");
  const g = raw as Record<string, unknown>;
  if (!Array.isArray(g.nodes) || !Array.isArray(g.edges)) throw new Error("the circuit graph needs nodes and edges lists");
  const nodes: CircuitNode[] = [];
  const ids = new Set<string>();
  for (const item of g.nodes as Record<string, unknown>[]) {
    const id = String(item?.id ?? "");
    const kind = item?.kind;
    if (!id || (kind !== "head" && kind !== "span" && kind !== "answer")) throw new Error(`circuit node ${JSON.stringify(item?.id)} has kind ${JSON.stringify(kind)}`);
    const node: CircuitNode = { id, kind };
    if (kind === "head") {
      if (typeof item.layer !== "number" || typeof item.head !== "number") throw new Error(`circuit head node ${id} needs layer and head`);
      node.layer = item.layer;
      node.head = item.head;
      node.effect = num(item.effect);
    }
    if (typeof item.label === "string") node.label = item.label;
    if (Array.isArray(item.token_range) && item.token_range.length === 2) node.token_range = [Number(item.token_range[0]), Number(item.token_range[1])];
    if (ids.has(id)) throw new Error(`circuit node ${id} is listed twice`);
    ids.add(id);
    nodes.push(node);
  }
  const edges: CircuitEdge[] = [];
  for (const item of g.edges as Record<string, unknown>[]) {
    const source = String(item?.source ?? "");
    const target = String(item?.target ?? "");
    if (!ids.has(source) || !ids.has(target)) throw new Error(`circuit edge ${source} -> ${target} names a node the graph does not have`);
    const channel = item.channel as CircuitChannel;
    if (!CIRCUIT_CHANNELS.includes(channel)) throw new Error(`circuit edge ${source} -> ${target} has channel ${JSON.stringify(item.channel)}`);
    edges.push({ source, target, channel, effect: num(item.effect), exact: !!item.exact });
  }
  const f = g.faithfulness as Record<string, unknown> | null | undefined;
  const faithfulness: Faithfulness | null =
    f && typeof f === "object"
      ? { mode: f.mode === "zero" ? "zero" : "mean", kept_when_outside_ablated: num(f.kept_when_outside_ablated), removed_when_circuit_ablated: num(f.removed_when_circuit_ablated) }
      : null;
  return {
    metric: String(g.metric ?? "logit_diff"),
    clean_value: num(g.clean_value),
    method: g.method === "path_patching" ? "path_patching" : "attribution",
    nodes,
    edges,
    faithfulness,
  };
}

const strength = (v: number | undefined) => (v !== undefined && Number.isFinite(v) ? Math.abs(v) : -1);

/** The graph as shown: the `maxEdges` strongest edges (by |effect|) and the nodes they
 * join, the answer always. Without any edge kept, the `maxEdges` heads of largest |effect|. */
export function pruneCircuit(graph: CircuitGraph, maxEdges: number): { nodes: CircuitNode[]; edges: CircuitEdge[]; totalEdges: number } {
  const limit = Math.max(0, Math.floor(Number.isFinite(maxEdges) ? maxEdges : graph.edges.length));
  const edges = [...graph.edges].sort((a, b) => strength(b.effect) - strength(a.effect)).slice(0, limit);
  const keep = new Set<string>();
  for (const e of edges) {
    keep.add(e.source);
    keep.add(e.target);
  }
  if (!edges.length) {
    const heads = graph.nodes.filter((n) => n.kind === "head").sort((a, b) => strength(b.effect) - strength(a.effect));
    for (const n of heads.slice(0, Math.max(1, limit))) keep.add(n.id);
  }
  for (const n of graph.nodes) if (n.kind === "answer") keep.add(n.id);
  return { nodes: graph.nodes.filter((n) => keep.has(n.id)), edges, totalEdges: graph.edges.length };
}

export interface PlacedNode {
  node: CircuitNode;
  x: number;
  y: number;
  r: number; // radius (half the side in an export)
}

export interface PlacedEdge {
  edge: CircuitEdge;
  x1: number;
  y1: number;
  x2: number;
  y2: number;
  width: number;
}

export interface CircuitLayout {
  width: number;
  height: number;
  top: number; // y of the column labels' baseline is top - 10
  columns: { label: string; x: number; layer: number | null }[];
  nodes: Map<string, PlacedNode>;
  edges: PlacedEdge[];
  maxHeadEffect: number;
  maxEdgeEffect: number;
  /** The column labels drawn (none overlap): text, x of the anchor, how it is anchored. */
  columnLabels: { label: string; x: number; anchor: "start" | "middle" | "end" }[];
  /** The head nodes whose "H<n>" label is drawn above them (none overlap; the strongest first). */
  labelledHeads: Set<string>;
}

/** Width of `text` at `size` px, estimated (no DOM: exports and tests measure the same). */
export function textWidth(text: string, size: number): number {
  return text.length * size * 0.6;
}

/** Which column labels to draw: the two ends always (anchored outward over their
 * columns), the layers in between where they fit. */
function pickColumnLabels(columns: CircuitLayout["columns"], size = 11): CircuitLayout["columnLabels"] {
  const placed = columns.map((c, i) => {
    const w = textWidth(c.label, size);
    const anchor: "start" | "middle" | "end" = i === 0 ? "end" : i === columns.length - 1 ? "start" : "middle";
    const x = anchor === "end" ? c.x + 6 : anchor === "start" ? c.x - 6 : c.x;
    const left = anchor === "end" ? x - w : anchor === "start" ? x : x - w / 2;
    return { label: c.label, x, anchor, center: left + w / 2, extent: w, priority: i === 0 || i === columns.length - 1 ? 2 : 0 };
  });
  return thinLabels(placed, 4).map((i) => ({ label: placed[i].label, x: placed[i].x, anchor: placed[i].anchor }));
}

/** Which heads get a label: the strongest first, each kept only if its box above the node
 * stays clear of the labels already kept. */
function pickHeadLabels(nodes: PlacedNode[], size = 10): Set<string> {
  const boxes: [number, number, number, number][] = [];
  const kept = new Set<string>();
  const order = nodes.filter((p) => p.node.kind === "head").sort((a, b) => strength(b.node.effect) - strength(a.node.effect));
  for (const p of order) {
    const w = textWidth(`H${p.node.head}`, size);
    const box: [number, number, number, number] = [p.x - w / 2 - 1, p.y - p.r - 3 - size, p.x + w / 2 + 1, p.y - p.r - 1];
    if (boxes.some((b) => box[0] < b[2] && b[0] < box[2] && box[1] < b[3] && b[1] < box[3])) continue;
    boxes.push(box);
    kept.add(p.node.id);
  }
  return kept;
}

export interface LayoutOptions {
  width?: number; // total width (default 560)
  labelWidth?: number; // room for the span labels at the left (default 120)
  answerWidth?: number; // room for the answer's label at the right (default 90)
  rowGap?: number; // vertical space per node in the fullest column (default 30)
  minHeight?: number; // default 180
  maxRadius?: number; // largest head (default 13)
  minRadius?: number; // smallest head (default 4)
  allLayersUpTo?: number; // show every layer's column when the model has at most this many (default 16)
  minColumnGap?: number; // ... and when they are at least this far apart (default 34 px)
}

/** Where the endpoint of an edge meets its target: Q above the centre, K at it, V below,
 * so the three inputs of a head stay apart. */
function channelOffset(channel: CircuitChannel): number {
  return channel === "q" ? -0.6 : channel === "v" ? 0.6 : 0;
}

/** Columns, node positions and sizes, edge end points and widths of a (pruned) graph. */
export function layoutCircuit(shown: { nodes: CircuitNode[]; edges: CircuitEdge[] }, numLayers: number, options: LayoutOptions = {}): CircuitLayout {
  const width = options.width ?? 560;
  const labelW = options.labelWidth ?? 120;
  const answerW = options.answerWidth ?? 90;
  const rowGap = options.rowGap ?? 30;
  const rMin = options.minRadius ?? 4;
  const top = 26;
  const x0 = labelW + 10; // the span column
  const x1 = width - answerW - 10; // the answer column
  const spans = shown.nodes.filter((n) => n.kind === "span").sort((a, b) => (a.token_range?.[0] ?? 0) - (b.token_range?.[0] ?? 0));
  const heads = shown.nodes.filter((n) => n.kind === "head");
  const answers = shown.nodes.filter((n) => n.kind === "answer");
  const used = new Set(heads.map((n) => n.layer as number));
  // Every layer when they fit (the columns say where each head sits); else the layers the shown graph uses.
  const fitsAll = numLayers <= (options.allLayersUpTo ?? 16) && (x1 - x0) / (numLayers + 1) >= (options.minColumnGap ?? 34);
  const layers = fitsAll ? [...Array(numLayers).keys()] : [...used].sort((a, b) => a - b);
  const gap = (x1 - x0) / (layers.length + 1);
  const rMax = Math.max(rMin + 1, Math.min(options.maxRadius ?? 13, gap / 2 - 4));
  const byLayer = new Map<number, CircuitNode[]>();
  for (const n of heads) {
    const list = byLayer.get(n.layer as number) ?? [];
    list.push(n);
    byLayer.set(n.layer as number, list);
  }
  const fullest = Math.max(1, spans.length, answers.length, ...[...byLayer.values()].map((l) => l.length));
  const height = Math.max(options.minHeight ?? 180, top + fullest * rowGap + 10);
  const columns: CircuitLayout["columns"] = [];
  const nodes = new Map<string, PlacedNode>();
  let maxHead = 0;
  for (const n of heads) maxHead = Math.max(maxHead, strength(n.effect));
  maxHead = maxHead > 0 ? maxHead : 1;
  const place = (list: CircuitNode[], x: number, radius: (n: CircuitNode) => number) => {
    const band = height - top - 6;
    list.forEach((n, i) => {
      const y = top + ((i + 0.5) / list.length) * band;
      nodes.set(n.id, { node: n, x, y, r: radius(n) });
    });
  };
  columns.push({ label: "line items", x: x0, layer: null });
  place(spans, x0, () => 5);
  const inner = layers.length;
  layers.forEach((layer, i) => {
    const x = x0 + ((i + 1) / (inner + 1)) * (x1 - x0);
    columns.push({ label: `L${layer}`, x, layer });
    const list = (byLayer.get(layer) ?? []).sort((a, b) => (a.head as number) - (b.head as number));
    place(list, x, (n) => rMin + (rMax - rMin) * Math.sqrt(Math.max(0, strength(n.effect)) / maxHead));
  });
  columns.push({ label: "answer", x: x1, layer: null });
  place(answers, x1, () => 8);
  let maxEdge = 0;
  for (const e of shown.edges) maxEdge = Math.max(maxEdge, strength(e.effect));
  maxEdge = maxEdge > 0 ? maxEdge : 1;
  const edges: PlacedEdge[] = [];
  for (const e of shown.edges) {
    let a = nodes.get(e.source);
    let b = nodes.get(e.target);
    if (!a || !b) continue;
    // Drawn left to right whichever way the graph names it (a span a head reads is at the left).
    if (a.x > b.x) [a, b] = [b, a];
    edges.push({
      edge: e,
      x1: a.x + a.r,
      y1: a.y,
      x2: b.x - b.r - 2,
      y2: b.y + channelOffset(e.channel) * b.r,
      width: 1 + 5 * (Math.max(0, strength(e.effect)) / maxEdge),
    });
  }
  return {
    width,
    height,
    top,
    columns,
    nodes,
    edges,
    maxHeadEffect: maxHead,
    maxEdgeEffect: maxEdge,
    columnLabels: pickColumnLabels(columns),
    labelledHeads: pickHeadLabels([...nodes.values()]),
  };
}

/** A share as the view writes it ("94%"); "–" for no number. */
export function percent(v: number): string {
  return Number.isFinite(v) ? `${Math.round(100 * v)}%` : "–";
}
