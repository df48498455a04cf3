/**
 * The capacity policy's settings, one place for the cron and the trace replay (which measures
 * exactly these; see docs/capacity_planning.md for what each knob does and how it was tuned).
 * Rates are cents per GPU-hour; times in ms.
 */
import type { AutoscalerConfig, DemandWindow } from "../../core/autoscaler";
import { IngressUrl } from "../../core/schemas";

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
 * Headroom: the most Fast GPUs that arrived in any lead-time window of the last 12 hours, or the
 * last 3 minutes' rate over a window if a burst is under way. Steady: what demand stayed above 95 %
 * of the last 3 days, once there is a day of history. Peak (what sell-back keeps): 95th percentile of
 * the last 6 hours.
 */
export const DEMAND_WINDOW: DemandWindow = {
  // Two lead times: a burst outlasts one, and the nodes bought as it starts are ready only a lead
  // time later. Replay (12 runs): Fast p99 ≤ 60 s in 10 of 12 runs against 4 of 12 with one lead
  // time, at −18.2 % against reactive instead of −20.6 % (docs/capacity_planning.md).
  windowMs: 2 * LEAD_TIME_MS + 2 * MINUTE,
  lookbackMs: 12 * HOUR,
  levelLookbackMs: 72 * HOUR,
  arrivalQuantile: 1,
  steadyQuantile: 0.05,
  steadyMinHistoryMs: 24 * HOUR,
  peakQuantile: 0.95,
  peakLookbackMs: 6 * HOUR,
  stepMs: MINUTE,
  burstMs: 3 * MINUTE,
  // One 16-GPU job is not a stream of them: projected, it asked for 64 GPUs of headroom in a quiet
  // region. Replay (12 runs, docs/capacity_planning.md): spend vs reactive −20.6 % mean against −20.1 %.
  burstWholeNodesOnce: true,
  // One or two Fast jobs in three minutes are not a stream to project over the window (with the
  // 24-min window one 1-GPU job asked for 8 GPUs more: a second node). Replay, 12 runs: −18.5 % vs
  // reactive against −18.2 %, Fast p99 ≤ 60 s in the same 10 of 12.
  burstMinArrivals: 3,
};

/** The Worker variables that tune the capacity cycle (all optional; production sets none). */
export interface CapacityKnobs {
  /** Fast GPUs the autoscaler keeps free at least (CAPACITY_CONFIG.fast.minHeadroomGpus otherwise). */
  CAPACITY_FAST_HEADROOM_GPUS?: string;
  /** `wall` (default): a cycle's now is the Worker's clock; `trigger`: the cron trigger's scheduledTime. */
  CAPACITY_CLOCK?: string;
  /** `on` (default): idle hours are sold back; `off`: none are (nor nodes drained for a sale). */
  CAPACITY_SELL_BACK?: string;
}

export class CapacityConfigError extends Error {}

/** The Worker variables that give bought nodes their agent's ingress (optional: no traffic without). */
export interface IngressKnobs {
  /** Each node's ingress URL, `{node_id}` replaced, e.g. `https://{node_id}.nodes.example.com`. */
  INGRESS_URL_TEMPLATE?: string;
  /** The port the agent's ingress listens on (default 8090). */
  INGRESS_PORT?: string;
}

export const DEFAULT_INGRESS_PORT = 8090;

/**
 * What a bought node's boot script says about its ingress: nothing without INGRESS_URL_TEMPLATE
 * (its replicas then take no traffic); else the port and the node's own URL. Malformed: an error.
 */
export function nodeIngressFromEnv(
  env: IngressKnobs,
): ((nodeId: string) => { ingress_port: number; ingress_url: string }) | null {
  const template = env.INGRESS_URL_TEMPLATE?.trim();
  const rawPort = env.INGRESS_PORT?.trim();
  let port = DEFAULT_INGRESS_PORT;
  if (rawPort) {
    port = Number(rawPort);
    if (!/^\d+$/.test(rawPort) || port < 1 || port > 65_535) {
      throw new CapacityConfigError(`INGRESS_PORT must be a port number from 1 to 65535, not "${rawPort}"`);
    }
  }
  if (!template) return null;
  if (!template.includes("{node_id}")) {
    throw new CapacityConfigError(
      `INGRESS_URL_TEMPLATE must contain {node_id} (each node has its own), not "${template}"`,
    );
  }
  const sample = IngressUrl.safeParse(template.replaceAll("{node_id}", "node-0"));
  if (!sample.success) {
    throw new CapacityConfigError(
      `INGRESS_URL_TEMPLATE must give an http(s) URL without query, fragment or credentials, not "${template}"`,
    );
  }
  return (nodeId) => ({ ingress_port: port, ingress_url: template.replaceAll("{node_id}", nodeId) });
}

/** Most Fast headroom the knob accepts: 128 nodes. */
export const MAX_FAST_HEADROOM_GPUS = 1024;

/** CAPACITY_CONFIG with the environment's overrides; a malformed value is an error, not a silent default. */
export function capacityConfigFromEnv(env: CapacityKnobs, base: AutoscalerConfig = CAPACITY_CONFIG): AutoscalerConfig {
  return withSellBack(env, withFastHeadroom(env, base));
}

function withFastHeadroom(env: CapacityKnobs, base: AutoscalerConfig): AutoscalerConfig {
  const raw = env.CAPACITY_FAST_HEADROOM_GPUS?.trim();
  if (raw === undefined || raw === "") return base;
  const gpus = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(gpus) || gpus > MAX_FAST_HEADROOM_GPUS) {
    throw new CapacityConfigError(
      `CAPACITY_FAST_HEADROOM_GPUS must be a whole number of GPUs from 0 to ${MAX_FAST_HEADROOM_GPUS}, not "${raw}"`,
    );
  }
  return { ...base, fast: { ...base.fast, minHeadroomGpus: gpus } };
}

/** An operator may not want to resell (e.g. while SF Compute's resale fee changes): `off` sells nothing. */
function withSellBack(env: CapacityKnobs, base: AutoscalerConfig): AutoscalerConfig {
  const raw = env.CAPACITY_SELL_BACK?.trim();
  if (raw === undefined || raw === "") return base;
  if (raw !== "on" && raw !== "off") {
    throw new CapacityConfigError(`CAPACITY_SELL_BACK must be "on" or "off", not "${raw}"`);
  }
  return { ...base, sellBack: { ...base.sellBack, enabled: raw === "on" } };
}

/**
 * The cycle's clock. `trigger` (the local stack, whose market simulator runs on a clock that can jump
 * ahead) takes the cron trigger's scheduledTime as the present and lets it run on with the wall clock
 * for the length of the cycle; `wall` (default) is Date.now().
 */
export function capacityClock(
  env: CapacityKnobs,
  scheduledTime: number | undefined,
  wall: () => number = Date.now,
): () => number {
  const mode = env.CAPACITY_CLOCK?.trim() || "wall";
  if (mode === "wall") return wall;
  if (mode !== "trigger") throw new CapacityConfigError(`CAPACITY_CLOCK must be "wall" or "trigger", not "${mode}"`);
  if (scheduledTime === undefined || !Number.isFinite(scheduledTime)) {
    throw new CapacityConfigError("CAPACITY_CLOCK=trigger needs the cron trigger's scheduledTime");
  }
  const offset = scheduledTime - wall();
  return () => wall() + offset;
}
