/**
 * The system of record. Every table here is owned by Postgres; the RegionScheduler Durable Object
 * writes its decisions into them through its outbox. Money is integer cents (bigint), instants are
 * `timestamptz`, and every enum is a check constraint so Postgres itself refuses bad rows.
 */
import { sql } from "drizzle-orm";
import {
  bigint,
  bigserial,
  boolean,
  check,
  index,
  integer,
  jsonb,
  pgSchema,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from "drizzle-orm/pg-core";

const tz = (name: string) => timestamp(name, { withTimezone: true, mode: "date" });
const createdAt = () => tz("created_at").notNull().defaultNow();
const cents = (name: string) => bigint(name, { mode: "number" });

/** Quote a list of literals for a check constraint. */
export function inList(values: readonly string[]) {
  return sql.raw(values.map((v) => `'${v.replaceAll("'", "''")}'`).join(", "));
}

export const ACCOUNT_ROLES = ["owner", "admin", "member", "viewer"] as const;
export const TIERS = ["fast", "flex"] as const;
export const GPU_MODELS = ["H100", "H200"] as const;
export const JOB_STATUSES = ["queued", "placed", "running", "succeeded", "failed", "cancelled"] as const;
export const RUN_STATUSES = ["placed", "pulling", "running", "succeeded", "failed", "cancelled", "lost"] as const;
export const BLOCK_STATUSES = ["pending", "active", "expired", "sold", "cancelled"] as const;
export const NODE_STATES = ["provisioning", "ready", "draining", "lost", "released"] as const;
export const INVOICE_STATUSES = ["draft", "open", "paid", "void", "uncollectible"] as const;
export const API_KEY_SCOPES = [
  "jobs:read",
  "jobs:write",
  "endpoints:read",
  "endpoints:write",
  "endpoints:invoke",
  "billing:read",
  "admin",
] as const;
export const ACTOR_TYPES = ["user", "api_key", "system", "agent", "operator"] as const;

/**
 * An account's payment hold (`accounts.payment_hold`): the unpaid invoice that stops new work, as it
 * was when the hold was set (workers/billing/payment-hold.ts). The submission reads it in the
 * statement that writes the job, so the refusal's details need no other row.
 */
export interface PaymentHold {
  invoice_id: string;
  number: string | null;
  /** The invoice's month, `YYYY-MM` (UTC). */
  month: string;
  amount_due_cents: number;
  currency: string;
  hosted_invoice_url: string | null;
  /** When the hold began (ISO 8601); kept when the hold moves to another unpaid invoice. */
  since: string;
}

/** Supabase's `auth.users` (a shim provides it where no Supabase runs). Only `id` is referenced. */
const auth = pgSchema("auth");
const authUsers = auth.table("users", {
  id: uuid("id").primaryKey(),
  email: text("email"),
});

export const accounts = pgTable(
  "accounts",
  {
    id: uuid("id").primaryKey().defaultRandom(),
    name: text("name").notNull(),
    /** Tier entitlement: Fast only for accounts allowed it. */
    fastTierEnabled: boolean("fast_tier_enabled").notNull().default(false),
    /** Quota: GPUs this account may hold at once (queued work beyond it is refused). */
    maxConcurrentGpus: integer("max_concurrent_gpus").notNull().default(16),
    /** Optional monthly spend cap in cents; null = none. */
    monthlySpendCapCents: cents("monthly_spend_cap_cents"),
    /** The operator account: its admins run the fleet. */
    isOperator: boolean("is_operator").notNull().default(false),
    stripeCustomerId: text("stripe_customer_id").unique(),
    /** Set while an invoice is unpaid past its grace (or uncollectible): no new jobs or endpoints. */
    paymentHold: jsonb("payment_hold").$type<PaymentHold>(),
    createdAt: createdAt(),
  },
  (t) => [
    check("accounts_name_len", sql`char_length(${t.name}) between 1 and 200`),
    check("accounts_max_concurrent_gpus", sql`${t.maxConcurrentGpus} >= 0`),
    check("accounts_monthly_spend_cap", sql`${t.monthlySpendCapCents} is null or ${t.monthlySpendCapCents} >= 0`),
    check(
      "accounts_payment_hold",
      sql`${t.paymentHold} is null or (jsonb_typeof(${t.paymentHold} -> 'invoice_id') = 'string' and jsonb_typeof(${t.paymentHold} -> 'since') = 'string')`,
    ),
  ],
);

/** One row per Supabase user, created by a trigger on `auth.users`. */
export const users = pgTable("users", {
  id: uuid("id")
    .primaryKey()
    .references(() => authUsers.id, { onDelete: "cascade" }),
  email: text("email"),
  displayName: text("display_name"),
  createdAt: createdAt(),
});

/** A user's role in an account. */
export const memberships = pgTable(
  "memberships",
  {
    accountId: uuid("account_id")
      .notNull()
      .references(() => accounts.id, { onDelete: "cascade" }),
    userId: uuid("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    role: text("role").notNull(),
    createdAt: createdAt(),
  },
  (t) => [
    primaryKey({ columns: [t.accountId, t.userId] }),
    index("memberships_user_idx").on(t.userId),
    check("memberships_role", sql`${t.role} in (${inList(ACCOUNT_ROLES)})`),
  ],
);

export const apiKeys = pgTable(
  "api_keys",
  {
    id: uuid("id").primaryKey().defaultRandom(),
    accountId: uuid("account_id")
      .notNull()
      .references(() => accounts.id, { onDelete: "cascade" }),
    createdBy: uuid("created_by").references(() => users.id, { onDelete: "set null" }),
    name: text("name").notNull(),
    /** The visible start of the key, e.g. `sk_live_ab12cd34`; unique so it finds the row. */
    prefix: text("prefix").notNull(),
    /** SHA-256 of the whole secret, hex. The secret itself is never stored. */
    secretHash: text("secret_hash").notNull(),
    scopes: text("scopes").array().notNull(),
    lastUsedAt: tz("last_used_at"),
    expiresAt: tz("expires_at"),
    revokedAt: tz("revoked_at"),
    createdAt: createdAt(),
  },
  (t) => [
    uniqueIndex("api_keys_prefix_key").on(t.prefix),
    uniqueIndex("api_keys_secret_hash_key").on(t.secretHash),
    index("api_keys_account_list_idx").on(t.accountId, t.createdAt.desc(), t.id),
    check("api_keys_name_len", sql`char_length(${t.name}) between 1 and 200`),
    check("api_keys_scopes", sql`${t.scopes} <@ array[${inList(API_KEY_SCOPES)}]::text[]`),
  ],
);

/** SF Compute blocks: N nodes for [start, end), bought (or sold back) on the market. */
export const blocks = pgTable(
  "blocks",
  {
    id: uuid("id").primaryKey().defaultRandom(),
    region: text("region").notNull(),
    zone: text("zone").notNull(),
    instanceType: text("instance_type").notNull(),
    gpuModel: text("gpu_model").notNull(),
    nodeCount: integer("node_count").notNull(),
    startAt: tz("start_at").notNull(),
    endAt: tz("end_at").notNull(),
    /** What the market charged for the whole block, cents. */
    priceCents: cents("price_cents").notNull(),
    status: text("status").notNull().default("pending"),
    sfOrderId: text("sf_order_id"),
    sfContractId: text("sf_contract_id"),
    createdAt: createdAt(),
  },
  (t) => [
    index("blocks_region_status_idx").on(t.region, t.status, t.endAt),
    uniqueIndex("blocks_sf_order_key").on(t.sfOrderId),
    check("blocks_status", sql`${t.status} in (${inList(BLOCK_STATUSES)})`),
    check("blocks_gpu_model", sql`${t.gpuModel} in (${inList(GPU_MODELS)})`),
    check("blocks_node_count", sql`${t.nodeCount} between 1 and 1024`),
    check("blocks_price", sql`${t.priceCents} >= 0`),
    check("blocks_window", sql`${t.endAt} > ${t.startAt}`),
  ],
);

export const nodes = pgTable(
  "nodes",
  {
    /** Scalar's node id; the agent learns it at registration. */
    id: text("id").primaryKey(),
    blockId: uuid("block_id").references(() => blocks.id, { onDelete: "set null" }),
    region: text("region").notNull(),
    zone: text("zone").notNull(),
    gpuModel: text("gpu_model").notNull(),
    gpuCount: integer("gpu_count").notNull(),
    cpuMilli: integer("cpu_milli").notNull(),
    memoryMib: integer("memory_mib").notNull(),
    state: text("state").notNull().default("provisioning"),
    /** SF Compute's node id (`n_…`), when the node came from the market. */
    sfNodeId: text("sf_node_id"),
    hostname: text("hostname"),
    /** SHA-256 of the per-node agent token, hex; null once revoked. */
    agentTokenHash: text("agent_token_hash"),
    registeredAt: tz("registered_at"),
    lastHeartbeatAt: tz("last_heartbeat_at"),
    createdAt: createdAt(),
  },
  (t) => [
    index("nodes_region_state_idx").on(t.region, t.state),
    uniqueIndex("nodes_agent_token_hash_key").on(t.agentTokenHash),
    uniqueIndex("nodes_sf_node_key").on(t.sfNodeId),
    check("nodes_state", sql`${t.state} in (${inList(NODE_STATES)})`),
    check("nodes_gpu_model", sql`${t.gpuModel} in (${inList(GPU_MODELS)})`),
    check("nodes_gpu_count", sql`${t.gpuCount} between 0 and 16`),
    check("nodes_cpu_memory", sql`${t.cpuMilli} > 0 and ${t.memoryMib} > 0`),
  ],
);

export const jobs = pgTable(
  "jobs",
  {
    id: uuid("id").primaryKey().defaultRandom(),
    accountId: uuid("account_id")
      .notNull()
      .references(() => accounts.id, { onDelete: "cascade" }),
    createdBy: uuid("created_by").references(() => users.id, { onDelete: "set null" }),
    createdByKey: uuid("created_by_key").references(() => apiKeys.id, { onDelete: "set null" }),
    region: text("region").notNull(),
    tier: text("tier").notNull(),
    priority: integer("priority").notNull().default(0),
    status: text("status").notNull().default("queued"),
    image: text("image").notNull(),
    command: text("command").array().notNull().default(sql`'{}'::text[]`),
    args: text("args").array().notNull().default(sql`'{}'::text[]`),
    /** `[{name, value, secret}]`; the API never returns the value of a secret entry. */
    env: jsonb("env").notNull().default(sql`'[]'::jsonb`),
    gpuCount: integer("gpu_count").notNull(),
    gpuModels: text("gpu_models").array().notNull().default(sql`'{}'::text[]`),
    cpuMilli: integer("cpu_milli").notNull(),
    memoryMib: integer("memory_mib").notNull(),
    maxRuntimeS: integer("max_runtime_s").notNull(),
    estimatedDurationS: integer("estimated_duration_s"),
    maxAttempts: integer("max_attempts").notNull().default(3),
    attempts: integer("attempts").notNull().default(0),
    labels: jsonb("labels").notNull().default(sql`'{}'::jsonb`),
    /** Why the packer has not placed it yet, e.g. `0/12 nodes: 9 insufficient free GPUs, 3 GPU model not allowed`. */
    waitingReason: text("waiting_reason"),
    exitCode: integer("exit_code"),
    failureReason: text("failure_reason"),
    deadLetteredAt: tz("dead_lettered_at"),
    createdAt: createdAt(),
    updatedAt: tz("updated_at").notNull().defaultNow(),
    startedAt: tz("started_at"),
    finishedAt: tz("finished_at"),
  },
  (t) => [
    index("jobs_account_list_idx").on(t.accountId, t.createdAt.desc(), t.id),
    index("jobs_account_status_idx").on(t.accountId, t.status, t.createdAt.desc()),
    index("jobs_region_status_idx").on(t.region, t.status),
    index("jobs_labels_idx").using("gin", t.labels),
    index("jobs_dead_letter_idx").on(t.deadLetteredAt).where(sql`${t.deadLetteredAt} is not null`),
    check("jobs_status", sql`${t.status} in (${inList(JOB_STATUSES)})`),
    check("jobs_tier", sql`${t.tier} in (${inList(TIERS)})`),
    check("jobs_gpu_count", sql`${t.gpuCount} between 1 and 64 and (${t.gpuCount} <= 8 or ${t.gpuCount} % 8 = 0)`),
    check("jobs_gpu_models", sql`${t.gpuModels} <@ array[${inList(GPU_MODELS)}]::text[]`),
    check("jobs_resources", sql`${t.cpuMilli} > 0 and ${t.memoryMib} > 0`),
    check("jobs_priority", sql`${t.priority} between -1000 and 1000`),
    check("jobs_max_runtime", sql`${t.maxRuntimeS} between 1 and 2592000`),
    check("jobs_attempts", sql`${t.attempts} >= 0 and ${t.maxAttempts} between 1 and 20`),
  ],
);

/** One attempt of a job on a node. */
export const jobRuns = pgTable(
  "job_runs",
  {
    /** The placement id the scheduler chose; the agent reports against it. */
    id: text("id").primaryKey(),
    jobId: uuid("job_id")
      .notNull()
      .references(() => jobs.id, { onDelete: "cascade" }),
    accountId: uuid("account_id")
      .notNull()
      .references(() => accounts.id, { onDelete: "cascade" }),
    attempt: integer("attempt").notNull(),
    /** Its place in a multi-node job (0 on one node): the container's SCALAR_NODE_RANK. */
    gangIndex: integer("gang_index").notNull().default(0),
    nodeId: text("node_id")
      .notNull()
      .references(() => nodes.id),
    status: text("status").notNull(),
    gpuCount: integer("gpu_count").notNull(),
    placedAt: tz("placed_at").notNull(),
    startedAt: tz("started_at"),
    finishedAt: tz("finished_at"),
    exitCode: integer("exit_code"),
    oomKilled: boolean("oom_killed").notNull().default(false),
    failureReason: text("failure_reason"),
  },
  (t) => [
    uniqueIndex("job_runs_job_attempt_key").on(t.jobId, t.attempt, t.nodeId),
    index("job_runs_account_idx").on(t.accountId, t.placedAt.desc()),
    index("job_runs_node_idx").on(t.nodeId),
    check("job_runs_status", sql`${t.status} in (${inList(RUN_STATUSES)})`),
    check("job_runs_attempt", sql`${t.attempt} >= 1`),
    check("job_runs_gang_index", sql`${t.gangIndex} >= 0`),
    check("job_runs_gpu_count", sql`${t.gpuCount} between 0 and 8`),
    check("job_runs_window", sql`${t.finishedAt} is null or ${t.finishedAt} >= ${t.placedAt}`),
  ],
);

/** Which GPU of which node a run holds. One GPU index of one node has at most one active assignment. */
export const gpuAssignments = pgTable(
  "gpu_assignments",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    jobRunId: text("job_run_id")
      .notNull()
      .references(() => jobRuns.id, { onDelete: "cascade" }),
    nodeId: text("node_id")
      .notNull()
      .references(() => nodes.id),
    gpuIndex: integer("gpu_index").notNull(),
    assignedAt: tz("assigned_at").notNull(),
    releasedAt: tz("released_at"),
  },
  (t) => [
    uniqueIndex("gpu_assignments_active_key").on(t.nodeId, t.gpuIndex).where(sql`${t.releasedAt} is null`),
    uniqueIndex("gpu_assignments_run_gpu_key").on(t.jobRunId, t.nodeId, t.gpuIndex),
    check("gpu_assignments_gpu_index", sql`${t.gpuIndex} between 0 and 15`),
    check("gpu_assignments_window", sql`${t.releasedAt} is null or ${t.releasedAt} >= ${t.assignedAt}`),
  ],
);

/** GPU-seconds of a finished run, by tier and GPU model: what billing rates. One per run. */
export const usageEvents = pgTable(
  "usage_events",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    accountId: uuid("account_id")
      .notNull()
      .references(() => accounts.id, { onDelete: "cascade" }),
    jobId: uuid("job_id").references(() => jobs.id, { onDelete: "set null" }),
    jobRunId: text("job_run_id").notNull(),
    tier: text("tier").notNull(),
    gpuModel: text("gpu_model").notNull(),
    gpuCount: integer("gpu_count").notNull(),
    gpuSeconds: bigint("gpu_seconds", { mode: "number" }).notNull(),
    periodStart: tz("period_start").notNull(),
    periodEnd: tz("period_end").notNull(),
    invoiceId: uuid("invoice_id").references(() => invoices.id, { onDelete: "set null" }),
    createdAt: createdAt(),
  },
  (t) => [
    uniqueIndex("usage_events_run_key").on(t.jobRunId),
    index("usage_events_account_period_idx").on(t.accountId, t.periodStart),
    check("usage_events_tier", sql`${t.tier} in (${inList(TIERS)})`),
    check("usage_events_gpu_model", sql`${t.gpuModel} in (${inList(GPU_MODELS)})`),
    check("usage_events_gpu_seconds", sql`${t.gpuSeconds} >= 0 and ${t.gpuCount} >= 0`),
    check("usage_events_window", sql`${t.periodEnd} >= ${t.periodStart}`),
  ],
);

export const invoices = pgTable(
  "invoices",
  {
    id: uuid("id").primaryKey().defaultRandom(),
    accountId: uuid("account_id")
      .notNull()
      .references(() => accounts.id, { onDelete: "cascade" }),
    periodStart: tz("period_start").notNull(),
    periodEnd: tz("period_end").notNull(),
    status: text("status").notNull().default("draft"),
    currency: text("currency").notNull().default("usd"),
    subtotalCents: cents("subtotal_cents").notNull().default(0),
    totalCents: cents("total_cents").notNull().default(0),
    stripeInvoiceId: text("stripe_invoice_id").unique(),
    /** The lines as rated (workers/billing): tier, GPU model, GPU-seconds, price, amount. */
    lines: jsonb("lines").notNull().default(sql`'[]'::jsonb`),
    /** Stripe's invoice number and payment page, once finalized. */
    number: text("number"),
    /** When it was first finalized (sent for collection): the payment hold's grace runs from here. */
    finalizedAt: tz("finalized_at"),
    hostedInvoiceUrl: text("hosted_invoice_url"),
    /** Why the last attempt to hand it to Stripe failed (retried by the next billing run). */
    lastError: text("last_error"),
    /** From Stripe's webhooks: when it was paid; its failed collection attempts, the last one's reason, and the next. */
    paidAt: tz("paid_at"),
    paymentAttempts: integer("payment_attempts").notNull().default(0),
    paymentError: text("payment_error"),
    nextPaymentAttemptAt: tz("next_payment_attempt_at"),
    /**
     * When the hourly reconcile last read it from Stripe, whatever came of it (workers/billing/reconcile.ts):
     * the least recently checked are read first, so a run that stops leaves the rest to the next.
     */
    stripeCheckedAt: tz("stripe_checked_at"),
    updatedAt: tz("updated_at").notNull().defaultNow(),
    createdAt: createdAt(),
  },
  (t) => [
    uniqueIndex("invoices_account_period_key").on(t.accountId, t.periodStart),
    index("invoices_unsent_idx").on(t.createdAt).where(sql`${t.status} = 'draft'`),
    // The payment-hold sweep's candidates (workers/billing/payment-hold.ts).
    index("invoices_unpaid_idx").on(t.accountId, t.finalizedAt).where(sql`${t.status} in ('open', 'uncollectible')`),
    check("invoices_status", sql`${t.status} in (${inList(INVOICE_STATUSES)})`),
    check("invoices_amounts", sql`${t.subtotalCents} >= 0 and ${t.totalCents} >= 0`),
    check("invoices_currency", sql`${t.currency} ~ '^[a-z]{3}$'`),
    check("invoices_window", sql`${t.periodEnd} > ${t.periodStart}`),
  ],
);

/**
 * Stripe webhook events already applied, by Stripe's event id: Stripe delivers at least once (and
 * retries for days), so an event seen again is acknowledged and not applied twice.
 */
export const stripeEvents = pgTable("stripe_events", {
  id: text("id").primaryKey(),
  type: text("type").notNull(),
  /** What it did: `applied`, or why it changed nothing (`ignored: …`). */
  outcome: text("outcome").notNull(),
  receivedAt: tz("received_at").notNull().defaultNow(),
});

export const auditLog = pgTable(
  "audit_log",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    accountId: uuid("account_id").references(() => accounts.id, { onDelete: "cascade" }),
    actorType: text("actor_type").notNull(),
    actorId: text("actor_id"),
    action: text("action").notNull(),
    targetType: text("target_type"),
    targetId: text("target_id"),
    data: jsonb("data").notNull().default(sql`'{}'::jsonb`),
    /** Makes outbox re-deliveries idempotent: one row per source event. */
    dedupeKey: text("dedupe_key"),
    createdAt: createdAt(),
  },
  (t) => [
    index("audit_log_account_idx").on(t.accountId, t.createdAt.desc()),
    index("audit_log_target_idx").on(t.targetType, t.targetId),
    uniqueIndex("audit_log_dedupe_key").on(t.dedupeKey),
    check("audit_log_actor_type", sql`${t.actorType} in (${inList(ACTOR_TYPES)})`),
  ],
);
