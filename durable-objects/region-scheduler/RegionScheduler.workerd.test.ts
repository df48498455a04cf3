/**
 * The region's object inside workerd, against the migrated test Postgres behind Hyperdrive. Time is
 * a clock the test advances (set far in the future, so no alarm fires on its own); alarms run when
 * the test says so; a restart is a second instance built on the same storage.
 */
import { env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ContainerMetrics, EngineStuck, Heartbeat, PlacementEvent } from "../../core/schemas";
import type { ObjectSql } from "../sqlite";
import type { Clock } from "./clock";
import type { Outbox } from "./outbox";
import { RegionScheduler } from "./RegionScheduler";
import type { Region } from "./region";
import type { EndpointSpec, NodeRegistration, SchedulerJob } from "./rpc";
import type { Traffic } from "./traffic";

class TestClock implements Clock {
  constructor(public t: number) {}
  now() {
    return this.t;
  }
  advance(ms: number) {
    this.t += ms;
  }
}

const T0 = Date.UTC(2035, 0, 1);
let sql: postgres.Sql;
let accountId: string;

beforeAll(async () => {
  sql = postgres(env.HYPERDRIVE.connectionString, { max: 1, fetch_types: false, onnotice: () => {} });
  const [row] = await sql<{ id: string }[]>`insert into accounts (name) values ('scheduler tests') returning id`;
  accountId = row!.id;
});
afterAll(async () => {
  await sql?.end({ timeout: 2 });
});

type Stub = DurableObjectStub<RegionScheduler>;

/** Node ids are unique per test: Postgres (nodes, gpu_assignments) is shared by every test of the file. */
let prefix = "";
const N = (id: string) => `${prefix}${id}`;

async function region(settings: Parameters<RegionScheduler["configure"]>[0] = {}) {
  const name = `test-${crypto.randomUUID().slice(0, 8)}`;
  prefix = `${name}-`;
  const stub = env.REGION_SCHEDULER.get(env.REGION_SCHEDULER.idFromName(name)) as unknown as Stub;
  const clock = new TestClock(T0);
  await runInDurableObject(stub, (instance) => {
    (instance as unknown as RegionScheduler).clock = clock;
  });
  await stub.configure(settings);
  return { stub, clock, name };
}

function nodeReg(id: string, over: Partial<NodeRegistration> = {}): NodeRegistration {
  return {
    node_id: id,
    region: "test",
    zone: "z1",
    block_end_at: null,
    block_id: null,
    hostname: `${id}.local`,
    agent_version: "0.1.0",
    gpu_model: "H100",
    gpus: [0, 1, 2, 3, 4, 5, 6, 7].map((index) => ({ index })),
    cpu_milli: 64_000,
    memory_mib: 512_000,
    ...over,
  };
}

/** A job the API would submit; its `jobs` row is written to Postgres first, as the API does. */
async function jobFor(over: Partial<SchedulerJob> = {}, writeRow = true): Promise<SchedulerJob> {
  const job: SchedulerJob = {
    id: crypto.randomUUID(),
    account_id: accountId,
    tier: "fast",
    priority: 0,
    gpu_count: 2,
    gpu_models: [],
    cpu_milli: 4_000,
    memory_mib: 16_384,
    estimated_duration_s: null,
    max_runtime_s: 3_600,
    max_attempts: 3,
    submitted_at: T0,
    image: "127.0.0.1:5000/test/busybox:1",
    command: ["sh", "-c", "echo hi"],
    args: [],
    env: [{ name: "TOKEN", value: "s3cret" }],
    ...over,
  };
  if (writeRow) await writeJobRow(job);
  return job;
}

async function writeJobRow(job: SchedulerJob) {
  await sql`insert into jobs (id, account_id, region, tier, image, gpu_count, cpu_milli, memory_mib, max_runtime_s, max_attempts)
    values (${job.id}, ${job.account_id}, 'test', ${job.tier}, ${job.image}, ${job.gpu_count}, ${job.cpu_milli},
            ${job.memory_mib}, ${job.max_runtime_s}, ${job.max_attempts})`;
}

let eventNo = 0;
function ev<T extends PlacementEvent["type"]>(
  type: T,
  placementId: string,
  at: number,
  extra: Record<string, unknown> = {},
): PlacementEvent {
  return { event_id: `e${++eventNo}`, type, placement_id: placementId, at, ...extra } as PlacementEvent;
}

/** An agent's report of a container start left unanswered since `since`. */
function stuckSince(since: number): EngineStuck {
  return { since, operation: "start", detail: 'the container engine did not answer "start" within 60 s' };
}

/** Heartbeats of `nodeId` running `running`, its engine reported stuck when `engine_stuck` is given. */
function heartbeats(stub: Stub, clock: TestClock, nodeId: string, running: string[] = []) {
  return (engine_stuck?: EngineStuck) =>
    stub.heartbeat(nodeId, {
      at: clock.t,
      gpus: [],
      containers: [],
      running,
      ...(engine_stuck ? { engine_stuck } : {}),
    });
}

/** The object's own parts, for what its RPC does not show: its SQLite and its in-memory state. */
function insides(instance: unknown) {
  return instance as { db: ObjectSql; state: Region };
}

/** Rows the object writes while `fn` runs: every insert, update and delete goes through its ObjectSql's `run`. */
function rowsWritten(stub: Stub, fn: (object: RegionScheduler) => Promise<unknown>): Promise<number> {
  return runInDurableObject(stub, async (instance) => {
    const { db } = insides(instance);
    const run = db.run;
    let written = 0;
    db.run = (query, ...params) => {
      const rows = run.call(db, query, ...params);
      written += rows;
      return rows;
    };
    try {
      await fn(instance as unknown as RegionScheduler);
    } finally {
      db.run = run;
    }
    return written;
  });
}

/** A job registered node `n1` takes, placed there and reported running. */
async function runningOnNode1(stub: Stub, clock: TestClock, over: Partial<SchedulerJob> = {}) {
  await stub.registerNode(nodeReg(N("n1")));
  const job = await jobFor(over);
  await stub.submit(job);
  const p = await placementOf(stub, job.id);
  await stub.reportEvent(N("n1"), ev("running", p.placement_id, clock.t));
  return { job, p };
}

/** A job submitted to a region with one node of a fresh id, and its placement there. */
async function placedOnANode(stub: Stub, over: Partial<SchedulerJob>) {
  await stub.registerNode(nodeReg(`node-${crypto.randomUUID().slice(0, 8)}`));
  const nodeId = (await stub.listNodes())[0]!.node_id;
  const job = await jobFor(over);
  await stub.submit(job);
  return { nodeId, job, p: await placementOf(stub, job.id) };
}

async function placementOf(stub: Stub, jobId: string) {
  const state = await stub.jobState(jobId);
  const p = state?.placements[0];
  if (!p) throw new Error(`job ${jobId} has no placement: ${JSON.stringify(state)}`);
  return p;
}

describe("RegionScheduler: one job's life", () => {
  it("submit → poll → pulling → running → exited frees the GPUs", async () => {
    const { stub, clock } = await region();
    const reg = await stub.registerNode(nodeReg(N("n1")));
    expect(reg).toMatchObject({ node_id: N("n1"), heartbeat_interval_ms: 10_000, poll_wait_ms: 25_000 });

    const job = await jobFor({ gpu_count: 2 });
    const submitted = await stub.submit(job);
    expect(submitted).toMatchObject({ ok: true, status: "placed", duplicate: false });
    // With where it went: the answer is the job's state after the call, as jobState gives it.
    expect(submitted.ok && submitted.state).toEqual(await stub.jobState(job.id));
    expect(submitted.ok && submitted.state?.placements.map((p) => p.node_id)).toEqual([N("n1")]);
    expect(await stub.submit(job)).toMatchObject({ ok: true, status: "placed", duplicate: true });

    const set = await stub.pollPlacements(N("n1"), 0, 0);
    expect(set.version).toBeGreaterThan(0);
    expect(set.placements).toHaveLength(1);
    const placement = set.placements[0]!;
    expect(placement).toMatchObject({
      job_id: job.id,
      attempt: 1,
      image: job.image,
      env: [{ name: "TOKEN", value: "s3cret" }],
      gpu_indices: [0, 1],
      cpu_milli: 4_000,
      memory_mib: 16_384,
      kill_deadline: T0 + 3_600_000,
      desired: "running",
    });
    expect((await stub.listNodes())[0]!.free_gpus).toEqual([2, 3, 4, 5, 6, 7]);

    clock.advance(1_000);
    expect(await stub.reportEvent(N("n1"), ev("pulling", placement.placement_id, clock.t))).toEqual({
      ok: true,
      duplicate: false,
    });
    const running = ev("running", placement.placement_id, clock.t);
    expect(await stub.reportEvent(N("n1"), running)).toEqual({ ok: true, duplicate: false });
    expect(await stub.reportEvent(N("n1"), running)).toEqual({ ok: true, duplicate: true });
    expect(await stub.reportEvent(N("n2"), ev("pulling", placement.placement_id, clock.t))).toEqual({
      ok: false,
      code: "wrong_node",
    });
    expect(await stub.reportEvent(N("n1"), ev("pulling", "nope", clock.t))).toEqual({
      ok: false,
      code: "unknown_placement",
    });
    expect(await stub.jobState(job.id)).toMatchObject({ status: "running", attempt: 1 });

    clock.advance(60_000);
    await stub.reportEvent(N("n1"), ev("exited", placement.placement_id, clock.t, { exit_code: 0, oom_killed: false }));
    expect(await stub.jobState(job.id)).toMatchObject({
      status: "succeeded",
      exit_code: 0,
      placements: [expect.objectContaining({ status: "succeeded" })],
    });
    expect((await stub.listNodes())[0]!.free_gpus).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    const after = await stub.pollPlacements(N("n1"), set.version, 0);
    expect(after.placements).toEqual([]);
    expect(after.version).toBeGreaterThan(set.version);

    // The freed GPUs take a whole-node job at once.
    const big = await jobFor({ gpu_count: 8 });
    expect(await stub.submit(big)).toMatchObject({ ok: true, status: "placed" });
  });

  it("refuses a malformed job with a clear message", async () => {
    const { stub } = await region();
    const bad = await jobFor({ gpu_count: 12 }, false);
    expect(await stub.submit(bad)).toEqual({
      ok: false,
      code: "invalid",
      message: "gpu_count must be 1 to 8, or a multiple of 8 up to 64",
    });
  });

  it("explains why a job waits, and places it when capacity arrives", async () => {
    const { stub } = await region();
    await stub.registerNode(nodeReg(N("h200"), { gpu_model: "H200" }));
    const job = await jobFor({ gpu_count: 4, gpu_models: ["H100"] });
    expect(await stub.submit(job)).toMatchObject({ status: "queued" });
    expect(await stub.jobState(job.id)).toMatchObject({
      status: "queued",
      waiting_reason: "0/1 nodes: 1 GPU model not allowed",
    });
    await stub.registerNode(nodeReg(N("h100")));
    expect(await stub.jobState(job.id)).toMatchObject({ status: "placed", waiting_reason: null });
  });

  it("resolves a long-poll as soon as a placement for that node appears", async () => {
    const { stub } = await region();
    await stub.registerNode(nodeReg(N("n1")));
    const { version } = await stub.pollPlacements(N("n1"), 0, 0);
    // The deadline (25 s) is far beyond what this takes; at the deadline the answer would be empty.
    const poll = stub.pollPlacements(N("n1"), version, 25_000);
    const job = await jobFor();
    await stub.submit(job);
    const set = await poll;
    expect(set.version).toBeGreaterThan(version);
    expect(set.placements.map((p) => p.job_id)).toEqual([job.id]);
    // With nothing changing, the poll returns the same set at its deadline.
    const idle = await stub.pollPlacements(N("n1"), set.version, 5);
    expect(idle).toEqual(set);
  });

  it("cancels: queued at once; running asks the agent to stop, and the exit frees the GPUs", async () => {
    const { stub, clock } = await region();
    await stub.registerNode(nodeReg(N("n1")));
    const a = await jobFor({ gpu_count: 8 });
    const b = await jobFor({ gpu_count: 8 });
    await stub.submit(a);
    await stub.submit(b);
    expect(await stub.cancel(b.id)).toEqual({ ok: true, status: "cancelled" });
    expect(await stub.cancel(b.id)).toEqual({ ok: false, code: "already_finished", status: "cancelled" });
    expect(await stub.cancel("nope")).toEqual({ ok: false, code: "not_found" });

    const p = await placementOf(stub, a.id);
    await stub.reportEvent(N("n1"), ev("running", p.placement_id, clock.t));
    expect(await stub.cancel(a.id)).toEqual({ ok: true, status: "cancelled" });
    const set = await stub.pollPlacements(N("n1"), 0, 0);
    expect(set.placements).toEqual([expect.objectContaining({ placement_id: p.placement_id, desired: "stopped" })]);
    expect((await stub.listNodes())[0]!.free_gpus).toEqual([]);
    clock.advance(5_000);
    await stub.reportEvent(N("n1"), ev("exited", p.placement_id, clock.t, { exit_code: 143, stopped_by: "cancel" }));
    expect(await stub.jobState(a.id)).toMatchObject({
      status: "cancelled",
      placements: [expect.objectContaining({ status: "cancelled" })],
    });
    expect((await stub.listNodes())[0]!.free_gpus).toHaveLength(8);
  });

  it("frees a stopped run the agent no longer lists, once the agent has had a heartbeat cycle to act", async () => {
    const { stub, clock } = await region();
    await stub.registerNode(nodeReg(N("n1")));
    const job = await jobFor({ gpu_count: 8 });
    await stub.submit(job);
    await stub.cancel(job.id);
    const beat = () => stub.heartbeat(N("n1"), { at: clock.t, gpus: [], containers: [], running: [] });
    // At once: the agent may not have seen the stop yet (still pulling, say): the GPUs stay held.
    await beat();
    expect((await stub.listNodes())[0]!.free_gpus).toEqual([]);
    // Two heartbeat intervals later it still does not run it: stopped, reported or not.
    clock.advance(20_000);
    await beat();
    expect((await stub.listNodes())[0]!.free_gpus).toHaveLength(8);
    expect(await stub.jobState(job.id)).toMatchObject({
      status: "cancelled",
      placements: [expect.objectContaining({ status: "cancelled" })],
    });
  });

  it("ends a running run its node stops listing with no exit reported, as of the first heartbeat that missed it", async () => {
    const { stub, clock } = await region({ unlisted_run_grace_ms: 60_000 });
    const started = clock.t;
    const { job, p } = await runningOnNode1(stub, clock, { gpu_count: 2 });
    const beat = async (running: string[]) => {
      clock.advance(10_000);
      await stub.heartbeat(N("n1"), { at: clock.t, gpus: [], containers: [], running });
    };
    // Listed: it runs on, however long.
    for (let i = 0; i < 12; i++) await beat([p.placement_id]);
    // Missed, then listed again (a restarted agent before its first listing): the grace starts over.
    for (let i = 0; i < 5; i++) await beat([]);
    await beat([p.placement_id]);
    await beat([]);
    const missedAt = clock.t;
    for (let i = 0; i < 5; i++) await beat([]);
    expect((await stub.jobState(job.id))!.status).toBe("running");
    expect((await stub.listNodes())[0]!.free_gpus).toHaveLength(6);
    // A minute without it and without an exit: the outcome was lost on the node. The run ends, its
    // GPUs are free, and the job is retried like one whose node was lost.
    await beat([]);
    expect(await stub.jobState(job.id)).toMatchObject({
      status: "queued",
      failure_reason: `its node ${N("n1")} no longer runs it and reported no exit (outcome lost on the node)`,
    });
    expect((await stub.listNodes())[0]!.free_gpus).toHaveLength(8);
    // An exit arriving after that changes nothing.
    await stub.reportEvent(N("n1"), ev("exited", p.placement_id, clock.t, { exit_code: 0 }));
    expect((await stub.jobState(job.id))!.status).toBe("queued");
    // Billed up to the first heartbeat that missed it, not to now.
    await runDurableObjectAlarm(stub);
    const usage = await sql`select gpu_seconds::int, period_end from usage_events where job_run_id = ${p.placement_id}`;
    expect(usage.map((u) => [u.gpu_seconds, u.period_end.getTime()])).toEqual([
      [(2 * (missedAt - started)) / 1000, missedAt],
    ]);
  });

  it("ends a placed or pulling run its node does not list, with no outcome reported, after the grace", async () => {
    const { stub, clock } = await region({ unlisted_run_grace_ms: 60_000 });
    await stub.registerNode(nodeReg(N("n1")));
    const beat = async (running: string[]) => {
      clock.advance(10_000);
      await stub.heartbeat(N("n1"), { at: clock.t, gpus: [], containers: [], running });
    };
    // Pulling and listed (the agent lists the runs it is starting): it waits, however long the pull.
    const pulling = await jobFor({ gpu_count: 2 });
    await stub.submit(pulling);
    const p = await placementOf(stub, pulling.id);
    await stub.reportEvent(N("n1"), ev("pulling", p.placement_id, clock.t));
    const run = async () => (await stub.jobState(pulling.id))!.placements[0]?.status;
    for (let i = 0; i < 12; i++) await beat([p.placement_id]);
    expect(await run()).toBe("pulling");
    // Its pull fails, and the failure is lost on the node: it is no longer listed, and no event comes.
    await beat([]);
    for (let i = 0; i < 5; i++) await beat([]);
    expect(await run()).toBe("pulling");
    await beat([]);
    expect(await stub.jobState(pulling.id)).toMatchObject({
      status: "queued",
      failure_reason: `its node ${N("n1")} is not starting it and reported no outcome (never received, or its outcome lost on the node)`,
    });
    expect((await stub.listNodes())[0]!.free_gpus).toHaveLength(8);
  });

  it("stops a run at its kill deadline and fails the job without retrying it", async () => {
    const { stub, clock } = await region({ grace_period_ms: 1_000, deadline_slack_ms: 1_000 });
    const { job, p } = await runningOnNode1(stub, clock, { max_runtime_s: 60 });
    clock.advance(62_000);
    await stub.heartbeat(N("n1"), { at: clock.t, gpus: [], containers: [], running: [p.placement_id] });
    await runDurableObjectAlarm(stub);
    const set = await stub.pollPlacements(N("n1"), 0, 0);
    expect(set.placements[0]).toMatchObject({ placement_id: p.placement_id, desired: "stopped" });
    await stub.reportEvent(N("n1"), ev("exited", p.placement_id, clock.t, { exit_code: 137 }));
    expect(await stub.jobState(job.id)).toMatchObject({
      status: "failed",
      failure_reason: "max runtime exceeded",
      dead_lettered: false,
    });
    // Its events end with how it ended, as a success's or a dead letter's do.
    await runDurableObjectAlarm(stub);
    const events = await sql`select type, exit_code from job_events where job_id = ${job.id} order by seq`;
    expect(events.at(-1)).toEqual({ type: "failed", exit_code: 137 });
    expect(events.map((e) => e.type)).toEqual(["queued", "placed", "running", "stop_requested", "exited", "failed"]);
  });

  for (const end of ["lost", "removed"] as const) {
    it(`fails a job stopped at its kill deadline whose node is ${end} before the exit, without retrying it`, async () => {
      const { stub, clock } = await region({
        grace_period_ms: 1_000,
        deadline_slack_ms: 1_000,
        heartbeat_timeout_ms: 60_000,
      });
      const { job, p } = await runningOnNode1(stub, clock, { max_runtime_s: 60 });
      await stub.registerNode(nodeReg(N("n2")));
      clock.advance(62_000);
      await stub.heartbeat(N("n1"), { at: clock.t, gpus: [], containers: [], running: [p.placement_id] });
      await stub.heartbeat(N("n2"), { at: clock.t, gpus: [], containers: [], running: [] });
      await runDurableObjectAlarm(stub);
      expect((await stub.pollPlacements(N("n1"), 0, 0)).placements[0]).toMatchObject({ desired: "stopped" });
      // n1 goes silent (or leaves the fleet) before its agent reports the exit; n2 has room for a retry.
      if (end === "lost") {
        clock.advance(61_000);
        await stub.heartbeat(N("n2"), { at: clock.t, gpus: [], containers: [], running: [] });
        await runDurableObjectAlarm(stub);
      } else expect(await stub.removeNode(N("n1"))).toEqual({ removed: true });
      expect(await stub.jobState(job.id)).toMatchObject({
        status: "failed",
        attempt: 1,
        failure_reason: "max runtime exceeded",
        dead_lettered: false,
      });
    });
  }

  it("runs a gang once every rank has started, also when one rank has already exited 0 before another starts", async () => {
    const { stub, clock } = await region();
    for (const n of ["a1", "a2"]) await stub.registerNode(nodeReg(N(n), { zone: "za" }));
    const job = await jobFor({ gpu_count: 16 });
    await stub.submit(job);
    const [m0, m1] = (await stub.jobState(job.id))!.placements;
    // Rank 0 starts at T0 + 1 s and is done by T0 + 5 s, while rank 1's node is still pulling.
    clock.advance(1_000);
    await stub.reportEvent(N("a1"), ev("running", m0!.placement_id, clock.t));
    await stub.reportEvent(N("a2"), ev("pulling", m1!.placement_id, clock.t));
    expect(await stub.jobState(job.id)).toMatchObject({ status: "placed" });
    clock.advance(4_000);
    await stub.reportEvent(N("a1"), ev("exited", m0!.placement_id, clock.t, { exit_code: 0 }));
    expect(await stub.jobState(job.id)).toMatchObject({ status: "placed" });
    // Rank 1 starts at T0 + 30 s: now every rank has started.
    clock.advance(25_000);
    await stub.reportEvent(N("a2"), ev("running", m1!.placement_id, clock.t));
    expect(await stub.jobState(job.id)).toMatchObject({ status: "running" });
    clock.advance(10_000);
    await stub.reportEvent(N("a2"), ev("exited", m1!.placement_id, clock.t, { exit_code: 0 }));
    expect(await stub.jobState(job.id)).toMatchObject({ status: "succeeded", exit_code: 0 });

    expect(await runDurableObjectAlarm(stub)).toBe(true);
    const [row] = await sql`select status, started_at, finished_at from jobs where id = ${job.id}`;
    expect(row).toMatchObject({ status: "succeeded" });
    expect(row!.started_at?.getTime()).toBe(T0 + 30_000);
    expect(row!.finished_at.getTime()).toBe(T0 + 40_000);
    const events = await sql`select type, placement_id from job_events where job_id = ${job.id} order by seq`;
    expect(events.map((e) => [e.type, e.placement_id])).toEqual([
      ["queued", null],
      ["placed", m0!.placement_id],
      ["placed", m1!.placement_id],
      ["running", m0!.placement_id],
      ["pulling", m1!.placement_id],
      ["exited", m0!.placement_id],
      ["running", m1!.placement_id],
      ["exited", m1!.placement_id],
      ["succeeded", null],
    ]);
    // Each rank is billed from its own start: 8 GPUs × 4 s and 8 GPUs × 10 s.
    const usage =
      await sql`select job_run_id, gpu_seconds::int from usage_events where job_id = ${job.id} order by gpu_seconds`;
    expect(usage.map((u) => [u.job_run_id, u.gpu_seconds])).toEqual([
      [m0!.placement_id, 32],
      [m1!.placement_id, 80],
    ]);
  });
});

describe("RegionScheduler: failures", () => {
  it("node loss → retry elsewhere with backoff → dead letter with every reason → re-drive", async () => {
    const { stub, clock } = await region({
      heartbeat_timeout_ms: 60_000,
      retry_base_ms: 10_000,
      housekeeping_ms: 5_000,
    });
    await stub.registerNode(nodeReg(N("a")));
    const job = await jobFor({ gpu_count: 8, max_attempts: 2 });
    await stub.submit(job);
    const first = await placementOf(stub, job.id);
    expect(first.node_id).toBe(N("a"));
    await stub.reportEvent(N("a"), ev("running", first.placement_id, clock.t));

    // a goes silent; b registers and keeps beating.
    clock.advance(30_000);
    await stub.registerNode(nodeReg(N("b")));
    clock.advance(31_000);
    await stub.heartbeat(N("b"), { at: clock.t, gpus: [], containers: [], running: [] });
    await runDurableObjectAlarm(stub);
    const retrying = await stub.jobState(job.id);
    expect(retrying).toMatchObject({ status: "queued", attempt: 1, failure_reason: `node ${N("a")} lost` });
    // backoff 10 s × 2^0 with ±20 % jitter
    expect(retrying!.next_attempt_at! - clock.t).toBeGreaterThanOrEqual(8_000);
    expect(retrying!.next_attempt_at! - clock.t).toBeLessThanOrEqual(12_000);
    expect(retrying!.waiting_reason).toMatch(new RegExp(`^retrying at .* after: node ${N("a")} lost$`));
    // Queued, but backing off rather than waiting for capacity: the autoscaler is not asked to buy for it.
    const backingOff = (await stub.capacitySnapshot()).queues.find((q) => q.tier === job.tier);
    expect(backingOff).toMatchObject({ queued_jobs: 1, queued_gpus: 8, waiting: [] });
    expect((await stub.listNodes()).map((n) => [n.node_id, n.state])).toEqual([
      [N("a"), "lost"],
      [N("b"), "ready"],
    ]);

    clock.t = retrying!.next_attempt_at!;
    await stub.heartbeat(N("b"), { at: clock.t, gpus: [], containers: [], running: [] });
    await runDurableObjectAlarm(stub);
    const second = await placementOf(stub, job.id);
    expect(second).toMatchObject({ node_id: N("b"), attempt: 2 });

    // b goes silent too: the second failure is the last allowed.
    clock.advance(61_000);
    await runDurableObjectAlarm(stub);
    expect(await stub.jobState(job.id)).toMatchObject({ status: "failed", dead_lettered: true, attempt: 2 });
    expect(await stub.deadLetters()).toEqual([
      {
        job_id: job.id,
        account_id: accountId,
        attempts: 2,
        dead_lettered_at: clock.t,
        reasons: [`attempt 1: node ${N("a")} lost`, `attempt 2: node ${N("b")} lost`],
      },
    ]);

    // a comes back (its agent runs nothing we moved away), and the operator re-drives the job.
    await stub.heartbeat(N("a"), { at: clock.t, gpus: [], containers: [], running: [] });
    expect(await stub.redrive(job.id)).toEqual({ ok: true, status: "placed" });
    expect(await stub.jobState(job.id)).toMatchObject({
      status: "placed",
      attempt: 3,
      dead_lettered: false,
      max_attempts: 2,
    });
    expect(await stub.deadLetters()).toEqual([]);
    expect(await stub.redrive(job.id)).toEqual({ ok: false, status: "placed" });
  });

  it("a failure the agent says another attempt would repeat is dead-lettered at once; a retryable one is retried", async () => {
    const { stub, clock } = await region({ retry_base_ms: 10_000 });
    await stub.registerNode(nodeReg(N("a")));
    const missing = await jobFor({ max_attempts: 3 });
    await stub.submit(missing);
    const p = await placementOf(stub, missing.id);
    const reason = "image pull failed: r/x:1 not found (manifest unknown)";
    await stub.reportEvent(N("a"), ev("failed", p.placement_id, clock.t, { reason, retryable: false }));
    expect(await stub.jobState(missing.id)).toMatchObject({
      status: "failed",
      dead_lettered: true,
      attempt: 1,
      failure_reason: reason,
    });
    expect((await stub.deadLetters()).map((d) => [d.job_id, d.attempts, d.reasons])).toEqual([
      [missing.id, 1, [`attempt 1: ${reason}`]],
    ]);

    // The same failure without the flag (an older agent, or a cause that may pass): retried.
    const flaky = await jobFor({ max_attempts: 3 });
    await stub.submit(flaky);
    const q = await placementOf(stub, flaky.id);
    const unreachable = "image pull failed: registry unreachable for r/x:1 (connection refused)";
    await stub.reportEvent(N("a"), ev("failed", q.placement_id, clock.t, { reason: unreachable }));
    expect(await stub.jobState(flaky.id)).toMatchObject({ status: "queued", attempt: 1, dead_lettered: false });
  });

  it("keeps a lost node lost while its agent still runs work that was moved away", async () => {
    const { stub, clock } = await region({ heartbeat_timeout_ms: 60_000 });
    await stub.registerNode(nodeReg(N("a")));
    const job = await jobFor();
    await stub.submit(job);
    const p = await placementOf(stub, job.id);
    clock.advance(61_000);
    await runDurableObjectAlarm(stub);
    expect(await stub.heartbeat(N("a"), { at: clock.t, gpus: [], containers: [], running: [p.placement_id] })).toEqual({
      ok: true,
      state: "lost",
    });
    expect(await stub.heartbeat(N("a"), { at: clock.t, gpus: [], containers: [], running: [] })).toEqual({
      ok: true,
      state: "ready",
    });
  });

  it("retries a failed attempt of a gang: the other members are stopped, then all move", async () => {
    const { stub, clock } = await region({ retry_base_ms: 1_000 });
    await stub.registerNode(nodeReg(N("a1"), { zone: "za", address: "10.0.0.1" }));
    await stub.registerNode(nodeReg(N("a2"), { zone: "za", address: "10.0.0.2" }));
    await stub.registerNode(nodeReg(N("b1"), { zone: "zb" }));
    const job = await jobFor({ gpu_count: 16 });
    await stub.submit(job);
    const state = await stub.jobState(job.id);
    expect(state!.placements.map((p) => [p.node_id, p.gpu_indices.length, p.zone, p.gang_index])).toEqual([
      [N("a1"), 8, "za", 0],
      [N("a2"), 8, "za", 1],
    ]);
    const [m0, m1] = state!.placements;
    // Each node's placement says its place in the gang and where rank 0 is (the agent passes them on
    // as SCALAR_NODE_RANK / _NUM_NODES / MASTER_ADDR).
    for (const [node, rank] of [
      [N("a1"), 0],
      [N("a2"), 1],
    ] as const) {
      const set = await stub.pollPlacements(node, 0, 0);
      expect(set.placements.map((p) => [p.gang_index, p.gang_size, p.gang_master_address])).toEqual([
        [rank, 2, "10.0.0.1"],
      ]);
    }
    // The outbox stores each run's rank in Postgres (the API's placements and log lines show it).
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    const stored = await sql`select node_id, gang_index from job_runs where job_id = ${job.id} order by gang_index`;
    expect(stored.map((r) => [r.node_id, r.gang_index])).toEqual([
      [N("a1"), 0],
      [N("a2"), 1],
    ]);
    // A one-node job on an addressed node gets no rendezvous address.
    const single = await jobFor({ gpu_count: 1 });
    await stub.submit(single);
    const b1 = await stub.pollPlacements(N("b1"), 0, 0);
    expect(b1.placements.map((p) => [p.job_id, p.gang_size, p.gang_master_address])).toEqual([[single.id, 1, null]]);
    await stub.reportEvent(N("a1"), ev("running", m0!.placement_id, clock.t));
    await stub.reportEvent(N("a2"), ev("running", m1!.placement_id, clock.t));
    expect(await stub.jobState(job.id)).toMatchObject({ status: "running" });
    await stub.reportEvent(N("a1"), ev("exited", m0!.placement_id, clock.t, { exit_code: 1 }));
    const afterFail = await stub.jobState(job.id);
    expect(afterFail).toMatchObject({ status: "queued", failure_reason: "exit code 1" });
    const a2 = await stub.pollPlacements(N("a2"), 0, 0);
    expect(a2.placements).toEqual([expect.objectContaining({ placement_id: m1!.placement_id, desired: "stopped" })]);
    await stub.reportEvent(N("a2"), ev("exited", m1!.placement_id, clock.t, { exit_code: 143 }));
    clock.t = afterFail!.next_attempt_at!;
    await runDurableObjectAlarm(stub);
    expect(await stub.jobState(job.id)).toMatchObject({ status: "placed", attempt: 2 });
  });

  it("counts a retry's wait for capacity from the end of its backoff, not from the job's submission", async () => {
    const { stub, clock } = await region({ retry_base_ms: 1_000 });
    await stub.registerNode(nodeReg(N("a")));
    const flex = await jobFor({ tier: "flex", gpu_count: 8, max_attempts: 2, max_runtime_s: 86_400 });
    await stub.submit(flex);
    const first = await placementOf(stub, flex.id);
    await stub.reportEvent(N("a"), ev("running", first.placement_id, clock.t));
    // It runs 7 hours (past the 6 h after which a waiting Flex job is promoted), then fails while a
    // Fast job waits for the node.
    clock.advance(7 * 3_600_000);
    await stub.heartbeat(N("a"), { at: clock.t, gpus: [], containers: [], running: [first.placement_id] });
    const fast = await jobFor({ gpu_count: 8 });
    await stub.submit(fast);
    await stub.reportEvent(N("a"), ev("exited", first.placement_id, clock.t, { exit_code: 1 }));
    const retrying = (await stub.jobState(flex.id))!;
    expect(retrying).toMatchObject({ status: "queued", attempt: 1 });
    expect(await stub.jobState(fast.id)).toMatchObject({ status: "placed" });
    clock.t = retrying.next_attempt_at! + 10 * 60_000;
    await stub.heartbeat(N("a"), { at: clock.t, gpus: [], containers: [], running: [] });
    await runDurableObjectAlarm(stub);
    // Ten minutes of waiting, not 7 h 10 min: the autoscaler's Flex deadline counts from here.
    const queue = (await stub.capacitySnapshot()).queues.find((q) => q.tier === "flex")!;
    expect(queue.oldest_wait_ms).toBe(10 * 60_000);
    expect(queue.waiting).toEqual([expect.objectContaining({ job_id: flex.id, waited_ms: 10 * 60_000 })]);

    // The Fast job ends; the retry runs and fails too (dead-lettered) while another job waits for the
    // node. Re-driven an hour later, it has waited from the re-drive.
    const fastRun = await placementOf(stub, fast.id);
    await stub.reportEvent(N("a"), ev("running", fastRun.placement_id, clock.t));
    await stub.reportEvent(N("a"), ev("exited", fastRun.placement_id, clock.t, { exit_code: 0 }));
    const second = await placementOf(stub, flex.id);
    expect(second).toMatchObject({ attempt: 2 });
    const other = await jobFor({ gpu_count: 8 });
    await stub.submit(other);
    await stub.reportEvent(N("a"), ev("running", second.placement_id, clock.t));
    await stub.reportEvent(N("a"), ev("exited", second.placement_id, clock.t, { exit_code: 1 }));
    expect(await stub.jobState(flex.id)).toMatchObject({ status: "failed", dead_lettered: true });
    clock.advance(3_600_000);
    expect(await stub.redrive(flex.id)).toEqual({ ok: true, status: "queued" });
    clock.advance(5 * 60_000);
    const redriven = (await stub.capacitySnapshot()).queues.find((q) => q.tier === "flex")!;
    expect(redriven.waiting).toEqual([expect.objectContaining({ job_id: flex.id, waited_ms: 5 * 60_000 })]);
  });

  it("places a gang's retry only once every run of the failed attempt has ended", async () => {
    const { stub, clock } = await region({ retry_base_ms: 1_000 });
    for (const n of ["a1", "a2", "a3"]) await stub.registerNode(nodeReg(N(n), { zone: "za" }));
    const job = await jobFor({ gpu_count: 16 });
    await stub.submit(job);
    const [m0, m1] = (await stub.jobState(job.id))!.placements;
    expect([m0!.node_id, m1!.node_id]).toEqual([N("a1"), N("a2")]);
    await stub.reportEvent(N("a1"), ev("running", m0!.placement_id, clock.t));
    await stub.reportEvent(N("a2"), ev("running", m1!.placement_id, clock.t));
    await stub.reportEvent(N("a1"), ev("exited", m0!.placement_id, clock.t, { exit_code: 1 }));
    const afterFail = await stub.jobState(job.id);
    expect(afterFail).toMatchObject({ status: "queued", failure_reason: "exit code 1" });
    // Past the backoff rank 1, asked to stop, still runs (checkpointing, say): a1 and a3 are free,
    // but attempt 2 waits rather than run beside it.
    clock.t = afterFail!.next_attempt_at!;
    await stub.heartbeat(N("a2"), { at: clock.t, gpus: [], containers: [], running: [m1!.placement_id] });
    await runDurableObjectAlarm(stub);
    expect(await stub.jobState(job.id)).toMatchObject({
      status: "queued",
      attempt: 1,
      waiting_reason: `waiting for attempt 1 to stop: still running on node ${N("a2")}`,
    });
    // Nor is it capacity the autoscaler should buy for meanwhile.
    const queues = (await stub.capacitySnapshot()).queues;
    expect(queues.flatMap((q) => q.waiting.map((w) => w.job_id))).not.toContain(job.id);
    // Its exit ends the wait at once.
    await stub.reportEvent(N("a2"), ev("exited", m1!.placement_id, clock.t, { exit_code: 143 }));
    expect(await stub.jobState(job.id)).toMatchObject({ status: "placed", attempt: 2 });
  });

  it("places a re-driven gang only once the dead attempt's other ranks have stopped", async () => {
    const { stub, clock } = await region();
    for (const n of ["a1", "a2", "a3"]) await stub.registerNode(nodeReg(N(n), { zone: "za" }));
    const job = await jobFor({ gpu_count: 16, max_attempts: 1 });
    await stub.submit(job);
    const [m0, m1] = (await stub.jobState(job.id))!.placements;
    await stub.reportEvent(N("a1"), ev("running", m0!.placement_id, clock.t));
    await stub.reportEvent(N("a2"), ev("running", m1!.placement_id, clock.t));
    await stub.reportEvent(N("a1"), ev("exited", m0!.placement_id, clock.t, { exit_code: 1 }));
    expect(await stub.jobState(job.id)).toMatchObject({ status: "failed", dead_lettered: true });
    // Re-driven while rank 1 still stops: queued, not placed beside it.
    expect(await stub.redrive(job.id)).toEqual({ ok: true, status: "queued" });
    expect((await stub.jobState(job.id))!.waiting_reason).toBe(
      `waiting for attempt 1 to stop: still running on node ${N("a2")}`,
    );
    // A heartbeat that no longer lists it, a heartbeat cycle after the stop, ends it: the job is placed.
    clock.advance(20_000);
    await stub.heartbeat(N("a2"), { at: clock.t, gpus: [], containers: [], running: [] });
    expect(await stub.jobState(job.id)).toMatchObject({ status: "placed", attempt: 2 });
  });
});

describe("RegionScheduler: restart", () => {
  it("bills the runs of a node lost right after a restart to its stored last heartbeat, not to the restart", async () => {
    const { stub, clock } = await region();
    const { p } = await runningOnNode1(stub, clock, { gpu_count: 1 });
    clock.advance(61_000);
    await stub.heartbeat(N("n1"), { at: clock.t, gpus: [], containers: [], running: [p.placement_id] });
    // The sweep stores the heartbeat (every node_sync_ms); then the node falls silent.
    clock.advance(60_000);
    await runDurableObjectAlarm(stub);
    await runInDurableObject(stub, async (_obj, state) => {
      const stored = state.storage.sql
        .exec<{ at: number }>("select last_heartbeat_at as at from nodes where id = ?", N("n1"))
        .one().at;
      expect(stored).toBe(T0 + 61_000);
      // Restarted 30 s later: a fresh timeout, then lost.
      clock.advance(30_000);
      const restarted = new RegionScheduler(state, env);
      restarted.clock = clock;
      await restarted.alarm();
      expect((await restarted.listNodes())[0]!.state).toBe("ready");
      clock.advance(100_000);
      await restarted.alarm();
      expect((await restarted.listNodes())[0]!.state).toBe("lost");
      await restarted.alarm(); // its outbox delivers the run's usage
    });
    const usage = await sql`select period_end from usage_events where job_run_id = ${p.placement_id}`;
    expect(usage.map((u) => u.period_end.getTime())).toEqual([T0 + 61_000]);
  });

  it("keeps its queue, allocations and versions when the object restarts mid-queue", async () => {
    const { stub, clock } = await region();
    await stub.registerNode(nodeReg(N("n1")));
    const jobs = [await jobFor({ gpu_count: 4 }), await jobFor({ gpu_count: 4 }), await jobFor({ gpu_count: 4 })];
    for (const j of jobs) await stub.submit(j);
    const before = await Promise.all(jobs.map((j) => stub.jobState(j.id)));
    expect(before.map((s) => s!.status)).toEqual(["placed", "placed", "queued"]);
    const set = await stub.pollPlacements(N("n1"), 0, 0);

    await runInDurableObject(stub, async (_obj, state) => {
      // A new instance over the same storage: what the runtime does after eviction or a deploy.
      const restarted = new RegionScheduler(state, env);
      restarted.clock = clock;
      expect(await Promise.all(jobs.slice(0, 2).map((j) => restarted.jobState(j.id)))).toEqual(before.slice(0, 2));
      expect(await restarted.jobState(jobs[2]!.id)).toMatchObject({ status: "queued", attempt: 0, placements: [] });
      expect(await restarted.pollPlacements(N("n1"), 0, 0)).toEqual(set);
      expect((await restarted.listNodes())[0]!.free_gpus).toEqual([]);
      // A restart gives nodes a fresh timeout instead of declaring them lost.
      clock.advance(200_000);
      await restarted.alarm();
      expect((await restarted.listNodes())[0]!.state).toBe("ready");
      // The queue goes on: the first job's exit lets the third one in.
      const p = before[0]!.placements[0]!;
      await restarted.reportEvent(N("n1"), ev("exited", p.placement_id, clock.t, { exit_code: 0 }));
      expect(await restarted.jobState(jobs[2]!.id)).toMatchObject({
        status: "placed",
        placements: [expect.objectContaining({ gpu_indices: p.gpu_indices })],
      });
    });
  });
});

describe("RegionScheduler: resource use", () => {
  const MiB = 1024 * 1024;
  /** A run's own GPU as its placement shows it: figures that differ per GPU and per heartbeat. */
  const own = (index: number, beat: number) => ({
    index,
    utilisation_pct: 10 * index + beat,
    memory_used_mib: 1_000 * index + beat,
    memory_total_mib: 81_559,
  });
  /** The node's heartbeat number `beat`: every GPU measured (nvidia-smi), and these containers. */
  const heartbeat = (at: number, beat: number, containers: ContainerMetrics[]): Heartbeat => ({
    at,
    gpus: [0, 1, 2, 3, 4, 5, 6, 7].map((i) => ({ ...own(i, beat), healthy: true, temperature_c: 41, power_w: 310 })),
    containers,
    running: containers.map((c) => c.placement_id),
  });
  const container = (placement_id: string, cpu_pct: number) => ({
    placement_id,
    cpu_pct,
    memory_bytes: 3e9,
    memory_limit_bytes: 16_384 * MiB,
    pids: 7,
  });

  it("keeps each run's last sample, with its own GPUs only, in memory: no row written, none once it ends", async () => {
    const { stub, clock } = await region();
    await stub.registerNode(nodeReg(N("n1")));
    const [a, b] = [await jobFor({ gpu_count: 2 }), await jobFor({ gpu_count: 2 })];
    await stub.submit(a!);
    await stub.submit(b!);
    const [pa, pb] = [await placementOf(stub, a!.id), await placementOf(stub, b!.id)];
    expect(pa.gpu_indices.filter((g) => pb.gpu_indices.includes(g))).toEqual([]);
    for (const p of [pa, pb]) await stub.reportEvent(N("n1"), ev("running", p.placement_id, clock.t));
    expect(pa.metrics).toBeNull();

    clock.advance(10_000);
    const first = clock.t;
    const hb = heartbeat(first, 1, [container(pa.placement_id, 150), container(pb.placement_id, 40)]);
    expect(await rowsWritten(stub, (o) => o.heartbeat(N("n1"), hb))).toBe(0);
    expect((await placementOf(stub, a!.id)).metrics).toEqual({
      at: first,
      cpu_pct: 150,
      memory_bytes: 3e9,
      memory_limit_bytes: 16_384 * MiB,
      pids: 7,
      gpus: pa.gpu_indices.map((i) => own(i, 1)),
    });
    expect((await placementOf(stub, b!.id)).metrics).toMatchObject({
      cpu_pct: 40,
      gpus: pb.gpu_indices.map((i) => own(i, 1)),
    });

    // The next heartbeat replaces a's sample; b's container was not measured (its engine did not
    // answer), so b keeps its last one, as old as it is.
    clock.advance(10_000);
    await stub.heartbeat(
      N("n1"),
      heartbeat(clock.t, 2, [container(pa.placement_id, 90), { placement_id: pb.placement_id }]),
    );
    expect((await placementOf(stub, a!.id)).metrics).toMatchObject({
      at: clock.t,
      cpu_pct: 90,
      gpus: pa.gpu_indices.map((i) => own(i, 2)),
    });
    expect((await placementOf(stub, b!.id)).metrics).toMatchObject({ at: first, cpu_pct: 40 });

    await stub.reportEvent(N("n1"), ev("exited", pa.placement_id, clock.t, { exit_code: 0 }));
    expect(await stub.jobState(a!.id)).toMatchObject({
      status: "succeeded",
      placements: [expect.objectContaining({ metrics: null })],
    });

    await runInDurableObject(stub, async (_obj, state) => {
      // After a restart: none until the node's next heartbeat.
      const restarted = new RegionScheduler(state, env);
      restarted.clock = clock;
      expect((await restarted.jobState(b!.id))!.placements[0]!.metrics).toBeNull();
      await restarted.heartbeat(N("n1"), heartbeat(clock.t, 3, [container(pb.placement_id, 20)]));
      expect((await restarted.jobState(b!.id))!.placements[0]!.metrics).toMatchObject({ at: clock.t, cpu_pct: 20 });
    });

    // Its node removed, b's run ends: nothing of it stays.
    await stub.removeNode(N("n1"));
    expect((await stub.jobState(b!.id))!.placements[0]).toMatchObject({ status: "lost", metrics: null });
    expect(await runInDurableObject(stub, (instance) => insides(instance).state.metrics.size)).toBe(0);
  });
});

describe("RegionScheduler: capacity", () => {
  it("reserves GPUs that Flex work cannot use but Fast work can; releasing twice is safe", async () => {
    const { stub } = await region();
    await stub.registerNode(nodeReg(N("n1")));
    expect(
      await stub.reserve({
        reservation_id: "r1",
        gpu_model: "H100",
        gpu_count: 8,
        tier: "fast",
        expires_at: null,
        reason: "headroom",
      }),
    ).toEqual({
      ok: true,
      reservation_id: "r1",
      node_ids: [N("n1")],
    });
    expect(
      await stub.reserve({
        reservation_id: "r2",
        gpu_model: "H100",
        gpu_count: 1,
        tier: null,
        expires_at: null,
        reason: "x",
      }),
    ).toMatchObject({
      ok: false,
      code: "insufficient_capacity",
    });
    // Estimated at 2 h, capped by its 1-h max runtime: the autoscaler sees the estimate the packer uses.
    const flex = await jobFor({ tier: "flex", gpu_count: 2, estimated_duration_s: 7_200 });
    await stub.submit(flex);
    expect(await stub.jobState(flex.id)).toMatchObject({
      status: "queued",
      waiting_reason: "0/1 nodes: 1 free GPUs reserved for Fast",
    });
    const fast = await jobFor({ tier: "fast", gpu_count: 2 });
    expect(await stub.submit(fast)).toMatchObject({ status: "placed" });
    const snap = await stub.capacitySnapshot();
    expect(snap.by_model).toEqual([
      {
        gpu_model: "H100",
        total_gpus: 8,
        free_gpus: 0,
        busy_gpus: 2,
        reserved_gpus: 6,
        nodes_ready: 1,
        nodes_cordoned: 0,
        nodes_draining: 0,
      },
    ]);
    expect(snap.queues.find((q) => q.tier === "flex")).toMatchObject({
      queued_jobs: 1,
      queued_gpus: 2,
      waiting: [{ job_id: flex.id, gpu_count: 2, gpu_models: [], estimate_ms: 3_600_000 }],
    });
    expect(await stub.release("r1")).toEqual({ released: true });
    expect(await stub.release("r1")).toEqual({ released: false });
    expect(await stub.jobState(flex.id)).toMatchObject({ status: "placed" });
  });

  it("hands a reservation over to its replacement in one call: waiting Flex work never gets the GPUs", async () => {
    const { stub } = await region();
    await stub.registerNode(nodeReg(N("n1")));
    const headroom = (id: string, gpuCount: number, replaces?: string) =>
      stub.reserve({
        reservation_id: id,
        gpu_model: "H100",
        gpu_count: gpuCount,
        tier: "fast",
        expires_at: null,
        reason: "Fast headroom",
        replaces,
      });
    expect(await headroom("m1", 8)).toMatchObject({ ok: true, node_ids: [N("n1")] });
    const flex = await jobFor({ tier: "flex", gpu_count: 1 });
    await stub.submit(flex);
    expect(await stub.jobState(flex.id)).toMatchObject({
      status: "queued",
      waiting_reason: "0/1 nodes: 1 free GPUs reserved for Fast",
    });

    // The next minute's headroom takes over all 8 GPUs of the last one; the Flex job still waits.
    expect(await headroom("m2", 8, "m1")).toMatchObject({ ok: true, node_ids: [N("n1")] });
    expect((await stub.jobState(flex.id))?.status).toBe("queued");
    expect((await stub.capacitySnapshot()).by_model[0]).toMatchObject({ free_gpus: 0, reserved_gpus: 8 });
    // The same call again (a cycle run twice in a minute) and a late release of the old one change nothing.
    expect(await headroom("m2", 8, "m1")).toMatchObject({ ok: true, node_ids: [N("n1")] });
    expect(await stub.release("m1")).toEqual({ released: false });
    expect((await stub.jobState(flex.id))?.status).toBe("queued");

    // Less headroom: what the new one does not take goes to the waiting job in the same call.
    expect(await headroom("m3", 6, "m2")).toMatchObject({ ok: true });
    expect(await stub.jobState(flex.id)).toMatchObject({ status: "placed", waiting_reason: null });
    expect((await stub.capacitySnapshot()).by_model[0]).toMatchObject({ busy_gpus: 1, reserved_gpus: 6, free_gpus: 1 });
    // The node's view tells held GPUs from free ones (the Flex job's GPU is neither).
    const [node] = await stub.listNodes();
    expect(node!.held_gpus).toHaveLength(6);
    expect(node!.free_gpus).toHaveLength(1);
    expect(new Set([...node!.held_gpus, ...node!.free_gpus]).size).toBe(7);
  });

  it("release then reserve (the old way) lets the packer hand the headroom to Flex work in between", async () => {
    const { stub } = await region();
    await stub.registerNode(nodeReg(N("n1")));
    const req = { gpu_model: "H100", gpu_count: 8, tier: "fast", expires_at: null, reason: "Fast headroom" } as const;
    await stub.reserve({ ...req, reservation_id: "m1" });
    const flex = await jobFor({ tier: "flex", gpu_count: 1 });
    await stub.submit(flex);
    await stub.release("m1");
    expect((await stub.jobState(flex.id))?.status).toBe("placed");
    expect(await stub.reserve({ ...req, reservation_id: "m2" })).toMatchObject({
      ok: false,
      message: `7 of 8 H100 GPUs free and unreserved in ${(await stub.capacitySnapshot()).region}`,
    });
  });

  it("drains a node: no new work lands on it", async () => {
    const { stub } = await region();
    await stub.registerNode(nodeReg(N("n1")));
    expect(await stub.drain(N("n1"))).toEqual({ ok: true, state: "draining" });
    expect(await stub.drain(N("zz"))).toEqual({ ok: false, state: "unknown", pending: true });
    const job = await jobFor();
    await stub.submit(job);
    expect(await stub.jobState(job.id)).toMatchObject({
      status: "queued",
      waiting_reason: "0/1 nodes: 1 node draining",
    });
  });

  it("keeps a drain across a loss: the node comes back draining, takes no new work, and Postgres never says ready", async () => {
    const { stub, clock } = await region({ heartbeat_timeout_ms: 60_000 });
    await stub.registerNode(nodeReg(N("a")));
    expect(await stub.drain(N("a"))).toEqual({ ok: true, state: "draining" });
    // Silent past the timeout (an agent restarting for an upgrade, say): lost.
    clock.advance(61_000);
    await runDurableObjectAlarm(stub);
    expect((await stub.listNodes()).map((n) => n.state)).toEqual(["lost"]);
    const pgState = async () => (await sql`select state from nodes where id = ${N("a")}`)[0]?.state;
    // Lost, it stays drained for the capacity manager (out of supply for good), not a node booting.
    expect(await pgState()).toBe("draining");

    // Its heartbeat returns, running nothing: back, draining, never ready.
    const beat = () => stub.heartbeat(N("a"), { at: clock.t, gpus: [], containers: [], running: [] });
    expect(await beat()).toEqual({ ok: true, state: "draining" });
    expect((await stub.listNodes()).map((n) => n.state)).toEqual(["draining"]);
    const job = await jobFor();
    await stub.submit(job);
    expect(await stub.jobState(job.id)).toMatchObject({
      status: "queued",
      waiting_reason: "0/1 nodes: 1 node draining",
    });
    // Its agent registers again (a restart): still draining; the alarm places nothing there.
    await stub.registerNode(nodeReg(N("a")));
    clock.advance(1_000);
    await beat();
    await runDurableObjectAlarm(stub);
    expect(await stub.jobState(job.id)).toMatchObject({ status: "queued" });
    expect((await stub.capacitySnapshot()).by_model).toMatchObject([{ nodes_ready: 0, nodes_draining: 1 }]);
    expect(await pgState()).toBe("draining");
    const audit = await sql`select action, data from audit_log where target_id = ${N("a")} order by id`;
    expect(audit.map((a) => [a.action, a.data.state])).toEqual([
      ["node.registered", "ready"],
      ["node.draining", undefined],
      ["node.lost", undefined],
      ["node.recovered", "draining"],
      ["node.reregistered", "draining"],
    ]);
  });

  it("remembers a drain of a lost node or one not registered yet: each comes back draining", async () => {
    const { stub, clock } = await region({ heartbeat_timeout_ms: 60_000 });
    await stub.registerNode(nodeReg(N("a")));
    clock.advance(61_000);
    await runDurableObjectAlarm(stub);
    // Lost: drained all the same, for its return.
    expect(await stub.drain(N("a"))).toEqual({ ok: true, state: "lost" });
    // Not registered yet (written off for not booting, say): the object says so, and keeps the drain.
    expect(await stub.drain(N("b"))).toEqual({ ok: false, state: "unknown", pending: true });
    expect(await stub.drain(N("b"))).toEqual({ ok: false, state: "unknown", pending: true });

    expect(await stub.heartbeat(N("a"), { at: clock.t, gpus: [], containers: [], running: [] })).toEqual({
      ok: true,
      state: "draining",
    });
    await stub.registerNode(nodeReg(N("b")));
    expect(await stub.heartbeat(N("b"), { at: clock.t, gpus: [], containers: [], running: [] })).toEqual({
      ok: true,
      state: "draining",
    });
    expect((await stub.listNodes()).map((n) => [n.node_id, n.state])).toEqual([
      [N("a"), "draining"],
      [N("b"), "draining"],
    ]);
    const job = await jobFor();
    await stub.submit(job);
    expect(await stub.jobState(job.id)).toMatchObject({
      status: "queued",
      waiting_reason: "0/2 nodes: 2 node draining",
    });

    // A kept drain goes with `removeNode`: a node of that id registering later is a new node.
    expect(await stub.drain(N("c"))).toMatchObject({ ok: false, pending: true });
    expect(await stub.removeNode(N("c"))).toEqual({ removed: false });
    await stub.registerNode(nodeReg(N("c")));
    expect(await stub.jobState(job.id)).toMatchObject({ status: "placed" });

    await runDurableObjectAlarm(stub);
    const rows = await sql`select id, state from nodes where id in ${sql([N("a"), N("b"), N("c")])} order by id`;
    expect(rows.map((r) => r.state)).toEqual(["draining", "draining", "ready"]);
    const audit = await sql`select action, data from audit_log where target_id = ${N("b")} order by id`;
    expect(audit.map((a) => [a.action, a.data.registered ?? a.data.state])).toEqual([
      ["node.draining", false],
      ["node.registered", "draining"],
    ]);
  });

  it("does not write a row per heartbeat", async () => {
    const { stub, clock } = await region();
    await stub.registerNode(nodeReg(N("n1")));
    const count = () =>
      runInDurableObject(stub, (_o, state) => ({
        outbox: state.storage.sql.exec<{ n: number }>("select count(*) as n from outbox").one().n,
        node: state.storage.sql.exec<{ hb: number | null }>("select last_heartbeat_at as hb from nodes").one().hb,
      }));
    const before = await count();
    for (let i = 0; i < 5; i++) {
      clock.advance(1_000);
      expect(await stub.heartbeat(N("n1"), { at: clock.t, gpus: [], containers: [], running: [] })).toEqual({
        ok: true,
        state: "ready",
      });
    }
    expect(await count()).toEqual(before);
    expect(await stub.heartbeat("nope", { at: clock.t, gpus: [], containers: [], running: [] })).toEqual({
      ok: false,
      state: "unknown",
    });
  });

  it("forgets a removed node: its GPUs no longer count, and work on it is retried elsewhere", async () => {
    const { stub, clock } = await region({ retry_base_ms: 1_000 });
    await stub.registerNode(nodeReg(N("n1")));
    const job = await jobFor({ gpu_count: 2 });
    await stub.submit(job);
    const placed = await placementOf(stub, job.id);
    expect(placed.node_id).toBe(N("n1"));
    await stub.reportEvent(N("n1"), ev("running", placed.placement_id, clock.t));
    await stub.registerNode(nodeReg(N("n2")));

    expect(await stub.removeNode(N("n1"))).toEqual({ removed: true });
    expect((await stub.listNodes()).map((n) => n.node_id)).toEqual([N("n2")]);
    expect((await stub.capacitySnapshot()).by_model).toMatchObject([{ total_gpus: 8, nodes_ready: 1 }]);
    expect(await stub.jobState(job.id)).toMatchObject({ status: "queued", attempt: 1 });
    clock.advance(2_000);
    await runDurableObjectAlarm(stub);
    const again = await placementOf(stub, job.id);
    expect([again.node_id, again.attempt]).toEqual([N("n2"), 2]);
    expect(await stub.removeNode(N("n1"))).toEqual({ removed: false });
    // Its agent's heartbeat is now a stranger's (its token is revoked before removal in production).
    expect(await stub.heartbeat(N("n1"), { at: clock.t, gpus: [], containers: [], running: [] })).toEqual({
      ok: false,
      state: "unknown",
    });
  });

  it("takes an unhealthy GPU out of service", async () => {
    const { stub, clock } = await region();
    await stub.registerNode(nodeReg(N("n1")));
    await stub.heartbeat(N("n1"), { at: clock.t, gpus: [{ index: 3, healthy: false }], containers: [], running: [] });
    const job = await jobFor({ gpu_count: 8 });
    await stub.submit(job);
    expect(await stub.jobState(job.id)).toMatchObject({
      status: "queued",
      waiting_reason: "0/1 nodes: 1 insufficient free GPUs",
    });
    expect((await stub.listNodes())[0]).toMatchObject({ unhealthy_gpus: [3], free_gpus: [0, 1, 2, 4, 5, 6, 7] });
  });

  it("cordons a node whose container engine hangs, and places there again once it answers", async () => {
    const { stub, clock } = await region();
    await stub.registerNode(nodeReg(N("n1")));
    const first = await jobFor();
    await stub.submit(first);
    const running = await placementOf(stub, first.id);
    const stuck = stuckSince(clock.t - 61_000);
    const beat = heartbeats(stub, clock, N("n1"), [running.placement_id]);
    await beat(stuck);
    const view = (await stub.listNodes())[0]!;
    expect(view).toMatchObject({ state: "cordoned", engine_stuck: stuck });
    // What runs there runs on; nothing new goes there, and the job says why.
    const second = await jobFor();
    await stub.submit(second);
    expect(await stub.jobState(second.id)).toMatchObject({
      status: "queued",
      waiting_reason: "0/1 nodes: 1 node cordoned",
    });
    expect(await stub.jobState(first.id)).toMatchObject({ status: "placed" });
    expect((await stub.capacitySnapshot()).by_model).toMatchObject([
      { nodes_ready: 0, nodes_cordoned: 1, free_gpus: 0 },
    ]);
    // Still stuck on another call: still cordoned.
    clock.advance(10_000);
    await beat({ ...stuck, operation: "remove" });
    await runDurableObjectAlarm(stub);
    expect(await stub.jobState(second.id)).toMatchObject({ status: "queued" });
    // The engine answers again: the node takes work at once.
    clock.advance(10_000);
    await beat();
    expect((await stub.listNodes())[0]).toMatchObject({ state: "ready", engine_stuck: null });
    await runDurableObjectAlarm(stub);
    expect(await stub.jobState(second.id)).toMatchObject({ status: "placed", waiting_reason: null });
  });

  it("a node registering with its engine unreachable is cordoned from the start; a job waiting is placed once it answers", async () => {
    const { stub, clock } = await region();
    const job = await jobFor();
    await stub.submit(job);
    const down = { since: clock.t - 5_000, operation: "ping", detail: "the container engine is not reachable: ENOENT" };
    await stub.registerNode(nodeReg(N("n1"), { engine_stuck: down }));
    expect((await stub.listNodes())[0]).toMatchObject({ state: "cordoned", engine_stuck: down });
    expect(await stub.jobState(job.id)).toMatchObject({
      status: "queued",
      waiting_reason: "0/1 nodes: 1 node cordoned",
    });
    clock.advance(10_000);
    await stub.heartbeat(N("n1"), { at: clock.t, gpus: [], containers: [], running: [] });
    await runDurableObjectAlarm(stub);
    expect(await stub.jobState(job.id)).toMatchObject({ status: "placed" });
    // A registration without the report (the engine answers at the agent's next start) clears it.
    await stub.registerNode(nodeReg(N("n1"), { engine_stuck: down }));
    expect((await stub.listNodes())[0]).toMatchObject({ state: "cordoned" });
    await stub.registerNode(nodeReg(N("n1")));
    expect((await stub.listNodes())[0]).toMatchObject({ state: "ready", engine_stuck: null });
  });

  it("cordons a node by hand: nothing new lands until the operator uncordons it, then what waits is placed at once", async () => {
    const { stub, clock } = await region();
    await stub.registerNode(nodeReg(N("n1")));
    const by = "user:3f1c2b0e";
    expect(await stub.cordon(N("n1"), { reason: "inspecting NVLink", by })).toEqual({ ok: true, state: "cordoned" });
    expect(await stub.cordon(N("zz"), { reason: null, by })).toEqual({ ok: false, state: "unknown" });
    // Again: nothing changes, the first cordon stays.
    clock.advance(1_000);
    expect(await stub.cordon(N("n1"), { reason: "again", by: "user:other" })).toEqual({ ok: true, state: "cordoned" });
    expect((await stub.listNodes())[0]).toMatchObject({
      state: "cordoned",
      engine_stuck: null,
      cordon: { since: T0, reason: "inspecting NVLink", by },
    });
    const job = await jobFor();
    await stub.submit(job);
    expect(await stub.jobState(job.id)).toMatchObject({
      status: "queued",
      waiting_reason: "0/1 nodes: 1 node cordoned",
    });
    expect((await stub.capacitySnapshot()).by_model).toMatchObject([
      { nodes_ready: 0, nodes_cordoned: 1, free_gpus: 0 },
    ]);
    await runDurableObjectAlarm(stub);
    expect(await stub.jobState(job.id)).toMatchObject({ status: "queued" });
    // The agent hears it in its heartbeat's answer too.
    const beat = () => stub.heartbeat(N("n1"), { at: clock.t, gpus: [], containers: [], running: [] });
    expect(await beat()).toEqual({ ok: true, state: "cordoned" });

    // Uncordoned: placed in the same call, no alarm needed.
    clock.advance(1_000);
    expect(await stub.uncordon(N("n1"), by)).toEqual({ ok: true, state: "ready" });
    expect(await stub.jobState(job.id)).toMatchObject({ status: "placed", waiting_reason: null });
    expect(await beat()).toEqual({ ok: true, state: "ready" });
    expect((await stub.listNodes())[0]).toMatchObject({ state: "ready", cordon: null });
    expect(await stub.uncordon(N("n1"), by)).toEqual({ ok: true, state: "ready" });
    expect(await stub.uncordon(N("zz"))).toEqual({ ok: false, state: "unknown" });
    // A draining node is not cordoned: it takes no new work already, for good.
    await stub.drain(N("n1"));
    expect(await stub.cordon(N("n1"), { reason: null, by })).toEqual({ ok: false, state: "draining" });

    await runDurableObjectAlarm(stub);
    const audit = await sql`select action, data from audit_log where target_id = ${N("n1")} order by id`;
    expect(audit.map((a) => [a.action, a.data])).toEqual([
      ["node.registered", expect.anything()],
      ["node.cordoned", { reason: "operator", detail: "inspecting NVLink", by }],
      [
        "node.uncordoned",
        {
          reason: "operator",
          by,
          lifted: { since: new Date(T0).toISOString(), reason: "inspecting NVLink", by },
        },
      ],
      ["node.draining", {}],
    ]);
  });

  it("keeps a node cordoned while either cordon holds: its hung engine's or its operator's", async () => {
    const { stub, clock } = await region();
    await stub.registerNode(nodeReg(N("n1")));
    const stuck = stuckSince(clock.t);
    const beat = heartbeats(stub, clock, N("n1"));
    await beat(stuck);
    const by = "api_key:7d0e";
    clock.advance(1_000);
    expect(await stub.cordon(N("n1"), { reason: null, by })).toEqual({ ok: true, state: "cordoned" });
    const job = await jobFor();
    await stub.submit(job);
    // The engine answers: the operator's cordon holds.
    clock.advance(1_000);
    await beat();
    expect((await stub.listNodes())[0]).toMatchObject({ state: "cordoned", engine_stuck: null, cordon: { by } });
    await runDurableObjectAlarm(stub);
    expect(await stub.jobState(job.id)).toMatchObject({
      status: "queued",
      waiting_reason: "0/1 nodes: 1 node cordoned",
    });
    // Hung again, then the operator lifts theirs: the engine's holds.
    clock.advance(1_000);
    await beat(stuck);
    clock.advance(1_000);
    expect(await stub.uncordon(N("n1"), by)).toEqual({ ok: true, state: "cordoned" });
    expect(await stub.jobState(job.id)).toMatchObject({ status: "queued" });
    // Both lifted: placed on the heartbeat that ends the last one.
    clock.advance(1_000);
    await beat();
    expect(await stub.jobState(job.id)).toMatchObject({ status: "placed" });

    await runDurableObjectAlarm(stub);
    const audit = await sql`select action, data from audit_log where target_id = ${N("n1")} order by id`;
    expect(audit.map((a) => [a.action, a.data.reason, a.data.still_cordoned ?? false])).toEqual([
      ["node.registered", undefined, false],
      ["node.cordoned", "engine_stuck", false],
      ["node.cordoned", "operator", false],
      ["node.uncordoned", "engine_answers", true],
      ["node.cordoned", "engine_stuck", false],
      ["node.uncordoned", "operator", true],
      ["node.uncordoned", "engine_answers", false],
    ]);
  });
});

/** An endpoint of two 1-GPU replicas serving GET /healthz on 8080. */
function endpointFor(overrides: Partial<EndpointSpec> = {}): EndpointSpec {
  return {
    id: `ep-${crypto.randomUUID().slice(0, 8)}`,
    version: 1,
    account_id: accountId,
    tier: "fast",
    image: "127.0.0.1:5000/test/busybox:1",
    command: ["httpd", "-f"],
    args: [],
    env: [],
    gpu_count: 1,
    gpu_models: [],
    cpu_milli: 1_000,
    memory_mib: 1_024,
    min_replicas: 2,
    max_replicas: 2,
    port: 8080,
    health_path: "/healthz",
    ...overrides,
  };
}

describe("RegionScheduler: endpoints", () => {
  it("keeps min_replicas placed, restarts a replica that exits, and stops them on removal", async () => {
    const { stub, clock } = await region({ retry_base_ms: 1_000 });
    await stub.registerNode(nodeReg(N("n1")));
    const spec = endpointFor({ gpu_count: 2, cpu_milli: 2_000, memory_mib: 4_096, max_replicas: 4 });
    const state = (await stub.ensureEndpoint(spec))!;
    expect(state.desired_replicas).toBe(2);
    expect(state.replicas.map((r) => [r.status, r.placement?.kill_deadline])).toEqual([
      ["placed", null],
      ["placed", null],
    ]);
    const r0 = state.replicas[0]!.placement!;
    // Each replica's placement carries the endpoint's readiness check.
    const placed = await stub.pollPlacements(N("n1"), 0, 0);
    expect(placed.placements.map((p) => p.health_check)).toEqual([
      { port: 8080, path: "/healthz" },
      { port: 8080, path: "/healthz" },
    ]);
    await stub.reportEvent(N("n1"), ev("running", r0.placement_id, clock.t));
    const readyOf = async () => (await stub.endpointState(spec.id))!.replicas.map((r) => r.ready);
    expect(await readyOf()).toEqual([null, false]); // running, not checked yet; placed, not running
    const beat = (ready: boolean) =>
      stub.heartbeat(N("n1"), {
        at: clock.t,
        gpus: [],
        containers: [{ placement_id: r0.placement_id, ready }],
        running: [r0.placement_id],
      });
    await beat(true);
    expect(await readyOf()).toEqual([true, false]);
    await beat(false);
    expect(await readyOf()).toEqual([false, false]);
    await beat(true);
    clock.advance(5_000);
    await stub.reportEvent(N("n1"), ev("exited", r0.placement_id, clock.t, { exit_code: 1 }));
    const restarting = await stub.endpointState(spec.id);
    expect(restarting!.replicas[0]).toMatchObject({
      status: "queued",
      placement: null,
      starts: 1,
      last_exit: "exit code 1",
    });
    clock.advance(2_000);
    await runDurableObjectAlarm(stub);
    expect((await stub.endpointState(spec.id))!.replicas[0]).toMatchObject({
      status: "placed",
      placement: expect.objectContaining({ attempt: 2 }),
      starts: 2,
      last_exit: "exit code 1",
    });

    expect(await stub.removeEndpoint(spec.id, 2)).toEqual({ removed: true, version: 2 });
    expect(await stub.removeEndpoint(spec.id, 2)).toEqual({ removed: false, version: 2 });
    const set = await stub.pollPlacements(N("n1"), 0, 0);
    expect(set.placements.map((p) => p.desired)).toEqual(["stopped", "stopped"]);
    expect(await stub.endpointState(spec.id)).toBeNull();
  });

  it("restarts a replica that stops answering its health check, and one never ready within its startup timeout", async () => {
    const { stub, clock } = await region({ retry_base_ms: 1_000 });
    await stub.registerNode(nodeReg(N("n1")));
    const spec = endpointFor({ startup_timeout_s: 60 });
    const state = (await stub.ensureEndpoint(spec))!;
    const [a, b] = state.replicas.map((r) => r.placement!.placement_id) as [string, string];
    await stub.reportEvent(N("n1"), ev("running", a, clock.t));
    await stub.reportEvent(N("n1"), ev("running", b, clock.t));
    const beat = (readyA: boolean) =>
      stub.heartbeat(N("n1"), {
        at: clock.t,
        gpus: [],
        containers: [
          { placement_id: a, ready: readyA },
          { placement_id: b, ready: false },
        ],
        running: [a, b],
      });
    const desired = async () => {
      const set = await stub.pollPlacements(N("n1"), 0, 0);
      return Object.fromEntries(set.placements.map((p) => [p.placement_id === a ? "a" : "b", p.desired]));
    };
    await beat(true);
    clock.advance(20_000);
    await beat(false); // a fails from here
    clock.advance(20_000);
    await beat(false); // a: failing 20 s; b: 40 s since it started
    expect(await desired()).toEqual({ a: "running", b: "running" });
    clock.advance(10_000);
    await beat(false); // a: failing 30 s
    expect(await desired()).toEqual({ a: "stopped", b: "running" });
    clock.advance(10_000);
    await beat(false); // b: 60 s without being ready
    expect(await desired()).toEqual({ a: "stopped", b: "stopped" });

    await stub.reportEvent(N("n1"), ev("exited", a, clock.t, { exit_code: 143, stopped_by: "cancel" }));
    await stub.reportEvent(N("n1"), ev("exited", b, clock.t, { exit_code: 143, stopped_by: "cancel" }));
    const after = (await stub.endpointState(spec.id))!.replicas;
    expect(after.map((r) => [r.status, r.last_exit])).toEqual([
      ["queued", "unhealthy: GET /healthz on port 8080 failing for 30 s"],
      ["queued", "unhealthy: GET /healthz on port 8080 not ready within 60 s of starting"],
    ]);
    // They wait out the backoff, as after a crash...
    expect(after.map((r) => r.waiting_reason)).toEqual([
      expect.stringMatching(/^retrying at .* after: unhealthy: /),
      expect.stringMatching(/^retrying at .* after: unhealthy: /),
    ]);
    // ...unless the spec changes: a new spec is placed at once.
    const fixed = { ...spec, image: "127.0.0.1:5000/test/busybox:2" };
    await stub.ensureEndpoint(fixed);
    const again = (await stub.endpointState(spec.id))!.replicas;
    expect(again.map((r) => [r.status, r.starts, r.placement?.attempt])).toEqual([
      ["placed", 2, 2],
      ["placed", 2, 2],
    ]);
    // A startup-timeout change is not a new spec: the replicas are not replaced.
    await stub.ensureEndpoint({ ...fixed, startup_timeout_s: 600 });
    const set = await stub.pollPlacements(N("n1"), 0, 0);
    expect(set.placements.filter((p) => p.desired === "running").map((p) => p.attempt)).toEqual([2, 2]);
  });

  it("counts a replica brought back by a scale-up as waiting from then, not from its last crash", async () => {
    const { stub, clock } = await region({ retry_base_ms: 1_000 });
    await stub.registerNode(nodeReg(N("n1")));
    const spec = endpointFor({ tier: "flex", gpu_count: 8, min_replicas: 1, max_replicas: 1 });
    const r0 = (await stub.ensureEndpoint(spec))!.replicas[0]!.placement!;
    await stub.reportEvent(N("n1"), ev("running", r0.placement_id, clock.t));
    // It crashes (re-queued to wait from the end of its backoff), then the endpoint scales to zero.
    await stub.reportEvent(N("n1"), ev("exited", r0.placement_id, clock.t, { exit_code: 1 }));
    await stub.ensureEndpoint({ ...spec, version: 2, min_replicas: 0, scale_down_delay_s: 0 });
    await runDurableObjectAlarm(stub);
    expect((await stub.endpointState(spec.id))!.replicas).toEqual([]);
    // A day later a job holds the node, and the endpoint is scaled up again: its replica waits.
    clock.advance(86_400_000);
    await stub.heartbeat(N("n1"), { at: clock.t, gpus: [], containers: [], running: [] });
    const job = await jobFor({ gpu_count: 8 });
    await stub.submit(job);
    expect(await stub.jobState(job.id)).toMatchObject({ status: "placed" });
    await stub.ensureEndpoint({ ...spec, version: 3 });
    clock.advance(10 * 60_000);
    const flex = (await stub.capacitySnapshot()).queues.find((q) => q.tier === "flex")!;
    expect(flex.waiting.map((w) => w.waited_ms)).toEqual([10 * 60_000]);
  });

  it("bills a replica's run at the tier it was placed at when the endpoint's tier changes under it", async () => {
    const { stub, clock } = await region();
    await stub.registerNode(nodeReg(N("n1")));
    const spec = endpointFor({ min_replicas: 1, max_replicas: 1, gpu_count: 2 });
    const r0 = (await stub.ensureEndpoint(spec))!.replicas[0]!.placement!;
    await stub.reportEvent(N("n1"), ev("running", r0.placement_id, clock.t));
    clock.advance(60_000);
    // Now Flex: the replica is replaced, its old run stops while the job row already says flex.
    await stub.ensureEndpoint({ ...spec, tier: "flex" });
    clock.advance(5_000);
    await stub.reportEvent(N("n1"), ev("exited", r0.placement_id, clock.t, { exit_code: 0, stopped_by: "cancel" }));
    type Row = { kind: string; payload: string };
    const rows = await runInDurableObject(stub, (_o, state) =>
      state.storage.sql.exec<Row>("select kind, payload from outbox order by seq").toArray(),
    );
    const payloads = rows.map((r) => ({ kind: r.kind, row: JSON.parse(r.payload) }));
    const usage = payloads.filter((p) => p.kind === "usage_event").map((p) => p.row);
    expect(usage).toEqual([
      expect.objectContaining({ job_run_id: r0.placement_id, tier: "fast", gpu_count: 2, gpu_seconds: 2 * 65 }),
    ]);
    // The replica's runs tell Postgres their own tier and GPUs (a running one is priced by them).
    const runs = payloads.filter((p) => p.kind === "replica_run").map((p) => [p.row.id, p.row.status, p.row.tier]);
    expect(runs).toContainEqual([r0.placement_id, "cancelled", "fast"]);
    const next = (await stub.endpointState(spec.id))!.replicas[0]!.placement!;
    expect(next.placement_id).not.toBe(r0.placement_id);
    expect(runs).toContainEqual([next.placement_id, "placed", "flex"]);
    expect(payloads.find((p) => p.kind === "replica_run" && p.row.id === next.placement_id)?.row.gpu_count).toBe(2);
  });

  /** What n1's agent is asked to run now: image per placement. */
  const runningImages = async (stub: Stub) =>
    Object.fromEntries(
      (await stub.pollPlacements(N("n1"), 0, 0)).placements
        .filter((p) => p.desired === "running")
        .map((p) => [p.placement_id, p.image]),
    );
  /** The endpoint's replicas that are not cancelled, as the object holds them. */
  const liveReplicas = (stub: Stub, endpointId: string) =>
    runInDurableObject(stub, (_o, state) =>
      state.storage.sql
        .exec<{ id: string; status: string }>(
          "select id, status from jobs where endpoint_id = ? and status != 'cancelled'",
          endpointId,
        )
        .toArray(),
    );

  it("keeps the newest spec when an older version's spec arrives after it", async () => {
    const { stub } = await region();
    await stub.registerNode(nodeReg(N("n1")));
    const spec = endpointFor({ min_replicas: 0, max_replicas: 1 });
    await stub.ensureEndpoint(spec);
    // PATCH v2 and PATCH v3 race; v3's sync arrives first...
    const v3 = { ...spec, version: 3, min_replicas: 1, image: "127.0.0.1:5000/test/busybox:3" };
    const [p3] = (await stub.ensureEndpoint(v3))!.replicas.map((r) => r.placement!.placement_id) as [string];
    // ...then v2's: the answer is v3's endpoint, unchanged.
    const late = await stub.ensureEndpoint({
      ...spec,
      version: 2,
      min_replicas: 1,
      image: "127.0.0.1:5000/test/busybox:2",
    });
    expect(late).toMatchObject({
      version: 3,
      replicas: [{ placement: expect.objectContaining({ placement_id: p3 }) }],
    });
    expect(await runningImages(stub)).toEqual({ [p3]: "127.0.0.1:5000/test/busybox:3" });
    // A newer version that changes only scaling replaces no replica: the version is not part of it.
    await stub.ensureEndpoint({ ...v3, version: 4, scale_down_delay_s: 60 });
    expect(await runningImages(stub)).toEqual({ [p3]: "127.0.0.1:5000/test/busybox:3" });
    expect((await stub.endpointState(spec.id))!.version).toBe(4);
  });

  it("keeps a removed endpoint removed when an older version's spec arrives after the removal", async () => {
    const { stub } = await region();
    await stub.registerNode(nodeReg(N("n1"), { ingress_url: "https://n1.nodes.test" }));
    const spec = endpointFor();
    await stub.ensureEndpoint(spec);
    // A PATCH (v2) in flight, then the DELETE (v3), whose removal arrives first.
    expect(await stub.removeEndpoint(spec.id, 3)).toEqual({ removed: true, version: 3 });
    expect(await stub.ensureEndpoint({ ...spec, version: 2, min_replicas: 1 })).toBeNull();
    expect(await stub.endpointState(spec.id)).toBeNull();
    expect(await liveReplicas(stub, spec.id)).toEqual([]);
    expect(await runningImages(stub)).toEqual({});
    expect(await stub.routeEndpoint(spec.id, { wait_ms: 0 })).toEqual({ ok: false, code: "not_found" });
    // The removal sent again (a retry, the reconciler) is answered as done.
    expect(await stub.removeEndpoint(spec.id, 3)).toEqual({ removed: false, version: 3 });
  });

  it("keeps out an endpoint whose removal arrives before its first spec", async () => {
    const { stub } = await region();
    await stub.registerNode(nodeReg(N("n1")));
    const spec = endpointFor();
    expect(await stub.removeEndpoint(spec.id, 2)).toEqual({ removed: false, version: 2 });
    expect(await stub.ensureEndpoint(spec)).toBeNull();
    expect(await liveReplicas(stub, spec.id)).toEqual([]);
  });

  it("keeps the spec it runs when an older version's removal arrives after it", async () => {
    const { stub } = await region();
    await stub.registerNode(nodeReg(N("n1")));
    const spec = endpointFor({ version: 3 });
    const placed = (await stub.ensureEndpoint(spec))!.replicas.map((r) => r.placement!.placement_id);
    expect(await stub.removeEndpoint(spec.id, 2)).toEqual({ removed: false, version: 3 });
    expect(Object.keys(await runningImages(stub)).sort()).toEqual([...placed].sort());
  });

  it("places an endpoint again for a spec newer than its removal (the API never sends one: a deleted id stays deleted)", async () => {
    const { stub } = await region();
    await stub.registerNode(nodeReg(N("n1")));
    const spec = endpointFor({ min_replicas: 1, max_replicas: 1 });
    await stub.ensureEndpoint(spec);
    await stub.removeEndpoint(spec.id, 2);
    const again = await stub.ensureEndpoint({ ...spec, version: 3 });
    expect(again).toMatchObject({ version: 3, replicas: [{ status: "placed" }] });
    // Its removal is forgotten with it: a removal older than the spec now changes nothing.
    expect(await stub.removeEndpoint(spec.id, 2)).toEqual({ removed: false, version: 3 });
  });

  it("takes any version for an endpoint synced before the object kept versions", async () => {
    const { stub } = await region();
    await stub.registerNode(nodeReg(N("n1")));
    const spec = endpointFor({ version: 5 });
    await stub.ensureEndpoint(spec);
    await runInDurableObject(stub, (_o, state) => {
      state.storage.sql.exec("update endpoints set version = null where id = ?", spec.id);
    });
    expect((await stub.endpointState(spec.id))!.version).toBeNull();
    expect((await stub.ensureEndpoint({ ...spec, version: 1 }))!.version).toBe(1);
  });

  it("remembers a removal for 30 days, long after any late sync could arrive", async () => {
    const { stub, clock } = await region();
    const a = endpointFor();
    const b = endpointFor();
    await stub.removeEndpoint(a.id, 2);
    const removals = () =>
      runInDurableObject(stub, (_o, state) =>
        state.storage.sql.exec<{ id: string }>("select id from removed_endpoints order by id").toArray(),
      );
    clock.advance(30 * 86_400_000);
    await stub.removeEndpoint(b.id, 2);
    expect((await removals()).map((r) => r.id).sort()).toEqual([a.id, b.id].sort());
    // Older than 30 days: forgotten when the next removal is written.
    clock.advance(1);
    await stub.removeEndpoint(b.id, 2);
    expect((await removals()).map((r) => r.id)).toEqual([b.id]);
  });

  it("refuses a spec or a removal without a version", async () => {
    const { stub } = await region();
    const { version: _version, ...unversioned } = endpointFor();
    await runInDurableObject(stub, (instance) => {
      const { endpoints } = insides(instance).state;
      expect(() => endpoints.ensure(unversioned as EndpointSpec, T0)).toThrow("version must be a positive integer");
      expect(() => endpoints.remove(unversioned.id, 0, T0)).toThrow("version must be a positive integer");
    });
  });
});

describe("RegionScheduler: endpoint traffic", () => {
  /** Replicas' runs on a node as an agent would report them: running, readiness as given. */
  async function reportReady(stub: Stub, nodeId: string, at: number, ready: Record<string, boolean>) {
    for (const placementId of Object.keys(ready)) await stub.reportEvent(nodeId, ev("running", placementId, at));
    await stub.heartbeat(nodeId, {
      at,
      gpus: [],
      containers: Object.entries(ready).map(([placement_id, r]) => ({ placement_id, ready: r })),
      running: Object.keys(ready),
    });
  }
  const placementsOf = async (stub: Stub, id: string) =>
    (await stub.endpointState(id))!.replicas.map((r) => r.placement?.placement_id ?? null);
  const desiredOf = async (stub: Stub, id: string) => (await stub.endpointState(id))!.desired_replicas;
  const runningOnN1 = async (stub: Stub) =>
    (await stub.pollPlacements(N("n1"), 0, 0)).placements
      .filter((p) => p.desired === "running")
      .map((p) => p.placement_id);
  /** `ms` later, node n1 still alive: a heartbeat with its replicas ready, then the alarm. */
  const laterOnN1 = async (stub: Stub, clock: TestClock, ms: number) => {
    clock.advance(ms);
    const ids = await runningOnN1(stub);
    await stub.heartbeat(N("n1"), {
      at: clock.t,
      gpus: [],
      containers: ids.map((placement_id) => ({ placement_id, ready: true })),
      running: ids,
    });
    await runDurableObjectAlarm(stub);
  };

  it("starts a replica for the first request at zero, spreads requests over ready replicas, and scales back after the delay", async () => {
    const { stub, clock } = await region();
    await stub.registerNode(nodeReg(N("n1"), { ingress_url: "https://n1.nodes.test" }));
    const spec = endpointFor({ min_replicas: 0, max_replicas: 3, target_concurrency: 1, scale_down_delay_s: 60 });
    expect((await stub.ensureEndpoint(spec))!.replicas).toEqual([]);

    // Nothing ready: the request says why, and its need has started a replica.
    const cold = await stub.routeEndpoint(spec.id, { wait_ms: 0 });
    expect(cold).toEqual({ ok: false, code: "no_ready_replica", waiting_reason: "replica 0: starting" });
    expect(await desiredOf(stub, spec.id)).toBe(1);
    const [p0] = (await placementsOf(stub, spec.id)) as [string];

    // A request that waits is answered once the replica's heartbeat says it is ready.
    const waiting = stub.routeEndpoint(spec.id, { wait_ms: 10_000 });
    await reportReady(stub, N("n1"), clock.t, { [p0]: false });
    await reportReady(stub, N("n1"), clock.t, { [p0]: true });
    const first = await waiting;
    expect(first).toMatchObject({ ok: true, placement_id: p0, node_id: N("n1"), ingress_url: "https://n1.nodes.test" });

    // A second request in flight needs a second replica; until it is ready, replica 0 takes it.
    const second = await stub.routeEndpoint(spec.id);
    expect(second).toMatchObject({ ok: true, placement_id: p0 });
    expect(await desiredOf(stub, spec.id)).toBe(2);
    const [, p1] = (await placementsOf(stub, spec.id)) as [string, string];
    await reportReady(stub, N("n1"), clock.t, { [p0]: true, [p1]: true });
    // The least busy ready replica takes the next one; three in flight want three replicas.
    const third = await stub.routeEndpoint(spec.id);
    expect(third).toMatchObject({ ok: true, placement_id: p1 });
    expect(await desiredOf(stub, spec.id)).toBe(3);

    // A replica that failed this request is skipped; none left: the reason says so.
    expect(await stub.routeEndpoint(spec.id, { exclude: [p0, p1] })).toEqual({
      ok: false,
      code: "no_ready_replica",
      waiting_reason:
        "replica 0: ready, but did not answer this request; replica 1: ready, but did not answer this request; replica 2: starting",
    });

    // Traffic ends. Nothing scales down before the delay, which starts when the need first drops
    // (two in flight then)...
    for (const r of [first, second, third]) {
      expect(await stub.endpointRequestDone((r as { lease_id: string }).lease_id)).toEqual({ ok: true });
    }
    expect(await stub.endpointRequestDone((first as { lease_id: string }).lease_id)).toEqual({ ok: false });
    const running = () => runningOnN1(stub);
    const later = (ms: number) => laterOnN1(stub, clock, ms);
    await later(30_000);
    expect(await desiredOf(stub, spec.id)).toBe(3);
    // ...then it keeps what the busiest moment of the delay needed (2), the highest replica going first.
    await later(31_000);
    expect(await desiredOf(stub, spec.id)).toBe(2);
    expect(await running()).toEqual([p0, p1]);
    // One request in the next delay keeps one replica past it.
    const lone = await stub.routeEndpoint(spec.id);
    expect(lone).toMatchObject({ ok: true, placement_id: p0 });
    await stub.endpointRequestDone((lone as { lease_id: string }).lease_id);
    await later(61_000);
    expect(await desiredOf(stub, spec.id)).toBe(1);
    expect(await running()).toEqual([p0]);
    // A quiet delay later: back to zero.
    await later(61_000);
    expect(await desiredOf(stub, spec.id)).toBe(0);
    expect(await running()).toEqual([]);
  });

  it("scales away a replica started for a request that gave up on it, a delay or two later", async () => {
    const { stub, clock } = await region();
    await stub.registerNode(nodeReg(N("n1"), { ingress_url: "https://n1.nodes.test" }));
    const spec = endpointFor({ min_replicas: 0, max_replicas: 2, target_concurrency: 1, scale_down_delay_s: 60 });
    await stub.ensureEndpoint(spec);
    // A client that does not wait out the cold start (or a monitor probing with Scalar-Wait: 0).
    expect(await stub.routeEndpoint(spec.id, { wait_ms: 0 })).toMatchObject({ ok: false, code: "no_ready_replica" });
    expect(await desiredOf(stub, spec.id)).toBe(1);
    const [p0] = (await placementsOf(stub, spec.id)) as [string];
    await reportReady(stub, N("n1"), clock.t, { [p0]: true });
    // Nobody asks again. Its wait counts as the first delay's busiest moment (one replica kept)...
    await laterOnN1(stub, clock, 61_000);
    expect(await desiredOf(stub, spec.id)).toBe(1);
    // ...and a quiet delay later the replica is gone.
    await laterOnN1(stub, clock, 61_000);
    expect(await desiredOf(stub, spec.id)).toBe(0);
    expect(await runningOnN1(stub)).toEqual([]);
  });

  it("keeps the replicas a lowered minimum no longer needs for the scale-down delay; a lowered maximum applies at once", async () => {
    const { stub, clock } = await region();
    await stub.registerNode(nodeReg(N("n1"), { ingress_url: "https://n1.nodes.test" }));
    const spec = endpointFor({ min_replicas: 3, max_replicas: 3, scale_down_delay_s: 60 });
    await stub.ensureEndpoint(spec);
    expect(await desiredOf(stub, spec.id)).toBe(3);
    await stub.ensureEndpoint({ ...spec, min_replicas: 2, max_replicas: 2 });
    expect(await desiredOf(stub, spec.id)).toBe(2);
    await stub.ensureEndpoint({ ...spec, min_replicas: 0, max_replicas: 2 });
    expect(await desiredOf(stub, spec.id)).toBe(2);
    clock.advance(61_000);
    await stub.heartbeat(N("n1"), { at: clock.t, gpus: [], containers: [], running: [] });
    await runDurableObjectAlarm(stub);
    expect(await desiredOf(stub, spec.id)).toBe(0);
  });

  /** Three ready replicas on n1 (min = max = 3) and `requests` routed to them, none returned yet. */
  async function threeBusyReplicas(over: Partial<EndpointSpec>, requests: number) {
    const { stub, clock } = await region();
    await stub.registerNode(nodeReg(N("n1"), { ingress_url: "https://n1.nodes.test" }));
    const spec = endpointFor({ min_replicas: 3, max_replicas: 3, ...over });
    await stub.ensureEndpoint(spec);
    const placements = (await placementsOf(stub, spec.id)) as [string, string, string];
    await reportReady(stub, N("n1"), clock.t, Object.fromEntries(placements.map((p) => [p, true])));
    const leases = [];
    for (let i = 0; i < requests; i++)
      leases.push((await stub.routeEndpoint(spec.id)) as { lease_id: string; placement_id: string });
    return { stub, clock, spec, placements, leases };
  }

  it("scales down the replicas serving no request, not a higher one that serves one, and places the freed numbers first when traffic grows", async () => {
    const { stub, clock, spec, placements, leases } = await threeBusyReplicas(
      { target_concurrency: 2, scale_down_delay_s: 60 },
      3,
    );
    const [p0, p1, p2] = placements;
    expect(leases.map((l) => l.placement_id)).toEqual([p0, p1, p2]);
    // Replicas 0 and 1 finish their requests; replica 2 is still answering one.
    await stub.endpointRequestDone(leases[0]!.lease_id);
    await stub.endpointRequestDone(leases[1]!.lease_id);
    await stub.ensureEndpoint({ ...spec, min_replicas: 0 });
    // The delay's busiest moment (one request) needs one replica: the two that hold no request go.
    await laterOnN1(stub, clock, 61_000);
    expect(await desiredOf(stub, spec.id)).toBe(1);
    expect(await runningOnN1(stub)).toEqual([p2]);
    expect((await stub.endpointState(spec.id))!.replicas.map((r) => r.replica_id)).toEqual([`${spec.id}#2`]);
    expect(await stub.endpointRequestDone(leases[2]!.lease_id)).toEqual({ ok: true });

    // Three in flight want two replicas: the lowest free number is placed, not replica 3.
    for (let i = 0; i < 3; i++) expect(await stub.routeEndpoint(spec.id)).toMatchObject({ ok: true, placement_id: p2 });
    const grown = (await stub.endpointState(spec.id))!;
    expect(grown.desired_replicas).toBe(2);
    expect(grown.replicas.map((r) => [r.replica_id, r.status, r.last_exit])).toEqual([
      [`${spec.id}#0`, "placed", "scaled down"],
      [`${spec.id}#2`, "running", null],
    ]);
    // Replica 2, kept above the count, restarts when it crashes: it is one of the two wanted.
    await stub.reportEvent(N("n1"), ev("exited", p2, clock.t, { exit_code: 1 }));
    expect((await stub.endpointState(spec.id))!.replicas.map((r) => [r.replica_id, r.status])).toEqual([
      [`${spec.id}#0`, "placed"],
      [`${spec.id}#2`, "queued"],
    ]);
  });

  it("stops the replicas serving the fewest requests, the highest numbers among them, when every replica serves some", async () => {
    const { stub, spec, placements, leases } = await threeBusyReplicas({}, 6);
    const [p0, p1, p2] = placements;
    expect(leases.map((l) => l.placement_id)).toEqual([p0, p1, p2, p0, p1, p2]);
    await stub.endpointRequestDone(leases[0]!.lease_id);
    await stub.endpointRequestDone(leases[1]!.lease_id);
    // In flight: replica 0 one, replica 1 one, replica 2 two. A lowered maximum applies at once.
    await stub.ensureEndpoint({ ...spec, min_replicas: 2, max_replicas: 2 });
    expect(await runningOnN1(stub)).toEqual([p0, p2].sort());
  });

  it.each([
    ["still pulling its image", "pulling its image"],
    ["failing its health check", "running, failing its health check"],
  ])("stops an idle replica %s before higher-numbered idle ones that are ready", async (_case, doing) => {
    const { stub, clock } = await region();
    await stub.registerNode(nodeReg(N("n1"), { ingress_url: "https://n1.nodes.test" }));
    const spec = endpointFor({ min_replicas: 3, max_replicas: 3 });
    await stub.ensureEndpoint(spec);
    const [p0, p1, p2] = (await placementsOf(stub, spec.id)) as [string, string, string];
    if (doing === "pulling its image") {
      await stub.reportEvent(N("n1"), ev("pulling", p0, clock.t));
      await reportReady(stub, N("n1"), clock.t, { [p1]: true, [p2]: true });
    } else {
      await reportReady(stub, N("n1"), clock.t, { [p0]: false, [p1]: true, [p2]: true });
    }
    expect(await stub.routeEndpoint(spec.id, { exclude: [p1, p2] })).toMatchObject({
      ok: false,
      waiting_reason: expect.stringContaining(`replica 0: ${doing};`),
    });
    // None holds a request: replica 0 goes, as stopping a ready one would leave one fewer ready.
    await stub.ensureEndpoint({ ...spec, min_replicas: 2, max_replicas: 2 });
    expect(await runningOnN1(stub)).toEqual([p1, p2].sort());
    expect((await stub.endpointState(spec.id))!.replicas.map((r) => [r.replica_id, r.ready])).toEqual([
      [`${spec.id}#1`, true],
      [`${spec.id}#2`, true],
    ]);
  });

  it("returns the lease a waiting request took when its caller has left, and hands one to a caller still waiting", async () => {
    const { stub, clock } = await region();
    await stub.registerNode(nodeReg(N("n1"), { ingress_url: "https://n1.nodes.test" }));
    const spec = endpointFor({ min_replicas: 0, max_replicas: 1, target_concurrency: 1, scale_down_delay_s: 60 });
    await stub.ensureEndpoint(spec);
    // Two requests wait for a cold start. The first one's client leaves: the Worker's request ends
    // with it, and calling back into it fails as the runtime then fails it.
    const left = stub.routeEndpoint(spec.id, {
      wait_ms: 10_000,
      still_waiting: () =>
        Promise.reject(new Error("The execution context which hosts this callback is no longer running.")),
    });
    const stays = stub.routeEndpoint(spec.id, { wait_ms: 10_000, still_waiting: () => true });
    const [p0] = (await placementsOf(stub, spec.id)) as [string];
    await reportReady(stub, N("n1"), clock.t, { [p0]: true });
    expect(await left).toEqual({
      ok: false,
      code: "no_ready_replica",
      waiting_reason: "the request ended while it waited",
    });
    const served = await stays;
    expect(served).toMatchObject({ ok: true, placement_id: p0 });
    const inFlight = () => runInDurableObject(stub, (instance) => insides(instance).state.traffic.inFlight(spec.id));
    expect(await inFlight()).toBe(1);
    expect(await stub.endpointRequestDone((served as { lease_id: string }).lease_id)).toEqual({ ok: true });
    expect(await inFlight()).toBe(0);
  });

  it("takes a waiting request whose caller never answers still_waiting as gone, and returns the lease it took", async () => {
    const { stub, clock } = await region();
    await stub.registerNode(nodeReg(N("n1"), { ingress_url: "https://n1.nodes.test" }));
    const spec = endpointFor({ min_replicas: 0, max_replicas: 1, target_concurrency: 1, scale_down_delay_s: 60 });
    await stub.ensureEndpoint(spec);
    // A request waits for a cold start; its caller's side is stuck: its still_waiting never settles.
    const silent = stub.routeEndpoint(spec.id, { wait_ms: 10_000, still_waiting: () => new Promise(() => {}) });
    const [p0] = (await placementsOf(stub, spec.id)) as [string];
    await reportReady(stub, N("n1"), clock.t, { [p0]: true });
    // Given up on after 5 s of real time (STILL_WAITING_TIMEOUT_MS), not held for ever with its lease.
    expect(await silent).toEqual({
      ok: false,
      code: "no_ready_replica",
      waiting_reason: "the request did not say within 5 s whether it still waited",
    });
    const inFlight = () => runInDurableObject(stub, (instance) => insides(instance).state.traffic.inFlight(spec.id));
    expect(await inFlight()).toBe(0);
    expect(await stub.routeEndpoint(spec.id)).toMatchObject({ ok: true, placement_id: p0 });
  });

  it("never routes to a node without an ingress, never scales past max_replicas, returns forgotten leases and keeps renewed ones", async () => {
    const { stub, clock } = await region({ lease_ttl_ms: 60_000 });
    await stub.registerNode(nodeReg(N("n1")));
    const spec = endpointFor({ min_replicas: 1, max_replicas: 1, target_concurrency: 1 });
    await stub.ensureEndpoint(spec);
    const [p0] = (await placementsOf(stub, spec.id)) as [string];
    await reportReady(stub, N("n1"), clock.t, { [p0]: true });
    expect(await stub.routeEndpoint(spec.id)).toEqual({
      ok: false,
      code: "no_ready_replica",
      waiting_reason: "replica 0: ready, but its node has no ingress",
    });
    // The agent comes back with an ingress (a re-registration carries it).
    await stub.registerNode(nodeReg(N("n1"), { ingress_url: "http://127.0.0.1:8090" }));
    const leases = [];
    for (let i = 0; i < 3; i++) leases.push(await stub.routeEndpoint(spec.id));
    expect(leases.map((l) => l.ok && l.placement_id)).toEqual([p0, p0, p0]);
    expect(await desiredOf(stub, spec.id)).toBe(1);
    expect(await stub.routeEndpoint(`ep-unknown`)).toEqual({ ok: false, code: "not_found" });
    // A lease renewed (an open WebSocket) lives on; leases nobody returned end by themselves.
    const [kept, forgotten] = leases.map((l) => (l as { lease_id: string }).lease_id) as [string, string];
    clock.advance(40_000);
    expect(await stub.renewEndpointLease(kept)).toEqual({ ok: true });
    clock.advance(21_000);
    await runDurableObjectAlarm(stub);
    expect(await stub.endpointRequestDone(forgotten)).toEqual({ ok: false });
    expect(await stub.renewEndpointLease(forgotten)).toEqual({ ok: false });
    expect(await stub.endpointRequestDone(kept)).toEqual({ ok: true });
    expect(await stub.renewEndpointLease(kept)).toEqual({ ok: false });
  });

  it("takes a WebSocket's lease again after a restart forgot it, when the renewal names its replica", async () => {
    const { stub, clock } = await region();
    await stub.registerNode(nodeReg(N("n1"), { ingress_url: "http://127.0.0.1:8090" }));
    const spec = endpointFor({ min_replicas: 1, max_replicas: 2, target_concurrency: 1 });
    await stub.ensureEndpoint(spec);
    const [p0] = (await placementsOf(stub, spec.id)) as [string];
    await reportReady(stub, N("n1"), clock.t, { [p0]: true });
    const lease = await stub.routeEndpoint(spec.id);
    if (!lease.ok) throw new Error("no lease");
    const holder = { endpoint_id: spec.id, placement_id: p0 };

    await runInDurableObject(stub, async (_obj, state) => {
      // A new instance over the same storage (eviction, a deploy): leases lived in memory.
      const restarted = new RegionScheduler(state, env);
      restarted.clock = clock;
      const traffic = () => (restarted as unknown as { state: { traffic: Traffic } }).state.traffic;
      await restarted.listNodes(); // loads the object
      expect(traffic().inFlight(spec.id)).toBe(0);
      // A renewal without its replica cannot take it again; with it, the socket counts again.
      expect(await restarted.renewEndpointLease(lease.lease_id)).toEqual({ ok: false });
      expect(await restarted.renewEndpointLease(lease.lease_id, holder)).toEqual({ ok: true });
      expect(traffic().inFlight(spec.id)).toBe(1);
      expect(await restarted.renewEndpointLease(lease.lease_id, holder)).toEqual({ ok: true });
      expect(traffic().inFlight(spec.id)).toBe(1);
      // A second request now wants a second replica (target concurrency 1): the socket is counted.
      // Its lease is a new one, though the clock stands still and the new instance counts from 0.
      const second = await restarted.routeEndpoint(spec.id);
      expect(second).toMatchObject({ ok: true, placement_id: p0 });
      expect(second.ok && second.lease_id).not.toBe(lease.lease_id);
      expect(traffic().inFlight(spec.id)).toBe(2);
      expect(await restarted.endpointState(spec.id)).toMatchObject({ desired_replicas: 2 });
      expect(await restarted.endpointRequestDone(lease.lease_id)).toEqual({ ok: true });
      expect(traffic().inFlight(spec.id)).toBe(1);
      // A replica no longer taking requests is not leased again.
      expect(await restarted.renewEndpointLease("gone", { endpoint_id: spec.id, placement_id: "p-nope" })).toEqual({
        ok: false,
      });
    });
  });
});

describe("RegionScheduler: the outbox", () => {
  it("delivers other keys past a key that waits, and wakes for a waiting key at its retry, not every second", async () => {
    const { stub, clock } = await region();
    await runInDurableObject(stub, (instance, state) => {
      const sql = state.storage.sql;
      sql.exec("delete from outbox");
      // Key a: its first row failed and waits a minute; 250 rows wait behind it. Key b: one row.
      sql.exec(
        "insert into outbox (kind, key, payload, created_at, attempts, next_try_at) values ('audit', 'a', '{}', 0, 1, ?)",
        clock.t + 60_000,
      );
      for (let i = 0; i < 250; i++) {
        sql.exec("insert into outbox (kind, key, payload, created_at) values ('audit', 'a', '{}', 0)");
      }
      sql.exec("insert into outbox (kind, key, payload, created_at) values ('audit', 'b', '{}', 0)");
      const outbox = (instance as unknown as { outbox: Outbox }).outbox;
      // A batch of 200: b is in it, though 250 of a's rows come first.
      const rows = outbox.due(clock.t, 200);
      expect(rows.map((r) => r.key)).toEqual(["b"]);
      // Due now (b), then at a's retry: not now, for a's rows behind its first.
      expect(outbox.nextDue()).toBe(0);
      outbox.delivered(rows[0]!.seq);
      expect(outbox.nextDue()).toBe(clock.t + 60_000);
      sql.exec("delete from outbox");
    });
  });

  it("holds a month's billing for undelivered rows by the time they cover, not by when they were written", async () => {
    const { stub, clock } = await region();
    const { nodeId, job, p } = await placedOnANode(stub, { gpu_count: 1, tier: "flex" });
    await stub.reportEvent(nodeId, ev("running", p.placement_id, clock.t));
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect(await stub.undeliveredUsage(T0 - 60_000, clock.t + 60_000)).toEqual({ accounts: [] });
    // The month ends 30 s into the run; the run ends a minute later, and its end and usage are
    // written then: still the ended month's usage.
    const monthEnd = clock.t + 30_000;
    clock.advance(90_000);
    await stub.reportEvent(nodeId, ev("exited", p.placement_id, clock.t, { exit_code: 0 }));
    expect(await stub.undeliveredUsage(T0 - 60_000, monthEnd)).toEqual({ accounts: [job.account_id] });
    expect(await stub.undeliveredUsage(clock.t + 1, clock.t + 60_000)).toEqual({ accounts: [] });
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect(await stub.undeliveredUsage(T0 - 60_000, monthEnd)).toEqual({ accounts: [] });
  });

  it("carries a job's whole history to Postgres, idempotently", async () => {
    const { stub, clock } = await region();
    const { nodeId, job, p } = await placedOnANode(stub, { gpu_count: 2, tier: "flex" });
    clock.advance(1_000);
    await stub.reportEvent(nodeId, ev("pulling", p.placement_id, clock.t));
    await stub.reportEvent(nodeId, ev("running", p.placement_id, clock.t));
    clock.advance(90_000);
    await stub.reportEvent(nodeId, ev("exited", p.placement_id, clock.t, { exit_code: 0 }));
    type Pending = { kind: string; key: string; payload: string; created_at: number };
    const sent = await runInDurableObject(stub, (_o, state) =>
      state.storage.sql.exec<Pending>("select kind, key, payload, created_at from outbox order by seq").toArray(),
    );
    // Billing asks what usage Postgres does not have yet, for a month: by the time the rows cover
    // (the run from T0 + 1 s to T0 + 91 s), not by when they were written.
    expect(await stub.undeliveredUsage(T0 - 60_000, clock.t + 1)).toEqual({ accounts: [job.account_id] });
    // A month that ended before the run began, or began after it ended.
    expect(await stub.undeliveredUsage(T0 - 60_000, T0)).toEqual({ accounts: [] });
    expect(await stub.undeliveredUsage(clock.t + 1, clock.t + 60_000)).toEqual({ accounts: [] });
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect(await stub.undeliveredUsage(T0 - 60_000, clock.t + 1)).toEqual({ accounts: [] });

    const [jobRow] =
      await sql`select status, attempts, exit_code, started_at, finished_at from jobs where id = ${job.id}`;
    expect(jobRow).toMatchObject({ status: "succeeded", attempts: 1, exit_code: 0 });
    expect(jobRow!.started_at.getTime()).toBe(T0 + 1_000);
    expect(jobRow!.finished_at.getTime()).toBe(T0 + 91_000);
    const runs = await sql`select id, node_id, status, gpu_count, exit_code from job_runs where job_id = ${job.id}`;
    expect(runs).toEqual([{ id: p.placement_id, node_id: nodeId, status: "succeeded", gpu_count: 2, exit_code: 0 }]);
    const gpus =
      await sql`select gpu_index, released_at from gpu_assignments where job_run_id = ${p.placement_id} order by gpu_index`;
    expect(gpus.map((g) => [g.gpu_index, g.released_at?.getTime()])).toEqual([
      [0, T0 + 91_000],
      [1, T0 + 91_000],
    ]);
    // 2 GPUs × 90 s
    const usage =
      await sql`select tier, gpu_model, gpu_count, gpu_seconds::int from usage_events where job_run_id = ${p.placement_id}`;
    expect(usage).toEqual([{ tier: "flex", gpu_model: "H100", gpu_count: 2, gpu_seconds: 180 }]);
    const events =
      await sql`select seq, type, node_id, array_to_json(gpu_indices) as gpu_indices, exit_code from job_events where job_id = ${job.id} order by seq`;
    expect(events.map((e) => e.type)).toEqual(["queued", "placed", "pulling", "running", "exited", "succeeded"]);
    expect(events[1]).toMatchObject({ node_id: nodeId, gpu_indices: [0, 1] });
    const [node] = await sql`select state, gpu_count, hostname from nodes where id = ${nodeId}`;
    expect(node).toMatchObject({ state: "ready", gpu_count: 8, hostname: `${nodeId}.local` });
    const audit = await sql`select action from audit_log where target_id = ${nodeId}`;
    expect(audit.map((a) => a.action)).toEqual(["node.registered"]);
    const secrets = await sql`select count(*)::int as n from job_events where data::text like '%s3cret%'`;
    expect(secrets[0]!.n).toBe(0);

    // Every row delivered again (a flush that died before deleting them): nothing changes.
    const count = async () =>
      (
        await sql`select ((select count(*) from job_events where job_id = ${job.id})
          + (select count(*) from usage_events where job_run_id = ${p.placement_id})
          + (select count(*) from gpu_assignments where job_run_id = ${p.placement_id})
          + (select count(*) from job_runs where job_id = ${job.id})
          + (select count(*) from audit_log where target_id = ${nodeId}))::int as n`
      )[0]!.n as number;
    const n = await count();
    expect(n).toBe(6 + 1 + 2 + 1 + 1);
    await runInDurableObject(stub, (_o, state) => {
      expect(state.storage.sql.exec<{ n: number }>("select count(*) as n from outbox").one().n).toBe(0);
      for (const r of sent) {
        state.storage.sql.exec(
          "insert into outbox (kind, key, payload, created_at) values (?, ?, ?, ?)",
          r.kind,
          r.key,
          r.payload,
          r.created_at,
        );
      }
    });
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect(await count()).toBe(n);
    expect((await sql`select status from jobs where id = ${job.id}`)[0]).toEqual({ status: "succeeded" });
  });

  it("retries a row until the job row it updates exists, without holding up other jobs", async () => {
    const { stub, clock } = await region({ outbox_retry_base_ms: 1_000 });
    await stub.registerNode(nodeReg(`node-${crypto.randomUUID().slice(0, 8)}`));
    const late = await jobFor({ gpu_count: 1 }, false);
    const onTime = await jobFor({ gpu_count: 1 });
    await stub.submit(late);
    await stub.submit(onTime);
    await runDurableObjectAlarm(stub);
    expect((await sql`select status from jobs where id = ${onTime.id}`)[0]).toEqual({ status: "placed" });
    const pending = await runInDurableObject(stub, (_o, state) =>
      state.storage.sql
        .exec<{ key: string; attempts: number }>("select key, attempts from outbox order by seq")
        .toArray(),
    );
    expect(pending.length).toBeGreaterThan(0);
    expect(new Set(pending.map((r) => r.key))).toEqual(new Set([late.id]));
    expect(pending[0]!.attempts).toBe(1);

    await writeJobRow(late);
    clock.advance(60_000);
    await runDurableObjectAlarm(stub);
    expect((await sql`select status, attempts from jobs where id = ${late.id}`)[0]).toEqual({
      status: "placed",
      attempts: 1,
    });
    expect((await sql`select type from job_events where job_id = ${late.id} order by seq`).map((e) => e.type)).toEqual([
      "queued",
      "placed",
    ]);
  });

  it("writes a queued job's waiting reason on the alarm, not on every pass", async () => {
    const { stub, clock } = await region();
    await stub.registerNode(nodeReg(N("n1"), { gpu_model: "H200" }));
    const job = await jobFor({ gpu_models: ["H100"] });
    await stub.submit(job);
    expect((await sql`select waiting_reason from jobs where id = ${job.id}`)[0]).toEqual({ waiting_reason: null });
    clock.advance(1_000);
    await runDurableObjectAlarm(stub);
    expect((await sql`select waiting_reason from jobs where id = ${job.id}`)[0]).toEqual({
      waiting_reason: "0/1 nodes: 1 GPU model not allowed",
    });
  });

  it("never brings a cancelled job back: a row written before the cancel and delivered after it is dropped", async () => {
    const { stub, clock } = await region();
    const job = await jobFor({ gpu_count: 1 });
    await stub.submit(job);
    clock.advance(1_000);
    await runDurableObjectAlarm(stub);
    expect((await sql`select status from jobs where id = ${job.id}`)[0]).toEqual({ status: "queued" });
    // What the API does: the scheduler cancels, then the route marks the row at once.
    expect(await stub.cancel(job.id)).toEqual({ ok: true, status: "cancelled" });
    await sql`update jobs set status = 'cancelled', finished_at = now() where id = ${job.id}`;
    // The alarm's waiting-reason row of just before the cancel, still in the outbox (a flush had
    // picked it up before the cancel arrived), reaches Postgres after the API's write.
    const stale = {
      id: job.id,
      status: "queued",
      attempts: 0,
      waiting_reason: "0/0 nodes",
      exit_code: null,
      failure_reason: null,
      dead_lettered_at: null,
      started_at: null,
      finished_at: null,
    };
    await runInDurableObject(stub, (_o, state) => {
      state.storage.sql.exec(
        "insert into outbox (kind, key, payload, created_at) values ('job', ?, ?, ?)",
        job.id,
        JSON.stringify(stale),
        clock.t,
      );
    });
    clock.advance(1_000);
    await runDurableObjectAlarm(stub);
    expect((await sql`select status, waiting_reason from jobs where id = ${job.id}`)[0]).toEqual({
      status: "cancelled",
      waiting_reason: null,
    });
    // Dropped, not retried: nothing is left in the outbox.
    await runInDurableObject(stub, (_o, state) => {
      expect(state.storage.sql.exec<{ n: number }>("select count(*) as n from outbox").one().n).toBe(0);
    });
  });

  it("loses nothing while Postgres is unreachable: rows wait, the outbox pauses, then delivers", async () => {
    const { stub, clock } = await region({ outbox_retry_base_ms: 1_000 });
    await stub.registerNode(nodeReg(N("n1")));
    const job = await jobFor();
    await stub.submit(job);
    const pending = () =>
      runInDurableObject(
        stub,
        (_o, state) => state.storage.sql.exec<{ n: number }>("select count(*) as n from outbox").one().n,
      );
    const before = await pending();
    expect(before).toBeGreaterThan(0);
    await runInDurableObject(stub, async (_o, state) => {
      // The same storage, behind a Hyperdrive whose Postgres does not answer.
      const cut = new RegionScheduler(state, {
        HYPERDRIVE: { connectionString: "postgres://u:p@127.0.0.1:9/none" } as Hyperdrive,
      });
      cut.clock = clock;
      await cut.alarm();
      const meta = state.storage.sql
        .exec<{ key: string; value: string }>("select key, value from meta where key like 'outbox_%' order by key")
        .toArray();
      expect(meta.map((m) => m.key)).toEqual(["outbox_failures", "outbox_paused_until"]);
      expect(Number(meta[1]!.value)).toBeGreaterThan(clock.t);
      // No row was counted against: the failure was the connection's, not the rows'.
      const attempts = state.storage.sql
        .exec<{ n: number }>("select coalesce(max(attempts), 0) as n from outbox")
        .one().n;
      expect(attempts).toBe(0);
    });
    expect(await pending()).toBe(before);
    expect((await sql`select status from jobs where id = ${job.id}`)[0]).toEqual({ status: "queued" });
    clock.advance(60_000);
    await runDurableObjectAlarm(stub);
    expect(await pending()).toBe(0);
    expect((await sql`select status from jobs where id = ${job.id}`)[0]).toEqual({ status: "placed" });
  });
});
