import { describe, expect, it } from "vitest";
import {
  canonicalJSON,
  decodeArray,
  decodeFloat16,
  decodeQuantizedMatrix,
  decodeUint8,
  halfToFloat,
  matrixByte,
  quantizeSqrt,
  requestKey,
  RequestChannel,
  trilIndex,
  trilLength,
  unpackLowerTriangle,
} from "../protocol";

/** Float -> IEEE half bits (round to nearest even), written independently of the decoder. */
function floatToHalf(v: number): number {
  const f32 = new Float32Array([v]);
  const bits = new Uint32Array(f32.buffer)[0];
  const sign = (bits >>> 16) & 0x8000;
  const exp = ((bits >>> 23) & 0xff) - 127 + 15;
  const mant = bits & 0x7fffff;
  if (exp >= 0x1f) return sign | 0x7c00;
  if (exp <= 0) {
    if (exp < -10) return sign;
    const m = (mant | 0x800000) >> (1 - exp + 13);
    return sign | m;
  }
  let half = sign | (exp << 10) | (mant >> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && half & 1)) half += 1;
  return half;
}

describe("float16 decoding", () => {
  it("reads the special and boundary values of IEEE half precision", () => {
    expect(halfToFloat(0x3c00)).toBe(1);
    expect(halfToFloat(0xc000)).toBe(-2);
    expect(halfToFloat(0x7bff)).toBe(65504);
    expect(halfToFloat(0x0001)).toBe(2 ** -24);
    expect(halfToFloat(0x0400)).toBe(2 ** -14);
    expect(halfToFloat(0x8000)).toBe(-0);
    expect(halfToFloat(0x7c00)).toBe(Infinity);
    expect(halfToFloat(0xfc00)).toBe(-Infinity);
    expect(Number.isNaN(halfToFloat(0x7e00))).toBe(true);
  });

  it("round-trips values through an independent encoder within half precision", () => {
    const values = [0, 0.5, 0.1, 0.333, 1e-3, 7.25, -12.5, 1000.5];
    const bytes = new Uint8Array(values.length * 2);
    values.forEach((v, i) => {
      const h = floatToHalf(v);
      bytes[2 * i] = h & 0xff;
      bytes[2 * i + 1] = h >> 8;
    });
    const out = decodeFloat16(bytes);
    values.forEach((v, i) => expect(Math.abs(out[i] - v)).toBeLessThanOrEqual(Math.abs(v) * 2 ** -11 + 1e-7));
  });

  it("honours byteOffset and byteLength of a DataView into a bigger buffer", () => {
    const backing = new Uint8Array(10);
    const h = floatToHalf(3.5);
    backing[4] = h & 0xff;
    backing[5] = h >> 8;
    const view = new DataView(backing.buffer, 4, 2);
    expect(Array.from(decodeFloat16(view))).toEqual([3.5]);
    expect(() => decodeFloat16(new DataView(backing.buffer, 0, 3))).toThrow(/odd byte length/);
  });
});

describe("uint8 quantization and lower triangles", () => {
  it("maps bytes to offset + byte * scale", () => {
    const out = decodeUint8(new Uint8Array([0, 1, 255]), 0.5, -1);
    expect(Array.from(out)).toEqual([-1, -0.5, 126.5]);
  });

  it("packs row by row: row i holds columns 0..i", () => {
    expect(trilLength(4)).toBe(10);
    expect(trilIndex(0, 0)).toBe(0);
    expect(trilIndex(2, 1)).toBe(4);
    expect(trilIndex(3, 3)).toBe(9);
    const packed = new Float32Array([1, 2, 3, 4, 5, 6]);
    expect(Array.from(unpackLowerTriangle(packed, 3))).toEqual([1, 0, 0, 2, 3, 0, 4, 5, 6]);
    expect(() => unpackLowerTriangle(new Float32Array(5), 3)).toThrow(/needs 6 values/);
  });

  it("decodes square-root bytes: max * (byte / 255)^2, small values kept", () => {
    const bytes = new Uint8Array([0, 8, 128, 255]);
    const out = decodeArray({ encoding: "u8sqrt", shape: [4], max: 0.8, buffer: 0 }, [bytes]);
    [0, 8, 128, 255].forEach((b, i) => expect(out[i]).toBeCloseTo(0.8 * (b / 255) ** 2, 6));
    // 0.001 next to a max of 1 survives (linear bytes would round it to 0).
    const q = quantizeSqrt([1, 0.001, 0]);
    expect(q.table[q.bytes[1]]).toBeGreaterThan(0.0008);
    expect(q.table[q.bytes[1]]).toBeLessThan(0.0012);
    const m = decodeQuantizedMatrix({ encoding: "u8sqrt", shape: [2, 2], tril: true, max: 2, buffer: 0 }, [new Uint8Array([255, 0, 128])]);
    expect(m.table[matrixByte(m, 0, 0)]).toBe(2);
    expect(m.table[matrixByte(m, 1, 1)]).toBeCloseTo(2 * (128 / 255) ** 2, 6);
  });

  it("decodes a u8 lower-triangle array spec into a dense matrix", () => {
    const packed = new Uint8Array([255, 0, 255, 51, 102, 153]);
    const dense = decodeArray({ encoding: "u8", shape: [3, 3], tril: true, scale: 1 / 255, offset: 0, buffer: 1 }, [
      new DataView(new ArrayBuffer(0)),
      new DataView(packed.buffer),
    ]);
    const expected = [1, 0, 0, 0, 1, 0, 0.2, 0.4, 0.6];
    expected.forEach((v, i) => expect(dense[i]).toBeCloseTo(v, 6));
  });

  it("keeps a u8 lower triangle as it arrived (no float expansion, no square) and rejects bad shapes", () => {
    const m = decodeQuantizedMatrix({ encoding: "u8", shape: [2, 2], tril: true, scale: 0.5, offset: 0, buffer: 0 }, [
      new Uint8Array([2, 4, 6]),
    ]);
    expect(m.packed).toBe(true);
    expect([matrixByte(m, 0, 0), matrixByte(m, 0, 1), matrixByte(m, 1, 0), matrixByte(m, 1, 1)]).toEqual([2, 0, 4, 6]);
    expect(m.table[4]).toBe(2);
    expect(() =>
      decodeQuantizedMatrix({ encoding: "u8", shape: [3, 3], tril: true, scale: 1, buffer: 0 }, [new Uint8Array(5)]),
    ).toThrow(/needs 6 values/);
    expect(() => decodeArray({ encoding: "f32", shape: [3], buffer: 0 }, [new Float32Array(2)])).toThrow(/needs 3 values/);
    expect(() => decodeArray({ encoding: "f32", shape: [3], buffer: 2 }, [])).toThrow(/buffer 2/);
  });
});

describe("request keys", () => {
  it("are canonical JSON: sorted keys, no spaces, id left out (same text as Python's json.dumps)", () => {
    const key = requestKey({ selection: [3, 5], kind: "grid", id: 17, measure: "entropy" });
    // tests/test_widget_protocol.py checks Python's request_key gives this same text.
    expect(key).toBe('{"kind":"grid","measure":"entropy","selection":[3,5]}');
    expect(canonicalJSON({ b: { d: 1, c: "é" }, a: [] })).toBe('{"a":[],"b":{"c":"é","d":1}}');
  });
});

describe("RequestChannel", () => {
  function setup(timeoutMs = 1000) {
    const sent: Record<string, unknown>[] = [];
    const timers: { fn: () => void; ms: number; cleared: boolean }[] = [];
    const channel = new RequestChannel((m) => sent.push(m), {
      timeoutMs,
      setTimer: (fn, ms) => {
        timers.push({ fn, ms, cleared: false });
        return (timers.length - 1) as unknown as ReturnType<typeof setTimeout>;
      },
      clearTimer: (t) => {
        timers[t as unknown as number].cleared = true;
      },
    });
    return { sent, timers, channel };
  }
  const reply = (id: number, extra: Record<string, unknown> = {}) => ({ kind: "reply", id, request: "grid", ok: true, ...extra });

  it("gives each request an id (unique across channels) and resolves it with the matching reply", async () => {
    const { sent, channel } = setup();
    const p = channel.request("grid", "grid", { measure: "entropy" });
    expect(sent[0]).toMatchObject({ kind: "grid", measure: "entropy" });
    const id = sent[0].id as number;
    expect(Number.isSafeInteger(id) && id > 0).toBe(true);
    channel.handle(reply(id + 1), []); // not ours
    expect(channel.status.busy).toBe(true);
    channel.handle(reply(id, { label: "x" }), []);
    const out = await p;
    const other = setup();
    void other.channel.request("grid", "grid", {});
    expect(other.sent[0].id).not.toBe(id);
    expect(out.status).toBe("ok");
    expect(channel.status.busy).toBe(false);
  });

  it("never shows a stale reply: a newer request in the lane supersedes the older", async () => {
    const { channel, sent } = setup();
    const first = channel.request("matrix", "head_matrix", { layer: 0, head: 0 });
    const second = channel.request("matrix", "head_matrix", { layer: 0, head: 1 });
    expect((await first).status).toBe("stale");
    // The old reply arrives after the newer request was sent: dropped.
    channel.handle(reply(sent[0].id as number), []);
    expect(channel.status.busy).toBe(true);
    channel.handle(reply(sent[1].id as number, { head: 1 }), []);
    const out = await second;
    expect(out.status === "ok" && out.reply.head).toBe(1);
  });

  it("keeps lanes independent", async () => {
    const { channel, sent } = setup();
    const a = channel.request("grid", "grid", {});
    const b = channel.request("flow", "flow", {});
    channel.handle(reply(sent[1].id as number), []);
    channel.handle(reply(sent[0].id as number), []);
    expect((await a).status).toBe("ok");
    expect((await b).status).toBe("ok");
  });

  it("says the kernel may be busy or gone after the timeout, and still accepts a late reply", async () => {
    const { channel, timers, sent } = setup(5000);
    const statuses: string[] = [];
    channel.onStatus((s) => statuses.push(s.message));
    const p = channel.request("ablation", "set_ablations", { ablations: [] });
    expect(timers[0].ms).toBe(5000);
    timers[0].fn();
    expect(channel.status.slow).toBe(true);
    expect(channel.status.message).toMatch(/No reply from the kernel after 5 s/);
    channel.handle(reply(sent[0].id as number), []);
    expect((await p).status).toBe("ok");
    expect(channel.status.slow).toBe(false);
    expect(channel.status.message).toBe("");
    expect(statuses.some((m) => m.includes("busy"))).toBe(true);
  });

  it("turns an error reply or an unreachable kernel into an error outcome", async () => {
    const { channel, sent } = setup();
    const p = channel.request("grid", "grid", {});
    channel.handle({ kind: "reply", id: sent[0].id, request: "grid", ok: false, error: "bad request: layer 99" }, []);
    const out = await p;
    expect(out.status === "error" && out.error).toBe("bad request: layer 99");
    const broken = new RequestChannel(() => {
      throw new Error("comm closed");
    }, { timeoutMs: 10 });
    const gone = await broken.request("grid", "grid", {});
    expect(gone.status === "error" && gone.error).toMatch(/cannot reach the kernel: comm closed/);
    expect(broken.status.busy).toBe(false);
  });

  it("routes progress only to the newest request of its lane", async () => {
    const { channel, sent } = setup();
    const seen: number[] = [];
    void channel.request("sweep", "sweep", {}, (p) => seen.push(p.done));
    expect(channel.handle({ kind: "progress", id: sent[0].id, done: 3, total: 10 })).toBe(true);
    void channel.request("sweep", "sweep", {}, (p) => seen.push(100 + p.done));
    channel.handle({ kind: "progress", id: sent[0].id, done: 4, total: 10 });
    channel.handle({ kind: "progress", id: sent[1].id, done: 5, total: 10 });
    expect(seen).toEqual([3, 105]);
  });

  it("progress from the kernel restarts the wait, so a long sweep is not reported as a dead kernel", async () => {
    const { channel, sent, timers } = setup(1000);
    void channel.request("sweep", "sweep", {});
    timers[0].fn();
    expect(channel.status.slow).toBe(true);
    channel.handle({ kind: "progress", id: sent[0].id, done: 1, total: 10 });
    expect(channel.status.slow).toBe(false);
    expect(timers.length).toBe(2);
    timers[1].fn();
    expect(channel.status.slow).toBe(true);
    expect(channel.handle({ something: "else" })).toBe(false);
  });
});
