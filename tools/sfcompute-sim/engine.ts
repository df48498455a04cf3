/**
 * The market engine: accounts, the v0 market and the v1 node fleet over one clock. It is plain
 * in-memory TypeScript with no I/O, so a trace replay can drive it directly and cheaply:
 *
 *   const engine = new SimEngine({ seed: 7, clock: new VirtualClock(start) });
 *   const me = engine.createAccount({ token: "t", balanceCents: 10_000_000 });
 *   engine.market.placeOrder(me, {...});   engine.advanceBy(3_600_000);
 *
 * Time moves in `sync()`: every timer (order matching, boots, expiries) and every hour boundary
 * (price moves, standing orders, auto-reserved renewals) between the last sync and the clock's now
 * runs in order, each at its own instant. With a VirtualClock only `advanceBy`/`advanceTo` move
 * time; advancing a day with nothing scheduled costs 24 hour-boundary steps.
 */
import { Account, type AccountOptions } from "./accounts";
import { type Clock, floorTo, HOUR_MS, SystemClock, VirtualClock } from "./clock";
import { defaultSettings, type SimSettings } from "./config";
import type { SimEvent, SimEventListener } from "./events";
import { Kernel } from "./kernel";
import { Market } from "./market";
import { NodeFleet } from "./nodes";

export type DeepPartial<T> = {
  [K in keyof T]?: T[K] extends object ? (T[K] extends unknown[] ? T[K] : DeepPartial<T[K]>) : T[K];
};

export interface EngineOptions {
  seed?: string | number;
  /** A Clock, or "real" / "virtual" (virtual starts at `start`, default the current hour). */
  clock?: Clock | "real" | "virtual";
  start?: number;
  /**
   * The first hour of the seeded price path (default: the clock's start); before it the market
   * level is the long-run mean. The same seed and origin give the same prices whenever the engine
   * starts.
   */
  priceOrigin?: number;
  /**
   * Seeds the ids the market hands out (orders, contracts, nodes; default: `seed`). SF Compute's ids
   * are unique for ever; a simulator started again with the same seed against a database that still
   * holds the last run's nodes would hand out their ids again, so a long-lived local stack passes a
   * new one each start.
   */
  idSeed?: string | number;
  settings?: DeepPartial<SimSettings>;
}

export class SimEngine {
  readonly clock: Clock;
  readonly settings: SimSettings;
  readonly k: Kernel;
  readonly market: Market;
  readonly nodes: NodeFleet;
  readonly accounts = new Map<string, Account>();
  private readonly tokens = new Map<string, Account>();
  private nextHourAt: number;
  private accountSeq = 0;

  constructor(options: EngineOptions = {}) {
    const clock = options.clock ?? "real";
    this.clock =
      clock === "real"
        ? new SystemClock()
        : clock === "virtual"
          ? new VirtualClock(options.start ?? floorTo(Date.now(), HOUR_MS))
          : clock;
    this.settings = mergeSettings(defaultSettings(options.seed ?? 1), options.settings ?? {});
    if (options.seed !== undefined) this.settings.seed = options.seed;
    const start = this.clock.now();
    this.k = new Kernel(this.settings, start, options.priceOrigin ?? start, options.idSeed);
    this.nextHourAt = floorTo(start, HOUR_MS) + HOUR_MS;
    this.market = new Market(this.k, (id) => this.account(id));
    this.nodes = new NodeFleet(this.k, this.market, (id) => this.account(id));
  }

  /** The engine's present, epoch ms. */
  now(): number {
    return this.k.now();
  }

  createAccount(options: AccountOptions): Account {
    if (this.tokens.has(options.token)) throw new Error("an account with this token exists");
    const id = options.id ?? `acct_${String(++this.accountSeq).padStart(4, "0")}${this.k.id("").slice(0, 8)}`;
    const account = new Account({ ...options, id }, this.now());
    this.accounts.set(id, account);
    this.tokens.set(options.token, account);
    return account;
  }

  account(id: string): Account {
    const account = this.accounts.get(id);
    if (!account) throw new Error(`unknown account ${id}`);
    return account;
  }

  accountByToken(token: string): Account | undefined {
    return this.tokens.get(token);
  }

  /** Runs everything due up to the clock's now, in time order. */
  sync(): void {
    const target = this.clock.now();
    if (target < this.k.cursor) return;
    for (;;) {
      const timerAt = this.k.timers.peekAt() ?? Number.POSITIVE_INFINITY;
      const next = Math.min(timerAt, this.nextHourAt);
      if (next > target) break;
      this.k.cursor = Math.max(this.k.cursor, next);
      if (timerAt <= this.nextHourAt) {
        const timer = this.k.timers.popDue(next)!;
        timer.run(timer.at);
      } else {
        const hour = this.nextHourAt;
        this.nextHourAt += HOUR_MS;
        this.market.rematchStanding();
        this.nodes.onHour(hour);
      }
    }
    this.k.cursor = target;
  }

  /** Virtual clock only: moves time forward by `ms` and runs what falls due. */
  advanceBy(ms: number): number {
    if (!(ms >= 0)) throw new RangeError(`cannot advance by ${ms} ms`);
    return this.advanceTo(this.clock.now() + ms);
  }

  advanceTo(to: number): number {
    if (!(this.clock instanceof VirtualClock)) throw new Error("the clock is real: time advances by itself");
    const from = this.clock.now();
    this.sync(); // settle the present first
    this.clock.set(to);
    this.sync();
    this.k.events.emit(to, "clock.advanced", { from, to });
    return to;
  }

  /** When something is next due (for a real-clock wake-up timer). */
  nextWakeAt(): number {
    return Math.min(this.k.timers.peekAt() ?? Number.POSITIVE_INFINITY, this.nextHourAt);
  }

  subscribe(listener: SimEventListener): () => void {
    return this.k.events.subscribe(listener);
  }

  eventsSince(seq: number): SimEvent[] {
    return this.k.events.since(seq);
  }

  /** Changes settings at runtime (delays, fees, error style…). The catalogue and seed are fixed. */
  configure(patch: DeepPartial<Omit<SimSettings, "seed" | "catalog">>): SimSettings {
    const merged = mergeSettings(this.settings, patch as DeepPartial<SimSettings>);
    Object.assign(this.settings.market, merged.market);
    Object.assign(this.settings.nodes, merged.nodes);
    Object.assign(this.settings.prices, merged.prices);
    Object.assign(this.settings.supply, merged.supply);
    this.settings.errorStyle = merged.errorStyle;
    return this.settings;
  }
}

function mergeSettings(base: SimSettings, patch: DeepPartial<SimSettings>): SimSettings {
  const out = structuredClone(base) as unknown as Record<string, unknown>;
  const merge = (target: Record<string, unknown>, source: Record<string, unknown>) => {
    for (const [key, value] of Object.entries(source)) {
      if (value === undefined) continue;
      const current = target[key];
      if (value && typeof value === "object" && !Array.isArray(value) && current && typeof current === "object") {
        merge(current as Record<string, unknown>, value as Record<string, unknown>);
      } else {
        target[key] = value;
      }
    }
  };
  merge(out, patch as Record<string, unknown>);
  return out as unknown as SimSettings;
}
