/** Rows → the API's resources. Secret environment values are dropped here, and nowhere else needed. */

import type { GpuModel, JobStatus, Tier } from "../../core/schemas";
import type { JobState, PlacementView, RunMetrics } from "../../durable-objects/region-scheduler/rpc";
import type { EnvEntry, StoredEnvEntry } from "../auth/env-secrets";
import type { endpoints, jobs } from "../db/schema";
import type { Job, PlacementMetrics, PlacementView as PlacementWire } from "./schemas";

export type JobRow = typeof jobs.$inferSelect;
export type EndpointRow = typeof endpoints.$inferSelect;

export function envView(env: unknown): { name: string; secret: boolean; value?: string }[] {
  const list = Array.isArray(env) ? (env as StoredEnvEntry[]) : [];
  return list.map((e) =>
    e.secret || !("value" in e) ? { name: e.name, secret: true } : { name: e.name, secret: false, value: e.value },
  );
}

/** The container and resources of a job or an endpoint, as stored and as shown. */
interface WorkloadRow {
  image: string;
  command: string[];
  args: string[];
  env: unknown;
  gpuCount: number;
  gpuModels: string[];
  cpuMilli: number;
  memoryMib: number;
}
interface WorkloadBody {
  image: string;
  command: string[];
  args: string[];
  /** Secret values already sealed (`sealEnv`). */
  env: StoredEnvEntry[];
  gpu_count: number;
  gpu_models: GpuModel[];
  cpu_milli: number;
  memory_mib: number;
}

export function workloadColumns(b: WorkloadBody): WorkloadRow {
  return {
    image: b.image,
    command: b.command,
    args: b.args,
    env: b.env,
    gpuCount: b.gpu_count,
    gpuModels: b.gpu_models,
    cpuMilli: b.cpu_milli,
    memoryMib: b.memory_mib,
  };
}

export function workloadView(row: WorkloadRow) {
  return {
    image: row.image,
    command: row.command,
    args: row.args,
    env: envView(row.env),
    gpu_count: row.gpuCount,
    gpu_models: row.gpuModels as GpuModel[],
    cpu_milli: row.cpuMilli,
    memory_mib: row.memoryMib,
  };
}

/**
 * What the scheduler gets: every environment value, secret or not (the container needs them), with
 * `env` opened from the row by the caller (`openEnv`).
 */
export function schedulerWorkload(row: WorkloadRow, env: Pick<EnvEntry, "name" | "value">[]) {
  return {
    image: row.image,
    command: row.command,
    args: row.args,
    env,
    gpu_count: row.gpuCount,
    gpu_models: row.gpuModels as GpuModel[],
    cpu_milli: row.cpuMilli,
    memory_mib: row.memoryMib,
  };
}

export const iso = (d: Date | null | undefined): string | null => (d ? d.toISOString() : null);
const isoMs = (ms: number | null | undefined): string | null => (ms == null ? null : new Date(ms).toISOString());

export interface RunRow {
  placement_id: string;
  node_id: string;
  zone: string;
  gpu_indices: number[];
  attempt: number;
  node_rank: number;
  status: string;
  placed_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
  exit_code: number | null;
}

export function runPlacement(r: RunRow): PlacementWire {
  return {
    placement_id: r.placement_id,
    node_id: r.node_id,
    zone: r.zone,
    gpu_indices: r.gpu_indices,
    attempt: r.attempt,
    node_rank: r.node_rank,
    status: r.status,
    placed_at: r.placed_at.toISOString(),
    started_at: iso(r.started_at),
    finished_at: iso(r.finished_at),
    exit_code: r.exit_code,
    // Only the scheduler measures a placement, and only while it runs.
    metrics: null,
  };
}

/** A placement's last measured resource use; undefined: an older scheduler object answers without it. */
export function metricsView(m: RunMetrics | null | undefined): PlacementMetrics | null {
  return m ? { ...m, at: new Date(m.at).toISOString() } : null;
}

export function livePlacement(p: PlacementView): PlacementWire {
  return {
    placement_id: p.placement_id,
    node_id: p.node_id,
    zone: p.zone,
    gpu_indices: p.gpu_indices,
    attempt: p.attempt,
    node_rank: p.gang_index,
    status: p.status,
    placed_at: isoMs(p.placed_at) ?? new Date(0).toISOString(),
    started_at: isoMs(p.started_at),
    // Absent: an object from before these fields.
    finished_at: isoMs(p.finished_at),
    exit_code: p.exit_code ?? null,
    metrics: metricsView(p.metrics),
  };
}

/** The job as stored, overlaid with the scheduler's live view when there is one. */
export function jobView(row: JobRow, live: JobState | null = null, runs: RunRow[] = []): Job {
  return {
    id: row.id,
    status: (live?.status ?? row.status) as JobStatus,
    tier: row.tier as Tier,
    priority: row.priority,
    region: row.region,
    ...workloadView(row),
    max_runtime_s: row.maxRuntimeS,
    estimated_duration_s: row.estimatedDurationS,
    max_attempts: row.maxAttempts,
    attempts: live ? Math.max(live.attempt, row.attempts) : row.attempts,
    labels: (row.labels ?? {}) as Record<string, string>,
    waiting_reason: live ? live.waiting_reason : row.waitingReason,
    next_attempt_at: isoMs(live?.next_attempt_at),
    exit_code: live?.exit_code ?? row.exitCode,
    failure_reason: live?.failure_reason ?? row.failureReason,
    dead_lettered: live?.dead_lettered ?? row.deadLetteredAt !== null,
    placements: live && live.placements.length > 0 ? live.placements.map(livePlacement) : runs.map(runPlacement),
    created_at: row.createdAt.toISOString(),
    updated_at: row.updatedAt.toISOString(),
    started_at: iso(row.startedAt),
    finished_at: iso(row.finishedAt),
  };
}
