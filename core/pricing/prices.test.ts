import { describe, expect, it } from "vitest";
import { gpuSecondsCostCents, jobCeilingCents, usageCostCents, worstCasePriceCents } from "./prices";

describe("prices", () => {
  it.each([
    // 3600 GPU-s of Fast H100 at 299 ¢/h = 299 ¢
    [3600, "fast", "H100", 299],
    // 1 GPU-s of Flex H100: 179/3600 = 0.0497 ¢ → rounds up to 1 ¢
    [1, "flex", "H100", 1],
    [0, "flex", "H200", 0],
    // 1800 GPU-s of Flex H200: 239/2 = 119.5 → 120 ¢
    [1800, "flex", "H200", 120],
  ] as const)("%i GPU-seconds of %s %s → %i ¢", (seconds, tier, model, cents) => {
    expect(gpuSecondsCostCents(seconds, tier, model)).toBe(cents);
  });

  it("prices an unconstrained request at the dearest model", () => {
    expect(worstCasePriceCents("fast", [])).toBe(399);
    expect(worstCasePriceCents("fast", ["H100"])).toBe(299);
  });

  it("bounds a job by all its GPUs for its whole max runtime", () => {
    // 8 GPUs × 2 h × 239 ¢ (Flex H200) = 3824 ¢
    expect(jobCeilingCents({ tier: "flex", gpu_models: ["H200"], gpu_count: 8, max_runtime_s: 7200 })).toBe(3824);
    // 1 GPU × 10 s × 399 ¢/h = 1.108 → 2 ¢
    expect(jobCeilingCents({ tier: "fast", gpu_models: [], gpu_count: 1, max_runtime_s: 10 })).toBe(2);
  });

  it("sums usage lines, rounding each up once", () => {
    expect(
      usageCostCents([
        { tier: "fast", gpu_model: "H100", gpu_seconds: 7200 }, // 598
        { tier: "flex", gpu_model: "H100", gpu_seconds: 1 }, // 1
      ]),
    ).toBe(599);
  });
});
