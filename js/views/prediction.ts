// Prediction panel: p(increase) and the logit difference, clean vs with the current
// ablations, a "flipped" mark, the ablated heads with their modes, reset and sweep.

import { formatValue } from "../colors";
import { el, select, setFlag } from "../dom";
import type { Ablation, AblationMode, PredictionValue } from "../protocol";
import { ablationLabel, setAblationMode, toggleAblation } from "../selection";
import type { ExplorerStore } from "../store";
import { stateCaption } from "../caption";
import { frame, INK, type Figure, type Prim } from "../export";
import { exportsOf, type View } from "./view";
import { WhatIfPanel, whatIfLines } from "../what_if";

export class PredictionPanel implements View {
  readonly name = "prediction";
  readonly root: HTMLElement;
  private logitDiff: HTMLElement;
  private pIncrease: HTMLElement;
  private bar: HTMLElement;
  private cleanRow: HTMLElement;
  private flipped: HTMLElement;
  private list: HTMLElement;
  private progress: HTMLElement;
  private progressBar: HTMLProgressElement;
  private none: HTMLElement;
  private estimateNote: HTMLElement;
  private cancelSweep: HTMLButtonElement;
  private drawn = false;
  private whatIf: WhatIfPanel;
  private cleanups: (() => void)[] = [];
  readonly toPNG: () => string;
  readonly toSVG: () => string;

  constructor(private readonly store: ExplorerStore) {
    this.logitDiff = el("div", { class: "fw-logit-diff", "data-testid": "logit-diff" });
    this.pIncrease = el("div", { class: "fw-p-increase", "data-testid": "p-increase" });
    this.bar = el("div", { class: "fw-pbar-fill" });
    this.cleanRow = el("div", { class: "fw-clean", "data-testid": "clean-prediction" });
    this.flipped = el("span", { class: "fw-flipped", "data-testid": "flipped", text: "flipped" });
    this.list = el("ul", { class: "fw-ablated-list", "data-testid": "ablated-list" });
    this.progress = el("div", { class: "fw-progress", "data-testid": "sweep-progress" });
    this.progressBar = el("progress", { class: "fw-progress-bar", max: 1, value: 0 });
    this.none = el("div", { class: "fw-empty", text: "none (click a head with shift, or use Ablate mode)" });
    this.estimateNote = el("div", { class: "fw-estimate-note", "data-testid": "estimate-note", role: "status" });
    this.cancelSweep = el("button", { class: "fw-button", type: "button", "data-testid": "sweep-cancel-current", text: "Cancel sweep", title: "stop the running sweep at its next head" }) as HTMLButtonElement;
    this.cancelSweep.addEventListener("click", () => store.cancelSweep());
    const reset = el("button", { class: "fw-button", type: "button", "data-testid": "reset", text: "Reset ablations" });
    reset.addEventListener("click", () => void store.requestAblations([]));
    const sweep = el("button", { class: "fw-button", type: "button", "data-testid": "sweep", text: "Sweep", title: "ablate every head alone (only the layers in the grid's layer range, if one is set) and colour the grid by the change in logit difference" });
    sweep.addEventListener("click", () => void store.requestSweep());
    const mode = select<AblationMode>(this.modeOptions(), store.get("settings").ablate_mode, (v) => store.set({ settings: { ...store.get("settings"), ablate_mode: v } }), {
      "data-testid": "ablation-mode",
      "aria-label": "mode of new ablations",
      title: `how a newly ablated head is changed: ${store.get("catalogue").modes.map((m) => `${m.name}: ${m.summary}`).join("; ")}`,
    });
    this.root = el("div", { class: "fw-view fw-prediction", "data-testid": "prediction-panel" }, [
      el("div", { class: "fw-view-header" }, [el("span", { class: "fw-title", text: "Prediction" }), this.flipped]),
      el("div", { class: "fw-pbar", title: "p(increase) vs p(decrease)" }, [this.bar]),
      this.pIncrease,
      this.logitDiff,
      this.estimateNote,
      this.cleanRow,
      el("div", { class: "fw-row" }, [el("span", { class: "fw-label", text: "new ablations:" }), mode, reset, sweep, this.cancelSweep]),
      this.progressBar,
      this.progress,
      el("div", { class: "fw-label", text: "Ablated heads" }),
      this.none,
      this.list,
    ]);
    this.whatIf = new WhatIfPanel(store);
    this.root.append(this.whatIf.root);
    const exports = exportsOf(() => this.figure());
    this.toPNG = exports.toPNG;
    this.toSVG = exports.toSVG;
    const paint = () => this.paint();
    for (const t of ["prediction", "ablations", "progress", "settings"] as const) this.cleanups.push(store.on(t, paint));
    this.paint();
  }

  /** The menu of modes, as Python listed them (the title says what each does); a mode
   * Python cannot apply here is greyed, with its reason as the option's title. */
  private modeOptions(): { value: AblationMode; label: string; disabledReason: string }[] {
    return this.store.get("catalogue").modes.map((m) => ({ value: m.name, label: m.name, disabledReason: m.disabled_reason }));
  }

  private label(a: Ablation): string {
    return ablationLabel(a, this.store.mode(a.mode)?.value_symbol);
  }

  private paint(): void {
    const p = this.store.prediction;
    const ablations = this.store.ablations;
    const clean = p.clean;
    const current: PredictionValue | undefined = ablations.length && p.ablated ? p.ablated : clean;
    const pending = this.store.pendingAblations !== null;
    const estimate = this.store.predictionIsEstimate;
    const approx = estimate ? "≈ " : "";
    if (clean && current) {
      this.logitDiff.textContent = `logit diff (increase − decrease): ${approx}${formatValue(current.logit_diff)}`;
      this.logitDiff.setAttribute("data-value", String(current.logit_diff));
      this.logitDiff.setAttribute("data-clean-value", String(clean.logit_diff));
      this.pIncrease.textContent = `p(increase) ${estimate ? "≈" : "="} ${current.p_increase.toFixed(3)} → “${current.label}”`;
      this.pIncrease.setAttribute("data-value", String(current.p_increase));
      this.bar.style.width = `${(100 * current.p_increase).toFixed(1)}%`;
      this.cleanRow.textContent = ablations.length && p.ablated
        ? `clean: logit diff ${formatValue(clean.logit_diff)}, p(increase) ${clean.p_increase.toFixed(3)} (“${clean.label}”) · change ${formatValue(current.logit_diff - clean.logit_diff)}`
        : this.store.get("what_if_state")?.edits?.length
          ? "the edited statement (What-if below), no heads ablated"
          : "clean run (no heads ablated)";
      this.drawn = true;
    }
    setFlag(this.root, "data-pending", pending && !estimate);
    // A first-order estimate is marked in words and style until the exact reply replaces it.
    setFlag(this.root, "data-estimate", estimate);
    const how = p.estimate;
    this.estimateNote.textContent = estimate && how
      ? `estimate (${how.method}${how.base.length ? `, from the exact answer with ${how.base.length} head${how.base.length > 1 ? "s" : ""} ablated` : ""}): computing the exact value…`
      : "";
    this.estimateNote.style.display = estimate ? "" : "none";
    this.cancelSweep.style.display = this.store.sweeping && !this.store.offline ? "" : "none";
    const flipped = !!(ablations.length && p.flipped && (!pending || estimate));
    this.flipped.style.display = flipped ? "" : "none";
    setFlag(this.root, "data-flipped", flipped);

    // The list holds one item per ablated head and nothing else (tests read it).
    this.list.replaceChildren();
    this.none.style.display = ablations.length ? "none" : "";
    for (const a of ablations) {
      const modeSel = select<AblationMode>(this.modeOptions(), a.mode, (m) => {
        void this.store.requestAblations(setAblationMode(this.store.ablations, a.layer, a.head, m, this.store.modeValue(m)));
      });
      modeSel.setAttribute("aria-label", `ablation mode of L${a.layer} H${a.head}`);
      const remove = el("button", { class: "fw-button fw-small", type: "button", text: "restore", "data-testid": "restore-head" });
      remove.addEventListener("click", () => void this.store.requestAblations(toggleAblation(this.store.ablations, a.layer, a.head, a.mode)));
      this.list.append(
        el("li", { "data-layer": a.layer, "data-head": a.head, "data-mode": a.mode }, [el("span", { text: this.label(a) }), modeSel, remove]),
      );
    }
    const prog = this.store.progress;
    this.progress.textContent = prog ? `sweep: ${prog.done} / ${prog.total} ${prog.message}` : "";
    this.progressBar.style.display = prog ? "" : "none";
    if (prog) {
      this.progressBar.max = Math.max(1, prog.total);
      this.progressBar.value = prog.done;
    }
  }

  ready(): boolean {
    // Without a clean prediction (attention recorded without the model) there is nothing to wait for.
    return this.drawn || !this.store.prediction.clean;
  }

  /** The prediction (clean and ablated), the p(increase) bar and the ablated heads. */
  figure(withState = true): Figure {
    const prims: Prim[] = [];
    const lines = [this.pIncrease.textContent, this.logitDiff.textContent, this.cleanRow.textContent].filter((x): x is string => !!x);
    const p = this.store.prediction;
    const current = this.store.ablations.length && p.ablated ? p.ablated : p.clean;
    let y = 0;
    if (current) {
      prims.push({ t: "rect", x: 0, y, w: 400, h: 12, fill: "#2166ac" });
      prims.push({ t: "rect", x: 0, y, w: 400 * current.p_increase, h: 12, fill: "#b2182b" });
      prims.push({ t: "text", x: 0, y: y + 26, text: "p(increase) in red, p(decrease) in blue", size: 9, fill: "#555" });
      y += 34;
    }
    for (const line of lines) {
      y += 18;
      prims.push({ t: "text", x: 0, y, text: line, size: 12, fill: INK });
    }
    for (const line of whatIfLines(this.store.get("what_if_state") ?? {})) {
      y += 18;
      prims.push({ t: "text", x: 0, y, text: line, size: 12, fill: INK });
    }
    if (this.store.ablations.length) {
      y += 20;
      prims.push({ t: "text", x: 0, y, text: "Ablated heads:", size: 12, bold: true, fill: INK });
      for (const a of this.store.ablations) {
        y += 16;
        prims.push({ t: "text", x: 12, y, text: this.label(a), size: 12, fill: INK });
      }
    }
    const flipped = !!(this.store.ablations.length && p.flipped);
    return frame({ title: `Prediction${flipped ? " (flipped by the ablations)" : ""}`, body: { width: 440, height: y + 6, prims }, caption: withState ? stateCaption(this.store) : "" });
  }

  destroy(): void {
    for (const c of this.cleanups) c();
    this.whatIf.destroy();
    this.root.remove();
  }
}
