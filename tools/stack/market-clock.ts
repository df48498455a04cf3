/**
 * The simulator's virtual clock, kept in step with real time: every `stepMs` it advances to
 * Date.now() + offset, so timers (order matching, VM boots, block ends) fire as on a real clock,
 * while `jump(ms)` raises the offset and lets a test skip an hour of market time at once.
 */
import type { SimEngine } from "../sfcompute-sim/engine";

export interface MarketClock {
  now(): number;
  /** Moves the market ahead by `ms` at once (and keeps it that far ahead of real time). */
  jump(ms: number): void;
  stop(): void;
}

export function driveMarketClock(
  engine: SimEngine,
  opts: { stepMs?: number; wall?: () => number; log?: (line: string) => void } = {},
): MarketClock {
  const wall = opts.wall ?? Date.now;
  let offset = engine.now() - wall();
  const step = () => {
    const to = wall() + offset;
    if (to > engine.now()) {
      try {
        engine.advanceTo(to);
      } catch (error) {
        opts.log?.(`market clock: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
  };
  const timer = setInterval(step, opts.stepMs ?? 250);
  timer.unref();
  return {
    now() {
      step();
      return engine.now();
    },
    jump(ms) {
      if (!(ms >= 0) || !Number.isFinite(ms)) throw new RangeError(`cannot move the market by ${ms} ms`);
      offset += ms;
      step();
    },
    stop: () => clearInterval(timer),
  };
}
