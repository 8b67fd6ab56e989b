// @vitest-environment jsdom
// The circuit view: the graph's checks, pruning and layout (pure), and the view in an
// explorer on a fake kernel (drawing, focus, ablation, edge count, exact method, errors).
import { beforeAll, describe, expect, it } from "vitest";
import { layoutCircuit, parseCircuit, percent, pruneCircuit } from "../circuit";
import { figureText } from "../export";
import { requestKey, requestsForState } from "../protocol";
import { mountStatic } from "../widget";
import { answerPair, circuitSummary, cleanAnswer, CircuitView, effectWords } from "../views/circuit";
import { installCanvasStub } from "./canvas_stub";
import { answerAll, CATALOGUE, makeTraits, type FakeModel } from "./fake_kernel";
import { mountOnFakeKernel, unmountAfterEach } from "./mount";

beforeAll(() => {
  installCanvasStub();
  HTMLCanvasElement.prototype.toDataURL = () => "data:image/png;base64,AAAA";
});

unmountAfterEach();

/** A graph in the schema of finwidget.circuits.CircuitGraph.to_json(), as strict JSON
 * parses it: 3 layers x 4 heads, two line items, 7 edges. */
function graphJson(method = "attribution"): Record<string, unknown> {
  const exact = method === "path_patching";
  return {
    metric: "logit_diff",
    clean_value: 2.5,
    method,
    nodes: [
      { id: "L0H1", kind: "head", layer: 0, head: 1, effect: 1.2 },
      { id: "L1H0", kind: "head", layer: 1, head: 0, effect: 2.0 },
      { id: "L1H3", kind: "head", layer: 1, head: 3, effect: -0.4 },
      { id: "L2H2", kind: "head", layer: 2, head: 2, effect: 0.05 },
      { id: "span:1", kind: "span", label: "Net income", token_range: [12, 16] },
      { id: "span:0", kind: "span", label: "Revenue", token_range: [0, 4] },
      { id: "answer", kind: "answer", label: "increase - decrease" },
    ],
    edges: [
      { source: "span:1", target: "L0H1", channel: "reads", effect: 0.9, exact },
      { source: "span:0", target: "L1H0", channel: "reads", effect: 0.3, exact },
      { source: "L0H1", target: "L1H0", channel: "v", effect: 1.1, exact },
      { source: "L0H1", target: "L1H3", channel: "q", effect: -0.2, exact },
      { source: "L0H1", target: "L1H0", channel: "k", effect: 0.15, exact },
      { source: "L1H0", target: "answer", channel: "direct", effect: 1.9, exact },
      { source: "L2H2", target: "answer", channel: "direct", effect: 0.01, exact },
    ],
    faithfulness: { mode: "mean", kept_when_outside_ablated: 0.94, removed_when_circuit_ablated: 0.97 },
  };
}

const CIRCUIT_VIEW = { name: "circuit", label: "circuit", lane: "circuit", column: "right" as const };

describe("the circuit graph (pure)", () => {
  it("reads the schema; a null effect (strict JSON's NaN) becomes NaN; a bad edge is named", () => {
    const g = parseCircuit(graphJson());
    expect(g.nodes.length).toBe(7);
    expect(g.edges.length).toBe(7);
    expect(g.faithfulness?.kept_when_outside_ablated).toBe(0.94);
    const withNull = graphJson();
    (withNull.nodes as Record<string, unknown>[])[0].effect = null;
    expect(Number.isNaN(parseCircuit(withNull).nodes[0].effect)).toBe(true);
    const bad = graphJson();
    (bad.edges as Record<string, unknown>[]).push({ source: "L9H9", target: "answer", channel: "direct", effect: 1, exact: false });
    expect(() => parseCircuit(bad)).toThrow(/L9H9 -> answer names a node/);
    const badChannel = graphJson();
    (badChannel.edges as Record<string, unknown>[])[0].channel = "o";
    expect(() => parseCircuit(badChannel)).toThrow(/channel "o"/);
    expect(() => parseCircuit(null)).toThrow(/no graph/);
    expect(parseCircuit({ ...graphJson(), faithfulness: null }).faithfulness).toBeNull();
  });

  it("prunes to the strongest edges, keeping the nodes they join and the answer", () => {
    const g = parseCircuit(graphJson());
    const top2 = pruneCircuit(g, 2);
    expect(top2.edges.map((e) => `${e.source}>${e.target}`)).toEqual(["L1H0>answer", "L0H1>L1H0"]);
    expect(top2.nodes.map((n) => n.id).sort()).toEqual(["L0H1", "L1H0", "answer"]);
    expect(top2.totalEdges).toBe(7);
    const all = pruneCircuit(g, Infinity);
    expect(all.edges.length).toBe(7);
    // An edge's sign does not matter for its rank: |-0.2| beats 0.15.
    expect(pruneCircuit(g, 6).edges.some((e) => e.source === "L2H2")).toBe(false);
    // No edge kept: the heads of largest |effect| still show.
    expect(pruneCircuit(g, 0).nodes.map((n) => n.id)).toEqual(["L1H0", "answer"]);
  });

  it("places spans at the left, layers as columns in order, the answer at the right", () => {
    const g = parseCircuit(graphJson());
    const layout = layoutCircuit(pruneCircuit(g, Infinity), 3, { width: 600 });
    expect(layout.columns.map((c) => c.label)).toEqual(["line items", "L0", "L1", "L2", "answer"]);
    const at = (id: string) => layout.nodes.get(id)!;
    for (const id of ["L0H1", "L1H0", "L2H2"]) {
      expect(at("span:0").x).toBeLessThan(at(id).x);
      expect(at(id).x).toBeLessThan(at("answer").x);
    }
    expect(at("L0H1").x).toBeLessThan(at("L1H0").x);
    expect(at("L1H0").x).toBe(at("L1H3").x);
    expect(at("L1H0").y).toBeLessThan(at("L1H3").y); // heads in order down a column
    expect(at("span:0").y).toBeLessThan(at("span:1").y); // line items in statement order
    // Size follows |effect|: the strongest head is the largest, a negative one is sized by its magnitude.
    expect(at("L1H0").r).toBeGreaterThan(at("L0H1").r);
    expect(at("L1H3").r).toBeGreaterThan(at("L2H2").r);
    // Width follows |effect|; Q arrives above V on the same head.
    const edge = (s: string, t: string, c: string) => layout.edges.find((e) => e.edge.source === s && e.edge.target === t && e.edge.channel === c)!;
    expect(edge("L1H0", "answer", "direct").width).toBeGreaterThan(edge("L0H1", "L1H0", "k").width);
    expect(edge("L0H1", "L1H0", "k").y2).toBeLessThan(edge("L0H1", "L1H0", "v").y2);
    for (const e of layout.edges) expect(e.x1).toBeLessThan(e.x2);
    // Everything inside the drawing.
    for (const p of layout.nodes.values()) {
      expect(p.y - p.r).toBeGreaterThanOrEqual(layout.top - 16);
      expect(p.y + p.r).toBeLessThanOrEqual(layout.height);
      expect(p.x + p.r).toBeLessThanOrEqual(layout.width);
    }
  });

  it("a large model shows only the layers the shown graph uses; a tall column grows the drawing", () => {
    const nodes: Record<string, unknown>[] = [{ id: "answer", kind: "answer", label: "a - b" }];
    const edges: Record<string, unknown>[] = [];
    for (let h = 0; h < 20; h++) {
      nodes.push({ id: `L27H${h}`, kind: "head", layer: 27, head: h, effect: h + 1 });
      edges.push({ source: `L27H${h}`, target: "answer", channel: "direct", effect: h + 1, exact: false });
    }
    nodes.push({ id: "L3H0", kind: "head", layer: 3, head: 0, effect: 1 });
    edges.push({ source: "L3H0", target: "L27H0", channel: "k", effect: 5, exact: false });
    const g = parseCircuit({ metric: "logit_diff", clean_value: 1, method: "attribution", nodes, edges, faithfulness: null });
    const layout = layoutCircuit(pruneCircuit(g, Infinity), 28);
    expect(layout.columns.map((c) => c.label)).toEqual(["line items", "L3", "L27", "answer"]);
    expect(layout.height).toBeGreaterThanOrEqual(20 * 30);
  });

  it("draws no two labels over each other: column labels thinned, head labels the strongest first", () => {
    const nodes: Record<string, unknown>[] = [{ id: "answer", kind: "answer", label: "a - b" }];
    const edges: Record<string, unknown>[] = [];
    for (let l = 0; l < 24; l++) {
      nodes.push({ id: `L${l}H${l % 14}`, kind: "head", layer: l, head: l % 14, effect: l === 5 ? 3 : 1 });
      edges.push({ source: `L${l}H${l % 14}`, target: "answer", channel: "direct", effect: 1, exact: false });
    }
    const g = parseCircuit({ metric: "logit_diff", clean_value: 1, method: "attribution", nodes, edges, faithfulness: null });
    const layout = layoutCircuit(pruneCircuit(g, Infinity), 24, { width: 560 });
    const boxes = layout.columnLabels.map((c) => {
      const w = c.label.length * 11 * 0.6;
      const left = c.anchor === "end" ? c.x - w : c.anchor === "start" ? c.x : c.x - w / 2;
      return [left, left + w];
    });
    for (let i = 1; i < boxes.length; i++) expect(boxes[i][0]).toBeGreaterThan(boxes[i - 1][1]);
    const labels = layout.columnLabels.map((c) => c.label);
    expect(labels[0]).toBe("line items");
    expect(labels[labels.length - 1]).toBe("answer");
    expect(labels.length).toBeLessThan(26); // some layer labels left out ...
    expect(labels.length).toBeGreaterThan(4); // ... not all
    // All heads sit on one row: their labels would collide; the strongest keeps its label.
    expect(layout.labelledHeads.has("L5H5")).toBe(true);
    expect(layout.labelledHeads.size).toBeLessThan(24);
    // With room, every head is labelled.
    expect(layoutCircuit(pruneCircuit(parseCircuit(graphJson()), Infinity), 3).labelledHeads.size).toBe(4);
  });

  it("says the method, the clean value and the faithfulness in words", () => {
    const text = circuitSummary(parseCircuit(graphJson()), "increase - decrease");
    expect(text).toContain("first-order estimate");
    expect(text).toContain("clean logit difference (increase − decrease): 2.500");
    expect(text).toContain("keeps 94%");
    expect(text).toContain("removes 97%");
    expect(circuitSummary(parseCircuit(graphJson("path_patching")), "")).toContain("exact path patching");
    expect(circuitSummary(parseCircuit({ ...graphJson(), faithfulness: null }), "")).toContain("Faithfulness: not measured");
    expect(text).not.toContain("below the");
    const short = { mode: "mean", kept_when_outside_ablated: 0.84, removed_when_circuit_ablated: 0.99 };
    expect(circuitSummary(parseCircuit({ ...graphJson(), faithfulness: short }), "")).toContain("keeps 84% of it; ablating the circuit removes 99% (below the 90% a faithful circuit needs");
    expect(percent(NaN)).toBe("–");
    expect(answerPair("increase - decrease")).toEqual(["increase", "decrease"]);
    expect(answerPair("answer")).toBeNull();
    // Effects are signed to support the clean answer: the words follow the clean sign.
    const decrease = parseCircuit({ ...graphJson(), clean_value: -10.6 });
    expect(cleanAnswer(decrease)).toBe("decrease");
    expect(cleanAnswer(parseCircuit(graphJson()))).toBe("increase");
    expect(effectWords(0.8, "decrease")).toBe("supports the model's answer 'decrease'");
    expect(effectWords(-0.2, "")).toBe("works against the model's answer");
    expect(effectWords(NaN, "x")).toBe("");
  });
});

function circuitRequests(model: FakeModel) {
  return model.sent.filter((s) => s.msg.kind === "circuit").map((s) => s.msg);
}

/** Answer the pending circuit requests with `graph` (or an error), the rest as the fake kernel does. */
async function answerCircuit(model: FakeModel, graph: Record<string, unknown> | string): Promise<void> {
  const queue = model.sent.splice(0);
  const others = queue.filter((s) => s.msg.kind !== "circuit");
  model.sent.push(...others);
  for (const { msg } of queue.filter((s) => s.msg.kind === "circuit")) {
    const base = { kind: "reply", id: msg.id, request: "circuit" };
    model.reply(typeof graph === "string" ? { ...base, ok: false, error: graph } : { ...base, ok: true, method: msg.method, graph });
  }
  await answerAll(model);
}

async function mountCircuit(views = ["prediction", "grid", "circuit"]) {
  const mounted = await mountOnFakeKernel({ views, catalogue: { ...CATALOGUE, views: [...CATALOGUE.views, CIRCUIT_VIEW] } });
  const view = mounted.root.querySelector('[data-testid="circuit-view"]') as HTMLElement;
  return { ...mounted, view };
}

const headNode = (root: ParentNode, id: string) => root.querySelector(`[data-testid="circuit-node"][data-id="${id}"]`) as SVGGElement;

describe("the circuit view in the explorer", () => {
  it("asks for the first-order circuit, then draws columns, nodes, edges, legend and summary", async () => {
    const { model, root, view } = await mountCircuit();
    expect(circuitRequests(model)).toEqual([expect.objectContaining({ kind: "circuit", method: "attribution" })]);
    expect(view.querySelector('[data-testid="circuit-message"]')!.textContent).toContain("finding the circuit");
    expect(root.getAttribute("data-finwidget-ready")).toBe("0");
    await answerCircuit(model, graphJson());
    expect(root.getAttribute("data-finwidget-ready")).toBe("1");
    expect(view.getAttribute("data-drawn")).toBe("1");
    const columns = [...view.querySelectorAll('[data-testid="circuit-column"]')].map((c) => c.textContent);
    expect(columns).toEqual(["line items", "L0", "L1", "L2", "answer"]);
    // 20 strongest edges by default: all 7 shown.
    expect(view.querySelectorAll('[data-testid="circuit-edge"]').length).toBe(7);
    expect(view.querySelectorAll('[data-testid="circuit-node"][data-kind="head"]').length).toBe(4);
    expect(view.querySelectorAll('[data-testid="circuit-node"][data-kind="span"]').length).toBe(2);
    const summary = view.querySelector('[data-testid="circuit-summary"]')!.textContent!;
    expect(summary).toContain("first-order estimate");
    expect(summary).toContain("keeps 94%");
    const channels = [...view.querySelectorAll("[data-channel]")].filter((e) => e.classList.contains("fw-circuit-channel")).map((e) => e.textContent);
    expect(channels.join(" | ")).toMatch(/Q:.*K:.*V:.*direct:.*reads:/);
    // Q, K and V are told apart by dash as well as colour.
    const dash = (c: string) => view.querySelector(`[data-testid="circuit-edge"][data-channel="${c}"] path`)!.getAttribute("stroke-dasharray");
    expect(new Set([dash("q"), dash("k"), dash("v"), dash("reads")]).size).toBe(4);
    const legend = view.querySelector('[data-testid="circuit-legend"]')!;
    expect(legend.getAttribute("data-high")).toContain("red = supports it");
    expect(legend.textContent).toContain("blue = works against the model's answer ('increase')");
    expect(legend.getAttribute("data-unit")).toBe("logits");
  });

  it("a click on a head focuses it (the grid shows it); shift-click ablates it with the grid's action and undo", async () => {
    const { model, store, root, view } = await mountCircuit();
    await answerCircuit(model, graphJson());
    headNode(view, "L1H3").dispatchEvent(new MouseEvent("click", { bubbles: true }));
    expect(model.traits.focus).toEqual({ layer: 1, head: 3 });
    expect(headNode(view, "L1H3").getAttribute("data-focused")).toBe("1");
    expect(root.querySelector('[data-testid="head-cell"][data-layer="1"][data-head="3"]')!.getAttribute("data-focused")).toBe("1");
    headNode(view, "L0H1").dispatchEvent(new MouseEvent("click", { bubbles: true, shiftKey: true }));
    const sent = model.sent.filter((s) => s.msg.kind === "set_ablations").map((s) => s.msg.ablations);
    expect(sent).toEqual([[{ layer: 0, head: 1, mode: "zero" }]]);
    expect(model.traits.focus).toEqual({ layer: 1, head: 3 }); // ablating does not move the focus
    expect(headNode(view, "L0H1").getAttribute("data-ablated")).toBe("1");
    expect(root.querySelector('[data-testid="head-cell"][data-layer="0"][data-head="1"]')!.getAttribute("data-ablated")).toBe("1");
    await answerAll(model);
    expect(store.history.canUndo).toBe(true);
    store.undo();
    expect(model.sent.filter((s) => s.msg.kind === "set_ablations").map((s) => s.msg.ablations)).toEqual([[]]);
    expect(headNode(view, "L0H1").getAttribute("data-ablated")).toBeNull();
    // The keyboard does the same: Enter focuses, Shift+Enter ablates.
    headNode(view, "L2H2").dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
    expect(model.traits.focus).toEqual({ layer: 2, head: 2 });
    headNode(view, "L2H2").dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", shiftKey: true, bubbles: true }));
    expect(model.sent.filter((s) => s.msg.kind === "set_ablations").slice(-1)[0].msg.ablations).toEqual([{ layer: 2, head: 2, mode: "zero" }]);
    await answerAll(model);
    store.undo();
    await answerAll(model);
    // All the shown heads at once: one request, one undo step.
    (view.querySelector('[data-testid="circuit-ablate-shown"]') as HTMLButtonElement).click();
    const all = model.sent.filter((s) => s.msg.kind === "set_ablations").slice(-1)[0].msg.ablations as { layer: number; head: number }[];
    expect(all.map((a) => `L${a.layer}H${a.head}`)).toEqual(["L0H1", "L1H0", "L1H3", "L2H2"]);
    await answerAll(model);
    store.undo();
    await answerAll(model);
    expect(store.ablations).toEqual([]);
    // Ablate mode: a plain click ablates.
    (view.querySelector('[data-testid="circuit-ablate-mode"]') as HTMLButtonElement).click();
    headNode(view, "L2H2").dispatchEvent(new MouseEvent("click", { bubbles: true }));
    expect(model.sent.filter((s) => s.msg.kind === "set_ablations").slice(-1)[0].msg.ablations).toEqual([{ layer: 2, head: 2, mode: "zero" }]);
  });

  it("hovering a node or an edge says its effect", async () => {
    const { model, view } = await mountCircuit();
    await answerCircuit(model, graphJson());
    headNode(view, "L1H3").dispatchEvent(new MouseEvent("mousemove", { bubbles: true, clientX: 5, clientY: 5 }));
    const info = () => (document.querySelector('[data-testid="circuit-info"]') as HTMLElement).textContent!;
    expect(info()).toContain("layer 1, head 3");
    expect(info()).toContain("-0.400 (works against the model's answer 'increase')");
    const edge = view.querySelector('[data-testid="circuit-edge"][data-channel="v"]')!;
    edge.dispatchEvent(new MouseEvent("mousemove", { bubbles: true, clientX: 5, clientY: 5 }));
    expect(info()).toContain("L0 H1 → L1 H0 via V");
    expect(info()).toContain("1.10");
    expect(info()).toContain("first-order estimate");
  });

  it("the edge menu prunes what is drawn; 'exact' asks for path patching and says so", async () => {
    const { model, view } = await mountCircuit();
    await answerCircuit(model, graphJson());
    const menu = view.querySelector('[data-testid="circuit-edges"]') as HTMLSelectElement;
    menu.value = "5";
    menu.dispatchEvent(new Event("change"));
    expect(view.querySelectorAll('[data-testid="circuit-edge"]').length).toBe(5);
    expect(view.querySelector('[data-testid="circuit-message"]')!.textContent).toContain("5 strongest of 7 edges");
    expect(view.querySelector('[data-testid="circuit-node"][data-id="L2H2"]')).toBeNull();
    (view.querySelector('[data-testid="circuit-exact"]') as HTMLButtonElement).click();
    expect(circuitRequests(model).slice(-1)[0]).toEqual(expect.objectContaining({ method: "path_patching" }));
    await answerCircuit(model, graphJson("path_patching"));
    expect(view.getAttribute("data-method")).toBe("path_patching");
    expect(view.querySelector('[data-testid="circuit-summary"]')!.textContent).toContain("exact path patching");
    expect((view.querySelector('[data-testid="circuit-exact"]') as HTMLElement).hidden).toBe(true);
    // A new state of the other views does not ask for the circuit again.
    const before = circuitRequests(model).length;
    model.set("selection", { start: 0, end: 1 });
    await answerAll(model);
    expect(circuitRequests(model).length).toBe(before);
  });

  it("says so when the search kept no head", async () => {
    const { model, view } = await mountCircuit();
    await answerCircuit(model, { ...graphJson(), nodes: [{ id: "answer", kind: "answer", label: "increase - decrease" }], edges: [], faithfulness: null });
    expect(view.getAttribute("data-drawn")).toBe("1");
    expect(view.querySelector('[data-testid="circuit-message"]')!.textContent).toContain("No head was kept");
  });

  it("says why there is no circuit when the kernel cannot find one (recorded attention)", async () => {
    const { model, root, view } = await mountCircuit();
    await answerCircuit(model, "the circuit view needs the model: this explorer only shows recorded attention");
    const message = view.querySelector('[data-testid="circuit-message"]')!;
    expect(message.textContent).toContain("No circuit: the circuit view needs the model");
    expect(message.getAttribute("data-kind")).toBe("error");
    expect(root.getAttribute("data-finwidget-ready")).toBe("1");
  });

  it("exports a figure with the labels, the channel key and the faithfulness", async () => {
    const { model, store } = await mountCircuit(["circuit"]);
    await answerCircuit(model, graphJson());
    const cv = new CircuitView(store);
    const text = figureText(cv.figure()).join(" ");
    cv.destroy();
    for (const word of ["Circuit", "line items", "L0", "L2", "answer", "H1", "Net income", "keeps 94%", "Q: ", "reads:", "edge width"]) expect(text).toContain(word);
  });

  it("is opt-in: the default views do not ask for a circuit; asking for it adds one request", () => {
    const t = makeTraits();
    expect(requestsForState(t).some((r) => r.kind === "circuit")).toBe(false);
    const withCircuit = requestsForState({ ...t, views: [...t.views, "circuit"] });
    expect(withCircuit.filter((r) => r.kind === "circuit")).toEqual([{ lane: "circuit", kind: "circuit", params: { method: "attribution" } }]);
  });

  it("an exported page draws the embedded circuit; what needs the kernel is disabled and says why", async () => {
    const traits = makeTraits({ views: ["grid", "circuit"], catalogue: { ...CATALOGUE, views: [...CATALOGUE.views, CIRCUIT_VIEW] } });
    // What save_html embeds for the circuit: the reply to the planned request, keyed without its id.
    const [plan] = requestsForState(traits).filter((r) => r.kind === "circuit");
    const msg = { kind: plan.kind, ...plan.params };
    const reply = { kind: "reply", id: 0, request: "circuit", ok: true, method: "attribution", graph: graphJson() };
    const host = document.createElement("div");
    document.body.append(host);
    const unmount = mountStatic(host, { traits, replies: [{ key: requestKey(msg), reply: reply as never, buffers: [] }] });
    for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 0));
    const view = host.querySelector('[data-testid="circuit-view"]') as HTMLElement;
    expect(view.getAttribute("data-drawn")).toBe("1");
    expect(view.querySelectorAll('[data-testid="circuit-node"][data-kind="head"]').length).toBe(4);
    for (const id of ["circuit-exact", "circuit-ablate-mode", "circuit-ablate-shown"]) {
      const button = view.querySelector(`[data-testid="${id}"]`) as HTMLButtonElement;
      expect(button.disabled).toBe(true);
      expect(button.title).toContain("no kernel");
    }
    unmount();
  });
});
