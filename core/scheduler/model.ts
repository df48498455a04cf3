/**
 * The packer's view of a region: nodes, what already holds their GPUs, and the queue. Plain values
 * only; times are epoch milliseconds, CPU in millicores, memory in MiB. GPU models are strings so
 * traces from other fleets (T4, V100…) replay through the same code.
 */
import type { Tier } from "../schemas/common";

export type { Tier };

/**
 * `cordoned`: up, but taking no new work (its container engine does not answer, say); what runs on
 * it runs on. `draining`: leaving the region (its block ends or it is released).
 */
export type NodeState = "ready" | "cordoned" | "draining" | "lost";

export interface PackerNode {
  id: string;
  zone: string;
  gpu_model: string;
  /** Every GPU index of the node (at most 16). */
  gpus: readonly number[];
  unhealthy_gpus: readonly number[];
  cpu_milli: number;
  memory_mib: number;
  state: NodeState;
  /** End of the node's block; null when it has none (e.g. a development node). */
  block_end_at: number | null;
}

export interface PackerJob {
  id: string;
  account_id: string;
  tier: Tier;
  priority: number;
  gpu_count: number;
  /** Empty = any model. */
  gpu_models: readonly string[];
  /** Per node: a gang job of k×8 GPUs asks this much on each of its k nodes. */
  cpu_milli: number;
  memory_mib: number;
  estimated_duration_s: number | null;
  /** Null = no deadline (an endpoint replica). */
  max_runtime_s: number | null;
  submitted_at: number;
  /**
   * Since when this attempt has waited for capacity (a retry: since its backoff ended; a re-drive:
   * since then); absent: since `submitted_at`. Aging counts from it, so a job that ran for hours and
   * failed is not promoted over everything on its retry. The order by age stays by `submitted_at`.
   */
  queued_at?: number;
  attempt: number;
}

/** Resources already held on a node by a placed or running job. */
export interface PackerAllocation {
  node_id: string;
  gpu_indices: readonly number[];
  cpu_milli: number;
  memory_mib: number;
  /** When it is expected to free them (estimate, else kill deadline); null = not known. */
  expected_end_at: number | null;
}

/** GPUs held back by a reservation; `usable_by` a tier may still place its jobs on them. */
export interface PackerHold {
  node_id: string;
  gpu_indices: readonly number[];
  usable_by: Tier | null;
}

export interface ScoreWeights {
  bin_pack: number;
  fragmentation: number;
  block_fit: number;
}

export interface PackerConfig {
  /** How a node is chosen among feasible ones: Scalar's scores, or a baseline (see policies.ts). */
  policy: "scalar" | "best-fit" | "first-fit";
  weights: ScoreWeights;
  /** Feasible nodes scored per (GPU model, free GPUs) bucket: nodes of one bucket differ only by block. */
  candidates_per_bucket: number;
  /** A waiting Flex job gains one priority level per step… */
  aging_step_ms: number;
  /** …up to this many levels. */
  aging_cap: number;
  /** A Flex job waiting this long is ordered with Fast work (after Fast jobs of equal or higher priority). */
  flex_promote_after_ms: number;
  /** Blocked Fast jobs whose reserved start Flex work must not delay; past this, Flex does not start. */
  max_protected_reservations: number;
  /** Share of queued work by GPU count, for the fragmentation score; null = from the queue. */
  size_mix: Readonly<Record<number, number>> | null;
}

export const DEFAULT_CONFIG: PackerConfig = {
  policy: "scalar",
  weights: { bin_pack: 1, fragmentation: 1, block_fit: 1 },
  candidates_per_bucket: 4,
  aging_step_ms: 5 * 60_000,
  aging_cap: 100,
  flex_promote_after_ms: 6 * 3_600_000,
  max_protected_reservations: 16,
  size_mix: null,
};

export function resolveConfig(config: Partial<PackerConfig> | undefined): PackerConfig {
  if (!config) return DEFAULT_CONFIG;
  return { ...DEFAULT_CONFIG, ...config, weights: { ...DEFAULT_CONFIG.weights, ...config.weights } };
}

/** One node's share of a placement: which GPUs, and the CPU and memory cgroup limits. */
export interface NodeAssignment {
  node_id: string;
  gpu_indices: number[];
  cpu_milli: number;
  memory_mib: number;
}

export const GPUS_PER_GANG_NODE = 8;

/** GPUs a job needs per node and how many nodes: up to 8 on one node, else k whole 8-GPU nodes. */
export function gangShape(gpuCount: number): { perNode: number; nodes: number } {
  if (gpuCount <= GPUS_PER_GANG_NODE) return { perNode: gpuCount, nodes: 1 };
  return { perNode: GPUS_PER_GANG_NODE, nodes: Math.ceil(gpuCount / GPUS_PER_GANG_NODE) };
}

/** The estimate in ms, never past the max runtime (the job is killed then); null without one. */
export function estimateMs(job: Pick<PackerJob, "estimated_duration_s" | "max_runtime_s">): number | null {
  if (job.estimated_duration_s == null) return null;
  const ms = job.estimated_duration_s * 1000;
  return job.max_runtime_s != null ? Math.min(ms, job.max_runtime_s * 1000) : ms;
}

/** When a job placed now is expected to free its resources (Infinity = unknown). */
export function expectedEnd(job: Pick<PackerJob, "estimated_duration_s" | "max_runtime_s">, now: number): number {
  const estimate = estimateMs(job);
  if (estimate != null) return now + estimate;
  if (job.max_runtime_s != null) return now + job.max_runtime_s * 1000;
  return Number.POSITIVE_INFINITY;
}
