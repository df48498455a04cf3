import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ESTIMATE_ERROR, estimateOf, idealConcurrency, parseTrace, scalarGpus, tierOf, unitHash } from "./trace";

const SAMPLE = readFileSync(new URL("./fixtures/philly-h720-723.csv", import.meta.url), "utf8");

describe("the Philly trace", () => {
  it("reads a window, re-based to its start, sorted by submit", () => {
    const jobs = parseTrace(SAMPLE, { fromHour: 720, hours: 3 }, { seed: 1, fastShare: 0.3 });
    expect(jobs).toHaveLength(36);
    expect(jobs[0]!.submitS).toBeGreaterThanOrEqual(0);
    expect(jobs.at(-1)!.submitS).toBeLessThan(3 * 3600);
    expect(jobs.every((j, i) => i === 0 || jobs[i - 1]!.submitS <= j.submitS)).toBe(true);
    // Only the jobs of the window: hour 721 onward drops those of hour 720.
    const later = parseTrace(SAMPLE, { fromHour: 721, hours: 2 }, { seed: 1, fastShare: 0.3 });
    expect(later.length).toBeLessThan(jobs.length);
    expect(later.every((j) => j.submitS >= 0 && j.submitS < 2 * 3600)).toBe(true);
  });

  it("replays the hours before the window as a warm-up: its jobs come first, submitted before 0", () => {
    const whole = parseTrace(SAMPLE, { fromHour: 720, hours: 3 }, { seed: 1, fastShare: 0.3 });
    const warm = parseTrace(SAMPLE, { fromHour: 721, hours: 2, warmUpHours: 1 }, { seed: 1, fastShare: 0.3 });
    // The same jobs as hours 720–723, re-based to hour 721: hour 720's are the warm-up's.
    expect(warm).toEqual(whole.map((j) => ({ ...j, submitS: j.submitS - 3600 })));
    expect(warm.filter((j) => j.submitS < 0).length).toBe(
      whole.length - parseTrace(SAMPLE, { fromHour: 721, hours: 2 }, { seed: 1, fastShare: 0.3 }).length,
    );
    expect(warm[0]!.submitS).toBeLessThan(0);
  });

  it("refuses a file that is not a job list", () => {
    expect(() => parseTrace("a,b\n1,2\n", { fromHour: 0, hours: 1 }, { seed: 1, fastShare: 0.3 })).toThrow(/job_id/);
  });

  it("assigns tiers by a seeded hash: stable for a seed, about the share asked", () => {
    const ids = Array.from({ length: 20_000 }, (_, i) => `philly-${String(i).padStart(6, "0")}`);
    const fast = ids.filter((id) => tierOf(id, { seed: 7, fastShare: 0.3 }) === "fast").length;
    expect(fast / ids.length).toBeGreaterThan(0.29);
    expect(fast / ids.length).toBeLessThan(0.31);
    expect(ids.map((id) => tierOf(id, { seed: 7, fastShare: 0.3 }))).toEqual(
      ids.map((id) => tierOf(id, { seed: 7, fastShare: 0.3 })),
    );
    const other = ids.filter(
      (id) => tierOf(id, { seed: 8, fastShare: 0.3 }) !== tierOf(id, { seed: 7, fastShare: 0.3 }),
    );
    expect(other.length).toBeGreaterThan(1000);
    expect(unitHash("x")).toBeGreaterThanOrEqual(0);
  });

  it("gives a seeded share of jobs an estimated duration, padded and scattered around the true one", () => {
    const rule = { seed: 3, fastShare: 0.3, estimateShare: 0.5 };
    const ids = Array.from({ length: 20_000 }, (_, i) => `philly-${i}`);
    const estimates = ids.map((id) => estimateOf(id, 3600, rule));
    const given = estimates.filter((e): e is number => e !== null);
    expect(given.length / ids.length).toBeGreaterThan(0.48);
    expect(given.length / ids.length).toBeLessThan(0.52);
    // The log of estimate / truth is normal around ln(1.5) with σ 0.5.
    const logs = given.map((e) => Math.log(e / 3600)).sort((a, b) => a - b);
    const median = logs[Math.floor(logs.length / 2)]!;
    expect(Math.exp(median)).toBeCloseTo(ESTIMATE_ERROR.median, 1);
    const mean = logs.reduce((a, b) => a + b, 0) / logs.length;
    const sd = Math.sqrt(logs.reduce((a, b) => a + (b - mean) ** 2, 0) / logs.length);
    expect(sd).toBeGreaterThan(0.47);
    expect(sd).toBeLessThan(0.53);
    // Some run past their estimate, most finish before it.
    const late = given.filter((e) => e < 3600).length / given.length;
    expect(late).toBeGreaterThan(0.15);
    expect(late).toBeLessThan(0.25);
    // Stable for a seed; none without a share; never under a minute.
    expect(ids.map((id) => estimateOf(id, 3600, rule))).toEqual(estimates);
    expect(ids.every((id) => estimateOf(id, 3600, { seed: 3, fastShare: 0.3 }) === null)).toBe(true);
    expect(Math.min(...ids.map((id) => estimateOf(id, 10, { ...rule, estimateShare: 1 })!))).toBe(ESTIMATE_ERROR.minS);
  });

  it("maps GPU counts onto what Scalar accepts", () => {
    expect([1, 2, 4, 8, 12, 16, 24, 64, 128].map(scalarGpus)).toEqual([1, 2, 4, 8, 16, 16, 24, 64, 64]);
  });

  it("measures ideal concurrent demand per minute", () => {
    const jobs = [
      { id: "a", submitS: 0, gpus: 2, durationS: 120, tier: "fast" as const, estimateS: null, account: "x" },
      { id: "b", submitS: 60, gpus: 8, durationS: 600, tier: "flex" as const, estimateS: null, account: "x" },
    ];
    // minute 0: a; minute 1: a+b; minutes 2..4: b (cut at the 5-minute window).
    expect(idealConcurrency(jobs, 300)).toEqual([2, 10, 8, 8, 8]);
    // A warm-up job (submitted 2 min before the window) counts from the window's start.
    const early = {
      id: "c",
      submitS: -120,
      gpus: 4,
      durationS: 240,
      tier: "flex" as const,
      estimateS: null,
      account: "x",
    };
    expect(idealConcurrency([...jobs, early], 300)).toEqual([6, 14, 8, 8, 8]);
    expect(idealConcurrency([{ ...early, durationS: 60 }], 300)).toEqual([0, 0, 0, 0, 0]);
  });
});
