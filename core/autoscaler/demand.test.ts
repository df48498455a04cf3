import { describe, expect, it } from "vitest";
import { estimateDemand, occupancy, quantile } from "./demand";
import { HOUR_MS, MINUTE_MS } from "./market-time";

const NOW = Date.parse("2026-03-02T12:00:00Z");
const W = {
  windowMs: 10 * MINUTE_MS,
  lookbackMs: 2 * HOUR_MS,
  arrivalQuantile: 1,
  steadyQuantile: 0.1,
  peakQuantile: 0.9,
  stepMs: MINUTE_MS,
  burstMs: 2 * MINUTE_MS,
};

describe("quantile", () => {
  it("takes the nearest rank", () => {
    expect(quantile([5, 1, 3, 2, 4], 0.5)).toBe(3);
    expect(quantile([5, 1, 3, 2, 4], 1)).toBe(5);
    expect(quantile([5, 1, 3, 2, 4], 0)).toBe(1);
    expect(quantile([], 0.5)).toBe(0);
  });
});

describe("estimateDemand", () => {
  it("sizes Fast arrivals by the busiest window, ignoring Flex and what is outside the lookback", () => {
    const arrivals = [
      // A burst: 1 + 2 + 8 GPUs within 10 minutes → 11 GPUs, one whole node.
      { at: NOW - 60 * MINUTE_MS, tier: "fast" as const, gpus: 1 },
      { at: NOW - 55 * MINUTE_MS, tier: "fast" as const, gpus: 2 },
      { at: NOW - 52 * MINUTE_MS, tier: "fast" as const, gpus: 8 },
      { at: NOW - 20 * MINUTE_MS, tier: "fast" as const, gpus: 4 },
      { at: NOW - 5 * MINUTE_MS, tier: "flex" as const, gpus: 64 },
      { at: NOW - 3 * HOUR_MS, tier: "fast" as const, gpus: 64 },
    ];
    const d = estimateDemand({ arrivals, concurrency: [] }, NOW, W);
    expect(d.fastGpusInWindow).toBe(11);
    expect(d.fastWholeNodesInWindow).toBe(1);
    // Nothing Fast in the last 2 minutes (the 64-GPU job 5 minutes ago is Flex).
    expect(d.fastGpusAtRecentRate).toBe(0);
  });

  it("projects the last minutes' Fast arrivals over a window", () => {
    const arrivals = [
      { at: NOW - 30_000, tier: "fast" as const, gpus: 2 },
      { at: NOW - 90_000, tier: "fast" as const, gpus: 1 },
      { at: NOW - 5 * MINUTE_MS, tier: "fast" as const, gpus: 8 },
    ];
    // 3 GPUs in the last 2 minutes → 15 over a 10-minute window.
    expect(estimateDemand({ arrivals, concurrency: [] }, NOW, W).fastGpusAtRecentRate).toBe(15);
    // Two arrivals are no stream when three are asked for: counted as they are, not projected.
    expect(estimateDemand({ arrivals, concurrency: [] }, NOW, { ...W, burstMinArrivals: 3 }).fastGpusAtRecentRate).toBe(
      3,
    );
    const big = [{ at: NOW - 30_000, tier: "fast" as const, gpus: 16 }];
    expect(estimateDemand({ arrivals: big, concurrency: [] }, NOW, W).fastGpusAtRecentRate).toBe(80);
    expect(
      estimateDemand({ arrivals: big, concurrency: [] }, NOW, { ...W, burstMinArrivals: 3 }).fastGpusAtRecentRate,
    ).toBe(16);
    const stream = [0, 1, 2].map((i) => ({ at: NOW - (i + 1) * 20_000, tier: "fast" as const, gpus: 1 }));
    expect(
      estimateDemand({ arrivals: stream, concurrency: [] }, NOW, { ...W, burstMinArrivals: 3 }).fastGpusAtRecentRate,
    ).toBe(15);
  });

  it("counts a whole-node job once, as its nodes, when asked; smaller jobs are still projected", () => {
    const once = { ...W, burstWholeNodesOnce: true };
    const big = [{ at: NOW - 30_000, tier: "fast" as const, gpus: 16 }];
    expect(estimateDemand({ arrivals: big, concurrency: [] }, NOW, once).fastGpusAtRecentRate).toBe(16);
    const mixed = [...big, { at: NOW - 60_000, tier: "fast" as const, gpus: 2 }];
    // 16 once, plus 2 GPUs in the last 2 minutes → 10 over the window.
    expect(estimateDemand({ arrivals: mixed, concurrency: [] }, NOW, once).fastGpusAtRecentRate).toBe(26);
    expect(estimateDemand({ arrivals: mixed, concurrency: [] }, NOW, W).fastGpusAtRecentRate).toBe(90);
  });

  it("reads steady and peak levels of concurrent demand", () => {
    const concurrency = Array.from({ length: 100 }, (_, i) => ({ at: NOW - i * MINUTE_MS, gpus: 100 + i }));
    const d = estimateDemand({ arrivals: [], concurrency }, NOW, W);
    expect(d.steadyGpus).toBe(109);
    expect(d.peakGpus).toBe(189);
    // Less history than asked for: nothing counts as steady yet.
    const young = estimateDemand({ arrivals: [], concurrency }, NOW, { ...W, steadyMinHistoryMs: 2 * HOUR_MS });
    expect(young.steadyGpus).toBe(0);
    expect(young.peakGpus).toBe(189);
  });
});

describe("occupancy of short jobs", () => {
  it("counts a finished job by the share of the window it held its GPUs; a running one whole", () => {
    expect(occupancy(undefined, 10 * MINUTE_MS)).toBe(1);
    expect(occupancy(5 * MINUTE_MS, 10 * MINUTE_MS)).toBe(0.5);
    expect(occupancy(3 * HOUR_MS, 10 * MINUTE_MS)).toBe(1);
    expect(occupancy(0, 10 * MINUTE_MS)).toBe(0);
    expect(occupancy(Number.NaN, 10 * MINUTE_MS)).toBe(1);
  });

  it("a flood of one-second Fast jobs asks for rate × duration GPUs, not every arrival's", () => {
    // 5 one-GPU jobs a second for the last 10 minutes, each done after 1 s: 5 GPUs busy at once.
    const arrivals = Array.from({ length: 3_000 }, (_, i) => ({
      at: NOW - i * 200,
      tier: "fast" as const,
      gpus: 1,
      heldMs: 1_000,
    }));
    const d = estimateDemand({ arrivals, concurrency: [] }, NOW, W);
    // 3,000 arrivals in the window × 1 s / 600 s = 5 GPUs; at the recent rate the same.
    expect(d.fastGpusInWindow).toBe(5);
    expect(d.fastGpusAtRecentRate).toBe(5);
    // Not yet finished, the same jobs count whole: 3,000 GPUs, as before.
    const unfinished = arrivals.map(({ heldMs: _, ...a }) => a);
    expect(estimateDemand({ arrivals: unfinished, concurrency: [] }, NOW, W).fastGpusInWindow).toBe(3_000);
  });

  it("long jobs count as before", () => {
    const arrivals = [
      { at: NOW - 5 * MINUTE_MS, tier: "fast" as const, gpus: 8, heldMs: 2 * HOUR_MS },
      { at: NOW - 4 * MINUTE_MS, tier: "fast" as const, gpus: 4 },
    ];
    expect(estimateDemand({ arrivals, concurrency: [] }, NOW, W).fastGpusInWindow).toBe(12);
  });
});
