/**
 * A stand-in for Supabase Auth's signing side: an ES256 key pair with a `kid`, its public JWKS, and
 * access tokens shaped like Supabase's (platform-facts c.2). Pure `jose`, so it runs in Node (the
 * JWKS server, `npm start`) and inside workerd (tests that mint their own tokens from the private JWK).
 */
import { exportJWK, generateKeyPair, importJWK, type JWK, SignJWT } from "jose";

export interface IssuerKeys {
  kid: string;
  /** Private JWK (with `d`): tests mint with it; never leaves the machine. */
  privateJwk: JWK;
  publicJwk: JWK;
}

export interface AccessTokenClaims {
  /** The user's id (`auth.users.id`). */
  sub: string;
  email?: string;
  /** Supabase's Postgres role: `authenticated`, `anon` or `service_role`. */
  role?: string;
  aud?: string;
  iss?: string;
  is_anonymous?: boolean;
  session_id?: string;
  app_metadata?: Record<string, unknown>;
  user_metadata?: Record<string, unknown>;
  /** Seconds from now until `exp`; negative mints an expired token. Default 3600 (Supabase's jwt_expiry). */
  expires_in_s?: number;
  /** Seconds added to `iat` (and `exp`), for clock tests. */
  iat_offset_s?: number;
}

export async function generateIssuerKeys(kid = `scalar-dev-${crypto.randomUUID().slice(0, 8)}`): Promise<IssuerKeys> {
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  const base = { kid, alg: "ES256", use: "sig" };
  return {
    kid,
    privateJwk: { ...(await exportJWK(privateKey)), ...base },
    publicJwk: { ...(await exportJWK(publicKey)), ...base },
  };
}

/** `${supabaseUrl}/auth/v1`: the `iss` of the project's tokens. */
export function issuerOf(supabaseUrl: string): string {
  return `${supabaseUrl.replace(/\/+$/, "")}/auth/v1`;
}

export function jwksPath(): string {
  return "/auth/v1/.well-known/jwks.json";
}

/** An access token as Supabase Auth issues it for a signed-in user. */
export async function mintAccessToken(
  keys: Pick<IssuerKeys, "kid" | "privateJwk">,
  supabaseUrl: string,
  claims: AccessTokenClaims,
): Promise<string> {
  const key = await importJWK(keys.privateJwk, "ES256");
  const now = Math.floor(Date.now() / 1000) + (claims.iat_offset_s ?? 0);
  const {
    sub,
    expires_in_s = 3600,
    iat_offset_s: _offset,
    iss = issuerOf(supabaseUrl),
    aud = "authenticated",
    role = "authenticated",
    ...rest
  } = claims;
  return new SignJWT({
    email: `${sub.slice(0, 8)}@example.test`,
    phone: "",
    app_metadata: { provider: "email", providers: ["email"] },
    user_metadata: {},
    aal: "aal1",
    amr: [{ method: "password", timestamp: now }],
    session_id: crypto.randomUUID(),
    is_anonymous: false,
    ...rest,
    role,
  })
    .setProtectedHeader({ alg: "ES256", kid: keys.kid, typ: "JWT" })
    .setSubject(sub)
    .setIssuer(iss)
    .setAudience(aud)
    .setIssuedAt(now)
    .setExpirationTime(now + expires_in_s)
    .sign(key);
}
