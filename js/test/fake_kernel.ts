// A stand-in anywidget model with a scripted "kernel" for DOM tests: traits in memory,
// requests queued so a test can answer them in any order (or never).
import type { AnyModel } from "@anywidget/types";
import type { Catalogue, ExplorerTraits } from "../protocol";
import { makeLayout } from "./fixtures";

type Handler = (...args: unknown[]) => void;

export interface SentRequest {
  msg: Record<string, unknown>;
}

export class FakeModel {
  traits: Record<string, unknown>;
  handlers = new Map<string, Set<Handler>>();
  sent: SentRequest[] = [];
  saves = 0;

  constructor(traits: ExplorerTraits) {
    this.traits = { ...traits };
  }

  get(key: string) {
    return this.traits[key];
  }
  set(key: string, value: unknown) {
    this.traits[key] = value;
    this.fire(`change:${key}`);
  }
  on(name: string, fn: Handler) {
    let set = this.handlers.get(name);
    if (!set) this.handlers.set(name, (set = new Set()));
    set.add(fn);
  }
  off(name?: string | null, fn?: Handler | null) {
    if (name && fn) this.handlers.get(name)?.delete(fn);
  }
  save_changes() {
    this.saves++;
  }
  send(msg: Record<string, unknown>) {
    this.sent.push({ msg });
  }
  fire(name: string, ...args: unknown[]) {
    for (const h of this.handlers.get(name) ?? []) h(...args);
  }
  /** Python sets a trait (no save). */
  kernelSets(key: string, value: unknown) {
    this.traits[key] = value;
    this.fire(`change:${key}`);
  }
  reply(msg: Record<string, unknown>, buffers: DataView[] = []) {
    this.fire("msg:custom", msg, buffers);
  }
  asModel(): AnyModel<ExplorerTraits> {
    return this as unknown as AnyModel<ExplorerTraits>;
  }
}

export const LINES = [
  "Revenue: change +2,139 | 2009: 18,926",
  "Net income: change +425 | 2009: 2,743 <img src=x onerror=alert(1)>",
  "</script><script>alert(2)</script>",
];

/** Test data in the shape of Python's start-up catalogue (finwidget.widgets.protocol.startup_catalogue). */
export const CATALOGUE: Catalogue = {
  modes: [
    { name: "zero", takes_value: false, default_value: null, needs_reference: false, needs_source: false, summary: "set to 0", value_symbol: "", disabled_reason: "" },
    { name: "mean", takes_value: false, default_value: null, needs_reference: true, needs_source: false, summary: "mean output", value_symbol: "", disabled_reason: "" },
    { name: "scale", takes_value: true, default_value: 0, needs_reference: false, needs_source: false, summary: "multiplied", value_symbol: "×", disabled_reason: "" },
  ],
  measures: [
    { name: "attention_to_selection", label: "attention to selection", unit: "attention mass", description: "to the selection", direction: "more", uses_selection: true, follows_direction: true, needs: "attention" },
    { name: "entropy", label: "entropy", unit: "fraction of uniform", description: "normalized entropy", direction: "more", uses_selection: true, follows_direction: false, needs: "attention" },
    { name: "financial_focus", label: "financial focus", unit: "attention mass", description: "financial terms", direction: "more", uses_selection: false, follows_direction: false, needs: "attention" },
    { name: "direct_logit_diff", label: "direct logit-diff contribution", unit: "logits", description: "direct", direction: "signed", uses_selection: false, follows_direction: false, needs: "model" },
    { name: "ablation_effect", label: "ablation effect", unit: "logits", description: "sweep", direction: "signed", uses_selection: false, follows_direction: false, needs: "sweep" },
  ],
  views: [
    { name: "prediction", label: "prediction", lane: "ablation", column: "left" },
    { name: "statement", label: "statement", lane: "tokens", column: "left" },
    { name: "grid", label: "grid", lane: "grid", column: "right" },
    { name: "matrix", label: "matrix", lane: "matrix", column: "right" },
    { name: "flow", label: "flow", lane: "flow", column: "right" },
  ],
  reference: { available: true, name: "3 statements you passed", disabled_reason: "" },
};

export function makeTraits(overrides: Partial<ExplorerTraits> = {}): ExplorerTraits {
  const layout = makeLayout(LINES);
  return {
    statement_layout: layout,
    geometry: { num_layers: 3, num_heads: 4, num_kv_heads: 2, head_dim: 8, seq_len: layout.tokens.length, model_name: "tiny" },
    catalogue: CATALOGUE,
    focus: { layer: 0, head: 0 },
    selection: {},
    direction: "from",
    grid_measure: "attention_to_selection",
    layer_range: [],
    ablations: [],
    settings: { statement_heads: "focus", matrix_aggregate: "tokens", ablate_mode: "zero", scale_value: 0, reply_timeout_ms: 1000 },
    prediction: { clean: { logit_diff: 1.25, p_increase: 0.777, label: "increase", n_tokens: layout.tokens.length }, ablated: null, flipped: false },
    views: ["prediction", "statement", "grid", "matrix", "flow"],
    sweep_done: false,
    attention_run: "clean",
    statements: [],
    statement_index: 0,
    ...overrides,
  };
}

/** f32 little-endian bytes of values, as a DataView. */
export function f32(values: number[]): DataView {
  const a = new Float32Array(values);
  return new DataView(a.buffer);
}

/** The reply a kernel would give to a request, with simple deterministic data. */
export function answer(model: FakeModel, msg: Record<string, unknown>): [Record<string, unknown>, DataView[]] {
  const t = model.traits as unknown as ExplorerTraits;
  const T = t.statement_layout.tokens.length;
  const L = t.geometry.num_layers;
  const H = t.geometry.num_heads;
  const S = t.statement_layout.spans.length;
  const base = { kind: "reply", id: msg.id, request: msg.kind, ok: true };
  // The difference run (ablated − clean) is signed, as Python sends it.
  const shift = msg.run === "difference" ? 0.5 : 0;
  switch (msg.kind) {
    case "head_matrix": {
      const packed = new Uint8Array((T * (T + 1)) / 2);
      packed.fill(10 + Number(msg.head));
      return [{ ...base, layer: msg.layer, head: msg.head, run: msg.run ?? "clean", run_label: msg.run ? `${String(msg.run)} run` : "clean run", arrays: { matrix: { encoding: "u8", shape: [T, T], tril: true, scale: 0.01, offset: -shift * 0.2, buffer: 0 } } }, [new DataView(packed.buffer)]];
    }
    case "token_values":
      return [{ ...base, reduce: "sum", label: "test", arrays: { values: { encoding: "f32", shape: [T], buffer: 0 } } }, [f32(Array.from({ length: T }, (_, i) => i / T - shift))]];
    case "grid":
      return [{ ...base, measure: msg.measure, label: String(msg.measure), arrays: { values: { encoding: "f32", shape: [L * H], buffer: 0 } } }, [f32(Array.from({ length: L * H }, (_, i) => i))]];
    case "flow":
      return [{ ...base, selection_mass: [0.1, 0.2, 0.3], logit_lens: [0.5, -1, null], label: "flow", arrays: { spread: { encoding: "f32", shape: [L, S], buffer: 0 } } }, [f32(Array.from({ length: L * S }, (_, i) => (i % 7) - 6 * shift))]];
    case "set_ablations": {
      const ablated = (msg.ablations as unknown[]).length ? { logit_diff: -0.5, p_increase: 0.3775406687981454, label: "decrease", n_tokens: T } : null;
      return [{ ...base, ablations: msg.ablations, prediction: { clean: t.prediction.clean, ablated, flipped: !!ablated } }, []];
    }
    case "estimate_ablations": {
      // A first-order estimate near (not equal to) the exact answer above.
      const n = (msg.ablations as unknown[]).length;
      const ablated = n ? { logit_diff: -0.4, p_increase: 0.401312339887548, label: "decrease", n_tokens: T } : null;
      const estimate = n ? { method: "first-order (attribution patching)", base: [], base_logit_diff: 1.25, heads_estimated: n } : null;
      return [{ ...base, ablations: msg.ablations, prediction: { clean: t.prediction.clean, ablated, flipped: !!ablated, estimate } }, []];
    }
    default:
      return [{ ...base, ok: false, error: `no fake answer for ${String(msg.kind)}` }, []];
  }
}

/** Answer every queued request (in order) and let promises settle. */
export async function answerAll(model: FakeModel): Promise<void> {
  for (let round = 0; round < 5; round++) {
    const queue = model.sent.splice(0);
    for (const { msg } of queue) {
      const [reply, buffers] = answer(model, msg);
      model.reply(reply, buffers);
    }
    await new Promise((r) => setTimeout(r, 0));
  }
}
