// Colour scales shared by every view: sequential for non-negative quantities
// (attention, entropy), diverging around zero for signed ones (logit-diff effects).

export type RGB = [number, number, number];

// Control points of the sequential ramp (white -> light teal -> deep blue) and of the
// diverging one (blue for negative / "decrease", white at 0, red for positive / "increase").
const SEQUENTIAL: RGB[] = [
  [255, 255, 255],
  [199, 233, 180],
  [65, 182, 196],
  [34, 94, 168],
  [8, 29, 88],
];
const DIVERGING: RGB[] = [
  [33, 102, 172],
  [146, 197, 222],
  [247, 247, 247],
  [244, 165, 130],
  [178, 24, 43],
];

function clamp01(t: number): number {
  if (!Number.isFinite(t)) return 0;
  return t < 0 ? 0 : t > 1 ? 1 : t;
}

/** Piecewise-linear interpolation through evenly spaced control points, t in [0, 1]. */
export function interpolate(points: RGB[], t: number): RGB {
  const x = clamp01(t) * (points.length - 1);
  const i = Math.min(Math.floor(x), points.length - 2);
  const f = x - i;
  const a = points[i];
  const b = points[i + 1];
  return [
    Math.round(a[0] + (b[0] - a[0]) * f),
    Math.round(a[1] + (b[1] - a[1]) * f),
    Math.round(a[2] + (b[2] - a[2]) * f),
  ];
}

// The page's background, which the sequential ramp starts from: 0 ("none") is drawn as the
// background itself, so "more" is always the stronger contrast. On a light page the ramp
// runs white -> deep blue; on a dark one (JupyterLab's dark theme) background -> pale yellow.
const WHITE: RGB = [255, 255, 255];
let rampBackground: RGB = WHITE;

/** Relative luminance in [0, 1] (sRGB weights, no gamma: enough to tell light from dark). */
export function luminance(rgb: RGB): number {
  return (0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]) / 255;
}

export function isDarkBackground(rgb: RGB = rampBackground): boolean {
  return luminance(rgb) < 0.5;
}

/** Sets the background the sequential ramp starts from (the explorer reads it from the theme). */
export function setRampBackground(rgb: RGB): void {
  rampBackground = [rgb[0], rgb[1], rgb[2]];
}

export function getRampBackground(): RGB {
  return rampBackground;
}

/** Runs `fn` with the ramp on another background (exports are drawn on a white page). */
export function withRampBackground<T>(rgb: RGB, fn: () => T): T {
  const saved = rampBackground;
  rampBackground = rgb;
  try {
    return fn();
  } finally {
    rampBackground = saved;
  }
}

/** "#rgb", "#rrggbb", "rgb(r, g, b)" or "rgba(r, g, b, a)" (a > 0) -> RGB; anything else null. */
export function parseCssColor(text: string | null | undefined): RGB | null {
  const s = (text ?? "").trim().toLowerCase();
  let m = s.match(/^#([0-9a-f]{3}|[0-9a-f]{6})$/);
  if (m) {
    const h = m[1].length === 3 ? m[1].replace(/./g, (c) => c + c) : m[1];
    return [parseInt(h.slice(0, 2), 16), parseInt(h.slice(2, 4), 16), parseInt(h.slice(4, 6), 16)];
  }
  m = s.match(/^rgba?\(\s*([\d.]+)[\s,]+([\d.]+)[\s,]+([\d.]+)(?:[\s,/]+([\d.]+%?))?\s*\)$/);
  if (m) {
    if (m[4] !== undefined && parseFloat(m[4]) === 0) return null; // transparent
    return [Math.round(+m[1]), Math.round(+m[2]), Math.round(+m[3])];
  }
  if (s === "white") return WHITE;
  if (s === "black") return [0, 0, 0];
  return null;
}

/** The ramp's control points on the current background. */
function sequentialPoints(): RGB[] {
  if (!isDarkBackground()) return SEQUENTIAL;
  // Dark page: from the background through deep blue and teal to pale yellow.
  return [rampBackground, [34, 94, 168], [65, 182, 196], [199, 233, 180], [255, 255, 217]];
}

/** t in [0, 1] -> colour of the sequential ramp (0 = the background: white on a light page). */
export function sequential(t: number): RGB {
  return interpolate(sequentialPoints(), t);
}

/** The colour of cells that have no value (causally masked): a shade off the background. */
export function maskedColor(): RGB {
  if (!isDarkBackground()) return [238, 238, 238];
  return [Math.min(255, rampBackground[0] + 22), Math.min(255, rampBackground[1] + 22), Math.min(255, rampBackground[2] + 22)];
}

/** Position t in [0, 1] along a signed colour bar -> its colour (left blue, centre neutral, right red). */
export function divergingBar(t: number, gamma = 1): RGB {
  const p = 2 * t - 1;
  return diverging(Math.sign(p) * Math.abs(p) ** gamma);
}

/** The words for the sequential ramp's two ends on the current background. */
export function rampWords(): { less: string; more: string } {
  return isDarkBackground() ? { less: "faint", more: "bright" } : { less: "light", more: "dark" };
}

/** t in [-1, 1] -> colour of the diverging ramp (0 white, negative blue, positive red). */
export function diverging(t: number): RGB {
  const c = Number.isFinite(t) ? Math.max(-1, Math.min(1, t)) : 0;
  return interpolate(DIVERGING, (c + 1) / 2);
}

export function css(rgb: RGB): string {
  return `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})`;
}

/** Black or white text, whichever reads better on `rgb` (relative luminance). */
export function textColorOn(rgb: RGB): string {
  return luminance(rgb) > 0.55 ? "#111" : "#fff";
}

/**
 * Maps data values to colours for one view: sequential over [min, max] (min = 0 unless
 * `fromMin`) or diverging over [-m, m].
 */
export class ColorScale {
  readonly signed: boolean;
  readonly max: number;
  readonly min: number = 0;

  constructor(values: ArrayLike<number>, signed: boolean, fixedMax?: number, fromMin = false) {
    this.signed = signed;
    if (fromMin && !signed) {
      let lo = Infinity;
      for (let i = 0; i < values.length; i++) if (Number.isFinite(values[i]) && values[i] < lo) lo = values[i];
      this.min = Number.isFinite(lo) ? lo : 0;
    }
    let m = 0;
    if (fixedMax !== undefined) m = fixedMax;
    else {
      for (let i = 0; i < values.length; i++) {
        const v = values[i];
        if (!Number.isFinite(v)) continue;
        const a = signed ? Math.abs(v) : v;
        if (a > m) m = a;
      }
    }
    this.max = m > this.min ? m : this.min + 1;
  }

  /** Position of a value on the scale: [0, 1] (sequential) or [-1, 1] (signed). */
  position(value: number): number {
    if (!Number.isFinite(value)) return 0;
    if (this.signed) return Math.max(-1, Math.min(1, value / this.max));
    return clamp01((value - this.min) / (this.max - this.min));
  }

  rgb(value: number): RGB {
    const t = this.position(value);
    return this.signed ? diverging(t) : sequential(t);
  }

  css(value: number): string {
    return css(this.rgb(value));
  }

  /**
   * 256-entry RGBA lookup table for bytes 0..255 mapping to values offset + byte * scale.
   * `gamma` < 1 spreads small values over more colours (attention is mostly tiny numbers
   * next to a few large ones): position = (value / max) ** gamma.
   */
  byteTable(scale: number, offset: number, gamma = 1): Uint8ClampedArray {
    const values = new Float32Array(256);
    for (let b = 0; b < 256; b++) values[b] = offset + b * scale;
    return this.tableColors(values, gamma);
  }

  /** 256-entry RGBA lookup table for bytes whose values are `values[byte]` (see byteTable). */
  tableColors(values: Float32Array, gamma = 1): Uint8ClampedArray {
    const lut = new Uint8ClampedArray(256 * 4);
    for (let b = 0; b < 256; b++) {
      const value = values[b];
      const t = this.position(value);
      const shaped = gamma === 1 ? value : Math.sign(t) * Math.abs(t) ** gamma * this.max;
      const [r, g, bl] = this.rgb(shaped);
      lut[4 * b] = r;
      lut[4 * b + 1] = g;
      lut[4 * b + 2] = bl;
      lut[4 * b + 3] = 255;
    }
    return lut;
  }
}

/** Compact number for labels: 3 significant digits, no exponent for usual ranges. */
export function formatValue(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a < 0.001 || a >= 1e6)) return v.toExponential(2);
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  return v.toFixed(3);
}

/**
 * How the circuit view draws an edge of each composition channel: a colour that reads on
 * the page's background (Okabe-Ito hues, apart from the nodes' blue/red) and a dash
 * pattern, so the channel shows without colour too.
 */
export function channelStyle(channel: "q" | "k" | "v" | "direct" | "reads"): { color: string; dash: number[] } {
  const dark = isDarkBackground();
  switch (channel) {
    case "q":
      return { color: dark ? "#f0b030" : "#d08a00", dash: [] };
    case "k":
      return { color: dark ? "#3cc8a0" : "#009e73", dash: [6, 3] };
    case "v":
      return { color: dark ? "#e592c4" : "#b4588f", dash: [2, 3] };
    case "direct":
      return { color: dark ? "#d8d8d8" : "#444444", dash: [] };
    default:
      return { color: dark ? "#7fc4f0" : "#3f8fc9", dash: [9, 3, 2, 3] };
  }
}

/** Ink for labels and outlines on the page's background. */
export function inkColor(): string {
  return isDarkBackground() ? "#dddddd" : "#333333";
}
