/**
 * Rate limits per account and per API key (or user session), tier-aware: accounts entitled to the
 * Fast tier get the higher plan. A per-account override (table `rate_limit_overrides`) replaces the
 * plan. Decided by the account's RateLimiter Durable Object (token buckets); see docs/api.md.
 */
import type { Context, MiddlewareHandler } from "hono";
import type { BucketReading, BucketSpec, RateDecision } from "../../durable-objects/rate-limiter/bucket";
import type { Caller } from "../auth/caller";
import type { ApiEnv } from "./api-env";
import { ApiError } from "./errors";
import { errorFields } from "./log";

export interface RatePlan {
  accountLimit: number;
  keyLimit: number;
  windowS: number;
}

/** Requests per window: a bucket of `limit` tokens refilled evenly over `windowS`. */
export const RATE_PLANS = {
  standard: { accountLimit: 600, keyLimit: 300, windowS: 60 },
  fast: { accountLimit: 3000, keyLimit: 1200, windowS: 60 },
} as const satisfies Record<string, RatePlan>;

export function ratePlanOf(caller: Caller): RatePlan & { plan: string } {
  const account = caller.account;
  if (account?.rateLimitOverride) return { plan: "custom", ...account.rateLimitOverride };
  return account?.fastTierEnabled ? { plan: "fast", ...RATE_PLANS.fast } : { plan: "standard", ...RATE_PLANS.standard };
}

export function bucketsOf(caller: Caller): { object: string; specs: BucketSpec[] } {
  const plan = ratePlanOf(caller);
  const own = caller.apiKey ? `key:${caller.apiKey.id}` : `user:${caller.userId}`;
  const specs: BucketSpec[] = [{ name: own, limit: plan.keyLimit, windowS: plan.windowS }];
  if (caller.account) specs.unshift({ name: "account", limit: plan.accountLimit, windowS: plan.windowS });
  return { object: caller.account ? `account:${caller.account.id}` : `user:${caller.userId}`, specs };
}

/**
 * One token from each of `specs` in the RateLimiter object named `object`, or null when the object
 * cannot be reached (logged): the callers then let the request through (fail open).
 */
export async function takeFrom(c: Context<ApiEnv>, object: string, specs: BucketSpec[]): Promise<RateDecision | null> {
  try {
    return await c.env.RATE_LIMITER.get(c.env.RATE_LIMITER.idFromName(object)).take(specs);
  } catch (error) {
    c.get("log").warn("rate_limit.unavailable", errorFields(error));
    return null;
  }
}

function headers(r: BucketReading): Record<string, string> {
  return {
    "RateLimit-Limit": String(r.limit),
    "RateLimit-Remaining": String(r.remaining),
    "RateLimit-Reset": String(r.resetS),
    "RateLimit-Policy": `${r.limit};w=${r.windowS}`,
  };
}

/**
 * The limiter's verdict for one request: resolves when it may go on (setting the RateLimit-*
 * headers), or when the limiter cannot be reached (fail open: a limiter outage must not take the
 * API down with it); rejects with the 429.
 */
async function verdict(c: Context<ApiEnv>): Promise<void> {
  const caller = c.get("caller");
  const { object, specs } = bucketsOf(caller);
  const decision = await takeFrom(c, object, specs);
  if (decision === null) return;
  const h = headers(decision.tightest);
  if (!decision.allowed) {
    const scope = decision.tightest.name === "account" ? "account" : caller.apiKey ? "api_key" : "user";
    throw new ApiError(
      429,
      "rate_limited",
      `rate limit of ${decision.tightest.limit} requests per ${decision.tightest.windowS} s reached for this ${scope.replace("_", " ")}; retry in ${decision.retryAfterS} s`,
      {
        scope,
        limit: decision.tightest.limit,
        window_s: decision.tightest.windowS,
        retry_after_s: decision.retryAfterS,
      },
      { ...h, "Retry-After": String(decision.retryAfterS) },
    );
  }
  for (const [name, value] of Object.entries(h)) c.header(name, value);
}

/**
 * A POST with an `Idempotency-Key` does not wait for the limiter before claiming its key: the
 * limiter's call and the claim's round trip run side by side, and `idempotency` waits for the
 * verdict before the route runs or a stored response is replayed (releasing its claim on a 429).
 * The checks in between (scopes, the body's form) may answer first; a 429 still wins over their
 * error. Every other request waits for the verdict here.
 */
export const rateLimit: MiddlewareHandler<ApiEnv> = async (c, next) => {
  const gate = verdict(c);
  if (c.req.method !== "POST" || c.req.header("idempotency-key") === undefined) {
    await gate;
    return next();
  }
  // Settled now or later, never unhandled: `idempotency` or the lines below look at it.
  gate.catch(() => {});
  c.set("rateGate", gate);
  await next();
  // A route that answered without reaching `idempotency` (a 400 or 403 of the checks in between):
  // a refusal by the limiter is the answer, as it would have been had the limiter answered first.
  await gate.catch((error) => {
    if (c.res.status !== 429) throw error;
  });
};
