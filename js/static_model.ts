// A stand-in for the anywidget model in an exported page (no kernel): traits live in
// memory, and requests are answered from the replies embedded in the page, keyed by
// requestKey. Anything not embedded gets an error reply that says why.

import type { AnyModel } from "@anywidget/types";
import { requestKey, type BufferLike, type ExplorerTraits, type Reply } from "./protocol";

export interface EmbeddedReply {
  key: string;
  reply: Reply;
  buffers: string[]; // base64
}

export interface EmbeddedState {
  traits: ExplorerTraits;
  replies: EmbeddedReply[];
}

export function base64ToBytes(b64: string): Uint8Array {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

type Handler = (...args: unknown[]) => void;

export function staticModel(state: EmbeddedState): AnyModel<ExplorerTraits> {
  const traits: Record<string, unknown> = { ...state.traits };
  const handlers = new Map<string, Set<Handler>>();
  const table = new Map<string, { reply: Reply; buffers: BufferLike[] }>();
  for (const r of state.replies) table.set(r.key, { reply: r.reply, buffers: r.buffers.map((b) => new DataView(base64ToBytes(b).buffer)) });
  const fire = (name: string, ...args: unknown[]) => {
    for (const h of handlers.get(name) ?? []) h(...args);
  };
  const model = {
    get: (key: string) => traits[key],
    set: (key: string, value: unknown) => {
      traits[key] = value;
      fire(`change:${key}`);
    },
    on: (name: string, fn: Handler) => {
      let set = handlers.get(name);
      if (!set) handlers.set(name, (set = new Set()));
      set.add(fn);
    },
    off: (name?: string | null, fn?: Handler | null) => {
      if (!name) handlers.clear();
      else if (!fn) handlers.delete(name);
      else handlers.get(name)?.delete(fn);
    },
    save_changes: () => undefined,
    send: (msg: Record<string, unknown>) => {
      const found = table.get(requestKey(msg));
      const reply = found
        ? { ...found.reply, id: msg.id }
        : {
            kind: "reply",
            id: msg.id,
            request: msg.kind,
            ok: false,
            error: "This exported page has no kernel and holds only the data of the state it was saved in.",
          };
      setTimeout(() => fire("msg:custom", reply, found ? found.buffers : []), 0);
    },
    widget_manager: { get_model: () => Promise.reject(new Error("no widget manager in an exported page")) },
  };
  return model as unknown as AnyModel<ExplorerTraits>;
}
