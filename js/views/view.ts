// What every view of the explorer provides to the composition in explorer.ts.

import { frame, toPNG as figurePNG, toSVG as figureSVG, type Figure } from "../export";

export interface View {
  readonly name: string;
  readonly root: HTMLElement;
  /** True once the view has drawn the data for the current state at least once. */
  ready(): boolean;
  /** The view as a framed figure (title, axis labels, colour bar, state caption), drawn
   * from its data: no hover box, focus ring or brush. `withState` false leaves the state
   * out of the caption (the whole-explorer export states it once, at the bottom). */
  figure(withState?: boolean): Figure;
  /** A PNG of `figure()` as a data URL. */
  toPNG(): string;
  /** An SVG document of `figure()`. */
  toSVG(): string;
  destroy(): void;
}

/** toPNG / toSVG of a view from its figure. */
export function exportsOf(figure: () => Figure): { toPNG(): string; toSVG(): string } {
  return {
    toPNG: () => figurePNG(figure()),
    toSVG: () => {
      const f = figure();
      return figureSVG(f);
    },
  };
}

/** A figure with only a message (a view that has nothing drawn yet). */
export function messageFigure(title: string, message: string, caption: string): Figure {
  return frame({ title, body: { width: 420, height: 24, prims: [{ t: "text", x: 0, y: 16, text: message, size: 12, fill: "#555" }] }, caption });
}
