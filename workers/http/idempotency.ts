/**
 * `Idempotency-Key` on every POST. The key (per account) is claimed before the route runs; a 2xx
 * result is stored for 24 h and replayed to a retry from the same caller (user or API key) with the
 * same method, path and body (compared as canonical JSON). The same key with another body, or from
 * another caller, is a 422: a stored answer never reaches someone the route would not have answered.
 * A retry while the first is still running is a 409, so two concurrent requests with one key do the
 * work once. Anything but a 2xx releases the key, so a corrected or later retry can run. An answer
 * holding a secret shown once (`secretAnswer`) is not kept: its replay is a 409 naming what was made.
 */
import type { MiddlewareHandler } from "hono";
import { endTime, startTime } from "hono/timing";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { requireAccount } from "../auth/caller";
import { sha256Hex } from "../auth/secrets";
import { literal } from "../db/round-trips";
import type { ApiEnv } from "./api-env";
import type { RequestDb } from "./database";
import { ApiError } from "./errors";

export const IDEMPOTENCY_TTL_HOURS = 24;
/** A claim whose request died (isolate gone mid-request) may be taken over after this long. */
const CLAIM_SECONDS = 60;
const KEY = /^[\x21-\x7e]{1,255}$/;

/** Key order and whitespace do not make two bodies different. */
export function canonicalJson(text: string): string {
  if (text.trim() === "") return "";
  const sort = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sort);
    if (v && typeof v === "object") {
      return Object.fromEntries(
        Object.keys(v)
          .sort()
          .map((k) => [k, sort((v as Record<string, unknown>)[k])]),
      );
    }
    return v;
  };
  return JSON.stringify(sort(JSON.parse(text)));
}

interface StoredKey {
  request_hash: string;
  state: "in_progress" | "completed";
  response_status: number | null;
  response_body: unknown;
}

export const idempotency: MiddlewareHandler<ApiEnv> = async (c, next) => {
  const key = c.req.header("idempotency-key");
  if (c.req.method !== "POST" || key === undefined) return next();
  if (!KEY.test(key)) {
    throw new ApiError(400, "invalid_request", "Idempotency-Key must be 1 to 255 visible ASCII characters", {
      fields: [{ field: "Idempotency-Key", message: "1 to 255 visible ASCII characters", code: "invalid_format" }],
    });
  }
  const caller = c.get("caller");
  const account = requireAccount(caller);
  const sql = c.get("pg").sql;
  const path = c.req.path;
  // Who asked is part of the request: a viewer resending an owner's key and body gets no replay.
  const who = caller.apiKey ? `key:${caller.apiKey.id}` : `user:${caller.userId}`;
  const hash = await sha256Hex(`${c.req.method} ${path}\n${who}\n${canonicalJson(await c.req.text())}`);

  // Waited for with the first claim only: later rounds happen after the verdict.
  let gate: Promise<void> | undefined = c.get("rateGate");
  for (let attempt = 0; attempt < 3; attempt++) {
    // Claim the key, or take over one that expired or whose request died.
    // Values inlined as literals: a statement without parameters is one round trip, not two.
    if (gate) startTime(c, "claim", "Idempotency-Key claimed beside the rate limiter");
    const claiming = sql
      .unsafe(`
      insert into idempotency_keys (account_id, key, method, path, request_hash, locked_until, expires_at)
      values (${literal(account.id)}, ${literal(key)}, ${literal(c.req.method)}, ${literal(path)}, ${literal(hash)},
              now() + make_interval(secs => ${CLAIM_SECONDS}), now() + make_interval(hours => ${IDEMPOTENCY_TTL_HOURS}))
      on conflict (account_id, key) do update
        set method = excluded.method, path = excluded.path, request_hash = excluded.request_hash,
            state = 'in_progress', response_status = null, response_body = null,
            locked_until = excluded.locked_until, created_at = now(), expires_at = excluded.expires_at
        where idempotency_keys.expires_at <= now()
           or (idempotency_keys.state = 'in_progress' and idempotency_keys.locked_until <= now()
               and idempotency_keys.request_hash = excluded.request_hash)
      returning 1`)
      .execute();
    // The rate limiter's verdict (on its way since before the claim, see rate-limit.ts) comes
    // first: a refused request keeps no claim.
    const [claim, verdict] = await Promise.allSettled([claiming, gate]);
    if (gate) endTime(c, "claim");
    if (verdict.status === "rejected") {
      if (claim.status === "fulfilled" && claim.value.length === 1) {
        await release(sql, account.id, key).catch(() => {});
      }
      throw verdict.reason;
    }
    if (claim.status === "rejected") throw claim.reason;
    const claimed = claim.value;
    gate = undefined;
    if (claimed.length === 1) return run(c, next, account.id, key);

    const [stored] = await sql<StoredKey[]>`
      select request_hash, state, response_status, response_body from idempotency_keys
       where account_id = ${account.id} and key = ${key} and expires_at > now()`;
    if (!stored) continue; // released or expired between the two statements: claim again
    if (stored.request_hash !== hash) {
      throw new ApiError(
        422,
        "idempotency_key_reused",
        "this Idempotency-Key was used with a different request; use a new key for a new request",
      );
    }
    if (stored.state === "in_progress") {
      throw new ApiError(
        409,
        "idempotency_key_in_progress",
        "a request with this Idempotency-Key is still running; retry shortly",
        undefined,
        { "Retry-After": "1" },
      );
    }
    const withheld = (stored.response_body as { withheld_secret?: { id: string } } | null)?.withheld_secret;
    if (withheld) {
      throw new ApiError(
        409,
        "idempotency_secret_withheld",
        `the first request with this Idempotency-Key made ${withheld.id}; its answer held a secret, shown once and not kept: use the secret from that answer, or revoke ${withheld.id} and make another`,
        { id: withheld.id, status: stored.response_status },
      );
    }
    c.header("Idempotency-Replayed", "true");
    return c.json(stored.response_body as object, stored.response_status as ContentfulStatusCode);
  }
  throw new ApiError(409, "idempotency_key_in_progress", "Idempotency-Key is contended; retry shortly", undefined, {
    "Retry-After": "1",
  });
};

async function run(
  c: Parameters<MiddlewareHandler<ApiEnv>>[0],
  next: () => Promise<void>,
  accountId: string,
  key: string,
) {
  const sql = c.get("pg").sql;
  const where = keyWhere(accountId, key);
  try {
    await next();
  } catch (error) {
    await release(sql, accountId, key).catch(() => {});
    throw error;
  }
  // Errors thrown by the route were turned into a response by Hono before we get here.
  const status = c.res.status;
  if (status >= 200 && status < 300 && c.res.headers.get("content-type")?.includes("json")) {
    const secret = c.get("secretAnswer");
    const body = secret ? { withheld_secret: { id: secret.id } } : await c.res.clone().json();
    await sql.unsafe(`update idempotency_keys
                         set state = 'completed', response_status = ${Number(status)},
                             response_body = ${literal(JSON.stringify(body))}::jsonb
                       where ${where}`);
  } else {
    await release(sql, accountId, key);
  }
}

/** The key's row, as a condition with its values inlined (one round trip, no describe). */
function keyWhere(accountId: string, key: string): string {
  return `account_id = ${literal(accountId)} and key = ${literal(key)}`;
}

function release(sql: RequestDb["sql"], accountId: string, key: string) {
  return sql.unsafe(`delete from idempotency_keys where ${keyWhere(accountId, key)}`);
}
