/**
 * The replay's settings: Scalar's policy configuration, the customer prices, and the simulated
 * market's size. One place, so the command, its tests and docs/capacity_planning.md agree.
 */
import { type AutoscalerConfig, type DemandWindow, HOUR_MS, MINUTE_MS, quantile } from "../../core/autoscaler";
import { GPUS_PER_NODE } from "../../core/schemas/common";
import { DEFAULT_MARKET_SETTINGS } from "../sfcompute-sim/config";
import type { TierPrices } from "./ledger";
import type { ReplaySetup } from "./replay";
import { idealConcurrency, type TraceJob } from "./trace";

/** From placing a buy to the node's agent taking work: the match, the node start, a VM boot of up to 10 min. */
const LEAD_TIME_MS = 11 * MINUTE_MS;

export const SCALAR_CONFIG: AutoscalerConfig = {
  gpuModel: "H100",
  zone: null,
  leadTimeMs: LEAD_TIME_MS,
  cycleMs: MINUTE_MS,
  fast: { startGoalMs: 60_000, minHeadroomGpus: 8, limitCentsPerGpuHour: 400, blockHours: 1 },
  flex: {
    maxWaitMs: 2 * HOUR_MS,
    limitCentsPerGpuHour: 200,
    deadlineLimitCentsPerGpuHour: 400,
    gatherMs: 30 * MINUTE_MS,
  },
  durationsHours: [1, 4, 24, 168, 336],
  steadyBlockHours: 24,
  // Work of unknown end is expected to run 4× as long again as it has; half the price of hours
  // bought past that is expected back (tuned on the replay; see docs/capacity_planning.md).
  extend: { leadMs: 10 * MINUTE_MS, maxHours: 336, lindyFactor: 4, surplusRecovery: 0.5 },
  sellBack: {
    feeBps: DEFAULT_MARKET_SETTINGS.resaleFee.percentageBps,
    feeCentsPerNodeHour: DEFAULT_MARKET_SETTINGS.resaleFee.flatCentsPerNodeHour,
    leadMs: 10 * MINUTE_MS,
  },
  consolidate: { marginGpus: 16, maxBusyGpus: 2, maxWorkAgeMs: HOUR_MS },
  budget: null,
  limitSlackBps: 200,
};

/**
 * Headroom: the most Fast GPUs that arrived in any lead-time window of the last 6 hours, or the
 * last 3 minutes' rate over a window if a burst is under way. Steady: what demand stayed above 95 %
 * of the last 3 days. Peak (what sell-back keeps): 95th percentile of the last 6 hours.
 */
export const DEMAND_WINDOW: DemandWindow = {
  windowMs: LEAD_TIME_MS + MINUTE_MS,
  lookbackMs: 6 * HOUR_MS,
  levelLookbackMs: 72 * HOUR_MS,
  arrivalQuantile: 1,
  steadyQuantile: 0.05,
  peakQuantile: 0.95,
  peakLookbackMs: 6 * HOUR_MS,
  stepMs: MINUTE_MS,
  burstMs: 3 * MINUTE_MS,
};

/** What customers pay, cents per GPU-second: Fast $3.60/GPU-h, Flex $2.52/GPU-h. */
export const TIER_PRICES: TierPrices = { fast: 0.1, flex: 0.07 };

export function replaySetup(
  jobs: TraceJob[],
  windowStart: number,
  hours: number,
  seed: number,
  over: Partial<ReplaySetup> = {},
): ReplaySetup {
  const windowMs = hours * HOUR_MS;
  const p95 = quantile(idealConcurrency(jobs, windowMs / 1000), 0.95);
  return {
    jobs,
    windowStart,
    windowMs,
    seed,
    config: SCALAR_CONFIG,
    demand: DEMAND_WINDOW,
    prices: TIER_PRICES,
    // A market several times Scalar's size (the default catalogue's 128 nodes would not hold the trace).
    zoneCapacityNodes: 2048,
    staticNodes: Math.ceil(p95 / GPUS_PER_NODE),
    ...over,
  };
}
