// @vitest-environment jsdom
import { beforeAll, describe, expect, it } from "vitest";
import { requestKey, requestsForState, type WhatIfState } from "../protocol";
import { mountStatic } from "../widget";
import { parseNumberText } from "../what_if";
import { installCanvasStub } from "./canvas_stub";
import { answer, answerAll, f32, FakeModel, makeTraits } from "./fake_kernel";
import { mountOnFakeKernel, unmountAfterEach } from "./mount";

beforeAll(() => {
  installCanvasStub();
  HTMLCanvasElement.prototype.toDataURL = () => "data:image/png;base64,AAAA";
});

unmountAfterEach();

const q = (root: ParentNode, sel: string) => root.querySelector(sel) as HTMLElement;
const tick = () => new Promise((r) => setTimeout(r, 0));

const ACTIVE: WhatIfState = {
  available: true,
  disabled_reason: "",
  steps: 1,
  edits: [{ description: "Net income 2009: 2,743 → -100", what: "Net income 2009", old: "2,743", new: "-100", step: 0 }],
  changes: [
    { span: 0, what: "Revenue change", old: "+425", new: "-2,418" },
    { span: 1, what: "Net income 2009", old: "2,743", new: "-100" },
  ],
  changed_spans: [0, 1],
  original: { logit_diff: 4.5, p_increase: 0.989, label: "increase", n_tokens: 30 },
  edited: { logit_diff: -3.25, p_increase: 0.037, label: "decrease", n_tokens: 31 },
  flipped: true,
  logit_diff_change: -7.75,
  original_text: "x",
};

function numberSpan(root: HTMLElement): HTMLElement {
  return q(root, '[data-testid="span"][data-kind="number"]');
}

function dblclick(node: HTMLElement): void {
  node.dispatchEvent(new MouseEvent("dblclick", { bubbles: true, cancelable: true }));
}

function press(node: HTMLElement, key: string): void {
  node.dispatchEvent(new KeyboardEvent("keydown", { key, bubbles: true, cancelable: true }));
}

describe("numbers as people type them", () => {
  it("reads signs, separators, dollars and parentheses, and refuses the rest (as Python's parse_number_text)", () => {
    expect(parseNumberText("-100")).toBe(-100);
    expect(parseNumberText("−1,250")).toBe(-1250);
    expect(parseNumberText("(100)")).toBe(-100);
    expect(parseNumberText("$3,500.5")).toBe(3500.5);
    expect(parseNumberText(" +7 ")).toBe(7);
    for (const bad of ["abc", "1e5", "--3", "", "1,23", "(-5)", "NaN", "Infinity", "1.2.3"]) expect(parseNumberText(bad)).toBeNull();
  });
});

describe("requests while a what-if is shown", () => {
  it("colour by difference asks the grid and the statement for edited − original, nothing else changes", () => {
    const plain = requestsForState(makeTraits({ what_if_state: ACTIVE, what_if_difference: false }));
    const diff = requestsForState(makeTraits({ what_if_state: ACTIVE, what_if_difference: true, attention_run: "ablated", selection: { start: 1, end: 2 } }));
    const byKind = Object.fromEntries(diff.map((p) => [p.kind, p.params]));
    expect(byKind.grid.what_if).toBe("difference");
    expect(byKind.token_values).toEqual({ scope: "focus", selection: [], direction: "from", layer: 0, head: 0, what_if: "difference" });
    expect(byKind.head_matrix.what_if).toBeUndefined();
    expect(plain.every((p) => p.params.what_if === undefined)).toBe(true);
    // no edits: nothing to compare, the switch changes nothing
    const idle = requestsForState(makeTraits({ what_if_state: { available: true }, what_if_difference: true }));
    expect(idle.every((p) => p.params.what_if === undefined)).toBe(true);
  });
});

describe("the number editor", () => {
  it("opens on a double-click prefilled as written; text that is not a number gets an inline error and sends nothing", async () => {
    const { model, root } = await mountOnFakeKernel({ what_if_state: { available: true, disabled_reason: "" } });
    await answerAll(model);
    const span = numberSpan(root);
    dblclick(span);
    const input = q(root, '[data-testid="what-if-input"]') as HTMLInputElement;
    expect(input).toBeTruthy();
    expect(input.value).toBe(span.textContent);
    expect(span.style.display).toBe("none");
    input.value = "abc";
    press(input, "Enter");
    await tick();
    const error = q(root, '[data-testid="what-if-error"]');
    expect(error.hidden).toBe(false);
    expect(error.textContent).toContain("“abc” is not a number");
    expect(model.sent.filter((s) => s.msg.kind === "what_if")).toEqual([]);
    press(input, "Escape");
    expect(q(root, '[data-testid="what-if-input"]')).toBeNull();
    expect(span.style.display).toBe("");
  });

  it("Enter sends the span and the text typed; the kernel's refusal shows inline and the editor stays", async () => {
    const { model, root } = await mountOnFakeKernel({ what_if_state: { available: true, disabled_reason: "" } });
    await answerAll(model);
    const span = numberSpan(root);
    dblclick(span);
    const input = q(root, '[data-testid="what-if-input"]') as HTMLInputElement;
    input.value = "-100";
    press(input, "Enter");
    await tick();
    const sent = model.sent.filter((s) => s.msg.kind === "what_if");
    expect(sent.length).toBe(1);
    expect(sent[0].msg.span).toBe(Number(span.getAttribute("data-span-index")));
    expect(sent[0].msg.value).toBe("-100");
    expect(input.disabled).toBe(true);
    model.reply({ kind: "reply", id: sent[0].msg.id, request: "what_if", ok: false, error: "the edit was refused: no" });
    await tick();
    expect(q(root, '[data-testid="what-if-error"]').textContent).toBe("the edit was refused: no");
    expect(input.disabled).toBe(false);
    expect(q(root, '[data-testid="what-if-input"]')).toBe(input);
    // the statement's own keys (arrows, Enter selects) never see the editor's keys
    const selectionBefore = JSON.stringify(model.traits.selection);
    press(input, "ArrowRight");
    expect(JSON.stringify(model.traits.selection)).toBe(selectionBefore);
  });

  it("says why instead of opening: a word, recorded attention, an exported page", async () => {
    const { model, root } = await mountOnFakeKernel({ what_if_state: { available: true, disabled_reason: "" } });
    await answerAll(model);
    dblclick(q(root, '[data-testid="span"][data-kind="word"]'));
    expect(q(root, '[data-testid="what-if-input"]')).toBeNull();
    expect(q(root, '[data-testid="what-if-message"]').textContent).toContain("is not a number of the statement");

    const recorded = await mountOnFakeKernel({ what_if_state: { available: false, disabled_reason: "this explorer shows recorded attention only" } });
    dblclick(numberSpan(recorded.root));
    expect(q(recorded.root, '[data-testid="what-if-input"]')).toBeNull();
    expect(q(recorded.root, '[data-testid="what-if-message"]').textContent).toContain("recorded attention only");
    expect(q(recorded.root, '[data-testid="what-if-hint"]').textContent).toContain("not possible here");
  });
});

describe("the what-if section and the difference colouring", () => {
  it("shows both predictions, the edit, marks the changed spans; undo and the switch go to the kernel", async () => {
    const { model, root } = await mountOnFakeKernel({ what_if_state: ACTIVE });
    await answerAll(model);
    const panel = q(root, '[data-testid="what-if-panel"]');
    expect(panel.getAttribute("data-active")).toBe("1");
    expect(q(panel, '[data-testid="what-if-original"]').textContent).toContain("“increase”");
    expect(q(panel, '[data-testid="what-if-edited"]').textContent).toContain("“decrease”");
    expect(q(panel, '[data-testid="what-if-edited"]').textContent).toContain("-3.250");
    expect(q(panel, '[data-testid="what-if-change"]').textContent).toContain("“increase” → “decrease”");
    expect(q(panel, '[data-testid="what-if-flipped"]').style.display).toBe("");
    expect([...panel.querySelectorAll('[data-testid="what-if-edit"]')].map((n) => n.textContent)).toEqual(["Net income 2009: 2,743 → -100"]);
    expect(panel.textContent).toContain("Revenue change: +425 → -2,418 (recomputed)");
    const marked = [...root.querySelectorAll('[data-testid="span"][data-what-if-changed]')].map((n) => Number(n.getAttribute("data-span-index")));
    expect(marked).toEqual([0, 1]);

    q(panel, '[data-testid="what-if-undo"]').click();
    expect(model.sent.some((s) => s.msg.kind === "undo_what_if")).toBe(true);

    const toggle = q(panel, '[data-testid="what-if-difference"]') as HTMLInputElement;
    toggle.checked = true;
    toggle.dispatchEvent(new Event("change"));
    expect(model.traits.what_if_difference).toBe(true);
    await tick();
    const grid = model.sent.find((s) => s.msg.kind === "grid" && s.msg.what_if === "difference");
    const tokens = model.sent.find((s) => s.msg.kind === "token_values" && s.msg.what_if === "difference");
    expect(grid && tokens).toBeTruthy();
    const S = (model.traits.statement_layout as { spans: unknown[] }).spans.length;
    const T = (model.traits.statement_layout as { tokens: unknown[] }).tokens.length;
    model.reply({ kind: "reply", id: grid!.msg.id, request: "grid", ok: true, measure: grid!.msg.measure, label: "x: edited − original", what_if: "difference", arrays: { values: { encoding: "f32", shape: [12], buffer: 0 } } }, [f32(Array.from({ length: 12 }, (_, i) => i - 6))]);
    const spanDiff: number[] = Array.from({ length: S }, (_, i) => (i === 1 ? 0.5 : i === 2 ? -0.25 : 0));
    spanDiff[S - 1] = NaN;
    model.reply(
      { kind: "reply", id: tokens!.msg.id, request: "token_values", ok: true, reduce: "sum", label: "layer 0 head 0, attention from the answer position: edited − original", what_if: "difference", arrays: { values: { encoding: "f32", shape: [T], buffer: 0 }, span_values: { encoding: "f32", shape: [S], buffer: 1 } } },
      [f32(Array.from({ length: T }, () => 0.1)), f32(spanDiff)],
    );
    await tick();
    const gridView = q(root, '[data-testid="head-grid"]');
    expect(gridView.getAttribute("data-what-if-difference")).toBe("1");
    expect(gridView.textContent).toContain("edited − original (what-if)");
    const statement = q(root, '[data-testid="statement-view"]');
    expect(statement.getAttribute("data-what-if-difference")).toBe("1");
    expect(statement.textContent).toContain("attention from the answer position: edited − original");
    const spanEl = (i: number) => q(statement, `[data-testid="span"][data-span-index="${i}"]`);
    expect(Number(spanEl(1).getAttribute("data-value"))).toBe(0.5);
    expect(Number(spanEl(2).getAttribute("data-value"))).toBe(-0.25);
    // a diverging scale: more and less attention in different hues
    expect(spanEl(1).style.backgroundColor).not.toBe(spanEl(2).style.backgroundColor);
    expect(spanEl(1).style.backgroundColor && spanEl(2).style.backgroundColor).toBeTruthy();
  });

  it("the exported page shows the what-if; undo and editing say they need the kernel", async () => {
    const traits = makeTraits({ what_if_state: ACTIVE });
    const kernel = new FakeModel(traits);
    const replies = requestsForState(traits).map((plan) => {
      const msg = { kind: plan.kind, ...plan.params };
      const [reply, buffers] = answer(kernel, { ...msg, id: 0 });
      return { key: requestKey(msg), reply: reply as never, buffers: buffers.map(toBase64) };
    });
    const host = document.createElement("div");
    document.body.append(host);
    const unmount = mountStatic(host, { traits, replies });
    for (let i = 0; i < 5; i++) await tick();
    const root = host.querySelector(".fw-explorer") as HTMLElement;
    expect(root.getAttribute("data-finwidget-ready")).toBe("1");
    expect(q(root, '[data-testid="what-if-panel"]').textContent).toContain("Net income 2009: 2,743 → -100");
    expect(q(root, '[data-testid="what-if-edited"]').textContent).toContain("“decrease”");
    expect((q(root, '[data-testid="what-if-undo"]') as HTMLButtonElement).disabled).toBe(true);
    dblclick(numberSpan(root));
    expect(q(root, '[data-testid="what-if-input"]')).toBeNull();
    expect(q(root, '[data-testid="what-if-message"]').textContent).toContain("no kernel");
    unmount();
  });
});

function toBase64(view: DataView): string {
  const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}
