/**
 * The simulator's time. Every rule that depends on "now" (hour alignment, expiry, boot delays,
 * standing-order auto-cancel) reads it from a Clock, so a test or a trace replay can run days of
 * market in milliseconds with a VirtualClock that moves only when told to.
 */
export interface Clock {
  /** Epoch milliseconds. */
  now(): number;
  readonly mode: "real" | "virtual";
}

export class SystemClock implements Clock {
  readonly mode = "real" as const;
  now(): number {
    return Date.now();
  }
}

export class VirtualClock implements Clock {
  readonly mode = "virtual" as const;
  private current: number;

  constructor(start: number) {
    this.current = start;
  }

  now(): number {
    return this.current;
  }

  /** Moves time forward to `to` (never backwards: the market's history is immutable). */
  set(to: number): void {
    if (!Number.isFinite(to)) throw new RangeError(`not a time: ${to}`);
    if (to < this.current) throw new RangeError(`the virtual clock cannot go back (${to} < ${this.current})`);
    this.current = to;
  }
}

export const MINUTE_MS = 60_000;
export const HOUR_MS = 3_600_000;
export const DAY_MS = 86_400_000;

export const floorTo = (t: number, unit: number): number => Math.floor(t / unit) * unit;
export const ceilTo = (t: number, unit: number): number => Math.ceil(t / unit) * unit;
