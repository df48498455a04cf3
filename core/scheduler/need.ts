/** A job's demand as the filters and scorers read it, resolved once against a fleet. */
import type { Fleet } from "./fleet";
import { estimateMs, expectedEnd, gangShape, type PackerJob, type Tier } from "./model";

export interface JobNeed {
  readonly job: PackerJob;
  readonly tier: Tier;
  /** GPUs on each node, and how many nodes (1, or k for a k×8 gang). */
  readonly perNode: number;
  readonly nodes: number;
  /** By model ordinal of the fleet: may the job use that model? */
  readonly modelAllowed: readonly boolean[];
  readonly cpu: number;
  readonly mem: number;
  /** Estimated duration in ms (capped at the max runtime); null when the job has none. */
  readonly estimate: number | null;
  /** now + estimate; null when the job has no estimate. */
  readonly estimatedEnd: number | null;
  /** now + max runtime; Infinity for no deadline. */
  readonly deadline: number;
  /** When resources taken now are expected back (estimate, else deadline). */
  readonly end: number;
}

export function needFor(job: PackerJob, fleet: Fleet, now: number): JobNeed {
  const { perNode, nodes } = gangShape(job.gpu_count);
  const estimate = estimateMs(job);
  return {
    job,
    tier: job.tier,
    perNode,
    nodes,
    modelAllowed: fleet.allowed(job.gpu_models),
    cpu: job.cpu_milli,
    mem: job.memory_mib,
    estimate,
    estimatedEnd: estimate != null ? now + estimate : null,
    deadline: job.max_runtime_s != null ? now + job.max_runtime_s * 1000 : Number.POSITIVE_INFINITY,
    end: expectedEnd(job, now),
  };
}

/** FNV-1a, 32 bits: a stable seed from an id. */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}
