// Entry point of the finwidget frontend bundle (anywidget ESM module).
// `initialize` owns the model-level store (one per widget model, with the single
// msg:custom handler); `render` draws one view of it and returns its cleanup.
// `mountStatic` draws an exported page (no kernel) from embedded state.

import type { AnyModel, Initialize, Render } from "@anywidget/types";
import { mountExplorer } from "./explorer";
import type { ExplorerTraits } from "./protocol";
import { staticModel, type EmbeddedState } from "./static_model";
import { ExplorerStore } from "./store";

const stores = new WeakMap<AnyModel<ExplorerTraits>, ExplorerStore>();

function storeFor(model: AnyModel<ExplorerTraits>): ExplorerStore {
  let store = stores.get(model);
  if (!store) {
    store = new ExplorerStore(model);
    stores.set(model, store);
  }
  return store;
}

const initialize: Initialize<ExplorerTraits> = ({ model }) => {
  const store = storeFor(model);
  return () => {
    store.destroy();
    stores.delete(model);
  };
};

const render: Render<ExplorerTraits> = ({ model, el }) => {
  const store = storeFor(model);
  return mountExplorer(store, el);
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

export default { initialize, render };
