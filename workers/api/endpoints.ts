/**
 * Endpoints: long-lived services. The row is written first, then the region scheduler is told the
 * spec (`ensureEndpoint`) and keeps `min_replicas` replicas placed; a failed call leaves the row
 * unsynced (`synced_version < version`) for the reconciler, as with job submission.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { and, desc, eq, type SQL, sql } from "drizzle-orm";
import { GpuModel, Tier } from "../../core/schemas";
import type { EndpointSpec, EndpointState } from "../../durable-objects/region-scheduler/rpc";
import { requireAccount } from "../auth/caller";
import { openEnv, sealEnv } from "../auth/env-secrets";
import type { Db } from "../db/client";
import { endpoints } from "../db/schema";
import { ApiError } from "../http/errors";
import { errorFields, type Logger } from "../http/log";
import { beforeCursor, cursorTime, decodeTimeCursor, encodeTimeCursor, page } from "../http/pagination";
import { audit } from "./audit";
import { readsBilling, refuseHeld } from "./payment-required";
import { endpointDemand, enforceQuota, lockAccount, requireTier } from "./quota";
import { BEARER, createRouter, errors, guard, respond } from "./router";
import { requireGpuModels, schedulerOf, servedRegion } from "./scheduler";
import {
  EndpointSpecFields,
  EnvVarView,
  IdempotencyHeaders,
  IdParam,
  Labels,
  PageQuery,
  PlacementMetrics,
  pageOf,
  Timestamp,
  Uuid,
} from "./schemas";
import { type EndpointRow, iso, metricsView, schedulerWorkload, workloadColumns, workloadView } from "./views";

const NAME = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9-]{0,62}$/,
    "lowercase letters, digits and dashes, at most 63, starting with a letter or digit",
  )
  // Invoke and the CLI take an id or a name in one place, and read a UUID as an id.
  .refine(
    (v) => !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(v),
    "must not be shaped like an id (a UUID): it could not be told from one",
  );

/** A PATCH changes only what it names: the same fields without their defaults. */
function withoutDefaults<T extends Record<string, z.ZodType>>(
  shape: T,
): { [K in keyof T]: T[K] extends z.ZodDefault<infer Inner> ? Inner : T[K] } {
  return Object.fromEntries(
    Object.entries(shape).map(([k, v]) => [k, v instanceof z.ZodDefault ? (v.unwrap() as z.ZodType) : v]),
  ) as never;
}

const EndpointCreate = z
  .strictObject({
    name: NAME.openapi({ example: "llama-serve" }),
    region: z.string().max(32).optional().openapi({ description: "Defaults to the first region served." }),
    tier: Tier.optional().openapi({ description: "Defaults to fast when the account may use it, else flex." }),
    ...EndpointSpecFields,
    labels: Labels.default({}),
  })
  .refine((e) => e.min_replicas <= e.max_replicas, { message: "must be at least min_replicas", path: ["max_replicas"] })
  .openapi("EndpointCreate");

const EndpointPatch = z
  .strictObject({
    tier: Tier,
    ...withoutDefaults(EndpointSpecFields),
    labels: Labels,
  })
  .partial()
  .openapi("EndpointPatch");

const Replica = z.object({
  replica_id: z.string(),
  status: z.string(),
  node_id: z.string().nullable(),
  waiting_reason: z.string().nullable(),
  restarts: z.number().int().openapi({
    description:
      "Times it was placed again after a run ended (it crashed, exited, its node was lost, or its spec changed).",
  }),
  last_exit: z.string().nullable().openapi({ description: "Why its last run ended; null before any ended." }),
  ready: z.boolean().nullable().openapi({
    description:
      "Running and answering `GET health_path` on `port` with 2xx or 3xx at its node's last check (every heartbeat, about 10 s; every 250 ms until it first passes); null while running but not checked yet. Only ready replicas take traffic.",
  }),
  metrics: PlacementMetrics.nullable(),
});

const Endpoint = z
  .object({
    id: Uuid,
    name: z.string(),
    status: z.enum(["active", "deleted"]),
    region: z.string(),
    tier: Tier,
    image: z.string(),
    command: z.array(z.string()),
    args: z.array(z.string()),
    env: z.array(EnvVarView),
    gpu_count: z.number().int(),
    gpu_models: z.array(GpuModel),
    cpu_milli: z.number().int(),
    memory_mib: z.number().int(),
    min_replicas: z.number().int(),
    max_replicas: z.number().int(),
    target_concurrency: z.number().int(),
    scale_down_delay_s: z.number().int(),
    desired_replicas: z.number().int().nullable().openapi({
      description:
        "Replicas wanted now: min_replicas plus what traffic asks for, at most max_replicas (single reads only; null in lists).",
    }),
    port: z.number().int(),
    health_path: z.string(),
    startup_timeout_s: z.number().int(),
    labels: z.record(z.string(), z.string()),
    synced: z.boolean().openapi({ description: "Whether the region's scheduler has the current spec." }),
    replicas: z.array(Replica).nullable().openapi({ description: "Live replicas (single reads only; null in lists)." }),
    created_at: Timestamp,
    updated_at: Timestamp,
    deleted_at: Timestamp.nullable(),
  })
  .openapi("Endpoint");
type Endpoint = z.infer<typeof Endpoint>;
const EndpointPage = pageOf(Endpoint, "EndpointPage");

function endpointView(row: EndpointRow, live: EndpointState | null = null): Endpoint {
  return {
    id: row.id,
    name: row.name,
    status: row.status as Endpoint["status"],
    region: row.region,
    tier: row.tier as Endpoint["tier"],
    ...workloadView(row),
    min_replicas: row.minReplicas,
    max_replicas: row.maxReplicas,
    target_concurrency: row.targetConcurrency,
    scale_down_delay_s: row.scaleDownDelayS,
    desired_replicas: live?.desired_replicas ?? null,
    port: row.port,
    health_path: row.healthPath,
    startup_timeout_s: row.startupTimeoutS,
    labels: (row.labels ?? {}) as Record<string, string>,
    synced: row.syncedVersion === row.version,
    replicas: live
      ? live.replicas.map((r) => ({
          replica_id: r.replica_id,
          status: r.status,
          node_id: r.placement?.node_id ?? null,
          waiting_reason: r.waiting_reason,
          // An older scheduler object answers without these: not known.
          restarts: Math.max(0, (r.starts ?? 1) - 1),
          last_exit: r.last_exit ?? null,
          ready: r.ready ?? null,
          metrics: metricsView(r.placement?.metrics),
        }))
      : null,
    created_at: row.createdAt.toISOString(),
    updated_at: row.updatedAt.toISOString(),
    deleted_at: iso(row.deletedAt),
  };
}

/** The endpoint as its scheduler takes it, secret values opened. Throws SecretKeyError. */
export async function endpointSpec(env: Env, row: EndpointRow): Promise<EndpointSpec> {
  return {
    id: row.id,
    version: row.version,
    account_id: row.accountId,
    tier: row.tier as EndpointSpec["tier"],
    ...schedulerWorkload(row, await openEnv(env, row.accountId, row.env)),
    min_replicas: row.minReplicas,
    max_replicas: row.maxReplicas,
    port: row.port,
    health_path: row.healthPath,
    startup_timeout_s: row.startupTimeoutS,
    target_concurrency: row.targetConcurrency,
    scale_down_delay_s: row.scaleDownDelayS,
  };
}

/**
 * Tell the scheduler the endpoint's current spec (or its removal) and record the version it has.
 * The scheduler keeps the newest version it was sent: a row that a newer change overtook (another
 * request's, or its removal, arrived first) is not applied, and its version is not recorded. Never
 * throws: a failure stays visible as `synced: false` and the reconciler retries.
 */
export async function syncEndpoint(env: Env, db: Db, row: EndpointRow, log: Logger): Promise<EndpointState | null> {
  const scheduler = schedulerOf(env, row.region);
  try {
    let state: EndpointState | null = null;
    let held: number | null;
    if (row.status === "active") {
      state = await scheduler.ensureEndpoint(await endpointSpec(env, row));
      held = state?.version ?? null;
    } else {
      held = (await scheduler.removeEndpoint(row.id, row.version)).version;
    }
    // Overtaken: the newer change records its own sync (the row's version is past this one anyway).
    if (held !== row.version) return state;
    await db
      .update(endpoints)
      .set({ syncedVersion: row.version, syncError: null })
      .where(and(eq(endpoints.id, row.id), eq(endpoints.version, row.version)));
    return state;
  } catch (error) {
    log.warn("endpoint.sync_failed", { endpoint_id: row.id, region: row.region, ...errorFields(error) });
    await db
      .update(endpoints)
      .set({ syncError: error instanceof Error ? error.message.slice(0, 1000) : String(error) })
      .where(eq(endpoints.id, row.id))
      .catch(() => {});
    return null;
  }
}

export async function loadEndpoint(db: Db, accountId: string, id: string): Promise<EndpointRow> {
  const [row] = await db
    .select()
    .from(endpoints)
    .where(and(eq(endpoints.id, id), eq(endpoints.accountId, accountId)));
  if (!row) throw new ApiError(404, "not_found", `no endpoint ${id} in this account`);
  return row;
}

export const endpointsRouter = createRouter();

endpointsRouter.openapi(
  createRoute({
    method: "post",
    path: "/v1/endpoints",
    tags: ["Endpoints"],
    summary: "Create an endpoint",
    description:
      "Stores the endpoint and asks the region's scheduler to keep `min_replicas` replicas running; traffic sent to `/v1/endpoints/{id or name}/invoke/…` scales it up to `max_replicas`. Names are unique among the account's active endpoints. An account on payment hold (an unpaid invoice) gets `402 payment_required`.",
    security: BEARER,
    middleware: guard({ scope: "endpoints:write" }),
    request: {
      headers: IdempotencyHeaders,
      body: { required: true, content: { "application/json": { schema: EndpointCreate } } },
    },
    responses: {
      201: { description: "The endpoint.", content: { "application/json": { schema: Endpoint } } },
      ...errors(402, 409, 413, 415, 422, 503),
    },
  }),
  async (c) => {
    const caller = c.get("caller");
    const account = requireAccount(caller);
    const request = c.req.valid("json");
    // No tier asked for: the best the account may use, as for jobs.
    const body = { ...request, tier: request.tier ?? (account.fastTierEnabled ? "fast" : "flex") } as const;
    const region = servedRegion(c.env, body.region);
    requireTier(body.tier, account.fastTierEnabled);
    await requireGpuModels(c.env, region, body.gpu_models);
    const env = await sealEnv(c.env, account.id, body.env);
    const db = c.get("pg").db;
    // With an Idempotency-Key the key chose the id: a retry that took over the key of a request
    // that died after its commit finds that endpoint (by name, or by id once deleted) and answers
    // with it instead of 409 name_taken, or 402 payment_required when the account was put on
    // payment hold since (that endpoint was accepted before the hold).
    const made = c.get("idempotentId");
    const row = await db.transaction(async (tx) => {
      const hold = await lockAccount(tx, account.id);
      const [earlier] = made
        ? await tx
            .select()
            .from(endpoints)
            .where(and(eq(endpoints.accountId, account.id), eq(endpoints.id, made)))
        : [];
      if (earlier) return { ...earlier, replayed: true };
      refuseHeld(hold, readsBilling(caller));
      const [clash] = await tx
        .select({ id: endpoints.id })
        .from(endpoints)
        .where(and(eq(endpoints.accountId, account.id), eq(endpoints.name, body.name), eq(endpoints.status, "active")));
      if (clash) {
        throw new ApiError(409, "name_taken", `an active endpoint is already named ${body.name}`, {
          fields: [{ field: "name", message: "already used by an active endpoint", code: "name_taken" }],
          endpoint_id: clash.id,
        });
      }
      await enforceQuota(tx, account, endpointDemand(body), readsBilling(caller));
      const [inserted] = await tx
        .insert(endpoints)
        .values({
          ...(made ? { id: made } : {}),
          accountId: account.id,
          createdBy: caller.kind === "user" ? caller.userId : null,
          createdByKey: caller.apiKey?.id ?? null,
          name: body.name,
          region,
          tier: body.tier,
          ...workloadColumns({ ...body, env }),
          minReplicas: body.min_replicas,
          maxReplicas: body.max_replicas,
          scaleDownDelayS: body.scale_down_delay_s,
          targetConcurrency: body.target_concurrency,
          port: body.port,
          healthPath: body.health_path,
          startupTimeoutS: body.startup_timeout_s,
          labels: body.labels,
        })
        .returning();
      await audit(tx, caller, account.id, {
        action: "endpoint.created",
        targetType: "endpoint",
        targetId: inserted!.id,
        data: { name: body.name, region, min_replicas: body.min_replicas, gpu_count: body.gpu_count },
      });
      return { ...inserted!, replayed: false };
    });
    const { replayed, ...stored } = row;
    if (replayed) c.header("Idempotency-Replayed", "true");
    // Again for a replayed one: the request that made it may have died before this.
    const live = await syncEndpoint(c.env, db, stored, c.get("log"));
    return respond(c, Endpoint, endpointView(await loadEndpoint(db, account.id, stored.id), live), 201);
  },
);

endpointsRouter.openapi(
  createRoute({
    method: "get",
    path: "/v1/endpoints",
    tags: ["Endpoints"],
    summary: "List endpoints",
    description: "Newest first; active ones unless `status` says otherwise.",
    security: BEARER,
    middleware: guard({ scope: "endpoints:read" }),
    request: {
      query: z.strictObject({
        ...PageQuery,
        status: z.enum(["active", "deleted", "all"]).default("active"),
        tier: Tier.optional(),
        name: NAME.optional(),
        label: z
          .string()
          .max(300)
          .regex(/^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?:.{0,256}$/, "key:value")
          .optional(),
      }),
    },
    responses: {
      200: { description: "A page of endpoints.", content: { "application/json": { schema: EndpointPage } } },
      ...errors(),
    },
  }),
  async (c) => {
    const account = requireAccount(c.get("caller"));
    const q = c.req.valid("query");
    const cursor = decodeTimeCursor(q.cursor);
    const where: SQL[] = [eq(endpoints.accountId, account.id)];
    if (q.status !== "all") where.push(eq(endpoints.status, q.status));
    if (q.tier) where.push(eq(endpoints.tier, q.tier));
    if (q.name) where.push(eq(endpoints.name, q.name));
    if (q.label) {
      const at = q.label.indexOf(":");
      where.push(
        sql`${endpoints.labels} @> ${JSON.stringify({ [q.label.slice(0, at)]: q.label.slice(at + 1) })}::jsonb`,
      );
    }
    if (cursor) where.push(beforeCursor(endpoints.createdAt, endpoints.id, cursor));
    const rows = await c
      .get("pg")
      .db.select({ endpoint: endpoints, t: cursorTime(endpoints.createdAt) })
      .from(endpoints)
      .where(and(...where))
      .orderBy(desc(endpoints.createdAt), desc(endpoints.id))
      .limit(q.limit + 1);
    const p = page(rows, q.limit, (r) => encodeTimeCursor(r.t, r.endpoint.id));
    return respond(
      c,
      EndpointPage,
      { data: p.data.map((r) => endpointView(r.endpoint)), next_cursor: p.next_cursor },
      200,
    );
  },
);

endpointsRouter.openapi(
  createRoute({
    method: "get",
    path: "/v1/endpoints/{id}",
    tags: ["Endpoints"],
    summary: "Get an endpoint",
    description: "With its live replicas from the region's scheduler.",
    security: BEARER,
    middleware: guard({ scope: "endpoints:read" }),
    request: { params: IdParam },
    responses: {
      200: { description: "The endpoint.", content: { "application/json": { schema: Endpoint } } },
      ...errors(404),
    },
  }),
  async (c) => {
    const account = requireAccount(c.get("caller"));
    const row = await loadEndpoint(c.get("pg").db, account.id, c.req.valid("param").id);
    const live =
      row.status === "active"
        ? await schedulerOf(c.env, row.region)
            .endpointState(row.id)
            .catch(() => null)
        : null;
    return respond(c, Endpoint, endpointView(row, live), 200);
  },
);

endpointsRouter.openapi(
  createRoute({
    method: "patch",
    path: "/v1/endpoints/{id}",
    tags: ["Endpoints"],
    summary: "Update an endpoint",
    description:
      "Changes the given fields. A change to what a replica runs (image, command, args, env, GPUs, CPU, memory, port, health path, tier) stops every replica at once and starts new ones on the new spec (no rolling update: the endpoint has no ready replica until a new one passes its readiness check); scaling fields, `startup_timeout_s` and labels replace nothing. Name and region are fixed. While the account is on payment hold, a change that raises `min_replicas`, or the GPUs or price the endpoint may use, is `402 payment_required`.",
    security: BEARER,
    middleware: guard({ scope: "endpoints:write" }),
    request: {
      params: IdParam,
      body: { required: true, content: { "application/json": { schema: EndpointPatch } } },
    },
    responses: {
      200: { description: "The endpoint after the change.", content: { "application/json": { schema: Endpoint } } },
      ...errors(402, 404, 409, 413, 415, 422, 503),
    },
  }),
  async (c) => {
    const caller = c.get("caller");
    const account = requireAccount(caller);
    const { id } = c.req.valid("param");
    const patch = c.req.valid("json");
    const patchEnv = patch.env ? await sealEnv(c.env, account.id, patch.env) : undefined;
    const db = c.get("pg").db;
    if (patch.gpu_models && patch.gpu_models.length > 0) {
      const { region } = await loadEndpoint(db, account.id, id);
      await requireGpuModels(c.env, region, patch.gpu_models);
    }
    const row = await db.transaction(async (tx) => {
      const hold = await lockAccount(tx, account.id);
      const current = await loadEndpoint(tx as unknown as Db, account.id, id);
      if (current.status !== "active") throw new ApiError(409, "endpoint_deleted", "endpoint was deleted");
      const next = {
        tier: patch.tier ?? current.tier,
        image: patch.image ?? current.image,
        command: patch.command ?? current.command,
        args: patch.args ?? current.args,
        env: patchEnv ?? current.env,
        gpuCount: patch.gpu_count ?? current.gpuCount,
        gpuModels: patch.gpu_models ?? current.gpuModels,
        cpuMilli: patch.cpu_milli ?? current.cpuMilli,
        memoryMib: patch.memory_mib ?? current.memoryMib,
        minReplicas: patch.min_replicas ?? current.minReplicas,
        maxReplicas: patch.max_replicas ?? current.maxReplicas,
        scaleDownDelayS: patch.scale_down_delay_s ?? current.scaleDownDelayS,
        targetConcurrency: patch.target_concurrency ?? current.targetConcurrency,
        port: patch.port ?? current.port,
        healthPath: patch.health_path ?? current.healthPath,
        startupTimeoutS: patch.startup_timeout_s ?? current.startupTimeoutS,
        labels: patch.labels ?? current.labels,
      };
      if (next.minReplicas > next.maxReplicas) {
        throw new ApiError(400, "invalid_request", "max_replicas: must be at least min_replicas", {
          location: "body",
          fields: [{ field: "max_replicas", message: "must be at least min_replicas", code: "too_small" }],
        });
      }
      requireTier(next.tier, account.fastTierEnabled);
      // Quota: the endpoint's own current hold is replaced by the new one.
      const before = endpointDemand({
        tier: current.tier as never,
        gpu_models: current.gpuModels as never,
        gpu_count: current.gpuCount,
        max_replicas: current.maxReplicas,
      });
      const after = endpointDemand({
        tier: next.tier as never,
        gpu_models: next.gpuModels as never,
        gpu_count: next.gpuCount,
        max_replicas: next.maxReplicas,
      });
      const grows = after.gpus > before.gpus || after.ceilingCents > before.ceilingCents;
      // While the account is on payment hold the endpoint keeps what it has: any change that could
      // start more replicas, or dearer ones, is new work.
      if (grows || next.minReplicas > current.minReplicas) refuseHeld(hold, readsBilling(caller));
      if (grows) {
        await enforceQuota(
          tx,
          account,
          {
            gpus: Math.max(0, after.gpus - before.gpus),
            ceilingCents: Math.max(0, after.ceilingCents - before.ceilingCents),
          },
          readsBilling(caller),
        );
      }
      const [updated] = await tx
        .update(endpoints)
        .set({ ...next, version: sql`${endpoints.version} + 1`, updatedAt: new Date() })
        .where(eq(endpoints.id, id))
        .returning();
      await audit(tx, caller, account.id, {
        action: "endpoint.updated",
        targetType: "endpoint",
        targetId: id,
        data: { fields: Object.keys(patch) },
      });
      return updated!;
    });
    const live = await syncEndpoint(c.env, db, row, c.get("log"));
    return respond(c, Endpoint, endpointView(await loadEndpoint(db, account.id, id), live), 200);
  },
);

endpointsRouter.openapi(
  createRoute({
    method: "delete",
    path: "/v1/endpoints/{id}",
    tags: ["Endpoints"],
    summary: "Delete an endpoint",
    description: "Its replicas are stopped. Deleting a deleted endpoint returns it unchanged.",
    security: BEARER,
    middleware: guard({ scope: "endpoints:write" }),
    request: { params: IdParam },
    responses: {
      200: { description: "The deleted endpoint.", content: { "application/json": { schema: Endpoint } } },
      ...errors(404),
    },
  }),
  async (c) => {
    const caller = c.get("caller");
    const account = requireAccount(caller);
    const { id } = c.req.valid("param");
    const db = c.get("pg").db;
    const current = await loadEndpoint(db, account.id, id);
    if (current.status === "deleted") return respond(c, Endpoint, endpointView(current), 200);
    const row = await db.transaction(async (tx) => {
      const [deleted] = await tx
        .update(endpoints)
        .set({
          status: "deleted",
          deletedAt: new Date(),
          updatedAt: new Date(),
          version: sql`${endpoints.version} + 1`,
        })
        .where(and(eq(endpoints.id, id), eq(endpoints.status, "active")))
        .returning();
      if (!deleted) return null;
      await audit(tx, caller, account.id, {
        action: "endpoint.deleted",
        targetType: "endpoint",
        targetId: id,
        data: { name: deleted.name },
      });
      return deleted;
    });
    if (row) await syncEndpoint(c.env, db, row, c.get("log"));
    return respond(c, Endpoint, endpointView(await loadEndpoint(db, account.id, id)), 200);
  },
);

/** Cron task: push unsynced endpoint specs (and removals) to their schedulers. */
export async function reconcileEndpoints(env: Env, db: Db, log: Logger): Promise<number> {
  const rows = await db
    .select()
    .from(endpoints)
    .where(
      sql`${endpoints.syncedVersion} < ${endpoints.version} and ${endpoints.updatedAt} < now() - interval '15 seconds'`,
    )
    .limit(100);
  for (const row of rows) await syncEndpoint(env, db, row, log);
  return rows.length;
}
