/**
 * Private registry credentials of the account: nodes pull the account's images from a registry with
 * the credentials kept for its host (the agent asks for them per pull: `GET
 * /v1/agent/placements/{id}/registry-auth` in agent.ts). One per registry host; the password is
 * sealed at rest (workers/auth/env-secrets.ts) and never returned. Setting and removing them takes
 * the `admin` scope (owners and admins); members see which registries the account has.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { and, desc, eq, type SQL, sql } from "drizzle-orm";
import { RegistryHost } from "../../core/schemas";
import { requireAccount } from "../auth/caller";
import { openSecret, sealSecret } from "../auth/env-secrets";
import type { Db } from "../db/client";
import { registryCredentials } from "../db/schema";
import { ApiError } from "../http/errors";
import { beforeCursor, cursorTime, decodeTimeCursor, encodeTimeCursor, page } from "../http/pagination";
import { audit } from "./audit";
import { BEARER, createRouter, errors, guard, respond } from "./router";
import { IdempotencyHeaders, IdParam, PageQuery, pageOf, Timestamp, Uuid } from "./schemas";

export const RegistryCredential = z
  .object({
    id: Uuid,
    registry: z.string().openapi({ example: "ghcr.io", description: "The registry host (Docker Hub is `docker.io`)." }),
    username: z.string().openapi({ example: "ci-bot" }),
    created_at: Timestamp,
    updated_at: Timestamp.openapi({ description: "When the username or password was last set." }),
  })
  .openapi("RegistryCredential");

const RegistryCredentialSet = z
  .strictObject({
    registry: RegistryHost.openapi({
      example: "ghcr.io",
      description:
        "The registry's host, with its port if it has one, as image names start with it (`ghcr.io` for `ghcr.io/org/app:1`). Docker Hub is `docker.io` (`index.docker.io` is taken as the same). No scheme, no path.",
    }),
    username: z.string().min(1).max(256).openapi({ example: "ci-bot" }),
    password: z.string().min(1).max(8_192).openapi({
      description: "The password or access token. Sealed at rest; no API answer ever contains it.",
      example: "ghp_…",
    }),
  })
  .openapi("RegistryCredentialSet");

const RegistryCredentialPage = pageOf(RegistryCredential, "RegistryCredentialPage");
type Row = typeof registryCredentials.$inferSelect;

const view = (r: Row) => ({
  id: r.id,
  registry: r.registry,
  username: r.username,
  created_at: r.createdAt.toISOString(),
  updated_at: r.updatedAt.toISOString(),
});

/** The associated data a registry password is sealed under: bound to its account and host. */
const sealName = (registry: string) => `registry:${registry}`;

/**
 * The account's credentials for a registry, opened; null when it has none. Throws SecretKeyError
 * when the stored password does not open (a key missing from ENV_SECRETS_KEYS).
 */
export async function credentialsFor(
  db: Db,
  env: { ENV_SECRETS_KEYS?: string },
  accountId: string,
  registry: string,
): Promise<{ username: string; password: string } | null> {
  const [row] = await db
    .select({ username: registryCredentials.username, sealed: registryCredentials.sealedPassword })
    .from(registryCredentials)
    .where(and(eq(registryCredentials.accountId, accountId), eq(registryCredentials.registry, registry)));
  if (!row) return null;
  return { username: row.username, password: await openSecret(env, accountId, sealName(registry), row.sealed) };
}

export const registriesRouter = createRouter();

registriesRouter.openapi(
  createRoute({
    method: "post",
    path: "/v1/registry-credentials",
    tags: ["Registry credentials"],
    summary: "Set a registry's credentials",
    description:
      "Nodes pull this account's images from `registry` with these credentials (jobs and endpoint replicas). Setting them for a registry that has some replaces them (200); new ones are 201. Takes effect at the next pull: a node that already holds a private image pulls it again for a job whose account's credentials it has not seen read it. Needs the `admin` scope.",
    security: BEARER,
    middleware: guard({ scope: "admin" }),
    request: {
      headers: IdempotencyHeaders,
      body: { required: true, content: { "application/json": { schema: RegistryCredentialSet } } },
    },
    responses: {
      200: {
        description: "The registry's credentials were replaced.",
        content: { "application/json": { schema: RegistryCredential } },
      },
      201: {
        description: "Credentials for a new registry.",
        content: { "application/json": { schema: RegistryCredential } },
      },
      ...errors(409, 413, 415, 422, 503),
    },
  }),
  async (c) => {
    const caller = c.get("caller");
    const account = requireAccount(caller);
    const body = c.req.valid("json");
    const sealed = await sealSecret(c.env, account.id, sealName(body.registry), body.password, "registry credentials");
    const db = c.get("pg").db;
    const { row, created } = await db.transaction(async (tx) => {
      const [saved] = await tx
        .insert(registryCredentials)
        .values({
          accountId: account.id,
          registry: body.registry,
          username: body.username,
          sealedPassword: sealed,
          createdBy: caller.kind === "user" ? caller.userId : null,
          createdByKey: caller.apiKey?.id ?? null,
        })
        .onConflictDoUpdate({
          target: [registryCredentials.accountId, registryCredentials.registry],
          set: { username: body.username, sealedPassword: sealed, updatedAt: sql`now()` },
        })
        .returning();
      // The insert set both times to the transaction's now(); a replacement moved only updated_at.
      const created = saved!.createdAt.getTime() === saved!.updatedAt.getTime();
      await audit(tx, caller, account.id, {
        action: created ? "registry_credentials.created" : "registry_credentials.replaced",
        targetType: "registry_credentials",
        targetId: saved!.id,
        data: { registry: body.registry, username: body.username },
      });
      return { row: saved!, created };
    });
    return created ? respond(c, RegistryCredential, view(row), 201) : respond(c, RegistryCredential, view(row), 200);
  },
);

registriesRouter.openapi(
  createRoute({
    method: "get",
    path: "/v1/registry-credentials",
    tags: ["Registry credentials"],
    summary: "List registry credentials",
    description: "Newest first: each registry and its username (never the password).",
    security: BEARER,
    middleware: guard({ scope: "jobs:read" }),
    request: {
      query: z.strictObject({
        ...PageQuery,
        registry: RegistryHost.optional().openapi({ description: "Only this registry's credentials." }),
      }),
    },
    responses: {
      200: {
        description: "A page of registry credentials.",
        content: { "application/json": { schema: RegistryCredentialPage } },
      },
      ...errors(),
    },
  }),
  async (c) => {
    const account = requireAccount(c.get("caller"));
    const q = c.req.valid("query");
    const cursor = decodeTimeCursor(q.cursor);
    const where: SQL[] = [eq(registryCredentials.accountId, account.id)];
    if (q.registry) where.push(eq(registryCredentials.registry, q.registry));
    if (cursor) where.push(beforeCursor(registryCredentials.createdAt, registryCredentials.id, cursor));
    const rows = await c
      .get("pg")
      .db.select({ r: registryCredentials, t: cursorTime(registryCredentials.createdAt) })
      .from(registryCredentials)
      .where(and(...where))
      .orderBy(desc(registryCredentials.createdAt), desc(registryCredentials.id))
      .limit(q.limit + 1);
    const p = page(rows, q.limit, (r) => encodeTimeCursor(r.t, r.r.id));
    return respond(c, RegistryCredentialPage, { data: p.data.map((r) => view(r.r)), next_cursor: p.next_cursor }, 200);
  },
);

registriesRouter.openapi(
  createRoute({
    method: "delete",
    path: "/v1/registry-credentials/{id}",
    tags: ["Registry credentials"],
    summary: "Remove a registry's credentials",
    description:
      "Nodes stop receiving them at once: later pulls from that registry are anonymous, and a node that holds an image pulled with them pulls again (and is refused, for a private image) before starting it for this account. Needs the `admin` scope.",
    security: BEARER,
    middleware: guard({ scope: "admin" }),
    request: { params: IdParam },
    responses: {
      200: {
        description: "The removed credentials.",
        content: { "application/json": { schema: RegistryCredential } },
      },
      ...errors(404),
    },
  }),
  async (c) => {
    const caller = c.get("caller");
    const account = requireAccount(caller);
    const { id } = c.req.valid("param");
    const row = await c.get("pg").db.transaction(async (tx) => {
      const [removed] = await tx
        .delete(registryCredentials)
        .where(and(eq(registryCredentials.id, id), eq(registryCredentials.accountId, account.id)))
        .returning();
      if (!removed) throw new ApiError(404, "not_found", `no registry credentials ${id} in this account`);
      await audit(tx, caller, account.id, {
        action: "registry_credentials.removed",
        targetType: "registry_credentials",
        targetId: id,
        data: { registry: removed.registry, username: removed.username },
      });
      return removed;
    });
    return respond(c, RegistryCredential, view(row), 200);
  },
);
