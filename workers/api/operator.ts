/**
 * Operator routes (owners and admins of the operator account): the fleet's nodes (create a node
 * record and its agent token, rotate or revoke the token, drain, cordon and uncordon), and the
 * dead-letter list with re-drive. Every action writes an audit row.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { and, desc, eq, type SQL } from "drizzle-orm";
import { GPUS_PER_NODE, GpuModel } from "../../core/schemas";
import type { DeadLetter, NodeResult, NodeView, RegionSchedulerRpc } from "../../durable-objects/region-scheduler/rpc";
import type { Caller } from "../auth/caller";
import type { Db } from "../db/client";
import { jobs, NODE_STATES, nodes } from "../db/schema";
import { ApiError } from "../http/errors";
import { secretWithheld } from "../http/idempotency";
import { beforeCursor, cursorTime, decodeTimeCursor, encodeTimeCursor, page } from "../http/pagination";
import { issueNodeToken, revokeNodeToken } from "../nodes/tokens";
import { regionsOf } from "../regions";
import { type AuditEntry, auditOperator, operatorId } from "./audit";
import { BEARER, createRouter, errors, guard, respond } from "./router";
import { schedulerOf, servedRegion, viaScheduler } from "./scheduler";
import { IdempotencyHeaders, PageQuery, pageOf, Timestamp, Uuid } from "./schemas";
import { iso } from "./views";

const NODE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const NodeIdParam = z.strictObject({
  id: z
    .string()
    .regex(NODE_ID, "a node id")
    .openapi({ param: { name: "id", in: "path" }, example: "node-7f3a9c" }),
});

const OperatorNode = z
  .object({
    id: z.string(),
    region: z.string(),
    zone: z.string(),
    gpu_model: GpuModel,
    gpu_count: z.number().int(),
    cpu_milli: z.number().int(),
    memory_mib: z.number().int(),
    state: z.string(),
    hostname: z.string().nullable(),
    block_id: z.string().nullable(),
    has_token: z.boolean(),
    registered_at: Timestamp.nullable(),
    created_at: Timestamp,
    live: z
      .object({
        state: z.string().openapi({
          description:
            "`ready`, `cordoned` (up, but taking no new work while `cordon` or `engine_stuck` holds; what runs runs on), `draining` or `lost`.",
        }),
        free_gpus: z.array(z.number().int()).openapi({
          description:
            "Healthy GPUs neither allocated nor held: any work may be placed there (when `state` is `ready`).",
        }),
        held_gpus: z.array(z.number().int()).openapi({
          description:
            "Healthy GPUs not allocated but held by a reservation (the autoscaler's Fast headroom): only work of the reservation's tier is placed there.",
        }),
        unhealthy_gpus: z.array(z.number().int()),
        engine_stuck: z.object({ since: Timestamp, operation: z.string(), detail: z.string() }).nullable().openapi({
          description:
            "The agent's report of a container engine call left unanswered past its timeout: the node is cordoned (state `cordoned`, no new work) until the engine answers again (and, if an operator cordoned it too, until they uncordon it).",
        }),
        cordon: z
          .object({
            since: Timestamp,
            reason: z.string().nullable(),
            by: z.string().openapi({
              description: "The operator, as the audit log names them.",
              example: "user:3f1c2b0e-8a4d-4a57-9d1e-2c5b7f0a9e11",
            }),
          })
          .nullable()
          .openapi({
            description:
              "An operator's cordon (`POST /v1/operator/nodes/{id}/cordon`): the node is cordoned (state `cordoned`, no new work; what runs runs on) until an operator uncordons it.",
          }),
        placements: z.array(z.string()),
        last_heartbeat_at: Timestamp.nullable(),
      })
      .nullable()
      .openapi({ description: "The region scheduler's view; null if it does not know the node (or did not answer)." }),
  })
  .openapi("OperatorNode");
const OperatorNodePage = pageOf(OperatorNode, "OperatorNodePage");

const NodeCreate = z
  .strictObject({
    id: z.string().regex(NODE_ID, "a node id").optional().openapi({ description: "Default: generated." }),
    region: z.string().max(32).optional(),
    zone: z.string().min(1).max(64).default("local-a"),
    gpu_model: GpuModel,
    gpu_count: z.number().int().min(1).max(16).default(GPUS_PER_NODE),
    cpu_milli: z.number().int().min(1000).max(1_024_000),
    memory_mib: z.number().int().min(1024).max(16_777_216),
    hostname: z.string().max(255).optional(),
  })
  .openapi("NodeCreate");
const NodeCordonRequest = z
  .strictObject({
    reason: z.string().min(1).max(500).optional().openapi({
      description: "Why, for the other operators (`live.cordon`) and the audit log.",
      example: "inspecting NVLink errors",
    }),
  })
  .openapi("NodeCordonRequest");
const NodeWithToken = z
  .object({ node: OperatorNode, token: z.string().openapi({ description: "The agent token; shown only here." }) })
  .openapi("NodeWithToken");

const DeadLetterView = z
  .object({
    job_id: Uuid,
    account_id: Uuid,
    region: z.string(),
    attempts: z.number().int(),
    dead_lettered_at: Timestamp,
    reasons: z.array(z.string()),
  })
  .openapi("DeadLetter");
const DeadLetterPage = pageOf(DeadLetterView, "DeadLetterPage");

type NodeRow = typeof nodes.$inferSelect;

function nodeView(n: NodeRow, live: NodeView | undefined) {
  return {
    id: n.id,
    region: n.region,
    zone: n.zone,
    gpu_model: n.gpuModel as z.infer<typeof GpuModel>,
    gpu_count: n.gpuCount,
    cpu_milli: n.cpuMilli,
    memory_mib: n.memoryMib,
    state: n.state,
    hostname: n.hostname,
    block_id: n.blockId,
    has_token: n.agentTokenHash !== null,
    registered_at: iso(n.registeredAt),
    created_at: n.createdAt.toISOString(),
    live: live
      ? {
          state: live.state,
          free_gpus: live.free_gpus,
          held_gpus: live.held_gpus,
          unhealthy_gpus: live.unhealthy_gpus,
          engine_stuck: live.engine_stuck && {
            since: new Date(live.engine_stuck.since).toISOString(),
            operation: live.engine_stuck.operation,
            detail: live.engine_stuck.detail,
          },
          cordon: live.cordon && { ...live.cordon, since: new Date(live.cordon.since).toISOString() },
          placements: live.placements,
          last_heartbeat_at: live.last_heartbeat_at === null ? null : new Date(live.last_heartbeat_at).toISOString(),
        }
      : null,
  };
}

async function loadNode(db: Db, id: string): Promise<NodeRow> {
  const [row] = await db.select().from(nodes).where(eq(nodes.id, id));
  if (!row) throw new ApiError(404, "not_found", `no node ${id}`);
  return row;
}

async function liveNodes(env: Env, regions: string[]): Promise<Map<string, NodeView>> {
  const out = new Map<string, NodeView>();
  await Promise.all(
    regions.map(async (region) => {
      const list = await schedulerOf(env, region)
        .listNodes()
        .catch(() => [] as NodeView[]);
      for (const n of list) out.set(n.node_id, n);
    }),
  );
  return out;
}

/**
 * A node action its region's scheduler does (drain, cordon, uncordon), refused (409) when the node
 * left the fleet, its scheduler does not know it, or it is draining (cordon: it takes no new work
 * already, for good).
 */
async function actOnNode(
  env: Env,
  node: NodeRow,
  act: (scheduler: RegionSchedulerRpc) => Promise<NodeResult>,
): Promise<void> {
  const gone = (state: string) => new ApiError(409, "node_gone", `node ${node.id} is ${state}`);
  if (node.state === "released" || node.state === "lost") throw gone(node.state);
  const result = await viaScheduler(node.region, () => act(schedulerOf(env, node.region)));
  if (result.ok) return;
  if (result.state === "unknown") {
    throw new ApiError(409, "node_unknown_to_scheduler", `the ${node.region} scheduler does not know node ${node.id}`, {
      state: result.state,
    });
  }
  if (result.state === "lost") throw gone(result.state);
  throw new ApiError(409, "node_draining", `node ${node.id} is ${result.state}: it takes no new work already`, {
    state: result.state,
  });
}

/** The operator's action on a node audited, and the node with its live state to answer. */
async function actedOn(
  env: Env,
  db: Db,
  caller: Caller,
  node: NodeRow,
  entry: Pick<AuditEntry, "action" | "data">,
): Promise<ReturnType<typeof nodeView>> {
  await auditOperator(db, caller, {
    ...entry,
    targetType: "node",
    targetId: node.id,
    data: { region: node.region, ...entry.data },
  });
  const live = await liveNodes(env, [node.region]);
  return nodeView(await loadNode(db, node.id), live.get(node.id));
}

export const operatorRouter = createRouter();
const OPERATOR = guard({ operator: true });

operatorRouter.openapi(
  createRoute({
    method: "get",
    path: "/v1/operator/nodes",
    tags: ["Operators"],
    summary: "List nodes",
    description: "Newest first, with each node's live state from its region's scheduler.",
    security: BEARER,
    middleware: OPERATOR,
    request: {
      query: z.strictObject({
        ...PageQuery,
        region: z.string().max(32).optional(),
        state: z.enum(NODE_STATES).optional(),
      }),
    },
    responses: {
      200: { description: "A page of nodes.", content: { "application/json": { schema: OperatorNodePage } } },
      ...errors(),
    },
  }),
  async (c) => {
    const q = c.req.valid("query");
    const cursor = decodeTimeCursor(q.cursor, NODE_ID);
    const where: SQL[] = [];
    if (q.region) where.push(eq(nodes.region, q.region));
    if (q.state) where.push(eq(nodes.state, q.state));
    if (cursor) where.push(beforeCursor(nodes.createdAt, nodes.id, cursor));
    const rows = await c
      .get("pg")
      .db.select({ node: nodes, t: cursorTime(nodes.createdAt) })
      .from(nodes)
      .where(where.length ? and(...where) : undefined)
      .orderBy(desc(nodes.createdAt), desc(nodes.id))
      .limit(q.limit + 1);
    const p = page(rows, q.limit, (r) => encodeTimeCursor(r.t, r.node.id));
    const regions = [...new Set(p.data.map((r) => r.node.region))].filter((r) => regionsOf(c.env).includes(r));
    const live = await liveNodes(c.env, regions);
    return respond(
      c,
      OperatorNodePage,
      { data: p.data.map((r) => nodeView(r.node, live.get(r.node.id))), next_cursor: p.next_cursor },
      200,
    );
  },
);

operatorRouter.openapi(
  createRoute({
    method: "post",
    path: "/v1/operator/nodes",
    tags: ["Operators"],
    summary: "Create a node record and its agent token",
    description:
      "For nodes not bought through the capacity manager (e.g. development nodes started by the local launcher). The token is shown once.",
    security: BEARER,
    middleware: OPERATOR,
    request: {
      headers: IdempotencyHeaders,
      body: { required: true, content: { "application/json": { schema: NodeCreate } } },
    },
    responses: {
      201: { description: "The node and its token.", content: { "application/json": { schema: NodeWithToken } } },
      ...errors(409, 413, 415, 422),
    },
  }),
  async (c) => {
    const caller = c.get("caller");
    const body = c.req.valid("json");
    const region = servedRegion(c.env, body.region);
    const db = c.get("pg").db;
    // Without an id in the body, an Idempotency-Key chooses it: a retry that took over the key of a
    // request that died after making the node learns which node it made (its token is gone).
    const made = body.id === undefined ? c.get("idempotentId") : undefined;
    const id = body.id ?? `node-${(made ?? crypto.randomUUID()).slice(0, 8)}`;
    const [created] = await db
      .insert(nodes)
      .values({
        id,
        region,
        zone: body.zone,
        gpuModel: body.gpu_model,
        gpuCount: body.gpu_count,
        cpuMilli: body.cpu_milli,
        memoryMib: body.memory_mib,
        hostname: body.hostname ?? null,
      })
      .onConflictDoNothing()
      .returning();
    if (!created) {
      if (made) {
        c.set("secretAnswer", { id, status: 201 });
        throw secretWithheld(id, 201);
      }
      throw new ApiError(409, "node_exists", `node ${id} already exists`, {
        fields: [{ field: "id", message: "already exists", code: "node_exists" }],
      });
    }
    const token = (await issueNodeToken(db, id))!;
    await auditOperator(db, caller, {
      action: "node.created",
      targetType: "node",
      targetId: id,
      data: { region, gpu_model: body.gpu_model },
    });
    c.set("secretAnswer", { id });
    return respond(c, NodeWithToken, { node: nodeView(await loadNode(db, id), undefined), token }, 201);
  },
);

operatorRouter.openapi(
  createRoute({
    method: "post",
    path: "/v1/operator/nodes/{id}/token",
    tags: ["Operators"],
    summary: "Issue a new agent token for a node",
    description:
      "Replaces the node's token: the old one stops working at once in the API instance that rotated it and within 10 s everywhere. The new token is shown once.",
    security: BEARER,
    middleware: OPERATOR,
    request: { params: NodeIdParam, headers: IdempotencyHeaders },
    responses: {
      201: { description: "The node and its new token.", content: { "application/json": { schema: NodeWithToken } } },
      ...errors(404, 409),
    },
  }),
  async (c) => {
    const { id } = c.req.valid("param");
    const db = c.get("pg").db;
    await loadNode(db, id);
    const token = await issueNodeToken(db, id);
    if (!token) throw new ApiError(409, "node_released", `node ${id} was released`);
    await auditOperator(db, c.get("caller"), { action: "node.token_issued", targetType: "node", targetId: id });
    c.set("secretAnswer", { id });
    return respond(c, NodeWithToken, { node: nodeView(await loadNode(db, id), undefined), token }, 201);
  },
);

operatorRouter.openapi(
  createRoute({
    method: "delete",
    path: "/v1/operator/nodes/{id}/token",
    tags: ["Operators"],
    summary: "Revoke a node's agent token",
    description: "The node's agent can no longer call the agent routes.",
    security: BEARER,
    middleware: OPERATOR,
    request: { params: NodeIdParam },
    responses: {
      200: { description: "The node.", content: { "application/json": { schema: OperatorNode } } },
      ...errors(404),
    },
  }),
  async (c) => {
    const { id } = c.req.valid("param");
    const db = c.get("pg").db;
    await loadNode(db, id);
    const revoked = await revokeNodeToken(db, id);
    if (revoked)
      await auditOperator(db, c.get("caller"), { action: "node.token_revoked", targetType: "node", targetId: id });
    return respond(c, OperatorNode, nodeView(await loadNode(db, id), undefined), 200);
  },
);

/**
 * The route of a node action (drain, cordon, uncordon): operators only, `Idempotency-Key` taken,
 * the node answered with its live state. `body`: the action's optional JSON body, if it takes one.
 */
function nodeActionRoute<const Verb extends string, const Body extends object = object>(
  verb: Verb,
  doc: { summary: string; description: string },
  body: Body = {} as Body,
) {
  return createRoute({
    method: "post",
    path: `/v1/operator/nodes/{id}/${verb}`,
    tags: ["Operators"],
    ...doc,
    security: BEARER,
    middleware: OPERATOR,
    request: { params: NodeIdParam, headers: IdempotencyHeaders, ...body },
    responses: {
      200: { description: "The node.", content: { "application/json": { schema: OperatorNode } } },
      ...errors(404, 409, 413, 415, 503),
    },
  });
}

operatorRouter.openapi(
  nodeActionRoute("drain", {
    summary: "Drain a node",
    description: "The scheduler places nothing new on it; running work finishes.",
  }),
  async (c) => {
    const { id } = c.req.valid("param");
    const db = c.get("pg").db;
    const node = await loadNode(db, id);
    await actOnNode(c.env, node, (scheduler) => scheduler.drain(id));
    await db.update(nodes).set({ state: "draining" }).where(eq(nodes.id, id));
    const drained = await actedOn(c.env, db, c.get("caller"), node, { action: "node.drained" });
    return respond(c, OperatorNode, drained, 200);
  },
);

operatorRouter.openapi(
  nodeActionRoute(
    "cordon",
    {
      summary: "Cordon a node",
      description:
        "The scheduler places nothing new on it until it is uncordoned; running work runs on (e.g. to look at a node without draining it: a drained node never takes work again). Again on a node an operator cordoned: nothing changes, the first cordon (`live.cordon`) stays. A draining node is refused (`node_draining`).",
    },
    { body: { required: false, content: { "application/json": { schema: NodeCordonRequest } } } },
  ),
  async (c) => {
    const { id } = c.req.valid("param");
    const { reason } = c.req.valid("json");
    const db = c.get("pg").db;
    const caller = c.get("caller");
    const node = await loadNode(db, id);
    await actOnNode(c.env, node, (scheduler) =>
      scheduler.cordon(id, { reason: reason ?? null, by: operatorId(caller) }),
    );
    const cordoned = await actedOn(c.env, db, caller, node, {
      action: "node.cordoned",
      data: { reason: reason ?? null },
    });
    return respond(c, OperatorNode, cordoned, 200);
  },
);

operatorRouter.openapi(
  nodeActionRoute("uncordon", {
    summary: "Uncordon a node",
    description:
      "Lifts an operator's cordon: the scheduler places waiting work on the node at once. A node whose container engine does not answer stays cordoned until it answers (`live.engine_stuck`). A node not cordoned is left as it is.",
  }),
  async (c) => {
    const { id } = c.req.valid("param");
    const db = c.get("pg").db;
    const caller = c.get("caller");
    const node = await loadNode(db, id);
    await actOnNode(c.env, node, (scheduler) => scheduler.uncordon(id, operatorId(caller)));
    return respond(c, OperatorNode, await actedOn(c.env, db, caller, node, { action: "node.uncordoned" }), 200);
  },
);

operatorRouter.openapi(
  createRoute({
    method: "get",
    path: "/v1/operator/dead-letters",
    tags: ["Operators"],
    summary: "List dead-lettered jobs",
    description: "Jobs that failed all their attempts, newest first, with the reason of each attempt.",
    security: BEARER,
    middleware: OPERATOR,
    request: {
      query: z.strictObject({ ...PageQuery, region: z.string().max(32).optional(), account_id: Uuid.optional() }),
    },
    responses: {
      200: { description: "A page of dead letters.", content: { "application/json": { schema: DeadLetterPage } } },
      ...errors(503),
    },
  }),
  async (c) => {
    const q = c.req.valid("query");
    const cursor = decodeTimeCursor(q.cursor);
    const regions = regionsOf(c.env).filter((r) => !q.region || r === q.region);
    const letters: (DeadLetter & { region: string })[] = [];
    for (const region of regions) {
      const list = await viaScheduler(region, () => schedulerOf(c.env, region).deadLetters());
      for (const d of list) letters.push({ ...d, region });
    }
    // Newest first by (time, job id), the same order and cursor as the other lists.
    const key = (d: DeadLetter) => `${new Date(d.dead_lettered_at).toISOString().replace("Z", "000Z")}|${d.job_id}`;
    const sorted = letters
      .filter((d) => !q.account_id || d.account_id === q.account_id)
      .sort((a, b) => (key(a) < key(b) ? 1 : -1))
      .filter((d) => !cursor || key(d) < `${cursor.t}|${cursor.id}`);
    const p = page(sorted, q.limit, (d) => {
      const [t, id] = key(d).split("|");
      return encodeTimeCursor(t!, id!);
    });
    return respond(
      c,
      DeadLetterPage,
      {
        data: p.data.map((d) => ({
          job_id: d.job_id,
          account_id: d.account_id,
          region: d.region,
          attempts: d.attempts,
          dead_lettered_at: new Date(d.dead_lettered_at).toISOString(),
          reasons: d.reasons,
        })),
        next_cursor: p.next_cursor,
      },
      200,
    );
  },
);

operatorRouter.openapi(
  createRoute({
    method: "post",
    path: "/v1/operator/dead-letters/{id}/redrive",
    tags: ["Operators"],
    summary: "Re-drive a dead-lettered job",
    description: "Puts the job back in its region's queue with fresh attempts.",
    security: BEARER,
    middleware: OPERATOR,
    request: {
      params: z.strictObject({ id: Uuid.openapi({ param: { name: "id", in: "path" } }) }),
      headers: IdempotencyHeaders,
    },
    responses: {
      200: {
        description: "The job's status after the re-drive.",
        content: { "application/json": { schema: z.object({ job_id: Uuid, status: z.string() }).openapi("Redrive") } },
      },
      ...errors(404, 409, 503),
    },
  }),
  async (c) => {
    const { id } = c.req.valid("param");
    const db = c.get("pg").db;
    const [job] = await db.select({ region: jobs.region }).from(jobs).where(eq(jobs.id, id));
    if (!job) throw new ApiError(404, "not_found", `no job ${id}`);
    const result = await viaScheduler(job.region, () => schedulerOf(c.env, job.region).redrive(id));
    if (!result.ok) throw new ApiError(409, "not_dead_lettered", `job ${id} is not in the dead-letter list`);
    await auditOperator(db, c.get("caller"), {
      action: "job.redriven",
      targetType: "job",
      targetId: id,
      data: { region: job.region },
    });
    return respond(
      c,
      z.object({ job_id: Uuid, status: z.string() }),
      { job_id: id, status: result.status ?? "queued" },
      200,
    );
  },
);
