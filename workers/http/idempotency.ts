/**
 * `Idempotency-Key` on every POST. The key (per account) is claimed before the route runs; a 2xx
 * result is stored for 24 h and replayed to a retry from the same caller (user or API key) with the
 * same method, path and body (compared as canonical JSON). The same key with another body, or from
 * another caller, is a 422: a stored answer never reaches someone the route would not have answered.
 * A retry while the first is still running is a 409, so two concurrent requests with one key do the
 * work once. Anything but a 2xx releases the key, so a corrected or later retry can run. An answer
 * holding a secret shown once (`secretAnswer`) is not kept: its replay is a 409 naming what was made.
 *
 * A claim is held by one request (`claim_id`): it alone completes or releases the key, and renews
 * the claim while it runs, so only a request that died (its isolate gone) is taken over, after
 * `claimSeconds`. The key also fixes the id of what the request makes (`idempotentId`, kept by a
 * takeover): a retry after a death between a job's (endpoint's, API key's) commit and the stored
 * answer finds it, not a chance to make a second one.
 */
import type { MiddlewareHandler } from "hono";
import { endTime, startTime } from "hono/timing";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { requireAccount } from "../auth/caller";
import { sha256Hex } from "../auth/secrets";
import { openDb } from "../db/client";
import { literal } from "../db/round-trips";
import type { ApiEnv } from "./api-env";
import type { RequestDb } from "./database";
import { ApiError } from "./errors";
import { errorFields, type Logger } from "./log";

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

/** `claimSeconds`: how long a claim outlives its last renewal (a test shortens it). */
export function idempotencyWith({ claimSeconds }: { claimSeconds: number }): MiddlewareHandler<ApiEnv> {
  return (c, next) => claimAndRun(c, next, claimSeconds);
}

export const idempotency = idempotencyWith({ claimSeconds: CLAIM_SECONDS });

type Context = Parameters<MiddlewareHandler<ApiEnv>>[0];

async function claimAndRun(c: Context, next: () => Promise<void>, claimSeconds: number) {
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
    const claimId = crypto.randomUUID();
    // A takeover of a dead claim keeps the id of what it was making; an expired key starts afresh.
    const claiming = sql
      .unsafe<{ resource_id: string }[]>(`
      insert into idempotency_keys (account_id, key, method, path, request_hash, locked_until, expires_at,
                                    claim_id, resource_id)
      values (${literal(account.id)}, ${literal(key)}, ${literal(c.req.method)}, ${literal(path)}, ${literal(hash)},
              now() + make_interval(secs => ${Number(claimSeconds)}), now() + make_interval(hours => ${IDEMPOTENCY_TTL_HOURS}),
              ${literal(claimId)}, ${literal(crypto.randomUUID())})
      on conflict (account_id, key) do update
        set method = excluded.method, path = excluded.path, request_hash = excluded.request_hash,
            state = 'in_progress', response_status = null, response_body = null,
            locked_until = excluded.locked_until, created_at = now(), expires_at = excluded.expires_at,
            claim_id = excluded.claim_id,
            resource_id = case when idempotency_keys.expires_at <= now() then excluded.resource_id
                               else idempotency_keys.resource_id end
        where idempotency_keys.expires_at <= now()
           or (idempotency_keys.state = 'in_progress' and idempotency_keys.locked_until <= now()
               and idempotency_keys.request_hash = excluded.request_hash)
      returning resource_id`)
      .execute();
    // The rate limiter's verdict (on its way since before the claim, see rate-limit.ts) comes
    // first: a refused request keeps no claim.
    const [claim, verdict] = await Promise.allSettled([claiming, gate]);
    if (gate) endTime(c, "claim");
    if (verdict.status === "rejected") {
      if (claim.status === "fulfilled" && claim.value.length === 1) {
        await release(sql, { accountId: account.id, key, claimId, claimSeconds }).catch(() => {});
      }
      throw verdict.reason;
    }
    if (claim.status === "rejected") throw claim.reason;
    const claimed = claim.value;
    gate = undefined;
    if (claimed.length === 1) {
      c.set("idempotentId", claimed[0]!.resource_id);
      return run(c, next, { accountId: account.id, key, claimId, claimSeconds });
    }

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
    if (withheld) throw secretWithheld(withheld.id, stored.response_status ?? 201);
    c.header("Idempotency-Replayed", "true");
    return c.json(stored.response_body as object, stored.response_status as ContentfulStatusCode);
  }
  throw new ApiError(409, "idempotency_key_in_progress", "Idempotency-Key is contended; retry shortly", undefined, {
    "Retry-After": "1",
  });
}

/**
 * The answer to a retry whose first request made `id` with a secret shown once (or never, if that
 * request died before answering): what was made, without the secret.
 */
export function secretWithheld(id: string, status: number): ApiError {
  return new ApiError(
    409,
    "idempotency_secret_withheld",
    `the first request with this Idempotency-Key made ${id}; its answer held a secret, shown once and not kept: use the secret from that answer, or revoke ${id} and make another`,
    { id, status },
  );
}

interface Claim {
  accountId: string;
  key: string;
  claimId: string;
  claimSeconds: number;
}

async function run(c: Context, next: () => Promise<void>, claim: Claim) {
  const sql = c.get("pg").sql;
  const where = claimWhere(claim);
  const log = c.get("log");
  const renewal = keepClaim(c.env, claim, log);
  try {
    await next();
  } catch (error) {
    await renewal.stop();
    await release(sql, claim).catch(() => {});
    throw error;
  }
  await renewal.stop();
  // Errors thrown by the route were turned into a response by Hono before we get here.
  const status = c.res.status;
  // A route that made (or found made) something with a secret says so whatever it answers: the key
  // is kept, so later retries learn what was made instead of making another.
  const secret = c.get("secretAnswer");
  if (secret || (status >= 200 && status < 300 && c.res.headers.get("content-type")?.includes("json"))) {
    const body = secret ? { withheld_secret: { id: secret.id } } : await c.res.clone().json();
    const kept = secret?.status ?? status;
    const stored = await sql.unsafe(`update idempotency_keys
                         set state = 'completed', response_status = ${Number(kept)},
                             response_body = ${literal(JSON.stringify(body))}::jsonb
                       where ${where} returning 1`);
    // Taken over (this request's renewals failed for a whole claim): the answer still goes out; the
    // key stays with the request that holds it.
    if (stored.length === 0) log.warn("idempotency.claim_lost", { key: claim.key });
  } else {
    await release(sql, claim);
  }
}

/**
 * Renew the claim every third of its length while the route runs, on a connection of its own
 * (the request's may be inside the route's transaction), opened only if a renewal is ever due.
 */
function keepClaim(env: Env, claim: Claim, log: Logger): { stop(): Promise<void> } {
  const every = (claim.claimSeconds * 1000) / 3;
  let opened: ReturnType<typeof openDb> | null = null;
  let stopped = false;
  let renewing: Promise<void> = Promise.resolve();
  const renew = async () => {
    opened ??= openDb(env);
    try {
      const held = await opened.sql.unsafe(`update idempotency_keys
           set locked_until = now() + make_interval(secs => ${Number(claim.claimSeconds)})
         where ${claimWhere(claim)} and state = 'in_progress' returning 1`);
      if (held.length === 0) log.warn("idempotency.claim_lost", { key: claim.key });
    } catch (error) {
      log.warn("idempotency.renew_failed", { key: claim.key, ...errorFields(error) });
    }
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const schedule = () => {
    timer = setTimeout(() => {
      renewing = renew().then(() => {
        if (!stopped) schedule();
      });
    }, every);
  };
  schedule();
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await renewing;
      await opened?.close().catch(() => {});
    },
  };
}

/** The claim's row, as a condition with its values inlined (one round trip, no describe). */
function claimWhere(claim: Claim): string {
  return `account_id = ${literal(claim.accountId)} and key = ${literal(claim.key)} and claim_id = ${literal(claim.claimId)}`;
}

function release(sql: RequestDb["sql"], claim: Claim) {
  return sql.unsafe(`delete from idempotency_keys where ${claimWhere(claim)}`);
}
