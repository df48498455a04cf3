/** The pure helpers of `npm run bench:invoke` (tools/bench/invoke.ts); the benchmark itself is run by hand. */
import { describe, expect, it } from "vitest";
import {
  agentIngress,
  countReplicas,
  cpuPerRequest,
  latencySummary,
  outsideTicks,
  type ProcEntry,
  parse,
  replicaCpuDelta,
  scalingTimeline,
} from "./invoke";

describe("latencySummary", () => {
  it("takes nearest-rank percentiles and the maximum, to 0.1 ms", () => {
    const values = Array.from({ length: 100 }, (_, i) => 100 - i + 0.04); // 1.04 … 100.04, unsorted
    expect(latencySummary(values)).toEqual({ p50: 50, p90: 90, p99: 99, max: 100 });
  });

  it("is all nulls without samples", () => {
    expect(latencySummary([])).toEqual({ p50: null, p90: null, p99: null, max: null });
  });
});

describe("agentIngress", () => {
  it("reads the node and its ingress from the stack's line", () => {
    const line =
      "agent started for node cap-8581d98c-0 (fishermanswharf, pid 12019, ingress http://127.0.0.1:34961, log /tmp/x/agent.log)";
    expect(agentIngress(line)).toEqual({ nodeId: "cap-8581d98c-0", ingressUrl: "http://127.0.0.1:34961" });
  });

  it("ignores other lines", () => {
    expect(agentIngress("wrangler dev: done in 3.5 s (http://127.0.0.1:35733)")).toBeNull();
  });
});

describe("cpuPerRequest", () => {
  it("divides the window's totals by the requests, to 0.01 core-ms", () => {
    const totals = {
      window_s: 20,
      busy_share: 0.9,
      core_ms_per_job: {
        total: 1000,
        engine: 10,
        workerd: 500,
        postgres: 0,
        wrangler: 250,
        agents: 30,
        generator: 200,
        other: 10,
      },
    };
    expect(cpuPerRequest(totals, 300)).toEqual({
      total: 3.33,
      engine: 0.03,
      workerd: 1.67,
      postgres: 0,
      wrangler: 0.83,
      agents: 0.1,
      generator: 0.67,
      other: 0.03,
    });
    expect(cpuPerRequest(totals, 0).total).toBe(0);
  });
});

describe("scalingTimeline", () => {
  const s = (t_ms: number, desired: number | null, live: number, ready: number) => ({ t_ms, desired, live, ready });

  it("says when desired rose above the minimum and when each count was first desired and ready", () => {
    const samples = [
      s(0, 1, 1, 1),
      s(500, 1, 1, 1),
      s(1000, 3, 3, 1),
      s(1500, 4, 4, 2),
      s(2000, 4, 4, 2),
      s(2500, 4, 4, 4),
      s(3000, 4, 4, 3), // one dropped out of ready: the first times stay
    ];
    const t = scalingTimeline(samples, 1);
    expect(t.desired_above_min_at_ms).toBe(1000);
    expect(t.desired_at_ms).toEqual({ 2: 1000, 3: 1000, 4: 1500 });
    expect(t.ready_at_ms).toEqual({ 2: 1500, 3: 2500, 4: 2500 });
    expect(t.max_desired).toBe(4);
    expect(t.max_ready).toBe(4);
    expect(t.changes.map((c) => c.t_ms)).toEqual([0, 1000, 1500, 2500, 3000]);
  });

  it("without scaling: nothing above the minimum, one change", () => {
    const t = scalingTimeline([s(0, 1, 1, 1), s(500, 1, 1, 1)], 1);
    expect(t).toMatchObject({ desired_above_min_at_ms: null, desired_at_ms: {}, ready_at_ms: {}, max_desired: 1 });
    expect(t.changes).toHaveLength(1);
  });

  it("copes with unknown desired counts", () => {
    expect(scalingTimeline([s(0, null, 0, 0)], 1).max_desired).toBeNull();
  });
});

describe("countReplicas", () => {
  it("counts each replica, most used first", () => {
    expect(Object.entries(countReplicas(["e#1", "e#0", "e#0", "e#2", "e#1", "e#0"]))).toEqual([
      ["e#0", 3],
      ["e#1", 2],
      ["e#2", 1],
    ]);
  });
});

describe("replicaCpuDelta", () => {
  const c = (usage_ms: number, periods: number, throttled_periods: number, throttled_ms: number) => ({
    usage_ms,
    periods,
    throttled_periods,
    throttled_ms,
  });

  it("adds the growth of each container, a new one from its start", () => {
    const before = new Map([["a", c(100, 10, 2, 50)]]);
    const after = new Map([
      ["a", c(400, 30, 12, 950)],
      ["b", c(200, 5, 0, 0)],
    ]);
    expect(replicaCpuDelta(before, after, 100)).toEqual({
      containers: 2,
      usage_ms_per_request: 5,
      periods: 25,
      throttled_periods: 10,
      throttled_ms: 900,
    });
  });
});

describe("outsideTicks", () => {
  const table = (rows: [number, number, string, number][]) =>
    new Map<number, ProcEntry>(rows.map(([pid, ppid, comm, ticks]) => [pid, { ppid, comm, ticks }]));

  it("counts only processes descended neither from this one nor from the engine, nor kernel threads", () => {
    const before = table([
      [1, 0, "init", 100],
      [50, 2, "kworker/0:1", 10],
      [100, 1, "bash", 5], // this run's own parent shell: outside
      [200, 100, "node", 1000], // this process
      [210, 200, "workerd", 500],
      [300, 1, "dockerd", 50],
      [310, 1, "containerd-shim-runc-v2", 5],
      [320, 310, "httpd", 1],
      [400, 1, "bash", 0], // someone else's shell
      [410, 400, "tsc", 100],
    ]);
    const after = table([
      [1, 0, "init", 101],
      [50, 2, "kworker/0:1", 40],
      [100, 1, "bash", 5],
      [200, 100, "node", 1300],
      [210, 200, "workerd", 900],
      [300, 1, "dockerd", 80],
      [310, 1, "containerd-shim-runc-v2", 6],
      [320, 310, "httpd", 30],
      [400, 1, "bash", 2],
      [410, 400, "tsc", 300],
      [420, 400, "biome", 50], // new: all its ticks
    ]);
    // init 1 + bash(400) 2 + tsc 200 + biome 50
    expect(outsideTicks(before, after, 200)).toBe(253);
  });

  it("counts a process that ended in between only for its time in the window, not its reaper's whole jump", () => {
    const before = table([
      [1, 0, "init", 100],
      [400, 1, "npm", 10],
      [410, 400, "vitest", 5000], // ran for minutes before the window
      [200, 1, "node", 0],
      [220, 200, "wrangler", 300], // the run's own; reaped by this process
    ]);
    // vitest used 30 ticks more, ended, and npm reaped it: npm's cutime took all 5030.
    const after = table([
      [1, 0, "init", 100],
      [400, 1, "npm", 10 + 5030],
      [200, 1, "node", 350],
    ]);
    expect(outsideTicks(before, after, 200)).toBe(30);
  });
});

describe("arguments", () => {
  it("has defaults, and refuses what is not a whole number in range", () => {
    expect(parse([])).toMatchObject({ users: 8, seconds: 20, coldStarts: 3, cpuMilli: 1000, keep: false });
    expect(parse(["--cold-starts", "0", "--users", "2"])).toMatchObject({ coldStarts: 0, users: 2 });
    expect(() => parse(["--users", "0"])).toThrow("--users takes a whole number ≥ 1");
    expect(() => parse(["--cpu-milli", "50"])).toThrow("--cpu-milli takes a whole number ≥ 100");
    expect(() => parse(["--bogus"])).toThrow();
  });
});
