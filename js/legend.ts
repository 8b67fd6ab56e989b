// Colour bars: every coloured view shows one, with the measure's name, its unit, the
// values at both ends and, in words, what light and dark mean (dark = more of what the
// name says; signed measures: blue negative, red positive).

import { css, formatValue, rampWords, type RGB } from "./colors";
import { el } from "./dom";
import type { MeasureInfo } from "./protocol";

export interface LegendSpec {
  title: string; // what is coloured ("attention to selection")
  unit: string; // the measure's unit ("attention mass")
  min: number; // value at the left end
  max: number; // value at the right end
  /** Colour at position t in [0, 1] along the bar (0 = min, 1 = max). */
  colorAt: (t: number) => RGB;
  low: string; // what the left end means in words
  high: string; // what the right end means in words
}

/** In words, what the two ends of a measure's colours mean. The analysis layer's
 * description may say it ("dark = diffuse"); otherwise dark = more of the measure. */
export function endsInWords(info: Pick<MeasureInfo, "label" | "description" | "direction"> | undefined, fallbackLabel = "value"): {
  low: string;
  high: string;
} {
  if (info?.direction === "signed") return { low: "blue = negative", high: "red = positive" };
  const label = info?.label ?? fallbackLabel;
  const said = info?.description.match(/dark\s*=\s*([^;.,)]+)/i);
  const words = rampWords();
  const high = said ? `${words.more} = more ${label} (${said[1].trim()})` : `${words.more} = more ${label}`;
  return { low: `${words.less} = less`, high };
}

/** Stops of a CSS linear gradient that follows `colorAt`. */
export function gradientCss(colorAt: (t: number) => RGB, stops = 16): string {
  const parts: string[] = [];
  for (let i = 0; i <= stops; i++) {
    const t = i / stops;
    parts.push(`${css(colorAt(t))} ${(100 * t).toFixed(1)}%`);
  }
  return `linear-gradient(to right, ${parts.join(", ")})`;
}

/** A colour bar element a view keeps and updates. */
export class ColorBar {
  readonly root: HTMLElement;
  private title: HTMLElement;
  private bar: HTMLElement;
  private lo: HTMLElement;
  private hi: HTMLElement;
  private words: HTMLElement;
  spec: LegendSpec | null = null;

  constructor(testid: string) {
    this.title = el("span", { class: "fw-legend-title" });
    this.bar = el("span", { class: "fw-legend-bar", role: "img" });
    this.lo = el("span", { class: "fw-legend-end" });
    this.hi = el("span", { class: "fw-legend-end" });
    this.words = el("span", { class: "fw-legend-words" });
    this.root = el("div", { class: "fw-colorbar", "data-testid": testid }, [
      this.title,
      el("span", { class: "fw-legend-scale" }, [this.lo, this.bar, this.hi]),
      this.words,
    ]);
    this.update(null);
  }

  update(spec: LegendSpec | null, pending = "loading…"): void {
    this.spec = spec;
    if (!spec) {
      this.title.textContent = pending;
      this.root.setAttribute("data-empty", "1");
      return;
    }
    this.root.removeAttribute("data-empty");
    this.title.textContent = spec.unit ? `${spec.title} (${spec.unit})` : spec.title;
    this.bar.style.backgroundImage = gradientCss(spec.colorAt);
    this.bar.setAttribute("aria-label", `colour scale from ${formatValue(spec.min)} (${spec.low}) to ${formatValue(spec.max)} (${spec.high})`);
    this.lo.textContent = formatValue(spec.min);
    this.hi.textContent = formatValue(spec.max);
    this.words.textContent = `${spec.low} · ${spec.high}`;
    this.root.setAttribute("data-min", String(spec.min));
    this.root.setAttribute("data-max", String(spec.max));
    this.root.setAttribute("data-unit", spec.unit);
    this.root.setAttribute("data-high", spec.high);
  }
}
