import { describe, expect, it } from "vitest";
import { policyFreeGpus } from "./free-gpus";

describe("policyFreeGpus", () => {
  const node = { gpu_indices: [0, 1, 2, 3, 4, 5, 6, 7], unhealthy_gpus: [7] };

  it("counts healthy GPUs no work runs on", () => {
    expect(policyFreeGpus({ ...node, state: "ready" }, 3)).toBe(4);
  });

  it("counts none on a cordoned node, so the policy buys the headroom elsewhere", () => {
    expect(policyFreeGpus({ ...node, state: "cordoned" }, 3)).toBe(0);
  });
});
