/**
 * The lower bound of spend: every GPU-hour the trace asks for (each job from its submit for its
 * duration, cut at the window's end), each at the cheapest per-GPU-hour price of any block the
 * market quoted that covers its hour (a long block bought while prices were low covers later hours
 * at that price): the cheapest zone and the cheapest of the block lengths the replayed policies buy,
 * for one node (each node is its own purchase), with the market as it is without Scalar in it. No
 * policy can pay less for the same work on the same price path. (Until 2026-11 each hour was
 * priced only by blocks starting in it, which a fleet buying long blocks while cheap could beat.)
 *
 * `formulaLowerBoundCents` is another reference: the price model's own terms for the longest block
 * with no congestion premium at the hour's own market level and daily and weekly price.
 */
import { GPUS_PER_NODE } from "../../core/schemas/common";
import type { SimEngine } from "../sfcompute-sim/engine";
import { idealConcurrency, type TraceJob } from "./trace";

const HOUR = 3_600_000;

/**
 * GPU-hours used per hour of the window (index 0 = the window's first hour); a job submitted
 * before the window (a warm-up's) counts from the window's start.
 */
export function gpuHoursByHour(jobs: readonly TraceJob[], windowStart: number, windowMs: number): Float64Array {
  const hours = Math.ceil(windowMs / HOUR);
  const out = new Float64Array(hours);
  for (const j of jobs) {
    const submitted = windowStart + j.submitS * 1000;
    const from = Math.max(windowStart, submitted);
    const to = Math.min(windowStart + windowMs, submitted + j.durationS * 1000);
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

/**
 * The market's price per node-hour, cheapest zone, of a block of each length starting on each hour
 * of the window (`rates[i][h]`: `durationsHours[i]`, hour h), as quoted at that hour for one node.
 * `engine` must be fresh (nothing bought) and start at `windowStart`; it is advanced hour by hour.
 */
export function blockRates(
  engine: SimEngine,
  windowStart: number,
  windowMs: number,
  durationsHours: readonly number[],
): Float64Array[] {
  const zones = h100Zones(engine);
  const hours = Math.ceil(windowMs / HOUR);
  const rates = durationsHours.map(() => new Float64Array(hours).fill(Number.POSITIVE_INFINITY));
  for (let h = 0; h < hours; h++) {
    engine.advanceTo(Math.max(windowStart + h * HOUR, engine.now()));
    // A block starting on this hour (or now, for the first part-hour).
    const start = Math.ceil(engine.now() / 60_000) * 60_000;
    durationsHours.forEach((d, i) => {
      const end = Math.ceil((start + d * HOUR) / HOUR) * HOUR;
      for (const z of zones) {
        const priced = engine.market.priceBuy(z, start, end, 1);
        if (priced) rates[i]![h] = Math.min(rates[i]![h]!, priced.total / ((end - start) / HOUR));
      }
    });
  }
  return rates;
}

/**
 * The lower bound (issue 7: "buying exactly the GPU-hours used at the cheapest prices of the
 * path"): each GPU-hour used in hour h at the cheapest per-GPU-hour rate of any block the market
 * quoted that covers hour h: any of the block lengths the policies buy, started on any hour of the
 * window (or of the warm-up before it, `warmUpMs`, whole hours, when the policies ran through one)
 * up to h, in the cheapest zone. `engine` must be fresh (nothing bought) and start at
 * `windowStart - warmUpMs`; it is advanced hour by hour.
 */
export function lowerBoundCents(
  engine: SimEngine,
  jobs: readonly TraceJob[],
  windowStart: number,
  windowMs: number,
  durationsHours: readonly number[],
  warmUpMs = 0,
): number {
  const rates = blockRates(engine, windowStart - warmUpMs, warmUpMs + windowMs, durationsHours);
  const offset = Math.ceil(warmUpMs / HOUR);
  const used = gpuHoursByHour(jobs, windowStart, windowMs);
  let total = 0;
  for (let h = 0; h < used.length; h++) {
    if (used[h] === 0) continue;
    let cheapest = Number.POSITIVE_INFINITY;
    durationsHours.forEach((d, i) => {
      for (let s = Math.max(0, offset + h - Math.ceil(d) + 1); s <= offset + h; s++) {
        cheapest = Math.min(cheapest, rates[i]![s]!);
      }
    });
    total += (used[h]! * cheapest) / GPUS_PER_NODE;
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

/**
 * The cheapest way to hold `levels[h]` nodes in every hour h with blocks of the given lengths, each
 * node level covered on its own (level k is needed in the hours where `levels[h] ≥ k`). Blocks start
 * on a needed hour inside the window and run their whole length; one that runs past the window's
 * end is charged for its hours inside only, as the replay's ledger charges. `rate(start, hours)` is
 * a block's price per node-hour when it starts at hour `start`. Exact per level, so the result is
 * an achievable plan for a fleet that knows the levels in advance.
 */
export function coverCost(
  levels: readonly number[],
  durationsHours: readonly number[],
  rate: (startHour: number, hours: number) => number,
): { cost: number; nodeHours: number; nodeHoursByLength: Record<number, number> } {
  const hours = levels.length;
  const top = Math.max(0, ...levels);
  let cost = 0;
  const nodeHoursByLength: Record<number, number> = {};
  // best[i]: least cost covering the level's needed hours before i with nothing bought from i on.
  const best = new Float64Array(hours + 1);
  const from = new Int32Array(hours + 1);
  const length = new Int32Array(hours + 1);
  for (let k = 1; k <= top; k++) {
    best.fill(Number.POSITIVE_INFINITY);
    best[0] = 0;
    for (let i = 0; i < hours; i++) {
      const here = best[i]!;
      if (!Number.isFinite(here)) continue;
      if (levels[i]! < k) {
        if (here < best[i + 1]!) {
          best[i + 1] = here;
          from[i + 1] = i;
          length[i + 1] = 0;
        }
        continue;
      }
      for (const d of durationsHours) {
        const end = Math.min(hours, i + d);
        const c = here + rate(i, d) * (end - i);
        if (c < best[end]!) {
          best[end] = c;
          from[end] = i;
          length[end] = d;
        }
      }
    }
    cost += best[hours]!;
    for (let j = hours; j > 0; j = from[j]!) {
      const d = length[j]!;
      if (d > 0) nodeHoursByLength[d] = (nodeHoursByLength[d] ?? 0) + (j - from[j]!);
    }
  }
  const nodeHours = Object.values(nodeHoursByLength).reduce((a, b) => a + b, 0);
  return { cost, nodeHours, nodeHoursByLength };
}

/**
 * A reference, not a bound: a clairvoyant fleet that knows the trace's demand in advance, packs it
 * perfectly (each hour holds ceil(the hour's peak concurrent GPUs / 8) nodes, as if jobs could move),
 * keeps no Fast headroom, boots instantly, and buys each node level with the cheapest mix of the
 * block lengths at the path's prices (no resale). What the target "spend ≤ 1.2 × the lower bound"
 * asks is compared with what even this fleet pays. `engine` must be fresh, at `windowStart`.
 */
export function clairvoyantFleet(
  engine: SimEngine,
  jobs: readonly TraceJob[],
  windowStart: number,
  windowMs: number,
  durationsHours: readonly number[],
): { cents: number; utilisation: number; nodeHoursByLength: Record<number, number> } {
  const hours = Math.ceil(windowMs / HOUR);
  const concurrency = idealConcurrency(jobs, windowMs / 1000);
  const levels: number[] = [];
  for (let h = 0; h < hours; h++) {
    let peak = 0;
    for (let m = h * 60; m < Math.min(concurrency.length, (h + 1) * 60); m++) peak = Math.max(peak, concurrency[m]!);
    levels.push(Math.ceil(peak / GPUS_PER_NODE));
  }
  const prices = blockRates(engine, windowStart, windowMs, durationsHours);
  const { cost, nodeHours, nodeHoursByLength } = coverCost(
    levels,
    durationsHours,
    (start, d) => prices[durationsHours.indexOf(d)]![start]!,
  );
  const used = gpuHoursByHour(jobs, windowStart, windowMs).reduce((a, b) => a + b, 0);
  return { cents: cost, utilisation: used / (nodeHours * GPUS_PER_NODE), nodeHoursByLength };
}
