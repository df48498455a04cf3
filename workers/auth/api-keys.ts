/**
 * API keys: `sk_<env>_<8-char id>_<40-char secret>`. The first 16 characters (`sk_live_ab12cd34`) are
 * the visible prefix that identifies a key in lists; the database keeps only a SHA-256 of the whole
 * key, found by that hash (a unique index), so the secret is never stored or compared in the clear.
 */
import { randomBase62, sha256Hex } from "./secrets";

const KEY_PATTERN = /^sk_(live|test)_[a-z0-9]{8}_[A-Za-z0-9]{40}$/;
export const API_KEY_PREFIX_LENGTH = 16;

export interface NewApiKey {
  secret: string;
  prefix: string;
  hash: string;
}

export async function generateApiKey(environment: string): Promise<NewApiKey> {
  const env = environment === "production" ? "live" : "test";
  const id = randomBase62(8).toLowerCase();
  const secret = `sk_${env}_${id}_${randomBase62(40)}`;
  return { secret, prefix: secret.slice(0, API_KEY_PREFIX_LENGTH), hash: await sha256Hex(secret) };
}

export function looksLikeApiKey(credential: string): boolean {
  return credential.startsWith("sk_");
}

/** The hash to look the key up by, or null when the string cannot be a key of ours. */
export async function apiKeyHash(credential: string): Promise<string | null> {
  return KEY_PATTERN.test(credential) ? sha256Hex(credential) : null;
}
