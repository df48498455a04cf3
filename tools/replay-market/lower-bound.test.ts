import { describe, expect, it } from "vitest";
import { coverCost, gpuHoursByHour } from "./lower-bound";
import type { TraceJob } from "./trace";

/** The simulator's term curve on a flat price: 1 h ×1.35, 4 h ×1.2, 24 h ×1.0. */
const TERM: Record<number, number> = { 1: 135, 4: 120, 24: 100 };
const flat = (_start: number, hours: number) => TERM[hours]!;

describe("coverCost (the clairvoyant fleet's block choice)", () => {
  it("buys a level held all day as one day block, a short burst as hour blocks", () => {
    // Level 1 all 24 hours; level 2 only in hours 5 and 6.
    const levels = Array.from({ length: 24 }, (_, h) => (h === 5 || h === 6 ? 2 : 1));
    const plan = coverCost(levels, [1, 4, 24], flat);
    expect(plan.nodeHoursByLength).toEqual({ 24: 24, 1: 2 });
    expect(plan.cost).toBe(24 * 100 + 2 * 135);
  });

  it("prefers a 4 h block to four hour blocks", () => {
    const plan = coverCost([1, 1, 1, 1, 0, 0, 0, 0], [1, 4, 24], flat);
    expect(plan.nodeHoursByLength).toEqual({ 4: 4 });
    expect(plan.cost).toBe(4 * 120);
  });

  it("charges a block that runs past the window's end only for its hours inside, as the ledger does", () => {
    const plan = coverCost([0, 0, 0, 1, 1, 1], [1, 4, 24], flat);
    // Hours 3–5 need a node: a day block from hour 3, 3 h of it inside the window (3 × 100).
    expect(plan.nodeHoursByLength).toEqual({ 24: 3 });
    expect(plan.cost).toBe(3 * 100);
  });

  it("follows the price path: a block starting when it is cheap", () => {
    const rate = (start: number, hours: number) => (start === 0 ? 1000 : TERM[hours]!);
    const plan = coverCost([1, 1, 0, 0, 0, 0], [1, 4], rate);
    // Hour 0 costs 1000 an hour whatever the length: one hour of it, then an hour block from hour 1
    // (135) rather than 4 h of which 3 are unused (480).
    expect(plan.cost).toBe(1000 + 135);
  });

  it("holds nothing when nothing is needed", () => {
    expect(coverCost([0, 0, 0], [1, 24], flat)).toEqual({ cost: 0, nodeHours: 0, nodeHoursByLength: {} });
  });
});

describe("gpuHoursByHour (what the lower bound charges)", () => {
  const job = (submitS: number, durationS: number, gpus = 2): TraceJob => ({
    id: `j${submitS}`,
    submitS,
    gpus,
    durationS,
    tier: "flex",
    estimateS: null,
    account: "x",
  });
  const HOUR_MS = 3_600_000;

  it("counts each job's GPU-hours in the hours it runs, cut at the window's end", () => {
    // 2 GPUs from 0:30 for 2 h in a 2-h window: half an hour in hour 0, all of hour 1.
    expect([...gpuHoursByHour([job(1800, 7200)], 0, 2 * HOUR_MS)]).toEqual([1, 2]);
  });

  it("counts a job submitted before the window (a warm-up's) from the window's start only", () => {
    // Submitted half an hour before, runs 1 h: its last half hour is the window's.
    expect([...gpuHoursByHour([job(-1800, 3600)], 0, 2 * HOUR_MS)]).toEqual([1, 0]);
    // Over before the window: nothing.
    expect([...gpuHoursByHour([job(-7200, 3600)], 0, 2 * HOUR_MS)]).toEqual([0, 0]);
  });
});
