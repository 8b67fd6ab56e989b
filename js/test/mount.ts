// The explorer mounted in jsdom on a fake kernel: the set-up every explorer test shares.
// Call `unmountAfterEach()` once at the top of a test file; `mountOnFakeKernel()` in a test.
import { afterEach } from "vitest";
import { mountExplorer } from "../explorer";
import { ExplorerStore } from "../store";
import { FakeModel, makeTraits } from "./fake_kernel";

let cleanups: (() => void)[] = [];

/** Unmount every explorer the test mounted, and empty the document, after each test. */
export function unmountAfterEach(): void {
  afterEach(() => {
    for (const cleanup of cleanups) cleanup();
    cleanups = [];
    document.body.replaceChildren();
  });
}

/** An explorer on a fake kernel whose traits are `makeTraits(overrides)`, after its first
 * requests went out (they are not answered: the test decides). */
export async function mountOnFakeKernel(overrides = {}) {
  const model = new FakeModel(makeTraits(overrides));
  const store = new ExplorerStore(model.asModel());
  const host = document.createElement("div");
  document.body.append(host);
  const unmount = mountExplorer(store, host);
  cleanups.push(() => {
    unmount();
    store.destroy();
  });
  await new Promise((r) => setTimeout(r, 0));
  return { model, store, host, root: host.querySelector(".fw-explorer") as HTMLElement };
}
