/**
 * Helpers for the workerd tests of the API: sign-up (an `auth.users` row; the trigger creates the
 * user's account), Supabase-shaped tokens from the run's token issuer, API keys made through the API,
 * account settings, and direct SQL for what only other parts write (runs, usage, logs).
 */
import { env, SELF } from "cloudflare:test";
import { inject } from "vitest";
import { type AccessTokenClaims, mintAccessToken } from "../../tools/token-issuer/issuer";
import type {} from "../../tools/token-issuer/provided-context";
import { openDb } from "../db/client";

export const BASE = "http://scalar.test";

export function supabaseUrl(): string {
  return inject("supabaseUrl");
}

export function mint(claims: AccessTokenClaims): Promise<string> {
  return mintAccessToken(inject("issuerKeys"), supabaseUrl(), claims);
}

/** Run SQL against the test database (the one the Worker's Hyperdrive binding points at). */
export async function sql<T extends Record<string, unknown>>(text: string, params: unknown[] = []): Promise<T[]> {
  const { sql: client, close } = openDb(env);
  try {
    return (await client.unsafe(text, params as never[])) as unknown as T[];
  } finally {
    await close().catch(() => {});
  }
}

export interface TestUser {
  userId: string;
  email: string;
  accountId: string;
  token: string;
}

/** A new Supabase user with their own account (owner), and a valid access token. */
export async function signUp(
  settings: Partial<{
    fast_tier_enabled: boolean;
    is_operator: boolean;
    max_concurrent_gpus: number;
    monthly_spend_cap_cents: number | null;
  }> = {},
): Promise<TestUser> {
  const userId = crypto.randomUUID();
  const email = `${userId.slice(0, 8)}@example.test`;
  await sql("insert into auth.users (id, email, aud, role) values ($1, $2, 'authenticated', 'authenticated')", [
    userId,
    email,
  ]);
  const [m] = await sql<{ account_id: string }>("select account_id from memberships where user_id = $1", [userId]);
  const accountId = m!.account_id;
  for (const [column, value] of Object.entries(settings)) {
    await sql(`update accounts set ${column} = $2 where id = $1`, [accountId, value]);
  }
  return { userId, email, accountId, token: await mint({ sub: userId, email }) };
}

/** Another user added to `accountId` with `role`. */
export async function addMember(accountId: string, role: string): Promise<TestUser> {
  const user = await signUp();
  await sql("insert into memberships (account_id, user_id, role) values ($1, $2, $3)", [accountId, user.userId, role]);
  return { ...user, accountId };
}

export async function rateLimitOverride(
  accountId: string,
  accountLimit: number,
  keyLimit: number,
  windowS: number,
  invokeLimit: number | null = null,
) {
  await sql(
    `insert into rate_limit_overrides (account_id, account_limit, key_limit, window_s, invoke_limit)
     values ($1, $2, $3, $4, $5)
     on conflict (account_id) do update set account_limit = $2, key_limit = $3, window_s = $4, invoke_limit = $5`,
    [accountId, accountLimit, keyLimit, windowS, invokeLimit],
  );
}

export interface CallOptions {
  body?: unknown;
  /** Sent as is (not JSON-encoded). */
  raw?: string;
  headers?: Record<string, string>;
  account?: string;
}

export async function call(method: string, path: string, credential: string | null, opts: CallOptions = {}) {
  const headers: Record<string, string> = { ...opts.headers };
  if (credential) headers.authorization = `Bearer ${credential}`;
  if (opts.account) headers["scalar-account"] = opts.account;
  let body: string | undefined;
  if (opts.raw !== undefined) body = opts.raw;
  else if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers["content-type"] ??= "application/json";
  }
  const res = await SELF.fetch(`${BASE}${path}`, { method, headers, body });
  const text = await res.text();
  // biome-ignore lint/suspicious/noExplicitAny: tests read response bodies loosely
  let json: any = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  return { status: res.status, headers: res.headers, json, text };
}

export async function createKey(token: string, scopes: string[], opts: { account?: string; name?: string } = {}) {
  const res = await call("POST", "/v1/api-keys", token, {
    body: { name: opts.name ?? "test key", scopes },
    account: opts.account,
  });
  if (res.status !== 201) throw new Error(`key creation failed: ${res.status} ${res.text}`);
  return res.json as { id: string; secret: string; prefix: string };
}

export const JOB = { image: "127.0.0.1:5000/test/busybox:1", command: ["sh", "-c", "echo hi"], gpu_count: 1 };

/**
 * As if the request holding `key` died after its commit, before its answer was kept: the key stays
 * claimed, by nobody alive, and its claim has run out (the next retry takes it over).
 */
export function orphanIdempotencyKey(accountId: string, key: string) {
  return sql(
    `update idempotency_keys set state = 'in_progress', response_status = null, response_body = null,
            locked_until = now() - interval '1 second'
      where account_id = $1 and key = $2`,
    [accountId, key],
  );
}
