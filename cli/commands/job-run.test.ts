import { describe, expect, it } from "vitest";
import type { Job, JobEvent } from "../api/client";
import { parseCommandLine } from "../args";
import { EXIT, UsageError } from "../errors";
import { logText, retryNote } from "../logs";
import { COMMANDS } from ".";
import { jobCreateBody, jobExitCode, jobSummary, stageOf } from "./job-run";
import { jobDetails } from "./jobs";

const job = (over: Partial<Job> = {}): Job => ({
  id: "j1",
  status: "queued",
  tier: "flex",
  priority: 0,
  region: "us-west-1",
  image: "busybox",
  command: [],
  args: [],
  env: [],
  gpu_count: 1,
  gpu_models: [],
  cpu_milli: 4000,
  memory_mib: 16384,
  max_runtime_s: 3600,
  estimated_duration_s: null,
  max_attempts: 3,
  attempts: 1,
  labels: {},
  waiting_reason: null,
  next_attempt_at: null,
  exit_code: null,
  failure_reason: null,
  dead_lettered: false,
  placements: [],
  created_at: "2026-11-26T12:00:00.000Z",
  updated_at: "2026-11-26T12:00:00.000Z",
  started_at: null,
  finished_at: null,
  ...over,
});

function body(line: string[]) {
  const r = parseCommandLine(["jobs", "run", ...line], COMMANDS);
  if (r.kind !== "run") throw new Error("expected a command");
  return jobCreateBody(r.args);
}

describe("jobs run: the request body", () => {
  it("sends only what was given, in the API's units, with the command after --", () => {
    expect(body(["--gpus", "1", "--image", "busybox", "--", "echo", "hello"])).toEqual({
      image: "busybox",
      gpu_count: 1,
      command: ["echo", "hello"],
    });
    expect(
      body([
        "--gpus=8",
        "--image",
        "ghcr.io/acme/train:1.4",
        "--tier",
        "fast",
        "--cpu",
        "16",
        "--memory",
        "64Gi",
        "--env",
        "EPOCHS=3",
        "--secret-env",
        "TOKEN=abc",
        "--label",
        "team=research",
        "--region",
        "us-west-1",
        "--max-runtime",
        "2h",
        "--estimate",
        "1h30m",
        "--gpu-model",
        "h100",
        "--max-attempts",
        "1",
        "--priority=-5",
      ]),
    ).toEqual({
      image: "ghcr.io/acme/train:1.4",
      gpu_count: 8,
      tier: "fast",
      cpu_milli: 16000,
      memory_mib: 65536,
      env: [
        { name: "EPOCHS", value: "3" },
        { name: "TOKEN", value: "abc", secret: true },
      ],
      labels: { team: "research" },
      region: "us-west-1",
      max_runtime_s: 7200,
      estimated_duration_s: 5400,
      gpu_models: ["H100"],
      max_attempts: 1,
      priority: -5,
    });
  });

  it("refuses missing or malformed flags before calling the API", () => {
    expect(() => body(["--image", "x"])).toThrow("--gpus is required");
    expect(() => body(["--gpus", "1"])).toThrow("--image is required");
    expect(() => body(["--gpus", "one", "--image", "x"])).toThrow("--gpus must be a whole number, not `one`");
    expect(() => body(["--gpus", "1", "--image", "x", "--tier", "turbo"])).toThrow(
      "--tier must be one of fast, flex, not `turbo`",
    );
    expect(() => body(["--gpus", "1", "--image", "x", "--gpu-model", "A100"])).toThrow(UsageError);
    // The API judges what only it knows (gpu_count 65 is refused there, with its own message).
    expect(body(["--gpus", "65", "--image", "x"]).gpu_count).toBe(65);
  });
});

describe("jobs run: exit codes", () => {
  it("maps the finished job to the process's exit code", () => {
    expect(jobExitCode(job({ status: "succeeded", exit_code: 0 }))).toBe(0);
    expect(jobExitCode(job({ status: "failed", exit_code: 3 }))).toBe(3);
    expect(jobExitCode(job({ status: "failed", exit_code: 3, dead_lettered: true }))).toBe(3);
    expect(jobExitCode(job({ status: "failed", exit_code: 137 }))).toBe(137);
    expect(jobExitCode(job({ status: "failed", exit_code: 256 + 7 }))).toBe(7);
    expect(jobExitCode(job({ status: "failed", exit_code: null }))).toBe(EXIT.jobFailed);
    expect(jobExitCode(job({ status: "failed", exit_code: -1 }))).toBe(EXIT.jobFailed);
    expect(jobExitCode(job({ status: "failed", exit_code: 0 }))).toBe(EXIT.jobFailed);
    expect(jobExitCode(job({ status: "failed", exit_code: null, dead_lettered: true }))).toBe(EXIT.jobDeadLettered);
    expect(jobExitCode(job({ status: "cancelled", exit_code: 143 }))).toBe(EXIT.jobCancelled);
    expect(jobExitCode(job({ status: "running" }))).toBe(EXIT.error);
    expect(new Set([EXIT.jobFailed, EXIT.jobCancelled, EXIT.jobDeadLettered, EXIT.interrupted]).size).toBe(4);
  });

  it("sums up the end in one line", () => {
    expect(
      jobSummary(
        job({ status: "succeeded", started_at: "2026-11-26T12:00:00.000Z", finished_at: "2026-11-26T12:00:01.500Z" }),
      ),
    ).toBe("job j1 succeeded after 1.5s");
    expect(
      jobSummary(
        job({ status: "failed", exit_code: 3, attempts: 3, dead_lettered: true, failure_reason: "exited with code 3" }),
      ),
    ).toBe("job j1 failed: exit code 3; exited with code 3; dead-lettered after 3 attempts");
    expect(
      jobSummary(
        job({
          status: "failed",
          exit_code: null,
          attempts: 1,
          max_attempts: 3,
          dead_lettered: true,
          failure_reason: "image pull failed: r/x:1 not found (manifest unknown)",
        }),
      ),
    ).toBe(
      "job j1 failed: image pull failed: r/x:1 not found (manifest unknown); dead-lettered after 1 attempt (not retried: another attempt would fail the same way)",
    );
    expect(jobSummary(job({ status: "cancelled" }))).toBe("job j1 was cancelled");
  });
});

describe("log lines as printed", () => {
  it("say which node wrote them for a job on several nodes, and nothing more for one node", () => {
    expect(logText({ line: "loss 0.3", node_rank: 0 }, 8)).toBe("loss 0.3");
    expect(logText({ line: "loss 0.3", node_rank: 0 }, 16)).toBe("[node 0] loss 0.3");
    expect(logText({ line: "ready", node_rank: 2 }, 24)).toBe("[node 2] ready");
  });

  it("a failed attempt waiting for its retry is said once the stream reports it; other statuses are not", () => {
    const s = { status: "queued", attempts: 1, max_attempts: 3, exit_code: 3, failure_reason: "exit code 3" };
    expect(retryNote(s)).toBe("attempt 1 failed: exit code 3; attempt 2 of 3 waits for its retry");
    expect(retryNote({ ...s, status: "running" })).toBeNull();
    // Queued before any attempt, or without a reason: nothing failed.
    expect(retryNote({ ...s, attempts: 0 })).toBeNull();
    expect(retryNote({ ...s, failure_reason: null })).toBeNull();
  });
});

describe("jobs run: the stage shown", () => {
  const placement = {
    placement_id: "p1",
    node_id: "n1",
    zone: "z",
    gpu_indices: [0, 1],
    attempt: 1,
    node_rank: 0,
    status: "placed",
    placed_at: "2026-11-26T12:00:00.000Z",
    started_at: null,
    finished_at: null,
    exit_code: null,
    metrics: null,
  };
  const pulling: JobEvent = {
    seq: 3,
    type: "pulling",
    at: "2026-11-26T12:00:01.000Z",
    attempt: 1,
    placement_id: "p1",
    node_id: "n1",
    gpu_indices: null,
    exit_code: null,
    reason: "Pulling fs layer",
    data: {},
  };
  it("shows why a queued job waits, where a placed one goes, and pulling", () => {
    expect(stageOf(job({ waiting_reason: "0/0 nodes" }), undefined)).toEqual({
      stage: "queued",
      detail: "waiting: 0/0 nodes",
    });
    expect(stageOf(job(), undefined)).toEqual({ stage: "queued", detail: null });
    expect(stageOf(job({ status: "placed", placements: [placement] }), undefined)).toEqual({
      stage: "placed",
      detail: "node n1, GPUs 0,1",
    });
    expect(stageOf(job({ status: "placed", placements: [placement] }), pulling)).toEqual({
      stage: "pulling",
      detail: "Pulling fs layer",
    });
    // A pull of an earlier attempt does not count.
    expect(stageOf(job({ status: "placed", placements: [{ ...placement, attempt: 2 }] }), pulling).stage).toBe(
      "placed",
    );
    expect(stageOf(job({ status: "running", placements: [placement] }), pulling)).toEqual({
      stage: "running",
      detail: "node n1",
    });
  });
});

describe("jobs get: the running placement's resource use", () => {
  const running = {
    placement_id: "p1",
    node_id: "n1",
    zone: "z",
    gpu_indices: [3],
    attempt: 1,
    node_rank: 0,
    status: "running",
    placed_at: "2026-11-26T12:00:00.000Z",
    started_at: "2026-11-26T12:00:01.000Z",
    finished_at: null,
    exit_code: null,
    metrics: {
      at: "2026-11-26T12:05:00.000Z",
      cpu_pct: 143.2,
      memory_bytes: 3.3e9,
      memory_limit_bytes: 16 * 1024 ** 3,
      pids: 12,
      gpus: [{ index: 3, utilisation_pct: 87, memory_used_mib: 62_668, memory_total_mib: 81_559 }],
    },
  };
  const now = Date.parse("2026-11-26T12:05:04.000Z");

  it("prints a line under the placement, in the style of the others, with the sample's age", () => {
    const text = jobDetails(job({ status: "running", placements: [running] }), now);
    expect(text).toMatch(
      /^placement {5}node n1 \(z\), GPUs 3\nmetrics {7}GPU 3: 87 % · 61\.2\/79\.6 GiB {3}CPU 143 % {3}mem 3\.1\/16 GiB {3}\(4s ago\)$/m,
    );
  });

  it("prints none before a heartbeat has measured the placement", () => {
    const text = jobDetails(job({ status: "running", placements: [{ ...running, metrics: null }] }), now);
    expect(text).toContain("placement");
    expect(text).not.toContain("metrics");
  });
});

describe("jobs get: attempts", () => {
  it("counts attempts against the limit, and says a re-drive took the count past it", () => {
    expect(jobDetails(job({ attempts: 2, max_attempts: 3 }), 0)).toMatch(/^attempts +2 of 3$/m);
    expect(jobDetails(job({ attempts: 3, max_attempts: 3 }), 0)).toMatch(/^attempts +3 of 3$/m);
    expect(jobDetails(job({ attempts: 2, max_attempts: 1 }), 0)).toMatch(
      /^attempts +2 \(re-driven: each re-drive allows 1 more\)$/m,
    );
  });
});
