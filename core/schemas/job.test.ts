import { describe, expect, it } from "vitest";
import { isValidGpuCount, ResourceRequest } from "./job";

describe("GPU counts", () => {
  it.each([
    [1, true],
    [8, true],
    [16, true],
    [64, true],
    [0, false],
    [9, false], // more than a node, not whole nodes
    [12, false],
    [72, false], // above the per-job maximum
    [1.5, false],
  ])("%d GPUs → %s", (n, ok) => {
    expect(isValidGpuCount(n)).toBe(ok);
  });

  it("names the field when the request is wrong", () => {
    const r = ResourceRequest.safeParse({ gpu_count: 9 });
    expect(r.success).toBe(false);
    expect(r.error?.issues[0]?.path).toEqual(["gpu_count"]);
  });
});
