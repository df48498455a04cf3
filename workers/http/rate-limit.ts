/**
 * Rate limits per account and per API key (or user session), tier-aware: accounts entitled to the
 * Fast tier get the higher plan. A per-account override (table `rate_limit_overrides`) replaces the
 * plan. Endpoint invoke requests have a bucket of their own per account (`invokeLimit`), apart from
 * the API's. Decided by RateLimiter Durable Objects (token buckets); see docs/api.md.
 */
import type { Context, MiddlewareHandler } from "hono";
import type { BucketReading, BucketSpec, RateDecision } from "../../durable-objects/rate-limiter/bucket";
import type { AccountContext, Caller } from "../auth/caller";
import type { ApiEnv } from "./api-env";
import { ApiError } from "./errors";
import { errorFields } from "./log";

export interface RatePlan {
  accountLimit: number;
  keyLimit: number;
  windowS: number;
  /** Endpoint invoke requests per window, for the whole account (not counted in `accountLimit`). */
  invokeLimit: number;
}

/** Requests per window: a bucket of `limit` tokens refilled evenly over `windowS`. */
export const RATE_PLANS = {
  standard: { accountLimit: 600, keyLimit: 300, windowS: 60, invokeLimit: 6_000 },
  fast: { accountLimit: 3000, keyLimit: 1200, windowS: 60, invokeLimit: 60_000 },
} as const satisfies Record<string, RatePlan>;

export function ratePlanOf(caller: Caller): RatePlan & { plan: string } {
  const account = caller.account;
  const tier = account?.fastTierEnabled ? RATE_PLANS.fast : RATE_PLANS.standard;
  const custom = account?.rateLimitOverride;
  if (!custom) return { plan: account?.fastTierEnabled ? "fast" : "standard", ...tier };
  return {
    plan: "custom",
    accountLimit: custom.accountLimit,
    keyLimit: custom.keyLimit,
    windowS: custom.windowS,
    // Without its own invoke limit an override keeps the tier's invoke rate, over its own window.
    invokeLimit: custom.invokeLimit ?? Math.ceil((tier.invokeLimit * custom.windowS) / tier.windowS),
  };
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

function refusal(decision: RateDecision & { allowed: false }, scope: string, what: string): ApiError {
  const { limit, windowS } = decision.tightest;
  return new ApiError(
    429,
    "rate_limited",
    `rate limit of ${limit} ${what} per ${windowS} s reached for this ${scope === "invoke" ? "account" : scope.replace("_", " ")}; retry in ${decision.retryAfterS} s`,
    { scope, limit, window_s: windowS, retry_after_s: decision.retryAfterS },
    { ...headers(decision.tightest), "Retry-After": String(decision.retryAfterS) },
  );
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
  if (!decision.allowed) {
    const scope = decision.tightest.name === "account" ? "account" : caller.apiKey ? "api_key" : "user";
    throw refusal(decision, scope, "requests");
  }
  for (const [name, value] of Object.entries(headers(decision.tightest))) c.header(name, value);
}

/**
 * An endpoint invoke request's verdict: one token from the account's invoke bucket, kept in a
 * RateLimiter object of its own (`invoke:<account>`), so endpoint traffic neither spends the API's
 * budget nor queues behind its limiter calls. Resolves when the request may go on (or the limiter
 * cannot be reached: fail open), rejects with the 429 (`details.scope` "invoke"). A request let
 * through gets no RateLimit-* headers: its answer's headers are the replica's own.
 */
export async function invokeVerdict(c: Context<ApiEnv>, account: AccountContext): Promise<void> {
  const plan = ratePlanOf(c.get("caller"));
  const spec = { name: "invoke", limit: plan.invokeLimit, windowS: plan.windowS };
  const decision = await takeFrom(c, `invoke:${account.id}`, [spec]);
  if (decision !== null && !decision.allowed) throw refusal(decision, "invoke", "endpoint requests");
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
