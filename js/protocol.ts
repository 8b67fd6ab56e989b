// The one protocol file on the JS side: message kinds, array encodings and the
// request channel (ids, superseding, stale replies, timeouts).
//
// The Python side of the same protocol is finwidget/widgets/protocol.py.
//
// Requests (JS -> Python), custom messages:
//   { kind: <RequestKind>, id: number, ...params }
// Replies (Python -> JS):
//   { kind: "reply", id, request: <RequestKind>, ok: true, ...result, arrays: {name: ArraySpec} }
//   { kind: "reply", id, request: <RequestKind>, ok: false, error: string }
//   { kind: "progress", id, done: number, total: number, message?: string }
// Binary arrays travel as message buffers; an ArraySpec says how to read buffer `buffer`:
//   encoding "f16": IEEE half floats, little endian
//   encoding "f32": IEEE single floats, little endian
//   encoding "u8":  value = offset + byte * scale
//   encoding "u8sqrt": value = max * (byte / 255)^2 (non-negative data such as attention:
//         small values keep their precision next to a large one)
//   tril: true -> a square [n, n] matrix whose upper triangle (column > row) is zero,
//         stored as its lower triangle row by row: row i holds columns 0..i.

export const PROTOCOL_VERSION = 1;

export type RequestKind =
  | "head_matrix"
  | "token_values"
  | "grid"
  | "flow"
  | "set_ablations"
  | "sweep"
  | "cancel_sweep"
  | "estimate_ablations"
  | "png"
  | "circuit"
  | "what_if"
  | "undo_what_if";

export type Encoding = "f16" | "f32" | "u8" | "u8sqrt";

export interface ArraySpec {
  encoding: Encoding;
  shape: number[];
  buffer: number;
  tril?: boolean;
  scale?: number;
  offset?: number;
  max?: number; // "u8sqrt"
}

export interface Reply {
  kind: "reply";
  id: number;
  request: RequestKind;
  ok: boolean;
  error?: string;
  arrays?: Record<string, ArraySpec>;
  [key: string]: unknown;
}

export interface Progress {
  kind: "progress";
  id: number;
  done: number;
  total: number;
  message?: string;
}

export type BufferLike = DataView | ArrayBuffer | ArrayBufferView;

/** Bytes of a buffer as a Uint8Array view (no copy), honouring byteOffset/byteLength. */
export function bytesOf(buf: BufferLike): Uint8Array {
  if (buf instanceof ArrayBuffer) return new Uint8Array(buf);
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

// ---------------------------------------------------------------- float16
let halfTable: Float32Array | null = null;

/** Value of one IEEE 754 half-precision number given as its 16 bits. */
export function halfToFloat(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 0x1f) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

function table(): Float32Array {
  if (halfTable === null) {
    halfTable = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) halfTable[i] = halfToFloat(i);
  }
  return halfTable;
}

/** Little-endian float16 bytes -> Float32Array. */
export function decodeFloat16(buf: BufferLike): Float32Array {
  const bytes = bytesOf(buf);
  if (bytes.byteLength % 2 !== 0) throw new Error(`float16 buffer has an odd byte length ${bytes.byteLength}`);
  const n = bytes.byteLength / 2;
  const out = new Float32Array(n);
  const t = table();
  for (let i = 0; i < n; i++) out[i] = t[bytes[2 * i] | (bytes[2 * i + 1] << 8)];
  return out;
}

/** Little-endian float32 bytes -> Float32Array (copied, so alignment never matters). */
export function decodeFloat32(buf: BufferLike): Float32Array {
  const bytes = bytesOf(buf);
  if (bytes.byteLength % 4 !== 0) throw new Error(`float32 buffer has byte length ${bytes.byteLength}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(bytes.byteLength / 4);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true);
  return out;
}

/** uint8 bytes quantized with `value = offset + byte * scale` -> Float32Array. */
export function decodeUint8(buf: BufferLike, scale: number, offset = 0): Float32Array {
  const bytes = bytesOf(buf);
  const out = new Float32Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) out[i] = offset + bytes[i] * scale;
  return out;
}

/** Number of stored values of an n x n lower triangle (diagonal included). */
export function trilLength(n: number): number {
  return (n * (n + 1)) / 2;
}

/** Index in the packed lower triangle of cell (row, col), col <= row. */
export function trilIndex(row: number, col: number): number {
  return (row * (row + 1)) / 2 + col;
}

/** Packed lower triangle (row by row) -> dense row-major n x n array, zeros above the diagonal. */
export function unpackLowerTriangle<T extends Float32Array | Uint8Array>(packed: T, n: number): T {
  if (packed.length !== trilLength(n)) {
    throw new Error(`lower triangle of ${n} x ${n} needs ${trilLength(n)} values, got ${packed.length}`);
  }
  const Ctor = packed.constructor as { new (len: number): T };
  const out = new Ctor(n * n);
  let k = 0;
  for (let row = 0; row < n; row++) {
    out.set(packed.subarray(k, k + row + 1), row * n);
    k += row + 1;
  }
  return out;
}

function expectedLength(spec: ArraySpec): number {
  if (spec.tril) {
    if (spec.shape.length !== 2 || spec.shape[0] !== spec.shape[1]) {
      throw new Error(`a lower-triangle array must be square, got shape [${spec.shape.join(", ")}]`);
    }
    return trilLength(spec.shape[0]);
  }
  return spec.shape.reduce((a, b) => a * b, 1);
}

/** Decode one array of a reply into a dense Float32Array of `spec.shape` (row-major). */
export function decodeArray(spec: ArraySpec, buffers: BufferLike[]): Float32Array {
  const buf = buffers[spec.buffer];
  if (buf === undefined) throw new Error(`reply refers to buffer ${spec.buffer}, but only ${buffers.length} arrived`);
  let flat: Float32Array;
  if (spec.encoding === "f16") flat = decodeFloat16(buf);
  else if (spec.encoding === "f32") flat = decodeFloat32(buf);
  else if (spec.encoding === "u8") flat = decodeUint8(buf, spec.scale ?? 1, spec.offset ?? 0);
  else if (spec.encoding === "u8sqrt") {
    const table = sqrtTable(spec.max ?? 1);
    const bytes = bytesOf(buf);
    flat = new Float32Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) flat[i] = table[bytes[i]];
  }
  else throw new Error(`unknown array encoding ${String((spec as ArraySpec).encoding)}`);
  const want = expectedLength(spec);
  if (flat.length !== want) throw new Error(`array of shape [${spec.shape.join(", ")}] needs ${want} values, got ${flat.length}`);
  return spec.tril ? unpackLowerTriangle(flat, spec.shape[0]) : flat;
}

/**
 * A square matrix kept as quantized bytes (what the matrix view draws): the value of a cell
 * is `table[byte]`. `packed`: bytes hold only the lower triangle, row by row
 * (n (n + 1) / 2 bytes, zero above the diagonal); otherwise they are dense row-major n x n.
 */
export interface QuantizedMatrix {
  n: number;
  bytes: Uint8Array;
  table: Float32Array; // [256] value of each byte
  packed?: boolean;
}

/** Byte values of linear quantization: offset + byte * scale. */
export function linearTable(scale: number, offset = 0): Float32Array {
  const t = new Float32Array(256);
  for (let b = 0; b < 256; b++) t[b] = offset + b * scale;
  return t;
}

/** Byte values of square-root quantization: max * (byte / 255)^2. */
export function sqrtTable(max: number): Float32Array {
  const t = new Float32Array(256);
  for (let b = 0; b < 256; b++) t[b] = max * (b / 255) ** 2;
  return t;
}

/** Non-negative floats -> square-root quantized bytes and their table (as Python's quantize_sqrt_u8). */
export function quantizeSqrt(values: ArrayLike<number>): { bytes: Uint8Array; table: Float32Array } {
  let top = 0;
  for (let i = 0; i < values.length; i++) if (values[i] > top) top = values[i];
  const bytes = new Uint8Array(values.length);
  if (top > 0) for (let i = 0; i < values.length; i++) bytes[i] = Math.round(Math.sqrt(Math.max(0, values[i]) / top) * 255);
  return { bytes, table: sqrtTable(top > 0 ? top : 1) };
}

/** Index of row `row`'s first byte in a matrix's bytes. */
export function rowStart(m: QuantizedMatrix, row: number): number {
  return m.packed ? (row * (row + 1)) / 2 : row * m.n;
}

/** The byte of cell (row, col) (0 above the diagonal of a packed matrix). */
export function matrixByte(m: QuantizedMatrix, row: number, col: number): number {
  if (m.packed && col > row) return 0;
  return m.bytes[rowStart(m, row) + col];
}

/** Decode a square matrix into bytes + scale without expanding to floats or to a full
 * square: a u8 lower triangle is kept as it arrived (cheap at T = 4096). */
export function decodeQuantizedMatrix(spec: ArraySpec, buffers: BufferLike[]): QuantizedMatrix {
  const n = spec.shape[0];
  if (spec.shape.length !== 2 || spec.shape[1] !== n) throw new Error("matrix must be square");
  if (spec.encoding === "u8" || spec.encoding === "u8sqrt") {
    const buf = buffers[spec.buffer];
    if (buf === undefined) throw new Error(`reply refers to missing buffer ${spec.buffer}`);
    const bytes = bytesOf(buf);
    const want = spec.tril ? trilLength(n) : n * n;
    if (bytes.length !== want) throw new Error(`matrix of ${n} x ${n} needs ${want} values, got ${bytes.length}`);
    const table = spec.encoding === "u8sqrt" ? sqrtTable(spec.max ?? 1) : linearTable(spec.scale ?? 1, spec.offset ?? 0);
    return { n, bytes, table, packed: !!spec.tril };
  }
  const dense = decodeArray(spec, buffers);
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of dense) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (!Number.isFinite(lo)) {
    lo = 0;
    hi = 0;
  }
  const scale = hi > lo ? (hi - lo) / 255 : 1;
  const bytes = new Uint8Array(dense.length);
  for (let i = 0; i < dense.length; i++) bytes[i] = Math.round((dense[i] - lo) / scale);
  return { n, bytes, table: linearTable(scale, lo) };
}

// ---------------------------------------------------------------- request keys
/** JSON with object keys sorted, no spaces: the same text as Python's
 * json.dumps(obj, sort_keys=True, separators=(",", ":")) for ints, strings, lists, dicts. */
export function canonicalJSON(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJSON).join(",")}]`;
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj).filter((k) => obj[k] !== undefined).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJSON(obj[k])}`).join(",")}}`;
}

/** The key of a request without its id: equal requests get equal keys on both sides
 * (used to look up precomputed replies in an exported page). */
export function requestKey(msg: Record<string, unknown>): string {
  const rest: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(msg)) if (k !== "id") rest[k] = v;
  return canonicalJSON(rest);
}

// ---------------------------------------------------------------- request channel
export type Outcome =
  | { status: "ok"; reply: Reply; buffers: BufferLike[] }
  | { status: "error"; error: string }
  | { status: "stale" };

export interface ChannelStatus {
  busy: boolean; // some request is waiting for its reply
  slow: boolean; // some request has waited longer than the timeout
  message: string; // for the status line; "" when all is well
}

interface Pending {
  lane: string;
  kind: RequestKind;
  resolve: (o: Outcome) => void;
  onProgress?: (p: Progress) => void;
  timer: ReturnType<typeof setTimeout> | null;
  slow: boolean;
}

export interface ChannelOptions {
  timeoutMs: number;
  setTimer?: (fn: () => void, ms: number) => ReturnType<typeof setTimeout>;
  clearTimer?: (t: ReturnType<typeof setTimeout>) => void;
}

/**
 * Sends requests with ids and routes replies back to them.
 *
 * Each request belongs to a lane (e.g. "matrix", "grid", "ablation"). A newer request in
 * a lane supersedes the older ones: their replies resolve as "stale" and are never shown.
 * A request that gets no reply within `timeoutMs` marks the channel slow (the UI says the
 * kernel may be busy or gone) but keeps waiting: a late reply is still used if it is the
 * newest in its lane.
 */
export class RequestChannel {
  // Ids are unique across channels: every view of a widget model (and every store a
  // front end makes for it) sees every reply, so counters starting at 1 would collide.
  private nextId = Math.floor(Math.random() * 2 ** 20) * 2 ** 20 + 1;
  private pending = new Map<number, Pending>();
  private latest = new Map<string, number>();
  private listeners = new Set<(s: ChannelStatus) => void>();
  private lastError = "";
  timeoutMs: number;
  private setTimer: NonNullable<ChannelOptions["setTimer"]>;
  private clearTimer: NonNullable<ChannelOptions["clearTimer"]>;

  constructor(
    private readonly send: (msg: Record<string, unknown>, buffers?: ArrayBuffer[]) => void,
    options: ChannelOptions,
  ) {
    this.timeoutMs = options.timeoutMs;
    this.setTimer = options.setTimer ?? ((fn, ms) => setTimeout(fn, ms));
    this.clearTimer = options.clearTimer ?? ((t) => clearTimeout(t));
  }

  request(
    lane: string,
    kind: RequestKind,
    params: Record<string, unknown>,
    onProgress?: (p: Progress) => void,
  ): Promise<Outcome> {
    const id = this.nextId++;
    const older = this.latest.get(lane);
    this.latest.set(lane, id);
    if (older !== undefined) this.finish(older, { status: "stale" });
    return new Promise<Outcome>((resolve) => {
      const entry: Pending = { lane, kind, resolve, onProgress, timer: null, slow: false };
      this.pending.set(id, entry);
      entry.timer = this.setTimer(() => {
        entry.slow = true;
        entry.timer = null;
        this.emit();
      }, this.timeoutMs);
      try {
        this.send({ ...params, kind, id });
        this.lastError = "";
      } catch (err) {
        this.lastError = `cannot reach the kernel: ${err instanceof Error ? err.message : String(err)}`;
        this.finish(id, { status: "error", error: this.lastError });
        return;
      }
      this.emit();
    });
  }

  /** Feed every incoming custom message here; returns true when it belonged to the channel. */
  handle(msg: unknown, buffers: BufferLike[] = []): boolean {
    if (msg === null || typeof msg !== "object") return false;
    const m = msg as Record<string, unknown>;
    if (typeof m.id !== "number") return false;
    const entry = this.pending.get(m.id);
    if (m.kind === "progress") {
      if (entry && this.latest.get(entry.lane) === m.id) {
        // The kernel is alive and working on it: restart the wait.
        if (entry.timer !== null) this.clearTimer(entry.timer);
        const wasSlow = entry.slow;
        entry.slow = false;
        entry.timer = this.setTimer(() => {
          entry.slow = true;
          entry.timer = null;
          this.emit();
        }, this.timeoutMs);
        entry.onProgress?.(m as unknown as Progress);
        if (wasSlow) this.emit();
      }
      return true;
    }
    if (m.kind !== "reply") return false;
    if (!entry) return true; // superseded earlier, or a duplicate: never shown
    if (this.latest.get(entry.lane) !== m.id) {
      this.finish(m.id, { status: "stale" });
      return true;
    }
    const reply = m as unknown as Reply;
    if (reply.ok) {
      this.lastError = "";
      this.finish(m.id, { status: "ok", reply, buffers });
    } else {
      this.lastError = String(reply.error ?? "the kernel answered with an error");
      this.finish(m.id, { status: "error", error: this.lastError });
    }
    return true;
  }

  /** Drop every pending request (e.g. when the view is torn down). */
  cancelAll(): void {
    for (const id of [...this.pending.keys()]) this.finish(id, { status: "stale" });
  }

  isLatest(lane: string, id: number): boolean {
    return this.latest.get(lane) === id;
  }

  get status(): ChannelStatus {
    let slow = false;
    for (const p of this.pending.values()) if (p.slow) slow = true;
    const busy = this.pending.size > 0;
    let message = this.lastError;
    if (slow) {
      message =
        `No reply from the kernel after ${(this.timeoutMs / 1000).toFixed(0)} s: ` +
        "it may be busy running a cell, or gone (restart it and re-run the cell). Still waiting.";
    }
    return { busy, slow, message };
  }

  onStatus(fn: (s: ChannelStatus) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private finish(id: number, outcome: Outcome): void {
    const entry = this.pending.get(id);
    if (!entry) return;
    this.pending.delete(id);
    if (entry.timer !== null) this.clearTimer(entry.timer);
    entry.resolve(outcome);
    this.emit();
  }

  private emit(): void {
    const s = this.status;
    for (const fn of this.listeners) fn(s);
  }
}

// ---------------------------------------------------------------- synced state (traitlets)
// Small state lives in traitlets of the Python widget (saved with the notebook);
// these are their names and shapes.

export type SpanKind = "number" | "year" | "word" | "line_item_name" | "punct" | string;

export interface SpanRecord {
  index: number;
  kind: SpanKind;
  text: string;
  char_start: number;
  char_end: number;
  token_start: number; // half-open token range in the prompt
  token_end: number;
  line: number;
  category: string | null;
  value: number | null;
  year: number | null;
  line_item: string | null;
  in_statement?: boolean; // false for what the prompt template added (question, "Answer:")
}

export interface LineItemRecord {
  name: string;
  line: number;
  name_span: number | null;
  number_spans: number[];
  category: string | null;
}

export interface LayoutState {
  text: string; // the statement as written (spans index into it)
  tokens: string[]; // token text of the prompt, [T]
  token_to_span: number[]; // [T], -1 outside the statement
  spans: SpanRecord[];
  lines: [number, number, number][]; // (line, char_start, char_end)
  line_items: LineItemRecord[];
  answer_position: number;
}

export interface GeometryState {
  num_layers: number;
  num_heads: number;
  num_kv_heads: number;
  head_dim: number;
  seq_len: number;
  model_name: string;
}

export interface Focus {
  layer: number;
  head: number;
}

/** A half-open range of span indices; `{}` (no start) means no selection. */
export interface Selection {
  start?: number;
  end?: number;
}

export type Direction = "from" | "to";
/** The name of a grid measure (the catalogue's `measures` hold them). */
export type GridMeasure = string;
/** The name of an intervention mode (the catalogue's `modes` hold them). */
export type AblationMode = string;

export interface Ablation {
  layer: number;
  head: number;
  mode: AblationMode;
  value?: number; // only for a mode that takes a value
}

export interface PredictionValue {
  logit_diff: number;
  p_increase: number;
  label: string;
  n_tokens: number;
}

export interface PredictionState {
  clean?: PredictionValue;
  ablated?: PredictionValue | null;
  flipped?: boolean;
  /** Set on an estimate_ablations reply: how `ablated` was estimated (null: it is exact). */
  estimate?: ClickEstimate | null;
}

/** How a click's first-order estimate was made (Python's ModelSession.estimate). */
export interface ClickEstimate {
  method: string;
  base: Ablation[]; // the set whose exact answer the estimate starts from
  base_logit_diff: number;
  heads_estimated: number;
}

export type StatementHeads = "focus" | "layer" | "range";
export type MatrixAggregate = "tokens" | "spans" | "line_items";

export interface Settings {
  statement_heads: StatementHeads;
  matrix_aggregate: MatrixAggregate;
  ablate_mode: AblationMode;
  scale_value: number;
  reply_timeout_ms: number;
}

/** The name of a view (the catalogue's `views` hold them). */
export type ViewName = string;

// ---------------------------------------------------------------- start-up catalogue
// Python sends the lists of modes, grid measures and views as data (the `catalogue`
// trait, finwidget.widgets.protocol.startup_catalogue); the frontend keeps no copy.

export interface ModeInfo {
  name: string;
  takes_value: boolean;
  default_value: number | null;
  needs_reference: boolean;
  needs_source: boolean;
  summary: string;
  value_symbol: string; // written before the value ("×" -> "scale ×2")
  disabled_reason: string; // "" when the explorer can apply the mode, else why not
}

/** The set "mean" ablation averages each head's output over (named in the UI). */
export interface ReferenceInfo {
  available: boolean;
  name: string;
  disabled_reason: string;
}

export interface MeasureInfo {
  name: string;
  label: string;
  unit: string;
  description: string;
  direction: "more" | "signed"; // "more": larger is darker; "signed": diverging around 0
  uses_selection: boolean;
  follows_direction: boolean; // the direction switch ("from" / "to") changes its value
  needs: "attention" | "model" | "sweep";
}

export interface ViewInfo {
  name: string;
  label: string;
  lane: string; // the request lane whose data it draws
  column: "left" | "right";
}

export interface Catalogue {
  modes: ModeInfo[];
  measures: MeasureInfo[];
  views: ViewInfo[];
  reference: ReferenceInfo;
}

export function modeInfo(c: Catalogue, name: string): ModeInfo | undefined {
  return c.modes.find((m) => m.name === name);
}

export function measureInfo(c: Catalogue, name: string): MeasureInfo | undefined {
  return c.measures.find((m) => m.name === name);
}

export interface ExplorerTraits {
  [key: string]: unknown;
  statement_layout: LayoutState;
  geometry: GeometryState;
  catalogue: Catalogue;
  focus: Focus;
  selection: Selection;
  direction: Direction;
  grid_measure: GridMeasure;
  layer_range: number[]; // [] or [first, last] inclusive
  ablations: Ablation[];
  settings: Settings;
  prediction: PredictionState;
  views: ViewName[];
  sweep_done: boolean;
  attention_run: AttentionRun;
  statements: StatementEntry[];
  statement_index: number;
  what_if_state?: WhatIfState;
  what_if_difference?: boolean;
}

/** One number a what-if set ("Net income 2012: 195 → -100"). */
export interface WhatIfEdit {
  description: string;
  what: string;
  old: string;
  new: string;
  step: number;
}

/** A span of the statement shown whose text differs from the original's. */
export interface WhatIfChange {
  span: number;
  what: string;
  old: string;
  new: string;
}

/** The `what_if_state` trait (finwidget.widgets.what_if.WhatIfStack.state): whether a
 * what-if can be tried (and why not), and with edits both predictions. */
export interface WhatIfState {
  available?: boolean;
  disabled_reason?: string;
  steps?: number;
  edits?: WhatIfEdit[];
  changes?: WhatIfChange[];
  changed_spans?: number[];
  original?: PredictionValue;
  edited?: PredictionValue;
  flipped?: boolean;
  logit_diff_change?: number;
  original_text?: string;
}

/** Whether a what-if is shown (the statement view shows the edited statement). */
export function whatIfActive(t: Pick<ExplorerTraits, "what_if_state">): boolean {
  return !!t.what_if_state?.edits?.length;
}

/** The requests with the difference colouring of a what-if (Python's `what_if_requests`):
 * the grid asks for `what_if: "difference"`, the statement for the difference of the
 * attention from the answer position (no selection, no run). */
export function whatIfRequests(t: ExplorerTraits, planned: PlannedRequest[]): PlannedRequest[] {
  if (!t.what_if_difference || !whatIfActive(t)) return planned;
  return planned.map((plan) => {
    if (plan.kind === "grid") return { ...plan, params: { ...plan.params, what_if: "difference" } };
    if (plan.kind !== "token_values") return plan;
    const params: Record<string, unknown> = { ...plan.params, selection: [], direction: "from", what_if: "difference" };
    delete params.run;
    delete params.ablations;
    return { ...plan, params };
  });
}

/** Which run the attention views (statement, matrix, flow) show. */
export type AttentionRun = "clean" | "ablated" | "difference";
export const ATTENTION_RUNS: AttentionRun[] = ["clean", "ablated", "difference"];

/** One statement of an explorer that holds several (the picker's entries). */
export interface StatementEntry {
  index: number;
  label: string;
}

// ---------------------------------------------------------------- state -> requests
export interface PlannedRequest {
  lane: "matrix" | "tokens" | "grid" | "flow" | "circuit";
  kind: RequestKind;
  params: Record<string, unknown>;
}

/** The selection as a request param: `[start, end]`, or `[]` for none. */
export function selectionParam(sel: Selection | null | undefined): number[] {
  return sel && typeof sel.start === "number" && typeof sel.end === "number" && sel.end > sel.start ? [sel.start, sel.end] : [];
}

/**
 * The data requests the views need for a state. Python's `requests_for_state`
 * (finwidget/widgets/protocol.py) mirrors this function exactly: an exported page
 * embeds the replies under these requests' keys.
 */
export function requestsForState(t: ExplorerTraits): PlannedRequest[] {
  const views = new Set(t.views);
  const out: PlannedRequest[] = [];
  const selection = selectionParam(t.selection);
  const L = t.geometry.num_layers;
  const run = t.attention_run ?? "clean";
  const runParams: Record<string, unknown> = run === "clean" ? {} : { run, ablations: t.ablations ?? [] };
  if (views.has("matrix")) {
    out.push({ lane: "matrix", kind: "head_matrix", params: { layer: t.focus.layer, head: t.focus.head, ...runParams } });
  }
  if (views.has("statement")) {
    const scope = t.settings.statement_heads;
    const params: Record<string, unknown> = { scope, selection, direction: t.direction };
    if (scope === "focus") Object.assign(params, { layer: t.focus.layer, head: t.focus.head });
    else if (scope === "layer") params.layer = t.focus.layer;
    else params.layer_range = t.layer_range.length === 2 ? t.layer_range : [0, L - 1];
    Object.assign(params, runParams);
    out.push({ lane: "tokens", kind: "token_values", params });
  }
  if (views.has("grid")) {
    const params: Record<string, unknown> = { measure: t.grid_measure };
    const info = measureInfo(t.catalogue, t.grid_measure);
    if (info?.uses_selection) params.selection = selection;
    if (info?.follows_direction) params.direction = t.direction;
    out.push({ lane: "grid", kind: "grid", params });
  }
  if (views.has("flow")) {
    out.push({ lane: "flow", kind: "flow", params: { selection, direction: t.direction, ...runParams } });
  }
  if (views.has("circuit")) {
    // The clean run's circuit, first-order (the view's "exact" button asks for path patching).
    out.push({ lane: "circuit", kind: "circuit", params: { method: "attribution" } });
  }
  return whatIfRequests(t, out);
}
