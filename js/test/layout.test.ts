import { describe, expect, it } from "vitest";
import {
  aggregateMatrix,
  aggregateToSpans,
  kvGroupOf,
  MaxPyramid,
  paintMatrix,
  statementLines,
  tokenGroups,
  Viewport,
} from "../layout";
import { linearTable, type QuantizedMatrix } from "../protocol";
import { makeLayout } from "./fixtures";

const layout = makeLayout(["Net income  1,234 2,345", "", "Revenue 100 90"]);

describe("statement lines", () => {
  it("rebuild exactly the text as written (spaces kept, empty lines kept)", () => {
    const lines = statementLines(layout);
    expect(lines.length).toBe(3);
    const rebuilt = lines.map((pieces) => pieces.map((p) => ("gap" in p ? p.gap : p.span.text)).join("")).join("\n");
    expect(rebuilt).toBe(layout.text);
    expect(lines[1]).toEqual([]);
  });

  it("leave line-break and special-token spans out (they are the layout, not text)", () => {
    const withBreak = makeLayout(["a b", "c"]);
    const nl = withBreak.text.indexOf("\n");
    withBreak.spans.push({ ...withBreak.spans[0], index: 3, kind: "break", text: "\n", char_start: nl, char_end: nl + 1, line: 1 });
    const pieces = statementLines(withBreak).flat();
    expect(pieces.some((p) => "span" in p && p.span.kind === "break")).toBe(false);
    expect(pieces.map((p) => ("gap" in p ? p.gap : p.span.text)).join("")).toBe("a bc");
  });
});

describe("token -> span aggregation", () => {
  it("sums (keys) or averages (queries) each span's tokens", () => {
    const values = layout.tokens.map((_, t) => t + 1);
    const sums = aggregateToSpans(values, layout, "sum");
    const means = aggregateToSpans(values, layout, "mean");
    const s = layout.spans[2]; // "1,234": tokens 2..6
    let total = 0;
    for (let t = s.token_start; t < s.token_end; t++) total += values[t];
    expect(sums[2]).toBe(total);
    expect(means[2]).toBeCloseTo(total / 5);
    expect(sums[0]).toBe(1);
  });
});

function randomCausal(n: number, seed = 1): QuantizedMatrix {
  let x = seed;
  const rand = () => ((x = (x * 1103515245 + 12345) % 2147483648) / 2147483648);
  const bytes = new Uint8Array(n * n);
  for (let r = 0; r < n; r++) for (let c = 0; c <= r; c++) bytes[r * n + c] = Math.floor(rand() * 256);
  return { n, bytes, table: linearTable(1 / 255) };
}

describe("matrix aggregation to spans and line items", () => {
  it("cell (g, h) = mean over g's query tokens of the sum over h's key tokens", () => {
    const n = layout.tokens.length;
    const m = randomCausal(n);
    const groups = tokenGroups(layout, "spans");
    expect(groups.length).toBe(layout.spans.length + 1);
    expect(groups[groups.length - 1].tokens).toEqual([layout.answer_position]);
    const agg = aggregateMatrix(m, groups);
    const G = groups.length;
    for (const [g, h] of [[2, 2], [3, 2], [G - 1, 0], [4, 3]]) {
      let acc = 0;
      for (const q of groups[g].tokens) for (const k of groups[h].tokens) acc += m.table[m.bytes[q * n + k]];
      expect(agg[g * G + h]).toBeCloseTo(acc / groups[g].tokens.length, 5);
    }
    const lines = tokenGroups(layout, "line_items");
    expect(lines.map((g) => g.label)).toEqual(["Net income  1,234 2,345", "Revenue 100 90", "answer position"]);
  });
});

describe("grid", () => {
  it("query head h reads KV head h // (H / Hkv), as Qwen2's grouped-query attention does", () => {
    expect([0, 6, 7, 13, 14, 27].map((h) => kvGroupOf(h, 28, 4))).toEqual([0, 0, 1, 1, 2, 3]);
    expect(kvGroupOf(5, 12, 12)).toBe(5);
  });
});

describe("matrix viewport", () => {
  it("starts fully zoomed out and zooms keeping the cell under the pointer fixed", () => {
    const v = new Viewport(4096, 512);
    expect(v.cellsPerPixel).toBe(8);
    const before = v.cellAt(300, 200)!;
    v.zoomAt(300, 200, 4);
    expect(v.cellsPerPixel).toBe(2);
    const after = v.cellAt(300, 200)!;
    expect(Math.abs(after.col - before.col)).toBeLessThanOrEqual(1);
    expect(Math.abs(after.row - before.row)).toBeLessThanOrEqual(1);
    v.zoomAt(0, 0, 1e6);
    expect(v.cellsPerPixel).toBeCloseTo(1 / 24);
    v.reset();
    v.zoomAt(0, 0, 0.001);
    expect(v.cellsPerPixel).toBe(8);
  });

  it("pans within the matrix only", () => {
    const v = new Viewport(1000, 100);
    v.zoomAt(0, 0, 10);
    v.panBy(-50, -50);
    expect(v.x0).toBeCloseTo(50);
    v.panBy(-1e6, -1e6);
    expect(v.x0).toBeCloseTo(900);
    expect(v.y0).toBeCloseTo(900);
    v.panBy(1e6, 0);
    expect(v.x0).toBe(0);
    expect(v.cellAt(-1, 5)).toBeNull();
  });

  it("max-pools so that one strong cell stays visible when zoomed out at T = 4096", () => {
    const n = 4096;
    const m: QuantizedMatrix = { n, bytes: new Uint8Array(n * n), table: linearTable(1 / 255) };
    m.bytes[3001 * n + 17] = 255;
    const pyr = new MaxPyramid(m);
    expect(pyr.levels[0].size).toBe(4096);
    const v = new Viewport(n, 512);
    const k = pyr.levelFor(v.cellsPerPixel);
    expect(2 ** k).toBeLessThanOrEqual(8);
    const lut = new Uint8ClampedArray(256 * 4);
    for (let b = 0; b < 256; b++) lut.set([b, b, b, 255], 4 * b);
    const out = new Uint8ClampedArray(512 * 512 * 4);
    paintMatrix(out, 512, pyr, v, lut, [1, 2, 3]);
    const px = Math.floor(17 / 8);
    const py = Math.floor(3001 / 8);
    expect(out[4 * (py * 512 + px)]).toBe(255);
    // Above the diagonal is painted as masked.
    expect(Array.from(out.slice(4 * (10 * 512 + 400), 4 * (10 * 512 + 400) + 3))).toEqual([1, 2, 3]);
    // Every other cell below the diagonal is zero.
    let bright = 0;
    for (let i = 0; i < 512 * 512; i++) if (out[4 * i] === 255) bright++;
    expect(bright).toBe(1);
  });
});

describe("packed lower triangles", () => {
  function pack(m: QuantizedMatrix): QuantizedMatrix {
    const bytes = new Uint8Array((m.n * (m.n + 1)) / 2);
    let k = 0;
    for (let r = 0; r < m.n; r++) for (let c = 0; c <= r; c++) bytes[k++] = m.bytes[r * m.n + c];
    return { ...m, bytes, packed: true };
  }

  it("pool, paint and aggregate exactly like the dense square", () => {
    for (const n of [37, 128, 301]) {
      const dense = randomCausal(n, n);
      const packed = pack(dense);
      const a = new MaxPyramid(dense, 8);
      const b = new MaxPyramid(packed, 8);
      expect(b.levels.length).toBe(a.levels.length);
      for (let k = 1; k < a.levels.length; k++) expect(Array.from(b.levels[k].bytes)).toEqual(Array.from(a.levels[k].bytes));
      const lut = new Uint8ClampedArray(256 * 4);
      for (let i = 0; i < 256; i++) lut.set([i, 255 - i, i >> 1, 255], 4 * i);
      for (const zoom of [1, 3, 40]) {
        const v = new Viewport(n, 64);
        v.zoomAt(20, 50, zoom);
        const outA = new Uint8ClampedArray(64 * 64 * 4);
        const outB = new Uint8ClampedArray(64 * 64 * 4);
        paintMatrix(outA, 64, a, v, lut);
        paintMatrix(outB, 64, b, v, lut);
        expect(outB).toEqual(outA);
      }
      const groups = [{ label: "a", tokens: [0, 1, 2] }, { label: "b", tokens: [5, 9, n - 1] }, { label: "c", tokens: [n - 1] }];
      expect(Array.from(aggregateMatrix(packed, groups))).toEqual(Array.from(aggregateMatrix(dense, groups)));
    }
  });
});
