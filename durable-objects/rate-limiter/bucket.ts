/**
 * Token buckets, pure: a bucket holds up to `limit` tokens and refills at `limit / window_s` per
 * second, so a caller may burst `limit` requests and then sustain the window's average. A request
 * takes one token from every bucket that applies to it, or from none.
 */
export interface BucketSpec {
  /** e.g. `account`, `key:<id>`, `user:<id>` */
  name: string;
  limit: number;
  windowS: number;
}

export interface BucketState {
  tokens: number;
  updatedMs: number;
}

export interface BucketReading {
  name: string;
  limit: number;
  windowS: number;
  /** Whole tokens left after this request. */
  remaining: number;
  /** Seconds until the bucket is full again. */
  resetS: number;
}

export type RateDecision =
  | { allowed: true; tightest: BucketReading }
  | { allowed: false; tightest: BucketReading; retryAfterS: number };

const perMs = (spec: BucketSpec) => spec.limit / (spec.windowS * 1000);

export function refilled(state: BucketState | undefined, spec: BucketSpec, nowMs: number): number {
  if (!state) return spec.limit;
  const elapsed = Math.max(0, nowMs - state.updatedMs);
  return Math.min(spec.limit, state.tokens + elapsed * perMs(spec));
}

function reading(spec: BucketSpec, tokens: number): BucketReading {
  return {
    name: spec.name,
    limit: spec.limit,
    windowS: spec.windowS,
    remaining: Math.max(0, Math.floor(tokens)),
    resetS: Math.ceil((spec.limit - tokens) / perMs(spec) / 1000),
  };
}

/**
 * Decide one request of `cost` tokens against `specs` (at least one). Returns the decision and the
 * states to store (unchanged tokens, refilled to `nowMs`, when refused).
 */
export function take(
  specs: readonly BucketSpec[],
  states: ReadonlyMap<string, BucketState>,
  nowMs: number,
  cost = 1,
): { decision: RateDecision; next: Map<string, BucketState> } {
  if (specs.length === 0) throw new Error("take() needs at least one bucket");
  const levels = specs.map((spec) => ({ spec, tokens: refilled(states.get(spec.name), spec, nowMs) }));
  const short = levels.filter((l) => l.tokens < cost);
  const allowed = short.length === 0;
  const next = new Map<string, BucketState>();
  for (const l of levels) {
    next.set(l.spec.name, { tokens: allowed ? l.tokens - cost : l.tokens, updatedMs: nowMs });
  }
  if (!allowed) {
    // The bucket that frees up last decides when a retry can succeed.
    const waits = short.map((l) => ({ l, waitMs: (cost - l.tokens) / perMs(l.spec) }));
    waits.sort((a, b) => b.waitMs - a.waitMs);
    const worst = waits[0]!;
    return {
      decision: {
        allowed: false,
        tightest: reading(worst.l.spec, worst.l.tokens),
        retryAfterS: Math.max(1, Math.ceil(worst.waitMs / 1000)),
      },
      next,
    };
  }
  // The bucket with the smallest share left is what the client should pace itself by.
  const after = levels.map((l) => ({ spec: l.spec, tokens: l.tokens - cost }));
  after.sort((a, b) => a.tokens / a.spec.limit - b.tokens / b.spec.limit);
  const tight = after[0]!;
  return { decision: { allowed: true, tightest: reading(tight.spec, tight.tokens) }, next };
}
