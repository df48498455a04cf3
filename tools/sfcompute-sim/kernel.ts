/**
 * What every part of the engine shares: simulated time, the timer queue, the outward event log,
 * seeded randomness, the catalogue, the price path and the supply book.
 */
import { CatalogIndex } from "./catalog";
import type { SimSettings } from "./config";
import { EventLog, TimerQueue } from "./events";
import { PriceModel } from "./prices";
import { Rng } from "./rng";
import { SupplyBook } from "./supply";

export class Kernel {
  readonly timers = new TimerQueue();
  readonly events = new EventLog();
  readonly catalog: CatalogIndex;
  readonly prices: PriceModel;
  readonly supply: SupplyBook;
  private readonly idRng: Rng;
  private readonly delayRng: Rng;
  /** The instant the engine's state reflects; timers run with it set to their own time. */
  cursor: number;

  /**
   * `priceOrigin` (default `start`): where the price path begins (its level is the long-run mean
   * before it); a replay with a warm-up starts the engine earlier on the same path. `idSeed`
   * (default the seed) seeds the ids handed out.
   */
  constructor(
    readonly settings: SimSettings,
    start: number,
    priceOrigin = start,
    idSeed: string | number = settings.seed,
  ) {
    this.cursor = start;
    this.catalog = new CatalogIndex(settings.catalog);
    this.prices = new PriceModel(settings.seed, Math.floor(priceOrigin / 3_600_000), settings.prices);
    this.supply = new SupplyBook(settings.seed, this.prices, settings.supply);
    this.idRng = new Rng(idSeed, "ids");
    this.delayRng = new Rng(settings.seed, "delays");
  }

  now(): number {
    return this.cursor;
  }

  id(prefix: string): string {
    return prefix === "n_" || prefix === "vm_" ? `${prefix}${this.idRng.hex(16)}` : `${prefix}${this.idRng.base62(16)}`;
  }

  /** A delay drawn from [min, max] ms. */
  delay([min, max]: [number, number]): number {
    return max <= min ? min : Math.round(this.delayRng.between(min, max));
  }

  /** Schedules `run` at `at` (never in the past). */
  at(at: number, label: string, run: (at: number) => void): void {
    this.timers.schedule(Math.max(at, this.cursor), label, run);
  }
}
