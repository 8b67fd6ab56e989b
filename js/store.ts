// Model-level state of one explorer: the synced traits (through the anywidget model), the
// data the views draw (fetched by request), pending ablations and the request channel.
// Views subscribe to topics and redraw; they never talk to the kernel themselves.

import type { AnyModel } from "@anywidget/types";
import {
  decodeArray,
  decodeQuantizedMatrix,
  modeInfo,
  requestKey,
  requestsForState,
  RequestChannel,
  type Ablation,
  type AblationMode,
  type AttentionRun,
  type BufferLike,
  type ChannelStatus,
  type ExplorerTraits,
  type GridMeasure,
  type ModeInfo,
  type PlannedRequest,
  type PredictionState,
  type QuantizedMatrix,
  type Reply,
} from "./protocol";
import { parseCircuit, type CircuitGraph, type CircuitMethod } from "./circuit";

export type Topic =
  | "focus"
  | "selection"
  | "direction"
  | "measure"
  | "layer_range"
  | "settings"
  | "ablations"
  | "prediction"
  | "matrix"
  | "tokens"
  | "grid"
  | "flow"
  | "status"
  | "progress"
  | "hover"
  | "statement"
  | "run"
  | "history"
  | "circuit"
  | "what_if";

export interface MatrixData {
  layer: number;
  head: number;
  matrix: QuantizedMatrix;
}

export interface TokenValuesData {
  values: Float32Array; // [T]
  reduce: "sum" | "mean";
  label: string;
  /** [S] per-span values sent as such (a what-if's difference, edited − original; NaN: no original span). */
  spanValues?: Float32Array;
}

export interface GridData {
  measure: GridMeasure;
  values: Float32Array; // [L * H], row-major by layer
  label: string;
  /** The values are a what-if's difference (edited − original): signed. */
  whatIfDifference?: boolean;
}

export interface FlowData {
  spread: Float32Array; // [L * S]: per layer, span-aggregated attention of the selection (mean over heads)
  numSpans: number;
  selectionMass: number[]; // [L]
  logitLens: number[]; // [L]: logit difference read out after each layer
  label: string;
}

type Listener = () => void;

/** What a sweep covers: the statement shown, or every statement of the explorer. */
export type SweepStatements = "current" | "all";

/** Undo/redo of ablation sets: `past` holds the sets before each change, `future` the
 * ones undone. Pure data (unit-tested); the store applies what it returns. */
export class AblationHistory {
  past: Ablation[][] = [];
  future: Ablation[][] = [];
  constructor(readonly limit = 100) {}

  /** `from` is about to be replaced by a new set chosen in the UI. */
  record(from: Ablation[], to: Ablation[]): void {
    if (sameAblations(from, to)) return;
    this.past.push(from.map((a) => ({ ...a })));
    if (this.past.length > this.limit) this.past.shift();
    this.future = [];
  }

  get canUndo(): boolean {
    return this.past.length > 0;
  }

  get canRedo(): boolean {
    return this.future.length > 0;
  }

  /** The set to go back to from `current` (null when there is none). */
  undo(current: Ablation[]): Ablation[] | null {
    const prev = this.past.pop();
    if (!prev) return null;
    this.future.push(current.map((a) => ({ ...a })));
    return prev;
  }

  /** The set to go forward to from `current` (null when there is none). */
  redo(current: Ablation[]): Ablation[] | null {
    const next = this.future.pop();
    if (!next) return null;
    this.past.push(current.map((a) => ({ ...a })));
    return next;
  }
}

export function sameAblations(a: Ablation[], b: Ablation[]): boolean {
  const key = (xs: Ablation[]) => requestKey({ a: [...xs].sort((x, y) => x.layer - y.layer || x.head - y.head) });
  return key(a) === key(b);
}

/** The offline page's replies: request key -> reply with its buffers. */
export type ReplyTable = Map<string, { reply: Reply; buffers: BufferLike[] }>;

export class ExplorerStore {
  readonly channel: RequestChannel;
  matrix: MatrixData | null = null;
  tokens: TokenValuesData | null = null;
  grid: GridData | null = null;
  flow: FlowData | null = null;
  /** The statement's circuit (the circuit view's data), or null until it arrives. */
  circuit: CircuitGraph | null = null;
  /** Ablation set sent to the kernel and not yet answered (shown optimistically). */
  pendingAblations: Ablation[] | null = null;
  /** First-order estimate of the pending set's prediction (estimate_ablations reply), shown
   * marked as an estimate until the exact reply replaces it; null when there is none. */
  estimatePrediction: PredictionState | null = null;
  /** Prediction and ablation set from the newest ablation reply (until Python changes the traits). */
  replyPrediction: PredictionState | null = null;
  replyAblations: Ablation[] | null = null;
  progress: { done: number; total: number; message: string } | null = null;
  /** The span under the pointer in the statement view (UI only, not synced), or null. */
  hoverSpan: number | null = null;
  /** Error message of the last failed request per lane, for the status line. */
  errors = new Map<string, string>();
  status: ChannelStatus = { busy: false, slow: false, message: "" };
  readonly offline: boolean;
  /** Undo/redo of the ablation sets chosen in the UI. */
  readonly history = new AblationHistory();
  /** Which run each attention lane's data came from, as the kernel labelled it. */
  runLabels = new Map<string, string>();
  /** Whether a sweep is running (its cancel button shows). */
  sweeping = false;

  private listeners = new Map<Topic, Set<Listener>>();
  private requestedKeys = new Map<string, string>();
  private scheduled = false;
  private cleanups: (() => void)[] = [];

  constructor(
    readonly model: AnyModel<ExplorerTraits>,
    options: { offline?: boolean } = {},
  ) {
    this.offline = !!options.offline;
    const timeout = model.get("settings")?.reply_timeout_ms ?? 8000;
    this.channel = new RequestChannel((msg, buffers) => model.send(msg, undefined, buffers), { timeoutMs: timeout });
    const onMsg = (msg: unknown, buffers: DataView[]) => {
      this.channel.handle(msg, buffers);
    };
    model.on("msg:custom", onMsg);
    this.cleanups.push(() => model.off("msg:custom", onMsg));
    this.cleanups.push(
      this.channel.onStatus((s) => {
        this.status = s;
        this.emit("status");
      }),
    );
    const traitTopics: [string, Topic][] = [
      ["focus", "focus"],
      ["selection", "selection"],
      ["direction", "direction"],
      ["grid_measure", "measure"],
      ["layer_range", "layer_range"],
      ["settings", "settings"],
      ["ablations", "ablations"],
      ["prediction", "prediction"],
      ["views", "settings"],
      ["sweep_done", "grid"],
      ["attention_run", "run"],
      ["statement_index", "settings"],
      ["what_if_state", "what_if"],
      ["what_if_difference", "what_if"],
    ];
    // A new statement: every view's data belongs to the old one (same request keys, new text).
    const onLayout = () => {
      this.requestedKeys.clear();
      this.matrix = this.tokens = this.grid = this.flow = null;
      this.circuit = null;
      this.runLabels.clear();
      this.hoverSpan = null;
      this.emit("statement");
      this.schedule();
    };
    model.on("change:statement_layout", onLayout);
    this.cleanups.push(() => model.off("change:statement_layout", onLayout));
    for (const [trait, topic] of traitTopics) {
      const cb = () => {
        if ((trait === "prediction" || trait === "ablations") && this.pendingAblations === null) {
          // Python changed them itself (not in answer to the UI): the traits are the truth again.
          this.replyPrediction = null;
          this.replyAblations = null;
        }
        if (trait === "sweep_done") this.requestedKeys.delete("grid");
        this.emit(topic);
        this.schedule();
      };
      model.on(`change:${trait}`, cb);
      this.cleanups.push(() => model.off(`change:${trait}`, cb));
    }
  }

  get traits(): ExplorerTraits {
    const m = this.model;
    return {
      statement_layout: m.get("statement_layout"),
      geometry: m.get("geometry"),
      catalogue: m.get("catalogue"),
      focus: m.get("focus"),
      selection: m.get("selection"),
      direction: m.get("direction"),
      grid_measure: m.get("grid_measure"),
      layer_range: m.get("layer_range"),
      ablations: m.get("ablations"),
      settings: m.get("settings"),
      prediction: m.get("prediction"),
      views: m.get("views"),
      sweep_done: m.get("sweep_done"),
      attention_run: m.get("attention_run") ?? "clean",
      statements: m.get("statements") ?? [],
      statement_index: m.get("statement_index") ?? 0,
      what_if_state: m.get("what_if_state") ?? {},
      what_if_difference: !!m.get("what_if_difference"),
    };
  }

  get<K extends keyof ExplorerTraits>(key: K): ExplorerTraits[K] {
    return this.model.get(key);
  }

  /** Set synced traits from the UI (sent to Python at once). */
  set(values: Partial<ExplorerTraits>): void {
    for (const [k, v] of Object.entries(values)) this.model.set(k, v);
    this.model.save_changes();
  }

  /** What Python said about a mode (from the start-up catalogue). */
  mode(name: AblationMode): ModeInfo | undefined {
    return modeInfo(this.get("catalogue"), name);
  }

  /** The value a new ablation with `mode` carries: the settings' value if the mode takes one. */
  modeValue(mode: AblationMode): number | undefined {
    return this.mode(mode)?.takes_value ? this.get("settings").scale_value : undefined;
  }

  /** Why the explorer cannot apply `mode` ("" when it can), as Python said. */
  modeDisabledReason(mode: AblationMode): string {
    return this.mode(mode)?.disabled_reason ?? "";
  }

  /** Which run the attention views show. */
  get attentionRun(): AttentionRun {
    return (this.model.get("attention_run") as AttentionRun | undefined) ?? "clean";
  }

  /** What the views' data shows, as the kernel labelled it (the newest attention reply's label). */
  get runLabel(): string {
    for (const lane of ["matrix", "tokens", "flow"]) {
      const label = this.runLabels.get(lane);
      if (label) return label;
    }
    return this.attentionRun === "clean" ? "clean run" : "";
  }

  /** Show another statement of the list (the ablations stay). */
  showStatement(index: number): void {
    const n = (this.model.get("statements") ?? []).length;
    if (n < 2 || index < 0 || index >= n || index === this.model.get("statement_index")) return;
    this.set({ statement_index: index });
  }

  /** Go back to the ablation set before the last change made in the UI. */
  undo(): void {
    const prev = this.history.undo(this.ablations);
    if (prev) void this.requestAblations(prev, { record: false });
    this.emit("history");
  }

  /** Re-apply the ablation set the last undo left. */
  redo(): void {
    const next = this.history.redo(this.ablations);
    if (next) void this.requestAblations(next, { record: false });
    this.emit("history");
  }

  /** The ablation set the UI shows: the pending one while a request is in flight. */
  get ablations(): Ablation[] {
    return this.pendingAblations ?? this.replyAblations ?? this.model.get("ablations") ?? [];
  }

  get prediction(): PredictionState {
    if (this.pendingAblations !== null && this.estimatePrediction) return this.estimatePrediction;
    return this.replyPrediction ?? this.model.get("prediction") ?? {};
  }

  /** Whether the prediction shown is a first-order estimate (the exact one is on its way). */
  get predictionIsEstimate(): boolean {
    return this.pendingAblations !== null && !!this.estimatePrediction?.estimate;
  }

  /** Ask for the click's first-order estimate (answered at once from kept gradients); it is
   * shown only while `next` is still the pending set, and never after the exact reply. */
  private async requestEstimate(next: Ablation[]): Promise<void> {
    const outcome = await this.channel.request("estimate", "estimate_ablations", { ablations: next });
    // Superseded (a newer click), failed, or no estimate yet: the exact reply is what shows.
    if (outcome.status !== "ok") return;
    const prediction = outcome.reply.prediction as PredictionState | null;
    if (!prediction || this.pendingAblations === null || !sameAblations(this.pendingAblations, next)) return;
    this.estimatePrediction = prediction;
    this.emit("prediction");
  }

  on(topic: Topic, fn: Listener): () => void {
    let set = this.listeners.get(topic);
    if (!set) this.listeners.set(topic, (set = new Set()));
    set.add(fn);
    return () => set!.delete(fn);
  }

  emit(topic: Topic): void {
    for (const fn of this.listeners.get(topic) ?? []) fn();
  }

  setHoverSpan(span: number | null): void {
    if (span === this.hoverSpan) return;
    this.hoverSpan = span;
    this.emit("hover");
  }

  /** Fetch whatever the current state needs (coalesced to one round per task). */
  schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      this.refresh();
    });
  }

  refresh(): void {
    for (const plan of requestsForState(this.traits)) {
      const key = requestKey({ kind: plan.kind, ...plan.params });
      if (this.requestedKeys.get(plan.lane) === key) continue;
      this.requestedKeys.set(plan.lane, key);
      void this.fetch(plan, key);
    }
  }

  private async fetch(plan: PlannedRequest, key: string): Promise<void> {
    const outcome = await this.channel.request(plan.lane, plan.kind, plan.params);
    if (outcome.status === "stale") return;
    if (outcome.status === "error") {
      // Forget the key so the same state is asked again on the next change.
      if (this.requestedKeys.get(plan.lane) === key) this.requestedKeys.delete(plan.lane);
      this.errors.set(plan.lane, outcome.error);
      this.emit("status");
      return;
    }
    this.errors.delete(plan.lane);
    try {
      this.accept(plan.lane, outcome.reply, outcome.buffers);
    } catch (err) {
      this.errors.set(plan.lane, `could not read the kernel's reply: ${err instanceof Error ? err.message : String(err)}`);
      this.emit("status");
    }
  }

  private accept(lane: PlannedRequest["lane"], reply: Reply, buffers: BufferLike[]): void {
    const arrays = reply.arrays ?? {};
    if (lane === "matrix" || lane === "tokens" || lane === "flow") {
      this.runLabels.set(lane, String(reply.run_label ?? "clean run"));
      this.emit("run");
    }
    if (lane === "matrix") {
      this.matrix = {
        layer: Number(reply.layer),
        head: Number(reply.head),
        matrix: decodeQuantizedMatrix(arrays.matrix, buffers),
      };
    } else if (lane === "tokens") {
      this.tokens = {
        values: decodeArray(arrays.values, buffers),
        reduce: reply.reduce === "mean" ? "mean" : "sum",
        label: String(reply.label ?? ""),
        spanValues: arrays.span_values ? decodeArray(arrays.span_values, buffers) : undefined,
      };
    } else if (lane === "grid") {
      this.grid = {
        measure: String(reply.measure) as GridMeasure,
        values: decodeArray(arrays.values, buffers),
        label: String(reply.label ?? ""),
        whatIfDifference: reply.what_if === "difference",
      };
    } else if (lane === "flow") {
      this.flow = {
        spread: decodeArray(arrays.spread, buffers),
        numSpans: arrays.spread.shape[1] ?? 0,
        selectionMass: (reply.selection_mass as number[]) ?? [],
        logitLens: (reply.logit_lens as number[]) ?? [],
        label: String(reply.label ?? ""),
      };
    } else if (lane === "circuit") {
      this.circuit = parseCircuit(reply.graph);
    }
    this.emit(lane === "tokens" ? "tokens" : lane);
  }

  /** Ask for the statement's circuit found with `method` (the circuit view's "exact" button);
   * the reply replaces the circuit shown. */
  requestCircuit(method: CircuitMethod): void {
    const plan: PlannedRequest = { lane: "circuit", kind: "circuit", params: { method } };
    const key = requestKey({ kind: plan.kind, ...plan.params });
    this.requestedKeys.set(plan.lane, key);
    this.emit("circuit");
    void this.fetch(plan, key);
  }

  /** Ask the kernel for the prediction under `next` (shown as pending until it answers). */
  async requestAblations(next: Ablation[], options: { record?: boolean } = {}): Promise<void> {
    if (this.offline) {
      this.errors.set("ablation", "This exported page has no kernel: ablations need the live notebook.");
      this.emit("status");
      return;
    }
    const refused = next.find((a) => this.modeDisabledReason(a.mode));
    if (refused) {
      this.errors.set("ablation", `${refused.mode} ablation is disabled: ${this.modeDisabledReason(refused.mode)}`);
      this.emit("status");
      return;
    }
    if (options.record !== false) {
      this.history.record(this.ablations, next);
      this.emit("history");
    }
    this.pendingAblations = next;
    this.estimatePrediction = null;
    this.emit("ablations");
    void this.requestEstimate(next);
    const outcome = await this.channel.request("ablation", "set_ablations", { ablations: next });
    if (outcome.status === "stale") return;
    this.pendingAblations = null;
    this.estimatePrediction = null;
    if (outcome.status === "error") {
      this.errors.set("ablation", outcome.error);
      this.emit("ablations");
      this.emit("status");
      return;
    }
    this.errors.delete("ablation");
    this.replyPrediction = outcome.reply.prediction as PredictionState;
    this.replyAblations = (outcome.reply.ablations as Ablation[] | undefined) ?? next;
    this.emit("ablations");
    this.emit("prediction");
  }

  /** Run the sweep (every head ablated alone); progress arrives as messages. */
  async requestSweep(statements: SweepStatements = "current"): Promise<void> {
    if (this.offline) {
      this.errors.set("sweep", "This exported page has no kernel: the sweep needs the live notebook.");
      this.emit("status");
      return;
    }
    const mode = this.get("settings").ablate_mode;
    if (this.modeDisabledReason(mode)) {
      this.errors.set("sweep", `${mode} ablation is disabled: ${this.modeDisabledReason(mode)}`);
      this.emit("status");
      return;
    }
    const params: Record<string, unknown> = { mode };
    if (statements === "all") params.statements = "all";
    const value = this.modeValue(mode);
    if (value !== undefined) params.value = value;
    // Only the layers the grid shows (a full sweep of a 28 x 28 model takes a while).
    const range = this.get("layer_range");
    if (range.length === 2) params.layer_range = range;
    this.progress = { done: 0, total: 1, message: "starting sweep" };
    this.sweeping = true;
    this.emit("progress");
    const outcome = await this.channel.request("sweep", "sweep", params, (p) => {
      this.progress = { done: p.done, total: p.total, message: p.message ?? "" };
      this.emit("progress");
    });
    if (outcome.status === "stale") return;
    this.progress = null;
    this.sweeping = false;
    this.emit("progress");
    if (outcome.status === "error") {
      this.errors.set("sweep", outcome.error);
      this.emit("status");
      return;
    }
    this.errors.delete("sweep");
    // The reply is the grid of the sweep's measure; the grid shows it from now on.
    const measure = String(outcome.reply.measure);
    this.grid = {
      measure,
      values: decodeArray(outcome.reply.arrays!.values, outcome.buffers),
      label: String(outcome.reply.label ?? ""),
    };
    this.requestedKeys.set("grid", requestKey({ kind: "grid", measure }));
    if (this.get("grid_measure") !== measure) this.set({ grid_measure: measure });
    this.emit("grid");
  }

  /** Ask the kernel to stop the running sweep at its next head (its reply then says so). */
  cancelSweep(): void {
    if (this.offline || !this.sweeping) return;
    void this.channel.request("cancel", "cancel_sweep", {});
  }

  /** Hand a PNG (data URL) of a view to Python too, so code can save it. */
  sendPng(view: string, dataUrl: string): void {
    if (this.offline) return;
    void this.channel.request("png", "png", { view, data_url: dataUrl });
  }

  destroy(): void {
    this.channel.cancelAll();
    for (const c of this.cleanups) c();
    this.cleanups = [];
    this.listeners.clear();
  }
}
