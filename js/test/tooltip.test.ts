import { describe, expect, it } from "vitest";
import { placeTooltip } from "../tooltip";

describe("tooltip placement", () => {
  it("sits right of and below the pointer when there is room", () => {
    expect(placeTooltip(100, 100, 80, 20, 1000, 800)).toEqual({ left: 112, top: 112 });
  });

  it("flips to the left and above near the right and bottom edges", () => {
    expect(placeTooltip(990, 790, 80, 20, 1000, 800)).toEqual({ left: 990 - 12 - 80, top: 790 - 12 - 20 });
  });

  it("stays inside the container even when it is wider than the space on both sides", () => {
    const p = placeTooltip(200, 10, 380, 30, 450, 600);
    expect(p.left).toBeGreaterThanOrEqual(0);
    expect(p.left + 380).toBeLessThanOrEqual(450);
    expect(p.top).toBeGreaterThanOrEqual(0);
  });

  it("pins to the top-left corner in a container smaller than the tip", () => {
    expect(placeTooltip(10, 10, 500, 50, 300, 40)).toEqual({ left: 0, top: 0 });
  });
});
