/**
 * Supabase access tokens, verified with `jose` against the project's JWKS (ES256/RS256; fetched from
 * `<SUPABASE_URL>/auth/v1/.well-known/jwks.json` and cached per isolate for 10 minutes, as Supabase
 * advises). `iss` and `aud` are checked and `role` must be `authenticated`. The legacy shared HS256
 * secret is accepted only when AUTH_LEGACY_HS256 = "enabled" and the secret is set.
 */
import { createRemoteJWKSet, decodeProtectedHeader, errors, type JWTPayload, jwtVerify } from "jose";
import { ApiError } from "../http/errors";

export interface TokenEnv {
  SUPABASE_URL: string;
  /** Default `authenticated`. */
  SUPABASE_JWT_AUDIENCE?: string;
  /** "enabled" turns on the legacy HS256 path; anything else leaves it off. */
  AUTH_LEGACY_HS256?: string;
  SUPABASE_JWT_SECRET?: string;
}

export interface TokenSettings {
  issuer: string;
  audience: string;
  jwksUrl: string;
  legacySecret: string | null;
}

export function tokenSettings(env: TokenEnv): TokenSettings {
  const issuer = `${env.SUPABASE_URL.replace(/\/+$/, "")}/auth/v1`;
  const legacy = env.AUTH_LEGACY_HS256 === "enabled" && env.SUPABASE_JWT_SECRET ? env.SUPABASE_JWT_SECRET : null;
  return {
    issuer,
    audience: env.SUPABASE_JWT_AUDIENCE || "authenticated",
    jwksUrl: `${issuer}/.well-known/jwks.json`,
    legacySecret: legacy,
  };
}

export interface VerifiedUser {
  userId: string;
  email: string | null;
  sessionId: string | null;
  isAnonymous: boolean;
}

const ASYMMETRIC = ["ES256", "RS256"];
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

// One key set per JWKS URL per isolate: jose caches the keys and refetches at most every 30 s on an
// unknown `kid` (so a rotated key is picked up, and random kids cannot hammer the endpoint).
const keySets = new Map<string, ReturnType<typeof createRemoteJWKSet>>();
function keySet(url: string) {
  let set = keySets.get(url);
  if (!set) {
    set = createRemoteJWKSet(new URL(url), {
      cacheMaxAge: 10 * 60_000,
      cooldownDuration: 30_000,
      timeoutDuration: 5_000,
    });
    keySets.set(url, set);
  }
  return set;
}

function unauthorized(code: string, message: string): ApiError {
  return new ApiError(401, code, message, undefined, { "www-authenticate": `Bearer error="invalid_token"` });
}

export async function verifyAccessToken(token: string, settings: TokenSettings): Promise<VerifiedUser> {
  let alg: unknown;
  try {
    alg = decodeProtectedHeader(token).alg;
  } catch {
    throw unauthorized("invalid_token", "access token is malformed");
  }
  let payload: JWTPayload;
  try {
    const options = { issuer: settings.issuer, audience: settings.audience, requiredClaims: ["exp", "iat", "sub"] };
    if (alg === "HS256" && settings.legacySecret) {
      const secret = new TextEncoder().encode(settings.legacySecret);
      ({ payload } = await jwtVerify(token, secret, { ...options, algorithms: ["HS256"] }));
    } else {
      ({ payload } = await jwtVerify(token, keySet(settings.jwksUrl), { ...options, algorithms: ASYMMETRIC }));
    }
  } catch (error) {
    throw tokenError(error);
  }
  if (payload.role !== "authenticated") {
    throw unauthorized("invalid_token", `token role must be "authenticated", not ${JSON.stringify(payload.role)}`);
  }
  if (typeof payload.sub !== "string" || !UUID.test(payload.sub)) {
    throw unauthorized("invalid_token", "token subject is not a user id");
  }
  return {
    userId: payload.sub.toLowerCase(),
    email: typeof payload.email === "string" && payload.email ? payload.email : null,
    sessionId: typeof payload.session_id === "string" ? payload.session_id : null,
    isAnonymous: payload.is_anonymous === true,
  };
}

function tokenError(error: unknown): ApiError {
  if (error instanceof errors.JWTExpired) return unauthorized("token_expired", "access token expired; sign in again");
  if (error instanceof errors.JWTClaimValidationFailed) {
    return unauthorized("invalid_token", `token claim "${error.claim}" is not valid here`);
  }
  if (error instanceof errors.JOSEAlgNotAllowed)
    return unauthorized("invalid_token", "token signing algorithm not accepted");
  if (error instanceof errors.JWKSNoMatchingKey) return unauthorized("invalid_token", "token signed by an unknown key");
  if (error instanceof errors.JWSSignatureVerificationFailed)
    return unauthorized("invalid_token", "token signature invalid");
  // The key set could not be had (network, timeout, not a 200, not JSON): our problem, not the token's.
  const keySetFailed =
    !(error instanceof errors.JOSEError) ||
    error instanceof errors.JWKSTimeout ||
    error instanceof errors.JWKSInvalid ||
    /JSON Web Key Set/.test(error.message);
  if (keySetFailed) {
    return new ApiError(
      503,
      "auth_unavailable",
      "cannot reach the identity provider's keys; retry shortly",
      undefined,
      {
        "Retry-After": "5",
      },
    );
  }
  return unauthorized("invalid_token", "access token is malformed or invalid");
}
