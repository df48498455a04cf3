/**
 * The load generator against the real local stack (tools/stack: wrangler dev, Postgres, the
 * simulator, node agents on the Docker engine): a tiny load, 2 users for 5 s. Checks the report's
 * shape and that its counts add up, against each other and against the API. No timing assertions.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LABELS } from "../../node-agent/container-spec";
import { DockerodeEngine } from "../../node-agent/docker/dockerode-engine";
import { has } from "../test/parts";
import { measureEngine } from "./engine-baseline";
import { type LoadReport, runLoad, type Samples } from "./generator";
import { type LocalTarget, startLocalTarget } from "./local";
import { runOneJob } from "./warm-up";

const ROOT = resolve(import.meta.dirname, "../..");

describe("npm run load:fast, arguments", () => {
  it.each([
    [["--users", "0"], "--users takes a whole number ≥ 1"],
    [["--url", "http://127.0.0.1:1"], "--url needs --key"],
    [["--bogus"], "Unknown option '--bogus'"],
  ])("%j: says what is wrong and exits 2", (args, message) => {
    const r = spawnSync(process.execPath, ["tools/bootstrap.mjs", "tools/load/cli.ts", ...args], {
      cwd: ROOT,
      encoding: "utf8",
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(message);
    expect(r.stdout).toBe("");
  });
});

// Skipped only outside CI when a Docker engine is missing (`npm test` reports which); with CI=true `has()` is true, so a
// missing part fails the test instead (tools/test/parts.ts).
describe.skipIf(!has("docker"))("the load generator on the local stack", () => {
  let stateDir: string;
  let target: Extract<LocalTarget, { kind: "ready" }>;
  let report: LoadReport;
  let samples: Samples;
  const progress: number[] = [];

  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), "scalar-load-"));
    const local = await startLocalTarget({ users: 2, say: () => {}, stateDir });
    if (local.kind !== "ready") throw new Error(local.reason);
    target = local;
    await runOneJob({ apiUrl: target.apiUrl, apiKey: target.apiKey, image: target.image });
    ({ report, samples } = await runLoad({
      apiUrl: target.apiUrl,
      apiKey: target.apiKey,
      users: 2,
      seconds: 5,
      image: target.image,
      command: ["true"],
      thinkMs: 0,
      pollMs: 200,
      followTimeoutMs: 60_000,
      keyPerUser: true,
      onTick: (p) => progress.push(p.submitted),
    }));
  }, 300_000);

  afterAll(async () => {
    await target?.stop();
    rmSync(stateDir, { recursive: true, force: true });
  }, 120_000);

  it("reports every field, with percentiles for each measured path", () => {
    expect(Object.keys(report).sort()).toEqual(
      [
        "run_id",
        "users",
        "duration_s",
        "jobs_submitted",
        "jobs_placed",
        "jobs_running",
        "submit_ms",
        "submit_to_placed_ms",
        "submit_to_running_ms",
        "bare_ms",
        "bare_requests",
        "submit_server_timing_ms",
        "placed_p99_over_bare_p99",
        "errors",
        "targets",
      ].sort(),
    );
    expect(report.users).toBe(2);
    expect(report.duration_s).toBeGreaterThanOrEqual(5);
    expect(report.jobs_submitted).toBeGreaterThan(0);
    for (const key of ["submit_ms", "submit_to_placed_ms", "submit_to_running_ms", "bare_ms"] as const) {
      const { p50, p99 } = report[key];
      expect(typeof p50, key).toBe("number");
      expect(p99!, key).toBeGreaterThanOrEqual(p50!);
    }
    // The API's Server-Timing phases of a submission: each within the Worker's total, which is within
    // the client's round trip.
    const timing = report.submit_server_timing_ms;
    expect(Object.keys(timing).sort()).toEqual(["auth", "claim", "schedule", "total", "write"]);
    for (const phase of ["auth", "claim", "write", "schedule"]) {
      expect(timing[phase]!.p50!, phase).toBeLessThanOrEqual(timing.total!.p99!);
    }
    expect(timing.total!.p50!).toBeLessThanOrEqual(report.submit_ms.p99!);
    expect(Object.keys(report.errors).sort()).toEqual(
      [
        "submit",
        "placement",
        "other",
        "by_status",
        "placement_reasons",
        "samples",
        "resent_on_closed_connection",
      ].sort(),
    );
    expect(Object.keys(report.targets).sort()).toEqual(
      ["placed_p99_le_2x_bare", "running_p50_le_1500ms", "no_errors"].sort(),
    );
    expect(progress.length).toBeGreaterThanOrEqual(4); // about once a second
  });

  it("has counts that add up", () => {
    const e = report.errors;
    // Every submitted job was followed to running, or counted as a placement error.
    expect(report.jobs_running + e.placement).toBe(report.jobs_submitted);
    expect(report.jobs_running).toBeLessThanOrEqual(report.jobs_placed);
    expect(report.jobs_placed).toBeLessThanOrEqual(report.jobs_submitted);
    expect(Object.values(e.placement_reasons).reduce((a, b) => a + b, 0)).toBe(e.placement);
    expect(Object.values(e.by_status).reduce((a, b) => a + b, 0)).toBe(e.submit + e.other);
    expect(samples.submitMs).toHaveLength(report.jobs_submitted);
    expect(samples.placedMs).toHaveLength(report.jobs_placed);
    expect(samples.runningMs).toHaveLength(report.jobs_running);
    expect(samples.bareMs).toHaveLength(report.bare_requests);
    // One bare request per look at a job: at least one per job.
    expect(report.bare_requests).toBeGreaterThanOrEqual(report.jobs_submitted);
    expect(report.targets.no_errors).toBe(e.submit + e.placement + e.other === 0);
    expect(report.targets.placed_p99_le_2x_bare).toBe((report.placed_p99_over_bare_p99 ?? Infinity) <= 2);
    expect(report.targets.running_p50_le_1500ms).toBe((report.submit_to_running_ms.p50 ?? Infinity) <= 1500);
  });

  it("measures the engine alone with as many containers as asked, and leaves none behind", async () => {
    const engine = await measureEngine({ socketPath: target.dockerSocket, image: target.image, containers: 2 });
    expect(engine.containers).toBe(2);
    expect(engine.create_start_ms.p50).toBeGreaterThan(0);
    expect(engine.batch_ms).toBeGreaterThanOrEqual(Math.floor(engine.create_start_ms.p99!)); // the batch holds each
    const left = await new DockerodeEngine({ socketPath: target.dockerSocket }).list({
      [LABELS.managed]: "true",
    });
    expect(left.filter((c) => c.name.includes("load-baseline-"))).toEqual([]);
  });

  it("submitted as many jobs as the API holds with the run's label, and revoked its keys", async () => {
    const headers = { authorization: `Bearer ${target.apiKey}` };
    const jobs = await fetch(`${target.apiUrl}/v1/jobs?limit=100&label=load-test:${report.run_id}`, { headers });
    const page = (await jobs.json()) as { data: { status: string; tier: string; gpu_count: number }[] };
    expect(page.data).toHaveLength(report.jobs_submitted);
    expect(page.data.every((j) => j.tier === "fast" && j.gpu_count === 1)).toBe(true);
    const keys = await fetch(`${target.apiUrl}/v1/api-keys?limit=100`, { headers });
    const active = ((await keys.json()) as { data: { name: string }[] }).data.filter((k) =>
      k.name.startsWith(`load-test ${report.run_id}`),
    );
    expect(active).toEqual([]);
  });
});
