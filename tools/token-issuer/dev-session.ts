/**
 * For `npm start`: a development user (an `auth.users` row, as Supabase sign-up would make; the
 * database trigger gives it an account it owns), entitled to Fast and an operator, with an access
 * token from the local issuer and an API key made through the API itself.
 */
import postgres from "postgres";
import { API_KEY_SCOPES } from "../../workers/db/schema/core";
import { mintAccessToken } from "./issuer";
import type { TokenIssuerServer } from "./server";

export const DEV_USER_ID = "00000000-0000-4000-8000-00000000de01";
export const DEV_USER_EMAIL = "dev@scalar.local";

export interface DevSession {
  userId: string;
  accountId: string;
  token: string;
  apiKey: string;
}

export async function createDevSession(opts: {
  apiUrl: string;
  databaseUrl: string;
  issuer: TokenIssuerServer;
  /** Token lifetime; a working day, so the printed token outlives a coffee break. */
  tokenTtlS?: number;
  /**
   * Revoke the keys earlier `npm start` runs made (their credentials file now holds the new one).
   * Only for a database this run started: a running one may serve a stack that is still up.
   */
  revokeEarlierKeys?: boolean;
}): Promise<DevSession & { revokedKeys: number }> {
  const sql = postgres(opts.databaseUrl, { max: 1, onnotice: () => {} });
  let accountId: string;
  try {
    await sql`insert into auth.users (id, email, aud, role) values (${DEV_USER_ID}, ${DEV_USER_EMAIL}, 'authenticated', 'authenticated')
              on conflict (id) do nothing`;
    const [m] = await sql<{ account_id: string }[]>`
      select account_id from memberships where user_id = ${DEV_USER_ID} and role = 'owner' order by created_at limit 1`;
    if (!m) throw new Error("the development user has no account (did the migrations run?)");
    accountId = m.account_id;
    await sql`update accounts set fast_tier_enabled = true, is_operator = true, max_concurrent_gpus = 1024
               where id = ${accountId}`;
  } finally {
    await sql.end({ timeout: 2 });
  }
  const token = await mintAccessToken(opts.issuer.keys, opts.issuer.url, {
    sub: DEV_USER_ID,
    email: DEV_USER_EMAIL,
    expires_in_s: opts.tokenTtlS ?? 12 * 3600,
  });
  const headers = { authorization: `Bearer ${token}`, "content-type": "application/json", "scalar-account": accountId };
  const earlier = opts.revokeEarlierKeys ? await devKeyIds(opts.apiUrl, headers) : [];
  const res = await fetch(`${opts.apiUrl}/v1/api-keys`, {
    method: "POST",
    headers,
    body: JSON.stringify({
      name: `${KEY_NAME_PREFIX}${new Date().toISOString()}`,
      // Every scope there is: the developer's own key, and keys made with it may hold no more.
      scopes: API_KEY_SCOPES,
    }),
  });
  const body = (await res.json()) as { secret?: string; error?: { message: string } };
  if (!res.ok || !body.secret)
    throw new Error(`could not create an API key: ${res.status} ${body.error?.message ?? ""}`);
  for (const id of earlier) {
    const revoked = await fetch(`${opts.apiUrl}/v1/api-keys/${id}`, { method: "DELETE", headers });
    if (!revoked.ok) throw new Error(`could not revoke an earlier development key ${id}: ${revoked.status}`);
  }
  return { userId: DEV_USER_ID, accountId, token, apiKey: body.secret, revokedKeys: earlier.length };
}

const KEY_NAME_PREFIX = "npm start ";

/** The development account's active keys that earlier `npm start` runs made (by their name). */
async function devKeyIds(apiUrl: string, headers: Record<string, string>): Promise<string[]> {
  const ids: string[] = [];
  let cursor: string | null = null;
  do {
    const res = await fetch(`${apiUrl}/v1/api-keys?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`, {
      headers,
    });
    const page = (await res.json()) as { data?: { id: string; name: string }[]; next_cursor?: string | null };
    if (!res.ok || !page.data) throw new Error(`could not list the development keys: ${res.status}`);
    ids.push(...page.data.filter((k) => k.name.startsWith(KEY_NAME_PREFIX)).map((k) => k.id));
    cursor = page.next_cursor ?? null;
  } while (cursor);
  return ids;
}
