// Exports for slides and papers: every view describes itself as a small figure (rects,
// lines, text, raster images) drawn from its data, never a copy of the live canvas, so no
// hover box, focus ring or brush ends up in the file. One figure renders to both a PNG
// (canvas, 2x for print) and an SVG (text stays text). The frame adds a title, the
// colour bar and a caption with the state (model, statement, head, ablations).

import { css, formatValue, type RGB } from "./colors";
import type { LegendSpec } from "./legend";

export type Prim =
  | { t: "rect"; x: number; y: number; w: number; h: number; fill?: string; stroke?: string; lw?: number }
  | { t: "line"; x1: number; y1: number; x2: number; y2: number; stroke: string; lw?: number; dash?: number[] }
  | {
      t: "text";
      x: number;
      y: number; // baseline
      text: string;
      size?: number;
      anchor?: "start" | "middle" | "end";
      bold?: boolean;
      italic?: boolean;
      mono?: boolean;
      fill?: string;
      rotate?: number; // degrees, about (x, y)
    }
  | { t: "raster"; x: number; y: number; w: number; h: number; width: number; height: number; rgba: Uint8ClampedArray }
  | { t: "gradient"; x: number; y: number; w: number; h: number; colors: string[] };

export interface Figure {
  width: number;
  height: number;
  prims: Prim[];
}

const SANS = "Helvetica, Arial, sans-serif";
const MONO = "Menlo, Consolas, monospace";
export const INK = "#111";
export const MUTED = "#555";

function font(p: Extract<Prim, { t: "text" }>): string {
  return `${p.italic ? "italic " : ""}${p.bold ? "bold " : ""}${p.size ?? 11}px ${p.mono ? MONO : SANS}`;
}

/** Translate every primitive of `fig` by (dx, dy) into `out`. */
export function place(out: Prim[], fig: Figure, dx: number, dy: number): void {
  for (const p of fig.prims) {
    if (p.t === "line") out.push({ ...p, x1: p.x1 + dx, x2: p.x2 + dx, y1: p.y1 + dy, y2: p.y2 + dy });
    else out.push({ ...p, x: p.x + dx, y: p.y + dy } as Prim);
  }
}

/** Greedy word wrap by an estimated character width (exports have no DOM to measure). */
export function wrapText(text: string, width: number, size: number): string[] {
  const perLine = Math.max(10, Math.floor(width / (size * 0.55)));
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/)) {
    if (!word) continue;
    if (line && line.length + 1 + word.length > perLine) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines;
}

/** A horizontal colour bar with its ends, unit and meaning; `width` wide, about 44 px tall. */
export function legendFigure(spec: LegendSpec, width: number): Figure {
  const prims: Prim[] = [];
  const barW = Math.min(220, width - 100);
  const colors: string[] = [];
  for (let i = 0; i <= 32; i++) colors.push(css(spec.colorAt(i / 32)));
  prims.push({ t: "text", x: 0, y: 12, text: spec.unit ? `${spec.title} (${spec.unit})` : spec.title, size: 11, bold: true, fill: INK });
  prims.push({ t: "text", x: 0, y: 30, text: formatValue(spec.min), size: 10, fill: INK });
  prims.push({ t: "gradient", x: 44, y: 20, w: barW, h: 12, colors });
  prims.push({ t: "rect", x: 44, y: 20, w: barW, h: 12, stroke: "#888", lw: 0.5 });
  prims.push({ t: "text", x: 48 + barW, y: 30, text: formatValue(spec.max), size: 10, fill: INK });
  prims.push({ t: "text", x: 0, y: 46, text: `${spec.low} · ${spec.high}`, size: 10, fill: MUTED });
  return { width, height: 50, prims };
}

export interface FrameParts {
  title: string;
  body: Figure;
  legend?: LegendSpec | null;
  caption: string;
}

/** Title above, body, colour bar and caption below, on a white page with a margin. */
export function frame(parts: FrameParts): Figure {
  const margin = 16;
  const width = Math.max(parts.body.width, 420) + 2 * margin;
  const prims: Prim[] = [{ t: "rect", x: 0, y: 0, w: width, h: 0, fill: "#fff" }];
  let y = margin + 14;
  prims.push({ t: "text", x: margin, y, text: parts.title, size: 15, bold: true, fill: INK });
  y += 12;
  place(prims, parts.body, margin, y);
  y += parts.body.height + 8;
  if (parts.legend) {
    const lf = legendFigure(parts.legend, width - 2 * margin);
    place(prims, lf, margin, y);
    y += lf.height + 6;
  }
  for (const line of wrapText(parts.caption, width - 2 * margin, 10)) {
    y += 13;
    prims.push({ t: "text", x: margin, y, text: line, size: 10, fill: MUTED });
  }
  y += margin;
  (prims[0] as Extract<Prim, { t: "rect" }>).h = y;
  return { width, height: y, prims };
}

/** Figures stacked vertically (the whole explorer), each already framed. */
export function stack(figures: Figure[], gap = 8): Figure {
  const width = Math.max(0, ...figures.map((f) => f.width));
  const prims: Prim[] = [];
  let y = 0;
  for (const f of figures) {
    place(prims, f, 0, y);
    y += f.height + gap;
  }
  return { width, height: Math.max(0, y - gap), prims: [{ t: "rect", x: 0, y: 0, w: width, h: Math.max(0, y - gap), fill: "#fff" }, ...prims] };
}

// ---------------------------------------------------------------- SVG
function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

function rasterDataUrl(p: Extract<Prim, { t: "raster" }>): string {
  const c = document.createElement("canvas");
  c.width = p.width;
  c.height = p.height;
  const ctx = c.getContext("2d");
  if (!ctx) return "";
  const img = ctx.createImageData(p.width, p.height);
  img.data.set(p.rgba);
  ctx.putImageData(img, 0, 0);
  return c.toDataURL("image/png");
}

// The bundle is embedded in pages saved with save_html, which must hold no address and
// no tag of their own beyond their scripts: the SVG namespace and root tag are assembled.
export const SVG_NS = ["http:", "", "www.w3.org", "2000", "svg"].join("/");
const SVG_TAG = ["s", "vg"].join("");

/** The figure as a standalone SVG document. */
export function toSVG(fig: Figure, description = ""): string {
  const out: string[] = [
    `<${SVG_TAG} xmlns="${SVG_NS}" width="${fig.width}" height="${fig.height}" viewBox="0 0 ${fig.width} ${fig.height}">`,
  ];
  if (description) out.push(`<desc>${esc(description)}</desc>`);
  let gid = 0;
  for (const p of fig.prims) {
    if (p.t === "rect") {
      out.push(
        `<rect x="${p.x}" y="${p.y}" width="${p.w}" height="${p.h}" fill="${p.fill ?? "none"}"${p.stroke ? ` stroke="${p.stroke}" stroke-width="${p.lw ?? 1}"` : ""}/>`,
      );
    } else if (p.t === "line") {
      out.push(
        `<line x1="${p.x1}" y1="${p.y1}" x2="${p.x2}" y2="${p.y2}" stroke="${p.stroke}" stroke-width="${p.lw ?? 1}"${p.dash ? ` stroke-dasharray="${p.dash.join(" ")}"` : ""}/>`,
      );
    } else if (p.t === "text") {
      const anchor = p.anchor && p.anchor !== "start" ? ` text-anchor="${p.anchor}"` : "";
      const rot = p.rotate ? ` transform="rotate(${p.rotate} ${p.x} ${p.y})"` : "";
      out.push(
        `<text x="${p.x}" y="${p.y}" font-family="${p.mono ? MONO : SANS}" font-size="${p.size ?? 11}"${p.bold ? ' font-weight="bold"' : ""}${p.italic ? ' font-style="italic"' : ""} fill="${p.fill ?? INK}"${anchor}${rot} xml:space="preserve">${esc(p.text)}</text>`,
      );
    } else if (p.t === "raster") {
      out.push(
        `<image x="${p.x}" y="${p.y}" width="${p.w}" height="${p.h}" preserveAspectRatio="none" style="image-rendering:pixelated" href="${rasterDataUrl(p)}"/>`,
      );
    } else if (p.t === "gradient") {
      const id = `fwg${gid++}`;
      const stops = p.colors.map((c, i) => `<stop offset="${(i / Math.max(1, p.colors.length - 1)).toFixed(4)}" stop-color="${c}"/>`).join("");
      out.push(`<defs><linearGradient id="${id}">${stops}</linearGradient></defs>`);
      out.push(`<rect x="${p.x}" y="${p.y}" width="${p.w}" height="${p.h}" fill="url(#${id})"/>`);
    }
  }
  out.push(`</${SVG_TAG}>`);
  return out.join("\n");
}

// ---------------------------------------------------------------- PNG
/** The figure drawn on a fresh canvas at `scale` (2 = print resolution), as a data URL. */
export function toPNG(fig: Figure, scale = 2): string {
  const canvas = document.createElement("canvas");
  canvas.width = Math.ceil(fig.width * scale);
  canvas.height = Math.ceil(fig.height * scale);
  const ctx = canvas.getContext("2d");
  if (!ctx) return "";
  ctx.setTransform?.(scale, 0, 0, scale, 0, 0);
  for (const p of fig.prims) {
    if (p.t === "rect") {
      if (p.fill) {
        ctx.fillStyle = p.fill;
        ctx.fillRect(p.x, p.y, p.w, p.h);
      }
      if (p.stroke) {
        ctx.strokeStyle = p.stroke;
        ctx.lineWidth = p.lw ?? 1;
        ctx.strokeRect(p.x, p.y, p.w, p.h);
      }
    } else if (p.t === "line") {
      ctx.save();
      ctx.strokeStyle = p.stroke;
      ctx.lineWidth = p.lw ?? 1;
      ctx.setLineDash(p.dash ?? []);
      ctx.beginPath();
      ctx.moveTo(p.x1, p.y1);
      ctx.lineTo(p.x2, p.y2);
      ctx.stroke();
      ctx.restore();
    } else if (p.t === "text") {
      ctx.save();
      ctx.font = font(p);
      ctx.fillStyle = p.fill ?? INK;
      ctx.textAlign = p.anchor === "middle" ? "center" : p.anchor === "end" ? "right" : "left";
      ctx.textBaseline = "alphabetic";
      ctx.translate(p.x, p.y);
      if (p.rotate) ctx.rotate((p.rotate * Math.PI) / 180);
      ctx.fillText(p.text, 0, 0);
      ctx.restore();
    } else if (p.t === "raster") {
      const src = document.createElement("canvas");
      src.width = p.width;
      src.height = p.height;
      const sctx = src.getContext("2d");
      if (!sctx) continue;
      const img = sctx.createImageData(p.width, p.height);
      img.data.set(p.rgba);
      sctx.putImageData(img, 0, 0);
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(src, p.x, p.y, p.w, p.h);
    } else if (p.t === "gradient") {
      const n = p.colors.length;
      for (let i = 0; i < n; i++) {
        ctx.fillStyle = p.colors[i];
        const x0 = p.x + (i / n) * p.w;
        ctx.fillRect(x0, p.y, p.w / n + 0.5, p.h);
      }
    }
  }
  return canvas.toDataURL("image/png");
}

/** rgb() of a colour, for primitives. */
export function fill(rgb: RGB): string {
  return css(rgb);
}

/** Every text of a figure, in order (tests and the SVG description read it). */
export function figureText(fig: Figure): string[] {
  return fig.prims.filter((p): p is Extract<Prim, { t: "text" }> => p.t === "text").map((p) => p.text);
}
