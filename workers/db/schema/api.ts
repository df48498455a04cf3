/**
 * The API gateway's tables: endpoints (long-lived services), idempotency records, job logs shipped by
 * node agents, the submission ledger the reconciler works from, and per-account rate-limit overrides.
 */
import { sql } from "drizzle-orm";
import {
  bigint,
  bigserial,
  check,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from "drizzle-orm/pg-core";
import { accounts, apiKeys, GPU_MODELS, inList, jobs, nodes, RUN_STATUSES, TIERS, users } from "./core";

const tz = (name: string) => timestamp(name, { withTimezone: true, mode: "date" });

export const ENDPOINT_STATUSES = ["active", "deleted"] as const;
export const LOG_STREAMS = ["stdout", "stderr"] as const;
export const IDEMPOTENCY_STATES = ["in_progress", "completed"] as const;

/** A long-lived service; the region scheduler keeps `min_replicas` replicas placed. */
export const endpoints = pgTable(
  "endpoints",
  {
    id: uuid("id").primaryKey().defaultRandom(),
    accountId: uuid("account_id")
      .notNull()
      .references(() => accounts.id, { onDelete: "cascade" }),
    createdBy: uuid("created_by").references(() => users.id, { onDelete: "set null" }),
    createdByKey: uuid("created_by_key").references(() => apiKeys.id, { onDelete: "set null" }),
    name: text("name").notNull(),
    region: text("region").notNull(),
    tier: text("tier").notNull(),
    status: text("status").notNull().default("active"),
    image: text("image").notNull(),
    command: text("command").array().notNull().default(sql`'{}'::text[]`),
    args: text("args").array().notNull().default(sql`'{}'::text[]`),
    /** `[{name, value, secret}]`; the API never returns the value of a secret entry. */
    env: jsonb("env").notNull().default(sql`'[]'::jsonb`),
    gpuCount: integer("gpu_count").notNull(),
    gpuModels: text("gpu_models").array().notNull().default(sql`'{}'::text[]`),
    cpuMilli: integer("cpu_milli").notNull(),
    memoryMib: integer("memory_mib").notNull(),
    minReplicas: integer("min_replicas").notNull(),
    maxReplicas: integer("max_replicas").notNull(),
    scaleDownDelayS: integer("scale_down_delay_s").notNull(),
    /** Requests in flight one replica is meant to take; traffic scales replicas to match. */
    targetConcurrency: integer("target_concurrency").notNull().default(4),
    port: integer("port").notNull(),
    healthPath: text("health_path").notNull(),
    startupTimeoutS: integer("startup_timeout_s").notNull().default(600),
    labels: jsonb("labels").notNull().default(sql`'{}'::jsonb`),
    /** Bumped on every change; the scheduler has seen the spec when `synced_version` equals it. */
    version: integer("version").notNull().default(1),
    syncedVersion: integer("synced_version").notNull().default(0),
    syncError: text("sync_error"),
    createdAt: tz("created_at").notNull().defaultNow(),
    updatedAt: tz("updated_at").notNull().defaultNow(),
    deletedAt: tz("deleted_at"),
  },
  (t) => [
    index("endpoints_account_list_idx").on(t.accountId, t.createdAt.desc(), t.id),
    uniqueIndex("endpoints_account_name_key").on(t.accountId, t.name).where(sql`${t.status} = 'active'`),
    index("endpoints_unsynced_idx").on(t.region).where(sql`${t.syncedVersion} < ${t.version}`),
    index("endpoints_labels_idx").using("gin", t.labels),
    check("endpoints_status", sql`${t.status} in (${inList(ENDPOINT_STATUSES)})`),
    check("endpoints_tier", sql`${t.tier} in (${inList(TIERS)})`),
    check("endpoints_name", sql`${t.name} ~ '^[a-z0-9][a-z0-9-]{0,62}$'`),
    check("endpoints_gpu_count", sql`${t.gpuCount} between 1 and 8`),
    check("endpoints_gpu_models", sql`${t.gpuModels} <@ array[${inList(GPU_MODELS)}]::text[]`),
    check("endpoints_resources", sql`${t.cpuMilli} > 0 and ${t.memoryMib} > 0`),
    check(
      "endpoints_replicas",
      sql`${t.minReplicas} between 0 and 64 and ${t.maxReplicas} between 1 and 64 and ${t.minReplicas} <= ${t.maxReplicas}`,
    ),
    check("endpoints_scale_down_delay", sql`${t.scaleDownDelayS} between 0 and 86400`),
    check("endpoints_target_concurrency", sql`${t.targetConcurrency} between 1 and 1000`),
    check("endpoints_port", sql`${t.port} between 1 and 65535`),
    check("endpoints_startup_timeout", sql`${t.startupTimeoutS} between 10 and 86400`),
    check("endpoints_versions", sql`${t.syncedVersion} <= ${t.version}`),
  ],
);

/**
 * One `Idempotency-Key` of one account: claimed (`in_progress`) before the request runs, then the
 * response it produced (`completed`), replayed for 24 h to a retry with the same body.
 */
export const idempotencyKeys = pgTable(
  "idempotency_keys",
  {
    accountId: uuid("account_id")
      .notNull()
      .references(() => accounts.id, { onDelete: "cascade" }),
    key: text("key").notNull(),
    method: text("method").notNull(),
    path: text("path").notNull(),
    /** SHA-256 of method, path and the canonical JSON body, hex. */
    requestHash: text("request_hash").notNull(),
    state: text("state").notNull().default("in_progress"),
    responseStatus: integer("response_status"),
    responseBody: jsonb("response_body"),
    /** A claim whose request died is taken over after this instant (renewed while it runs). */
    lockedUntil: tz("locked_until").notNull(),
    /** Who holds the claim: only that request completes, renews or releases it. */
    claimId: uuid("claim_id").notNull().defaultRandom(),
    /**
     * The id of what the request makes (a job's id), fixed when the key is first claimed and kept
     * when a dead claim is taken over: a retry cannot make a second one.
     */
    resourceId: uuid("resource_id").notNull().defaultRandom(),
    createdAt: tz("created_at").notNull().defaultNow(),
    expiresAt: tz("expires_at").notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.accountId, t.key] }),
    index("idempotency_keys_expires_idx").on(t.expiresAt),
    check("idempotency_keys_state", sql`${t.state} in (${inList(IDEMPOTENCY_STATES)})`),
    check("idempotency_keys_key_len", sql`char_length(${t.key}) between 1 and 255`),
    check("idempotency_keys_completed", sql`${t.state} = 'in_progress' or ${t.responseStatus} is not null`),
  ],
);

/**
 * One run of an endpoint replica on a node, as the region scheduler's outbox records it: what ties
 * a replica's log lines to its endpoint (placement → endpoint, node), as `job_runs` does for jobs.
 */
export const replicaRuns = pgTable(
  "replica_runs",
  {
    /** The placement id the scheduler chose; the agent ships log lines against it. */
    id: text("id").primaryKey(),
    endpointId: uuid("endpoint_id")
      .notNull()
      .references(() => endpoints.id, { onDelete: "cascade" }),
    accountId: uuid("account_id")
      .notNull()
      .references(() => accounts.id, { onDelete: "cascade" }),
    replica: integer("replica").notNull(),
    attempt: integer("attempt").notNull(),
    nodeId: text("node_id")
      .notNull()
      .references(() => nodes.id),
    status: text("status").notNull(),
    placedAt: tz("placed_at").notNull(),
    startedAt: tz("started_at"),
    finishedAt: tz("finished_at"),
    exitCode: integer("exit_code"),
    /** The tier and GPUs the run was placed with (a running one is priced by them); null: the endpoint's. */
    tier: text("tier"),
    gpuCount: integer("gpu_count"),
  },
  (t) => [
    index("replica_runs_endpoint_idx").on(t.endpointId, t.placedAt),
    // The spend cap counts running replicas' usage so far (quota.ts).
    index("replica_runs_running_idx").on(t.accountId).where(sql`${t.status} = 'running'`),
    check("replica_runs_status", sql`${t.status} in (${inList(RUN_STATUSES)})`),
    check("replica_runs_replica", sql`${t.replica} >= 0`),
    check("replica_runs_attempt", sql`${t.attempt} >= 1`),
    check("replica_runs_tier", sql`${t.tier} is null or ${t.tier} in (${inList(TIERS)})`),
    check("replica_runs_gpu_count", sql`${t.gpuCount} is null or ${t.gpuCount} >= 1`),
  ],
);

/**
 * Container output shipped by node agents. `(placement_id, node_id, seq)` de-duplicates re-sent batches
 * (per node: a node cannot take the place of another's lines by sending their numbers first); `id`
 * is the read cursor. Lines are tied to a job at read time through `job_runs` (placement → job, node),
 * or to an endpoint through `replica_runs`.
 */
export const jobLogs = pgTable(
  "job_logs",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    placementId: text("placement_id").notNull(),
    /** The node whose agent sent the line; read joins require it to match the run's node. */
    nodeId: text("node_id").notNull(),
    seq: bigint("seq", { mode: "number" }).notNull(),
    stream: text("stream").notNull(),
    at: tz("at").notNull(),
    line: text("line").notNull(),
    receivedAt: tz("received_at").notNull().defaultNow(),
  },
  (t) => [
    uniqueIndex("job_logs_placement_node_seq_key").on(t.placementId, t.nodeId, t.seq),
    index("job_logs_placement_id_idx").on(t.placementId, t.id),
    // The retention task deletes by arrival time, oldest first.
    index("job_logs_received_at_idx").on(t.receivedAt),
    check("job_logs_stream", sql`${t.stream} in (${inList(LOG_STREAMS)})`),
    check("job_logs_seq", sql`${t.seq} >= 0`),
  ],
);

/**
 * The submission ledger: a job is known to its region's scheduler once `acked_at` is set. The
 * reconciler re-submits queued jobs without it.
 */
export const jobSubmissions = pgTable(
  "job_submissions",
  {
    jobId: uuid("job_id")
      .primaryKey()
      .references(() => jobs.id, { onDelete: "cascade" }),
    region: text("region").notNull(),
    attempts: integer("attempts").notNull().default(0),
    ackedAt: tz("acked_at"),
    lastAttemptAt: tz("last_attempt_at"),
    lastError: text("last_error"),
  },
  (t) => [index("job_submissions_unacked_idx").on(t.region).where(sql`${t.ackedAt} is null`)],
);

/** Per-account rate limits replacing the tier's defaults (e.g. a customer's negotiated limit). */
export const rateLimitOverrides = pgTable(
  "rate_limit_overrides",
  {
    accountId: uuid("account_id")
      .primaryKey()
      .references(() => accounts.id, { onDelete: "cascade" }),
    accountLimit: integer("account_limit").notNull(),
    keyLimit: integer("key_limit").notNull(),
    windowS: integer("window_s").notNull(),
    /** Endpoint invoke requests per window for the whole account; null: the tier's invoke rate. */
    invokeLimit: integer("invoke_limit"),
    reason: text("reason"),
    createdAt: tz("created_at").notNull().defaultNow(),
  },
  (t) => [
    check("rate_limit_overrides_limits", sql`${t.accountLimit} >= 1 and ${t.keyLimit} >= 1`),
    check("rate_limit_overrides_window", sql`${t.windowS} between 1 and 86400`),
    check("rate_limit_overrides_invoke", sql`${t.invokeLimit} is null or ${t.invokeLimit} >= 1`),
  ],
);

/**
 * An account's credentials for a private container registry. Nodes pull the account's images from
 * that registry with them (the agent fetches them per pull: workers/api/agent.ts). The password is
 * sealed (workers/auth/env-secrets.ts, associated data: the account and `registry:<host>`), never
 * stored in the clear nor returned by the API. One per account and registry host.
 */
export const registryCredentials = pgTable(
  "registry_credentials",
  {
    id: uuid("id").primaryKey().defaultRandom(),
    accountId: uuid("account_id")
      .notNull()
      .references(() => accounts.id, { onDelete: "cascade" }),
    /** Host[:port] as core/schemas/registry.ts normalises it (`docker.io` for Docker Hub). */
    registry: text("registry").notNull(),
    username: text("username").notNull(),
    sealedPassword: text("sealed_password").notNull(),
    createdBy: uuid("created_by").references(() => users.id, { onDelete: "set null" }),
    createdByKey: uuid("created_by_key").references(() => apiKeys.id, { onDelete: "set null" }),
    createdAt: tz("created_at").notNull().defaultNow(),
    updatedAt: tz("updated_at").notNull().defaultNow(),
  },
  (t) => [
    uniqueIndex("registry_credentials_account_registry_key").on(t.accountId, t.registry),
    index("registry_credentials_account_list_idx").on(t.accountId, t.createdAt.desc(), t.id),
    check("registry_credentials_registry_len", sql`char_length(${t.registry}) between 1 and 253`),
    check("registry_credentials_username_len", sql`char_length(${t.username}) between 1 and 256`),
  ],
);

/**
 * One open `follow=true` log stream (a tail), so an account's tails can be counted across isolates:
 * `seen_at` is renewed while it runs; a row not renewed for a while is a tail whose isolate died.
 */
export const logTails = pgTable(
  "log_tails",
  {
    id: uuid("id").primaryKey(),
    accountId: uuid("account_id")
      .notNull()
      .references(() => accounts.id, { onDelete: "cascade" }),
    openedAt: tz("opened_at").notNull().defaultNow(),
    seenAt: tz("seen_at").notNull().defaultNow(),
  },
  (t) => [index("log_tails_account_idx").on(t.accountId, t.seenAt)],
);
