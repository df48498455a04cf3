/**
 * Failed credentials per client address. Every credential the API refuses after checking it (an
 * unknown, revoked or expired API key, a token that fails verification, a refused node token on the
 * agent routes) takes a token from the address's bucket in a RateLimiter Durable Object
 * (`client:<address>`); when the bucket is empty the request is `429 rate_limited` (scope
 * `client`) instead of `401`, and this isolate refuses every request from that address until a
 * token is back, before any database lookup, so a client cycling through guesses costs the database
 * nothing. Valid credentials take nothing from it.
 *
 * The address is Cloudflare's `CF-Connecting-IP` (set by the edge; a client cannot forge it). A
 * request without it (a service binding, a test) is not counted. The limiter unreachable: the `401`
 * stands (fail open, as the per-account limits). docs/api.md, "Rate limits".
 */
import type { Context } from "hono";
import type { BucketSpec } from "../../durable-objects/rate-limiter/bucket";
import { RecentAnswers } from "../auth/recent-answers";
import type { ApiEnv } from "./api-env";
import { ApiError } from "./errors";
import { takeFrom } from "./rate-limit";

/** Refused credentials one address may send: a burst of 30, then one every 2 s. */
export const FAILED_CREDENTIALS: BucketSpec = { name: "failed_credentials", limit: 30, windowS: 60 };

/** Addresses this isolate refuses without a lookup, each until its bucket has a token again. */
export const blockedClients = new RecentAnswers<number>(FAILED_CREDENTIALS.windowS * 1000);

export function clientAddress(c: Context<ApiEnv>): string | null {
  const address = c.req.header("cf-connecting-ip")?.trim();
  return address ? address.toLowerCase() : null;
}

function refusal(retryAfterS: number): ApiError {
  const { limit, windowS } = FAILED_CREDENTIALS;
  return new ApiError(
    429,
    "rate_limited",
    `too many refused credentials from this address (${limit} per ${windowS} s); retry in ${retryAfterS} s`,
    { scope: "client", limit, window_s: windowS, retry_after_s: retryAfterS },
    { "Retry-After": String(retryAfterS) },
  );
}

/** Throws the 429 when this isolate already knows the address is out of tries. */
export function refuseIfBlocked(address: string | null, now = Date.now()): void {
  if (address === null) return;
  const until = blockedClients.get(address, now);
  if (until !== null) throw refusal(Math.max(1, Math.ceil((until - now) / 1000)));
}

/**
 * Counts one refused credential against the address: the 429 to answer instead of the `401` when
 * the address is out of tries, else null.
 */
export async function countFailure(c: Context<ApiEnv>, address: string): Promise<ApiError | null> {
  const decision = await takeFrom(c, `client:${address}`, [FAILED_CREDENTIALS]);
  if (decision === null || decision.allowed) return null;
  const now = Date.now();
  const until = now + decision.retryAfterS * 1000;
  blockedClients.set(address, until, now, until);
  c.get("log").warn("auth.client_blocked", { client: address, retry_after_s: decision.retryAfterS });
  return refusal(decision.retryAfterS);
}
