/**
 * The seeded price path. Each (instance type, zone) has a market level that moves hour by hour: a
 * market-wide factor plus a zone factor, each mean-reverting (an Ornstein–Uhlenbeck step on the log
 * level) with occasional shocks, mostly upward. A block's ask is
 *
 *   base × level(now) × seasonality(block hours) × term(duration) × size(quantity) × scarcity
 *
 * with daily and weekly seasonality and the reference's anchors (§13.1): about $2.05/GPU-h for a
 * 1-day 8-GPU H100 block, $2.50–3.50 for 1-hour blocks, $1.25–1.50 at the long and large end. The
 * level is a step function of the hour, so a quote stays good for the rest of its hour and an order
 * placed at the quoted price fills at it. Future blocks are priced at today's level plus their own
 * seasonality: the market has no forward curve.
 */
import { HOUR_MS } from "./clock";
import { Rng } from "./rng";

export interface PriceConfig {
  /** Fraction of the log-level's distance to its mean closed each hour. */
  meanReversionPerHour: number;
  /** Standard deviation of the hourly log-level step (market factor; the zone factor gets half). */
  volatilityPerHour: number;
  /** Chance of a shock in any hour, and its size on the log level. */
  shockProbabilityPerHour: number;
  shockMean: number;
  shockStd: number;
  /** Share of shocks that raise prices. */
  shockUpShare: number;
  /** Peak-to-mean of the daily cycle (busiest mid-afternoon Pacific). */
  dailyAmplitude: number;
  /** Weekend discount; weekdays carry the matching premium so a week averages to 1. */
  weekendDiscount: number;
  /** Offset of the market's local time from UTC, hours (Pacific standard time). */
  utcOffsetHours: number;
  /** Per-GPU-hour price falls by this × ln(duration / 24 h), between the two bounds. */
  termElasticity: number;
  termFloor: number;
  termCeiling: number;
  /** Per-GPU-hour price falls by this × ln(nodes), down to the floor. */
  sizeElasticity: number;
  sizeFloor: number;
  /** Above this utilisation of a zone the ask climbs, by up to `scarcityPremium` at 100 %. */
  scarcityKnee: number;
  scarcityPremium: number;
  /** Bids sit this fraction under the uncongested ask. */
  bidSpread: number;
}

export const DEFAULT_PRICE_CONFIG: PriceConfig = {
  meanReversionPerHour: 0.05,
  volatilityPerHour: 0.025,
  shockProbabilityPerHour: 0.004,
  shockMean: 0.25,
  shockStd: 0.1,
  shockUpShare: 0.8,
  dailyAmplitude: 0.08,
  weekendDiscount: 0.1,
  utcOffsetHours: -8,
  termElasticity: 0.11,
  termFloor: 0.6,
  termCeiling: 1.4,
  sizeElasticity: 0.02,
  sizeFloor: 0.85,
  scarcityKnee: 0.7,
  scarcityPremium: 0.45,
  bidSpread: 0.12,
};

/** A mean-reverting log-level, one value per hour from `originHour`, computed on demand and kept. */
class HourlyLogLevel {
  private readonly values: number[] = [0];
  private readonly rng: Rng;

  constructor(
    seed: string | number,
    stream: string,
    private readonly originHour: number,
    private readonly volatility: number,
    private readonly shockShare: number,
    private readonly config: PriceConfig,
  ) {
    this.rng = new Rng(seed, stream);
  }

  at(hour: number): number {
    const i = hour - this.originHour;
    if (i <= 0) return 0;
    const c = this.config;
    while (this.values.length <= i) {
      const prev = this.values[this.values.length - 1]!;
      let next = prev - c.meanReversionPerHour * prev + this.volatility * this.rng.normal();
      if (this.rng.next() < c.shockProbabilityPerHour * this.shockShare) {
        const size = Math.max(0, c.shockMean + c.shockStd * this.rng.normal());
        next += this.rng.next() < c.shockUpShare ? size : -size;
      }
      // Keep the level within a plausible band (about ×0.45 to ×2.7 of the mean).
      this.values.push(Math.max(-0.8, Math.min(1.0, next)));
    }
    return this.values[i]!;
  }
}

export class PriceModel {
  private readonly market: HourlyLogLevel;
  private readonly zoneLevels = new Map<string, HourlyLogLevel>();
  /** Seasonality by hour of the week (0 = Monday 00:00 local). */
  private readonly weekTable: Float64Array;

  constructor(
    private readonly seed: string | number,
    private readonly originHour: number,
    readonly config: PriceConfig = DEFAULT_PRICE_CONFIG,
  ) {
    this.market = new HourlyLogLevel(seed, "prices:market", originHour, config.volatilityPerHour, 0.7, config);
    this.weekTable = new Float64Array(168);
    const weekdayPremium = (config.weekendDiscount * 2) / 5;
    for (let h = 0; h < 168; h++) {
      const day = Math.floor(h / 24);
      const hourOfDay = h % 24;
      const daily = 1 + config.dailyAmplitude * Math.cos((2 * Math.PI * (hourOfDay - 14)) / 24);
      const weekly = day >= 5 ? 1 - config.weekendDiscount : 1 + weekdayPremium;
      this.weekTable[h] = daily * weekly;
    }
  }

  /** Log of the market level of a zone at an hour (0 = the long-run mean). */
  logLevel(zone: string, hour: number): number {
    let zoneLevel = this.zoneLevels.get(zone);
    if (!zoneLevel) {
      zoneLevel = new HourlyLogLevel(
        this.seed,
        `prices:zone:${zone}`,
        this.originHour,
        this.config.volatilityPerHour / 2,
        0.3,
        this.config,
      );
      this.zoneLevels.set(zone, zoneLevel);
    }
    return this.market.at(hour) + zoneLevel.at(hour);
  }

  level(zone: string, at: number): number {
    return Math.exp(this.logLevel(zone, Math.floor(at / HOUR_MS)));
  }

  /** Seasonality of the hour starting at epoch hour `hour`. */
  seasonality(hour: number): number {
    const localHour = hour + this.config.utcOffsetHours;
    // Epoch hour 0 was a Thursday; shift so index 0 is Monday 00:00 local.
    const hourOfWeek = (((localHour + 72) % 168) + 168) % 168;
    return this.weekTable[hourOfWeek]!;
  }

  /** Mean seasonality over a block's hours (its first week is enough: a week averages to 1). */
  blockSeasonality(start: number, end: number): number {
    const first = Math.floor(start / HOUR_MS);
    const last = Math.min(Math.ceil(end / HOUR_MS), first + 168);
    let sum = 0;
    for (let h = first; h < last; h++) sum += this.seasonality(h);
    return sum / Math.max(1, last - first);
  }

  term(durationMs: number): number {
    const c = this.config;
    const hours = durationMs / HOUR_MS;
    return Math.min(c.termCeiling, Math.max(c.termFloor, 1 - c.termElasticity * Math.log(hours / 24)));
  }

  size(quantity: number): number {
    return Math.max(this.config.sizeFloor, 1 - this.config.sizeElasticity * Math.log(quantity));
  }

  scarcity(utilisation: number): number {
    const c = this.config;
    if (utilisation <= c.scarcityKnee) return 1;
    return 1 + (c.scarcityPremium * Math.min(1, utilisation - c.scarcityKnee)) / (1 - c.scarcityKnee);
  }

  /** Ask rate, cents per GPU-hour, for a block seen at `now`; `utilisation` is the zone's peak after the fill. */
  askRate(
    baseCentsPerGpuHour: number,
    zone: string,
    block: { start: number; end: number; quantity: number },
    now: number,
    utilisation: number,
  ): number {
    return (
      baseCentsPerGpuHour *
      this.level(zone, now) *
      this.blockSeasonality(block.start, block.end) *
      this.term(block.end - block.start) *
      this.size(block.quantity) *
      this.scarcity(utilisation)
    );
  }

  /** Bid rate, cents per GPU-hour: what buyers pay for resold time, under the uncongested ask. */
  bidRate(
    baseCentsPerGpuHour: number,
    zone: string,
    block: { start: number; end: number; quantity: number },
    now: number,
  ): number {
    return this.askRate(baseCentsPerGpuHour, zone, block, now, 0) * (1 - this.config.bidSpread);
  }
}

/** Total cents for a block at a rate per GPU-hour: ceil(rate × nodes × 8 × hours) (reference §3). */
export function blockTotalCents(ratePerGpuHour: number, quantity: number, durationMs: number): number {
  return Math.ceil((ratePerGpuHour * quantity * 8 * durationMs) / HOUR_MS - 1e-9);
}
