/**
 * What a caller may do: an API key carries scopes; a user's role in the account implies them. A key
 * never holds more than its creator's role allows today (checked on every request).
 */
import { ACCOUNT_ROLES, API_KEY_SCOPES } from "../db/schema";

export type Scope = (typeof API_KEY_SCOPES)[number];
export type AccountRole = (typeof ACCOUNT_ROLES)[number];
export const SCOPES = API_KEY_SCOPES;
export const ROLES = ACCOUNT_ROLES;

export const ROLE_SCOPES: Record<AccountRole, readonly Scope[]> = {
  owner: SCOPES,
  admin: SCOPES,
  member: ["jobs:read", "jobs:write", "endpoints:read", "endpoints:write", "endpoints:invoke"],
  viewer: ["jobs:read", "endpoints:read"],
};

export function isRole(value: unknown): value is AccountRole {
  return typeof value === "string" && (ROLES as readonly string[]).includes(value);
}

/** Scopes a key may use now: its own, limited by its creator's current role (if it had a creator). */
export function effectiveKeyScopes(keyScopes: readonly string[], creatorRole: AccountRole | null): Scope[] {
  const own = SCOPES.filter((s) => keyScopes.includes(s));
  if (!creatorRole) return own;
  const allowed = ROLE_SCOPES[creatorRole];
  return own.filter((s) => allowed.includes(s));
}
