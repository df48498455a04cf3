/**
 * Who is calling and on behalf of which account: a Supabase user (role from `memberships`) or an API
 * key (scopes, capped by its creator's current role). Every resource route works inside
 * `caller.account`; nothing reads or changes another account's rows.
 */
import type { Sql } from "../db/client";
import { literal } from "../db/round-trips";
import { ApiError } from "../http/errors";
import { apiKeyHash, looksLikeApiKey } from "./api-keys";
import { RecentAnswers } from "./recent-answers";
import { type AccountRole, effectiveKeyScopes, isRole, ROLE_SCOPES, type Scope } from "./scopes";
import { type TokenSettings, verifyAccessToken } from "./supabase-token";

export interface RateLimitOverride {
  accountLimit: number;
  keyLimit: number;
  windowS: number;
  /** Endpoint invoke requests per window; null: the tier's invoke rate, scaled to the window. */
  invokeLimit: number | null;
}

export interface AccountContext {
  id: string;
  name: string;
  fastTierEnabled: boolean;
  maxConcurrentGpus: number;
  monthlySpendCapCents: number | null;
  isOperator: boolean;
  rateLimitOverride: RateLimitOverride | null;
}

export interface Membership {
  accountId: string;
  name: string;
  role: AccountRole;
}

export interface Caller {
  kind: "user" | "api_key";
  /** The user, or the user who created the key (null for keys whose creator is gone). */
  userId: string | null;
  email: string | null;
  apiKey: { id: string; prefix: string } | null;
  /** Null only for a user in several accounts who named none (`Scalar-Account`), or in none. */
  account: AccountContext | null;
  /** The user's role; for a key, its creator's role. */
  role: AccountRole | null;
  scopes: Scope[];
  memberships: Membership[];
}

export const ACCOUNT_HEADER = "scalar-account";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

interface AccountRow {
  account_id: string;
  name: string;
  fast_tier_enabled: boolean;
  max_concurrent_gpus: number;
  monthly_spend_cap_cents: string | number | null;
  is_operator: boolean;
  account_limit: number | null;
  key_limit: number | null;
  window_s: number | null;
  invoke_limit: number | null;
}

function accountContext(row: AccountRow): AccountContext {
  return {
    id: row.account_id,
    name: row.name,
    fastTierEnabled: row.fast_tier_enabled,
    maxConcurrentGpus: row.max_concurrent_gpus,
    monthlySpendCapCents: row.monthly_spend_cap_cents === null ? null : Number(row.monthly_spend_cap_cents),
    isOperator: row.is_operator,
    rateLimitOverride:
      row.account_limit !== null && row.key_limit !== null && row.window_s !== null
        ? {
            accountLimit: row.account_limit,
            keyLimit: row.key_limit,
            windowS: row.window_s,
            invokeLimit: row.invoke_limit,
          }
        : null,
  };
}

const ACCOUNT_COLUMNS = `a.id as account_id, a.name, a.fast_tier_enabled, a.max_concurrent_gpus,
  a.monthly_spend_cap_cents, a.is_operator, o.account_limit, o.key_limit, o.window_s, o.invoke_limit`;

function unauthenticated(code: string, message: string): ApiError {
  return new ApiError(401, code, message, undefined, { "www-authenticate": 'Bearer realm="scalar"' });
}

/** The bearer credential of `Authorization: Bearer <token or key>`. */
export function bearer(header: string | undefined): string {
  if (!header) throw unauthenticated("unauthenticated", "send Authorization: Bearer <access token or API key>");
  const match = /^Bearer[ ]+(\S{1,4096})\s*$/i.exec(header);
  if (!match?.[1]) throw unauthenticated("unauthenticated", "Authorization must be: Bearer <access token or API key>");
  return match[1];
}

export async function resolveCaller(
  sql: Sql,
  credential: string,
  tokens: TokenSettings,
  accountHeader: string | undefined,
): Promise<Caller> {
  if (looksLikeApiKey(credential)) return apiKeyCaller(sql, credential);
  if (credential.startsWith("snt_")) {
    throw unauthenticated("invalid_credentials", "node tokens are accepted only by the /v1/agent routes");
  }
  if (credential.split(".").length !== 3) throw unauthenticated("invalid_token", "not an access token or API key");
  const user = await verifyAccessToken(credential, tokens);
  // The user id (the verified token's subject) inlined as a literal, as the API key's hash is below:
  // a statement with a parameter takes a describe round trip more on the request's new connection.
  const rows = await sql.unsafe<(AccountRow & { role: string })[]>(
    `select ${ACCOUNT_COLUMNS}, m.role
       from memberships m
       join accounts a on a.id = m.account_id
       left join rate_limit_overrides o on o.account_id = a.id
      where m.user_id = ${literal(user.userId)}::uuid
      order by m.created_at, a.id`,
  );
  const memberships: Membership[] = rows
    .filter((r) => isRole(r.role))
    .map((r) => ({ accountId: r.account_id, name: r.name, role: r.role as AccountRole }));
  let chosen: (AccountRow & { role: string }) | undefined;
  if (accountHeader !== undefined) {
    const wanted = accountHeader.trim().toLowerCase();
    if (!UUID.test(wanted)) {
      throw new ApiError(400, "invalid_request", "Scalar-Account must be an account id", {
        location: "header",
        fields: [{ field: "Scalar-Account", message: "an account id (a UUID)", code: "invalid_format" }],
      });
    }
    chosen = rows.find((r) => r.account_id === wanted);
    if (!chosen) throw new ApiError(403, "not_a_member", "you are not a member of that account");
  } else if (rows.length === 1) {
    chosen = rows[0];
  }
  const role = chosen && isRole(chosen.role) ? chosen.role : null;
  return {
    kind: "user",
    userId: user.userId,
    email: user.email,
    apiKey: null,
    account: chosen ? accountContext(chosen) : null,
    role,
    scopes: role ? [...ROLE_SCOPES[role]] : [],
    memberships,
  };
}

/**
 * API keys resolved in this isolate within the last 10 s (recent-answers.ts), by the key's hash: a
 * client polling a job, or submitting one after another, is not looked up on every request. The
 * window: a key revoked in another isolate, or a change to its account or its creator's role made
 * there or in the database, reaches this isolate's requests up to 10 s later. Revoking through the
 * API forgets the key here at once.
 */
export const recentApiKeys = new RecentAnswers<Caller>();

async function apiKeyCaller(sql: Sql, credential: string): Promise<Caller> {
  const hash = await apiKeyHash(credential);
  if (!hash) throw unauthenticated("invalid_api_key", "API key is malformed");
  const now = Date.now();
  const recent = recentApiKeys.get(hash, now);
  if (recent) return recent;
  // Every authenticated request runs this lookup first, on a new connection, where a statement with
  // parameters costs two round trips (postgres.js describes it first) and one without costs one. The
  // hash is inlined as a literal.
  const [row] = await sql.unsafe<
    (AccountRow & {
      key_id: string;
      prefix: string;
      scopes: string[];
      created_by: string | null;
      creator_role: string | null;
      creator_email: string | null;
      revoked: boolean;
      expired: boolean;
      expires_ms: number | null;
      last_use_stale: boolean;
    })[]
  >(
    `select ${ACCOUNT_COLUMNS}, k.id as key_id, k.prefix, to_jsonb(k.scopes) as scopes, k.created_by, m.role as creator_role,
            u.email as creator_email, k.revoked_at is not null as revoked,
            (k.expires_at is not null and k.expires_at <= now()) as expired,
            (extract(epoch from k.expires_at) * 1000)::float8 as expires_ms,
            (k.last_used_at is null or k.last_used_at < now() - interval '1 minute') as last_use_stale
       from api_keys k
       join accounts a on a.id = k.account_id
       left join memberships m on m.account_id = k.account_id and m.user_id = k.created_by
       left join users u on u.id = k.created_by
       left join rate_limit_overrides o on o.account_id = a.id
      where k.secret_hash = ${literal(hash)}`,
  );
  if (!row) throw unauthenticated("invalid_api_key", "API key not recognised");
  if (row.revoked) throw unauthenticated("invalid_api_key", "API key has been revoked");
  if (row.expired) throw unauthenticated("invalid_api_key", "API key has expired");
  // Every key is made by a user (POST /v1/api-keys); no creator left means the user was deleted
  // (the foreign key sets it null), and such a key must not keep the scopes it was given.
  if (row.created_by === null) {
    throw unauthenticated("invalid_api_key", "the user who created this API key no longer exists");
  }
  if (!isRole(row.creator_role)) {
    throw unauthenticated("invalid_api_key", "the user who created this API key is no longer in its account");
  }
  // Coarse last-use time: at most one write a minute per key, and no round trip on the other requests.
  if (row.last_use_stale) {
    await sql`update api_keys set last_used_at = now()
               where id = ${row.key_id} and (last_used_at is null or last_used_at < now() - interval '1 minute')`;
  }
  const creatorRole = row.creator_role;
  const caller: Caller = {
    kind: "api_key",
    userId: row.created_by,
    email: row.creator_email,
    apiKey: { id: row.key_id, prefix: row.prefix },
    account: accountContext(row),
    role: creatorRole,
    scopes: effectiveKeyScopes(row.scopes, creatorRole),
    memberships: [],
  };
  // Shared by this isolate's requests for a while: frozen, so no request can change another's.
  for (const part of [caller.apiKey, caller.account, caller.scopes, caller.memberships]) Object.freeze(part);
  Object.freeze(caller);
  // Not past the key's own expiry.
  recentApiKeys.set(hash, caller, now, row.expires_ms ?? undefined);
  return caller;
}

/** The account a resource route works in; a user in several accounts must name one. */
export function requireAccount(caller: Caller): AccountContext {
  if (caller.account) return caller.account;
  if (caller.memberships.length === 0) throw new ApiError(403, "no_account", "you do not belong to any account");
  throw new ApiError(
    400,
    "account_required",
    "you belong to several accounts: name one with the Scalar-Account header",
    {
      header: "Scalar-Account",
      accounts: caller.memberships.map((m) => m.accountId),
    },
  );
}

export function requireScope(caller: Caller, scope: Scope): void {
  if (caller.scopes.includes(scope)) return;
  throw new ApiError(403, "missing_scope", `this requires the "${scope}" scope`, { required_scope: scope });
}

/** Operators: owners and admins of the operator account (or its keys with the `admin` scope). */
export function requireOperator(caller: Caller): AccountContext {
  const account = requireAccount(caller);
  requireScope(caller, "admin");
  if (!account.isOperator) throw new ApiError(403, "not_operator", "operator routes need the operator account");
  return account;
}

/** For audit rows. */
export function actorOf(caller: Caller): { actorType: "user" | "api_key"; actorId: string } {
  return caller.apiKey
    ? { actorType: "api_key", actorId: caller.apiKey.id }
    : { actorType: "user", actorId: caller.userId ?? "unknown" };
}
