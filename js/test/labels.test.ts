import { describe, expect, it } from "vitest";
import { shortLabel, thinLabels, Viewport, visibleCells, type AxisCandidate } from "../layout";

const row = (n: number, step: number, extent: number, priority = 0): AxisCandidate[] =>
  Array.from({ length: n }, (_, i) => ({ center: i * step, extent, priority }));

/** No two kept labels closer than their half-extents plus the gap. */
function overlapFree(c: AxisCandidate[], kept: number[], gap: number): boolean {
  for (let a = 0; a < kept.length; a++)
    for (let b = a + 1; b < kept.length; b++) {
      const p = c[kept[a]];
      const q = c[kept[b]];
      if (Math.abs(p.center - q.center) < (p.extent + q.extent) / 2 + gap) return false;
    }
  return true;
}

describe("label thinning", () => {
  it("keeps every label when they fit", () => {
    const c = row(16, 20, 11);
    expect(thinLabels(c, 2)).toEqual(c.map((_, i) => i));
  });

  it("thins dense labels evenly and never lets two overlap", () => {
    // 400 tokens over 480 px: 1.2 px per label, 11 px tall labels.
    const c = row(400, 1.2, 11);
    const kept = thinLabels(c, 2);
    expect(overlapFree(c, kept, 2)).toBe(true);
    // As many as fit: 480 / 13 ~ 36, the greedy pass from the start keeps every 11th.
    expect(kept.length).toBeGreaterThanOrEqual(30);
    expect(kept.length).toBeLessThanOrEqual(40);
    expect(kept[0]).toBe(0);
    const steps = new Set(kept.slice(1).map((k, i) => k - kept[i]));
    expect(steps.size).toBe(1);
  });

  it("prefers higher-priority labels (line-item names over digits)", () => {
    const c = row(10, 4, 11);
    c[5].priority = 1;
    const kept = thinLabels(c, 0);
    expect(kept).toContain(5);
    expect(kept).not.toContain(4);
    expect(kept).not.toContain(6);
    expect(overlapFree(c, kept, 0)).toBe(true);
  });

  it("returns the kept indices in increasing order", () => {
    const c = row(50, 3, 10).map((x, i) => ({ ...x, priority: i % 7 }));
    const kept = thinLabels(c, 1);
    expect(kept).toEqual([...kept].sort((a, b) => a - b));
    expect(overlapFree(c, kept, 1)).toBe(true);
  });

  it("handles no candidates", () => {
    expect(thinLabels([], 2)).toEqual([]);
  });
});

describe("visible cells of a viewport", () => {
  it("covers the whole axis when zoomed out, centres scaled to the shown size", () => {
    const v = new Viewport(100, 400);
    const cells = visibleCells(v, v.x0, 200);
    expect(cells.first).toBe(0);
    expect(cells.last).toBe(99);
    expect(cells.center(0)).toBeCloseTo(1, 10); // 2 px per cell shown, centre of the first
    expect(cells.center(99)).toBeCloseTo(199, 10);
  });

  it("follows zoom and pan", () => {
    const v = new Viewport(100, 400);
    v.zoomAt(0, 0, 4); // 16 px per cell: 25 cells shown
    v.panBy(-160, 0); // 10 cells right
    const cells = visibleCells(v, v.x0, 400);
    expect(cells.first).toBe(10);
    expect(cells.last).toBe(34);
    expect(cells.center(10)).toBeCloseTo(8, 10);
  });
});

describe("short labels", () => {
  it("trims and cuts with an ellipsis", () => {
    expect(shortLabel("  Net   income ")).toBe("Net income");
    expect(shortLabel("Cash and cash equivalents", 10)).toBe("Cash and …");
  });
});
