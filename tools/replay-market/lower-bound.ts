/**
 * The lower bound of spend: every GPU-hour the trace asks for (each job from its submit for its
 * duration, cut at the window's end), bought in the hour it is used at the cheapest per-GPU-hour
 * price the market quoted in that hour: the cheapest zone and the cheapest of the block lengths the
 * replayed policies buy, for one node (each node is its own purchase), with the market as it is
 * without Scalar in it. No policy can pay less for the same work on the same price path.
 *
 * `formulaLowerBoundCents` is a stricter reference: the price model's own terms for the longest
 * block with no congestion premium and the hour's own daily and weekly price.
 */
import type { SimEngine } from "../sfcompute-sim/engine";
import type { TraceJob } from "./trace";

const HOUR = 3_600_000;

/** GPU-hours used per hour of the window (index 0 = the window's first hour). */
export function gpuHoursByHour(jobs: readonly TraceJob[], windowStart: number, windowMs: number): Float64Array {
  const hours = Math.ceil(windowMs / HOUR);
  const out = new Float64Array(hours);
  for (const j of jobs) {
    const from = windowStart + j.submitS * 1000;
    const to = Math.min(windowStart + windowMs, from + j.durationS * 1000);
    for (let t = from; t < to; ) {
      const h = Math.floor((t - windowStart) / HOUR);
      const until = Math.min(to, windowStart + (h + 1) * HOUR);
      out[h]! += (j.gpus * (until - t)) / HOUR;
      t = until;
    }
  }
  return out;
}

function h100Zones(engine: SimEngine) {
  return engine.settings.catalog.zones.filter((z) => z.delivery_type === "VM" && z.hardware_type === "H100");
}

/** `engine` must be fresh (nothing bought) and start at `windowStart`; it is advanced hour by hour. */
export function lowerBoundCents(
  engine: SimEngine,
  jobs: readonly TraceJob[],
  windowStart: number,
  windowMs: number,
  durationsHours: readonly number[],
): number {
  const zones = h100Zones(engine);
  const used = gpuHoursByHour(jobs, windowStart, windowMs);
  let total = 0;
  for (let h = 0; h < used.length; h++) {
    const at = windowStart + h * HOUR;
    engine.advanceTo(Math.max(at, engine.now()));
    if (used[h] === 0) continue;
    // A block starting on this hour (or now, for the first part-hour).
    const start = Math.ceil(engine.now() / 60_000) * 60_000;
    let cheapest = Number.POSITIVE_INFINITY;
    for (const z of zones) {
      for (const d of durationsHours) {
        const end = Math.ceil((start + d * HOUR) / HOUR) * HOUR;
        const priced = engine.market.priceBuy(z, start, end, 1);
        if (priced) cheapest = Math.min(cheapest, priced.total / (8 * ((end - start) / HOUR)));
      }
    }
    total += used[h]! * cheapest;
  }
  return total;
}

export function formulaLowerBoundCents(
  engine: SimEngine,
  jobs: readonly TraceJob[],
  windowStart: number,
  windowMs: number,
  longestBlockMs: number,
): number {
  const prices = engine.k.prices;
  const zones = h100Zones(engine);
  const base = (zone: (typeof zones)[number]) =>
    engine.settings.catalog.instanceTypes.find((t) => t.ticker === zone.instance_type)!.base_cents_per_gpu_hour;
  const used = gpuHoursByHour(jobs, windowStart, windowMs);
  const shape = prices.term(longestBlockMs) * prices.size(1);
  let total = 0;
  for (let h = 0; h < used.length; h++) {
    if (used[h] === 0) continue;
    const at = windowStart + h * HOUR;
    let cheapest = Number.POSITIVE_INFINITY;
    for (const z of zones) {
      cheapest = Math.min(cheapest, base(z) * prices.level(z.name, at) * prices.seasonality(Math.floor(at / HOUR)));
    }
    total += used[h]! * cheapest * shape;
  }
  return total;
}
