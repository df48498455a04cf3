/**
 * Secret environment values, sealed at rest. A job's or an endpoint's `env` entry with `secret: true`
 * is stored in Postgres as `{ name, secret: true, sealed }`, never with its value: `sealed` is
 * AES-256-GCM (WebCrypto) under the deployment's key, `v1.<key id>.<iv>.<ciphertext>` (base64url),
 * with the account id and the variable's name as associated data, so a sealed value copied into
 * another account's row or under another name does not open. It is opened only to hand the workload
 * to its region's scheduler, which passes it to the node that runs the container.
 *
 * Keys: `ENV_SECRETS_KEYS`, a Worker secret, `id:base64key[,id:base64key…]` (32-byte keys). The first
 * seals; all open, so a key is rotated by putting a new one first and keeping the old until nothing
 * sealed with it is live. Entries stored before sealing existed (`value` with `secret: true`) still
 * open as they are.
 */
import { base64url } from "jose";
import { ApiError } from "../http/errors";

declare global {
  namespace Cloudflare {
    interface Env {
      /** A Worker secret (not in wrangler.toml): the keys that seal secret environment values. */
      ENV_SECRETS_KEYS?: string;
    }
  }
}

export interface EnvEntry {
  name: string;
  value: string;
  secret: boolean;
}

/** As stored in `jobs.env` / `endpoints.env`. */
export type StoredEnvEntry =
  | { name: string; secret: false; value: string }
  | { name: string; secret: true; sealed: string }
  /** Stored before secrets were sealed. */
  | { name: string; secret: true; value: string };

export interface Keyring {
  sealWith: { id: string; key: CryptoKey };
  byId: Map<string, CryptoKey>;
}

const FORMAT = "v1";
const KEY_ID = /^[A-Za-z0-9_-]{1,32}$/;
const IV_BYTES = 12;

export class SecretKeyError extends Error {}

/** base64url, or standard base64 (what `openssl rand -base64 32` prints), to bytes. */
const fromBase64 = (text: string) =>
  base64url.decode(text.replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "")) as Uint8Array<ArrayBuffer>;

/** A fresh key entry for `ENV_SECRETS_KEYS` (the local stack makes one per state folder). */
export function newKeyEntry(id: string): string {
  if (!KEY_ID.test(id)) throw new SecretKeyError(`key id must match ${KEY_ID}`);
  return `${id}:${base64url.encode(crypto.getRandomValues(new Uint8Array(32)))}`;
}

const cache = new Map<string, Promise<Keyring>>();

/** The keyring of `ENV_SECRETS_KEYS`; null when it is not set. Throws SecretKeyError when malformed. */
export function keyringOf(env: { ENV_SECRETS_KEYS?: string }): Promise<Keyring> | null {
  const value = env.ENV_SECRETS_KEYS?.trim();
  if (!value) return null;
  let ring = cache.get(value);
  if (!ring) {
    ring = parseKeyring(value);
    ring.catch(() => cache.delete(value));
    cache.set(value, ring);
  }
  return ring;
}

async function parseKeyring(value: string): Promise<Keyring> {
  const byId = new Map<string, CryptoKey>();
  let first: { id: string; key: CryptoKey } | null = null;
  for (const part of value.split(",")) {
    const [id, encoded, ...rest] = part.trim().split(":");
    if (!id || !encoded || rest.length > 0 || !KEY_ID.test(id)) {
      throw new SecretKeyError("ENV_SECRETS_KEYS must be id:base64key[,id:base64key…]");
    }
    let raw: Uint8Array<ArrayBuffer>;
    try {
      raw = fromBase64(encoded);
    } catch {
      throw new SecretKeyError(`ENV_SECRETS_KEYS: key ${id} is not base64`);
    }
    if (raw.length !== 32) throw new SecretKeyError(`ENV_SECRETS_KEYS: key ${id} must be 32 bytes`);
    if (byId.has(id)) throw new SecretKeyError(`ENV_SECRETS_KEYS: key id ${id} appears twice`);
    const key = await crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
    byId.set(id, key);
    first ??= { id, key };
  }
  if (!first) throw new SecretKeyError("ENV_SECRETS_KEYS has no key");
  return { sealWith: first, byId };
}

const associated = (accountId: string, name: string) => new TextEncoder().encode(`scalar-env\n${accountId}\n${name}`);

export async function seal(ring: Keyring, accountId: string, name: string, value: string): Promise<string> {
  const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
  const sealed = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv, additionalData: associated(accountId, name) },
    ring.sealWith.key,
    new TextEncoder().encode(value),
  );
  return `${FORMAT}.${ring.sealWith.id}.${base64url.encode(iv)}.${base64url.encode(new Uint8Array(sealed))}`;
}

export async function open(ring: Keyring, accountId: string, name: string, sealed: string): Promise<string> {
  const [format, id, iv, data, ...rest] = sealed.split(".");
  if (format !== FORMAT || !id || !iv || !data || rest.length > 0) {
    throw new SecretKeyError(`the secret ${name} is not in a sealed form this version knows`);
  }
  const key = ring.byId.get(id);
  if (!key) throw new SecretKeyError(`the secret ${name} was sealed with key ${id}, which ENV_SECRETS_KEYS lacks`);
  try {
    const plain = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: fromBase64(iv), additionalData: associated(accountId, name) },
      key,
      fromBase64(data),
    );
    return new TextDecoder().decode(plain);
  } catch {
    throw new SecretKeyError(`the secret ${name} does not open with key ${id} (altered, or moved from another row)`);
  }
}

/**
 * An env list as the API took it → as it is stored: secret values sealed. With secrets and no key
 * configured the request is refused (503): a secret is never stored in the clear.
 */
export async function sealEnv(
  env: { ENV_SECRETS_KEYS?: string },
  accountId: string,
  entries: EnvEntry[],
): Promise<StoredEnvEntry[]> {
  if (!entries.some((e) => e.secret)) return entries.map((e) => ({ name: e.name, secret: false, value: e.value }));
  let ring: Keyring | null;
  try {
    ring = await keyringOf(env);
  } catch (error) {
    throw secretsUnavailable(error instanceof Error ? error.message : String(error));
  }
  if (!ring) throw secretsUnavailable("ENV_SECRETS_KEYS is not set");
  const keyring = ring;
  return Promise.all(
    entries.map(async (e) =>
      e.secret
        ? { name: e.name, secret: true as const, sealed: await seal(keyring, accountId, e.name, e.value) }
        : { name: e.name, secret: false as const, value: e.value },
    ),
  );
}

function secretsUnavailable(why: string, what = "secret environment values"): ApiError {
  return new ApiError(
    503,
    "secrets_unavailable",
    `this deployment cannot store ${what} now (${why}); nothing was stored`,
  );
}

/**
 * One secret of an account sealed under `name` (the associated data: a sealed value does not open
 * under another account or name). Refused (503) when no key is configured: never stored in the clear.
 */
export async function sealSecret(
  env: { ENV_SECRETS_KEYS?: string },
  accountId: string,
  name: string,
  value: string,
  what: string,
): Promise<string> {
  let ring: Keyring | null;
  try {
    ring = await keyringOf(env);
  } catch (error) {
    throw secretsUnavailable(error instanceof Error ? error.message : String(error), what);
  }
  if (!ring) throw secretsUnavailable("ENV_SECRETS_KEYS is not set", what);
  return seal(ring, accountId, name, value);
}

/** Opens what `sealSecret` sealed under the same account and name. Throws SecretKeyError. */
export async function openSecret(
  env: { ENV_SECRETS_KEYS?: string },
  accountId: string,
  name: string,
  sealed: string,
): Promise<string> {
  const ring = await keyringOf(env);
  if (!ring) throw new SecretKeyError(`ENV_SECRETS_KEYS is not set, and ${name} is sealed`);
  return open(ring, accountId, name, sealed);
}

/** A stored env list → the names and values the container gets. Throws SecretKeyError. */
export async function openEnv(
  env: { ENV_SECRETS_KEYS?: string },
  accountId: string,
  stored: unknown,
): Promise<{ name: string; value: string }[]> {
  const entries = (Array.isArray(stored) ? stored : []) as StoredEnvEntry[];
  if (!entries.some((e) => "sealed" in e)) return entries.map((e) => ({ name: e.name, value: plainValue(e) }));
  const ring = await keyringOf(env);
  if (!ring) throw new SecretKeyError("ENV_SECRETS_KEYS is not set, and the workload has sealed secrets");
  return Promise.all(
    entries.map(async (e) => ({
      name: e.name,
      value: "sealed" in e ? await open(ring, accountId, e.name, e.sealed) : plainValue(e),
    })),
  );
}

const plainValue = (e: StoredEnvEntry): string => ("value" in e ? e.value : "");
