/**
 * The capacity policy's settings, one place for the cron and the trace replay (which measures
 * exactly these; see docs/capacity_planning.md for what each knob does and how it was tuned).
 * Rates are cents per GPU-hour; times in ms.
 */
import type { AutoscalerConfig, DemandWindow } from "../../core/autoscaler";

const MINUTE = 60_000;
const HOUR = 3_600_000;

/** From placing a buy to the node's agent taking work: the match, the node start, a VM boot of up to 10 min. */
export const LEAD_TIME_MS = 11 * MINUTE;

export const CAPACITY_CONFIG: AutoscalerConfig = {
  gpuModel: "H100",
  zone: null,
  leadTimeMs: LEAD_TIME_MS,
  cycleMs: MINUTE,
  fast: { startGoalMs: 60_000, minHeadroomGpus: 8, limitCentsPerGpuHour: 400, blockHours: 1 },
  flex: { maxWaitMs: 2 * HOUR, limitCentsPerGpuHour: 200, deadlineLimitCentsPerGpuHour: 400, gatherMs: 30 * MINUTE },
  durationsHours: [1, 4, 24, 168, 336],
  steadyBlockHours: 24,
  // Work of unknown end is expected to run 4× as long again as it has; half the price of hours
  // bought past that is expected back (sold back, or used by other work).
  extend: { leadMs: 10 * MINUTE, maxHours: 336, lindyFactor: 4, surplusRecovery: 0.5 },
  // The resale fee of SF Compute's preview order API: a share of the fill (§4.5 of the reference).
  sellBack: { feeBps: 500, feeCentsPerNodeHour: 0, leadMs: 10 * MINUTE },
  consolidate: { marginGpus: 16, maxBusyGpus: 2, maxWorkAgeMs: HOUR },
  budget: null,
  limitSlackBps: 200,
};

/**
 * Headroom: the most Fast GPUs that arrived in any lead-time window of the last 6 hours, or the
 * last 3 minutes' rate over a window if a burst is under way. Steady: what demand stayed above 95 %
 * of the last 3 days, once there is a day of history. Peak (what sell-back keeps): 95th percentile of
 * the last 6 hours.
 */
export const DEMAND_WINDOW: DemandWindow = {
  windowMs: LEAD_TIME_MS + MINUTE,
  lookbackMs: 6 * HOUR,
  levelLookbackMs: 72 * HOUR,
  arrivalQuantile: 1,
  steadyQuantile: 0.05,
  steadyMinHistoryMs: 24 * HOUR,
  peakQuantile: 0.95,
  peakLookbackMs: 6 * HOUR,
  stepMs: MINUTE,
  burstMs: 3 * MINUTE,
};
