/**
 * When to try again. Exponential backoff with full jitter (a random wait up to base × 2^n, capped),
 * unless the server said when: `Retry-After` (seconds or an HTTP date), `retry-after-ms`, or
 * `RateLimit-Reset` (a Unix timestamp on SF Compute, delta-seconds in the IETF draft; told apart by
 * size). An advertised wait is honoured in full, plus a little jitter so clients do not return in
 * step; one longer than `maxAdvertisedDelayMs` is not waited for.
 */
export interface RetryPolicy {
  /** Attempts in all, the first included. */
  maxAttempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
  maxAdvertisedDelayMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  maxAttempts: 4,
  baseDelayMs: 250,
  maxDelayMs: 20_000,
  maxAdvertisedDelayMs: 120_000,
};

/** Full-jitter backoff before attempt `failures + 1`. */
export function backoffDelayMs(failures: number, policy: RetryPolicy, random: () => number): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, failures - 1));
  return Math.round(random() * ceiling);
}

/**
 * The wait the server asked for, ms from `nowMs`, or null when it said nothing usable.
 * `Retry-After` and `retry-after-ms` count on any answer; `RateLimit-Reset` only on a 429 (or with
 * `RateLimit-Remaining: 0`): SF Compute sends the quota window's headers on every answer of a
 * limited path, and the window's end says nothing about when a 500 or 503 is worth trying again.
 */
export function advertisedDelayMs(headers: Headers, nowMs: number, status = 429): number | null {
  const ms = headers.get("retry-after-ms");
  if (ms !== null && /^\d+(\.\d+)?$/.test(ms.trim())) return Number(ms);
  const after = headers.get("retry-after");
  if (after !== null) {
    const trimmed = after.trim();
    if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
    const date = Date.parse(trimmed);
    if (!Number.isNaN(date)) return Math.max(0, date - nowMs);
  }
  const limited = status === 429 || headers.get("ratelimit-remaining")?.trim() === "0";
  const reset = limited ? headers.get("ratelimit-reset") : null;
  if (reset !== null && /^\d+(\.\d+)?$/.test(reset.trim())) {
    const value = Number(reset);
    // Above ~2001-09-09 in seconds it is a timestamp, not a delay.
    return value > 1e9 ? Math.max(0, value * 1000 - nowMs) : value * 1000;
  }
  return null;
}

export function retryDelayMs(
  failures: number,
  advertised: number | null,
  policy: RetryPolicy,
  random: () => number,
): number | null {
  if (advertised === null) return backoffDelayMs(failures, policy, random);
  if (advertised > policy.maxAdvertisedDelayMs) return null;
  return Math.ceil(advertised + random() * Math.min(policy.baseDelayMs, 250));
}
