/**
 * For `npm start`: a development user (an `auth.users` row, as Supabase sign-up would make; the
 * database trigger gives it an account it owns), entitled to Fast and an operator, with an access
 * token from the local issuer and an API key made through the API itself.
 */
import postgres from "postgres";
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
}): Promise<DevSession> {
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
  const res = await fetch(`${opts.apiUrl}/v1/api-keys`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json", "scalar-account": accountId },
    body: JSON.stringify({
      name: `npm start ${new Date().toISOString()}`,
      scopes: ["jobs:read", "jobs:write", "endpoints:read", "endpoints:write", "billing:read", "admin"],
    }),
  });
  const body = (await res.json()) as { secret?: string; error?: { message: string } };
  if (!res.ok || !body.secret)
    throw new Error(`could not create an API key: ${res.status} ${body.error?.message ?? ""}`);
  return { userId: DEV_USER_ID, accountId, token, apiKey: body.secret };
}
