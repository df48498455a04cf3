/**
 * The node agent's routes (`AGENT_ROUTES` of core/schemas/agent.ts), under per-node tokens. Each is
 * idempotent by design (event ids, log `(placement, seq)`, whole-set placement polls), so they take
 * no Idempotency-Key and are not rate-limited per account.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { eq, sql } from "drizzle-orm";
import {
  AGENT_ROUTES,
  EventBatch,
  EventBatchResponse,
  Heartbeat,
  HeartbeatResponse,
  LogBatch,
  LogBatchResponse,
  NodeInventory,
  PlacementSet,
  RegisterResponse,
  RegistryAuth,
  registryOf,
} from "../../core/schemas";
import { SecretKeyError } from "../auth/env-secrets";
import { nodes } from "../db/schema";
import { jsonBody } from "../http/body";
import { ApiError } from "../http/errors";
import { authenticateNode, authenticateRecentNode } from "../nodes/authenticate";
import { ingressKey } from "../nodes/ingress-key";
import { insertLogLines } from "./job-logs";
import { credentialsFor } from "./registries";
import { createRouter, ERRORS, NODE_TOKEN, respond } from "./router";
import { schedulerOf, viaScheduler } from "./scheduler";

const AGENT = [authenticateNode, jsonBody];
/** The per-job hot routes: a recent verification of the token is reused (workers/nodes/token-cache.ts). */
const AGENT_HOT = [authenticateRecentNode, jsonBody];
const agentErrors = {
  400: ERRORS[400],
  401: ERRORS[401],
  404: ERRORS[404],
  409: ERRORS[409],
  413: ERRORS[413],
  415: ERRORS[415],
  503: ERRORS[503],
};
const body = <T extends z.ZodType>(schema: T) => ({ required: true, content: { "application/json": { schema } } });

// The agreed answers (core/schemas/agent.ts), with what else the routes can tell the agent.
const EventAck = EventBatchResponse.extend({
  rejected: z.array(z.object({ event_id: z.string(), code: z.string() })).openapi({
    description: "Events the scheduler refused: `unknown_placement` or `wrong_node`.",
  }),
}).openapi("EventAck");
const LogAck = LogBatchResponse.extend({ duplicates: z.number().int().nonnegative() }).openapi("LogAck");
const HeartbeatAck = HeartbeatResponse.openapi("HeartbeatAck");

/** Long polls wait at most this long (under the Workers and Durable Object request limits). */
export const MAX_POLL_WAIT_MS = 30_000;

export const agentRouter = createRouter();

agentRouter.openapi(
  createRoute({
    method: "post",
    path: AGENT_ROUTES.register,
    tags: ["Agent"],
    summary: "Register a node",
    description: "The agent reports its host's inventory; the region's scheduler adds the node's GPUs to its capacity.",
    security: NODE_TOKEN,
    middleware: AGENT,
    request: { body: body(z.strictObject(NodeInventory.shape)) },
    responses: {
      200: {
        description: "Where to poll and how often.",
        content: { "application/json": { schema: RegisterResponse } },
      },
      ...agentErrors,
    },
  }),
  async (c) => {
    const node = c.get("node");
    const inventory = c.req.valid("json");
    if (inventory.gpu_model !== node.gpuModel) {
      throw new ApiError(409, "inventory_mismatch", `node ${node.id} is recorded with ${node.gpuModel} GPUs`, {
        fields: [{ field: "gpu_model", message: `expected ${node.gpuModel}`, code: "inventory_mismatch" }],
      });
    }
    const [block] = node.blockId
      ? await c.get("pg").sql<{ end_at: Date }[]>`select end_at from blocks where id = ${node.blockId}`
      : [];
    const registered = await viaScheduler(node.region, () =>
      schedulerOf(c.env, node.region).registerNode({
        ...inventory,
        node_id: node.id,
        region: node.region,
        zone: node.zone,
        block_id: node.blockId,
        block_end_at: block ? new Date(block.end_at).getTime() : null,
      }),
    );
    await c
      .get("pg")
      .db.update(nodes)
      .set({
        hostname: inventory.hostname,
        registeredAt: new Date(),
        state: sql`case when ${nodes.state} = 'provisioning' then 'ready' else ${nodes.state} end`,
      })
      .where(eq(nodes.id, node.id));
    const key = await ingressKey(c.env, node.id);
    return respond(c, RegisterResponse, key ? { ...registered, ingress_key: key } : registered, 200);
  },
);

agentRouter.openapi(
  createRoute({
    method: "get",
    path: AGENT_ROUTES.placements,
    tags: ["Agent"],
    summary: "Long-poll the node's placements",
    description:
      "Answers with the whole desired set as soon as its version passes `since`, or after `wait_ms` with the current set.",
    security: NODE_TOKEN,
    middleware: AGENT_HOT,
    request: {
      query: z.strictObject({
        since: z.coerce.number().int().min(0).default(0),
        wait_ms: z.coerce.number().int().min(0).max(MAX_POLL_WAIT_MS).default(25_000),
      }),
    },
    responses: {
      200: { description: "The desired placements.", content: { "application/json": { schema: PlacementSet } } },
      ...agentErrors,
    },
  }),
  async (c) => {
    const node = c.get("node");
    const q = c.req.valid("query");
    const set = await viaScheduler(node.region, () =>
      schedulerOf(c.env, node.region).pollPlacements(node.id, q.since, q.wait_ms),
    );
    return respond(c, PlacementSet, set, 200);
  },
);

agentRouter.openapi(
  createRoute({
    method: "get",
    path: AGENT_ROUTES.registryAuth,
    tags: ["Agent"],
    summary: "Registry credentials for a placement's pull",
    description:
      "The registry the placement's image is on and its account's credentials for it (null: pull anonymously). Only for a placement active on the calling node (`unknown_placement` otherwise), so a node learns no credentials but those of the work it runs.",
    security: NODE_TOKEN,
    middleware: AGENT,
    request: {
      params: z.strictObject({
        placement_id: z
          .string()
          .min(1)
          .max(128)
          .openapi({ param: { name: "placement_id", in: "path" } }),
      }),
    },
    responses: {
      200: {
        description: "Where to pull from, and with what.",
        content: { "application/json": { schema: RegistryAuth } },
      },
      ...agentErrors,
    },
  }),
  async (c) => {
    const node = c.get("node");
    const { placement_id } = c.req.valid("param");
    const placement = await viaScheduler(node.region, () =>
      schedulerOf(c.env, node.region).placementImage(node.id, placement_id),
    );
    if (!placement) {
      throw new ApiError(404, "unknown_placement", `placement ${placement_id} is not active on this node`);
    }
    const registry = registryOf(placement.image);
    let credentials: { username: string; password: string } | null;
    try {
      credentials = await credentialsFor(c.get("pg").db, c.env, placement.account_id, registry);
    } catch (error) {
      if (!(error instanceof SecretKeyError)) throw error;
      throw new ApiError(
        503,
        "secrets_unavailable",
        `the credentials for ${registry} cannot be opened: ${error.message}`,
      );
    }
    return respond(c, RegistryAuth, { registry, credentials }, 200);
  },
);

agentRouter.openapi(
  createRoute({
    method: "post",
    path: AGENT_ROUTES.events,
    tags: ["Agent"],
    summary: "Report placement events",
    description: "Pulling, running, exited, failed. An event id seen before is counted as a duplicate.",
    security: NODE_TOKEN,
    middleware: AGENT_HOT,
    request: { body: body(EventBatch) },
    responses: {
      200: { description: "What was taken.", content: { "application/json": { schema: EventAck } } },
      ...agentErrors,
    },
  }),
  async (c) => {
    const node = c.get("node");
    const scheduler = schedulerOf(c.env, node.region);
    const ack = { accepted: 0, duplicates: 0, rejected: [] as { event_id: string; code: string }[] };
    // In order: a placement's events must reach the scheduler as the agent saw them.
    for (const event of c.req.valid("json").events) {
      const result = await viaScheduler(node.region, () => scheduler.reportEvent(node.id, event));
      if (!result.ok) ack.rejected.push({ event_id: event.event_id, code: result.code });
      else if (result.duplicate) ack.duplicates += 1;
      else ack.accepted += 1;
    }
    return respond(c, EventAck, ack, 200);
  },
);

agentRouter.openapi(
  createRoute({
    method: "post",
    path: AGENT_ROUTES.logs,
    tags: ["Agent"],
    summary: "Ship container log lines",
    description:
      "Batched; a line whose `(placement_id, seq)` arrived before from the same node is a duplicate and dropped.",
    security: NODE_TOKEN,
    middleware: AGENT,
    request: { body: body(LogBatch) },
    responses: {
      200: { description: "What was stored.", content: { "application/json": { schema: LogAck } } },
      ...agentErrors,
    },
  }),
  async (c) => {
    const node = c.get("node");
    const lines = c.req.valid("json").lines;
    // In id order per job and endpoint, so that readers paging by id miss none (job-logs.ts).
    const accepted = await insertLogLines(c.get("pg").db, node.id, lines);
    return respond(c, LogAck, { accepted, duplicates: lines.length - accepted }, 200);
  },
);

agentRouter.openapi(
  createRoute({
    method: "post",
    path: AGENT_ROUTES.heartbeat,
    tags: ["Agent"],
    summary: "Heartbeat with metrics",
    description:
      "GPU health, container metrics and the placements running; answers the node's state as the scheduler sees it.",
    security: NODE_TOKEN,
    middleware: AGENT,
    request: { body: body(Heartbeat) },
    responses: {
      200: { description: "The node's state.", content: { "application/json": { schema: HeartbeatAck } } },
      ...agentErrors,
    },
  }),
  async (c) => {
    const node = c.get("node");
    const heartbeat = c.req.valid("json");
    const result = await viaScheduler(node.region, () => schedulerOf(c.env, node.region).heartbeat(node.id, heartbeat));
    return respond(c, HeartbeatAck, { state: result.state }, 200);
  },
);
