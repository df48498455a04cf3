/**
 * What the object tells Postgres, built from its rows and queued on the outbox in the same
 * transaction as the change: job status, runs, GPU assignments, usage, job events, audit rows and
 * node rows. Endpoint replicas have no `jobs` row in Postgres: their runs go as `replica_runs`
 * rows, with their usage (no job events, no audit rows).
 * Secret values never appear here: the container spec is not part of any record.
 */
import type { ObjectSql } from "../sqlite";
import { replicaIndex } from "./endpoints";
import type { NodeRecord, Outbox } from "./outbox";
import { type JobRow, json, type NodeRow, type RunRow } from "./rows";

export type JobEventType =
  | "queued"
  | "placed"
  | "pulling"
  | "running"
  | "exited"
  | "failed"
  | "lost"
  | "stop_requested"
  | "retry_scheduled"
  | "dead_lettered"
  | "redriven"
  | "succeeded"
  | "cancelled";

export interface EventFields {
  attempt?: number | null;
  placement_id?: string | null;
  node_id?: string | null;
  gpu_indices?: number[] | null;
  exit_code?: number | null;
  reason?: string | null;
  data?: Record<string, unknown>;
}

export class Records {
  constructor(
    private readonly db: ObjectSql,
    private readonly outbox: Outbox,
    private readonly region: () => string,
  ) {}

  private get actor(): string {
    return `region-scheduler:${this.region()}`;
  }

  job(job: JobRow, now: number): void {
    if (job.kind !== "job") return;
    this.outbox.add(
      job.id,
      {
        kind: "job",
        row: {
          id: job.id,
          status: job.status,
          attempts: job.attempt,
          waiting_reason: job.waiting_reason,
          exit_code: job.exit_code,
          failure_reason: job.failure_reason,
          dead_lettered_at: job.dead_lettered_at,
          started_at: job.started_at,
          finished_at: job.finished_at,
        },
      },
      now,
    );
  }

  /** One row per scheduling event of a job, numbered per job so re-deliveries collide. */
  event(job: JobRow, type: JobEventType, now: number, fields: EventFields = {}): void {
    if (job.kind !== "job") return;
    const seq = job.event_seq + 1;
    job.event_seq = seq;
    this.db.run("update jobs set event_seq = ? where id = ?", seq, job.id);
    this.outbox.add(
      job.id,
      {
        kind: "job_event",
        row: {
          job_id: job.id,
          seq,
          account_id: job.account_id,
          type,
          at: now,
          attempt: fields.attempt ?? null,
          placement_id: fields.placement_id ?? null,
          node_id: fields.node_id ?? null,
          gpu_indices: fields.gpu_indices ?? null,
          exit_code: fields.exit_code ?? null,
          reason: fields.reason ?? null,
          data: fields.data ?? {},
        },
      },
      now,
    );
  }

  run(run: RunRow, job: JobRow, node: NodeRow | undefined, now: number): void {
    if (job.kind === "replica" && job.endpoint_id) {
      this.outbox.add(
        job.id,
        {
          kind: "replica_run",
          row: {
            id: run.id,
            endpoint_id: job.endpoint_id,
            account_id: job.account_id,
            replica: replicaIndex(job.id),
            attempt: run.attempt,
            node: node ? this.nodeRecord(node) : this.unknownNode(run),
            status: run.status,
            placed_at: run.placed_at,
            started_at: run.started_at,
            finished_at: run.finished_at,
            exit_code: run.exit_code,
            tier: run.tier ?? job.tier,
            gpu_count: json.numbers(run.gpu_indices).length,
          },
        },
        now,
      );
      return;
    }
    if (job.kind !== "job") return;
    this.outbox.add(
      job.id,
      {
        kind: "job_run",
        row: {
          id: run.id,
          job_id: job.id,
          account_id: job.account_id,
          attempt: run.attempt,
          gang_index: run.gang_index,
          node: node ? this.nodeRecord(node) : this.unknownNode(run),
          status: run.status,
          gpu_count: json.numbers(run.gpu_indices).length,
          placed_at: run.placed_at,
          started_at: run.started_at,
          finished_at: run.finished_at,
          exit_code: run.exit_code,
          oom_killed: run.oom_killed === 1,
          failure_reason: run.failure_reason,
        },
      },
      now,
    );
  }

  gpus(run: RunRow, job: JobRow, now: number): void {
    if (job.kind !== "job") return;
    this.outbox.add(
      job.id,
      {
        kind: "gpu_assignments",
        row: {
          job_run_id: run.id,
          node_id: run.node_id,
          gpu_indices: json.numbers(run.gpu_indices),
          assigned_at: run.placed_at,
          released_at: run.finished_at,
        },
      },
      now,
    );
  }

  /**
   * GPU-seconds of a finished run, by tier and GPU model: one per run, for billing. The tier is the
   * one it was placed at: an endpoint's replica keeps running at its old tier while a changed spec
   * replaces it.
   */
  usage(run: RunRow, job: JobRow, gpuModel: string, end: number, now: number): void {
    if (run.started_at == null) return;
    const gpuCount = json.numbers(run.gpu_indices).length;
    const seconds = Math.max(0, Math.round((end - run.started_at) / 1000));
    this.outbox.add(
      job.id,
      {
        kind: "usage_event",
        row: {
          account_id: job.account_id,
          job_id: job.kind === "job" ? job.id : null,
          job_run_id: run.id,
          tier: run.tier ?? job.tier,
          gpu_model: gpuModel,
          gpu_count: gpuCount,
          gpu_seconds: gpuCount * seconds,
          period_start: run.started_at,
          period_end: Math.max(run.started_at, end),
        },
      },
      now,
    );
  }

  audit(
    key: string,
    accountId: string | null,
    action: string,
    target: { type: string; id: string },
    data: Record<string, unknown>,
    dedupeKey: string,
    now: number,
  ): void {
    this.outbox.add(
      key,
      {
        kind: "audit",
        row: {
          account_id: accountId,
          actor_id: this.actor,
          action,
          target_type: target.type,
          target_id: target.id,
          data,
          dedupe_key: dedupeKey,
        },
      },
      now,
    );
  }

  node(node: NodeRow, now: number): void {
    this.outbox.add(`node:${node.id}`, { kind: "node", row: this.nodeRecord(node) }, now);
  }

  nodeRecord(node: NodeRow): NodeRecord {
    return {
      id: node.id,
      region: this.region(),
      zone: node.zone,
      gpu_model: node.gpu_model,
      gpu_count: json.numbers(node.gpus).length,
      cpu_milli: node.cpu_milli,
      memory_mib: node.memory_mib,
      state: node.state,
      drained: node.drained_at !== null,
      hostname: node.hostname,
      block_id: node.block_id,
      registered_at: node.registered_at,
      last_heartbeat_at: node.last_heartbeat_at,
    };
  }

  private unknownNode(run: RunRow): NodeRecord {
    return {
      id: run.node_id,
      region: this.region(),
      zone: "unknown",
      gpu_model: "H100",
      gpu_count: 8,
      cpu_milli: run.cpu_milli,
      memory_mib: run.memory_mib,
      state: "lost",
      hostname: null,
      block_id: null,
      registered_at: run.placed_at,
      last_heartbeat_at: null,
    };
  }
}
