/**
 * The wire contract between a node agent and the control plane (`/v1/agent/*` routes), and between
 * those routes and the RegionScheduler Durable Object. Times are epoch milliseconds.
 */
import { z } from "zod";
import { EpochMs, GpuModel } from "./common";
import { EnvVar, ImageRef } from "./job";

export const GpuInventory = z.object({
  index: z.number().int().min(0).max(15),
  uuid: z.string().max(128).optional(),
  name: z.string().max(128).optional(),
  memory_total_mib: z.number().int().nonnegative().optional(),
});
export type GpuInventory = z.infer<typeof GpuInventory>;

/** A host's address as peers dial it: an IPv4 or IPv6 address, or a DNS name. */
export const NodeAddress = z
  .string()
  .min(1)
  .max(253)
  .regex(/^[A-Za-z0-9.:-]+$/, "an IP address or a DNS name (letters, digits, '.', ':', '-')");

/**
 * Where the control plane reaches a node's ingress (the agent's reverse proxy to its endpoint
 * replicas): an http(s) origin, optionally with a path prefix; no query, fragment or credentials.
 */
export const IngressUrl = z
  .string()
  .max(2048)
  .url()
  .refine((raw) => {
    // Runs even when `.url()` has already failed (zod checks on): never throw here.
    if (!URL.canParse(raw)) return false;
    const url = new URL(raw);
    return (
      (url.protocol === "http:" || url.protocol === "https:") &&
      !url.search &&
      !url.hash &&
      !url.username &&
      !url.password
    );
  }, "an http:// or https:// URL without query, fragment or credentials");

/**
 * The node ingress's contract. The control plane forwards an endpoint request to
 * `<ingress_url>/p/<placement id><path and query>` with the node's ingress key (given at
 * registration) in `x-scalar-ingress-key`; the agent checks the key, drops it, and proxies to the
 * replica's container on its endpoint port. A refusal of the ingress's own (not the replica's
 * answer) carries `x-scalar-ingress-error` with one of INGRESS_ERRORS, which a container cannot set.
 */
export const INGRESS = {
  keyHeader: "x-scalar-ingress-key",
  errorHeader: "x-scalar-ingress-error",
  prefix: "/p/",
  /** The path on the ingress for a replica's request (`path` starts with "/", may carry a query). */
  path: (placementId: string, path: string) => `/p/${encodeURIComponent(placementId)}${path}`,
} as const;

/**
 * Refusals of the ingress itself: `unauthorized` (401, bad or missing key), `unknown_placement`
 * (404, no running replica with that id here), `replica_unreachable` (502, the container could not
 * be connected to: the request never reached it), `replica_failed` (502, the container had the
 * request and failed it: it dropped the connection before answering, or answered with something
 * that is not valid HTTP; it may have acted on it), `replica_timeout` (504, no answer in time).
 */
export const INGRESS_ERRORS = [
  "unauthorized",
  "unknown_placement",
  "replica_unreachable",
  "replica_failed",
  "replica_timeout",
] as const;
export type IngressError = (typeof INGRESS_ERRORS)[number];
export const INGRESS_ERROR_STATUS: Readonly<Record<IngressError, number>> = {
  unauthorized: 401,
  unknown_placement: 404,
  replica_unreachable: 502,
  replica_failed: 502,
  replica_timeout: 504,
};

/**
 * Methods a request to a replica may be sent with twice, by the ingress on a kept-alive connection
 * found closed and by the Worker to another replica (RFC 9110 §9.2.1: safe). PUT and DELETE are
 * idempotent by definition, but a replica's API need not honour that (a DELETE of "the next job"),
 * and neither proxy can tell, so they go once.
 */
export const RESENDABLE_METHODS: ReadonlySet<string> = new Set(["GET", "HEAD", "OPTIONS"]);

/**
 * Connection errors that mean the request never reached the replica (nothing accepted the
 * connection): the ingress answers them `replica_unreachable`, any other `replica_failed`.
 */
export const CONNECT_ERRORS: ReadonlySet<string> = new Set([
  "ECONNREFUSED",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EHOSTDOWN",
  "EADDRNOTAVAIL",
  "ENOTFOUND",
  "EAI_AGAIN",
]);

/**
 * Headers of one connection, not of the message (RFC 9110 §7.6.1): neither proxy on the way to a
 * replica (the Worker's invoke route, the node's ingress) forwards them, nor those named in `Connection`.
 */
export const HOP_BY_HOP_HEADERS: ReadonlySet<string> = new Set([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

/** A container engine call unanswered past the agent's engine timeout (the oldest such call). */
export const EngineStuck = z.object({
  /** When the oldest call still unanswered began. */
  since: EpochMs,
  /** Which engine call: `create`, `start`, `stop`, `remove`, `inspect`, … */
  operation: z.string().min(1).max(64),
  detail: z.string().max(512),
});
export type EngineStuck = z.infer<typeof EngineStuck>;

/** What an agent reports about its host when it registers. */
export const NodeInventory = z.object({
  hostname: z.string().max(255),
  agent_version: z.string().max(64),
  gpu_model: GpuModel,
  gpus: z.array(GpuInventory).max(16),
  cpu_milli: z.number().int().positive(),
  memory_mib: z.number().int().positive(),
  zone: z.string().max(64).optional(),
  /**
   * Where the node's peers reach it: an IPv4 or IPv6 address or a DNS name (the agent's --address,
   * else its first non-loopback IPv4). Multi-node jobs get rank 0's as their rendezvous address.
   */
  address: NodeAddress.optional(),
  /** Where the control plane reaches this node's ingress (absent: the node serves no endpoint traffic). */
  ingress_url: IngressUrl.optional(),
  /**
   * Present when the agent registers while its container engine does not answer (it registers
   * anyway, so operators see the node and why): the control plane cordons the node from the start,
   * as for a heartbeat's `engine_stuck`.
   */
  engine_stuck: EngineStuck.optional(),
});
export type NodeInventory = z.infer<typeof NodeInventory>;

export const RegisterResponse = z.object({
  node_id: z.string(),
  region: z.string(),
  heartbeat_interval_ms: z.number().int().positive(),
  poll_wait_ms: z.number().int().positive(),
  /**
   * The key the control plane sends in INGRESS.keyHeader to this node's ingress (absent: the
   * deployment has no INGRESS_SECRET, so no endpoint traffic is routed; the ingress refuses all).
   */
  ingress_key: z.string().min(32).max(128).optional(),
});
export type RegisterResponse = z.infer<typeof RegisterResponse>;

/** What the control plane wants to exist on a node. */
export const Placement = z.object({
  placement_id: z.string(),
  job_id: z.string(),
  attempt: z.number().int().positive(),
  /** A multi-node job runs one placement per node: this one's index (0-based) and how many there are. */
  gang_index: z.number().int().nonnegative().default(0),
  gang_size: z.number().int().positive().default(1),
  /** A multi-node job's rendezvous: the address of the node running gang index 0 (null: one node, or unknown). */
  gang_master_address: z.string().nullable().default(null),
  image: ImageRef,
  command: z.array(z.string()).default([]),
  args: z.array(z.string()).default([]),
  env: z.array(EnvVar.omit({ secret: true })).default([]),
  gpu_indices: z.array(z.number().int().min(0).max(15)),
  cpu_milli: z.number().int().positive(),
  memory_mib: z.number().int().positive(),
  /** The container is stopped at this instant (max runtime); null for endpoint replicas. */
  kill_deadline: EpochMs.nullable(),
  /** `stopped` asks the agent to stop the container (cancel): grace period, then kill. */
  desired: z.enum(["running", "stopped"]),
  grace_period_ms: z.number().int().nonnegative().default(10_000),
  /**
   * An endpoint replica's readiness check: the agent asks `GET http://<container>:<port><path>`
   * while the container runs and reports the answer (2xx or 3xx: ready) in its heartbeats.
   */
  health_check: z
    .object({ port: z.number().int().min(1).max(65_535), path: z.string().startsWith("/").max(512) })
    .nullable()
    .default(null),
});
export type Placement = z.infer<typeof Placement>;

/** Long-poll answer: the whole desired set for the node, and a version to wait past next time. */
export const PlacementSet = z.object({
  version: z.number().int().nonnegative(),
  placements: z.array(Placement),
});
export type PlacementSet = z.infer<typeof PlacementSet>;

const EventBase = z.object({
  /** Chosen by the agent; the control plane ignores an event id it has already seen. */
  event_id: z.string().min(1).max(128),
  placement_id: z.string(),
  at: EpochMs,
});

export const PlacementEvent = z.discriminatedUnion("type", [
  EventBase.extend({ type: z.literal("pulling"), progress: z.string().max(512).optional() }),
  EventBase.extend({ type: z.literal("running"), container_id: z.string().max(128).optional() }),
  EventBase.extend({
    type: z.literal("exited"),
    /** -1 when no container ever ran: stopped (cancel or deadline) before the agent created it. */
    exit_code: z.number().int(),
    oom_killed: z.boolean().default(false),
    signal: z.string().max(32).optional(),
    /** Why it stopped when we stopped it: cancelled, deadline. */
    stopped_by: z.enum(["cancel", "deadline"]).optional(),
  }),
  EventBase.extend({
    type: z.literal("failed"),
    reason: z.string().max(2048),
    /**
     * false: another attempt would fail the same way on any node (an image that does not exist, or
     * that the node may not read, or a malformed name), so the job is not retried. Absent: retryable.
     */
    retryable: z.boolean().optional(),
  }),
]);
export type PlacementEvent = z.infer<typeof PlacementEvent>;

export const EventBatch = z.object({ events: z.array(PlacementEvent).min(1).max(500) });
export type EventBatch = z.infer<typeof EventBatch>;

export const LogLine = z.object({
  placement_id: z.string(),
  /** Per placement, increasing: lets the control plane drop duplicates from a re-sent batch. */
  seq: z.number().int().nonnegative(),
  stream: z.enum(["stdout", "stderr"]),
  at: EpochMs,
  line: z.string().max(16_384),
});
export type LogLine = z.infer<typeof LogLine>;

export const LogBatch = z.object({ lines: z.array(LogLine).min(1).max(2_000) });
export type LogBatch = z.infer<typeof LogBatch>;

export const GpuHealth = z.object({
  index: z.number().int().min(0).max(15),
  healthy: z.boolean(),
  temperature_c: z.number().optional(),
  utilisation_pct: z.number().min(0).max(100).optional(),
  memory_used_mib: z.number().nonnegative().optional(),
  memory_total_mib: z.number().nonnegative().optional(),
  power_w: z.number().nonnegative().optional(),
});
export type GpuHealth = z.infer<typeof GpuHealth>;

export const ContainerMetrics = z.object({
  placement_id: z.string(),
  cpu_pct: z.number().nonnegative().optional(),
  memory_bytes: z.number().nonnegative().optional(),
  memory_limit_bytes: z.number().nonnegative().optional(),
  pids: z.number().int().nonnegative().optional(),
  /** The placement's readiness check answered 2xx or 3xx at this heartbeat (absent: no check). */
  ready: z.boolean().optional(),
});
export type ContainerMetrics = z.infer<typeof ContainerMetrics>;

export const Heartbeat = z.object({
  at: EpochMs,
  gpus: z.array(GpuHealth).max(16),
  disk_free_bytes: z.number().nonnegative().optional(),
  containers: z.array(ContainerMetrics).max(64).default([]),
  /**
   * Placements whose containers run now or may at any moment (still being pulled, created or
   * started), and running containers of the agent's with no placement: what holds GPUs. The control
   * plane ends a run asked to stop only once this no longer lists it, and takes a lost node back
   * only once it lists nothing outside the node's runs.
   */
  running: z.array(z.string()).max(64).default([]),
  /**
   * Present while the container engine leaves a call unanswered past the agent's engine timeout
   * (a hung engine: e.g. a container start that never returns). The control plane cordons the node:
   * nothing new is placed on it until a heartbeat comes without this.
   */
  engine_stuck: EngineStuck.optional(),
});
export type Heartbeat = z.infer<typeof Heartbeat>;

/** What `POST events` answers: ids seen before count as duplicates and are not applied again. */
export const EventBatchResponse = z.object({
  accepted: z.number().int().nonnegative(),
  duplicates: z.number().int().nonnegative(),
});
export type EventBatchResponse = z.infer<typeof EventBatchResponse>;

export const LogBatchResponse = z.object({ accepted: z.number().int().nonnegative() });
export type LogBatchResponse = z.infer<typeof LogBatchResponse>;

/** The node's state as the control plane sees it; `unknown` makes the agent register again. */
export const HeartbeatResponse = z.object({ state: z.string() });
export type HeartbeatResponse = z.infer<typeof HeartbeatResponse>;

export { MAX_REQUEST_BODY_BYTES } from "./limits";

/** The agent routes (all under the per-node token, `Authorization: Bearer <node token>`). */
export const AGENT_ROUTES = {
  /** POST NodeInventory → RegisterResponse */
  register: "/v1/agent/register",
  /** GET ?since=<version>&wait_ms=<ms> → PlacementSet (long-poll: answers early when the set changes) */
  placements: "/v1/agent/placements",
  /** POST EventBatch → { accepted, duplicates } */
  events: "/v1/agent/events",
  /** POST LogBatch → { accepted } */
  logs: "/v1/agent/logs",
  /** POST Heartbeat → { state } */
  heartbeat: "/v1/agent/heartbeat",
  /** GET → RegistryAuth: the credentials to pull one of this node's placements' image with */
  registryAuth: "/v1/agent/placements/{placement_id}/registry-auth",
} as const;
