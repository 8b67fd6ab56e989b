// What every view of the explorer provides to the composition in explorer.ts.

export interface View {
  readonly name: string;
  readonly root: HTMLElement;
  /** True once the view has drawn the data for the current state at least once. */
  ready(): boolean;
  /** A PNG of the view as a data URL (drawn on a canvas). */
  toPNG(): string;
  destroy(): void;
}

/** A canvas of `w x h` CSS pixels with a white background, for PNG exports. */
export function exportCanvas(w: number, h: number): { canvas: HTMLCanvasElement; ctx: CanvasRenderingContext2D | null } {
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  if (ctx) {
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, w, h);
  }
  return { canvas, ctx };
}
