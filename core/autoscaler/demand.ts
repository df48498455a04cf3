/**
 * Near-term demand from recent history: how many Fast GPUs arrive within a headroom window (a high
 * quantile over recent windows), and the steady and peak levels of concurrent demand. A forecaster
 * can later produce the same `DemandEstimate` from a model instead.
 */
import { GPUS_PER_NODE, type Tier } from "../schemas/common";
import type { DemandEstimate } from "./types";

export interface DemandHistory {
  /**
   * Submissions within the lookback, any order. `heldMs`: how long the job held its GPUs, once it
   * has finished (unknown while it runs or waits).
   */
  arrivals: { at: number; tier: Tier; gpus: number; heldMs?: number }[];
  /** Samples of concurrent demand (GPUs running plus GPUs waiting) within the lookback. */
  concurrency: { at: number; gpus: number }[];
}

export interface DemandWindow {
  /** The headroom window: Fast arrivals within it must find free GPUs. */
  windowMs: number;
  /** How far back arrivals are counted… */
  lookbackMs: number;
  /** …and concurrent demand (steady level; default: the same). */
  levelLookbackMs?: number;
  /** Quantile of per-window Fast arrivals that headroom covers, e.g. 0.99… */
  arrivalQuantile: number;
  /** …and of whole nodes for Fast jobs of 8 GPUs or more (default: the same). */
  wholeNodeQuantile?: number;
  /** Quantile of concurrent demand that counts as steady, e.g. 0.1… */
  steadyQuantile: number;
  /** …once the samples span at least this long (a cold start has no steady demand yet). */
  steadyMinHistoryMs?: number;
  /** Quantile of concurrent demand that counts as the recent peak, e.g. 0.95… */
  peakQuantile: number;
  /** …over this much of the recent past (default: the whole lookback). */
  peakLookbackMs?: number;
  /** Spacing of the windows whose arrivals are counted. */
  stepMs: number;
  /** The last this-long of Fast arrivals, projected over a headroom window, catches a burst as it starts… */
  burstMs: number;
  /**
   * …once it holds at least this many arrivals (default 1). Fewer are not a stream to project: one
   * 16-GPU job in a quiet hour would otherwise ask for 16 × windowMs ÷ burstMs GPUs of headroom.
   */
  burstMinArrivals?: number;
  /**
   * Project only jobs smaller than a node (default false: every job). A job of 8 GPUs or more then
   * counts once, as the whole nodes it takes, not as a rate: one 16-GPU job is not a stream of them.
   */
  burstWholeNodesOnce?: boolean;
}

/** The q-quantile (nearest rank) of values; 0 when empty. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return 0;
  return quantileSorted(Float64Array.from(values).sort(), q);
}

function quantileSorted(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

export function estimateDemand(history: DemandHistory, now: number, w: DemandWindow): DemandEstimate {
  const since = now - w.lookbackMs;
  // Fast arrivals in buckets of one step, then sums over every window of whole buckets ending at now.
  const steps = Math.max(1, Math.round(w.lookbackMs / w.stepMs));
  const perWindow = Math.max(1, Math.round(w.windowMs / w.stepMs));
  let burst = 0;
  let burstOnce = 0;
  let burstArrivals = 0;
  const gpuBuckets = new Float64Array(steps);
  const nodeBuckets = new Float64Array(steps);
  for (const a of history.arrivals) {
    if (a.tier !== "fast" || a.at <= since || a.at > now) continue;
    const gpus = a.gpus * occupancy(a.heldMs, w.windowMs);
    if (a.at > now - w.burstMs) {
      if (w.burstWholeNodesOnce && a.gpus >= GPUS_PER_NODE) burstOnce += gpus;
      else {
        burst += gpus;
        burstArrivals += 1;
      }
    }
    const i = Math.min(steps - 1, Math.floor((a.at - since) / w.stepMs));
    gpuBuckets[i]! += gpus;
    nodeBuckets[i]! += wholeNodes(a.gpus);
  }
  const windows = Math.max(1, steps - perWindow + 1);
  const gpuSums = new Float64Array(windows);
  const nodeSums = new Float64Array(windows);
  let gpus = 0;
  let nodes = 0;
  for (let i = 0; i < steps; i++) {
    gpus += gpuBuckets[i]!;
    nodes += nodeBuckets[i]!;
    if (i >= perWindow) {
      gpus -= gpuBuckets[i - perWindow]!;
      nodes -= nodeBuckets[i - perWindow]!;
    }
    if (i >= perWindow - 1 || steps < perWindow) {
      const k = Math.max(0, i - perWindow + 1);
      gpuSums[k] = gpus;
      nodeSums[k] = nodes;
    }
  }
  const levels: number[] = [];
  const recent: number[] = [];
  let earliest = now;
  const levelSince = now - (w.levelLookbackMs ?? w.lookbackMs);
  const peakSince = now - (w.peakLookbackMs ?? w.levelLookbackMs ?? w.lookbackMs);
  for (const c of history.concurrency) {
    if (c.at <= levelSince || c.at > now) continue;
    levels.push(c.gpus);
    earliest = Math.min(earliest, c.at);
    if (c.at > peakSince) recent.push(c.gpus);
  }
  const sortedLevels = Float64Array.from(levels).sort();
  return {
    fastGpusInWindow: wholeGpus(quantileSorted(gpuSums.sort(), w.arrivalQuantile)),
    fastWholeNodesInWindow: quantileSorted(nodeSums.sort(), w.wholeNodeQuantile ?? w.arrivalQuantile),
    fastGpusAtRecentRate: wholeGpus(
      burstOnce + (burstArrivals >= (w.burstMinArrivals ?? 1) ? (burst * w.windowMs) / w.burstMs : burst),
    ),
    steadyGpus: now - earliest >= (w.steadyMinHistoryMs ?? 0) ? quantileSorted(sortedLevels, w.steadyQuantile) : 0,
    peakGpus: quantileSorted(Float64Array.from(recent).sort(), w.peakQuantile),
  };
}

/**
 * The share of a headroom window a job's GPUs stay taken: a job known to have held its GPUs for
 * less than the window gives them back within it, so a stream of such jobs needs only rate ×
 * duration GPUs at once, not every arrival's (one-second jobs arriving 5 a second need 5 GPUs,
 * not 5 × the window's seconds). A job still running or waiting counts whole.
 */
export function occupancy(heldMs: number | undefined, windowMs: number): number {
  if (heldMs === undefined || !(heldMs >= 0) || windowMs <= 0) return 1;
  return Math.min(1, heldMs / windowMs);
}

/** Up to whole GPUs (shares of jobs' occupancy add up to fractions; float noise is not a GPU). */
function wholeGpus(x: number): number {
  return Math.max(0, Math.ceil(x - 1e-9));
}

/** A job of 8 GPUs or more takes whole nodes; smaller jobs share. */
function wholeNodes(gpus: number): number {
  return gpus >= GPUS_PER_NODE ? Math.ceil(gpus / GPUS_PER_NODE) : 0;
}
