import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { idealConcurrency, parseTrace, scalarGpus, tierOf, unitHash } from "./trace";

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

  it("maps GPU counts onto what Scalar accepts", () => {
    expect([1, 2, 4, 8, 12, 16, 24, 64, 128].map(scalarGpus)).toEqual([1, 2, 4, 8, 16, 16, 24, 64, 64]);
  });

  it("measures ideal concurrent demand per minute", () => {
    const jobs = [
      { id: "a", submitS: 0, gpus: 2, durationS: 120, tier: "fast" as const, account: "x" },
      { id: "b", submitS: 60, gpus: 8, durationS: 600, tier: "flex" as const, account: "x" },
    ];
    // minute 0: a; minute 1: a+b; minutes 2..4: b (cut at the 5-minute window).
    expect(idealConcurrency(jobs, 300)).toEqual([2, 10, 8, 8, 8]);
  });
});
