/** Rows of the object's SQLite tables as they are read back (JSON columns still as text). */
import type { JobStatus, RunStatus, Tier } from "../../core/schemas";

export const ACTIVE_RUN_STATUSES: readonly RunStatus[] = ["placed", "pulling", "running"];
export const ACTIVE_RUN_SQL = "('placed', 'pulling', 'running')";

export type NodeState = "ready" | "draining" | "lost";

export type NodeRow = {
  id: string;
  zone: string;
  gpu_model: string;
  gpus: string;
  unhealthy_gpus: string;
  cpu_milli: number;
  memory_mib: number;
  state: NodeState;
  block_id: string | null;
  block_end_at: number | null;
  hostname: string | null;
  /** Where the node's peers reach it (IP or DNS name), as its agent reported; null if it did not. */
  address: string | null;
  /** Where the control plane reaches the node's ingress (its agent's report); null: no endpoint traffic. */
  ingress_url: string | null;
  agent_version: string | null;
  registered_at: number;
  last_heartbeat_at: number | null;
  placement_version: number;
  lost_at: number | null;
  synced_heartbeat_at: number | null;
  /** JSON of the agent's `EngineStuck` while its container engine does not answer (cordoned); else null. */
  engine_stuck: string | null;
  /** JSON of the operator's `NodeCordon` while they keep new work off the node; else null. */
  cordon: string | null;
  /**
   * When the node was drained (for good: it takes no new work again); null: never. A lost node
   * keeps it and comes back `draining`.
   */
  drained_at: number | null;
};

/** A ready node takes no new work while its agent reports a hung container engine, or an operator cordoned it. */
export function cordoned(n: NodeRow): boolean {
  return n.state === "ready" && (n.engine_stuck !== null || n.cordon !== null);
}

/** The state the packer and the views see: a cordoned ready node is `cordoned`. */
export function liveState(n: NodeRow): NodeState | "cordoned" {
  return cordoned(n) ? "cordoned" : n.state;
}

export type JobKind = "job" | "replica";

export type JobRow = {
  id: string;
  kind: JobKind;
  endpoint_id: string | null;
  account_id: string;
  tier: Tier;
  priority: number;
  gpu_count: number;
  gpu_models: string;
  cpu_milli: number;
  memory_mib: number;
  estimated_duration_s: number | null;
  max_runtime_s: number | null;
  max_attempts: number;
  submitted_at: number;
  /** Since when the current attempt has waited for capacity; null: since submitted_at (schema v12). */
  queued_at: number | null;
  spec: string;
  status: JobStatus;
  attempt: number;
  attempt_base: number;
  waiting_reason: string | null;
  next_attempt_at: number | null;
  exit_code: number | null;
  failure_reason: string | null;
  reasons: string;
  dead_lettered_at: number | null;
  started_at: number | null;
  finished_at: number | null;
  event_seq: number;
  updated_at: number;
};

export type RunRow = {
  id: string;
  job_id: string;
  attempt: number;
  gang_index: number;
  node_id: string;
  gpu_indices: string;
  cpu_milli: number;
  memory_mib: number;
  status: RunStatus;
  desired: "running" | "stopped";
  stop_reason: string | null;
  stop_requested_at: number | null;
  placed_at: number;
  started_at: number | null;
  finished_at: number | null;
  kill_deadline: number | null;
  exit_code: number | null;
  oom_killed: number;
  failure_reason: string | null;
  /** An endpoint replica's last readiness report: 1 ready, 0 not, null none yet. */
  ready: number | null;
  /** When `ready` last changed (its first report counts as a change). */
  ready_changed_at: number | null;
  /** When the replica was first reported ready; null: never yet. */
  first_ready_at: number | null;
  /** The job's tier when this run was placed (what its usage is billed at); null before schema v10. */
  tier: Tier | null;
};

export type ReservationRow = {
  id: string;
  gpu_model: string;
  tier: Tier | null;
  reason: string;
  expires_at: number | null;
  created_at: number;
  /** JSON `[{ node_id, gpu_indices }]`. */
  gpus: string;
};

export type EndpointRow = {
  id: string;
  spec: string;
  spec_hash: string;
  created_at: number;
  updated_at: number;
  /** Replicas traffic wants now (see traffic.ts); null: none asked yet, so `min_replicas`. */
  desired: number | null;
  /** The API's version of `spec`; null: synced before the object kept versions (older than any). */
  version: number | null;
};

/** What a job row's `spec` column holds: the container, secrets included (never leaves this object but to its node). */
export interface ContainerSpec {
  image: string;
  command: string[];
  args: string[];
  env: { name: string; value: string }[];
}

export const json = {
  numbers: (s: string): number[] => JSON.parse(s) as number[],
  strings: (s: string): string[] => JSON.parse(s) as string[],
};

export function isActiveRun(run: Pick<RunRow, "status">): boolean {
  return ACTIVE_RUN_STATUSES.includes(run.status);
}

export function specOf(x: {
  image: string;
  command: string[];
  args: string[];
  env: { name: string; value: string }[];
}): ContainerSpec {
  return {
    image: x.image,
    command: x.command,
    args: x.args,
    env: x.env.map((e) => ({ name: e.name, value: e.value })),
  };
}

/** Since when a queued job has waited for capacity in its current attempt. */
export function waitingSince(j: Pick<JobRow, "queued_at" | "submitted_at">): number {
  return j.queued_at ?? j.submitted_at;
}
