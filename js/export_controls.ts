// The toolbar's export controls: which view (or the whole explorer), PNG or SVG. The
// file is drawn from the views' data (export.ts), downloaded, and the kernel keeps the
// PNG (explorer.last_png) as before.

import { withRampBackground } from "./colors";
import { stateCaption } from "./caption";
import { el, select } from "./dom";
import { frame, stack, toPNG, toSVG, type Figure } from "./export";
import type { ViewInfo } from "./protocol";
import type { ExplorerStore } from "./store";
import type { View } from "./views/view";

export const WHOLE_EXPLORER = "explorer";

/** Every view's figure, stacked, under one title (the explorer as one picture). */
export function explorerFigure(views: View[], store: ExplorerStore): Figure {
  const g = store.get("geometry");
  const head: Figure = {
    width: 420,
    height: 34,
    prims: [{ t: "text", x: 16, y: 24, text: `finwidget explorer: ${g.model_name}`, size: 17, bold: true, fill: "#111" }],
  };
  const state = frame({ title: "State", body: { width: 420, height: 0, prims: [] }, caption: stateCaption(store) });
  return stack([head, ...views.map((v) => v.figure(false)), state]);
}

export function exportControls(currentViews: () => View[], info: Map<string, ViewInfo>, store: ExplorerStore, root: () => HTMLElement): HTMLElement[] {
  const views = currentViews();
  let chosen = views.find((v) => v.name === "matrix")?.name ?? views[0]?.name ?? WHOLE_EXPLORER;
  const options = [
    ...views.map((v) => ({ value: v.name, label: info.get(v.name)?.label ?? v.name })),
    { value: WHOLE_EXPLORER, label: "whole explorer" },
  ];
  const which = select(options, chosen, (v) => {
    chosen = v;
  }, { "data-testid": "export-view", "aria-label": "view to export" });
  const download = (url: string, file: string) => {
    const a = el("a", { href: url, download: file, class: "fw-download" });
    root().append(a);
    a.click();
    a.remove();
  };
  // Exports are drawn on a white page, so their colours start from white in any theme.
  const figure = (): Figure | null =>
    withRampBackground([255, 255, 255], () => {
      if (chosen === WHOLE_EXPLORER) return explorerFigure(currentViews(), store);
      return currentViews().find((v) => v.name === chosen)?.figure() ?? null;
    });
  const png = el("button", { class: "fw-button", type: "button", "data-testid": "export-png", text: "Export PNG" });
  png.addEventListener("click", () => {
    const f = figure();
    if (!f) return;
    const url = toPNG(f);
    if (!url) return;
    download(url, `finwidget-${chosen}.png`);
    root().setAttribute("data-last-export", chosen);
    // The kernel keeps a copy of a view's PNG (explorer.last_png) unless it is too big for
    // one websocket message; the protocol names single views only, so not the whole explorer.
    if (chosen !== WHOLE_EXPLORER && url.length < 8 * 2 ** 20) store.sendPng(chosen, url);
  });
  const svg = el("button", { class: "fw-button", type: "button", "data-testid": "export-svg", text: "Export SVG" });
  svg.addEventListener("click", () => {
    const f = figure();
    if (!f) return;
    const text = toSVG(f, stateCaption(store));
    const url = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(text)}`;
    download(url, `finwidget-${chosen}.svg`);
    root().setAttribute("data-last-export", chosen);
    root().setAttribute("data-last-export-format", "svg");
  });
  return [which, png, svg];
}
