// Entry point of the finwidget frontend bundle (anywidget ESM module).
//
// `render` builds one view of the widget with its own store (synced traits, fetched data,
// request channel) and returns its cleanup. The store is per view, not per model:
// anywidget hands `initialize` and each `render` different proxies of the same model
// (checked in JupyterLab 4 with anywidget 0.9+), so a model-level store cannot be found
// again from `render`. Request ids are unique per channel, so two views of one model
// never take each other's replies (every view sees every custom message).
// `mountStatic` draws an exported page (no kernel) from embedded state.

import type { Render } from "@anywidget/types";
import { mountExplorer } from "./explorer";
import type { ExplorerTraits } from "./protocol";
import { staticModel, type EmbeddedState } from "./static_model";
import { ExplorerStore } from "./store";

const render: Render<ExplorerTraits> = ({ model, el }) => {
  const store = new ExplorerStore(model);
  const unmount = mountExplorer(store, el);
  return () => {
    unmount();
    store.destroy();
  };
};

/** Draw an exported explorer into `el` from its embedded state; returns the cleanup. */
export function mountStatic(el: HTMLElement, state: EmbeddedState): () => void {
  const store = new ExplorerStore(staticModel(state), { offline: true });
  const unmount = mountExplorer(store, el);
  return () => {
    unmount();
    store.destroy();
  };
}

export default { render };
