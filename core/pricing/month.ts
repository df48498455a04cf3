/** Calendar months (UTC), as bills count them: `YYYY-MM` ↔ [start, end) in epoch milliseconds. */

/** From 0001-01: Postgres (a `::timestamptz`) has no year 0. */
export const MONTH_PATTERN = /^(?!0000)(\d{4})-(0[1-9]|1[0-2])$/;

export interface MonthBounds {
  month: string;
  startMs: number;
  endMs: number;
}

/** The month a `YYYY-MM` names; null when it names none. */
export function monthBounds(month: string): MonthBounds | null {
  const m = MONTH_PATTERN.exec(month);
  if (!m) return null;
  const year = Number(m[1]);
  const index = Number(m[2]) - 1;
  return { month, startMs: firstOfMonth(year, index), endMs: firstOfMonth(year, index + 1) };
}

/** Midnight UTC on the 1st; `Date.UTC` would read years 0–99 as 1900–1999 (0099-12 as 1999-12). */
function firstOfMonth(year: number, monthIndex: number): number {
  const d = new Date(0);
  d.setUTCFullYear(year, monthIndex, 1);
  return d.getTime();
}

/** The month (UTC) an instant falls in, as `YYYY-MM`. */
export function monthOf(ms: number): string {
  const d = new Date(ms);
  return `${d.getUTCFullYear().toString().padStart(4, "0")}-${String(d.getUTCMonth() + 1).padStart(2, "0")}`;
}

/**
 * The part of `gpuSeconds`, used evenly over [fromMs, toMs), that falls inside [startMs, endMs):
 * what a run spanning a month boundary bills in each month. A run of no length counts where it is.
 */
export function shareInside(
  gpuSeconds: number,
  fromMs: number,
  toMs: number,
  window: { startMs: number; endMs: number },
): number {
  if (toMs <= fromMs) return fromMs >= window.startMs && fromMs < window.endMs ? gpuSeconds : 0;
  const overlap = Math.min(toMs, window.endMs) - Math.max(fromMs, window.startMs);
  if (overlap <= 0) return 0;
  return (gpuSeconds * overlap) / (toMs - fromMs);
}
