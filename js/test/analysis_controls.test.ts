// @vitest-environment jsdom
// The analysis controls: undo/redo history, the clean/ablated/difference switch, the
// statement picker, the sweep over every statement with cancel, and "mean" refused
// with Python's reason when there is no reference set.
import { beforeAll, describe, expect, it } from "vitest";
import { requestsForState, type Ablation } from "../protocol";
import { AblationHistory } from "../store";
import { installCanvasStub } from "./canvas_stub";
import { mountOnFakeKernel, unmountAfterEach } from "./mount";
import { answerAll, CATALOGUE, FakeModel, LINES, makeTraits } from "./fake_kernel";
import { makeLayout } from "./fixtures";

beforeAll(() => {
  installCanvasStub();
});

unmountAfterEach();

const mount = mountOnFakeKernel;

const q = (root: ParentNode, sel: string) => root.querySelector(sel) as HTMLElement;
const a = (layer: number, head: number, mode = "zero"): Ablation => ({ layer, head, mode });
const sentKinds = (model: FakeModel) => model.sent.map((s) => s.msg.kind);
const lastSent = (model: FakeModel, kind: string) => [...model.sent].reverse().find((s) => s.msg.kind === kind)?.msg;

describe("AblationHistory", () => {
  it("undoes and redoes in order, and a new change clears what was undone", () => {
    const h = new AblationHistory();
    const s0: Ablation[] = [];
    const s1 = [a(0, 1)];
    const s2 = [a(0, 1), a(1, 2)];
    h.record(s0, s1);
    h.record(s1, s2);
    h.record(s2, [...s2]); // no change: nothing recorded
    expect(h.past.length).toBe(2);
    expect(h.undo(s2)).toEqual(s1);
    expect(h.undo(s1)).toEqual(s0);
    expect(h.undo(s0)).toBeNull();
    expect(h.redo(s0)).toEqual(s1);
    expect(h.canRedo).toBe(true);
    h.record(s1, [a(1, 0)]);
    expect(h.canRedo).toBe(false);
    expect(h.undo([a(1, 0)])).toEqual(s1);
  });

  it("keeps at most `limit` steps", () => {
    const h = new AblationHistory(3);
    for (let i = 0; i < 5; i++) h.record([a(0, i)], [a(0, i + 1)]);
    expect(h.past.length).toBe(3);
    expect(h.past[0]).toEqual([a(0, 2)]);
  });
});

describe("undo and redo in the widget", () => {
  it("buttons and Ctrl+Z / Ctrl+Shift+Z inside the widget walk the ablation history", async () => {
    const { model, store, root } = await mount();
    await answerAll(model);
    expect((q(root, '[data-testid="undo"]') as HTMLButtonElement).disabled).toBe(true);
    void store.requestAblations([a(0, 1)]);
    await answerAll(model);
    void store.requestAblations([a(0, 1), a(2, 3)]);
    await answerAll(model);
    expect(store.ablations).toEqual([a(0, 1), a(2, 3)]);
    expect((q(root, '[data-testid="undo"]') as HTMLButtonElement).disabled).toBe(false);

    // focus inside the widget: Ctrl+Z undoes
    const cell = q(root, '[data-testid="undo"]');
    cell.dispatchEvent(new KeyboardEvent("keydown", { key: "z", ctrlKey: true, bubbles: true }));
    expect(lastSent(model, "set_ablations")!.ablations).toEqual([a(0, 1)]);
    await answerAll(model);
    expect(store.ablations).toEqual([a(0, 1)]);
    q(root, '[data-testid="undo"]').click();
    await answerAll(model);
    expect(store.ablations).toEqual([]);
    cell.dispatchEvent(new KeyboardEvent("keydown", { key: "Z", ctrlKey: true, shiftKey: true, bubbles: true }));
    await answerAll(model);
    expect(store.ablations).toEqual([a(0, 1)]);
    q(root, '[data-testid="redo"]').click();
    await answerAll(model);
    expect(store.ablations).toEqual([a(0, 1), a(2, 3)]);
    expect((q(root, '[data-testid="redo"]') as HTMLButtonElement).disabled).toBe(true);
  });

  it("Ctrl+Z outside the widget does nothing to it", async () => {
    const { model, store } = await mount();
    await answerAll(model);
    void store.requestAblations([a(0, 1)]);
    await answerAll(model);
    const outside = document.createElement("input");
    document.body.append(outside);
    outside.dispatchEvent(new KeyboardEvent("keydown", { key: "z", ctrlKey: true, bubbles: true }));
    document.body.dispatchEvent(new KeyboardEvent("keydown", { key: "z", ctrlKey: true, bubbles: true }));
    await answerAll(model);
    expect(store.ablations).toEqual([a(0, 1)]);
  });
});

describe("which run the attention views show", () => {
  it("the switch sets attention_run and the views then ask for that run with the current ablations", async () => {
    const ablations = [a(0, 1)];
    const { model, root } = await mount({ ablations });
    await answerAll(model);
    expect(q(root, '[data-testid="run-label"]').textContent).toBe("showing: clean run");
    const sw = q(root, '[data-testid="attention-run"]') as HTMLSelectElement;
    sw.value = "ablated";
    sw.dispatchEvent(new Event("change"));
    expect(model.traits.attention_run).toBe("ablated");
    await new Promise((r) => setTimeout(r, 0));
    const matrix = lastSent(model, "head_matrix")!;
    expect(matrix.run).toBe("ablated");
    expect(matrix.ablations).toEqual(ablations);
    expect(lastSent(model, "token_values")!.run).toBe("ablated");
    expect(lastSent(model, "flow")!.run).toBe("ablated");
    expect(lastSent(model, "grid")).toBeUndefined(); // the grid (not a run's attention) is not asked again
    await answerAll(model);
    expect(q(root, '[data-testid="run-label"]').textContent).toBe("showing: ablated run");
  });

  it("clean requests carry no run (the exported page's keys stay as they were)", () => {
    const t = makeTraits({ ablations: [a(0, 1)] });
    for (const plan of requestsForState(t)) expect(plan.params.run).toBeUndefined();
    const d = requestsForState({ ...t, attention_run: "difference" });
    expect(d.filter((p) => p.params.run === "difference").map((p) => p.kind).sort()).toEqual(["flow", "head_matrix", "token_values"]);
  });
});

describe("several statements", () => {
  const statements = [0, 1, 2].map((index) => ({ index, label: `statement ${index}` }));

  it("picker, previous and next set statement_index; a new statement rebuilds the views and keeps the ablations", async () => {
    const ablations = [a(1, 2)];
    const { model, root } = await mount({ statements, ablations });
    await answerAll(model);
    expect(q(root, '[data-testid="statement-position"]').textContent).toBe("1 of 3");
    expect((q(root, '[data-testid="statement-prev"]') as HTMLButtonElement).disabled).toBe(true);
    q(root, '[data-testid="statement-next"]').click();
    expect(model.traits.statement_index).toBe(1);
    // Python answers with the new statement's layout
    model.sent.length = 0;
    const layout = makeLayout([LINES[0], "Operating cash flow: change -12 | 2010: 88"]);
    model.kernelSets("statement_layout", layout);
    await new Promise((r) => setTimeout(r, 0));
    expect(sentKinds(model).sort()).toEqual(["flow", "grid", "head_matrix", "token_values"]);
    await answerAll(model);
    const texts = Array.from(root.querySelectorAll('[data-testid="span"]')).map((e) => e.textContent);
    expect(texts).toContain("-12");
    expect(root.getAttribute("data-statement-index")).toBe("1");
    expect(root.getAttribute("data-finwidget-ready")).toBe("1");
    expect(root.getAttribute("data-finwidget-busy")).toBe("0");
    expect(model.traits.ablations).toEqual(ablations);
    const picker = q(root, '[data-testid="statement-picker"]') as HTMLSelectElement;
    picker.value = "2";
    picker.dispatchEvent(new Event("change"));
    expect(model.traits.statement_index).toBe(2);
  });

  it("sweeps every statement, shows progress and can cancel", async () => {
    const { model, root } = await mount({ statements });
    await answerAll(model);
    q(root, '[data-testid="sweep-all"]').click();
    const sweep = lastSent(model, "sweep")!;
    expect(sweep.statements).toBe("all");
    model.reply({ kind: "progress", id: sweep.id, done: 4, total: 36, message: "head ablations" });
    expect(q(root, '[data-testid="sweep-all-progress"]').textContent).toBe("4 / 36 head ablations");
    expect(q(root, '[data-testid="sweep-cancel"]').style.display).toBe("");
    q(root, '[data-testid="sweep-cancel"]').click();
    expect(lastSent(model, "cancel_sweep")).toBeTruthy();
    model.reply({ kind: "reply", id: sweep.id, request: "sweep", ok: false, error: "sweep cancelled after 5 of 36 head ablations" });
    await new Promise((r) => setTimeout(r, 0));
    expect(q(root, '[data-testid="sweep-cancel"]').style.display).toBe("none");
    expect(q(root, '[data-testid="status"]').textContent).toContain("cancelled");
  });

  it("a single statement shows no statement bar", async () => {
    const { root } = await mount();
    expect(q(root, '[data-testid="statement-bar"]').style.display).toBe("none");
  });
});

describe("modes mean what they mean in Python", () => {
  it("names the reference set of mean, and refuses mean with Python's reason when there is none", async () => {
    const reason = "this is not the demo model and no reference statements were given";
    const catalogue = {
      ...CATALOGUE,
      modes: CATALOGUE.modes.map((m) => (m.name === "mean" ? { ...m, disabled_reason: reason } : m)),
      reference: { available: false, name: "no reference set", disabled_reason: reason },
    };
    const { model, store, root } = await mount({ catalogue });
    await answerAll(model);
    expect(q(root, '[data-testid="reference-name"]').textContent).toBe(`mean is disabled: ${reason}`);
    const meanOption = q(root, '[data-testid="ablation-mode"] option[value="mean"]') as HTMLOptionElement;
    expect(meanOption.disabled).toBe(true);
    expect(meanOption.title).toBe(reason);
    const zeroOption = q(root, '[data-testid="ablation-mode"] option[value="zero"]') as HTMLOptionElement;
    expect(zeroOption.disabled).toBe(false);
    expect(zeroOption.title).toBe("");
    void store.requestAblations([a(0, 1, "mean")]);
    expect(lastSent(model, "set_ablations")).toBeUndefined();
    expect(q(root, '[data-testid="status"]').textContent).toContain(reason);
  });

  it("the factor control is live only for a mode that takes a value and sets the value new ablations carry", async () => {
    const { model, store, root } = await mount();
    const input = q(root, '[data-testid="mode-value"]') as HTMLInputElement;
    expect(input.disabled).toBe(true); // zero takes no value
    store.set({ settings: { ...store.get("settings"), ablate_mode: "scale" } });
    expect(input.disabled).toBe(false);
    input.value = "0.5";
    input.dispatchEvent(new Event("change"));
    expect(store.get("settings").scale_value).toBe(0.5);
    expect(store.modeValue("scale")).toBe(0.5);
    expect(q(root, '[data-testid="reference-name"]').textContent).toContain("3 statements you passed");
    expect(model.saves).toBeGreaterThan(0);
  });
});

describe("the difference run is drawn on the diverging scale", () => {
  it("statement, matrix and flow say what red and blue mean, and colour negative blue, positive red", async () => {
    const { model, root } = await mount({ attention_run: "difference", ablations: [a(0, 1)] });
    await answerAll(model);
    for (const id of ["statement-legend", "matrix-legend", "flow-legend"]) {
      const words = q(root, `[data-testid="${id}"] .fw-legend-words`).textContent ?? "";
      expect(words, id).toContain("blue = ablated attends less than clean");
      expect(words, id).toContain("red = ablated attends more");
    }
    const spans = [...root.querySelectorAll<HTMLElement>('.fw-span[data-value]')];
    const rgbOf = (node: HTMLElement) => (node.style.backgroundColor.match(/\d+/g) ?? []).map(Number);
    const negative = spans.filter((n) => Number(n.dataset.value) < -0.2 && n.style.backgroundColor);
    const positive = spans.filter((n) => Number(n.dataset.value) > 0.2 && n.style.backgroundColor);
    expect(negative.length).toBeGreaterThan(0);
    expect(positive.length).toBeGreaterThan(0);
    for (const n of negative) expect(rgbOf(n)[2]).toBeGreaterThan(rgbOf(n)[0]); // blue
    for (const n of positive) expect(rgbOf(n)[0]).toBeGreaterThan(rgbOf(n)[2]); // red
  });

  it("the clean run keeps the sequential scale and its words", async () => {
    const { model, root } = await mount();
    await answerAll(model);
    expect(q(root, '[data-testid="statement-legend"] .fw-legend-words').textContent).toContain("light = less");
    expect(q(root, '[data-testid="matrix-legend"] .fw-legend-words').textContent).toContain("dark = more attention");
  });
});
