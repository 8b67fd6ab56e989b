// What-if: double-click a number of the statement to edit it; the kernel re-runs the model
// on the edited statement (finwidget/widgets/what_if.py) and the explorer shows it beside
// the original: the prediction panel's what-if section (both predictions, the edits, undo,
// the "colour by difference" switch), the statement with the changed spans marked.

import { formatValue } from "./colors";
import { el, setFlag } from "./dom";
import type { PredictionValue, SpanRecord, WhatIfState } from "./protocol";
import { whatIfActive } from "./protocol";
import type { ExplorerStore } from "./store";

const NUMBER_TEXT = /^[+\-\u2212]?\$?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?$/;

/** The number a person typed, or null when the text is not a number: an optional sign
 * (+, -, −), an optional $, digits with or without thousands separators, decimals,
 * parentheses for a negative number. The same rule as Python's `parse_number_text`. */
export function parseNumberText(text: string): number | null {
  let s = text.trim();
  let negative = false;
  if (s.length > 2 && s.startsWith("(") && s.endsWith(")")) {
    s = s.slice(1, -1).trim();
    negative = true;
    if (/^[+\-\u2212]/.test(s)) return null;
  }
  if (!NUMBER_TEXT.test(s)) return null;
  const sign = /^[-\u2212]/.test(s) ? -1 : 1;
  const value = Number(s.replace(/^[+\-\u2212]/, "").replace(/^\$/, "").replace(/,/g, ""));
  if (!Number.isFinite(value)) return null;
  return (negative ? -sign : sign) * value;
}

/** What the editor says about text that is not a number. */
export function notANumberMessage(text: string): string {
  const shown = text.length > 40 ? `${text.slice(0, 39)}…` : text;
  return `“${shown}” is not a number: type digits, e.g. -100 or 1,250 (a minus sign or parentheses for a negative number)`;
}

/** Why a span cannot be edited ("" when it can). */
export function whyNotEditable(store: ExplorerStore, span: SpanRecord | undefined): string {
  const state: WhatIfState = store.get("what_if_state") ?? {};
  if (!span) return "";
  if (store.offline) return "This exported page has no kernel: a what-if re-runs the model in the live notebook.";
  if (state.available === false) return `A what-if is not possible here: ${state.disabled_reason ?? "no model"}.`;
  if (span.kind !== "number" || span.in_statement === false) {
    return `“${span.text}” is not a number of the statement: double-click a number (e.g. a line item's value) to try another value.`;
  }
  return "";
}

/** Send a what-if edit; resolves to "" on success or the kernel's error message. */
export async function requestWhatIf(store: ExplorerStore, span: number, value: string): Promise<string> {
  if (store.offline) return whyNotEditable(store, store.get("statement_layout").spans[span]);
  const outcome = await store.channel.request("what_if", "what_if", { span, value });
  if (outcome.status === "stale") return "";
  if (outcome.status === "error") return outcome.error;
  store.errors.delete("what_if");
  store.emit("status");
  return "";
}

/** Remove the newest what-if edit (the kernel re-shows the statement before it). */
export async function undoWhatIf(store: ExplorerStore): Promise<void> {
  if (store.offline) {
    store.errors.set("what_if", "This exported page has no kernel: undo needs the live notebook.");
    store.emit("status");
    return;
  }
  const outcome = await store.channel.request("what_if", "undo_what_if", {});
  if (outcome.status === "error") {
    store.errors.set("what_if", outcome.error);
    store.emit("status");
  } else if (outcome.status === "ok") {
    store.errors.delete("what_if");
    store.emit("status");
  }
}

/**
 * Double-click on a number span of `body` opens an inline editor (prefilled with the
 * number as written; Enter applies, Escape cancels, an error shows under it). A span
 * that cannot be edited gets a message saying why. Returns the cleanup.
 */
export function attachNumberEditor(body: HTMLElement, message: HTMLElement, store: ExplorerStore): () => void {
  let open: { input: HTMLInputElement; node: HTMLElement; box: HTMLElement; pop: HTMLElement } | null = null;
  const close = () => {
    if (!open) return;
    open.box.remove();
    open.pop.remove();
    open.node.style.display = "";
    open = null;
  };
  const say = (text: string) => {
    message.textContent = text;
    message.hidden = !text;
  };
  const onDblClick = (ev: MouseEvent) => {
    const node = (ev.target as HTMLElement | null)?.closest?.("[data-span-index]") as HTMLElement | null;
    if (!node || !body.contains(node)) return;
    ev.preventDefault();
    const index = Number(node.getAttribute("data-span-index"));
    const span = store.get("statement_layout").spans[index];
    const why = whyNotEditable(store, span);
    close();
    if (why) {
      say(why);
      return;
    }
    say("");
    const input = el("input", {
      class: "fw-what-if-input",
      type: "text",
      "data-testid": "what-if-input",
      "aria-label": `new value of ${span.line_item ?? "this number"}${span.year !== null && span.year !== undefined ? ` ${span.year}` : ""} (Enter applies, Escape cancels)`,
      size: Math.max(6, span.text.length + 3),
      value: span.text,
    });
    const error = el("span", { class: "fw-what-if-error", "data-testid": "what-if-error", role: "alert", hidden: true });
    const hint = el("span", { class: "fw-what-if-hint", text: "Enter: re-run the model · Esc: cancel" });
    // The hint and the error go on a row of their own under the line (the line keeps its layout).
    const pop = el("div", { class: "fw-what-if-pop", "data-testid": "what-if-editor-note" }, [hint, error]);
    const box = el("span", { class: "fw-what-if-editor", "data-testid": "what-if-editor" }, [input]);
    node.style.display = "none";
    node.after(box);
    (node.closest(".fw-line") ?? box).after(pop);
    open = { input, node, box, pop };
    const showError = (text: string) => {
      error.textContent = text;
      error.hidden = !text;
      setFlag(input, "aria-invalid", !!text);
    };
    const apply = async () => {
      const text = input.value;
      if (parseNumberText(text) === null) {
        showError(notANumberMessage(text));
        return;
      }
      showError("");
      input.disabled = true;
      hint.textContent = "re-running the model…";
      setFlag(box, "data-pending", true);
      const failure = await requestWhatIf(store, index, text);
      if (!box.isConnected) return; // the views were rebuilt for the edited statement
      input.disabled = false;
      setFlag(box, "data-pending", false);
      hint.textContent = "Enter: re-run the model · Esc: cancel";
      if (failure) {
        showError(failure);
        input.focus();
      } else close();
    };
    // The editor keeps its keys (the statement's arrows/Enter and the notebook's shortcuts).
    input.addEventListener("keydown", (kev) => {
      kev.stopPropagation();
      if (kev.key === "Enter") {
        kev.preventDefault();
        void apply();
      } else if (kev.key === "Escape") {
        kev.preventDefault();
        close();
        node.focus();
      }
    });
    for (const type of ["mousedown", "mouseup", "click", "dblclick"] as const) input.addEventListener(type, (mev) => mev.stopPropagation());
    input.addEventListener("input", () => showError(""));
    input.focus();
    input.select();
  };
  body.addEventListener("dblclick", onDblClick);
  return () => {
    body.removeEventListener("dblclick", onDblClick);
    close();
  };
}

/** The smallest end of the statement's difference scale (attention mass per span): a
 * head whose attention barely moved shows pale colours, not float noise at full strength. */
export const WHAT_IF_SPAN_FLOOR = 0.01;

/** The end of the statement's difference scale: the largest |difference|, at least the floor. */
export function whatIfScaleMax(values: ArrayLike<number>): number {
  let m = WHAT_IF_SPAN_FLOOR;
  for (let i = 0; i < values.length; i++) if (Number.isFinite(values[i]) && Math.abs(values[i]) > m) m = Math.abs(values[i]);
  return m;
}

/** Mark the spans a what-if changed (outlined; the title says what they were). */
export function markChangedSpans(spanEls: HTMLElement[], store: ExplorerStore): void {
  const state: WhatIfState = store.get("what_if_state") ?? {};
  const was = new Map((state.changes ?? []).map((c) => [c.span, c]));
  spanEls.forEach((node, i) => {
    if (!node) return;
    const change = was.get(i);
    setFlag(node, "data-what-if-changed", !!change);
    if (change) node.title = `edited by the what-if: ${change.what} was ${change.old || "(none)"}, now ${change.new}`;
    else node.removeAttribute("title");
  });
}

function predictionWords(p: PredictionValue): string {
  return `“${p.label}” · logit diff ${formatValue(p.logit_diff)} · p(increase) ${p.p_increase.toFixed(3)}`;
}

/** The what-if section's lines (also drawn in the prediction panel's export). */
export function whatIfLines(state: WhatIfState): string[] {
  if (!state.edits?.length || !state.original || !state.edited) return [];
  const lines = [
    `What-if: original ${predictionWords(state.original)}`,
    `What-if: edited ${predictionWords(state.edited)}${state.flipped ? " (flipped)" : ""}`,
    `change in logit diff: ${formatValue(state.logit_diff_change ?? state.edited.logit_diff - state.original.logit_diff)}`,
  ];
  for (const e of state.edits) lines.push(`edit: ${e.description}`);
  return lines;
}

/** The prediction panel's what-if section: original vs edited, the edits, undo, the
 * difference colouring switch; a hint on how to start one when there is none. */
export class WhatIfPanel {
  readonly root: HTMLElement;
  private original: HTMLElement;
  private edited: HTMLElement;
  private change: HTMLElement;
  private list: HTMLElement;
  private toggle: HTMLInputElement;
  private hint: HTMLElement;
  private body: HTMLElement;
  private flipped: HTMLElement;
  private cleanups: (() => void)[] = [];

  constructor(private readonly store: ExplorerStore) {
    this.original = el("td", { "data-testid": "what-if-original" });
    this.edited = el("td", { "data-testid": "what-if-edited" });
    this.change = el("div", { class: "fw-what-if-change", "data-testid": "what-if-change" });
    this.flipped = el("span", { class: "fw-flipped", "data-testid": "what-if-flipped", text: "flipped by the edit" });
    this.list = el("ul", { class: "fw-what-if-edits", "data-testid": "what-if-edits" });
    const undo = el("button", { class: "fw-button", type: "button", "data-testid": "what-if-undo", text: "Undo edit", title: "remove the newest edit (Python: explorer.undo_what_if())" });
    undo.addEventListener("click", () => void undoWhatIf(store));
    this.toggle = el("input", { type: "checkbox", "data-testid": "what-if-difference" }) as HTMLInputElement;
    this.toggle.addEventListener("change", () => store.set({ what_if_difference: this.toggle.checked }));
    const toggleLabel = el("label", { class: "fw-what-if-toggle", title: "colour the grid (per head) and the statement (per span) by edited minus original" }, [
      this.toggle,
      " colour by difference (edited − original)",
    ]);
    this.hint = el("div", { class: "fw-hint", "data-testid": "what-if-hint" });
    this.body = el("div", { class: "fw-what-if-body" }, [
      el("table", { class: "fw-what-if-table" }, [
        el("tr", {}, [el("th", { text: "original" }), this.original]),
        el("tr", {}, [el("th", { text: "edited" }), this.edited]),
      ]),
      this.change,
      el("div", { class: "fw-label", text: "Edits (newest last)" }),
      this.list,
      el("div", { class: "fw-row" }, [undo, toggleLabel]),
    ]);
    this.root = el("div", { class: "fw-what-if", "data-testid": "what-if-panel" }, [
      el("div", { class: "fw-view-header" }, [el("span", { class: "fw-subtitle", text: "What-if" }), this.flipped]),
      this.hint,
      this.body,
    ]);
    this.cleanups.push(store.on("what_if", () => this.paint()));
    this.paint();
  }

  paint(): void {
    const state: WhatIfState = this.store.get("what_if_state") ?? {};
    const active = whatIfActive({ what_if_state: state });
    setFlag(this.root, "data-active", active);
    this.body.hidden = !active;
    this.flipped.style.display = active && state.flipped ? "" : "none";
    if (!active) {
      this.hint.textContent = state.available === false
        ? `What-if: not possible here (${state.disabled_reason ?? "no model"}).`
        : "Double-click a number in the statement to try another value: the model re-runs and both predictions show here.";
      this.list.replaceChildren();
      this.toggle.checked = false;
      return;
    }
    this.hint.textContent = "The statement view shows the edited statement (changed numbers outlined).";
    this.original.textContent = predictionWords(state.original!);
    this.edited.textContent = predictionWords(state.edited!);
    this.original.setAttribute("data-label", state.original!.label);
    this.edited.setAttribute("data-label", state.edited!.label);
    this.original.setAttribute("data-value", String(state.original!.logit_diff));
    this.edited.setAttribute("data-value", String(state.edited!.logit_diff));
    const change = state.logit_diff_change ?? state.edited!.logit_diff - state.original!.logit_diff;
    this.change.textContent = `change in logit diff (edited − original): ${change > 0 ? "+" : ""}${formatValue(change)}` +
      (state.flipped ? ` · the answer flips: “${state.original!.label}” → “${state.edited!.label}”` : " · same answer");
    this.list.replaceChildren(...(state.edits ?? []).map((e) => el("li", { "data-testid": "what-if-edit", text: e.description })));
    const recomputed = (state.changes ?? []).filter((c) => !(state.edits ?? []).some((e) => e.what === c.what));
    for (const c of recomputed) this.list.append(el("li", { class: "fw-what-if-derived", text: `${c.what}: ${c.old || "(none)"} → ${c.new} (recomputed)` }));
    this.toggle.checked = !!this.store.get("what_if_difference");
  }

  destroy(): void {
    for (const c of this.cleanups) c();
    this.root.remove();
  }
}
