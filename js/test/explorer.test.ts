// @vitest-environment jsdom
import { beforeAll, describe, expect, it } from "vitest";
import { requestsForState } from "../protocol";
import { installCanvasStub } from "./canvas_stub";
import { mountOnFakeKernel, unmountAfterEach } from "./mount";
import { answer, answerAll, CATALOGUE, makeTraits } from "./fake_kernel";

beforeAll(() => {
  installCanvasStub();
  HTMLCanvasElement.prototype.toDataURL = () => "data:image/png;base64,AAAA";
});

unmountAfterEach();

const mount = mountOnFakeKernel;

const q = (root: ParentNode, sel: string) => root.querySelector(sel) as HTMLElement;

describe("the explorer in a DOM", () => {
  it("asks for what its views need, then marks itself ready (DOM contract)", async () => {
    const { model, root } = await mount();
    expect(root.getAttribute("data-finwidget-ready")).toBe("0");
    expect(root.getAttribute("data-finwidget-busy")).toBe("1");
    expect(model.sent.map((s) => s.msg.kind).sort()).toEqual(["flow", "grid", "head_matrix", "token_values"]);
    await answerAll(model);
    await new Promise((r) => setTimeout(r, 0));
    expect(root.getAttribute("data-finwidget-ready")).toBe("1");
    expect(root.getAttribute("data-finwidget-busy")).toBe("0");
    expect(root.querySelectorAll('[data-testid="head-cell"]').length).toBe(12);
    const canvas = q(root, 'canvas[data-testid="attention-matrix"]');
    expect(canvas.getAttribute("data-layer")).toBe("0");
    expect(Number(canvas.getAttribute("data-draw-count"))).toBeGreaterThan(0);
    expect(q(root, '[data-testid="layer-flow"]')).toBeTruthy();
    const ld = q(root, '[data-testid="logit-diff"]');
    expect(ld.getAttribute("data-value")).toBe("1.25");
    expect(ld.getAttribute("data-clean-value")).toBe("1.25");
    expect(q(root, '[data-testid="p-increase"]').textContent).toContain("0.777");
    for (const id of ["ablate-mode", "reset", "sweep", "export-png", "ablated-list", "status"]) {
      expect(q(root, `[data-testid="${id}"]`)).toBeTruthy();
    }
    expect(q(root, '[data-testid="ablated-list"]').children.length).toBe(0);
  });

  it("shows statement text only as text: HTML in a filing never becomes elements", async () => {
    const { model, root } = await mount();
    await answerAll(model);
    expect(document.querySelectorAll("img").length).toBe(0);
    expect(document.querySelectorAll("script").length).toBe(0);
    const texts = Array.from(root.querySelectorAll('[data-testid="span"]')).map((e) => e.textContent);
    expect(texts).toContain("onerror=alert(1)>");
    expect(texts).toContain("</script><script>alert(2)</script>");
    const numbers = root.querySelectorAll('[data-testid="span"][data-kind="number"]');
    expect(Array.from(numbers).map((e) => e.textContent)).toContain("18,926");
  });

  it("clicking a span selects it for every view, and the views ask for the new selection", async () => {
    const { model, root } = await mount();
    await answerAll(model);
    const span = q(root, '[data-testid="span"][data-span-index="4"]');
    span.dispatchEvent(new MouseEvent("mousedown", { bubbles: true, button: 0 }));
    span.dispatchEvent(new MouseEvent("mouseup", { bubbles: true, button: 0 }));
    expect(model.traits.selection).toEqual({ start: 4, end: 5 });
    expect(span.getAttribute("data-selected")).toBe("1");
    await new Promise((r) => setTimeout(r, 0));
    const kinds = model.sent.map((s) => s.msg);
    expect(kinds.find((m) => m.kind === "grid")?.selection).toEqual([4, 5]);
    expect(kinds.find((m) => m.kind === "flow")?.selection).toEqual([4, 5]);
    expect(kinds.find((m) => m.kind === "token_values")?.selection).toEqual([4, 5]);
    // The focused head did not change: its matrix is not asked for again.
    expect(kinds.find((m) => m.kind === "head_matrix")).toBeUndefined();
  });

  it("click focuses a head; shift-click ablates with a pending state, then shows the kernel's numbers", async () => {
    const { model, root } = await mount();
    await answerAll(model);
    const cell = q(root, '[data-testid="head-cell"][data-layer="2"][data-head="3"]');
    cell.dispatchEvent(new MouseEvent("click", { bubbles: true }));
    expect(model.traits.focus).toEqual({ layer: 2, head: 3 });
    expect(cell.getAttribute("data-focused")).toBe("1");
    await answerAll(model);
    expect(q(root, 'canvas[data-testid="attention-matrix"]').getAttribute("data-head")).toBe("3");

    cell.dispatchEvent(new MouseEvent("click", { bubbles: true, shiftKey: true }));
    expect(cell.getAttribute("data-ablated")).toBe("1");
    expect(root.getAttribute("data-finwidget-busy")).toBe("1");
    const req = model.sent.find((s) => s.msg.kind === "set_ablations")!.msg;
    expect(req.ablations).toEqual([{ layer: 2, head: 3, mode: "zero" }]);
    await answerAll(model);
    const ld = q(root, '[data-testid="logit-diff"]');
    expect(ld.getAttribute("data-value")).toBe("-0.5");
    expect(ld.getAttribute("data-clean-value")).toBe("1.25");
    expect(q(root, '[data-testid="ablated-list"]').textContent).toContain("L2 H3 (zero)");
    const items = q(root, '[data-testid="ablated-list"]').querySelectorAll("li");
    expect(Array.from(items).map((li) => [li.dataset.layer, li.dataset.head, li.dataset.mode])).toEqual([["2", "3", "zero"]]);
    expect(q(root, '[data-testid="flipped"]').style.display).toBe("");
    expect(root.getAttribute("data-finwidget-busy")).toBe("0");
  });

  it("the ablate-mode toggle turns plain clicks into ablations", async () => {
    const { model, root } = await mount();
    await answerAll(model);
    const toggle = q(root, '[data-testid="ablate-mode"]');
    toggle.click();
    expect(toggle.getAttribute("aria-pressed")).toBe("true");
    q(root, '[data-testid="head-cell"][data-layer="1"][data-head="0"]').dispatchEvent(new MouseEvent("click", { bubbles: true }));
    expect(model.sent.some((s) => s.msg.kind === "set_ablations")).toBe(true);
    expect(model.traits.focus).toEqual({ layer: 0, head: 0 });
  });

  it("never shows a stale ablation reply: only the newest request's prediction appears", async () => {
    const { model, root } = await mount();
    await answerAll(model);
    const cellA = q(root, '[data-testid="head-cell"][data-layer="0"][data-head="1"]');
    const cellB = q(root, '[data-testid="head-cell"][data-layer="1"][data-head="1"]');
    cellA.dispatchEvent(new MouseEvent("click", { bubbles: true, shiftKey: true }));
    cellB.dispatchEvent(new MouseEvent("click", { bubbles: true, shiftKey: true }));
    const [first, second] = model.sent.filter((s) => s.msg.kind === "set_ablations").map((s) => s.msg);
    expect((second.ablations as unknown[]).length).toBe(2);
    // The newer reply arrives first, then the old one.
    const [r2, b2] = answer(model, second);
    (r2.prediction as { ablated: { logit_diff: number } }).ablated.logit_diff = -2;
    model.reply(r2, b2);
    await new Promise((r) => setTimeout(r, 0));
    const [r1, b1] = answer(model, first);
    (r1.prediction as { ablated: { logit_diff: number } }).ablated.logit_diff = 7;
    model.reply(r1, b1);
    await new Promise((r) => setTimeout(r, 0));
    expect(q(root, '[data-testid="logit-diff"]').getAttribute("data-value")).toBe("-2");
    expect(cellA.getAttribute("data-ablated")).toBe("1");
    expect(cellB.getAttribute("data-ablated")).toBe("1");
  });

  it("an error reply reaches the status line", async () => {
    const { model, root } = await mount();
    const grid = model.sent.find((s) => s.msg.kind === "grid")!.msg;
    model.reply({ kind: "reply", id: grid.id, request: "grid", ok: false, error: "bad request: measure" });
    await new Promise((r) => setTimeout(r, 0));
    expect(q(root, '[data-testid="status"]').textContent).toBe("bad request: measure");
  });

  it("a layer range from Python hides the grid's other layers", async () => {
    const { model, root } = await mount();
    await answerAll(model);
    model.kernelSets("layer_range", [1, 2]);
    const row0 = q(root, '.fw-grid-row[data-layer="0"]');
    const row1 = q(root, '.fw-grid-row[data-layer="1"]');
    expect(row0.style.display).toBe("none");
    expect(row1.style.display).toBe("");
  });
});

describe("requestsForState", () => {
  it("asks only for what the shown views need, with the selection only where it matters", () => {
    const t = makeTraits({ views: ["grid"], grid_measure: "financial_focus", selection: { start: 1, end: 3 } });
    expect(requestsForState(t)).toEqual([{ lane: "grid", kind: "grid", params: { measure: "financial_focus" } }]);
    const t2 = makeTraits({ views: ["statement"], settings: { ...makeTraits().settings, statement_heads: "range" } });
    expect(requestsForState(t2)[0].params).toEqual({ scope: "range", selection: [], direction: "from", layer_range: [0, 2] });
  });

  it("the grid (for a measure that follows the switch) and the flow carry the direction switch", () => {
    for (const direction of ["from", "to"] as const) {
      const t = makeTraits({ views: ["grid", "flow"], grid_measure: "attention_to_selection", direction, selection: { start: 1, end: 3 } });
      expect(requestsForState(t)).toEqual([
        { lane: "grid", kind: "grid", params: { measure: "attention_to_selection", selection: [1, 3], direction } },
        { lane: "flow", kind: "flow", params: { selection: [1, 3], direction } },
      ]);
    }
    // a measure that reads the selection but not the switch: no direction in its request
    const e = makeTraits({ views: ["grid"], grid_measure: "entropy", direction: "to", selection: { start: 1, end: 3 } });
    expect(requestsForState(e)[0].params).toEqual({ measure: "entropy", selection: [1, 3] });
  });

  it("switching the direction re-asks the grid and the flow", async () => {
    const { model, root } = await mount();
    await answerAll(model);
    model.sent = [];
    const menu = q(root, '[data-testid="direction"]') as HTMLSelectElement;
    menu.value = menu.value === "from" ? "to" : "from";
    menu.dispatchEvent(new Event("change"));
    await new Promise((r) => setTimeout(r, 40));
    const kinds = model.sent.map((s) => s.msg.kind);
    expect(kinds).toContain("grid");
    expect(kinds).toContain("flow");
    expect(model.sent.find((s) => s.msg.kind === "flow")!.msg.direction).toBe(menu.value);
  });
});

describe("readiness", () => {
  it("a view whose data failed still lets the explorer finish its first draw (the status says why)", async () => {
    const { model, root } = await mount();
    const grid = model.sent.find((s) => s.msg.kind === "grid")!.msg;
    model.sent = model.sent.filter((s) => s.msg !== grid);
    model.reply({ kind: "reply", id: grid.id, request: "grid", ok: false, error: "the measure failed" });
    await answerAll(model);
    expect(root.getAttribute("data-finwidget-ready")).toBe("1");
    expect(q(root, '[data-testid="status"]').textContent).toBe("the measure failed");
  });
});

describe("hover linking", () => {
  it("hovering a span redraws the matrix with that span marked; leaving clears it", async () => {
    const { model, root, store } = await mount();
    await answerAll(model);
    const canvas = q(root, 'canvas[data-testid="attention-matrix"]');
    const before = Number(canvas.getAttribute("data-draw-count"));
    q(root, '[data-testid="span"][data-span-index="3"]').dispatchEvent(new MouseEvent("mouseenter"));
    expect(store.hoverSpan).toBe(3);
    await new Promise((r) => setTimeout(r, 40));
    expect(Number(canvas.getAttribute("data-draw-count"))).toBeGreaterThan(before);
    q(root, ".fw-statement-body").dispatchEvent(new MouseEvent("mouseleave"));
    expect(store.hoverSpan).toBeNull();
  });
});

describe("keyboard", () => {
  it("arrow keys move the focused head, Enter ablates it", async () => {
    const { model, root } = await mount();
    await answerAll(model);
    const grid = q(root, ".fw-grid");
    grid.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowDown", bubbles: true }));
    grid.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowRight", bubbles: true }));
    expect(model.traits.focus).toEqual({ layer: 1, head: 1 });
    grid.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowUp", bubbles: true }));
    grid.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowUp", bubbles: true }));
    expect(model.traits.focus).toEqual({ layer: 0, head: 1 });
    grid.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
    const req = model.sent.find((s) => s.msg.kind === "set_ablations")!.msg;
    expect(req.ablations).toEqual([{ layer: 0, head: 1, mode: "zero" }]);
  });
});

describe("the lists come from Python's catalogue", () => {
  it("a measure Python adds is in the menu and carries the selection if it uses one", async () => {
    const catalogue = {
      ...CATALOGUE,
      measures: [
        ...CATALOGUE.measures,
        { name: "novel", label: "a novel measure", unit: "u", description: "new", direction: "more" as const, uses_selection: true, follows_direction: false, needs: "attention" as const },
      ],
    };
    const { root } = await mount({ catalogue });
    const options = [...q(root, '[data-testid="grid-measure"]').querySelectorAll("option")].map((o) => o.textContent);
    expect(options).toContain("a novel measure");
    const t = makeTraits({ catalogue, views: ["grid"], grid_measure: "novel", selection: { start: 1, end: 3 } });
    expect(requestsForState(t)[0].params).toEqual({ measure: "novel", selection: [1, 3] });
  });

  it("a mode's value travels because the mode takes one, not because of its name", async () => {
    const modes = CATALOGUE.modes.map((m) => (m.name === "mean" ? { ...m, takes_value: true, value_symbol: "~" } : m));
    const settings = { ...makeTraits().settings, ablate_mode: "mean", scale_value: 2 };
    const { model, root } = await mount({ catalogue: { ...CATALOGUE, modes }, settings });
    await answerAll(model);
    const grid = q(root, ".fw-grid");
    grid.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
    const req = model.sent.find((s) => s.msg.kind === "set_ablations")!.msg;
    expect(req.ablations).toEqual([{ layer: 0, head: 0, mode: "mean", value: 2 }]);
    q(root, '[data-testid="sweep"]').click();
    const sweep = model.sent.find((s) => s.msg.kind === "sweep")!.msg;
    expect(sweep).toMatchObject({ mode: "mean", value: 2 });
  });
});
