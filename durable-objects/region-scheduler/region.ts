/**
 * A region's scheduling state and every change to it, over the object's SQLite. Synchronous: the
 * object runs each call inside one storage transaction, so a change and the outbox rows that
 * record it commit together, and one change is applied at a time.
 *
 * In memory only: last heartbeats (written out every `node_sync_ms`, not per heartbeat), each
 * active run's resource use at its node's last heartbeat (never written), the waiting reason of each
 * queued job (written out on the alarm), and which nodes' desired sets changed (to wake long-polls).
 *
 * Endpoints and reservations live in their own modules (endpoints.ts, reservations.ts) and use
 * the row helpers here.
 */
import { hashString, plan } from "../../core/scheduler";
import type { EngineStuck, Heartbeat, JobStatus, Placement, PlacementEvent, PlacementSet } from "../../core/schemas";
import { TERMINAL_JOB_STATUSES } from "../../core/schemas";
import type { ObjectSql, SqlValue } from "../sqlite";
import { Endpoints } from "./endpoints";
import { measured, runMetrics } from "./metrics";
import { PlacementCheck, toAllocation, toHolds, toPackerJob, toPackerNode } from "./packer-input";
import type { Records } from "./records";
import { Reservations } from "./reservations";
import {
  ACTIVE_RUN_SQL,
  type ContainerSpec,
  cordoned,
  isActiveRun,
  type JobRow,
  json,
  liveState,
  type NodeRow,
  type ReservationRow,
  type RunRow,
  specOf,
} from "./rows";
import type {
  CancelResult,
  DrainResult,
  EndpointSpec,
  EventResult,
  NodeCordon,
  NodeRegistration,
  NodeResult,
  RunMetrics,
  SchedulerJob,
  SubmitResult,
} from "./rpc";
import { backoff, type SchedulerSettings } from "./settings";
import { Traffic } from "./traffic";
import { validateJob } from "./validate";

export type RunOutcome =
  | { status: "succeeded"; exit_code: number }
  | {
      status: "failed";
      reason: string;
      exit_code: number | null;
      oom: boolean;
      deadline: boolean;
      /** false: the agent says another attempt would fail the same way (e.g. the image does not exist). */
      retryable?: boolean;
    }
  | { status: "cancelled"; reason: string; exit_code: number | null }
  | { status: "lost"; reason: string };

/** Why a run was asked to stop; it decides what its exit means. */
type StopReason = "cancel" | "deadline" | "gang" | "spec_changed" | "scale_down" | "unhealthy";

/** How long a replica may take to become ready when its endpoint does not say. */
export const DEFAULT_STARTUP_TIMEOUT_S = 600;

export interface WaitingInfo {
  reason: string;
  reserved_start_at: number | null;
}

export class Region {
  /** Last sign of life per node (heartbeat or event); absent after a restart until the first sweep. */
  readonly liveness = new Map<string, number>();
  /**
   * Nodes given a fresh timeout by the first sweep after a restart (`from`, their liveness then)
   * and their last heartbeat as stored (`seen`): one lost before any sign of life since is billed
   * to that, not to the restart.
   */
  private readonly presumedAlive = new Map<string, { from: number; seen: number }>();
  /**
   * Each active run's resource use at its node's last heartbeat that measured it; dropped when the
   * run ends (its node lost or removed included), so it holds at most one entry per active run.
   */
  readonly metrics = new Map<string, RunMetrics>();
  /**
   * Running runs their node's last heartbeat did not list, with the time of the first heartbeat
   * that missed them (in memory: after a restart the grace starts again).
   */
  private readonly unlistedSince = new Map<string, number>();
  readonly waiting = new Map<string, WaitingInfo>();
  /** When each queued job's waiting reason was last written out. */
  private readonly reasonWrittenAt = new Map<string, number>();
  /** Nodes whose desired placement set changed in the current call. */
  readonly touched = new Set<string>();

  readonly endpoints: Endpoints;
  readonly reservations: Reservations;
  readonly traffic: Traffic;

  constructor(
    private readonly db: ObjectSql,
    private readonly records: Records,
    private readonly settings: () => SchedulerSettings,
    region: () => string,
    private readonly log: (event: string, fields: Record<string, unknown>) => void,
  ) {
    this.endpoints = new Endpoints(db, this, settings, log);
    this.reservations = new Reservations(db, records, this, region);
    this.traffic = new Traffic(db, this, settings, log);
  }

  // ---- rows -------------------------------------------------------------------------------

  job(id: string): JobRow | undefined {
    return this.db.one<JobRow>("select * from jobs where id = ?", id);
  }

  node(id: string): NodeRow | undefined {
    return this.db.one<NodeRow>("select * from nodes where id = ?", id);
  }

  run(id: string): RunRow | undefined {
    return this.db.one<RunRow>("select * from runs where id = ?", id);
  }

  nodes(): NodeRow[] {
    return this.db.all<NodeRow>("select * from nodes order by id");
  }

  activeRuns(nodeId?: string): RunRow[] {
    return nodeId === undefined
      ? this.db.all<RunRow>(`select * from runs where status in ${ACTIVE_RUN_SQL} order by id`)
      : this.db.all<RunRow>(`select * from runs where node_id = ? and status in ${ACTIVE_RUN_SQL} order by id`, nodeId);
  }

  runsOf(job: Pick<JobRow, "id" | "attempt">): RunRow[] {
    return this.db.all<RunRow>(
      "select * from runs where job_id = ? and attempt = ? order by gang_index",
      job.id,
      job.attempt,
    );
  }

  private patch<Row extends { id: string }>(table: string, row: Row, changes: Partial<Row>): void {
    const keys = Object.keys(changes) as (keyof Row & string)[];
    if (keys.length === 0) return;
    Object.assign(row, changes);
    const sets = keys.map((k) => `${k} = ?`).join(", ");
    const values = keys.map((k) => (row[k] as SqlValue) ?? null);
    this.db.run(`update ${table} set ${sets} where id = ?`, ...values, row.id);
  }

  patchJob(job: JobRow, changes: Partial<JobRow>, now: number): void {
    // A job that starts waiting for capacity now (queued again, as a replica brought back by a
    // scale-up is, or its backoff cut short by a new spec) waits from now, unless the change says
    // from when (a retry: from the end of its backoff): an old queued_at would count the days the
    // replica was away as waiting, and age it, and make it due for the autoscaler.
    const waitsNow =
      !("queued_at" in changes) &&
      (changes.status ?? job.status) === "queued" &&
      (job.status !== "queued" || (changes.next_attempt_at === null && job.next_attempt_at !== null));
    this.patch("jobs", job, { ...changes, ...(waitsNow ? { queued_at: now } : {}), updated_at: now });
  }

  setTimer(kind: string, key: string, at: number): void {
    this.db.run(
      "insert into timers (kind, key, due_at) values (?, ?, ?) on conflict (kind, key) do update set due_at = excluded.due_at",
      kind,
      key,
      at,
    );
  }

  hasTimer(kind: string, key: string): boolean {
    return this.db.one("select 1 from timers where kind = ? and key = ?", kind, key) !== undefined;
  }

  clearTimer(kind: string, key: string): void {
    this.db.run("delete from timers where kind = ? and key = ?", kind, key);
  }

  private bump(nodeId: string): void {
    this.db.run("update nodes set placement_version = placement_version + 1 where id = ?", nodeId);
    this.touched.add(nodeId);
  }

  // ---- jobs -------------------------------------------------------------------------------

  submit(job: SchedulerJob, now: number): SubmitResult {
    const existing = this.job(job.id);
    if (existing) return { ok: true, status: existing.status, duplicate: true };
    const problem = validateJob(job);
    if (problem) return { ok: false, code: "invalid", message: problem };
    this.insertJob(
      {
        id: job.id,
        kind: "job",
        endpoint_id: null,
        account_id: job.account_id,
        tier: job.tier,
        priority: job.priority,
        gpu_count: job.gpu_count,
        gpu_models: JSON.stringify(job.gpu_models),
        cpu_milli: job.cpu_milli,
        memory_mib: job.memory_mib,
        estimated_duration_s: job.estimated_duration_s,
        max_runtime_s: job.max_runtime_s,
        max_attempts: job.max_attempts,
        submitted_at: job.submitted_at,
        spec: JSON.stringify(specOf(job)),
      },
      now,
    );
    const row = this.job(job.id)!;
    this.records.event(row, "queued", now, { data: { tier: job.tier, gpu_count: job.gpu_count } });
    return { ok: true, status: "queued", duplicate: false };
  }

  insertJob(
    j: Omit<
      JobRow,
      | "status"
      | "attempt"
      | "attempt_base"
      | "waiting_reason"
      | "next_attempt_at"
      | "queued_at"
      | "exit_code"
      | "failure_reason"
      | "reasons"
      | "dead_lettered_at"
      | "started_at"
      | "finished_at"
      | "event_seq"
      | "updated_at"
    >,
    now: number,
  ): void {
    this.db.run(
      `insert into jobs (id, kind, endpoint_id, account_id, tier, priority, gpu_count, gpu_models, cpu_milli, memory_mib,
         estimated_duration_s, max_runtime_s, max_attempts, submitted_at, spec, status, updated_at)
       values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?)`,
      j.id,
      j.kind,
      j.endpoint_id,
      j.account_id,
      j.tier,
      j.priority,
      j.gpu_count,
      j.gpu_models,
      j.cpu_milli,
      j.memory_mib,
      j.estimated_duration_s,
      j.max_runtime_s,
      j.max_attempts,
      j.submitted_at,
      j.spec,
      now,
    );
  }

  cancel(jobId: string, now: number): CancelResult {
    const job = this.job(jobId);
    if (job?.kind !== "job") return { ok: false, code: "not_found" };
    if (TERMINAL_JOB_STATUSES.includes(job.status)) return { ok: false, code: "already_finished", status: job.status };
    this.stopJob(job, "cancel", now);
    this.records.audit(
      job.id,
      job.account_id,
      "job.cancelled",
      { type: "job", id: job.id },
      { attempt: job.attempt },
      `job.cancelled:${job.id}`,
      now,
    );
    return { ok: true, status: "cancelled" };
  }

  /** Cancel a job or replica: off the queue at once, or its runs asked to stop. */
  stopJob(job: JobRow, reason: "cancel" | "scale_down", now: number): void {
    const from = job.status;
    this.patchJob(job, { status: "cancelled", finished_at: now, waiting_reason: null, next_attempt_at: null }, now);
    this.clearTimer("retry", job.id);
    this.waiting.delete(job.id);
    if (from === "placed" || from === "running") {
      for (const run of this.runsOf(job)) if (isActiveRun(run)) this.stopRun(run, job, reason, now);
    }
    this.records.job(job, now);
    this.records.event(job, "cancelled", now, { attempt: job.attempt || null, reason });
  }

  stopRun(run: RunRow, job: JobRow, reason: StopReason, now: number): void {
    if (run.desired === "stopped") return;
    this.patch("runs", run, { desired: "stopped", stop_reason: reason, stop_requested_at: now });
    this.bump(run.node_id);
    this.records.event(job, "stop_requested", now, {
      attempt: run.attempt,
      placement_id: run.id,
      node_id: run.node_id,
      reason,
    });
  }

  redrive(jobId: string, now: number): { ok: boolean; status?: JobStatus } {
    const job = this.job(jobId);
    if (job?.kind !== "job") return { ok: false };
    if (job.dead_lettered_at === null) return { ok: false, status: job.status };
    this.patchJob(
      job,
      {
        status: "queued",
        attempt_base: job.attempt,
        dead_lettered_at: null,
        failure_reason: null,
        exit_code: null,
        finished_at: null,
        next_attempt_at: null,
        queued_at: now,
      },
      now,
    );
    this.records.job(job, now);
    this.records.event(job, "redriven", now, { data: { attempts_before: job.attempt } });
    this.records.audit(
      job.id,
      job.account_id,
      "job.redriven",
      { type: "job", id: job.id },
      { attempts_before: job.attempt },
      `job.redriven:${job.id}:${job.attempt}`,
      now,
    );
    return { ok: true, status: "queued" };
  }

  // ---- nodes ------------------------------------------------------------------------------

  register(reg: NodeRegistration, now: number): void {
    const gpus = JSON.stringify(reg.gpus.map((g) => g.index).sort((a, b) => a - b));
    const existing = this.node(reg.node_id);
    if (!existing) {
      // Drained before it ever registered (written off for not booting, say): draining from its first moment.
      const pending = this.db.one<{ at: number }>("select at from pending_drains where node_id = ?", reg.node_id);
      this.db.run("delete from pending_drains where node_id = ?", reg.node_id);
      this.db.run(
        `insert into nodes (id, zone, gpu_model, gpus, cpu_milli, memory_mib, state, block_id, block_end_at, hostname,
           address, ingress_url, agent_version, registered_at, last_heartbeat_at, drained_at)
         values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        reg.node_id,
        reg.zone,
        reg.gpu_model,
        gpus,
        reg.cpu_milli,
        reg.memory_mib,
        pending ? "draining" : "ready",
        reg.block_id,
        reg.block_end_at,
        reg.hostname,
        reg.address ?? null,
        reg.ingress_url ?? null,
        reg.agent_version,
        now,
        now,
        pending?.at ?? null,
      );
    } else {
      // A lost node stays lost until a heartbeat shows it no longer runs what was moved away.
      this.patch("nodes", existing, {
        zone: reg.zone,
        gpu_model: reg.gpu_model,
        gpus,
        cpu_milli: reg.cpu_milli,
        memory_mib: reg.memory_mib,
        block_id: reg.block_id,
        block_end_at: reg.block_end_at,
        hostname: reg.hostname,
        address: reg.address ?? null,
        ingress_url: reg.ingress_url ?? null,
        agent_version: reg.agent_version,
        registered_at: now,
      });
    }
    this.liveness.set(reg.node_id, now);
    const node = this.node(reg.node_id)!;
    // Before any packing: a node whose engine does not answer takes no work from its first moment.
    this.engineHealth(node, reg.engine_stuck ?? null, now);
    this.records.node(node, now);
    this.records.audit(
      `node:${node.id}`,
      null,
      existing ? "node.reregistered" : "node.registered",
      { type: "node", id: node.id },
      { zone: node.zone, gpu_model: node.gpu_model, gpus: json.numbers(node.gpus).length, state: node.state },
      `node.registered:${node.id}:${now}`,
      now,
    );
  }

  /**
   * A hung container engine cordons the node (no new work; what runs runs on) until a heartbeat
   * comes without the report. Whether the node's capacity changed: it became cordoned or not (an
   * operator's cordon may hold either way).
   */
  private engineHealth(node: NodeRow, stuck: EngineStuck | null, now: number): boolean {
    const value = stuck === null ? null : JSON.stringify(stuck);
    if (value === node.engine_stuck) return false;
    const was = node.engine_stuck !== null;
    const wasCordoned = cordoned(node);
    this.patch("nodes", node, { engine_stuck: value });
    if (was === (stuck !== null)) return false; // still stuck, on another call: nothing else changes
    const details = stuck
      ? {
          reason: "engine_stuck",
          operation: stuck.operation,
          since: new Date(stuck.since).toISOString(),
          detail: stuck.detail,
        }
      : { reason: "engine_answers" };
    this.cordonChanged(node, stuck ? "node.cordoned" : "node.uncordoned", details, now);
    return wasCordoned !== cordoned(node);
  }

  /**
   * One cordon began or ended (the engine's or an operator's): logged and audited. An end while the
   * other cordon holds says so (`still_cordoned`): the node still takes no new work.
   */
  private cordonChanged(
    node: NodeRow,
    action: "node.cordoned" | "node.uncordoned",
    details: { reason: string } & Record<string, unknown>,
    now: number,
  ): void {
    const data = action === "node.uncordoned" && cordoned(node) ? { ...details, still_cordoned: true } : details;
    this.log(action, { node_id: node.id, ...data });
    this.records.audit(
      `node:${node.id}`,
      null,
      action,
      { type: "node", id: node.id },
      data,
      `${action}:${node.id}:${details.reason}:${now}`,
      now,
    );
  }

  /** Returns whether capacity changed (so a packer pass is due). No row is written unless something changed. */
  heartbeat(
    nodeId: string,
    hb: Heartbeat,
    now: number,
  ): { known: boolean; changed: boolean; state?: NodeRow["state"] } {
    const node = this.node(nodeId);
    if (!node) return { known: false, changed: false };
    this.liveness.set(nodeId, now);
    let changed = false;
    const unhealthy = JSON.stringify(
      hb.gpus
        .filter((g) => !g.healthy)
        .map((g) => g.index)
        .sort((a, b) => a - b),
    );
    if (unhealthy !== node.unhealthy_gpus) {
      this.patch("nodes", node, { unhealthy_gpus: unhealthy });
      this.log("node.gpu_health_changed", { node_id: nodeId, unhealthy_gpus: json.numbers(unhealthy) });
      changed = true;
    }
    if (this.engineHealth(node, hb.engine_stuck ?? null, now)) changed = true;
    // Replicas' readiness, kept only when it changes (no write for a steady answer).
    for (const c of hb.containers ?? []) {
      if (c.ready === undefined) continue;
      const run = this.db.one<RunRow>(
        `select * from runs where id = ? and node_id = ? and status in ${ACTIVE_RUN_SQL}`,
        c.placement_id,
        nodeId,
      );
      if (!run) continue;
      const ready = c.ready ? 1 : 0;
      if (run.ready !== ready) {
        this.patch("runs", run, {
          ready,
          ready_changed_at: now,
          ...(ready === 1 && run.first_ready_at === null ? { first_ready_at: now } : {}),
        });
        this.log("run.readiness_changed", { placement_id: run.id, node_id: nodeId, ready: c.ready });
      }
      if (ready === 0) this.restartIfUnhealthy(run, now);
    }
    const running = new Set(hb.running ?? []);
    if (node.state === "lost") {
      const desired = new Set(this.activeRuns(nodeId).map((r) => r.id));
      const orphans = [...running].filter((id) => !desired.has(id));
      if (orphans.length === 0) {
        // A drain is for good: a drained node comes back draining, and takes no new work.
        const state = node.drained_at !== null ? "draining" : "ready";
        this.patch("nodes", node, { state, lost_at: null, last_heartbeat_at: now, synced_heartbeat_at: now });
        this.records.node(node, now);
        this.records.audit(
          `node:${nodeId}`,
          null,
          "node.recovered",
          { type: "node", id: nodeId },
          state === "draining" ? { state } : {},
          `node.recovered:${nodeId}:${now}`,
          now,
        );
        changed = true;
      }
    }
    // Runs asked to stop that the agent no longer runs, a heartbeat cycle after the request (time
    // for the agent to see it), have stopped, reported or not.
    const settled = now - 2 * this.settings().heartbeat_interval_ms;
    const active = this.activeRuns(nodeId);
    for (const run of active) {
      if (run.desired === "stopped" && !running.has(run.id) && (run.stop_requested_at ?? 0) <= settled) {
        this.endRun(run, this.stoppedOutcome(run, null), now, now);
        changed = true;
      } else if (this.endIfUnlisted(run, running, now)) changed = true;
    }
    this.keepMetrics(active.filter(isActiveRun), hb, now);
    return { known: true, changed, state: node.state };
  }

  /**
   * A run that the node's heartbeats do not list (they list every run starting or running there)
   * is over without a word from the agent: once `unlisted_run_grace_ms` has passed (time for the
   * placement to reach the node, or for an exit or failure event held up behind the agent's
   * backoff), it ends `lost` as of the first heartbeat that missed it, rather than holding its GPUs
   * (and, once started, billing) until its deadline, or for ever for a replica, which has none. So
   * also a run placed or pulling whose failure was lost on the node, or that never reached it.
   */
  private endIfUnlisted(run: RunRow, running: Set<string>, now: number): boolean {
    if (run.desired === "stopped" || running.has(run.id)) {
      this.unlistedSince.delete(run.id);
      return false;
    }
    const since = this.unlistedSince.get(run.id);
    if (since === undefined) {
      this.unlistedSince.set(run.id, now);
      return false;
    }
    if (now - since < this.settings().unlisted_run_grace_ms) return false;
    this.unlistedSince.delete(run.id);
    const reason =
      run.status === "running"
        ? `its node ${run.node_id} no longer runs it and reported no exit (outcome lost on the node)`
        : `its node ${run.node_id} is not starting it and reported no outcome (never received, or its outcome lost on the node)`;
    this.log("run.unlisted", { placement_id: run.id, node_id: run.node_id, unlisted_ms: now - since });
    this.endRun(run, { status: "lost", reason }, now, since);
    return true;
  }

  /**
   * The runs' resource use as this heartbeat measured it, each with its own GPUs' figures only. In
   * memory, never written: a heartbeat that changes nothing else writes no row. A run the agent did
   * not measure this time keeps its last sample (its `at` says how old it is).
   */
  private keepMetrics(runs: RunRow[], hb: Heartbeat, now: number): void {
    const containers = new Map((hb.containers ?? []).filter(measured).map((c) => [c.placement_id, c]));
    for (const run of runs) {
      const c = containers.get(run.id);
      if (c) this.metrics.set(run.id, runMetrics(json.numbers(run.gpu_indices), c, hb.gpus, now));
    }
  }

  /**
   * A replica reported not ready is restarted (stopped, then placed again with backoff) when it was
   * ready once and has failed its check for `replica_unhealthy_after_ms`, or was never ready within
   * its endpoint's startup timeout of its container starting.
   */
  private restartIfUnhealthy(run: RunRow, now: number): void {
    if (run.desired === "stopped" || run.status !== "running" || run.started_at === null) return;
    // A replica that was ready and failed only briefly: nothing to read.
    const failing = run.first_ready_at === null ? null : now - (run.ready_changed_at ?? now);
    if (failing !== null && failing < this.settings().replica_unhealthy_after_ms) return;
    const job = this.job(run.job_id);
    if (job?.kind !== "replica") return;
    const spec = this.endpoints.endpoint(job.endpoint_id ?? "");
    if (!spec) return;
    const check = `GET ${spec.health_path} on port ${spec.port}`;
    let why: string | null = null;
    if (failing !== null) why = `unhealthy: ${check} failing for ${Math.round(failing / 1000)} s`;
    else {
      const limit = (spec.startup_timeout_s ?? DEFAULT_STARTUP_TIMEOUT_S) * 1000;
      if (now - run.started_at >= limit) why = `unhealthy: ${check} not ready within ${limit / 1000} s of starting`;
    }
    if (!why) return;
    this.patch("runs", run, { failure_reason: why });
    this.log("replica.unhealthy", { placement_id: run.id, replica_id: job.id, reason: why });
    this.stopRun(run, job, "unhealthy", now);
  }

  setNodeBlock(nodeId: string, blockId: string | null, blockEndAt: number | null, now: number): boolean {
    const node = this.node(nodeId);
    if (!node) return false;
    this.patch("nodes", node, { block_id: blockId, block_end_at: blockEndAt });
    this.records.node(node, now);
    return true;
  }

  /**
   * No new work on the node again, for good. Kept in `drained_at`, so it holds across a loss: a
   * lost node is drained too (`ok`, state `lost`) and comes back `draining`. A node not registered
   * yet: kept in `pending_drains` for its registration, and answered `ok` false, `unknown`, `pending`.
   */
  drain(nodeId: string, now: number): DrainResult {
    const node = this.node(nodeId);
    if (!node) {
      const fresh = this.db.run(
        "insert into pending_drains (node_id, at) values (?, ?) on conflict (node_id) do nothing",
        nodeId,
        now,
      );
      if (fresh > 0) this.drained(nodeId, { registered: false }, now);
      return { ok: false, state: "unknown", pending: true };
    }
    if (node.drained_at === null) {
      this.patch("nodes", node, { drained_at: now, ...(node.state === "ready" ? { state: "draining" } : {}) });
      this.records.node(node, now);
      this.drained(nodeId, node.state === "lost" ? { lost: true } : {}, now);
    }
    return { ok: true, state: liveState(node) };
  }

  private drained(nodeId: string, data: Record<string, unknown>, now: number): void {
    this.log("node.draining", { node_id: nodeId, ...data });
    this.records.audit(
      `node:${nodeId}`,
      null,
      "node.draining",
      { type: "node", id: nodeId },
      data,
      `node.draining:${nodeId}:${now}`,
      now,
    );
  }

  /**
   * An operator's cordon: no new work on a ready node, what runs runs on, until `uncordon`. Draining
   * and lost nodes are refused. A node they cordoned already keeps its first cordon.
   */
  cordon(nodeId: string, asked: Omit<NodeCordon, "since">, now: number): NodeResult {
    const node = this.node(nodeId);
    if (!node) return { ok: false, state: "unknown" };
    if (node.state !== "ready") return { ok: false, state: node.state };
    if (node.cordon === null) {
      const cordon: NodeCordon = { since: now, reason: asked.reason, by: asked.by };
      this.patch("nodes", node, { cordon: JSON.stringify(cordon) });
      this.cordonChanged(node, "node.cordoned", { reason: "operator", detail: cordon.reason, by: cordon.by }, now);
    }
    return { ok: true, state: liveState(node) };
  }

  /**
   * Lifts the operator's cordon, in any state (a lost node that comes back is not cordoned then). A
   * hung engine's cordon stays until the engine answers. `changed`: the node takes new work again.
   */
  uncordon(nodeId: string, by: string | null, now: number): NodeResult & { changed: boolean } {
    const node = this.node(nodeId);
    if (!node) return { ok: false, state: "unknown", changed: false };
    if (node.cordon === null) return { ok: true, state: liveState(node), changed: false };
    const lifted = JSON.parse(node.cordon) as NodeCordon;
    this.patch("nodes", node, { cordon: null });
    this.cordonChanged(
      node,
      "node.uncordoned",
      { reason: "operator", by, lifted: { ...lifted, since: new Date(lifted.since).toISOString() } },
      now,
    );
    return { ok: true, state: liveState(node), changed: node.state === "ready" && !cordoned(node) };
  }

  /** The node left the fleet: its work ends as lost (retried elsewhere; see `goneOutcome`) and its row goes. */
  removeNode(nodeId: string, now: number): boolean {
    // A drain kept for a node that never registered goes with it.
    this.db.run("delete from pending_drains where node_id = ?", nodeId);
    const node = this.node(nodeId);
    if (!node) return false;
    for (const run of this.activeRuns(nodeId)) {
      this.endRun(run, this.goneOutcome(run, `node ${nodeId} released`), now, now);
    }
    this.db.run("delete from nodes where id = ?", nodeId);
    this.liveness.delete(nodeId);
    this.presumedAlive.delete(nodeId);
    this.records.audit(
      `node:${nodeId}`,
      null,
      "node.removed",
      { type: "node", id: nodeId },
      { state: node.state },
      `node.removed:${nodeId}:${now}`,
      now,
    );
    this.log("node.removed", { node_id: nodeId, state: node.state });
    return true;
  }

  private markLost(node: NodeRow, now: number, lastSeen: number): void {
    this.patch("nodes", node, { state: "lost", lost_at: now, last_heartbeat_at: lastSeen });
    this.bump(node.id);
    this.records.node(node, now);
    this.records.audit(
      `node:${node.id}`,
      null,
      "node.lost",
      { type: "node", id: node.id },
      { last_heartbeat_at: new Date(lastSeen).toISOString() },
      `node.lost:${node.id}:${now}`,
      now,
    );
    this.log("node.lost", { node_id: node.id, silent_ms: now - lastSeen });
    for (const run of this.activeRuns(node.id)) {
      this.endRun(run, this.goneOutcome(run, `node ${node.id} lost`), now, lastSeen);
    }
  }

  /**
   * How a run ends when its node is lost or removed: `lost` (retried), unless it was asked to stop,
   * when it ends as that stop would have. A run stopped at its kill deadline fails its job ("max
   * runtime exceeded") rather than run again from the start, its whole max runtime already spent.
   */
  private goneOutcome(run: RunRow, reason: string): RunOutcome {
    return run.desired === "stopped" ? this.stoppedOutcome(run, null) : { status: "lost", reason };
  }

  // ---- agent events -----------------------------------------------------------------------

  report(nodeId: string, ev: PlacementEvent, now: number): EventResult & { changed?: boolean } {
    const run = this.run(ev.placement_id);
    if (!run) return { ok: false, code: "unknown_placement" };
    if (run.node_id !== nodeId) return { ok: false, code: "wrong_node" };
    const fresh = this.db.run(
      "insert into seen_events (node_id, event_id, at) values (?, ?, ?) on conflict do nothing",
      nodeId,
      ev.event_id,
      now,
    );
    if (fresh === 0) return { ok: true, duplicate: true };
    this.liveness.set(nodeId, now);
    if (!isActiveRun(run)) return { ok: true, duplicate: false };
    const job = this.job(run.job_id)!;
    const at = Math.min(now, Math.max(run.placed_at, ev.at));
    switch (ev.type) {
      case "pulling":
        if (run.status === "placed") {
          this.patch("runs", run, { status: "pulling" });
          this.records.run(run, job, this.node(nodeId), now);
          this.records.event(job, "pulling", now, { attempt: run.attempt, placement_id: run.id, node_id: nodeId });
        }
        return { ok: true, duplicate: false };
      case "running":
        if (run.status !== "running") {
          this.patch("runs", run, { status: "running", started_at: at });
          this.records.run(run, job, this.node(nodeId), now);
          this.records.event(job, "running", now, { attempt: run.attempt, placement_id: run.id, node_id: nodeId });
          // The job runs once every rank has started: a short rank may already have exited 0 while a
          // slow pull held another back, and the job must still pass through running (its started_at).
          if (job.status === "placed" && run.attempt === job.attempt) {
            if (this.runsOf(job).every((r) => r.started_at !== null)) {
              this.patchJob(job, { status: "running", started_at: job.started_at ?? at }, now);
              this.records.job(job, now);
            }
          }
        }
        return { ok: true, duplicate: false };
      case "exited":
        this.endRun(run, this.exitOutcome(run, ev), now, at);
        return { ok: true, duplicate: false, changed: true };
      case "failed":
        this.endRun(
          run,
          run.desired === "stopped"
            ? this.stoppedOutcome(run, null)
            : {
                status: "failed",
                reason: ev.reason,
                exit_code: null,
                oom: false,
                deadline: false,
                retryable: ev.retryable !== false,
              },
          now,
          at,
        );
        return { ok: true, duplicate: false, changed: true };
    }
  }

  private exitOutcome(run: RunRow, ev: Extract<PlacementEvent, { type: "exited" }>): RunOutcome {
    if (run.desired === "stopped" || ev.stopped_by) {
      const reason = (run.stop_reason as StopReason | null) ?? (ev.stopped_by === "cancel" ? "cancel" : "deadline");
      return this.stoppedOutcome({ ...run, stop_reason: reason }, ev.exit_code);
    }
    if (ev.exit_code === 0 && !ev.oom_killed) return { status: "succeeded", exit_code: 0 };
    const reason = ev.oom_killed ? `OOM killed (exit code ${ev.exit_code})` : `exit code ${ev.exit_code}`;
    return { status: "failed", reason, exit_code: ev.exit_code, oom: ev.oom_killed, deadline: false };
  }

  private stoppedOutcome(run: RunRow, exitCode: number | null): RunOutcome {
    if (run.stop_reason === "deadline") {
      return { status: "failed", reason: "max runtime exceeded", exit_code: exitCode, oom: false, deadline: true };
    }
    if (run.stop_reason === "unhealthy") {
      const reason = run.failure_reason ?? "unhealthy: health check failing";
      return { status: "failed", reason, exit_code: exitCode, oom: false, deadline: false };
    }
    const why = run.stop_reason === "cancel" ? "cancelled" : `stopped (${run.stop_reason ?? "requested"})`;
    return { status: "cancelled", reason: why, exit_code: exitCode };
  }

  /** A run is over: free its GPUs, record it and its usage, then decide what its job does next. */
  private endRun(run: RunRow, outcome: RunOutcome, now: number, usageEnd: number): void {
    const job = this.job(run.job_id)!;
    const node = this.node(run.node_id);
    this.patch("runs", run, {
      status: outcome.status,
      finished_at: now,
      exit_code: "exit_code" in outcome ? outcome.exit_code : null,
      oom_killed: outcome.status === "failed" && outcome.oom ? 1 : 0,
      failure_reason: outcome.status === "succeeded" ? null : outcome.reason,
    });
    this.clearTimer("deadline", run.id);
    this.metrics.delete(run.id);
    this.unlistedSince.delete(run.id);
    this.bump(run.node_id);
    this.records.run(run, job, node, now);
    this.records.gpus(run, job, now);
    this.records.usage(run, job, node?.gpu_model ?? "H100", Math.min(usageEnd, now), now);
    const fields = { attempt: run.attempt, placement_id: run.id, node_id: run.node_id, exit_code: run.exit_code };
    if (outcome.status === "lost") this.records.event(job, "lost", now, { ...fields, reason: outcome.reason });
    else
      this.records.event(job, "exited", now, {
        ...fields,
        reason: run.failure_reason,
        data: { run_status: outcome.status, oom_killed: run.oom_killed === 1 },
      });
    this.afterRun(job, run, outcome, now);
  }

  private afterRun(job: JobRow, run: RunRow, outcome: RunOutcome, now: number): void {
    if (TERMINAL_JOB_STATUSES.includes(job.status) || run.attempt !== job.attempt || job.status === "queued") return;
    if (job.kind === "replica") {
      this.endpoints.restart(job, run, outcome, now);
      return;
    }
    const runs = this.runsOf(job);
    if (outcome.status === "succeeded") {
      if (runs.every((r) => r.status === "succeeded")) {
        this.patchJob(job, { status: "succeeded", exit_code: 0, finished_at: now, failure_reason: null }, now);
        this.records.job(job, now);
        this.records.event(job, "succeeded", now, { attempt: job.attempt, exit_code: 0 });
      }
      return;
    }
    if (outcome.status === "cancelled") return;
    for (const other of runs) if (isActiveRun(other)) this.stopRun(other, job, "gang", now);
    if (outcome.status === "failed" && outcome.deadline) {
      this.patchJob(
        job,
        { status: "failed", exit_code: outcome.exit_code, failure_reason: outcome.reason, finished_at: now },
        now,
      );
      this.records.job(job, now);
      // Its last event says how it ended, as succeeded, cancelled and dead_lettered do.
      this.records.event(job, "failed", now, {
        attempt: job.attempt,
        reason: outcome.reason,
        exit_code: outcome.exit_code,
      });
      return;
    }
    const retryable = outcome.status !== "failed" || outcome.retryable !== false;
    this.attemptFailed(job, outcome.reason, "exit_code" in outcome ? outcome.exit_code : null, now, retryable);
  }

  /**
   * Retry with backoff while attempts remain; then failed, in the dead-letter list with every reason.
   * A failure another attempt would repeat (`retryable` false) goes to the dead-letter list at once:
   * an operator's re-drive runs it again once the cause is fixed (the image pushed, say).
   */
  private attemptFailed(job: JobRow, reason: string, exitCode: number | null, now: number, retryable = true): void {
    const reasons = [...json.strings(job.reasons), `attempt ${job.attempt}: ${reason}`];
    const failures = job.attempt - job.attempt_base;
    if (failures >= job.max_attempts || !retryable) {
      this.patchJob(
        job,
        {
          status: "failed",
          reasons: JSON.stringify(reasons),
          failure_reason: reason,
          exit_code: exitCode,
          dead_lettered_at: now,
          finished_at: now,
        },
        now,
      );
      this.records.job(job, now);
      const data = { reasons, ...(retryable ? {} : { retryable: false }) };
      this.records.event(job, "dead_lettered", now, { attempt: job.attempt, reason, data });
      this.records.audit(
        job.id,
        job.account_id,
        "job.dead_lettered",
        { type: "job", id: job.id },
        { attempts: job.attempt, ...data },
        `job.dead_lettered:${job.id}:${job.attempt}`,
        now,
      );
      return;
    }
    const s = this.settings();
    const delay = backoff(s.retry_base_ms, s.retry_cap_ms, failures, hashString(`${job.id}:${job.attempt}`));
    this.requeue(
      job,
      { reasons: JSON.stringify(reasons), failure_reason: reason, exit_code: exitCode },
      now + delay,
      now,
    );
    this.records.event(job, "retry_scheduled", now, {
      attempt: job.attempt,
      reason,
      data: { backoff_ms: delay, next_attempt_at: new Date(now + delay).toISOString(), next_attempt: job.attempt + 1 },
    });
  }

  requeue(job: JobRow, changes: Partial<JobRow>, at: number, now: number): void {
    this.patchJob(
      job,
      { ...changes, status: "queued", next_attempt_at: at > now ? at : null, queued_at: Math.max(at, now) },
      now,
    );
    if (at > now) this.setTimer("retry", job.id, at);
    this.records.job(job, now);
  }

  // ---- timers and liveness ----------------------------------------------------------------

  /** What the alarm does before its packer pass: due timers, liveness, and the periodic writes. */
  tick(now: number): void {
    const due = this.db.all<{ kind: string; key: string }>("select kind, key from timers where due_at <= ?", now);
    for (const t of due) {
      this.clearTimer(t.kind, t.key);
      if (t.kind === "deadline") this.deadlinePassed(t.key, now);
      else if (t.kind === "reservation") this.reservations.release(t.key, now);
      else if (t.kind === "endpoint_scale") this.traffic.timerFired(t.key, now);
      // `retry`: nothing to do; the pass that follows sees the job eligible again.
    }
    this.traffic.expire(now);
    this.sweep(now);
  }

  private deadlinePassed(runId: string, now: number): void {
    const run = this.run(runId);
    if (!run || !isActiveRun(run)) return;
    this.stopRun(run, this.job(run.job_id)!, "deadline", now);
    this.log("run.deadline_passed", { placement_id: run.id, node_id: run.node_id });
  }

  /** Lost nodes, then heartbeats and waiting reasons written out, old event ids forgotten. */
  private sweep(now: number): void {
    const s = this.settings();
    for (const node of this.nodes()) {
      if (node.state === "lost") continue;
      const last = this.liveness.get(node.id);
      if (last === undefined) {
        // Restarted: liveness lived in memory, so every node gets a fresh timeout from now.
        const from = Math.max(now, node.last_heartbeat_at ?? 0);
        this.liveness.set(node.id, from);
        this.presumedAlive.set(node.id, { from, seen: node.last_heartbeat_at ?? node.registered_at });
        continue;
      }
      if (now - last > s.heartbeat_timeout_ms) {
        // Not heard from since a restart: its last sign of life is the stored one (synced every
        // node_sync_ms, so at most that much early), not the restart's fresh timeout.
        const presumed = this.presumedAlive.get(node.id);
        this.markLost(node, now, presumed && presumed.from === last ? presumed.seen : last);
        this.presumedAlive.delete(node.id);
        continue;
      }
      if (last > (node.synced_heartbeat_at ?? 0) && now - (node.synced_heartbeat_at ?? 0) >= s.node_sync_ms) {
        this.patch("nodes", node, { last_heartbeat_at: last, synced_heartbeat_at: now });
        this.records.node(node, now);
      }
    }
    for (const job of this.db.all<JobRow>("select * from jobs where status = 'queued'")) {
      const w = this.waiting.get(job.id);
      if (!w || w.reason === job.waiting_reason) continue;
      if (now - (this.reasonWrittenAt.get(job.id) ?? 0) < s.waiting_reason_sync_ms) continue;
      this.patchJob(job, { waiting_reason: w.reason }, now);
      this.records.job(job, now);
      this.reasonWrittenAt.set(job.id, now);
    }
    for (const id of this.reasonWrittenAt.keys()) if (!this.waiting.has(id)) this.reasonWrittenAt.delete(id);
    this.db.run("delete from seen_events where at < ?", now - s.seen_event_ttl_ms);
  }

  /** The next instant the alarm has work: a timer, or the periodic sweep while there is anything to watch. */
  nextDue(now: number): number | null {
    const timer = this.db.one<{ at: number | null }>("select min(due_at) as at from timers")?.at ?? null;
    const watched = this.db.one<{ n: number }>(
      "select (select count(*) from nodes where state != 'lost') + (select count(*) from jobs where status = 'queued') as n",
    )!.n;
    const sweep = watched > 0 ? now + this.settings().housekeeping_ms : null;
    if (timer === null) return sweep;
    return sweep === null ? timer : Math.min(timer, sweep);
  }

  // ---- the packer pass --------------------------------------------------------------------

  /** Run the packer on the current state and apply its plan, re-checking each placement first. */
  schedule(now: number): number {
    const queued = this.db.all<JobRow>("select * from jobs where status = 'queued' order by submitted_at, id");
    if (queued.length === 0) return 0;
    const stopping = this.stillStopping();
    const eligible: JobRow[] = [];
    for (const j of queued) {
      if (j.next_attempt_at !== null && j.next_attempt_at > now) {
        this.waiting.set(j.id, {
          reason: `retrying at ${new Date(j.next_attempt_at).toISOString()} after: ${j.failure_reason ?? "a failure"}`,
          reserved_start_at: null,
        });
        continue;
      }
      const left = stopping.get(j.id);
      if (left) {
        const attempts = [...new Set(left.map((r) => r.attempt))];
        const nodes = [...new Set(left.map((r) => r.node_id))];
        this.waiting.set(j.id, {
          reason: `waiting for attempt${attempts.length === 1 ? "" : "s"} ${attempts.join(", ")} to stop: still running on node${nodes.length === 1 ? "" : "s"} ${nodes.join(", ")}`,
          reserved_start_at: null,
        });
        continue;
      }
      eligible.push(j);
    }
    if (eligible.length === 0) return 0;
    const nodes = this.nodes();
    const runs = this.activeRuns();
    const jobs = new Map<string, JobRow>();
    for (const r of runs) if (!jobs.has(r.job_id)) jobs.set(r.job_id, this.job(r.job_id)!);
    const reservations = this.reservations.all();
    const p = plan({
      now,
      nodes: nodes.map(toPackerNode),
      allocations: runs.map((r) => toAllocation(r, jobs.get(r.job_id)!)),
      holds: reservations.flatMap(toHolds),
      queue: eligible.map(toPackerJob),
      config: this.settings().packer,
    });
    const byId = new Map(eligible.map((j) => [j.id, j]));
    const check = new PlacementCheck(nodes, runs, reservations);
    let placed = 0;
    for (const pl of p.placements) {
      const job = byId.get(pl.job_id)!;
      const problem = check.admit(job, pl.nodes);
      if (problem) {
        this.log("plan.rejected_on_apply", { job_id: job.id, problem });
        continue;
      }
      this.place(job, pl.nodes, reservations, now);
      placed++;
    }
    for (const w of p.waiting) this.waiting.set(w.job_id, { reason: w.reason, reserved_start_at: w.reserved_start_at });
    return placed;
  }

  /**
   * Queued jobs with runs of an earlier attempt still active (asked to stop, not yet ended), and
   * those runs. Such a job is not placed until they end (their exit, a heartbeat that no longer
   * lists them, or their node's loss; each ends in a packer pass): a gang's other ranks, stopped
   * when one failed, may outlast the backoff, and a re-drive has none, so a new attempt would run
   * beside the old one (reading what a rank checkpointing on SIGTERM still writes). Replicas are
   * not held back: a replica scaled down and up again starts while its old run stops.
   */
  stillStopping(): Map<string, RunRow[]> {
    const out = new Map<string, RunRow[]>();
    const runs = this.db.all<RunRow>(
      `select runs.* from runs join jobs on jobs.id = runs.job_id
       where jobs.status = 'queued' and jobs.kind = 'job' and runs.status in ${ACTIVE_RUN_SQL} order by runs.id`,
    );
    for (const r of runs) out.set(r.job_id, [...(out.get(r.job_id) ?? []), r]);
    return out;
  }

  private place(
    job: JobRow,
    assignments: { node_id: string; gpu_indices: number[]; cpu_milli: number; memory_mib: number }[],
    reservations: ReservationRow[],
    now: number,
  ): void {
    const attempt = job.attempt + 1;
    const deadline = job.max_runtime_s != null ? now + job.max_runtime_s * 1000 : null;
    this.patchJob(job, { status: "placed", attempt, waiting_reason: null, next_attempt_at: null }, now);
    this.waiting.delete(job.id);
    assignments.forEach((a, i) => {
      const id = `${job.id}-a${attempt}-g${i}`;
      this.db.run(
        `insert into runs (id, job_id, attempt, gang_index, node_id, gpu_indices, cpu_milli, memory_mib, status, desired,
           placed_at, kill_deadline, tier)
         values (?, ?, ?, ?, ?, ?, ?, ?, 'placed', 'running', ?, ?, ?)`,
        id,
        job.id,
        attempt,
        i,
        a.node_id,
        JSON.stringify(a.gpu_indices),
        a.cpu_milli,
        a.memory_mib,
        now,
        deadline,
        job.tier,
      );
      if (deadline !== null) {
        this.setTimer("deadline", id, deadline + this.settings().grace_period_ms + this.settings().deadline_slack_ms);
      }
      this.reservations.consumeHeld(reservations, job, a.node_id, a.gpu_indices);
      this.bump(a.node_id);
      const run = this.run(id)!;
      this.records.run(run, job, this.node(a.node_id), now);
      this.records.gpus(run, job, now);
      this.records.event(job, "placed", now, {
        attempt,
        placement_id: id,
        node_id: a.node_id,
        gpu_indices: a.gpu_indices,
      });
    });
    this.records.job(job, now);
  }

  // ---- views ------------------------------------------------------------------------------

  /**
   * The account and image of a placement active on this node (placed, pulling or running), or null:
   * what the agent route needs to hand the node that account's registry credentials, and no others.
   */
  placementImage(nodeId: string, placementId: string): { account_id: string; image: string } | null {
    const row = this.db.one<{ account_id: string; spec: string }>(
      `select jobs.account_id as account_id, jobs.spec as spec from runs join jobs on jobs.id = runs.job_id
       where runs.id = ? and runs.node_id = ? and runs.status in ${ACTIVE_RUN_SQL}`,
      placementId,
      nodeId,
    );
    if (!row) return null;
    return { account_id: row.account_id, image: (JSON.parse(row.spec) as ContainerSpec).image };
  }

  placementSet(nodeId: string): PlacementSet {
    const node = this.node(nodeId);
    if (!node) return { version: 0, placements: [] };
    const grace = this.settings().grace_period_ms;
    // An endpoint's replicas on this node share one spec: read it once per answer.
    const endpointSpecs = new Map<string, EndpointSpec | null>();
    const endpointOf = (id: string) => {
      if (!endpointSpecs.has(id)) endpointSpecs.set(id, this.endpoints.endpoint(id));
      return endpointSpecs.get(id) ?? null;
    };
    const placements: Placement[] = this.db
      .all<RunRow & { spec: string; endpoint_id: string | null; gang_size: number; master_address: string | null }>(
        `select runs.*, jobs.spec as spec, jobs.endpoint_id as endpoint_id,
                (select count(*) from runs gang where gang.job_id = runs.job_id and gang.attempt = runs.attempt) as gang_size,
                (select n.address from runs gang join nodes n on n.id = gang.node_id
                 where gang.job_id = runs.job_id and gang.attempt = runs.attempt and gang.gang_index = 0) as master_address
         from runs join jobs on jobs.id = runs.job_id
         where runs.node_id = ? and runs.status in ${ACTIVE_RUN_SQL} order by runs.placed_at, runs.id`,
        nodeId,
      )
      .map((r) => {
        const spec = JSON.parse(r.spec) as ContainerSpec;
        const endpoint = r.endpoint_id ? endpointOf(r.endpoint_id) : null;
        return {
          placement_id: r.id,
          job_id: r.job_id,
          attempt: r.attempt,
          gang_index: r.gang_index,
          gang_size: r.gang_size,
          // Rank 0's node, for a gang only: one node needs no rendezvous address.
          gang_master_address: r.gang_size > 1 ? r.master_address : null,
          image: spec.image,
          command: spec.command,
          args: spec.args,
          env: spec.env,
          gpu_indices: json.numbers(r.gpu_indices),
          cpu_milli: r.cpu_milli,
          memory_mib: r.memory_mib,
          kill_deadline: r.kill_deadline,
          desired: r.desired,
          grace_period_ms: grace,
          health_check: endpoint ? { port: endpoint.port, path: endpoint.health_path } : null,
        };
      });
    return { version: node.placement_version, placements };
  }
}
