// The explorer's analysis controls (state, not presentation): which run the attention
// views show (clean / ablated / difference) and its label, the scale factor, what "mean"
// averages over, undo/redo of ablations, and, with several statements, the picker,
// previous/next and the sweep over every statement with progress and cancel.
// Styling reuses the existing classes (fw-row, fw-button, fw-select, fw-label).

import { el, listen, select, setFlag } from "./dom";
import { ATTENTION_RUNS, type AttentionRun } from "./protocol";
import type { ExplorerStore } from "./store";

/** Why a control is off in an exported page. */
export const OFFLINE_REASON =
  "Exported page (no kernel): ablating heads, sweeps, other statements and the ablated run need the live notebook, so their controls are disabled. Focusing heads, selecting spans and the grid's measures work.";

/** Controls drawn by the views that need the kernel (disabled, with the reason, offline). */
export const KERNEL_ONLY_CONTROLS = ["sweep", "reset", "ablation-mode", "restore-head", "what-if-undo"];

const RUN_LABELS: Record<AttentionRun, string> = {
  clean: "clean",
  ablated: "ablated",
  difference: "difference (ablated − clean)",
};

export interface Controls {
  root: HTMLElement;
  destroy(): void;
}

export function mountControls(store: ExplorerStore): Controls {
  const cleanups: (() => void)[] = [];
  const button = (testid: string, text: string, title: string) =>
    el("button", { class: "fw-button", type: "button", "data-testid": testid, text, title });

  // ---------------------------------------------------------------- run switch
  const runSelect = select<AttentionRun>(
    ATTENTION_RUNS.map((r) => ({ value: r, label: RUN_LABELS[r] })),
    store.attentionRun,
    (v) => store.set({ attention_run: v }),
    { "data-testid": "attention-run", "aria-label": "attention from which run", title: "which run the statement, matrix and flow views show: the clean run, the run with the current ablations, or their difference" },
  );
  const runLabel = el("span", { class: "fw-label fw-run-label", "data-testid": "run-label", role: "status" });
  const runRow = el("div", { class: "fw-row fw-run-row" }, [el("span", { class: "fw-label", text: "attention shown:" }), runSelect, runLabel]);

  // ---------------------------------------------------------------- modes: factor and reference
  const valueInput = el("input", {
    class: "fw-select fw-mode-value",
    type: "number",
    step: "0.1",
    "data-testid": "mode-value",
    "aria-label": "factor of the scale mode",
    title: "the factor a head's output is multiplied by when the mode is scale",
  }) as HTMLInputElement;
  valueInput.value = String(store.get("settings").scale_value);
  cleanups.push(
    listen(valueInput, "change", () => {
      const v = Number(valueInput.value);
      if (!Number.isFinite(v)) {
        valueInput.value = String(store.get("settings").scale_value);
        return;
      }
      store.set({ settings: { ...store.get("settings"), scale_value: v } });
    }),
  );
  const valueLabel = el("label", { class: "fw-label", "data-testid": "mode-value-label" }, ["factor ×", valueInput]);
  const reference = store.get("catalogue").reference;
  const referenceText = reference?.available
    ? `mean = each head's output averaged over ${reference.name}`
    : `mean is disabled: ${reference?.disabled_reason ?? "no reference set"}`;
  const referenceLine = el("span", { class: "fw-label fw-reference", "data-testid": "reference-name", text: referenceText });
  if (reference && !reference.available) referenceLine.setAttribute("data-disabled", "1");

  const undo = button("undo", "Undo", "undo the last change of the ablated heads (Ctrl+Z)");
  const redo = button("redo", "Redo", "redo (Ctrl+Shift+Z)");
  cleanups.push(listen(undo, "click", () => store.undo()), listen(redo, "click", () => store.redo()));
  const modeRow = el("div", { class: "fw-row fw-mode-row" }, [undo, redo, valueLabel, referenceLine]);

  // ---------------------------------------------------------------- statements
  const entries = store.get("statements") ?? [];
  const statementRow = el("div", { class: "fw-row fw-statement-row", "data-testid": "statement-bar" });
  const picker = select(
    entries.map((e) => ({ value: String(e.index), label: `${e.index + 1}. ${e.label}` })),
    String(store.get("statement_index") ?? 0),
    (v) => store.showStatement(Number(v)),
    { "data-testid": "statement-picker", "aria-label": "statement" },
  );
  const prev = button("statement-prev", "◀ previous", "the previous statement (the ablations stay)");
  const next = button("statement-next", "next ▶", "the next statement (the ablations stay)");
  const position = el("span", { class: "fw-label", "data-testid": "statement-position" });
  const sweepAll = button(
    "sweep-all",
    `Sweep all ${entries.length} statements`,
    "ablate every head alone on every statement (with the current mode) and colour the grid by the mean |change| of the logit difference; the grid's menu also has the flip rate",
  );
  const cancel = button("sweep-cancel", "Cancel sweep", "stop the running sweep at its next head");
  const progress = el("span", { class: "fw-label", "data-testid": "sweep-all-progress" });
  cleanups.push(
    listen(prev, "click", () => store.showStatement((store.get("statement_index") ?? 0) - 1)),
    listen(next, "click", () => store.showStatement((store.get("statement_index") ?? 0) + 1)),
    listen(sweepAll, "click", () => void store.requestSweep("all")),
    listen(cancel, "click", () => store.cancelSweep()),
  );
  if (entries.length > 1) statementRow.append(el("span", { class: "fw-label", text: "statement:" }), prev, picker, next, position, sweepAll, cancel, progress);
  else statementRow.style.display = "none";

  const root = el("div", { class: "fw-controls", "data-testid": "controls" }, [statementRow, runRow, modeRow]);
  // Attention recorded without a model: nothing can be ablated, so there is no other run.
  const canIntervene = store.get("catalogue").modes.some((m) => !m.disabled_reason);
  if (!canIntervene) {
    runRow.style.display = "none";
    modeRow.style.display = "none";
    root.setAttribute("data-no-model", "1");
  }
  if (store.offline) {
    // An exported page: everything that asks the kernel to compute something new is off.
    root.prepend(el("div", { class: "fw-label fw-offline-note", "data-testid": "offline-note", role: "note", text: OFFLINE_REASON }));
    for (const c of [runSelect, valueInput, undo, redo, picker, prev, next, sweepAll, cancel]) {
      c.disabled = true;
      c.title = OFFLINE_REASON;
    }
  }

  const paint = () => {
    const run = store.attentionRun;
    runSelect.value = run;
    const label = store.runLabel;
    runLabel.textContent = label ? `showing: ${label}` : "showing: loading…";
    runLabel.setAttribute("data-run", run);
    const mode = store.get("settings").ablate_mode;
    const takesValue = !!store.mode(mode)?.takes_value;
    valueInput.disabled = !takesValue;
    const fallback = store.mode(mode)?.default_value;
    valueInput.placeholder = takesValue && fallback !== null && fallback !== undefined ? `default ${fallback}` : "";
    valueLabel.style.opacity = takesValue ? "1" : "0.5";
    valueLabel.title = takesValue ? "" : `the ${mode} mode takes no value`;
    if (document.activeElement !== valueInput) valueInput.value = String(store.get("settings").scale_value);
    undo.disabled = store.offline || !store.history.canUndo;
    redo.disabled = store.offline || !store.history.canRedo;
    const index = store.get("statement_index") ?? 0;
    picker.value = String(index);
    prev.disabled = store.offline || store.sweeping || index <= 0;
    next.disabled = store.offline || store.sweeping || index >= entries.length - 1;
    picker.disabled = store.offline || store.sweeping;
    if (store.offline) valueInput.disabled = true;
    position.textContent = `${index + 1} of ${entries.length}`;
    const p = store.progress;
    cancel.style.display = store.sweeping ? "" : "none";
    sweepAll.disabled = store.sweeping || store.offline;
    progress.textContent = store.sweeping && p ? `${p.done} / ${p.total} ${p.message}` : "";
    setFlag(root, "data-sweeping", store.sweeping);
  };
  for (const t of ["run", "settings", "history", "statement", "progress", "ablations", "status"] as const) cleanups.push(store.on(t, paint));
  paint();
  return {
    root,
    destroy() {
      for (const c of cleanups) c();
      root.remove();
    },
  };
}

/** Ctrl+Z / Ctrl+Shift+Z (and Ctrl+Y; Cmd on macOS) inside `root` undo and redo ablations.
 * Keys typed into a text field are left to the field. */
export function bindUndoKeys(root: HTMLElement, store: ExplorerStore): () => void {
  // On the window, in the capture phase: Notebook 7 takes Ctrl+Z for its own undo before
  // the event would bubble up to the widget. Only keys typed with the focus inside the widget count.
  return listen(window, "keydown", (ev: KeyboardEvent) => {
    if (!(ev.ctrlKey || ev.metaKey) || ev.altKey) return;
    const target = ev.target as HTMLElement | null;
    if (!target || !(target instanceof Node) || !root.contains(target)) return;
    if (target.tagName === "INPUT" || target.tagName === "TEXTAREA") return;
    const key = ev.key.toLowerCase();
    const isRedo = (key === "z" && ev.shiftKey) || key === "y";
    const isUndo = key === "z" && !ev.shiftKey;
    if (!isUndo && !isRedo) return;
    ev.preventDefault();
    ev.stopPropagation(); // JupyterLab would otherwise undo a cell operation
    if (isUndo) store.undo();
    else store.redo();
  }, { capture: true });
}
