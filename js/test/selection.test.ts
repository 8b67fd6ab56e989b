import { describe, expect, it } from "vitest";
import {
  ablationLabel,
  hasSelection,
  isSpanSelected,
  layerInRange,
  layerRangeFromBrush,
  selectionAfterClick,
  selectionFromBrush,
  selectionFromTokenRange,
  selectionLabel,
  selectionTokenRange,
  setAblationMode,
  toggleAblation,
} from "../selection";
import { makeLayout } from "./fixtures";

const layout = makeLayout(["Net income 1,234 2,345", "Revenue 100 90"]);
// spans: 0 Net, 1 income, 2 "1,234" (5 tokens), 3 "2,345" (5), 4 Revenue, 5 "100", 6 "90"

describe("span selection", () => {
  it("a click selects one span, a second click on it clears, shift-click extends", () => {
    let sel = selectionAfterClick({}, 2, false);
    expect(sel).toEqual({ start: 2, end: 3 });
    expect(isSpanSelected(sel, 2)).toBe(true);
    expect(isSpanSelected(sel, 3)).toBe(false);
    sel = selectionAfterClick(sel, 5, true);
    expect(sel).toEqual({ start: 2, end: 6 });
    sel = selectionAfterClick(sel, 0, true);
    expect(sel).toEqual({ start: 0, end: 6 });
    sel = selectionAfterClick({ start: 4, end: 5 }, 4, false);
    expect(hasSelection(sel)).toBe(false);
    expect(selectionAfterClick({}, 1, true)).toEqual({ start: 1, end: 2 });
  });

  it("a brush covers both ends in either order", () => {
    expect(selectionFromBrush(5, 2)).toEqual({ start: 2, end: 6 });
    expect(selectionFromBrush(3, 3)).toEqual({ start: 3, end: 4 });
  });

  it("maps a span selection to its tokens and back (a number is all its digit tokens)", () => {
    const range = selectionTokenRange({ start: 2, end: 3 }, layout);
    expect(range).toEqual([2, 7]);
    expect(selectionTokenRange({}, layout)).toBeNull();
    // Tokens 4..9 touch the end of "1,234" and the start of "2,345": both spans.
    expect(selectionFromTokenRange(9, 4, layout)).toEqual({ start: 2, end: 4 });
    // Only the template token: nothing in the statement.
    const answer = layout.answer_position;
    expect(selectionFromTokenRange(answer, answer, layout)).toEqual({});
  });

  it("labels the selection with the statement's own text", () => {
    expect(selectionLabel({ start: 0, end: 3 }, layout)).toBe("Net income 1,234");
    expect(selectionLabel({ start: 0, end: 7 }, layout, 12)).toBe("Net income …");
  });
});

describe("layer range and ablation set", () => {
  it("layer ranges are inclusive and [] means every layer", () => {
    expect(layerRangeFromBrush(7, 3)).toEqual([3, 7]);
    expect(layerInRange([3, 7], 7)).toBe(true);
    expect(layerInRange([3, 7], 8)).toBe(false);
    expect(layerInRange([], 100)).toBe(true);
  });

  it("toggling ablates then restores a head, keeping the set sorted and other heads untouched", () => {
    let set = toggleAblation([], 3, 1, "zero");
    set = toggleAblation(set, 0, 5, "scale", 0.5);
    expect(set).toEqual([
      { layer: 0, head: 5, mode: "scale", value: 0.5 },
      { layer: 3, head: 1, mode: "zero" },
    ]);
    set = toggleAblation(set, 0, 5, "zero");
    expect(set).toEqual([{ layer: 3, head: 1, mode: "zero" }]);
    set = setAblationMode(set, 3, 1, "mean");
    expect(set).toEqual([{ layer: 3, head: 1, mode: "mean" }]);
    expect(ablationLabel({ layer: 2, head: 4, mode: "scale", value: 2 })).toBe("L2 H4 (scale ×2)");
  });
});
