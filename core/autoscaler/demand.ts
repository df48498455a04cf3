/**
 * Near-term demand from recent history: how many Fast GPUs arrive within a headroom window (a high
 * quantile over recent windows), and the steady and peak levels of concurrent demand. A forecaster
 * can later produce the same `DemandEstimate` from a model instead.
 */
import { GPUS_PER_NODE, type Tier } from "../schemas/common";
import type { DemandEstimate } from "./types";

export interface DemandHistory {
  /** Submissions within the lookback, any order. */
  arrivals: { at: number; tier: Tier; gpus: number }[];
  /** Samples of concurrent demand (GPUs running plus GPUs waiting) within the lookback. */
  concurrency: { at: number; gpus: number }[];
}

export interface DemandWindow {
  /** The headroom window: Fast arrivals within it must find free GPUs. */
  windowMs: number;
  lookbackMs: number;
  /** Quantile of per-window Fast arrivals that headroom covers, e.g. 0.99. */
  arrivalQuantile: number;
  /** Quantile of concurrent demand that counts as steady, e.g. 0.1. */
  steadyQuantile: number;
  /** Quantile of concurrent demand that counts as the recent peak, e.g. 0.95. */
  peakQuantile: number;
  /** Spacing of the windows whose arrivals are counted. */
  stepMs: number;
}

/** The q-quantile (nearest rank) of values; 0 when empty. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank]!;
}

export function estimateDemand(history: DemandHistory, now: number, w: DemandWindow): DemandEstimate {
  const since = now - w.lookbackMs;
  const fast = history.arrivals
    .filter((a) => a.tier === "fast" && a.at > since && a.at <= now)
    .sort((a, b) => a.at - b.at);
  const gpuSums: number[] = [];
  const wholeNodeSums: number[] = [];
  // Windows ending at now, now - step, … back to the lookback's start; two pointers over sorted arrivals.
  let lo = 0;
  let hi = 0;
  let gpus = 0;
  let whole = 0;
  const ends: number[] = [];
  for (let end = since + w.windowMs; end <= now; end += w.stepMs) ends.push(end);
  if (ends.length === 0 || ends[ends.length - 1] !== now) ends.push(now);
  for (const end of ends) {
    while (hi < fast.length && fast[hi]!.at <= end) {
      gpus += fast[hi]!.gpus;
      whole += wholeNodes(fast[hi]!.gpus);
      hi++;
    }
    while (lo < hi && fast[lo]!.at <= end - w.windowMs) {
      gpus -= fast[lo]!.gpus;
      whole -= wholeNodes(fast[lo]!.gpus);
      lo++;
    }
    gpuSums.push(gpus);
    wholeNodeSums.push(whole);
  }
  const levels = history.concurrency.filter((c) => c.at > since && c.at <= now).map((c) => c.gpus);
  return {
    fastGpusInWindow: quantile(gpuSums, w.arrivalQuantile),
    fastWholeNodesInWindow: quantile(wholeNodeSums, w.arrivalQuantile),
    steadyGpus: quantile(levels, w.steadyQuantile),
    peakGpus: quantile(levels, w.peakQuantile),
  };
}

/** A job of 8 GPUs or more takes whole nodes; smaller jobs share. */
function wholeNodes(gpus: number): number {
  return gpus >= GPUS_PER_NODE ? Math.ceil(gpus / GPUS_PER_NODE) : 0;
}
