// Layer x head grid: one cell per query head, coloured by the chosen measure for the
// current selection; query heads grouped by the KV head they read. Click focuses a head;
// shift/alt-click (or the ablate toggle) ablates or restores it.

import { ColorScale, formatValue } from "../colors";
import { el, select, setFlag } from "../dom";
import { kvGroupOf } from "../layout";
import { measureInfo, type GridMeasure } from "../protocol";
import { findAblation, layerInRange, toggleAblation } from "../selection";
import type { ExplorerStore } from "../store";
import { exportCanvas, type View } from "./view";

export class HeadGridView implements View {
  readonly name = "grid";
  readonly root: HTMLElement;
  private cells: HTMLElement[][] = [];
  private rows: HTMLElement[] = [];
  private info: HTMLElement;
  private legend: HTMLElement;
  private hint: HTMLElement;
  private modeButton: HTMLButtonElement;
  private showAll: HTMLButtonElement;
  private help: HTMLElement;
  private ablateMode = false;
  private drawn = false;
  private scale: ColorScale | null = null;
  private cleanups: (() => void)[] = [];

  constructor(private readonly store: ExplorerStore) {
    const g = store.get("geometry");
    const measures = store.get("catalogue").measures.map((m) => ({ value: m.name, label: m.label }));
    const measure = select<GridMeasure>(measures, store.get("grid_measure"), (v) => store.set({ grid_measure: v }), {
      "data-testid": "grid-measure",
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
    this.legend = el("div", { class: "fw-legend" });
    this.help = el("div", { class: "fw-hint", "data-testid": "measure-help" });
    this.showAll = el("button", { class: "fw-button fw-small", type: "button", text: "show all layers", "data-testid": "grid-all-layers" });
    this.showAll.addEventListener("click", () => store.set({ layer_range: [] }));

    const perGroup = Math.max(1, Math.floor(g.num_heads / Math.max(1, g.num_kv_heads)));
    const table = el("div", {
      class: "fw-grid",
      role: "grid",
      tabindex: 0,
      "aria-label": "layers by heads; arrow keys move the focus, Enter or space ablates / restores the focused head",
    });
    table.addEventListener("keydown", (ev) => this.key(ev));
    const head = el("div", { class: "fw-grid-row fw-grid-header" }, [el("span", { class: "fw-row-label", text: "" })]);
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
    for (let l = 0; l < g.num_layers; l++) {
      const row = el("div", { class: "fw-grid-row", "data-layer": l }, [el("span", { class: "fw-row-label", text: `L${l}` })]);
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
        });
        // A shift/alt press must stay in the widget: the notebook would otherwise extend
        // its cell selection (and the next Shift+Enter would re-run those cells).
        cell.addEventListener("mousedown", (ev) => {
          if (ev.shiftKey || ev.altKey) ev.preventDefault();
        });
        cell.addEventListener("click", (ev) => this.click(l, h, ev));
        cell.addEventListener("mouseenter", () => this.hover(l, h));
        cells.push(cell);
        row.append(cell);
      }
      this.cells.push(cells);
      this.rows.push(row);
      table.append(row);
    }
    table.addEventListener("mouseleave", () => {
      this.info.textContent = "";
    });
    // Cells as large as fit (small models get big targets), 14 px for 28 heads.
    table.style.setProperty("--fw-cell", `${Math.max(12, Math.min(28, Math.floor(440 / Math.max(1, g.num_heads + 2))))}px`);
    this.root = el("div", { class: "fw-view fw-head-grid", "data-testid": "head-grid" }, [
      el("div", { class: "fw-view-header" }, [el("span", { class: "fw-title", text: "Layers × heads" }), measure, this.modeButton]),
      this.hint,
      this.help,
      table,
      el("div", { class: "fw-row" }, [this.legend, this.showAll]),
      this.info,
    ]);
    this.setAblateMode(false);
    const paint = () => this.paint();
    for (const topic of ["grid", "focus", "ablations", "layer_range"] as const) this.cleanups.push(store.on(topic, paint));
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
      ev.preventDefault();
    } else if (ev.key === "Enter" || ev.key === " ") {
      this.toggle(layer, head);
      ev.preventDefault();
    }
  }

  private hover(layer: number, head: number): void {
    const g = this.store.get("geometry");
    const grid = this.currentGrid();
    const v = grid ? grid.values[layer * g.num_heads + head] : undefined;
    const a = findAblation(this.store.ablations, layer, head);
    const label = this.measure()?.label ?? "";
    this.info.textContent =
      `L${layer} H${head} (KV ${kvGroupOf(head, g.num_heads, g.num_kv_heads)}) · ${label}: ${formatValue(v)}` +
      (a ? ` · ablated (${a.mode})` : "");
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
    const measure = this.store.get("grid_measure");
    // Unsigned measures span their own [min, max] (entropy never reaches 0; attention
    // shares can all be close): the legend prints the range.
    const info = this.measure();
    this.scale = grid ? new ColorScale(grid.values, info?.direction === "signed", undefined, true) : null;
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
    this.help.textContent = info?.description ?? "";
    if (grid && this.scale) {
      const lo = this.scale.signed ? -this.scale.max : this.scale.min;
      this.legend.textContent = `${grid.label || measure}: ${formatValue(lo)} … ${formatValue(this.scale.max)}` +
        (range.length === 2 ? ` · layers ${range[0]}–${range[1]}` : "");
      this.drawn = true;
    } else {
      this.legend.textContent = info?.needs === "sweep" ? "press Sweep to compute every head's ablation effect" : "loading…";
    }
  }

  ready(): boolean {
    return this.drawn;
  }

  toPNG(): string {
    const g = this.store.get("geometry");
    const cell = 14;
    const gap = 4;
    const perGroup = Math.max(1, Math.floor(g.num_heads / Math.max(1, g.num_kv_heads)));
    const groups = Math.ceil(g.num_heads / perGroup);
    const left = 36;
    const { canvas, ctx } = exportCanvas(left + g.num_heads * cell + groups * gap + 8, 24 + g.num_layers * cell + 8);
    if (!ctx) return "";
    ctx.font = "10px sans-serif";
    const grid = this.currentGrid();
    const ablations = this.store.ablations;
    for (let l = 0; l < g.num_layers; l++) {
      ctx.fillStyle = "#333";
      ctx.fillText(`L${l}`, 4, 24 + l * cell + 10);
      for (let h = 0; h < g.num_heads; h++) {
        const x = left + h * cell + kvGroupOf(h, g.num_heads, g.num_kv_heads) * gap;
        const y = 20 + l * cell;
        ctx.fillStyle = grid && this.scale ? this.scale.css(grid.values[l * g.num_heads + h]) : "#eee";
        ctx.fillRect(x, y, cell - 1, cell - 1);
        if (findAblation(ablations, l, h)) {
          ctx.strokeStyle = "#000";
          ctx.beginPath();
          ctx.moveTo(x, y);
          ctx.lineTo(x + cell - 1, y + cell - 1);
          ctx.stroke();
        }
      }
    }
    ctx.fillStyle = "#333";
    ctx.fillText(grid?.label ?? "", left, 12);
    return canvas.toDataURL("image/png");
  }

  destroy(): void {
    for (const c of this.cleanups) c();
    this.root.remove();
  }
}

