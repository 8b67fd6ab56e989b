// The explorer: composes the views of one widget, keeps the DOM contract on its root
// (data-finwidget-ready / data-finwidget-busy), the status line and the PNG export.

import { bindUndoKeys, KERNEL_ONLY_CONTROLS, mountControls, OFFLINE_REASON } from "./controls";
import { getRampBackground, parseCssColor, setRampBackground, type RGB } from "./colors";
import { el } from "./dom";
import { exportControls } from "./export_controls";
import type { ViewInfo, ViewName } from "./protocol";
import type { ExplorerStore } from "./store";
import { CircuitView } from "./views/circuit";
import { HeadGridView } from "./views/grid";
import { AttentionMatrixView } from "./views/matrix";
import { LayerFlowView } from "./views/flow";
import { PredictionPanel } from "./views/prediction";
import { StatementView } from "./views/statement";
import type { View } from "./views/view";

/** The implementation of each view; which views exist, their order, column and lane
 * come from Python (the catalogue's `views`). */
const MAKE: Record<ViewName, (store: ExplorerStore) => View> = {
  statement: (store) => new StatementView(store),
  grid: (store) => new HeadGridView(store),
  matrix: (store) => new AttentionMatrixView(store),
  flow: (store) => new LayerFlowView(store),
  prediction: (store) => new PredictionPanel(store),
  circuit: (store) => new CircuitView(store),
};

/**
 * The notebook's background: JupyterLab's --jp-layout-color0 where it is set, else dark
 * when the body says the theme is not light (data-jp-theme-light="false"), else white.
 */
export function themeBackground(host: HTMLElement): RGB {
  const view = host.ownerDocument?.defaultView;
  const declared = view ? parseCssColor(view.getComputedStyle(host).getPropertyValue("--jp-layout-color0")) : null;
  if (declared) return declared;
  if (host.ownerDocument?.body?.getAttribute("data-jp-theme-light") === "false") return [17, 17, 17];
  return [255, 255, 255];
}

/**
 * When JupyterLab switches theme (it flips data-jp-theme-* on the body, then loads the
 * theme's CSS), the ramp moves to the new background and the views are redrawn with it.
 * Returns the cleanup.
 */
function followTheme(host: HTMLElement, redraw: () => void): () => void {
  const body = host.ownerDocument?.body;
  if (!body || typeof MutationObserver === "undefined") return () => {};
  const timers: ReturnType<typeof setTimeout>[] = [];
  const check = () => {
    const now = themeBackground(host);
    const was = getRampBackground();
    if (now[0] === was[0] && now[1] === was[1] && now[2] === was[2]) return;
    setRampBackground(now);
    redraw();
  };
  const observer = new MutationObserver(() => {
    // The theme's stylesheet arrives a moment after the attribute: look again for 3 s.
    for (const ms of [0, 100, 300, 1000, 3000]) timers.push(setTimeout(check, ms));
  });
  observer.observe(body, { attributes: true, attributeFilter: ["data-jp-theme-light", "data-jp-theme-name"] });
  return () => {
    observer.disconnect();
    for (const t of timers) clearTimeout(t);
  };
}

export function mountExplorer(store: ExplorerStore, host: HTMLElement): () => void {
  // Colours start from the page's background (JupyterLab's theme), read before any view draws.
  setRampBackground(themeBackground(host));
  const wanted = new Set<ViewName>(store.get("views"));
  const shown: ViewInfo[] = store.get("catalogue").views.filter((v) => wanted.has(v.name) && v.name in MAKE);
  // Views are rebuilt when the explorer moves to another statement (new spans, new tokens).
  let views: View[] = shown.map((v) => MAKE[v.name](store));
  const info = new Map(shown.map((v) => [v.name, v]));
  const controls = mountControls(store);

  const status = el("div", { class: "fw-status", "data-testid": "status", role: "status", "aria-live": "polite" });
  // Export controls (view or whole explorer, PNG or SVG): export_controls.ts.
  const exporting = exportControls(() => views, info, store, () => root);
  const g = store.get("geometry");
  const toolbar = el("div", { class: "fw-toolbar" }, [
    el("span", { class: "fw-model", text: `${g.model_name} · ${g.num_layers} layers × ${g.num_heads} heads (${g.num_kv_heads} KV) · ${g.seq_len} tokens` }),
    ...exporting,
  ]);
  const left = el("div", { class: "fw-col fw-col-left" });
  const right = el("div", { class: "fw-col fw-col-right" });
  const place = () => {
    for (const v of views) (info.get(v.name)?.column === "left" ? left : right).append(v.root);
  };
  place();
  const root = el("div", { class: "fw-explorer", "data-finwidget-ready": "0", "data-finwidget-busy": "0" }, [
    toolbar,
    // A single view (e.g. the heatmap a guide call returns) keeps to itself.
    wanted.size > 1 ? controls.root : null,
    el("div", { class: "fw-columns" }, [left, right]),
    status,
  ]);
  if (store.offline) root.setAttribute("data-offline", "1");
  root.setAttribute("data-statement-index", String(store.get("statement_index") ?? 0));
  host.append(root);
  const offKeys = bindUndoKeys(root, store);
  const rebuildViews = () => {
    for (const v of views) v.destroy();
    views = shown.map((v) => MAKE[v.name](store));
    place();
    root.setAttribute("data-statement-index", String(store.get("statement_index") ?? 0));
    root.setAttribute("data-finwidget-ready", "0");
    update();
  };
  const offStatement = store.on("statement", rebuildViews);
  const offTheme = followTheme(host, rebuildViews);

  const update = () => {
    const s = store.status;
    root.setAttribute("data-finwidget-busy", s.busy ? "1" : "0");
    const errors = [...store.errors.values()];
    const message = s.slow ? s.message : errors.length ? errors[errors.length - 1] : s.busy ? "working…" : "";
    status.textContent = message;
    status.setAttribute("data-kind", s.slow ? "slow" : errors.length ? "error" : s.busy ? "busy" : "idle");
    // Ready once every view has drawn its data, or shows why it cannot (an error reply).
    const settled = views.every((v) => v.ready() || store.errors.has(info.get(v.name)?.lane ?? ""));
    if (root.getAttribute("data-finwidget-ready") !== "1" && settled) {
      root.setAttribute("data-finwidget-ready", "1");
      if (typeof performance !== "undefined" && performance.mark) performance.mark("finwidget-ready");
    }
  };
  // Now, and again once the views' own listeners ran (views rebuilt for a new statement
  // subscribe after this one, so they draw after it).
  const afterViews = () => {
    update();
    queueMicrotask(update);
  };
  const offs = (["status", "matrix", "tokens", "grid", "flow", "prediction", "ablations", "circuit"] as const).map((t) =>
    store.on(t, afterViews),
  );
  if (store.offline) {
    // The views' kernel-only controls: disabled, saying why (the note above says it too).
    const disableKernelOnly = () => {
      for (const id of KERNEL_ONLY_CONTROLS) {
        for (const c of root.querySelectorAll<HTMLButtonElement | HTMLSelectElement>(`[data-testid="${id}"]`)) {
          c.disabled = true;
          c.title = OFFLINE_REASON;
          c.setAttribute("data-kernel-only", "1");
        }
      }
    };
    disableKernelOnly();
    offs.push(store.on("ablations", disableKernelOnly), store.on("statement", disableKernelOnly));
  }
  update();
  store.schedule();
  return () => {
    for (const off of offs) off();
    offKeys();
    offStatement();
    offTheme();
    controls.destroy();
    for (const v of views) v.destroy();
    root.remove();
  };
}
