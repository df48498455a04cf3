/** The token issuer against jose's own remote key-set verifier, as the Worker uses it. */
import { createRemoteJWKSet, decodeProtectedHeader, errors, jwtVerify } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { issuerOf, mintAccessToken } from "./issuer";
import { startTokenIssuer, type TokenIssuerServer } from "./server";

let issuer: TokenIssuerServer;
beforeAll(async () => {
  issuer = await startTokenIssuer();
});
afterAll(async () => {
  await issuer?.close();
});

const sub = "3f1c2b0e-8a4d-4a57-9d1e-2c5b7f0a9e11";

describe("token issuer", () => {
  it("serves its public key set at Supabase's path, without the private part", async () => {
    const res = await fetch(`${issuer.url}/auth/v1/.well-known/jwks.json`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { keys: Record<string, unknown>[] };
    expect(body.keys).toHaveLength(1);
    expect(body.keys[0]).toMatchObject({ kty: "EC", crv: "P-256", alg: "ES256", use: "sig", kid: issuer.keys.kid });
    expect(body.keys[0]!.d).toBeUndefined();
    expect((await fetch(`${issuer.url}/elsewhere`)).status).toBe(404);
  });

  it("mints tokens with Supabase's claims that verify against the served key set", async () => {
    const token = await mintAccessToken(issuer.keys, issuer.url, { sub, email: "a@example.test" });
    expect(decodeProtectedHeader(token)).toEqual({ alg: "ES256", kid: issuer.keys.kid, typ: "JWT" });
    const jwks = createRemoteJWKSet(new URL(`${issuerOf(issuer.url)}/.well-known/jwks.json`));
    const { payload } = await jwtVerify(token, jwks, {
      issuer: `${issuer.url}/auth/v1`,
      audience: "authenticated",
      algorithms: ["ES256", "RS256"],
    });
    expect(payload).toMatchObject({
      sub,
      email: "a@example.test",
      role: "authenticated",
      aal: "aal1",
      is_anonymous: false,
      app_metadata: { provider: "email", providers: ["email"] },
    });
    expect(typeof payload.session_id).toBe("string");
    expect(payload.exp! - payload.iat!).toBe(3600);
    const expired = await mintAccessToken(issuer.keys, issuer.url, { sub, expires_in_s: -10 });
    await expect(jwtVerify(expired, jwks)).rejects.toBeInstanceOf(errors.JWTExpired);
    expect(issuer.fetches()).toBeGreaterThanOrEqual(2);
  });
});
