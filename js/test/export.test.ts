// @vitest-environment jsdom
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { mountExplorer } from "../explorer";
import { explorerFigure } from "../export_controls";
import { figureText, frame, toSVG, wrapText } from "../export";
import { endsInWords } from "../legend";
import { ExplorerStore } from "../store";
import { installCanvasStub } from "./canvas_stub";
import { answerAll, FakeModel, makeTraits } from "./fake_kernel";

beforeAll(() => {
  installCanvasStub();
  HTMLCanvasElement.prototype.toDataURL = () => "data:image/png;base64,AAAA";
});

let cleanup: (() => void) | null = null;
afterEach(() => {
  cleanup?.();
  cleanup = null;
  document.body.replaceChildren();
});

/** A mounted explorer whose views answered, and the views' figures. */
async function mounted() {
  const model = new FakeModel(makeTraits({ ablations: [{ layer: 1, head: 2, mode: "zero" }] }));
  const store = new ExplorerStore(model.asModel());
  const host = document.createElement("div");
  document.body.append(host);
  const unmount = mountExplorer(store, host);
  cleanup = () => {
    unmount();
    store.destroy();
  };
  await new Promise((r) => setTimeout(r, 0));
  await answerAll(model);
  await new Promise((r) => setTimeout(r, 0));
  return { store, host };
}

describe("exports drawn from data", () => {
  it("frame every view with its title, colour bar and the state caption", async () => {
    const { store, host } = await mounted();
    // Through the toolbar, as a person exports the whole explorer.
    const select = host.querySelector('[data-testid="export-view"]') as HTMLSelectElement;
    expect([...select.options].map((o) => o.value)).toContain("explorer");
    const g = store.get("geometry");
    const svgButton = host.querySelector('[data-testid="export-svg"]') as HTMLButtonElement;
    let href = "";
    const click = HTMLAnchorElement.prototype.click;
    HTMLAnchorElement.prototype.click = function (this: HTMLAnchorElement) {
      href = this.href;
    };
    try {
      select.value = "explorer";
      select.dispatchEvent(new Event("change"));
      svgButton.click();
    } finally {
      HTMLAnchorElement.prototype.click = click;
    }
    const svg = decodeURIComponent(href.replace(/^data:image\/svg\+xml;charset=utf-8,/, ""));
    expect(svg.startsWith("<svg")).toBe(true);
    for (const piece of ["Attention of head", "Layers × heads", "Statement:", "Prediction", "attention mass", `model ${g.model_name}`, "ablations: L1 H2 (zero)"]) {
      expect(svg).toContain(piece);
    }
    // no live-page artefacts: the hover box's text and the focus ring are not in the file
    expect(svg).not.toContain("fw-tooltip");
    expect(svg).not.toContain("query #");
  });
});

describe("figure pieces", () => {
  it("escape text in SVG and keep every text in order", () => {
    const f = frame({ title: "a <b> & c", body: { width: 100, height: 10, prims: [] }, caption: "model x · head L0 H1" });
    const svg = toSVG(f, "desc & more");
    expect(svg).toContain("a &lt;b&gt; &amp; c");
    expect(svg).toContain("<desc>desc &amp; more</desc>");
    expect(figureText(f)).toEqual(["a <b> & c", "model x · head L0 H1"]);
  });

  it("wrap captions at word boundaries within the width", () => {
    const lines = wrapText("one two three four five six seven eight nine ten", 60, 10);
    expect(lines.join(" ")).toBe("one two three four five six seven eight nine ten");
    for (const l of lines) expect(l.length).toBeLessThanOrEqual(Math.floor(60 / 5.5));
  });

  it("say what dark means: more of the measure, or what its definition says", () => {
    expect(endsInWords({ label: "financial focus", description: "share of attention", direction: "more" }).high).toBe("dark = more financial focus");
    expect(endsInWords({ label: "entropy", description: "normalized; 0 = one token, 1 = spread; dark = diffuse", direction: "more" }).high).toBe(
      "dark = more entropy (diffuse)",
    );
    expect(endsInWords({ label: "effect", description: "x", direction: "signed" })).toEqual({ low: "blue = negative", high: "red = positive" });
  });

  it("stack the whole explorer under one title", async () => {
    const { store } = await mounted();
    const fig = explorerFigure([], store);
    expect(figureText(fig)[0]).toContain("finwidget explorer");
  });
});
