// A tooltip at the pointer: the view's hover text floats next to the cursor (or next to
// the keyboard-focused item), kept inside the explorer's box so it is never cut off or
// drawn off-screen below a tall canvas.

/** Where a box of `w x h` goes next to point (x, y) inside a container of `cw x ch`:
 * right of and below the point, flipped to the other side when it would leave the
 * container, then clamped into it. Pure (unit-tested). */
export function placeTooltip(x: number, y: number, w: number, h: number, cw: number, ch: number, offset = 12): { left: number; top: number } {
  let left = x + offset;
  let top = y + offset;
  if (left + w > cw) left = x - offset - w;
  if (top + h > ch) top = y - offset - h;
  left = Math.max(0, Math.min(Math.max(0, cw - w), left));
  top = Math.max(0, Math.min(Math.max(0, ch - h), top));
  return { left, top };
}

/**
 * Makes `tip` (a view's hover-info element) float: on `show`, it moves into the explorer
 * root that contains `owner` (position: relative there) and sits at the pointer.
 */
export class Tooltip {
  constructor(
    readonly tip: HTMLElement,
    private readonly owner: HTMLElement,
  ) {
    tip.classList.add("fw-tooltip");
    tip.setAttribute("role", "tooltip");
    tip.hidden = true;
  }

  private container(): HTMLElement {
    return (this.owner.closest(".fw-explorer") as HTMLElement | null) ?? this.owner;
  }

  /** Show `text` at client coordinates (clientX, clientY). */
  show(text: string, clientX: number, clientY: number): void {
    this.tip.textContent = text;
    if (!text) {
      this.hide();
      return;
    }
    const box = this.container();
    if (this.tip.parentElement !== box) box.append(this.tip);
    this.tip.hidden = false;
    const rect = box.getBoundingClientRect();
    const w = this.tip.offsetWidth;
    const h = this.tip.offsetHeight;
    const { left, top } = placeTooltip(clientX - rect.left, clientY - rect.top, w, h, rect.width || box.clientWidth, rect.height || box.clientHeight);
    this.tip.style.left = `${left}px`;
    this.tip.style.top = `${top}px`;
  }

  /** Show `text` next to an element (keyboard focus). */
  showAt(text: string, target: Element): void {
    const r = target.getBoundingClientRect();
    this.show(text, r.right, r.bottom);
  }

  hide(): void {
    this.tip.hidden = true;
  }

  destroy(): void {
    this.tip.remove();
  }
}
