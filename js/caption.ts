// The state an export carries in its caption, and the words every view uses for the
// direction switch (one meaning per word).

import type { Direction } from "./protocol";
import { ablationLabel, hasSelection, selectionLabel } from "./selection";
import type { ExplorerStore } from "./store";

/** What "from" and "to" mean, said the same way in every view. */
export const DIRECTION_WORDS: Record<Direction, { menu: string; short: string; matrix: string }> = {
  from: {
    menu: "attention from the selection",
    short: "where the selection looks",
    matrix: "highlighted rows: the selection as query (where it looks)",
  },
  to: {
    menu: "attention to the selection",
    short: "who looks at the selection",
    matrix: "highlighted columns: the selection as key (who looks at it)",
  },
};

/** A trait the explorer may or may not have (fields another part of the code adds later). */
export function optionalTrait<T>(store: ExplorerStore, name: string): T | undefined {
  try {
    const v = (store.model as unknown as { get(k: string): unknown }).get(name);
    return v === undefined || v === null ? undefined : (v as T);
  } catch {
    return undefined;
  }
}

/** The statement in a few words: its first non-empty line, or the name Python gave it. */
export function statementName(store: ExplorerStore, maxChars = 60): string {
  const named = optionalTrait<string>(store, "statement_name");
  if (named) return named;
  const text = store.get("statement_layout").text;
  const first = text.split("\n").map((l) => l.trim()).find((l) => l.length > 0) ?? "";
  const short = first.length > maxChars ? `${first.slice(0, maxChars - 1)}…` : first;
  const index = optionalTrait<number>(store, "statement_index");
  const count = optionalTrait<unknown[]>(store, "statements")?.length;
  return index !== undefined && count && count > 1 ? `#${index + 1} of ${count}: “${short}”` : `“${short}”`;
}

/** One line of state for an export's caption. */
export function stateCaption(store: ExplorerStore): string {
  const g = store.get("geometry");
  const focus = store.get("focus");
  const sel = store.get("selection");
  const layout = store.get("statement_layout");
  const dir = store.get("direction");
  const ablations = store.ablations;
  const parts = [
    `model ${g.model_name} (${g.num_layers} layers × ${g.num_heads} heads)`,
    `statement ${statementName(store)} (${g.seq_len} tokens)`,
    `head L${focus.layer} H${focus.head}`,
    `selection ${hasSelection(sel) ? `“${selectionLabel(sel, layout)}”` : "none (the answer position)"}`,
    DIRECTION_WORDS[dir]?.menu ?? dir,
    `ablations: ${ablations.length ? ablations.map((a) => ablationLabel(a, store.mode(a.mode)?.value_symbol)).join(", ") : "none (clean run)"}`,
  ];
  const run = optionalTrait<string>(store, "attention_run");
  if (run) parts.push(`attention shown: ${run} run`);
  return parts.join(" · ");
}

/** Caption pieces joined with " · ", empty ones left out. */
export function joinCaption(...parts: string[]): string {
  return parts.filter((p) => p && p.trim()).join(" · ");
}
