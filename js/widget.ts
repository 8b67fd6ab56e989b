// Entry point of the finwidget frontend bundle (anywidget ESM module).
// The explorer views are built in their own modules; this file wires them up.
export default {
  render({ el }: { el: HTMLElement }) {
    el.textContent = "finwidget";
  },
};
