/**
 * Scorers: pure functions of (job, node) on a fixed 0–100 scale, combined once by weight at the end.
 *  - bin pack: how full the node's GPUs are after placing (most-allocated), so partly used nodes
 *    fill first, whole nodes stay free for 8-GPU jobs, and idle nodes can drain;
 *  - fragmentation: how much the placement changes the free GPUs that the expected next job could
 *    not use (after Weng et al., ATC'23), so a 4-GPU hole is not broken for a 1-GPU job when 4-GPU
 *    jobs are common;
 *  - block fit: whether the node's block outlives the job, so work does not land on a node about
 *    to leave.
 */
import type { FleetNode } from "./fleet";
import { MAX_GPUS_PER_NODE } from "./fleet";
import { popcount } from "./gpus";
import { GPUS_PER_GANG_NODE, type PackerJob, type ScoreWeights } from "./model";
import type { JobNeed } from "./need";

export interface ScoreContext {
  /** frag[f]: GPUs of a node with f free that the next job is expected not to fit in. */
  readonly frag: Float64Array;
  readonly now: number;
  readonly weights: ScoreWeights;
  readonly weightSum: number;
}

export type Scorer = (need: JobNeed, node: FleetNode, ctx: ScoreContext) => number;

/** 100 × GPUs in use after placement / healthy GPUs. */
export const binPack: Scorer = (need, node) => {
  const usable = popcount(node.usableMask(need.tier));
  const usedAfter = node.gpuTotal - (usable - need.perNode);
  return node.gpuTotal === 0 ? 0 : (100 * usedAfter) / node.gpuTotal;
};

/** 50 when the placement leaves fragmentation unchanged; lower when it adds, higher when it removes. */
export const fragmentation: Scorer = (need, node, ctx) => {
  const usable = popcount(node.usableMask(need.tier));
  const delta = ctx.frag[usable - need.perNode]! - ctx.frag[usable]!;
  return clamp(50 * (1 - delta / need.perNode), 0, 100);
};

/**
 * 100 when the block outlives the job's deadline (or has no end); between 50 and 100 by the slack
 * past the estimated end; below 50, by the share of the deadline covered, when there is no estimate.
 */
export const blockFit: Scorer = (need, node, ctx) => {
  const end = node.blockEnd;
  if (end >= need.deadline) return 100;
  const est = need.estimatedEnd;
  if (est !== null && end >= est) {
    if (!Number.isFinite(need.deadline)) return 50;
    return 50 + (50 * (end - est)) / (need.deadline - est);
  }
  return clamp((50 * (end - ctx.now)) / (need.deadline - ctx.now), 0, 50);
};

export function totalScore(need: JobNeed, node: FleetNode, ctx: ScoreContext): number {
  const w = ctx.weights;
  return (
    (w.bin_pack * binPack(need, node, ctx) +
      w.fragmentation * fragmentation(need, node, ctx) +
      w.block_fit * blockFit(need, node, ctx)) /
    ctx.weightSum
  );
}

/**
 * An upper bound of `totalScore` for any node of a (model, free GPUs) bucket, so buckets that cannot
 * beat the best node found so far are not scanned. Bin pack rises with node size, hence `maxTotal`.
 */
export function bucketBound(need: JobNeed, free: number, maxTotal: number, ctx: ScoreContext): number {
  const w = ctx.weights;
  const pack = maxTotal === 0 ? 0 : (100 * (maxTotal - (free - need.perNode))) / maxTotal;
  const frag = clamp(50 * (1 - (ctx.frag[free - need.perNode]! - ctx.frag[free]!) / need.perNode), 0, 100);
  return (w.bin_pack * pack + w.fragmentation * frag + w.block_fit * 100) / ctx.weightSum;
}

/** frag[f] = f × P(next job needs more than f GPUs on one node). */
export function fragTable(mix: Readonly<Record<number, number>>): Float64Array {
  const frag = new Float64Array(MAX_GPUS_PER_NODE + 1);
  let total = 0;
  for (const share of Object.values(mix)) total += share;
  if (total <= 0) return frag;
  for (let f = 0; f <= MAX_GPUS_PER_NODE; f++) {
    let larger = 0;
    for (const [size, share] of Object.entries(mix)) if (Number(size) > f) larger += share;
    frag[f] = (f * larger) / total;
  }
  return frag;
}

/** GPUs-per-node mix of a queue (a gang counts as k whole nodes), with a small even prior. */
export function sizeMixOf(queue: readonly Pick<PackerJob, "gpu_count">[]): Record<number, number> {
  const mix: Record<number, number> = { 1: 0.25, 2: 0.25, 4: 0.25, 8: 0.25 };
  for (const job of queue) {
    const perNode = Math.min(job.gpu_count, GPUS_PER_GANG_NODE);
    const weight = job.gpu_count > GPUS_PER_GANG_NODE ? job.gpu_count / GPUS_PER_GANG_NODE : 1;
    mix[perNode] = (mix[perNode] ?? 0) + weight;
  }
  return mix;
}

export function scoreContext(mix: Readonly<Record<number, number>>, now: number, weights: ScoreWeights): ScoreContext {
  const weightSum = weights.bin_pack + weights.fragmentation + weights.block_fit;
  return { frag: fragTable(mix), now, weights, weightSum: weightSum > 0 ? weightSum : 1 };
}

function clamp(x: number, lo: number, hi: number): number {
  return Math.min(Math.max(x, lo), hi);
}
