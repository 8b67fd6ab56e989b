// Layer x head grid: one cell per query head, coloured by the chosen measure for the
// current selection; query heads grouped by the KV head they read. Click focuses a head;
// shift/alt-click (or the ablate toggle) ablates or restores it.

import { DIRECTION_WORDS, joinCaption, stateCaption } from "../caption";
import { ColorScale, diverging, formatValue, rampWords, sequential, textColorOn } from "../colors";
import { el, ownKeys, select, setFlag } from "../dom";
import { frame, INK, MUTED, type Figure, type Prim } from "../export";
import { kvGroupOf, thinLabels } from "../layout";
import { ColorBar, endsInWords, type LegendSpec } from "../legend";
import { measureInfo, type GridMeasure, type MeasureInfo } from "../protocol";
import { findAblation, layerInRange, toggleAblation } from "../selection";
import type { ExplorerStore } from "../store";
import { Tooltip } from "../tooltip";
import { exportsOf, messageFigure, type View } from "./view";

/** A measure's menu label: its name, and what dark means when the definition says it. */
export function measureMenuLabel(m: Pick<MeasureInfo, "label" | "description" | "direction">): string {
  const said = m.description.match(/dark\s*=\s*([^;.,)]+)/i);
  return said ? `${m.label} (${rampWords().more} = ${said[1].trim()})` : m.label;
}

/** Whether a measure's value changes with the direction switch. */
function followsDirection(m: MeasureInfo | undefined): boolean {
  return !!m?.follows_direction;
}

export class HeadGridView implements View {
  readonly name = "grid";
  readonly root: HTMLElement;
  private cells: HTMLElement[][] = [];
  private rows: HTMLElement[] = [];
  private info: HTMLElement;
  private colorBar = new ColorBar("grid-legend");
  private tip: Tooltip;
  private directionNote: HTMLElement;
  private hint: HTMLElement;
  private modeButton: HTMLButtonElement;
  private showAll: HTMLButtonElement;
  private help: HTMLElement;
  private helpButton: HTMLButtonElement;
  private headLabels: HTMLElement[] = [];
  private ablateMode = false;
  private drawn = false;
  private scale: ColorScale | null = null;
  private cleanups: (() => void)[] = [];
  readonly toPNG: () => string;
  readonly toSVG: () => string;

  constructor(private readonly store: ExplorerStore) {
    const g = store.get("geometry");
    const measures = store.get("catalogue").measures.map((m) => ({ value: m.name, label: measureMenuLabel(m) }));
    const measure = select<GridMeasure>(measures, store.get("grid_measure"), (v) => store.set({ grid_measure: v }), {
      "data-testid": "grid-measure",
      "aria-label": "colour the heads by",
    });
    this.modeButton = el("button", {
      class: "fw-button fw-toggle",
      "data-testid": "ablate-mode",
      "aria-pressed": "false",
      type: "button",
      text: "Ablate mode: off",
      title: "when on, a click on a head ablates or restores it instead of focusing it",
    });
    this.modeButton.addEventListener("click", () => this.setAblateMode(!this.ablateMode));
    this.hint = el("div", { class: "fw-hint", "data-testid": "grid-hint" });
    this.info = el("div", { class: "fw-hover-info", "data-testid": "cell-info" });
    this.help = el("div", { class: "fw-help", "data-testid": "measure-help", id: uniqueId("fw-measure-help"), hidden: true });
    this.helpButton = el("button", {
      class: "fw-button fw-help-button",
      type: "button",
      text: "?",
      "data-testid": "measure-help-button",
      "aria-expanded": "false",
      "aria-controls": this.help.id,
      "aria-label": "how this measure is computed",
      title: "how this measure is computed",
    });
    this.helpButton.addEventListener("click", () => {
      const open = this.help.hidden;
      this.help.hidden = !open;
      this.helpButton.setAttribute("aria-expanded", open ? "true" : "false");
    });
    this.directionNote = el("div", { class: "fw-hint", "data-testid": "grid-direction-note" });
    this.showAll = el("button", { class: "fw-button fw-small", type: "button", text: "show all layers", "data-testid": "grid-all-layers" });
    this.showAll.addEventListener("click", () => store.set({ layer_range: [] }));

    const perGroup = Math.max(1, Math.floor(g.num_heads / Math.max(1, g.num_kv_heads)));
    const table = el("div", {
      class: "fw-grid",
      role: "grid",
      // The notebook must not take the arrows, Enter and space (Lumino skips its shortcuts here).
      "data-lm-suppress-shortcuts": "true",
      tabindex: 0,
      "aria-label": "layers by heads; arrow keys move the focus, Enter or space ablates / restores the focused head",
    });
    this.cleanups.push(ownKeys(table, (ev) => this.key(ev)));
    const head = el("div", { class: "fw-grid-row fw-grid-header", "aria-hidden": "true" }, [el("span", { class: "fw-row-label", text: "" })]);
    for (let kv = 0; kv < Math.ceil(g.num_heads / perGroup); kv++) {
      const span = Math.min(perGroup, g.num_heads - kv * perGroup);
      const label = el("span", {
        class: `fw-kv-label${kv > 0 ? " fw-kv-start" : ""}`,
        text: `KV ${kv}`,
        title: `query heads ${kv * perGroup}–${kv * perGroup + span - 1} share key/value head ${kv}`,
      });
      label.style.setProperty("--fw-kv-span", String(span));
      head.append(label);
    }
    table.append(head);
    // Head numbers under the KV groups (thinned when the cells are too narrow for them).
    const numbers = el("div", { class: "fw-grid-row fw-grid-heads", "aria-hidden": "true" }, [el("span", { class: "fw-row-label", text: "" })]);
    for (let h = 0; h < g.num_heads; h++) {
      const kv = kvGroupOf(h, g.num_heads, g.num_kv_heads);
      const label = el("span", {
        class: `fw-head-label${h > 0 && kv !== kvGroupOf(h - 1, g.num_heads, g.num_kv_heads) ? " fw-kv-start" : ""}`,
        "data-testid": "head-label",
        "data-head": h,
        text: `H${h}`,
      });
      this.headLabels.push(label);
      numbers.append(label);
    }
    table.append(numbers);
    for (let l = 0; l < g.num_layers; l++) {
      const row = el("div", { class: "fw-grid-row", "data-layer": l, role: "row" }, [el("span", { class: "fw-row-label", role: "rowheader", text: `L${l}` })]);
      const cells: HTMLElement[] = [];
      for (let h = 0; h < g.num_heads; h++) {
        const kv = kvGroupOf(h, g.num_heads, g.num_kv_heads);
        const cell = el("div", {
          class: `fw-cell${h > 0 && kv !== kvGroupOf(h - 1, g.num_heads, g.num_kv_heads) ? " fw-kv-start" : ""}`,
          "data-testid": "head-cell",
          "data-layer": l,
          "data-head": h,
          "data-kv": kv,
          role: "gridcell",
          "aria-label": `layer ${l} head ${h}`,
        });
        // A shift/alt press must stay in the widget: the notebook would otherwise extend
        // its cell selection (and the next Shift+Enter would re-run those cells).
        cell.addEventListener("mousedown", (ev) => {
          if (ev.shiftKey || ev.altKey) ev.preventDefault();
        });
        cell.addEventListener("click", (ev) => this.click(l, h, ev));
        cell.addEventListener("mouseenter", (ev) => this.hover(l, h, ev));
        cell.addEventListener("mousemove", (ev) => this.hover(l, h, ev));
        cells.push(cell);
        row.append(cell);
      }
      this.cells.push(cells);
      this.rows.push(row);
      table.append(row);
    }
    table.addEventListener("mouseleave", () => this.tip.hide());
    table.addEventListener("blur", () => this.tip.hide());
    // Cells as large as fit (small models get big targets), 14 px for 28 heads.
    const cellPx = Math.max(12, Math.min(28, Math.floor(440 / Math.max(1, g.num_heads + 2))));
    table.style.setProperty("--fw-cell", `${cellPx}px`);
    // "H12" needs about 16 px at 9 px type: keep the numbers that fit, head 0 first.
    const kept = new Set(thinLabels(this.headLabels.map((_, h) => ({ center: h * (cellPx + 1), extent: 6 * `H${h}`.length, priority: h === 0 ? 1 : 0 })), 1));
    this.headLabels.forEach((node, h) => {
      if (!kept.has(h)) node.textContent = "";
    });
    this.root = el("div", { class: "fw-view fw-head-grid", "data-testid": "head-grid" }, [
      el("div", { class: "fw-view-header" }, [el("span", { class: "fw-title", text: "Layers × heads" }), measure, this.helpButton, this.modeButton]),
      this.help,
      this.hint,
      this.directionNote,
      el("div", { class: "fw-grid-frame" }, [el("div", { class: "fw-axis-title fw-grid-axis", text: "rows: layers (L) · columns: query heads (H), grouped by the KV head they share" }), table]),
      el("div", { class: "fw-row" }, [this.colorBar.root, this.showAll]),
      this.info,
    ]);
    this.tip = new Tooltip(this.info, this.root);
    const exports = exportsOf(() => this.figure());
    this.toPNG = exports.toPNG;
    this.toSVG = exports.toSVG;
    this.setAblateMode(false);
    const paint = () => this.paint();
    for (const topic of ["grid", "focus", "ablations", "layer_range", "direction", "selection"] as const) this.cleanups.push(store.on(topic, paint));
    this.cleanups.push(
      store.on("measure", () => {
        measure.value = store.get("grid_measure");
        this.paint();
      }),
    );
    this.paint();
  }

  private setAblateMode(on: boolean): void {
    this.ablateMode = on;
    this.modeButton.setAttribute("aria-pressed", on ? "true" : "false");
    this.modeButton.textContent = on ? "Ablate mode: on" : "Ablate mode: off";
    setFlag(this.root, "data-ablate-mode", on);
    this.hint.textContent = on
      ? "Ablate mode: click a head to ablate or restore it (alt-click focuses)."
      : "Click a head to focus it · shift-click (or alt-click, or Ablate mode) ablates / restores it.";
  }

  private click(layer: number, head: number, ev: MouseEvent): void {
    const ablate = this.ablateMode ? !ev.altKey : ev.shiftKey || ev.altKey;
    if (!ablate) {
      this.store.set({ focus: { layer, head } });
      return;
    }
    this.toggle(layer, head);
  }

  /** Ablate (with the settings' mode) or restore one head. */
  private toggle(layer: number, head: number): void {
    const mode = this.store.get("settings").ablate_mode;
    void this.store.requestAblations(toggleAblation(this.store.ablations, layer, head, mode, this.store.modeValue(mode)));
  }

  /** Arrow keys move the focused head (within the layer range); Enter / space toggles its ablation. */
  private key(ev: KeyboardEvent): void {
    const g = this.store.get("geometry");
    const { layer, head } = this.store.get("focus");
    const range = this.store.get("layer_range");
    const [lo, hi] = range.length === 2 ? range : [0, g.num_layers - 1];
    const moves: Record<string, [number, number]> = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    if (ev.key in moves) {
      const [dl, dh] = moves[ev.key];
      const next = { layer: Math.max(lo, Math.min(hi, layer + dl)), head: Math.max(0, Math.min(g.num_heads - 1, head + dh)) };
      if (next.layer !== layer || next.head !== head) this.store.set({ focus: next });
      this.hover(next.layer, next.head);
      this.tip.showAt(this.info.textContent ?? "", this.cells[next.layer][next.head]);
      ev.preventDefault();
      ev.stopPropagation();
    } else if (ev.key === "Enter" || ev.key === " ") {
      this.toggle(layer, head);
      ev.preventDefault();
      ev.stopPropagation();
    }
  }

  private hover(layer: number, head: number, ev?: MouseEvent): void {
    const g = this.store.get("geometry");
    const grid = this.currentGrid();
    const v = grid ? grid.values[layer * g.num_heads + head] : undefined;
    const a = findAblation(this.store.ablations, layer, head);
    const info = this.measure();
    const label = `${info?.label ?? ""}${grid?.whatIfDifference ? ", edited − original" : ""}`;
    this.info.textContent =
      `layer ${layer}, head ${head} (L${layer} H${head}, KV ${kvGroupOf(head, g.num_heads, g.num_kv_heads)})\n${label}: ${formatValue(v)}${info?.unit ? ` ${info.unit}` : ""}` +
      (a ? `\nablated (${a.mode})` : "");
    if (ev) this.tip.show(this.info.textContent, ev.clientX, ev.clientY);
  }

  private measure() {
    return measureInfo(this.store.get("catalogue"), this.store.get("grid_measure"));
  }

  private currentGrid() {
    const grid = this.store.grid;
    return grid && grid.measure === this.store.get("grid_measure") ? grid : null;
  }

  private paint(): void {
    const g = this.store.get("geometry");
    const focus = this.store.get("focus");
    const range = this.store.get("layer_range");
    const ablations = this.store.ablations;
    const grid = this.currentGrid();
    // Unsigned measures span their own [min, max] (entropy never reaches 0; attention
    // shares can all be close): the legend prints the range.
    const info = this.measure();
    this.scale = grid ? new ColorScale(grid.values, info?.direction === "signed" || !!grid.whatIfDifference, undefined, true) : null;
    setFlag(this.root, "data-what-if-difference", !!grid?.whatIfDifference);
    for (let l = 0; l < g.num_layers; l++) {
      const visible = layerInRange(range, l);
      this.rows[l].style.display = visible ? "" : "none";
      for (let h = 0; h < g.num_heads; h++) {
        const cell = this.cells[l][h];
        const v = grid ? grid.values[l * g.num_heads + h] : NaN;
        cell.style.backgroundColor = this.scale ? this.scale.css(v) : "#f4f4f4";
        cell.setAttribute("data-value", grid ? String(v) : "");
        setFlag(cell, "data-focused", focus.layer === l && focus.head === h);
        setFlag(cell, "data-ablated", !!findAblation(ablations, l, h));
      }
    }
    this.showAll.style.display = range.length === 2 ? "" : "none";
    this.help.textContent = info
      ? `${info.label}: ${info.description}. Unit: ${info.unit}. Computed by the analysis layer's measure “${info.name}” (finwidget.analysis.metrics).`
      : "";
    const sel = this.store.get("selection");
    const hasSel = typeof sel.start === "number";
    this.directionNote.textContent = info?.uses_selection && !followsDirection(info)
      ? `This measure reads the answer position's attention${hasSel ? " to the selection" : ""}; the statement's switch (${DIRECTION_WORDS[this.store.get("direction")].menu}) does not change it.`
      : "";
    this.directionNote.hidden = !this.directionNote.textContent;
    this.colorBar.update(this.legend(), info?.needs === "sweep" ? "press Sweep to compute every head's ablation effect" : "loading…");
    if (grid && this.scale) this.drawn = true;
    if (range.length === 2) this.colorBar.root.setAttribute("data-layer-range", `${range[0]}-${range[1]}`);
    else this.colorBar.root.removeAttribute("data-layer-range");
  }

  /** The colour bar of the current grid: the measure's name and unit, dark = more of it. */
  private legend(): LegendSpec | null {
    const grid = this.currentGrid();
    const scale = this.scale;
    if (!grid || !scale) return null;
    const info = this.measure();
    if (grid.whatIfDifference)
      return {
        title: `${info?.label ?? grid.measure}: edited − original (what-if)`,
        unit: info?.unit ?? "",
        min: -scale.max,
        max: scale.max,
        colorAt: (t) => diverging(2 * t - 1),
        low: "blue = lower in the edited statement's run",
        high: "red = higher than in the original's",
      };
    const ends = endsInWords(info, grid.label || this.store.get("grid_measure"));
    return {
      title: info?.label ?? grid.label ?? this.store.get("grid_measure"),
      unit: info?.unit ?? "",
      min: scale.signed ? -scale.max : scale.min,
      max: scale.max,
      colorAt: (t) => (scale.signed ? diverging(2 * t - 1) : sequential(t)),
      low: ends.low,
      high: ends.high,
    };
  }

  ready(): boolean {
    return this.drawn;
  }

  /** The grid with layer and head numbers, KV groups, ablated and focused heads marked,
   * values written in the cells when they fit, the colour bar and the state. */
  figure(withState = true): Figure {
    const g = this.store.get("geometry");
    const caption = withState ? stateCaption(this.store) : "";
    const grid = this.currentGrid();
    const scale = this.scale;
    const info = this.measure();
    const title = `Layers × heads: ${info?.label ?? this.store.get("grid_measure")}`;
    if (!grid || !scale) return messageFigure(title, "no values yet", caption);
    const cell = Math.max(16, Math.min(56, Math.floor(520 / Math.max(1, g.num_heads))));
    const gap = 6;
    const left = 40;
    const top = 40;
    const prims: Prim[] = [];
    const range = this.store.get("layer_range");
    const layers = [...Array(g.num_layers).keys()].filter((l) => layerInRange(range, l));
    const xOf = (h: number) => left + h * cell + kvGroupOf(h, g.num_heads, g.num_kv_heads) * gap;
    const focus = this.store.get("focus");
    const ablations = this.store.ablations;
    const perGroup = Math.max(1, Math.floor(g.num_heads / Math.max(1, g.num_kv_heads)));
    for (let kv = 0; kv < Math.ceil(g.num_heads / perGroup); kv++) {
      const x0 = xOf(kv * perGroup);
      const x1 = xOf(Math.min(g.num_heads, (kv + 1) * perGroup) - 1) + cell - 1;
      prims.push({ t: "text", x: (x0 + x1) / 2, y: 12, text: `KV ${kv}`, size: 10, anchor: "middle", fill: MUTED });
      prims.push({ t: "line", x1: x0, y1: 16, x2: x1, y2: 16, stroke: "#aaa", lw: 1.5 });
    }
    const keptHeads = new Set(thinLabels([...Array(g.num_heads).keys()].map((h) => ({ center: xOf(h), extent: 6 * `H${h}`.length, priority: 0 })), 1));
    for (let h = 0; h < g.num_heads; h++) {
      if (keptHeads.has(h)) prims.push({ t: "text", x: xOf(h) + cell / 2, y: top - 8, text: `H${h}`, size: 9, anchor: "middle", fill: INK });
    }
    layers.forEach((l, row) => {
      const y = top + row * cell;
      prims.push({ t: "text", x: left - 6, y: y + cell / 2 + 3, text: `L${l}`, size: 9, anchor: "end", fill: INK });
      for (let h = 0; h < g.num_heads; h++) {
        const v = grid.values[l * g.num_heads + h];
        const x = xOf(h);
        const rgb = scale.rgb(v);
        prims.push({ t: "rect", x, y, w: cell - 1, h: cell - 1, fill: `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})` });
        if (cell >= 34) prims.push({ t: "text", x: x + cell / 2, y: y + cell / 2 + 3, text: formatValue(v), size: 9, anchor: "middle", fill: textColorOn(rgb) });
        if (findAblation(ablations, l, h)) prims.push({ t: "line", x1: x, y1: y, x2: x + cell - 1, y2: y + cell - 1, stroke: "#000", lw: 2 });
        if (focus.layer === l && focus.head === h) prims.push({ t: "rect", x: x - 1, y: y - 1, w: cell + 1, h: cell + 1, stroke: "#e67800", lw: 2 });
      }
    });
    const width = xOf(g.num_heads - 1) + cell + 4;
    const height = top + layers.length * cell + 4;
    const notes = [
      ablations.length ? "diagonal stroke: ablated head" : "",
      `orange box: focused head L${focus.layer} H${focus.head}`,
      range.length === 2 ? `layers ${range[0]}–${range[1]} shown` : "",
    ].filter(Boolean);
    return frame({ title, body: { width, height, prims }, legend: this.legend(), caption: joinCaption(...notes, caption) });
  }

  destroy(): void {
    for (const c of this.cleanups) c();
    this.tip.destroy();
    this.root.remove();
  }
}


let idCounter = 0;
/** An id unique in the page (aria-controls needs one; several explorers share a page). */
function uniqueId(prefix: string): string {
  idCounter += 1;
  return `${prefix}-${idCounter}-${Math.random().toString(36).slice(2, 8)}`;
}
