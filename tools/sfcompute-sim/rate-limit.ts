/**
 * 429 above a configured request rate, with the `RateLimit-Limit`, `RateLimit-Remaining` and
 * `RateLimit-Reset` headers SF Compute sends on `/v0/quote` (reference §12; Reset is a Unix
 * timestamp there, delta-seconds in the IETF draft, so both are offered) and no body. A fixed window
 * per token on the wall clock: it protects the server, so virtual time does not move it.
 */
export interface RateLimitConfig {
  /** Requests per window per token. */
  limit: number;
  windowMs: number;
  /** Path prefixes it applies to (default: every API path). */
  paths?: string[];
  /** `RateLimit-Reset` as a Unix timestamp (SF Compute) or as seconds from now (IETF draft). */
  resetFormat?: "unix" | "delta";
  /** Also send `Retry-After` (seconds) on a 429. */
  retryAfter?: boolean;
}

export class RateLimiter {
  private windows = new Map<string, { start: number; count: number }>();

  constructor(
    public config: RateLimitConfig | null = null,
    /** The wall clock of the windows; tests replace it to make window boundaries deterministic. */
    public wallClock: () => number = Date.now,
  ) {}

  /** Counts the request; returns the headers to send, and whether it is refused. */
  check(token: string, path: string): { limited: boolean; headers: Record<string, string> } | null {
    const c = this.config;
    if (!c || c.limit <= 0) return null;
    if (c.paths && !c.paths.some((p) => path.startsWith(p))) return null;
    const now = this.wallClock();
    let w = this.windows.get(token);
    if (!w || now >= w.start + c.windowMs) {
      w = { start: now - (now % c.windowMs), count: 0 };
      this.windows.set(token, w);
    }
    w.count++;
    const resetAt = w.start + c.windowMs;
    const headers: Record<string, string> = {
      "RateLimit-Limit": String(c.limit),
      "RateLimit-Remaining": String(Math.max(0, c.limit - w.count)),
      "RateLimit-Reset":
        c.resetFormat === "delta" ? String(Math.ceil((resetAt - now) / 1000)) : String(Math.ceil(resetAt / 1000)),
    };
    const limited = w.count > c.limit;
    if (limited && c.retryAfter) headers["Retry-After"] = String(Math.ceil((resetAt - now) / 1000));
    return { limited, headers };
  }
}
