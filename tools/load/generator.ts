/**
 * The Fast-tier load generator: N virtual users, each in a loop for T seconds, submit a 1-GPU Fast
 * job and follow it until it runs, then submit the next (after an optional think time). While a user
 * waits for its job it also calls the bare route (`GET /ping`, which touches nothing), so the dev
 * server's own overhead is measured in the same run, at the same concurrency, under the same load.
 *
 * What is measured, and from which clock:
 * - submit: the `POST /v1/jobs` round trip, on the client (high-resolution timer);
 * - submit → placed / running: from the client's wall clock just before the POST to the job's own
 *   timestamps in the API (`placements[0].placed_at`, the scheduler's decision, and `started_at`, the
 *   container start the agent reported). Client and platform share this machine's clock, and the
 *   figures do not depend on how often the user polls;
 * - bare: the `GET /ping` round trip, on the client.
 *
 * Every virtual user gets an API key of its own (created at the start, revoked at the end), as
 * separate programs would; the rate limits per key and per account still apply and a 429 counts as
 * an error.
 */
import { randomUUID } from "node:crypto";
import { errorCode, type HttpClient, type HttpResult, httpClient, jsonOf } from "./http";
import { histogram, type Percentiles, percentiles, ratio, renderHistogram, serverTimings } from "./stats";

/**
 * One GPU and a small slice of CPU and memory: eight such jobs fit on a local node whatever the
 * host's cores (the defaults, 4 CPUs and 16 GiB, would not on a small machine).
 */
export const LOAD_JOB_RESOURCES = { gpu_count: 1, cpu_milli: 200, memory_mib: 256, tier: "fast" } as const;

export interface LoadOptions {
  apiUrl: string;
  apiKey: string;
  users: number;
  seconds: number;
  image: string;
  command: string[];
  /** Pause between a job running and the user's next submission. */
  thinkMs: number;
  /**
   * How often a user asks about its job while following it. Default 500 ms, as `scalar jobs run`
   * does; the figures come from the job's own timestamps, so this sets the load, not the precision.
   */
  pollMs: number;
  /** A job not running this long after its submission counts as a placement error. */
  followTimeoutMs: number;
  /** One API key per virtual user (needs `keys:write`); else all share `apiKey`. */
  keyPerUser: boolean;
  /** Called about once a second with the counters so far. */
  onTick?: (p: Progress) => void;
}

export const DEFAULT_LOAD = {
  users: 10,
  seconds: 60,
  command: ["true"],
  thinkMs: 0,
  pollMs: 500,
  followTimeoutMs: 60_000,
  keyPerUser: true,
} satisfies Partial<LoadOptions>;

export interface Progress {
  elapsedS: number;
  submitted: number;
  placed: number;
  running: number;
  errors: number;
  bare: number;
}

export interface LoadReport {
  /** Every job of the run carries the label `load-test: <run_id>`. */
  run_id: string;
  users: number;
  duration_s: number;
  jobs_submitted: number;
  jobs_placed: number;
  jobs_running: number;
  submit_ms: Percentiles;
  submit_to_placed_ms: Percentiles;
  submit_to_running_ms: Percentiles;
  bare_ms: Percentiles;
  bare_requests: number;
  /**
   * Where the Worker spent a submission's time, from the `Server-Timing` of each `POST /v1/jobs`
   * (the API's own marks: `auth`, `claim`, `write`, `schedule`, `total`), by phase.
   */
  submit_server_timing_ms: Record<string, Percentiles>;
  placed_p99_over_bare_p99: number | null;
  errors: {
    submit: number;
    placement: number;
    other: number;
    /** Failed requests by HTTP status (`0`: no answer). */
    by_status: Record<string, number>;
    /** Submitted jobs that did not reach `running`, by why. */
    placement_reasons: Record<string, number>;
    /** The first few error messages, for a first look. */
    samples: string[];
    /**
     * Not errors: requests sent again because a kept-alive connection closed under them before
     * any answer (only GETs and requests with an Idempotency-Key; tools/load/http.ts).
     */
    resent_on_closed_connection: number;
  };
  targets: { placed_p99_le_2x_bare: boolean; running_p50_le_1500ms: boolean; no_errors: boolean };
}

interface PlacementWire {
  attempt: number;
  placed_at: string;
  started_at: string | null;
}
interface JobWire {
  id: string;
  status: string;
  placements: PlacementWire[];
  failure_reason: string | null;
}

const MAX_SAMPLES = 8;

class Recorder implements Samples {
  readonly submitMs: number[] = [];
  readonly placedMs: number[] = [];
  readonly runningMs: number[] = [];
  readonly bareMs: number[] = [];
  readonly serverTiming = new Map<string, number[]>();
  submitted = 0;
  errors = { submit: 0, placement: 0, other: 0 };
  readonly byStatus: Record<string, number> = {};
  readonly placementReasons: Record<string, number> = {};
  readonly samples: string[] = [];

  failedRequest(kind: "submit" | "other", what: string, r: HttpResult): void {
    this.errors[kind] += 1;
    const status = String(r.status);
    this.byStatus[status] = (this.byStatus[status] ?? 0) + 1;
    this.sample(
      `${what}: ${r.status === 0 ? (r.error ?? "no answer") : `${r.status} ${errorCode(r) ?? r.text.slice(0, 120)}`}`,
    );
  }

  placementFailed(reason: string, detail: string): void {
    this.errors.placement += 1;
    this.placementReasons[reason] = (this.placementReasons[reason] ?? 0) + 1;
    this.sample(`job ${reason}: ${detail}`);
  }

  private sample(text: string): void {
    if (this.samples.length < MAX_SAMPLES) this.samples.push(text);
  }

  get errorCount(): number {
    return this.errors.submit + this.errors.placement + this.errors.other;
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)));

function auth(key: string, extra: Record<string, string> = {}) {
  return { authorization: `Bearer ${key}`, ...extra };
}

/** Seconds a 429 or 503 asks us to wait, capped. */
function retryAfterMs(r: HttpResult): number {
  const raw = Number(r.headers["retry-after"]);
  return Number.isFinite(raw) && raw > 0 ? Math.min(raw, 10) * 1000 : 1000;
}

interface VirtualUser {
  index: number;
  key: string;
  keyId: string | null;
}

export interface Samples {
  submitMs: number[];
  placedMs: number[];
  runningMs: number[];
  bareMs: number[];
}

/** Runs the load; the report and the raw samples. Throws only when it cannot start (e.g. a bad API key). */
export async function runLoad(opts: LoadOptions): Promise<{ report: LoadReport; samples: Samples }> {
  const client = httpClient(opts.apiUrl, { maxSockets: opts.users * 2 + 2 });
  const runId = randomUUID().slice(0, 8);
  const rec = new Recorder();
  const users = await createUsers(client, opts, runId);
  const startedAt = performance.now();
  const deadline = startedAt + opts.seconds * 1000;
  const ticker = opts.onTick ? startTicker(rec, startedAt, opts.onTick) : null;
  let endedAt: number;
  try {
    await Promise.all(users.map((u) => userLoop(client, opts, u, runId, deadline, rec)));
  } finally {
    endedAt = performance.now();
    if (ticker) clearInterval(ticker);
    await revokeUsers(client, opts, users);
    client.close();
  }
  // Until the last user's last job ran: T seconds of submissions, then following the jobs in flight.
  const durationS = (endedAt - startedAt) / 1000;
  return { report: report(opts, runId, rec, durationS, client.staleSocketRetries), samples: rec };
}

async function createUsers(client: HttpClient, opts: LoadOptions, runId: string): Promise<VirtualUser[]> {
  const me = await client.request("GET", "/v1/me", { headers: auth(opts.apiKey) });
  if (me.status !== 200) {
    throw new Error(
      `GET /v1/me with the given key answered ${me.status}: ${errorCode(me) ?? (me.error || me.text.slice(0, 200))}`,
    );
  }
  const shared = (index: number): VirtualUser => ({ index, key: opts.apiKey, keyId: null });
  if (!opts.keyPerUser) return Array.from({ length: opts.users }, (_, i) => shared(i));
  const users: VirtualUser[] = [];
  try {
    for (let i = 0; i < opts.users; i++) {
      const r = await client.request("POST", "/v1/api-keys", {
        headers: auth(opts.apiKey, { "idempotency-key": `load-${runId}-key-${i}` }),
        body: { name: `load-test ${runId} user ${i}`, scopes: ["jobs:read", "jobs:write"] },
      });
      const created = jsonOf<{ id: string; secret: string }>(r);
      if (r.status !== 201 || !created?.secret) {
        throw new Error(
          `could not create an API key per virtual user (${r.status} ${errorCode(r) ?? r.text.slice(0, 200)}); the key needs keys:write, or pass --shared-key`,
        );
      }
      users.push({ index: i, key: created.secret, keyId: created.id });
    }
  } catch (error) {
    await revokeUsers(client, opts, users);
    throw error;
  }
  return users;
}

async function revokeUsers(client: HttpClient, opts: LoadOptions, users: VirtualUser[]): Promise<void> {
  await Promise.all(
    users
      .filter((u) => u.keyId !== null)
      .map((u) => client.request("DELETE", `/v1/api-keys/${u.keyId}`, { headers: auth(opts.apiKey) })),
  );
}

async function userLoop(
  client: HttpClient,
  opts: LoadOptions,
  user: VirtualUser,
  runId: string,
  deadline: number,
  rec: Recorder,
): Promise<void> {
  let n = 0;
  while (performance.now() < deadline) {
    const submittedAtWall = Date.now();
    const r = await client.request("POST", "/v1/jobs", {
      headers: auth(user.key, { "idempotency-key": `load-${runId}-u${user.index}-${n++}` }),
      body: {
        image: opts.image,
        command: opts.command,
        ...LOAD_JOB_RESOURCES,
        max_runtime_s: 300,
        max_attempts: 1,
        labels: { "load-test": runId },
      },
    });
    const job = r.status === 202 ? jsonOf<JobWire>(r) : undefined;
    if (!job) {
      rec.failedRequest("submit", "POST /v1/jobs", r);
      if (r.status === 429 || r.status === 503) await sleep(retryAfterMs(r));
      continue;
    }
    rec.submitted += 1;
    rec.submitMs.push(r.ms);
    const header = r.headers["server-timing"];
    for (const [phase, ms] of Object.entries(serverTimings(Array.isArray(header) ? header.join(",") : header))) {
      const list = rec.serverTiming.get(phase) ?? [];
      list.push(ms);
      rec.serverTiming.set(phase, list);
    }
    await follow(client, opts, user, job.id, submittedAtWall, rec);
    if (opts.thinkMs > 0) await sleep(opts.thinkMs);
  }
}

/**
 * Until the job's first placement has started: alternately the bare route and the job, one request
 * at a time, `pollMs` apart. The user's last job is followed to the end even after the deadline, so
 * every submitted job is counted as running or as a placement error.
 */
async function follow(
  client: HttpClient,
  opts: LoadOptions,
  user: VirtualUser,
  jobId: string,
  submittedAtWall: number,
  rec: Recorder,
): Promise<void> {
  const giveUpAt = performance.now() + opts.followTimeoutMs;
  let placedSeen = false;
  for (;;) {
    const cycle = performance.now();
    const ping = await client.request("GET", "/ping");
    if (ping.status === 200) rec.bareMs.push(ping.ms);
    else rec.failedRequest("other", "GET /ping", ping);

    const r = await client.request("GET", `/v1/jobs/${jobId}`, { headers: auth(user.key) });
    const job = r.status === 200 ? jsonOf<JobWire>(r) : undefined;
    if (!job) {
      rec.failedRequest("other", "GET /v1/jobs/{id}", r);
      if (r.status === 429 || r.status === 503) await sleep(retryAfterMs(r));
    } else {
      const first = job.placements.find((p) => p.attempt === 1) ?? job.placements[0];
      if (first && !placedSeen) {
        placedSeen = true;
        rec.placedMs.push(Date.parse(first.placed_at) - submittedAtWall);
      }
      if (first?.started_at) {
        rec.runningMs.push(Date.parse(first.started_at) - submittedAtWall);
        return;
      }
      if (job.status === "failed" || job.status === "cancelled") {
        rec.placementFailed(job.status, `${jobId}: ${job.failure_reason ?? "no reason given"}`);
        return;
      }
      // `succeeded` without a start time yet: the record is catching up; ask again.
    }
    if (performance.now() > giveUpAt) {
      rec.placementFailed("not_running_in_time", `${jobId}: not running ${opts.followTimeoutMs} ms after submission`);
      await client.request("POST", `/v1/jobs/${jobId}/cancel`, { headers: auth(user.key) });
      return;
    }
    await sleep(opts.pollMs - (performance.now() - cycle));
  }
}

function startTicker(rec: Recorder, startedAt: number, onTick: (p: Progress) => void) {
  return setInterval(() => {
    onTick({
      elapsedS: Math.round((performance.now() - startedAt) / 1000),
      submitted: rec.submitted,
      placed: rec.placedMs.length,
      running: rec.runningMs.length,
      errors: rec.errorCount,
      bare: rec.bareMs.length,
    });
  }, 1000);
}

function report(opts: LoadOptions, runId: string, rec: Recorder, durationS: number, resent: number): LoadReport {
  const placed = percentiles(rec.placedMs);
  const running = percentiles(rec.runningMs);
  const bare = percentiles(rec.bareMs);
  const placedOverBare = ratio(placed.p99, bare.p99);
  return {
    run_id: runId,
    users: opts.users,
    duration_s: Math.round(durationS * 10) / 10,
    jobs_submitted: rec.submitted,
    jobs_placed: rec.placedMs.length,
    jobs_running: rec.runningMs.length,
    submit_ms: percentiles(rec.submitMs),
    submit_to_placed_ms: placed,
    submit_to_running_ms: running,
    bare_ms: bare,
    bare_requests: rec.bareMs.length,
    submit_server_timing_ms: Object.fromEntries([...rec.serverTiming].map(([phase, ms]) => [phase, percentiles(ms)])),
    placed_p99_over_bare_p99: placedOverBare,
    errors: {
      ...rec.errors,
      by_status: rec.byStatus,
      placement_reasons: rec.placementReasons,
      samples: rec.samples,
      resent_on_closed_connection: resent,
    },
    targets: {
      placed_p99_le_2x_bare: placedOverBare !== null && placedOverBare <= 2,
      running_p50_le_1500ms: running.p50 !== null && running.p50 <= 1500,
      no_errors: rec.errorCount === 0 && rec.submitted > 0,
    },
  };
}

/** The end-of-run histograms, for a person reading stderr. */
export function histograms(r: Samples): string {
  return [
    renderHistogram("submit (ms)", histogram(r.submitMs)),
    renderHistogram("submit → placed (ms)", histogram(r.placedMs)),
    renderHistogram("submit → running (ms)", histogram(r.runningMs)),
    renderHistogram("bare route (ms)", histogram(r.bareMs)),
  ].join("\n");
}
