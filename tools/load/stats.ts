/**
 * The statistics of a load run: percentiles by nearest rank (a reported p99 is a latency that some
 * request really had, never an interpolation between two), and a histogram with logarithmic buckets
 * for the end-of-run display. Pure: no clock, no I/O.
 */

export interface Percentiles {
  p50: number | null;
  p99: number | null;
}

/**
 * The nearest-rank percentile of `values` (need not be sorted): the smallest value such that at
 * least `p` percent of the values are at or below it. Null when there are no values.
 */
export function percentile(values: readonly number[], p: number): number | null {
  if (!(p > 0 && p <= 100)) throw new RangeError(`percentile: p must be in (0, 100], got ${p}`);
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length); // 1-based
  return sorted[rank - 1]!;
}

/** p50 and p99, rounded to 0.1 ms for the report. */
export function percentiles(values: readonly number[]): Percentiles {
  const round = (v: number | null) => (v === null ? null : Math.round(v * 10) / 10);
  return { p50: round(percentile(values, 50)), p99: round(percentile(values, 99)) };
}

/** `a / b` rounded to 0.01, or null when either is missing or `b` is not positive. */
export function ratio(a: number | null, b: number | null): number | null {
  if (a === null || b === null || !(b > 0)) return null;
  return Math.round((a / b) * 100) / 100;
}

export interface Bucket {
  /** Inclusive lower bound (ms); the first bucket starts at 0. */
  from: number;
  /** Exclusive upper bound (ms); null for the last, open bucket. */
  to: number | null;
  count: number;
}

/**
 * Counts per bucket with bounds 0, first, first·2, first·4 … up to `last`, then one open bucket.
 * Values below 0 go to the first bucket.
 */
export function histogram(values: readonly number[], first = 1, last = 16_384): Bucket[] {
  if (!(first > 0) || !(last >= first)) throw new RangeError("histogram: need 0 < first <= last");
  const bounds = [0];
  for (let b = first; b <= last; b *= 2) bounds.push(b);
  const buckets: Bucket[] = bounds.map((from, i) => ({ from, to: bounds[i + 1] ?? null, count: 0 }));
  for (const v of values) {
    let i = 0;
    while (i < bounds.length - 1 && v >= bounds[i + 1]!) i += 1;
    buckets[i]!.count += 1;
  }
  return buckets;
}

/** A few text lines: one per non-empty bucket, with a bar scaled to the largest count. */
export function renderHistogram(title: string, buckets: readonly Bucket[], width = 40): string {
  const used = buckets.filter((b) => b.count > 0);
  if (used.length === 0) return `${title}: no samples`;
  const max = Math.max(...used.map((b) => b.count));
  const label = (b: Bucket) => (b.to === null ? `≥ ${b.from} ms` : `${b.from}–${b.to} ms`);
  const labelWidth = Math.max(...used.map((b) => label(b).length));
  const lines = used.map((b) => {
    const bar = "#".repeat(Math.max(1, Math.round((b.count / max) * width)));
    return `  ${label(b).padStart(labelWidth)} │ ${bar} ${b.count}`;
  });
  return [`${title}:`, ...lines].join("\n");
}

/**
 * The durations of a `Server-Timing` header (`name;desc="…";dur=12.3, other;dur=4`), by name.
 * Entries without a numeric `dur` are left out; a name given twice keeps its first duration.
 */
export function serverTimings(header: string | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  if (!header) return out;
  // Split on commas outside quoted descriptions.
  for (const entry of header.match(/(?:[^,"]|"(?:[^"\\]|\\.)*")+/g) ?? []) {
    const [name, ...params] = entry.split(/;(?=(?:[^"]*"[^"]*")*[^"]*$)/).map((s) => s.trim());
    if (!name || name in out) continue;
    for (const param of params) {
      const m = /^dur=([0-9]+(?:\.[0-9]+)?)$/i.exec(param);
      if (m) {
        out[name] = Number(m[1]);
        break;
      }
    }
  }
  return out;
}
