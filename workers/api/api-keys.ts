/**
 * API keys of the account. The secret is returned once, at creation; only its hash is stored. A
 * user may create keys with at most their own role's scopes and manage the keys they created;
 * the `admin` scope manages every key of the account.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { and, desc, eq, isNull, type SQL } from "drizzle-orm";
import { generateApiKey } from "../auth/api-keys";
import { type Caller, recentApiKeys, requireAccount } from "../auth/caller";
import { SCOPES, type Scope as ScopeName } from "../auth/scopes";
import { apiKeys } from "../db/schema";
import { ApiError } from "../http/errors";
import { secretWithheld } from "../http/idempotency";
import { beforeCursor, cursorTime, decodeTimeCursor, encodeTimeCursor, page } from "../http/pagination";
import { audit } from "./audit";
import { BEARER, createRouter, errors, guard, respond } from "./router";
import { DateTimeInput, IdempotencyHeaders, IdParam, PageQuery, pageOf, Scope, Timestamp, Uuid } from "./schemas";
import { iso } from "./views";

export const ApiKey = z
  .object({
    id: Uuid,
    name: z.string(),
    prefix: z.string().openapi({ example: "sk_live_ab12cd34", description: "Identifies the key; not a secret." }),
    scopes: z.array(Scope),
    created_by: z.string().nullable(),
    created_at: Timestamp,
    last_used_at: Timestamp.nullable(),
    expires_at: Timestamp.nullable(),
    revoked_at: Timestamp.nullable(),
  })
  .openapi("ApiKey");

const CreatedApiKey = ApiKey.extend({
  secret: z.string().openapi({ description: "The key. Shown only in this response: store it now." }),
}).openapi("CreatedApiKey");

const ApiKeyCreate = z
  .strictObject({
    name: z.string().min(1).max(200).openapi({ example: "ci-deploy" }),
    scopes: z
      .array(Scope)
      .min(1)
      .max(SCOPES.length)
      .refine((s) => new Set(s).size === s.length, "scopes must not repeat")
      .openapi({ example: ["jobs:read", "jobs:write"] }),
    expires_at: DateTimeInput.optional().openapi({ description: "Optional expiry (future)." }),
  })
  .openapi("ApiKeyCreate");

const ApiKeyPage = pageOf(ApiKey, "ApiKeyPage");
type KeyRow = typeof apiKeys.$inferSelect;

function keyView(k: KeyRow) {
  return {
    id: k.id,
    name: k.name,
    prefix: k.prefix,
    scopes: k.scopes as ScopeName[],
    created_by: k.createdBy,
    created_at: k.createdAt.toISOString(),
    last_used_at: iso(k.lastUsedAt),
    expires_at: iso(k.expiresAt),
    revoked_at: iso(k.revokedAt),
  };
}

/** Keys a caller may see and revoke: all of the account's with `admin`, else the ones they created. */
function visibleTo(caller: Caller, accountId: string): SQL {
  const own = eq(apiKeys.accountId, accountId);
  if (caller.scopes.includes("admin")) return own;
  if (caller.kind === "user" && caller.userId) return and(own, eq(apiKeys.createdBy, caller.userId))!;
  throw new ApiError(403, "missing_scope", 'managing API keys with an API key requires the "admin" scope', {
    required_scope: "admin",
  });
}

export const apiKeysRouter = createRouter();

apiKeysRouter.openapi(
  createRoute({
    method: "post",
    path: "/v1/api-keys",
    tags: ["API keys"],
    summary: "Create an API key",
    description:
      "Returns the secret once. Scopes may not exceed the caller's own. Use the key as `Authorization: Bearer <key>`.",
    security: BEARER,
    middleware: guard(),
    request: {
      headers: IdempotencyHeaders,
      body: { required: true, content: { "application/json": { schema: ApiKeyCreate } } },
    },
    responses: {
      201: { description: "The new key, with its secret.", content: { "application/json": { schema: CreatedApiKey } } },
      ...errors(409, 413, 415, 422),
    },
  }),
  async (c) => {
    const caller = c.get("caller");
    const account = requireAccount(caller);
    visibleTo(caller, account.id);
    const body = c.req.valid("json");
    const beyond = body.scopes.filter((s) => !caller.scopes.includes(s));
    if (beyond.length > 0) {
      throw new ApiError(403, "scope_not_allowed", `you cannot grant scopes you do not hold: ${beyond.join(", ")}`, {
        fields: [{ field: "scopes", message: `not held: ${beyond.join(", ")}`, code: "scope_not_allowed" }],
      });
    }
    const expiresAt = body.expires_at ? new Date(body.expires_at) : null;
    if (expiresAt && expiresAt.getTime() <= Date.now()) {
      throw new ApiError(400, "invalid_request", "expires_at: must be in the future", {
        location: "body",
        fields: [{ field: "expires_at", message: "must be in the future", code: "too_small" }],
      });
    }
    const db = c.get("pg").db;
    // With an Idempotency-Key the key chose the id: a retry that took over the key of a request that
    // died after making the key learns what it made (its secret is gone), and makes no second key.
    const made = c.get("idempotentId");
    if (made) {
      const [earlier] = await db
        .select({ id: apiKeys.id })
        .from(apiKeys)
        .where(and(eq(apiKeys.id, made), eq(apiKeys.accountId, account.id)));
      if (earlier) {
        c.set("secretAnswer", { id: earlier.id, status: 201 });
        throw secretWithheld(earlier.id, 201);
      }
    }
    const key = await generateApiKey(c.env.ENVIRONMENT);
    const row = await db.transaction(async (tx) => {
      const [inserted] = await tx
        .insert(apiKeys)
        .values({
          ...(made ? { id: made } : {}),
          accountId: account.id,
          // A key made with a key belongs to the same person, and stays capped by their role.
          createdBy: caller.userId,
          name: body.name,
          prefix: key.prefix,
          secretHash: key.hash,
          scopes: body.scopes,
          expiresAt,
        })
        .returning();
      await audit(tx, caller, account.id, {
        action: "api_key.created",
        targetType: "api_key",
        targetId: inserted!.id,
        data: { name: body.name, prefix: key.prefix, scopes: body.scopes },
      });
      return inserted!;
    });
    c.set("secretAnswer", { id: row.id });
    return respond(c, CreatedApiKey, { ...keyView(row), secret: key.secret }, 201);
  },
);

apiKeysRouter.openapi(
  createRoute({
    method: "get",
    path: "/v1/api-keys",
    tags: ["API keys"],
    summary: "List API keys",
    description: "Newest first. Without the `admin` scope, only the keys you created.",
    security: BEARER,
    middleware: guard(),
    request: {
      query: z.strictObject({
        ...PageQuery,
        include_revoked: z.enum(["true", "false"]).default("false"),
        prefix: z
          .string()
          .max(64)
          .optional()
          .openapi({ description: "Only the key with this prefix (as `keys ls` shows it; prefixes are unique)." }),
      }),
    },
    responses: {
      200: { description: "A page of keys.", content: { "application/json": { schema: ApiKeyPage } } },
      ...errors(),
    },
  }),
  async (c) => {
    const caller = c.get("caller");
    const account = requireAccount(caller);
    const q = c.req.valid("query");
    const cursor = decodeTimeCursor(q.cursor);
    const where: SQL[] = [visibleTo(caller, account.id)];
    if (q.include_revoked === "false") where.push(isNull(apiKeys.revokedAt));
    if (q.prefix) where.push(eq(apiKeys.prefix, q.prefix));
    if (cursor) {
      where.push(beforeCursor(apiKeys.createdAt, apiKeys.id, cursor));
    }
    const rows = await c
      .get("pg")
      .db.select({ key: apiKeys, t: cursorTime(apiKeys.createdAt) })
      .from(apiKeys)
      .where(and(...where))
      .orderBy(desc(apiKeys.createdAt), desc(apiKeys.id))
      .limit(q.limit + 1);
    const p = page(rows, q.limit, (r) => encodeTimeCursor(r.t, r.key.id));
    return respond(c, ApiKeyPage, { data: p.data.map((r) => keyView(r.key)), next_cursor: p.next_cursor }, 200);
  },
);

apiKeysRouter.openapi(
  createRoute({
    method: "delete",
    path: "/v1/api-keys/{id}",
    tags: ["API keys"],
    summary: "Revoke an API key",
    description:
      "The key stops working at once in the API instance that revoked it and within 10 s everywhere (instances remember a key they resolved for up to 10 s). Revoking a revoked key returns it unchanged.",
    security: BEARER,
    middleware: guard(),
    request: { params: IdParam },
    responses: {
      200: { description: "The revoked key.", content: { "application/json": { schema: ApiKey } } },
      ...errors(404),
    },
  }),
  async (c) => {
    const caller = c.get("caller");
    const account = requireAccount(caller);
    const { id } = c.req.valid("param");
    const db = c.get("pg").db;
    const row = await db.transaction(async (tx) => {
      const [existing] = await tx
        .select()
        .from(apiKeys)
        .where(and(eq(apiKeys.id, id), visibleTo(caller, account.id)))
        .for("update");
      if (!existing) throw new ApiError(404, "not_found", `no API key ${id} in this account`);
      if (existing.revokedAt) return existing;
      const [revoked] = await tx.update(apiKeys).set({ revokedAt: new Date() }).where(eq(apiKeys.id, id)).returning();
      await audit(tx, caller, account.id, {
        action: "api_key.revoked",
        targetType: "api_key",
        targetId: existing.id,
        data: { name: existing.name, prefix: existing.prefix },
      });
      return revoked!;
    });
    // This isolate stops accepting it at once; others within 10 s (workers/auth/caller.ts).
    // By the id as stored (lower case): the path's may be in upper case, which Postgres's uuid takes.
    recentApiKeys.forget((known) => known.apiKey?.id === row.id);
    return respond(c, ApiKey, keyView(row), 200);
  },
);
