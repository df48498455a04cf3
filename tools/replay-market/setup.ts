/**
 * The replay's settings: Scalar's policy configuration, the customer prices, and the simulated
 * market's size. One place, so the command, its tests and docs/capacity_planning.md agree.
 */
import { type AutoscalerConfig, HOUR_MS, quantile } from "../../core/autoscaler";
import { GPUS_PER_NODE } from "../../core/schemas/common";
import { CAPACITY_CONFIG, DEMAND_WINDOW } from "../../workers/capacity/config";
import { DEFAULT_MARKET_SETTINGS } from "../sfcompute-sim/config";
import type { TierPrices } from "./ledger";
import type { ReplaySetup } from "./replay";
import { idealConcurrency, type TraceJob } from "./trace";

/** Scalar's policy as the cron runs it, with the simulator's resale fee. */
export const SCALAR_CONFIG: AutoscalerConfig = {
  ...CAPACITY_CONFIG,
  sellBack: {
    ...CAPACITY_CONFIG.sellBack,
    feeBps: DEFAULT_MARKET_SETTINGS.resaleFee.percentageBps,
    feeCentsPerNodeHour: DEFAULT_MARKET_SETTINGS.resaleFee.flatCentsPerNodeHour,
  },
};

export { DEMAND_WINDOW };

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
