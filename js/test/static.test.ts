// @vitest-environment jsdom
import { beforeAll, describe, expect, it } from "vitest";
import { requestKey, requestsForState } from "../protocol";
import { mountStatic } from "../widget";
import { installCanvasStub } from "./canvas_stub";
import { answer, FakeModel, makeTraits } from "./fake_kernel";

beforeAll(() => {
  installCanvasStub();
});

function toBase64(view: DataView): string {
  const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

describe("an exported page (no kernel)", () => {
  it("draws the saved state from the embedded replies and says what it cannot do", async () => {
    const traits = makeTraits({ selection: { start: 1, end: 3 }, ablations: [{ layer: 1, head: 2, mode: "zero" }] });
    const kernel = new FakeModel(traits);
    // What save_html embeds: the replies to the state's requests, keyed without ids.
    const replies = requestsForState(traits).map((plan) => {
      const msg = { kind: plan.kind, ...plan.params };
      const [reply, buffers] = answer(kernel, { ...msg, id: 0 });
      return { key: requestKey(msg), reply: reply as never, buffers: buffers.map(toBase64) };
    });
    const host = document.createElement("div");
    document.body.append(host);
    const unmount = mountStatic(host, { traits, replies });
    for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 0));
    const root = host.querySelector(".fw-explorer")!;
    expect(root.getAttribute("data-finwidget-ready")).toBe("1");
    expect(root.getAttribute("data-offline")).toBe("1");
    expect(root.querySelector('[data-testid="ablated-list"]')!.textContent).toContain("L1 H2 (zero)");
    expect(root.querySelectorAll('[data-selected="1"]').length).toBe(2);
    // Another head was not exported: the status line says why instead of hanging.
    (root.querySelector('[data-testid="head-cell"][data-layer="2"][data-head="0"]') as HTMLElement).click();
    for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 0));
    expect(root.querySelector('[data-testid="status"]')!.textContent).toMatch(/no kernel/);
    expect(root.getAttribute("data-finwidget-busy")).toBe("0");
    // Ablating needs the kernel too.
    (root.querySelector('[data-testid="head-cell"][data-layer="0"][data-head="0"]') as HTMLElement).dispatchEvent(
      new MouseEvent("click", { bubbles: true, shiftKey: true }),
    );
    expect(root.querySelector('[data-testid="status"]')!.textContent).toMatch(/no kernel/);
    unmount();
    expect(host.children.length).toBe(0);
  });
});
