/**
 * Finite supply. A zone has a fleet of nodes; a seeded background demand (other buyers) uses a share
 * of it that follows the daily and weekly cycle and the price level (tight markets are expensive),
 * and simulated accounts hold what they bought. A block is available only if every hour of it has
 * room, so large blocks, busy hours and shocks can leave an order unfilled.
 */
import type { ZoneSpec } from "./catalog";
import { HOUR_MS } from "./clock";
import type { PriceModel } from "./prices";
import { hashUniform, noiseKey } from "./rng";

export interface SupplyConfig {
  /** Mean share of a zone's fleet used by other buyers. */
  backgroundShare: number;
  /** How much the daily/weekly cycle and the price level move that share. */
  cycleWeight: number;
  levelWeight: number;
  /** Hour-to-hour noise of the share (uniform ±). */
  noise: number;
  /** Share of a zone's fleet that buyers of resold time absorb in one sell order. */
  bidDepthShare: number;
}

export const DEFAULT_SUPPLY_CONFIG: SupplyConfig = {
  backgroundShare: 0.55,
  cycleWeight: 1.2,
  levelWeight: 0.5,
  noise: 0.06,
  bidDepthShare: 0.25,
};

export class SupplyBook {
  /** zone → hour → nodes held by simulated accounts. */
  private readonly held = new Map<string, Map<number, number>>();
  private readonly noiseKeys = new Map<string, number>();

  constructor(
    private readonly seed: string | number,
    private readonly prices: PriceModel,
    readonly config: SupplyConfig = DEFAULT_SUPPLY_CONFIG,
  ) {}

  /** Nodes other buyers use in `hour`, as seen at `now` (today's level stands in for the future's). */
  background(zone: ZoneSpec, hour: number, now: number): number {
    const c = this.config;
    let key = this.noiseKeys.get(zone.name);
    if (key === undefined) {
      key = noiseKey(this.seed, `supply:${zone.name}`);
      this.noiseKeys.set(zone.name, key);
    }
    const cycle = this.prices.seasonality(hour) - 1;
    const level = this.prices.logLevel(zone.name, Math.floor(now / HOUR_MS));
    const share =
      c.backgroundShare + c.cycleWeight * cycle + c.levelWeight * level + c.noise * (2 * hashUniform(key, hour) - 1);
    return Math.round(zone.capacity_nodes * Math.min(0.97, Math.max(0.1, share)));
  }

  heldAt(zone: string, hour: number): number {
    return this.held.get(zone)?.get(hour) ?? 0;
  }

  /** Free nodes over the whole of [start, end) and the peak utilisation if `extra` more were taken. */
  availability(zone: ZoneSpec, start: number, end: number, now: number, extra = 0): { free: number; peak: number } {
    let free = Number.POSITIVE_INFINITY;
    let peak = 0;
    const first = Math.floor(start / HOUR_MS);
    const last = Math.ceil(end / HOUR_MS);
    for (let h = first; h < last; h++) {
      const used = this.background(zone, h, now) + this.heldAt(zone.name, h);
      free = Math.min(free, zone.capacity_nodes - used);
      peak = Math.max(peak, (used + extra) / zone.capacity_nodes);
    }
    return { free: Math.max(0, free === Number.POSITIVE_INFINITY ? 0 : free), peak };
  }

  /**
   * Marks `delta` nodes (negative to give back) as held over [start, end). Supply is counted per
   * hour: a hold covers every hour it touches, a give-back only the hours it covers whole (a sale
   * starting at 16:31 frees nothing of the 16:00 hour), so an hour's count is the most a contract
   * holds at any moment of it.
   */
  hold(zone: string, start: number, end: number, delta: number): void {
    let hours = this.held.get(zone);
    if (!hours) {
      hours = new Map();
      this.held.set(zone, hours);
    }
    const first = delta >= 0 ? Math.floor(start / HOUR_MS) : Math.ceil(start / HOUR_MS);
    const last = Math.ceil(end / HOUR_MS);
    for (let h = first; h < last; h++) {
      const next = (hours.get(h) ?? 0) + delta;
      if (next < 0) throw new Error(`supply of ${zone} would go negative at hour ${h}`);
      if (next === 0) hours.delete(h);
      else hours.set(h, next);
    }
  }

  bidDepth(zone: ZoneSpec): number {
    return Math.max(1, Math.round(zone.capacity_nodes * this.config.bidDepthShare));
  }

  /** Free capacity per hour from `from` for `hours`, merged into runs of equal quantity (for /v0/zones). */
  freeRuns(
    zone: ZoneSpec,
    from: number,
    hours: number,
    now: number,
  ): { start: number; end: number; quantity: number }[] {
    const runs: { start: number; end: number; quantity: number }[] = [];
    const first = Math.floor(from / HOUR_MS);
    for (let h = first; h < first + hours; h++) {
      const q = Math.max(0, zone.capacity_nodes - this.background(zone, h, now) - this.heldAt(zone.name, h));
      const last = runs[runs.length - 1];
      if (last && last.quantity === q) last.end = (h + 1) * HOUR_MS;
      else runs.push({ start: h * HOUR_MS, end: (h + 1) * HOUR_MS, quantity: q });
    }
    return runs;
  }
}
