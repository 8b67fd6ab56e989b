import { describe, expect, it } from "vitest";
import { ColorScale, diverging, formatValue, luminance, parseCssColor, rampWords, sequential, textColorOn, withRampBackground, type RGB } from "../colors";
import { endsInWords } from "../legend";

const lum = (c: RGB) => 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];

describe("colour scales", () => {
  it("sequential runs from white at 0 to dark at 1, getting darker all the way", () => {
    expect(sequential(0)).toEqual([255, 255, 255]);
    let prev = Infinity;
    for (let t = 0; t <= 1.0001; t += 0.05) {
      const l = lum(sequential(t));
      expect(l).toBeLessThan(prev);
      prev = l;
    }
    expect(sequential(2)).toEqual(sequential(1));
    expect(sequential(NaN)).toEqual(sequential(0));
  });

  it("diverging is neutral at 0, red for positive, blue for negative, symmetric in lightness", () => {
    expect(diverging(0)).toEqual([247, 247, 247]);
    const pos = diverging(1);
    const neg = diverging(-1);
    expect(pos[0]).toBeGreaterThan(pos[2]);
    expect(neg[2]).toBeGreaterThan(neg[0]);
    expect(Math.abs(lum(diverging(0.5)) - lum(diverging(-0.5)))).toBeLessThan(40);
  });

  it("ColorScale scales to the data's max, or |max| for signed data", () => {
    const s = new ColorScale([0.1, 0.4, 0.2], false);
    expect(s.max).toBeCloseTo(0.4);
    expect(s.position(0.2)).toBeCloseTo(0.5);
    expect(s.position(1)).toBe(1);
    const d = new ColorScale([-3, 1, 2], true);
    expect(d.max).toBe(3);
    expect(d.position(-1.5)).toBeCloseTo(-0.5);
    expect(d.rgb(0)).toEqual([247, 247, 247]);
    // All zeros / empty: no division by zero.
    expect(new ColorScale([0, 0], false).position(0)).toBe(0);
    expect(new ColorScale([], true).max).toBe(1);
  });

  it("byteTable gives the colour of offset + byte * scale for every byte", () => {
    const s = new ColorScale([], false, 1);
    const lut = s.byteTable(1 / 255, 0);
    expect(Array.from(lut.slice(0, 4))).toEqual([...sequential(0), 255]);
    expect(Array.from(lut.slice(255 * 4, 256 * 4))).toEqual([...sequential(1), 255]);
    const mid = s.rgb(128 / 255);
    expect(Array.from(lut.slice(128 * 4, 128 * 4 + 3))).toEqual(mid);
    // gamma 0.5: a value at a quarter of the max gets the colour of half the max.
    const g = s.byteTable(1 / 255, 0, 0.5);
    expect(Array.from(g.slice(64 * 4, 64 * 4 + 3))).toEqual(s.rgb(Math.sqrt(64 / 255)));
    expect(Array.from(g.slice(255 * 4, 255 * 4 + 3))).toEqual(s.rgb(1));
  });

  it("picks readable text colours and formats numbers compactly", () => {
    expect(textColorOn([255, 255, 255])).toBe("#111");
    expect(textColorOn([8, 29, 88])).toBe("#fff");
    expect(formatValue(0.12345)).toBe("0.123");
    expect(formatValue(-12.34)).toBe("-12.3");
    expect(formatValue(1234.5)).toBe("1235");
    expect(formatValue(0.00001)).toBe("1.00e-5");
    expect(formatValue(null)).toBe("–");
  });
});

describe("ColorScale over [min, max]", () => {
  it("stretches unsigned data between its own min and max", () => {
    const s = new ColorScale([3.1, 3.5, 4.1], false, undefined, true);
    expect(s.min).toBeCloseTo(3.1);
    expect(s.position(3.1)).toBe(0);
    expect(s.position(4.1)).toBe(1);
    expect(s.position(3.6)).toBeCloseTo(0.5);
    const flat = new ColorScale([2, 2], false, undefined, true);
    expect(flat.position(2)).toBe(0);
    // Signed data keeps its zero in the middle.
    expect(new ColorScale([1, 3], true, undefined, true).position(0)).toBe(0);
  });
});

describe("the sequential ramp starts from the page's background", () => {
  const DARK: RGB = [17, 17, 17];
  const distance = (a: RGB, b: RGB) => Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]);

  it("on a light page: white at 0, darker as values grow, words light/dark", () => {
    withRampBackground([255, 255, 255], () => {
      expect(sequential(0)).toEqual([255, 255, 255]);
      expect(luminance(sequential(1))).toBeLessThan(luminance(sequential(0.5)));
      expect(rampWords()).toEqual({ less: "light", more: "dark" });
      expect(endsInWords(undefined, "attention")).toEqual({ low: "light = less", high: "dark = more attention" });
    });
  });

  it("on a dark page: the background at 0, and more = further from the background", () => {
    withRampBackground(DARK, () => {
      expect(sequential(0)).toEqual(DARK);
      let last = -1;
      for (let i = 0; i <= 10; i++) {
        const d = distance(sequential(i / 10), DARK);
        expect(d).toBeGreaterThan(last);
        last = d;
      }
      expect(luminance(sequential(1))).toBeGreaterThan(0.8);
      expect(rampWords()).toEqual({ less: "faint", more: "bright" });
      expect(endsInWords(undefined, "attention")).toEqual({ low: "faint = less", high: "bright = more attention" });
    });
    expect(sequential(0)).toEqual([255, 255, 255]); // restored after the call
  });

  it("reads the theme's colour in the usual CSS forms", () => {
    expect(parseCssColor("#111111")).toEqual([17, 17, 17]);
    expect(parseCssColor(" #fff")).toEqual([255, 255, 255]);
    expect(parseCssColor("rgb(33, 33, 33)")).toEqual([33, 33, 33]);
    expect(parseCssColor("rgba(0, 0, 0, 0)")).toBeNull();
    expect(parseCssColor("")).toBeNull();
    expect(parseCssColor("var(--x)")).toBeNull();
  });
});

describe("the signed matrix quantizer (difference of grouped attention)", () => {
  it("keeps the sign: negatives below the middle byte, positives above, ends at ±max", async () => {
    const { quantizeSigned } = await import("../views/matrix");
    const { bytes, table } = quantizeSigned([-0.4, 0, 0.2, 0.4]);
    expect(bytes[0]).toBe(0);
    expect(bytes[3]).toBe(255);
    expect(table[bytes[0]]).toBeCloseTo(-0.4, 6);
    expect(table[bytes[3]]).toBeCloseTo(0.4, 6);
    expect(Math.abs(table[bytes[1]])).toBeLessThanOrEqual(0.4 / 255 + 1e-7); // within half a step (2 × 0.4 / 255 / 2) of 0
    expect(table[bytes[2]]).toBeCloseTo(0.2, 2);
  });
});
