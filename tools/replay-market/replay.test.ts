import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { HOUR_MS } from "../../core/autoscaler";
import { clairvoyantFleet, lowerBoundCents } from "./lower-bound";
import { engineFor, runPolicy } from "./replay";
import { replaySetup } from "./setup";
import { loadTrace } from "./trace";

const FIXTURE = fileURLToPath(new URL("./fixtures/philly-h720-723.csv", import.meta.url));
const KEYS = [
  "fast_start_p50_s",
  "fast_start_p99_s",
  "flex_wait_p50_s",
  "flex_wait_p99_s",
  "utilisation",
  "spend_usd",
  "spend_per_used_gpu_hour_usd",
  "revenue_usd",
  "orders_placed",
  "orders_failed",
  "sold_back_node_hours",
].sort();

describe("market replay", () => {
  const { jobs, origin } = loadTrace(FIXTURE, { fromHour: 720, hours: 3 }, { seed: 1, fastShare: 0.3 });
  const setup = replaySetup(jobs, origin + 720 * HOUR_MS, 3, 1);

  it.each(["scalar", "static", "reactive"] as const)(
    "%s serves every job and pays no less than the lower bound",
    (name) => {
      const run = runPolicy(name, setup);
      expect(Object.keys(run.metrics).sort()).toEqual(KEYS);
      expect(run.diagnostics.jobs_killed).toBe(0);
      expect(run.diagnostics.jobs_never_started).toBe(0);
      expect(run.metrics.orders_placed).toBeGreaterThan(0);
      expect(run.metrics.utilisation).toBeGreaterThan(0);
      expect(run.metrics.utilisation).toBeLessThanOrEqual(1);
      const lowerBound = lowerBoundCents(
        engineFor(setup),
        jobs,
        setup.windowStart,
        setup.windowMs,
        [1, 4, 24, 168, 336, 3],
      );
      expect(lowerBound).toBeGreaterThan(0);
      expect(run.metrics.spend_usd * 100).toBeGreaterThanOrEqual(lowerBound);
      // Revenue is the configured price per GPU-second of what ran.
      expect(run.metrics.revenue_usd).toBeGreaterThan(0);
      // Fast jobs over a minute late, by hour of the window: as many as the p99 says, at least.
      const late = Object.entries(run.diagnostics.late_fast_by_hour);
      for (const [hour] of late) expect([0, 1, 2]).toContain(Number(hour));
      const lateCount = late.reduce((sum, [, n]) => sum + n, 0);
      expect(lateCount).toBeLessThanOrEqual(jobs.filter((j) => j.tier === "fast").length);
      if (run.metrics.fast_start_p99_s > 60) expect(lateCount).toBeGreaterThan(0);
      else expect(lateCount).toBeLessThanOrEqual(Math.floor(jobs.filter((j) => j.tier === "fast").length / 100));
    },
  );

  it.each(["scalar", "reactive"] as const)(
    "%s starts every job when jobs give estimated durations (bought blocks outlive the estimates)",
    (name) => {
      const withEstimates = loadTrace(
        FIXTURE,
        { fromHour: 720, hours: 3 },
        { seed: 1, fastShare: 0.3, estimateShare: 1 },
      ).jobs;
      // Every estimate within the usual block lengths (≤ 336 h) here, some past the 4-h block.
      expect(withEstimates.every((j) => j.estimateS !== null && j.estimateS < 300 * 3600)).toBe(true);
      expect(withEstimates.some((j) => j.estimateS! > 4 * 3600)).toBe(true);
      const run = runPolicy(name, replaySetup(withEstimates, origin + 720 * HOUR_MS, 3, 1));
      expect(run.diagnostics.jobs_never_started).toBe(0);
      expect(run.diagnostics.jobs_killed).toBe(0);
    },
  );

  it("keeps the lower bound under what a clairvoyant fleet pays on the same path", () => {
    const lengths = [1, 4, 24, 168, 336];
    const bound = lowerBoundCents(engineFor(setup), jobs, setup.windowStart, setup.windowMs, lengths);
    const oracle = clairvoyantFleet(engineFor(setup), jobs, setup.windowStart, setup.windowMs, lengths);
    expect(bound).toBeGreaterThan(0);
    expect(oracle.cents).toBeGreaterThanOrEqual(bound);
    expect(oracle.utilisation).toBeGreaterThan(0);
    expect(oracle.utilisation).toBeLessThanOrEqual(1);
  });

  it("runs a warm-up before the window on the same prices, and measures the window only", () => {
    const rule = { seed: 1, fastShare: 0.3 };
    const windowStart = origin + 721 * HOUR_MS;
    const cold = replaySetup(loadTrace(FIXTURE, { fromHour: 721, hours: 2 }, rule).jobs, windowStart, 2, 1);
    const warmJobs = loadTrace(FIXTURE, { fromHour: 721, hours: 2, warmUpHours: 1 }, rule).jobs;
    const warm = replaySetup(warmJobs, windowStart, 2, 1, { warmUpMs: HOUR_MS });
    // The engine starts an hour earlier, on the same price path in the window.
    const early = engineFor(warm);
    expect(early.now()).toBe(windowStart - HOUR_MS);
    early.advanceTo(windowStart);
    const zone = early.settings.catalog.zones.find((z) => z.delivery_type === "VM")!;
    const price = (e: ReturnType<typeof engineFor>) =>
      e.market.priceBuy(zone, windowStart, windowStart + 4 * HOUR_MS, 1);
    expect(price(early)).toEqual(price(engineFor(cold)));

    const coldRun = runPolicy("scalar", cold);
    const warmRun = runPolicy("scalar", warm);
    expect(warmRun.diagnostics.jobs_never_started).toBe(0);
    expect(warmRun.diagnostics.jobs_killed).toBe(0);
    // The warm-up's jobs still running in the window are served and earn there: more revenue than
    // the window's own jobs alone.
    expect(warmRun.metrics.revenue_usd).toBeGreaterThan(coldRun.metrics.revenue_usd);
    const bound = lowerBoundCents(
      engineFor(warm),
      warmJobs,
      windowStart,
      warm.windowMs,
      [1, 4, 24, 168, 336, 3],
      HOUR_MS,
    );
    expect(warmRun.metrics.spend_usd * 100).toBeGreaterThanOrEqual(bound);
    expect(bound).toBeGreaterThan(
      lowerBoundCents(engineFor(cold), cold.jobs, windowStart, cold.windowMs, [1, 4, 24, 168, 336, 2]),
    );
  });

  it("tells jobs that arrived too late to start from jobs left waiting past their tier's promise", () => {
    // A 64-GPU Flex job 30 s before the window's end: no fleet has room for it at once, and its
    // 2-hour maximum wait has barely begun.
    const late = {
      id: "late-flex",
      submitS: 3 * 3600 - 30,
      gpus: 64,
      durationS: 600,
      tier: "flex" as const,
      estimateS: null,
      account: "late",
    };
    const run = runPolicy("scalar", replaySetup([...jobs, late], origin + 720 * HOUR_MS, 3, 1));
    expect(run.diagnostics.jobs_never_started).toBe(1);
    expect(run.diagnostics.jobs_overdue_at_end).toBe(0);
    // As Fast, 90 s before the end, it is past its 60-s start goal there: overdue.
    const fastLate = { ...late, tier: "fast" as const, submitS: 3 * 3600 - 90 };
    const fast = runPolicy("scalar", replaySetup([...jobs, fastLate], origin + 720 * HOUR_MS, 3, 1));
    expect(fast.diagnostics.jobs_never_started).toBe(1);
    expect(fast.diagnostics.jobs_overdue_at_end).toBe(1);
  });

  it("is deterministic for a seed", () => {
    expect(runPolicy("scalar", setup).metrics).toEqual(runPolicy("scalar", setup).metrics);
  });

  it("prints the one JSON object of the command", async () => {
    const run = promisify(execFile);
    const root = fileURLToPath(new URL("../..", import.meta.url));
    const { stdout, stderr } = await run(
      "npx",
      ["tsx", "tools/replay-market/cli.ts", "--jobs", FIXTURE, "--from-hour", "720", "--hours", "3", "--seed", "2"],
      { cwd: root, env: { ...process.env, REPLAY_ONLY: "", REPLAY_TUNE: "" } },
    );
    // No policy cut a job off or left one unstarted (each would print a WARNING line).
    expect(stderr).not.toContain("WARNING");
    expect(stderr).toContain("scalar: {");
    const result = JSON.parse(stdout);
    expect(Object.keys(result).sort()).toEqual(["lower_bound_spend_usd", "reactive", "scalar", "static"]);
    for (const name of ["scalar", "static", "reactive"]) expect(Object.keys(result[name]).sort()).toEqual(KEYS);
    expect(result.lower_bound_spend_usd).toBeGreaterThan(0);
  }, 60_000);

  it("refuses a missing trace with a usage line", async () => {
    const run = promisify(execFile);
    const root = fileURLToPath(new URL("../..", import.meta.url));
    await expect(run("npx", ["tsx", "tools/replay-market/cli.ts"], { cwd: root })).rejects.toMatchObject({
      code: 2,
      stderr: expect.stringContaining("usage: npm run replay:market"),
    });
  }, 60_000);

  it("refuses a warm-up longer than the trace before the window", async () => {
    const run = promisify(execFile);
    const root = fileURLToPath(new URL("../..", import.meta.url));
    await expect(
      run(
        "npx",
        ["tsx", "tools/replay-market/cli.ts", "--jobs", FIXTURE, "--from-hour", "720", "--warm-up-hours", "721"],
        {
          cwd: root,
        },
      ),
    ).rejects.toMatchObject({ code: 2, stderr: expect.stringContaining("--warm-up-hours must be whole hours") });
  }, 60_000);
});
