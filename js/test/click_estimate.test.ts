// @vitest-environment jsdom
// A click's first-order estimate: shown at once, marked as an estimate, replaced by the
// exact reply; superseded replies never shown; the sweep's cancel button.
import { beforeAll, describe, expect, it } from "vitest";
import { installCanvasStub } from "./canvas_stub";
import { mountOnFakeKernel, unmountAfterEach } from "./mount";
import { answer, answerAll } from "./fake_kernel";

beforeAll(() => {
  installCanvasStub();
  HTMLCanvasElement.prototype.toDataURL = () => "data:image/png;base64,AAAA";
});

unmountAfterEach();

const q = (root: ParentNode, sel: string) => root.querySelector(sel) as HTMLElement;
const tick = () => new Promise((r) => setTimeout(r, 0));

describe("click estimates", () => {
  it("shows the estimate marked as one, then the exact value replaces it", async () => {
    const { model, root } = await mountOnFakeKernel();
    await answerAll(model);
    q(root, '[data-testid="head-cell"][data-layer="2"][data-head="3"]').dispatchEvent(new MouseEvent("click", { bubbles: true, shiftKey: true }));
    const kinds = model.sent.map((s) => s.msg.kind);
    expect(kinds.indexOf("estimate_ablations")).toBeGreaterThanOrEqual(0);
    expect(kinds.indexOf("estimate_ablations")).toBeLessThan(kinds.indexOf("set_ablations"));
    const estimateRequest = model.sent.find((s) => s.msg.kind === "estimate_ablations")!.msg;
    const exactRequest = model.sent.find((s) => s.msg.kind === "set_ablations")!.msg;
    expect(estimateRequest.ablations).toEqual(exactRequest.ablations);

    model.reply(...answer(model, estimateRequest));
    await tick();
    const panel = q(root, '[data-testid="prediction-panel"]');
    const ld = q(root, '[data-testid="logit-diff"]');
    expect(panel.getAttribute("data-estimate")).toBe("1");
    expect(ld.getAttribute("data-value")).toBe("-0.4");
    expect(ld.textContent).toContain("≈");
    expect(q(root, '[data-testid="p-increase"]').textContent).toContain("≈");
    const note = q(root, '[data-testid="estimate-note"]');
    expect(note.style.display).toBe("");
    expect(note.textContent).toContain("estimate (first-order");
    expect(note.textContent).toContain("computing the exact value");

    model.reply(...answer(model, exactRequest));
    await tick();
    expect(panel.getAttribute("data-estimate")).toBeNull();
    expect(ld.getAttribute("data-value")).toBe("-0.5");
    expect(ld.textContent).not.toContain("≈");
    expect(note.style.display).toBe("none");
  });

  it("never shows a superseded estimate, nor an estimate that arrives after the exact value", async () => {
    const { model, root } = await mountOnFakeKernel();
    await answerAll(model);
    q(root, '[data-testid="head-cell"][data-layer="0"][data-head="1"]').dispatchEvent(new MouseEvent("click", { bubbles: true, shiftKey: true }));
    q(root, '[data-testid="head-cell"][data-layer="1"][data-head="1"]').dispatchEvent(new MouseEvent("click", { bubbles: true, shiftKey: true }));
    const [estimateA, estimateB] = model.sent.filter((s) => s.msg.kind === "estimate_ablations").map((s) => s.msg);
    const [exactA, exactB] = model.sent.filter((s) => s.msg.kind === "set_ablations").map((s) => s.msg);
    const panel = q(root, '[data-testid="prediction-panel"]');
    const ld = q(root, '[data-testid="logit-diff"]');
    // The older click's estimate and exact reply come late: both are stale (older ids in their lanes).
    const [ra, ba] = answer(model, estimateA);
    (ra.prediction as { ablated: { logit_diff: number } }).ablated.logit_diff = 9;
    model.reply(ra, ba);
    await tick();
    expect(panel.getAttribute("data-estimate")).toBeNull();
    expect(ld.getAttribute("data-value")).not.toBe("9");
    const [rx, bx] = answer(model, exactA);
    (rx.prediction as { ablated: { logit_diff: number } }).ablated.logit_diff = 8;
    model.reply(rx, bx);
    await tick();
    expect(ld.getAttribute("data-value")).not.toBe("8");
    // The newer click's exact reply arrives before its estimate: the estimate is never shown.
    model.reply(...answer(model, exactB));
    await tick();
    expect(ld.getAttribute("data-value")).toBe("-0.5");
    model.reply(...answer(model, estimateB));
    await tick();
    expect(ld.getAttribute("data-value")).toBe("-0.5");
    expect(panel.getAttribute("data-estimate")).toBeNull();
  });

  it("a kernel without an estimate yet leaves the pending state until the exact value", async () => {
    const { model, root } = await mountOnFakeKernel();
    await answerAll(model);
    q(root, '[data-testid="head-cell"][data-layer="2"][data-head="0"]').dispatchEvent(new MouseEvent("click", { bubbles: true, shiftKey: true }));
    const estimateRequest = model.sent.find((s) => s.msg.kind === "estimate_ablations")!.msg;
    model.reply({ kind: "reply", id: estimateRequest.id, request: "estimate_ablations", ok: true, prediction: null, reason: "no estimate yet", ablations: estimateRequest.ablations });
    await tick();
    const panel = q(root, '[data-testid="prediction-panel"]');
    expect(panel.getAttribute("data-estimate")).toBeNull();
    expect(panel.getAttribute("data-pending")).toBe("1");
    expect(q(root, '[data-testid="status"]').textContent).not.toContain("estimate");
  });

  it("the prediction panel's Cancel button stops a running sweep", async () => {
    const { model, root } = await mountOnFakeKernel();
    await answerAll(model);
    const cancel = q(root, '[data-testid="sweep-cancel-current"]');
    expect(cancel.style.display).toBe("none");
    q(root, '[data-testid="sweep"]').click();
    await tick();
    expect(cancel.style.display).toBe("");
    cancel.click();
    const sweep = model.sent.find((s) => s.msg.kind === "sweep")!.msg;
    expect(model.sent.some((s) => s.msg.kind === "cancel_sweep")).toBe(true);
    model.reply({ kind: "reply", id: sweep.id, request: "sweep", ok: false, error: "sweep cancelled after 3 of 12 head ablations" });
    await tick();
    expect(cancel.style.display).toBe("none");
    expect(q(root, '[data-testid="status"]').textContent).toContain("sweep cancelled");
  });
});
