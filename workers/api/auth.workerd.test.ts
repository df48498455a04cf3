/**
 * Authentication end to end in workerd: Supabase tokens verified against the token issuer's JWKS
 * over HTTP (the production `createRemoteJWKSet` path), API keys, scopes and roles.
 */
import { generateKeyPair, SignJWT } from "jose";
import { describe, expect, inject, it } from "vitest";
import { recentApiKeys } from "../auth/caller";
import { type TokenSettings, tokenSettings, verifyAccessToken } from "../auth/supabase-token";
import { addMember, call, createKey, mint, signUp, sql, supabaseUrl } from "./test-support";

const b64url = (o: unknown) => btoa(JSON.stringify(o)).replaceAll("=", "").replaceAll("+", "-").replaceAll("/", "_");

async function signWithFreshKey(sub: string, kid: string): Promise<string> {
  const { privateKey } = await generateKeyPair("ES256");
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ role: "authenticated", email: "x@example.test", session_id: crypto.randomUUID() })
    .setProtectedHeader({ alg: "ES256", kid, typ: "JWT" })
    .setSubject(sub)
    .setIssuer(`${supabaseUrl()}/auth/v1`)
    .setAudience("authenticated")
    .setIssuedAt(now)
    .setExpirationTime(now + 3600)
    .sign(privateKey);
}

describe("Supabase access tokens", () => {
  it("accepts a valid token and answers /v1/me with the user's account and role", async () => {
    const user = await signUp();
    const res = await call("GET", "/v1/me", user.token);
    expect(res.status).toBe(200);
    expect(res.json.user).toEqual({ id: user.userId, email: user.email });
    expect(res.json.api_key).toBeNull();
    expect(res.json.account).toMatchObject({ id: user.accountId, role: "owner", fast_tier_enabled: false });
    expect(res.json.account.quotas).toMatchObject({ max_concurrent_gpus: 16, gpus_in_use: 0, month_to_date_cents: 0 });
    expect(res.json.accounts).toEqual([expect.objectContaining({ id: user.accountId, role: "owner" })]);
    expect(res.json.scopes).toContain("admin");
    expect(res.headers.get("ratelimit-limit")).toBe("300");
  });

  const negatives: [string, (sub: string) => Promise<string>, string][] = [
    ["expired", (sub) => mint({ sub, expires_in_s: -120 }), "token_expired"],
    [
      "signed with another key under the known kid",
      (sub) => signWithFreshKey(sub, inject("issuerKeys").kid),
      "invalid_token",
    ],
    ["signed with an unknown kid", (sub) => signWithFreshKey(sub, "kid-nobody-knows"), "invalid_token"],
    [
      "alg none",
      async (sub) => {
        const now = Math.floor(Date.now() / 1000);
        const payload = {
          sub,
          role: "authenticated",
          aud: "authenticated",
          iss: `${supabaseUrl()}/auth/v1`,
          iat: now,
          exp: now + 3600,
        };
        return `${b64url({ alg: "none", typ: "JWT" })}.${b64url(payload)}.`;
      },
      "invalid_token",
    ],
    [
      "HS256 while asymmetric keys are configured",
      async (sub) => {
        const now = Math.floor(Date.now() / 1000);
        return new SignJWT({ role: "authenticated" })
          .setProtectedHeader({ alg: "HS256", typ: "JWT", kid: inject("issuerKeys").kid })
          .setSubject(sub)
          .setIssuer(`${supabaseUrl()}/auth/v1`)
          .setAudience("authenticated")
          .setIssuedAt(now)
          .setExpirationTime(now + 3600)
          .sign(new TextEncoder().encode("super-secret-jwt-token-with-at-least-32-characters-long"));
      },
      "invalid_token",
    ],
    ["a wrong issuer", (sub) => mint({ sub, iss: "https://evil.supabase.co/auth/v1" }), "invalid_token"],
    ["a wrong audience", (sub) => mint({ sub, aud: "anon" }), "invalid_token"],
    ["role anon", (sub) => mint({ sub, role: "anon" }), "invalid_token"],
    ["role service_role", (sub) => mint({ sub, role: "service_role" }), "invalid_token"],
  ];

  it.each(negatives)("refuses a token %s with 401", async (_name, make, code) => {
    const user = await signUp();
    const res = await call("GET", "/v1/me", await make(user.userId));
    expect(res.status).toBe(401);
    expect(res.json.error).toMatchObject({ code, request_id: expect.any(String) });
    expect(res.json.error.message).toBeTruthy();
  });

  it("refuses a missing or malformed Authorization header", async () => {
    expect((await call("GET", "/v1/me", null)).json.error.code).toBe("unauthenticated");
    const basic = await call("GET", "/v1/me", null, { headers: { authorization: "Basic dXNlcjpwdw==" } });
    expect(basic.status).toBe(401);
    const junk = await call("GET", "/v1/me", "not-a-token");
    expect(junk.status).toBe(401);
    const headerOnly = (h: unknown) => `${b64url(h)}.${b64url({ sub: "x" })}.c2ln`;
    for (const bad of [
      "a.b.c",
      "eyJ.eyJ.sig",
      `${btoa("not json")}.${btoa("{}")}.sig`,
      headerOnly({ typ: "JWT" }),
      headerOnly({ alg: "ES256", kid: 42 }),
      headerOnly({ alg: "RS512", kid: "k" }),
      `${headerOnly({ alg: "ES256" })}.extra`,
    ]) {
      const res = await call("GET", "/v1/me", bad);
      expect(res.status, bad).toBe(401);
    }
    const node = await call("GET", "/v1/me", `snt_${"a".repeat(43)}`);
    expect(node.status).toBe(401);
    expect(node.json.error.code).toBe("invalid_credentials");
  });

  it("accepts the legacy HS256 secret only when explicitly enabled", async () => {
    const secret = "legacy-secret-with-at-least-32-characters!";
    const user = await signUp();
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({ role: "authenticated" })
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setSubject(user.userId)
      .setIssuer(`${supabaseUrl()}/auth/v1`)
      .setAudience("authenticated")
      .setIssuedAt(now)
      .setExpirationTime(now + 60)
      .sign(new TextEncoder().encode(secret));
    const base = { SUPABASE_URL: supabaseUrl(), SUPABASE_JWT_SECRET: secret };
    const off: TokenSettings = tokenSettings({ ...base, AUTH_LEGACY_HS256: "disabled" });
    expect(off.legacySecret).toBeNull();
    await expect(verifyAccessToken(token, off)).rejects.toMatchObject({ status: 401 });
    const on = tokenSettings({ ...base, AUTH_LEGACY_HS256: "enabled" });
    await expect(verifyAccessToken(token, on)).resolves.toMatchObject({ userId: user.userId });
    // Enabled, but a token signed with another secret still fails.
    const forged = await new SignJWT({ role: "authenticated" })
      .setProtectedHeader({ alg: "HS256" })
      .setSubject(user.userId)
      .setIssuer(`${supabaseUrl()}/auth/v1`)
      .setAudience("authenticated")
      .setIssuedAt(now)
      .setExpirationTime(now + 60)
      .sign(new TextEncoder().encode("another-secret-another-secret-another-secret"));
    await expect(verifyAccessToken(forged, on)).rejects.toMatchObject({ status: 401 });
  });
});

describe("identity provider outage", () => {
  it("answers 503 auth_unavailable, not 401, when the key set cannot be fetched", async () => {
    const user = await signUp();
    for (const url of ["http://127.0.0.1:1", `${supabaseUrl()}/not-supabase`]) {
      const settings = tokenSettings({ SUPABASE_URL: url });
      const token = await mint({ sub: user.userId, iss: settings.issuer });
      await expect(verifyAccessToken(token, settings)).rejects.toMatchObject({ status: 503, code: "auth_unavailable" });
    }
  });
});

describe("accounts and roles", () => {
  it("makes a user in several accounts name one with Scalar-Account, and only one of theirs", async () => {
    const owner = await signUp();
    const other = await signUp();
    const viewer = await addMember(owner.accountId, "viewer");
    // `viewer` now belongs to their own account and to owner's.
    const me = await call("GET", "/v1/me", viewer.token);
    expect(me.status).toBe(200);
    expect(me.json.account).toBeNull();
    expect(me.json.accounts).toHaveLength(2);
    const list = await call("GET", "/v1/jobs", viewer.token);
    expect(list.status).toBe(400);
    expect(list.json.error.code).toBe("account_required");
    const chosen = await call("GET", "/v1/me", viewer.token, { account: owner.accountId });
    expect(chosen.json.account).toMatchObject({ id: owner.accountId, role: "viewer" });
    expect(chosen.json.scopes).toEqual(["jobs:read", "endpoints:read"]);
    const foreign = await call("GET", "/v1/me", viewer.token, { account: other.accountId });
    expect(foreign.status).toBe(403);
    expect(foreign.json.error.code).toBe("not_a_member");
    // Not an account id at all: a validation error naming the header, as any bad field is.
    const malformed = await call("GET", "/v1/me", viewer.token, { account: "acme" });
    expect(malformed.status).toBe(400);
    expect(malformed.json.error).toMatchObject({
      code: "invalid_request",
      details: { location: "header", fields: [{ field: "Scalar-Account", code: "invalid_format" }] },
    });
  });

  it("gives a viewer read access and refuses writes with 403 missing_scope", async () => {
    const owner = await signUp();
    const viewer = await addMember(owner.accountId, "viewer");
    const read = await call("GET", "/v1/jobs", viewer.token, { account: owner.accountId });
    expect(read.status).toBe(200);
    const write = await call("POST", "/v1/jobs", viewer.token, {
      account: owner.accountId,
      body: { image: "busybox", gpu_count: 1 },
    });
    expect(write.status).toBe(403);
    expect(write.json.error).toMatchObject({ code: "missing_scope", details: { required_scope: "jobs:write" } });
  });
});

describe("API keys", () => {
  it("creates a key shown once, stores only its hash, and authenticates with it", async () => {
    const user = await signUp();
    const res = await call("POST", "/v1/api-keys", user.token, { body: { name: "ci", scopes: ["jobs:read"] } });
    expect(res.status).toBe(201);
    const key = res.json;
    expect(key.secret).toMatch(/^sk_test_[a-z0-9]{8}_[A-Za-z0-9]{40}$/);
    expect(key.prefix).toBe(key.secret.slice(0, 16));
    expect(key.last_used_at).toBeNull();
    const [row] = await sql<{ secret_hash: string }>("select secret_hash from api_keys where id = $1", [key.id]);
    expect(row!.secret_hash).toMatch(/^[0-9a-f]{64}$/);
    expect(JSON.stringify(row)).not.toContain(key.secret);

    const me = await call("GET", "/v1/me", key.secret);
    expect(me.status).toBe(200);
    expect(me.json).toMatchObject({ user: null, api_key: { id: key.id, prefix: key.prefix }, scopes: ["jobs:read"] });
    expect(me.json.account.id).toBe(user.accountId);

    const list = await call("GET", "/v1/api-keys", user.token);
    expect(list.json.data).toEqual([expect.objectContaining({ id: key.id, prefix: key.prefix })]);
    expect(list.json.data[0].secret).toBeUndefined();
    expect(list.json.data[0].last_used_at).not.toBeNull();
    const audit = await sql<{ action: string; actor_type: string; actor_id: string }>(
      "select action, actor_type, actor_id from audit_log where target_type = 'api_key' and target_id = $1",
      [key.id],
    );
    expect(audit).toEqual([{ action: "api_key.created", actor_type: "user", actor_id: user.userId }]);
  });

  it("refuses a revoked key, a malformed key and an unknown key with 401", async () => {
    const user = await signUp();
    const key = await createKey(user.token, ["jobs:read"]);
    expect((await call("GET", "/v1/jobs", key.secret)).status).toBe(200);
    const revoked = await call("DELETE", `/v1/api-keys/${key.id}`, user.token);
    expect(revoked.status).toBe(200);
    expect(revoked.json.revoked_at).not.toBeNull();
    const after = await call("GET", "/v1/jobs", key.secret);
    expect(after.status).toBe(401);
    expect(after.json.error).toMatchObject({ code: "invalid_api_key", message: "API key has been revoked" });

    for (const bad of ["sk_test_short", `${key.secret}x`, `sk_live_${"a".repeat(8)}_${"b".repeat(40)}`]) {
      const res = await call("GET", "/v1/jobs", bad);
      expect(res.status).toBe(401);
      expect(res.json.error.code).toBe("invalid_api_key");
    }
    const audit = await sql<{ action: string }>("select action from audit_log where target_id = $1 order by id", [
      key.id,
    ]);
    expect(audit.map((a) => a.action)).toEqual(["api_key.created", "api_key.revoked"]);
    // Revoking again changes nothing.
    expect((await call("DELETE", `/v1/api-keys/${key.id}`, user.token)).status).toBe(200);
    // Revoked by its id in upper case (a uuid all the same): refused at once here too, though this
    // instance had just resolved it.
    const other = await createKey(user.token, ["jobs:read"]);
    expect((await call("GET", "/v1/jobs", other.secret)).status).toBe(200);
    expect((await call("DELETE", `/v1/api-keys/${other.id.toUpperCase()}`, user.token)).status).toBe(200);
    expect((await call("GET", "/v1/jobs", other.secret)).status).toBe(401);
  });

  it("enforces scopes (403), never grants more than the creator holds, and follows the creator's role", async () => {
    const owner = await signUp();
    const readOnly = await createKey(owner.token, ["jobs:read"]);
    const write = await call("POST", "/v1/jobs", readOnly.secret, { body: { image: "busybox", gpu_count: 1 } });
    expect(write.status).toBe(403);
    expect(write.json.error).toMatchObject({ code: "missing_scope", details: { required_scope: "jobs:write" } });
    expect((await call("GET", "/v1/api-keys", readOnly.secret)).status).toBe(403);

    const member = await addMember(owner.accountId, "member");
    const tooMuch = await call("POST", "/v1/api-keys", member.token, {
      account: owner.accountId,
      body: { name: "x", scopes: ["jobs:write", "admin"] },
    });
    expect(tooMuch.status).toBe(403);
    expect(tooMuch.json.error.code).toBe("scope_not_allowed");
    const memberKey = await createKey(member.token, ["jobs:read", "jobs:write"], { account: owner.accountId });
    // The member only sees their own keys; the owner sees all.
    const mine = await call("GET", "/v1/api-keys", member.token, { account: owner.accountId });
    expect(mine.json.data.map((k: { id: string }) => k.id)).toEqual([memberKey.id]);
    const all = await call("GET", "/v1/api-keys", owner.token);
    expect(all.json.data).toHaveLength(2);
    // A member cannot revoke the owner's key (not visible to them: 404).
    expect(
      (await call("DELETE", `/v1/api-keys/${readOnly.id}`, member.token, { account: owner.accountId })).status,
    ).toBe(404);

    // Demoted to viewer: the key keeps only what a viewer may do.
    await sql("update memberships set role = 'viewer' where account_id = $1 and user_id = $2", [
      owner.accountId,
      member.userId,
    ]);
    const me = await call("GET", "/v1/me", memberKey.secret);
    expect(me.json.scopes).toEqual(["jobs:read"]);
    expect(
      (await call("POST", "/v1/jobs", memberKey.secret, { body: { image: "busybox", gpu_count: 1 } })).status,
    ).toBe(403);
    // Removed from the account: the key stops working. The change is made in the database, not
    // through the API, so an isolate that resolved the key within the last 10 s still accepts it
    // (workers/auth/caller.ts, `recentApiKeys`); once that window has passed, or in another
    // isolate, it is refused.
    await sql("delete from memberships where account_id = $1 and user_id = $2", [owner.accountId, member.userId]);
    expect((await call("GET", "/v1/me", memberKey.secret)).status).toBe(200);
    recentApiKeys.clear();
    expect((await call("GET", "/v1/me", memberKey.secret)).status).toBe(401);
  });

  it("refuses the keys of a user who was deleted, whatever scopes they carry", async () => {
    const owner = await signUp();
    const admin = await addMember(owner.accountId, "admin");
    const key = await createKey(admin.token, ["admin", "jobs:read"], { account: owner.accountId });
    expect((await call("GET", "/v1/api-keys", key.secret)).status).toBe(200);
    // Deleting the Supabase user removes public.users, which leaves the key without a creator.
    await sql("delete from auth.users where id = $1", [admin.userId]);
    const [row] = await sql<{ created_by: string | null }>("select created_by from api_keys where id = $1", [key.id]);
    expect(row!.created_by).toBeNull();
    recentApiKeys.clear();
    for (const path of ["/v1/me", "/v1/api-keys", "/v1/jobs"]) {
      const res = await call("GET", path, key.secret);
      expect(res.status, path).toBe(401);
      expect(res.json.error).toMatchObject({
        code: "invalid_api_key",
        message: "the user who created this API key no longer exists",
      });
    }
    // The owner's own keys are untouched.
    const ownerKey = await createKey(owner.token, ["jobs:read"]);
    expect((await call("GET", "/v1/jobs", ownerKey.secret)).status).toBe(200);
  });

  it("pages keys, hides revoked ones unless asked, and never shows or revokes another account's", async () => {
    const alice = await signUp();
    const bob = await signUp();
    const keys = [];
    for (const name of ["one", "two", "three"]) keys.push(await createKey(alice.token, ["jobs:read"], { name }));
    const first = await call("GET", "/v1/api-keys?limit=2", alice.token);
    expect(first.json.data.map((k: { name: string }) => k.name)).toEqual(["three", "two"]);
    const second = await call("GET", `/v1/api-keys?limit=2&cursor=${first.json.next_cursor}`, alice.token);
    expect(second.json.data.map((k: { name: string }) => k.name)).toEqual(["one"]);
    expect(second.json.next_cursor).toBeNull();
    await call("DELETE", `/v1/api-keys/${keys[0]!.id}`, alice.token);
    expect((await call("GET", "/v1/api-keys", alice.token)).json.data).toHaveLength(2);
    expect((await call("GET", "/v1/api-keys?include_revoked=true", alice.token)).json.data).toHaveLength(3);
    // By prefix: the one key, revoked or not when asked to include those.
    const byPrefix = await call("GET", `/v1/api-keys?prefix=${keys[1]!.prefix}`, alice.token);
    expect(byPrefix.json.data.map((k: { id: string }) => k.id)).toEqual([keys[1]!.id]);
    expect((await call("GET", `/v1/api-keys?prefix=${keys[0]!.prefix}`, alice.token)).json.data).toEqual([]);
    const revokedByPrefix = await call(
      "GET",
      `/v1/api-keys?prefix=${keys[0]!.prefix}&include_revoked=true`,
      alice.token,
    );
    expect(revokedByPrefix.json.data.map((k: { id: string }) => k.id)).toEqual([keys[0]!.id]);

    const bobAdmin = await createKey(bob.token, ["admin"]);
    for (const credential of [bob.token, bobAdmin.secret]) {
      const list = await call("GET", "/v1/api-keys?include_revoked=true", credential);
      expect(list.json.data.map((k: { id: string }) => k.id)).not.toContain(keys[1]!.id);
      // Another account's prefix finds nothing.
      const other = await call("GET", `/v1/api-keys?prefix=${keys[1]!.prefix}`, credential);
      expect(other.json.data).toEqual([]);
      const revoke = await call("DELETE", `/v1/api-keys/${keys[1]!.id}`, credential);
      expect(revoke.status).toBe(404);
      expect(revoke.text).not.toContain(keys[1]!.prefix);
    }
    expect((await call("GET", "/v1/me", keys[1]!.secret)).status).toBe(200);
  });

  it("validates the request (unknown scope, unknown field, past expiry) and honours expiry", async () => {
    const user = await signUp();
    const unknownScope = await call("POST", "/v1/api-keys", user.token, { body: { name: "x", scopes: ["root"] } });
    expect(unknownScope.status).toBe(400);
    expect(unknownScope.json.error.details.fields[0].field).toBe("scopes[0]");
    const extra = await call("POST", "/v1/api-keys", user.token, {
      body: { name: "x", scopes: ["admin"], owner: "me" },
    });
    expect(extra.status).toBe(400);
    expect(extra.json.error.details.fields).toEqual([
      expect.objectContaining({ field: "owner", code: "unknown_field" }),
    ]);
    const past = await call("POST", "/v1/api-keys", user.token, {
      body: { name: "x", scopes: ["admin"], expires_at: "2020-01-01T00:00:00Z" },
    });
    expect(past.status).toBe(400);
    const key = await createKey(user.token, ["jobs:read"]);
    await sql("update api_keys set expires_at = now() - interval '1 second' where id = $1", [key.id]);
    const expired = await call("GET", "/v1/jobs", key.secret);
    expect(expired.status).toBe(401);
    expect(expired.json.error.message).toBe("API key has expired");
  });

  it("stops accepting a key at its expiry, even one resolved a moment before (not 10 s later)", async () => {
    const user = await signUp();
    const key = await createKey(user.token, ["jobs:read"]);
    await sql("update api_keys set expires_at = now() + interval '1500 milliseconds' where id = $1", [key.id]);
    expect((await call("GET", "/v1/jobs", key.secret)).status).toBe(200);
    await new Promise((done) => setTimeout(done, 1_700));
    const after = await call("GET", "/v1/jobs", key.secret);
    expect(after.status).toBe(401);
    expect(after.json.error.message).toBe("API key has expired");
  });
});

describe("refused credentials per client address", () => {
  const from = (address: string) => ({ headers: { "cf-connecting-ip": address } });

  it("answers 429 after 30 refused credentials from one address, then refuses it without a lookup; other addresses and valid credentials are not counted", async () => {
    const user = await signUp();
    const key = await createKey(user.token, ["jobs:read"]);
    const unknown = `${key.secret.slice(0, -1)}${key.secret.endsWith("a") ? "b" : "a"}`;
    // Valid credentials take nothing from the address's tries.
    for (let i = 0; i < 35; i++)
      expect((await call("GET", "/v1/jobs", key.secret, from("203.0.113.7"))).status).toBe(200);
    // Without Cloudflare's address (a test, a service binding) nothing is counted.
    for (let i = 0; i < 35; i++) expect((await call("GET", "/v1/jobs", unknown)).status).toBe(401);

    for (let i = 0; i < 30; i++) {
      const res = await call("GET", "/v1/jobs", unknown, from("203.0.113.7"));
      expect(res.status).toBe(401);
      expect(res.json.error.code).toBe("invalid_api_key");
    }
    const refused = await call("GET", "/v1/jobs", unknown, from("203.0.113.7"));
    expect(refused.status).toBe(429);
    expect(refused.json.error).toMatchObject({
      code: "rate_limited",
      details: { scope: "client", limit: 30, window_s: 60 },
    });
    const retryAfter = Number(refused.headers.get("retry-after"));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(refused.json.error.details.retry_after_s).toBe(retryAfter);
    // The address is out of tries: even a valid key from it waits (refused before any lookup).
    const blocked = await call("GET", "/v1/jobs", key.secret, from("203.0.113.7"));
    expect(blocked.status).toBe(429);
    expect(blocked.json.error.details.scope).toBe("client");
    // Another address is not.
    expect((await call("GET", "/v1/jobs", key.secret, from("203.0.113.8"))).status).toBe(200);
    expect((await call("GET", "/v1/jobs", unknown, from("203.0.113.8"))).status).toBe(401);
  });

  it("counts tokens that fail verification too", async () => {
    const user = await signUp();
    const expired = await mint({ sub: user.userId, expires_in_s: -120 });
    for (let i = 0; i < 30; i++) {
      expect((await call("GET", "/v1/me", expired, from("2001:db8::1"))).json.error.code).toBe("token_expired");
    }
    expect((await call("GET", "/v1/me", expired, from("2001:db8::1"))).status).toBe(429);
    expect((await call("GET", "/v1/me", user.token, from("2001:db8::2"))).status).toBe(200);
  });
});
