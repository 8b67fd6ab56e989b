// Tiny DOM builder. Text only ever goes in through textContent (statements come from
// filings and may contain HTML); there is no innerHTML anywhere in the frontend.

export type Attrs = Record<string, string | number | boolean | null | undefined>;

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  children: (Node | string | null | undefined)[] = [],
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = String(v);
    else if (k === "text") node.textContent = String(v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return node;
}

export function setFlag(node: Element, attr: string, on: boolean): void {
  if (on) node.setAttribute(attr, "1");
  else node.removeAttribute(attr);
}

/** A <select> with options; calls `onChange` with the chosen value. */
export function select<T extends string>(
  options: { value: T; label: string; disabledReason?: string }[],
  value: T,
  onChange: (v: T) => void,
  attrs: Attrs = {},
): HTMLSelectElement {
  const s = el("select", { class: "fw-select", ...attrs });
  for (const o of options) {
    const option = el("option", { value: o.value, text: o.label }) as HTMLOptionElement;
    // An option that cannot be chosen is greyed and says why (its title).
    if (o.disabledReason) {
      option.disabled = true;
      option.title = o.disabledReason;
    }
    s.append(option);
  }
  s.value = value;
  s.addEventListener("change", () => onChange(s.value as T));
  return s;
}

/** Listen and return the matching removal, for render cleanups. */
export function listen<K extends keyof HTMLElementEventMap>(
  target: HTMLElement | Window | Document,
  type: K,
  fn: (ev: HTMLElementEventMap[K]) => void,
  options?: AddEventListenerOptions,
): () => void {
  target.addEventListener(type, fn as EventListener, options);
  return () => target.removeEventListener(type, fn as EventListener, options);
}

/**
 * Key presses inside `element`, seen before the page's own handlers: Notebook 7 takes
 * arrow keys at the document in the capture phase (before any widget sees them), so the
 * explorer listens on the window in the capture phase and keeps the keys it handles
 * (`fn` calls preventDefault / stopPropagation on those). Returns the removal.
 */
export function ownKeys(element: HTMLElement, fn: (ev: KeyboardEvent) => void): () => void {
  const handler = (ev: KeyboardEvent) => {
    if (ev.target instanceof Node && element.contains(ev.target)) fn(ev);
  };
  window.addEventListener("keydown", handler, true);
  return () => window.removeEventListener("keydown", handler, true);
}
