// Circuit view: which heads feed which on the way from the statement's line items to the
// answer (finwidget.circuits.find_circuit). Columns are layers, heads are nodes sized by
// |effect| and coloured by its sign, edges are coloured and dashed by composition channel
// (Q / K / V, direct to the answer, a line item read) and as wide as |effect|. Click a head
// to focus it everywhere; shift/alt-click (or Ablate mode) ablates or restores it, as in
// the grid (same ablation set, same undo).

import { joinCaption, stateCaption } from "../caption";
import { OFFLINE_REASON } from "../controls";
import { channelStyle, css, diverging, divergingBar, formatValue, inkColor, withRampBackground } from "../colors";
import { el, select, setFlag } from "../dom";
import { frame, INK, MUTED, SVG_NS, type Figure, type Prim } from "../export";
import { shortLabel } from "../layout";
import { ColorBar, type LegendSpec } from "../legend";
import {
  CHANNEL_WORDS,
  CIRCUIT_CHANNELS,
  layoutCircuit,
  METHOD_WORDS,
  percent,
  pruneCircuit,
  type CircuitChannel,
  type CircuitEdge,
  type CircuitGraph,
  type CircuitLayout,
  type CircuitNode,
} from "../circuit";
import { findAblation, toggleAblation } from "../selection";
import type { ExplorerStore } from "../store";
import { Tooltip } from "../tooltip";
import { exportsOf, messageFigure, type View } from "./view";

/** The choices of the "edges shown" menu; "all" keeps every edge the kernel sent. */
export const EDGE_CHOICES = ["5", "10", "20", "40", "all"] as const;
export const DEFAULT_EDGES = "20";
/** The drawing's width when the page gives none (and its bounds otherwise). */
const WIDTH = 560;
const MIN_WIDTH = 400;
const MAX_WIDTH = 760;

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number> = {}): SVGElementTagNameMap[K] {
  const node = document.createElementNS(SVG_NS, tag) as SVGElementTagNameMap[K];
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

/** The channel as the tooltip names it. */
const CHANNEL_SHORT: Record<CircuitChannel, string> = {
  q: "Q (the later head's query)",
  k: "K (the later head's keys)",
  v: "V (the later head's values)",
  direct: "direct (written to the answer's logits)",
  reads: "reads (the head attends to this line item)",
};

/** What the metric is called ("logit_diff" -> "logit difference"). */
function metricWords(metric: string): string {
  return metric === "logit_diff" ? "logit difference" : metric.replace(/_/g, " ");
}

/** The share of the answer a faithful circuit keeps alone and removes when ablated (find_circuit's
 * default faithfulness_target grows the circuit until both reach it, when it can). */
export const FAITHFUL_SHARE = 0.9;

/** The method and faithfulness line the view writes above the graph. */
export function circuitSummary(graph: CircuitGraph, answerLabel: string): string {
  const pair = answerPair(answerLabel);
  const metric = `${metricWords(graph.metric)}${pair ? ` (${pair[0]} − ${pair[1]})` : answerLabel ? ` (${answerLabel})` : ""}`;
  const parts = [`Method: ${METHOD_WORDS[graph.method]} · clean ${metric}: ${formatValue(graph.clean_value)}`];
  const f = graph.faithfulness;
  if (f) {
    parts.push(
      `Faithfulness (${f.mode} ablation): the circuit alone keeps ${percent(f.kept_when_outside_ablated)} of it; ablating the circuit removes ${percent(f.removed_when_circuit_ablated)}` +
        (f.kept_when_outside_ablated < FAITHFUL_SHARE || f.removed_when_circuit_ablated < FAITHFUL_SHARE
          ? ` (below the ${percent(FAITHFUL_SHARE)} a faithful circuit needs: read its heads as a partial explanation)`
          : ""),
    );
  } else parts.push("Faithfulness: not measured");
  return parts.join("\n");
}

export class CircuitView implements View {
  readonly name = "circuit";
  readonly root: HTMLElement;
  private canvas: SVGSVGElement;
  private summary: HTMLElement;
  private message: HTMLElement;
  private hint: HTMLElement;
  private info: HTMLElement;
  private channels: HTMLElement;
  private colorBar = new ColorBar("circuit-legend");
  private tip: Tooltip;
  private edgesMenu: HTMLSelectElement;
  private exactButton: HTMLButtonElement;
  private modeButton: HTMLButtonElement;
  private ablateShown: HTMLButtonElement;
  private ablateMode = false;
  private drawn = false;
  private maxEdges: string = DEFAULT_EDGES;
  private layout: CircuitLayout | null = null;
  private drawnWidth = 0;
  private cleanups: (() => void)[] = [];
  readonly toPNG: () => string;
  readonly toSVG: () => string;

  constructor(private readonly store: ExplorerStore) {
    this.edgesMenu = select(
      EDGE_CHOICES.map((c) => ({ value: c, label: c === "all" ? "all edges" : `${c} strongest edges` })),
      this.maxEdges,
      (v) => {
        this.maxEdges = v;
        this.draw();
      },
      { "data-testid": "circuit-edges", "aria-label": "how many edges to show", title: "how many edges to show (the strongest by |effect|)" },
    );
    this.exactButton = el("button", {
      class: "fw-button",
      type: "button",
      "data-testid": "circuit-exact",
      text: "Exact (path patching)",
      title: "recompute the graph with exact path patching (one patched run per edge: slower than the first-order estimate)",
    });
    this.exactButton.addEventListener("click", () => store.requestCircuit("path_patching"));
    this.modeButton = el("button", {
      class: "fw-button fw-toggle",
      type: "button",
      "data-testid": "circuit-ablate-mode",
      "aria-pressed": "false",
      text: "Ablate mode: off",
      title: "when on, a click on a head ablates or restores it instead of focusing it",
    });
    this.modeButton.addEventListener("click", () => this.setAblateMode(!this.ablateMode));
    this.ablateShown = el("button", {
      class: "fw-button",
      type: "button",
      "data-testid": "circuit-ablate-shown",
      text: "Ablate the shown heads",
      title: "ablate every head the graph shows, with the explorer's ablation mode (Undo brings them back)",
    });
    this.ablateShown.addEventListener("click", () => this.ablateShownHeads());
    if (store.offline) {
      for (const b of [this.exactButton, this.modeButton, this.ablateShown]) {
        b.disabled = true;
        b.title = OFFLINE_REASON;
      }
    }
    this.summary = el("div", { class: "fw-caption fw-circuit-summary", "data-testid": "circuit-summary" });
    this.message = el("div", { class: "fw-hint fw-circuit-message", "data-testid": "circuit-message", role: "status" });
    this.hint = el("div", { class: "fw-hint", "data-testid": "circuit-hint" });
    this.info = el("div", { class: "fw-hover-info", "data-testid": "circuit-info" });
    this.channels = el("div", { class: "fw-circuit-channels", "data-testid": "circuit-channels" });
    this.canvas = svg("svg", { class: "fw-circuit-svg", "data-testid": "circuit-svg", role: "group", width: WIDTH, height: 180 });
    this.canvas.setAttribute("aria-label", "circuit: line items at the left, one column per layer, the answer at the right; edges run from earlier to later");
    this.root = el("div", { class: "fw-view fw-circuit", "data-testid": "circuit-view" }, [
      el("div", { class: "fw-view-header" }, [el("span", { class: "fw-title", text: "Circuit: paths to the answer" }), this.edgesMenu, this.exactButton, this.modeButton, this.ablateShown]),
      this.summary,
      this.hint,
      this.message,
      el("div", { class: "fw-circuit-frame" }, [this.canvas as unknown as HTMLElement]),
      this.channels,
      this.colorBar.root,
      this.info,
    ]);
    this.tip = new Tooltip(this.info, this.root);
    const exports = exportsOf(() => this.figure());
    this.toPNG = exports.toPNG;
    this.toSVG = exports.toSVG;
    this.setAblateMode(false);
    this.canvas.addEventListener("mouseleave", () => this.tip.hide());
    const draw = () => this.draw();
    for (const topic of ["circuit", "status"] as const) this.cleanups.push(store.on(topic, draw));
    if (typeof ResizeObserver !== "undefined") {
      const ro = new ResizeObserver(() => {
        if (this.store.circuit && Math.abs(this.root.clientWidth - this.drawnWidth) > 4) this.draw();
      });
      ro.observe(this.root);
      this.cleanups.push(() => ro.disconnect());
    }
    const mark = () => this.mark();
    for (const topic of ["focus", "ablations"] as const) this.cleanups.push(store.on(topic, mark));
    this.draw();
  }

  private setAblateMode(on: boolean): void {
    this.ablateMode = on;
    this.modeButton.setAttribute("aria-pressed", on ? "true" : "false");
    this.modeButton.textContent = on ? "Ablate mode: on" : "Ablate mode: off";
    setFlag(this.root, "data-ablate-mode", on);
    this.hint.textContent = on
      ? "Ablate mode: click a head to ablate or restore it (alt-click focuses)."
      : "Click a head to focus it in every view · shift-click (or alt-click, or Ablate mode) ablates / restores it · edges run left to right, earlier to later layer.";
  }

  /** Focus (a plain click) or ablate / restore (shift/alt-click, or Ablate mode): the grid's gestures. */
  click(layer: number, head: number, ev: Pick<MouseEvent, "shiftKey" | "altKey">): void {
    const ablate = this.ablateMode ? !ev.altKey : ev.shiftKey || ev.altKey;
    if (!ablate) {
      this.store.set({ focus: { layer, head } });
      return;
    }
    const mode = this.store.get("settings").ablate_mode;
    void this.store.requestAblations(toggleAblation(this.store.ablations, layer, head, mode, this.store.modeValue(mode)));
  }

  /** Every head the graph shows, ablated at once (added to the current set; one undo step). */
  private ablateShownHeads(): void {
    if (!this.layout) return;
    const mode = this.store.get("settings").ablate_mode;
    let next = this.store.ablations;
    for (const p of this.layout.nodes.values()) {
      const n = p.node;
      if (n.kind === "head" && !findAblation(next, n.layer as number, n.head as number)) {
        next = toggleAblation(next, n.layer as number, n.head as number, mode, this.store.modeValue(mode));
      }
    }
    void this.store.requestAblations(next);
  }

  private answerLabel(graph: CircuitGraph): string {
    return graph.nodes.find((n) => n.kind === "answer")?.label ?? "";
  }

  private legend(): LegendSpec | null {
    const graph = this.store.circuit;
    return this.layout && graph ? headLegend(this.layout.maxHeadEffect, cleanAnswer(graph)) : null;
  }

  private nodeText(n: CircuitNode, graph: CircuitGraph): string {
    if (n.kind === "head") {
      const a = findAblation(this.store.ablations, n.layer as number, n.head as number);
      return (
        `layer ${n.layer}, head ${n.head} (L${n.layer} H${n.head})\n` +
        `effect on the ${metricWords(graph.metric)}: ${formatValue(n.effect)}` +
        (effectWords(n.effect, cleanAnswer(graph)) ? ` (${effectWords(n.effect, cleanAnswer(graph))})` : "") +
        (a ? `\nablated (${a.mode})` : "") +
        "\nclick: focus · shift-click: ablate / restore"
      );
    }
    if (n.kind === "span") {
      const r = n.token_range;
      return `line item “${n.label ?? n.id}”${r ? ` (tokens ${r[0]}–${r[1] - 1})` : ""}`;
    }
    return `answer: ${n.label ?? ""}\nclean ${metricWords(graph.metric)}: ${formatValue(graph.clean_value)}`;
  }

  private edgeText(e: CircuitEdge, graph: CircuitGraph): string {
    const name = (id: string) => {
      const n = graph.nodes.find((x) => x.id === id);
      if (!n) return id;
      if (n.kind === "head") return `L${n.layer} H${n.head}`;
      return n.kind === "span" ? `“${n.label ?? id}”` : "answer";
    };
    const words = effectWords(e.effect, cleanAnswer(graph));
    return `${name(e.source)} → ${name(e.target)} via ${CHANNEL_SHORT[e.channel]}\neffect: ${formatValue(e.effect)}${words ? `, ${words}` : ""} (${e.exact ? "exact" : "first-order estimate"})`;
  }

  private showChannels(): void {
    const items = CIRCUIT_CHANNELS.map((c) => {
      const style = channelStyle(c);
      const swatch = svg("svg", { width: 28, height: 10, "aria-hidden": "true" });
      swatch.append(svg("line", { x1: 1, y1: 5, x2: 27, y2: 5, stroke: style.color, "stroke-width": 3, "stroke-dasharray": style.dash.join(" ") || "none" }));
      return el("span", { class: "fw-circuit-channel", "data-channel": c }, [swatch as unknown as HTMLElement, CHANNEL_WORDS[c]]);
    });
    this.channels.replaceChildren(
      el("span", { class: "fw-legend-title", text: "edges (width = |effect|):" }),
      ...items,
    );
  }

  private draw(): void {
    const graph = this.store.circuit;
    const error = this.store.errors.get("circuit");
    const fetching = this.store.status.busy && !error;
    this.canvas.replaceChildren();
    this.layout = null;
    if (!graph) {
      this.summary.textContent = "";
      this.message.textContent = error ? `No circuit: ${error}` : "finding the circuit… (first-order estimate: a few forward and backward passes)";
      this.message.setAttribute("data-kind", error ? "error" : "busy");
      this.canvas.setAttribute("height", "0");
      this.colorBar.update(null, "");
      this.channels.replaceChildren();
      return;
    }
    const shown = pruneCircuit(graph, this.maxEdges === "all" ? Infinity : Number(this.maxEdges));
    // As wide as the view's column (text stays at its size), redrawn when that changes.
    const room = this.root.clientWidth;
    const width = room > 0 ? Math.max(MIN_WIDTH, Math.min(MAX_WIDTH, room - 8)) : WIDTH;
    this.drawnWidth = room;
    const layout = (this.layout = layoutCircuit(shown, this.store.get("geometry").num_layers, { width, answerWidth: 84 }));
    this.summary.textContent = circuitSummary(graph, this.answerLabel(graph));
    this.root.setAttribute("data-method", graph.method);
    const noHeads = !graph.nodes.some((n) => n.kind === "head");
    const notes = [
      noHeads ? "No head was kept: none carries enough of the logit difference to pass the circuit search's threshold" : "",
      shown.edges.length < shown.totalEdges ? `showing the ${shown.edges.length} strongest of ${shown.totalEdges} edges` : `${shown.totalEdges} edges`,
      error ? `the last request failed: ${error}` : "",
      fetching ? "working…" : "",
    ].filter(Boolean);
    this.message.textContent = notes.join(" · ");
    this.message.setAttribute("data-kind", error ? "error" : "idle");
    this.exactButton.hidden = graph.method === "path_patching";
    const ink = inkColor();
    this.canvas.setAttribute("width", String(layout.width));
    this.canvas.setAttribute("height", String(layout.height));
    this.canvas.setAttribute("viewBox", `0 0 ${layout.width} ${layout.height}`);
    // Columns: faint guides and labels.
    for (const c of layout.columns) {
      this.canvas.append(svg("line", { x1: c.x, y1: layout.top - 4, x2: c.x, y2: layout.height - 4, stroke: ink, "stroke-opacity": 0.15 }));
    }
    for (const c of layout.columnLabels) {
      const label = svg("text", { x: c.x, y: layout.top - 12, "text-anchor": c.anchor, "font-size": 11, fill: ink, "data-testid": "circuit-column" });
      label.textContent = c.label;
      this.canvas.append(label);
    }
    // Edges, weakest first (the strong ones on top), each with a wide invisible hover target.
    const edges = [...layout.edges].sort((a, b) => a.width - b.width);
    for (const pe of edges) {
      const style = channelStyle(pe.edge.channel);
      const mx = (pe.x1 + pe.x2) / 2;
      const d = `M ${pe.x1.toFixed(1)} ${pe.y1.toFixed(1)} C ${mx.toFixed(1)} ${pe.y1.toFixed(1)}, ${mx.toFixed(1)} ${pe.y2.toFixed(1)}, ${pe.x2.toFixed(1)} ${pe.y2.toFixed(1)}`;
      const g = svg("g", { "data-testid": "circuit-edge", "data-source": pe.edge.source, "data-target": pe.edge.target, "data-channel": pe.edge.channel, "data-effect": pe.edge.effect });
      g.append(
        svg("path", { d, fill: "none", stroke: style.color, "stroke-width": pe.width.toFixed(2), "stroke-dasharray": style.dash.join(" ") || "none", "stroke-opacity": 0.9 }),
        svg("path", { d, fill: "none", stroke: "transparent", "stroke-width": Math.max(9, pe.width + 6), "pointer-events": "stroke" }),
      );
      g.addEventListener("mousemove", (ev) => this.tip.show(this.edgeText(pe.edge, graph), ev.clientX, ev.clientY));
      this.canvas.append(g);
    }
    // Nodes above the edges.
    for (const p of layout.nodes.values()) {
      const n = p.node;
      const g = svg("g", { "data-testid": "circuit-node", "data-id": n.id, "data-kind": n.kind });
      if (n.kind === "head") {
        g.setAttribute("data-layer", String(n.layer));
        g.setAttribute("data-head", String(n.head));
        g.setAttribute("data-effect", String(n.effect));
        g.setAttribute("role", "button");
        g.setAttribute("aria-label", `layer ${n.layer} head ${n.head}, effect ${formatValue(n.effect)}`);
        g.style.cursor = "pointer";
        const fill = css(diverging((n.effect ?? 0) / layout.maxHeadEffect));
        g.append(
          svg("circle", { class: "fw-circuit-ring", cx: p.x, cy: p.y, r: p.r + 4, fill: "none", stroke: "#e67800", "stroke-width": 2.5, visibility: "hidden" }),
          svg("circle", { class: "fw-circuit-dot", cx: p.x, cy: p.y, r: p.r, fill, stroke: ink, "stroke-width": 1 }),
          svg("line", { class: "fw-circuit-cross", x1: p.x - p.r, y1: p.y - p.r, x2: p.x + p.r, y2: p.y + p.r, stroke: ink, "stroke-width": 2, visibility: "hidden" }),
        );
        if (layout.labelledHeads.has(n.id)) {
          const label = svg("text", { x: p.x, y: p.y - p.r - 3, "text-anchor": "middle", "font-size": 10, fill: ink });
          label.textContent = `H${n.head}`;
          g.append(label);
        }
        g.addEventListener("mousedown", (ev) => {
          if (ev.shiftKey || ev.altKey) ev.preventDefault();
        });
        g.addEventListener("click", (ev) => this.click(n.layer as number, n.head as number, ev));
        // Keyboard: Tab reaches each head; Enter / space focuses it, with Shift ablates / restores it.
        g.setAttribute("tabindex", "0");
        g.addEventListener("keydown", (ev) => {
          if (ev.key !== "Enter" && ev.key !== " ") return;
          ev.preventDefault();
          ev.stopPropagation();
          this.click(n.layer as number, n.head as number, ev);
        });
        g.addEventListener("focus", () => this.tip.showAt(this.nodeText(n, graph), g));
        g.addEventListener("blur", () => this.tip.hide());
      } else if (n.kind === "span") {
        g.append(svg("rect", { x: p.x - p.r, y: p.y - p.r, width: 2 * p.r, height: 2 * p.r, fill: ink }));
        const label = svg("text", { x: p.x - p.r - 5, y: p.y + 4, "text-anchor": "end", "font-size": 11, fill: ink });
        label.textContent = shortLabel(n.label ?? n.id, 20);
        g.append(label);
      } else {
        g.append(svg("rect", { x: p.x - p.r, y: p.y - p.r, width: 2 * p.r, height: 2 * p.r, fill: "none", stroke: ink, "stroke-width": 2, transform: `rotate(45 ${p.x} ${p.y})` }));
        const pair = answerPair(n.label ?? "");
        const lines = pair ? [pair[0], `− ${pair[1]}`] : [shortLabel(n.label ?? "answer", 14)];
        lines.forEach((line, i) => {
          const label = svg("text", { x: p.x + p.r + 5, y: p.y + 4 + (i - (lines.length - 1) / 2) * 13, "text-anchor": "start", "font-size": 11, fill: ink });
          label.textContent = shortLabel(line, 14);
          g.append(label);
        });
      }
      g.addEventListener("mousemove", (ev) => this.tip.show(this.nodeText(n, graph), ev.clientX, ev.clientY));
      this.canvas.append(g);
    }
    this.showChannels();
    this.colorBar.update(this.legend());
    this.mark();
    this.drawn = true;
    this.root.setAttribute("data-drawn", "1");
  }

  /** The focused head's ring and the ablated heads' crosses (no relayout). */
  private mark(): void {
    const focus = this.store.get("focus");
    const ablations = this.store.ablations;
    for (const g of this.canvas.querySelectorAll<SVGGElement>('[data-testid="circuit-node"][data-kind="head"]')) {
      const layer = Number(g.getAttribute("data-layer"));
      const head = Number(g.getAttribute("data-head"));
      const focused = focus.layer === layer && focus.head === head;
      const ablated = !!findAblation(ablations, layer, head);
      setFlag(g, "data-focused", focused);
      setFlag(g, "data-ablated", ablated);
      g.querySelector(".fw-circuit-ring")?.setAttribute("visibility", focused ? "visible" : "hidden");
      g.querySelector(".fw-circuit-cross")?.setAttribute("visibility", ablated ? "visible" : "hidden");
      // An ablated head fades behind its cross (its effect is gone from the run shown in the prediction).
      g.querySelector(".fw-circuit-dot")?.setAttribute("fill-opacity", ablated ? "0.3" : "1");
    }
  }

  ready(): boolean {
    return this.drawn;
  }

  /** The graph as drawn (straight edges, square nodes), the channel key, the colour bar,
   * the method and faithfulness and the state. */
  figure(withState = true): Figure {
    const caption = withState ? stateCaption(this.store) : "";
    const title = "Circuit: paths from the line items to the answer";
    const graph = this.store.circuit;
    if (!graph) return messageFigure(title, this.store.errors.get("circuit") ?? "no circuit yet", caption);
    const shown = pruneCircuit(graph, this.maxEdges === "all" ? Infinity : Number(this.maxEdges));
    const layout = layoutCircuit(shown, this.store.get("geometry").num_layers, { width: WIDTH, answerWidth: 84 });
    const prims: Prim[] = [];
    const focus = this.store.get("focus");
    for (const c of layout.columns) prims.push({ t: "line", x1: c.x, y1: layout.top - 4, x2: c.x, y2: layout.height - 4, stroke: "#ddd" });
    for (const c of layout.columnLabels) prims.push({ t: "text", x: c.x, y: layout.top - 12, text: c.label, size: 10, anchor: c.anchor, fill: MUTED });
    // The export is drawn on white: the light theme's channel colours.
    for (const pe of [...layout.edges].sort((a, b) => a.width - b.width)) {
      const style = lightChannelStyle(pe.edge.channel);
      prims.push({ t: "line", x1: pe.x1, y1: pe.y1, x2: pe.x2, y2: pe.y2, stroke: style.color, lw: pe.width, dash: style.dash.length ? style.dash : undefined });
    }
    for (const p of layout.nodes.values()) {
      const n = p.node;
      if (n.kind === "head") {
        prims.push({ t: "rect", x: p.x - p.r, y: p.y - p.r, w: 2 * p.r, h: 2 * p.r, fill: css(diverging((n.effect ?? 0) / layout.maxHeadEffect)), stroke: INK, lw: 1 });
        if (layout.labelledHeads.has(n.id)) prims.push({ t: "text", x: p.x, y: p.y - p.r - 3, text: `H${n.head}`, size: 9, anchor: "middle", fill: INK });
        if (findAblation(this.store.ablations, n.layer as number, n.head as number)) prims.push({ t: "line", x1: p.x - p.r, y1: p.y - p.r, x2: p.x + p.r, y2: p.y + p.r, stroke: "#000", lw: 2 });
        if (focus.layer === n.layer && focus.head === n.head) prims.push({ t: "rect", x: p.x - p.r - 3, y: p.y - p.r - 3, w: 2 * p.r + 6, h: 2 * p.r + 6, stroke: "#e67800", lw: 2 });
      } else if (n.kind === "span") {
        prims.push({ t: "rect", x: p.x - p.r, y: p.y - p.r, w: 2 * p.r, h: 2 * p.r, fill: INK });
        prims.push({ t: "text", x: p.x - p.r - 5, y: p.y + 4, text: shortLabel(n.label ?? n.id, 20), size: 10, anchor: "end", fill: INK });
      } else {
        prims.push({ t: "rect", x: p.x - p.r, y: p.y - p.r, w: 2 * p.r, h: 2 * p.r, stroke: INK, lw: 2 });
        const pair = answerPair(n.label ?? "");
        const lines = pair ? [pair[0], `− ${pair[1]}`] : [shortLabel(n.label ?? "answer", 14)];
        lines.forEach((line, i) => prims.push({ t: "text", x: p.x + p.r + 5, y: p.y + 4 + (i - (lines.length - 1) / 2) * 12, text: shortLabel(line, 14), size: 10, fill: INK }));
      }
    }
    // The channel key under the graph.
    let y = layout.height + 14;
    for (const c of CIRCUIT_CHANNELS) {
      const style = lightChannelStyle(c);
      prims.push({ t: "line", x1: 0, y1: y - 4, x2: 26, y2: y - 4, stroke: style.color, lw: 3, dash: style.dash.length ? style.dash : undefined });
      prims.push({ t: "text", x: 32, y, text: CHANNEL_WORDS[c], size: 10, fill: INK });
      y += 14;
    }
    return frame({
      title,
      body: { width: layout.width, height: y, prims },
      legend: headLegend(layout.maxHeadEffect, cleanAnswer(graph)),
      caption: joinCaption(
        circuitSummary(graph, this.answerLabel(graph)),
        shown.edges.length < shown.totalEdges ? `the ${shown.edges.length} strongest of ${shown.totalEdges} edges` : "",
        "edge width = |effect|",
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

/** The light theme's channel style (exports are drawn on white whatever the page's theme). */
function lightChannelStyle(c: CircuitChannel): { color: string; dash: number[] } {
  return withRampBackground([255, 255, 255], () => channelStyle(c));
}

/** The two answers of a metric label "increase - decrease" (null when it names no two). */
export function answerPair(label: string): [string, string] | null {
  const parts = label.split(/\s+[-−–]\s+/);
  return parts.length === 2 && parts[0] && parts[1] ? [parts[0], parts[1]] : null;
}

/** The model's answer on the clean statement, by the metric's sign ("decrease" when
 * increase − decrease < 0), or "" when the answer label names no two answers. */
export function cleanAnswer(graph: CircuitGraph): string {
  const pair = answerPair(graph.nodes.find((n) => n.kind === "answer")?.label ?? "");
  if (!pair) return "";
  return graph.clean_value < 0 ? pair[1] : pair[0];
}

/** What a signed effect means in words: finwidget.circuits signs every effect so that a
 * positive one supports the clean answer. */
export function effectWords(effect: number | undefined, answer: string): string {
  if (effect === undefined || !Number.isFinite(effect) || effect === 0) return "";
  const what = answer ? `the model's answer '${answer}'` : "the model's answer";
  return effect > 0 ? `supports ${what}` : `works against ${what}`;
}

/** The colour bar of the heads: signed effect, red supports the model's answer, blue works against it. */
function headLegend(maxAbs: number, answer: string): LegendSpec {
  const named = answer ? ` ('${answer}')` : "";
  return {
    title: "head's effect on the logit difference",
    unit: "logits",
    min: -maxAbs,
    max: maxAbs,
    colorAt: (t) => divergingBar(t),
    low: `blue = works against the model's answer${named}`,
    high: `red = supports it · node size = |effect|`,
  };
}
