/**
 * Quotas, checked inside the transaction that writes the job or endpoint, after locking the account
 * row, so concurrent submissions cannot together exceed them:
 * - concurrent GPUs: queued, placed and running jobs plus endpoints' maximum replicas (traffic may
 *   scale them there at any time);
 * - the optional monthly spend cap: month-to-date usage, plus the most that active work can still
 *   cost (every job at its max runtime on the dearest allowed model; endpoints' maximum replicas to
 *   the end of the month), plus the new work's own ceiling.
 */
import { type SQL, sql } from "drizzle-orm";
import { centsFor, jobCeilingCents, usageCostCents, worstCasePriceCents } from "../../core/pricing/prices";
import type { GpuModel, Tier } from "../../core/schemas";
import type { AccountContext } from "../auth/caller";
import type { Db } from "../db/client";
import { pgError } from "../db/pg-error";
import { literal } from "../db/round-trips";
import type { PaymentHold } from "../db/schema";
import { ApiError } from "../http/errors";
import { parseHold } from "./payment-required";

type Tx = Parameters<Parameters<Db["transaction"]>[0]>[0];

export interface Demand {
  gpus: number;
  ceilingCents: number;
}

/**
 * Serialises the account's quota checks. `for no key update`, not `for update`: it conflicts with
 * itself, but not with the key-share locks that foreign-key checks take, so concurrent inserts that
 * only reference the account (idempotency keys, audit rows, API key use) do not queue behind a
 * submission's transaction. Returns the account's payment hold as the lock found it (a hold is set
 * under the same lock), for `refuseHeld` at no extra round trip.
 */
export async function lockAccount(tx: Tx, accountId: string): Promise<PaymentHold | null> {
  const [row] = await tx.execute<{ payment_hold: unknown }>(sql.raw(lockAccountStatement(accountId)));
  return parseHold(row?.payment_hold);
}

/**
 * The lock's statement. The id inlined as a literal, not bound: a statement without parameters takes
 * one round trip, one with parameters two (postgres.js describes it first on a new connection), and
 * the lock is the start of the account's critical section.
 */
export function lockAccountStatement(accountId: string): string {
  return `select payment_hold from accounts where id = ${literal(accountId)} for no key update`;
}

/** One group of what the account holds or used: active jobs, active endpoints, this month's usage. */
export interface QuotaGroup extends Record<string, unknown> {
  kind: "job" | "endpoint" | "usage";
  tier: Tier;
  /** Jobs and endpoints: the allowed models (jsonb or its text); usage: the one model used. */
  gpu_models: unknown;
  gpus: string | number;
  gpu_seconds: string | number;
}

export interface QuotaUse {
  gpusInUse: number;
  monthToDateCents: number;
  committedCents: number;
}

const parseModels = (v: unknown): GpuModel[] =>
  Array.isArray(v) ? (v as GpuModel[]) : (JSON.parse(String(v)) as GpuModel[]);
/** A jsonb string: postgres.js parses it, or hands over its text when the type is not fetched. */
const parseModel = (v: unknown): GpuModel =>
  (typeof v === "string" && v.startsWith('"') ? JSON.parse(v) : v) as GpuModel;

/** The start of this calendar month (UTC), as Postgres computes it in the statement. */
const MONTH_START = sql.raw("(date_trunc('month', now() at time zone 'UTC') at time zone 'UTC')");

/**
 * This month's usage counts each usage event's GPU-seconds inside the month (a run that began last
 * month counts its share since the 1st, by time), and endpoint replicas still running count their
 * GPU-seconds this month so far: their usage events are written only when a run ends, and a
 * replica may run for weeks. (Running jobs are covered by their whole ceiling in `committed`.)
 *
 * The query of what the account holds and used, as rows of `QuotaGroup`: one statement, since it
 * runs inside a submission's locked transaction where each round trip counts. A job submission
 * runs it as part of the statement that inserts the job (see jobs.ts).
 */
export function quotaGroupsQuery(accountId: string): SQL {
  // The id as a literal: the submission's statement must have no parameters (see round-trips.ts).
  const account = sql.raw(literal(accountId));
  return sql`
    select 'job' as kind, tier, to_jsonb(gpu_models) as gpu_models, sum(gpu_count)::numeric as gpus,
           sum(gpu_count::bigint * max_runtime_s)::numeric as gpu_seconds
      from jobs
     where account_id = ${account} and status in ('queued', 'placed', 'running')
     group by tier, gpu_models
    union all
    select 'endpoint', tier, to_jsonb(gpu_models), sum(max_replicas * gpu_count)::numeric, 0::numeric
      from endpoints
     where account_id = ${account} and status = 'active'
     group by tier, gpu_models
    union all
    select 'usage', tier, to_jsonb(gpu_model), 0::numeric,
           ceil(sum(case when period_start >= ${MONTH_START} then gpu_seconds
                         else gpu_seconds * extract(epoch from period_end - ${MONTH_START})
                              / extract(epoch from period_end - period_start) end))::numeric
      from usage_events
     where account_id = ${account} and (period_start >= ${MONTH_START} or period_end > ${MONTH_START})
     group by tier, gpu_model
    union all
    select 'usage', coalesce(r.tier, e.tier), to_jsonb(n.gpu_model), 0::numeric,
           ceil(sum(coalesce(r.gpu_count, e.gpu_count) * greatest(0, extract(epoch from now() - greatest(r.started_at, ${MONTH_START})))))::numeric
      from replica_runs r join endpoints e on e.id = r.endpoint_id join nodes n on n.id = r.node_id
     where r.account_id = ${account} and r.status = 'running' and r.started_at is not null
     group by coalesce(r.tier, e.tier), n.gpu_model`;
}

/** What the account holds now and has spent this month (UTC). */
export async function quotaUse(tx: Tx | Db, accountId: string, nowMs = Date.now()): Promise<QuotaUse> {
  return quotaUseOf(await tx.execute<QuotaGroup>(quotaGroupsQuery(accountId)), nowMs);
}

/** The quota figures from the rows of `quotaGroupsQuery`. */
export function quotaUseOf(groups: readonly QuotaGroup[], nowMs = Date.now()): QuotaUse {
  const jobsActive = groups.filter((g) => g.kind === "job");
  const endpointsActive = groups.filter((g) => g.kind === "endpoint");

  const now = new Date(nowMs);
  const monthEnd = Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1);
  const secondsLeft = Math.max(0, Math.ceil((monthEnd - nowMs) / 1000));
  let gpusInUse = 0;
  let committedCents = 0;
  for (const g of jobsActive) {
    gpusInUse += Number(g.gpus);
    const price = worstCasePriceCents(g.tier, parseModels(g.gpu_models));
    committedCents += centsFor(Number(g.gpu_seconds), price);
  }
  for (const g of endpointsActive) {
    gpusInUse += Number(g.gpus);
    const price = worstCasePriceCents(g.tier, parseModels(g.gpu_models));
    committedCents += centsFor(Number(g.gpus) * secondsLeft, price);
  }
  const monthToDateCents = usageCostCents(
    groups
      .filter((g) => g.kind === "usage")
      .map((u) => ({ tier: u.tier, gpu_model: parseModel(u.gpu_models), gpu_seconds: Number(u.gpu_seconds) })),
  );
  return { gpusInUse, monthToDateCents, committedCents };
}

/**
 * The GPU half of the quota inside a statement, for an account without a spend cap: an expression
 * that is true when the account's GPUs in use (as `quotaUseOf` counts them: active jobs, active
 * endpoints' maximum replicas) plus `requested` stay within its limit, and otherwise makes the
 * statement fail with SQLSTATE SQ001 (`check_gpu_quota`, migration submission_gpu_quota). No
 * parameters: it goes in statements sent without a describe round trip (round-trips.ts).
 */
export function gpuQuotaCheck(account: AccountContext, requested: number): SQL {
  const id = sql.raw(literal(account.id));
  const n = (v: number) => {
    if (!Number.isSafeInteger(v)) throw new Error(`gpuQuotaCheck: not an integer: ${v}`);
    return sql.raw(String(v));
  };
  return sql<boolean>`public.check_gpu_quota(
    coalesce((select sum(gpu_count) from jobs
               where account_id = ${id} and status in ('queued', 'placed', 'running')), 0)
    + coalesce((select sum(max_replicas * gpu_count) from endpoints
                 where account_id = ${id} and status = 'active'), 0),
    ${n(requested)}, ${n(account.maxConcurrentGpus)})`;
}

/** The API's gpu_quota_exceeded error for the database error `gpuQuotaCheck` raises (`pgError`); null for any other. */
export function gpuQuotaError(account: AccountContext, demand: Demand, error: unknown): ApiError | null {
  const e = pgError(error);
  if (e?.code !== "SQ001" || typeof e.detail !== "string") return null;
  const { in_use } = JSON.parse(e.detail) as { in_use: number | string };
  return gpuQuotaExceeded(account, Number(in_use), demand.gpus);
}

function gpuQuotaExceeded(account: AccountContext, inUse: number, requested: number): ApiError {
  return new ApiError(
    403,
    "gpu_quota_exceeded",
    `this would hold ${inUse + requested} GPUs at once; the account's limit is ${account.maxConcurrentGpus}`,
    { limit: account.maxConcurrentGpus, in_use: inUse, requested },
  );
}

/**
 * Refuse work beyond the account's GPU cap or spend cap, with a code of its own for each (`billing`:
 * the caller may read billing, as `checkQuota`).
 */
export async function enforceQuota(tx: Tx, account: AccountContext, demand: Demand, billing: boolean): Promise<void> {
  checkQuota(account, await quotaUse(tx, account.id), demand, billing);
}

/**
 * Throws the quota error when `demand` on top of `use` goes past a cap. The spend cap's month-to-date
 * and committed amounts only to callers who may read billing (`billing`: `billing:read`, as
 * `GET /v1/me`'s month-to-date); others get them null.
 */
export function checkQuota(account: AccountContext, use: QuotaUse, demand: Demand, billing: boolean): void {
  if (use.gpusInUse + demand.gpus > account.maxConcurrentGpus) {
    throw gpuQuotaExceeded(account, use.gpusInUse, demand.gpus);
  }
  const cap = account.monthlySpendCapCents;
  if (cap !== null && use.monthToDateCents + use.committedCents + demand.ceilingCents > cap) {
    throw new ApiError(
      402,
      "spend_cap_exceeded",
      `this could take the month's spend past the account's cap of ${cap} cents`,
      {
        cap_cents: cap,
        month_to_date_cents: billing ? use.monthToDateCents : null,
        committed_cents: billing ? use.committedCents : null,
        requested_ceiling_cents: demand.ceilingCents,
      },
    );
  }
}

export function jobDemand(job: {
  tier: Tier;
  gpu_models: GpuModel[];
  gpu_count: number;
  max_runtime_s: number;
}): Demand {
  return { gpus: job.gpu_count, ceilingCents: jobCeilingCents(job) };
}

/** An endpoint commits its maximum replicas until the end of the month (traffic may scale it there). */
export function endpointDemand(
  e: { tier: Tier; gpu_models: GpuModel[]; gpu_count: number; max_replicas: number },
  nowMs = Date.now(),
): Demand {
  const now = new Date(nowMs);
  const secondsLeft = Math.ceil((Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1) - nowMs) / 1000);
  // Traffic may scale it to max_replicas at any time: that is what it can use.
  const gpus = e.max_replicas * e.gpu_count;
  return { gpus, ceilingCents: centsFor(gpus * secondsLeft, worstCasePriceCents(e.tier, e.gpu_models)) };
}

/** Tier entitlement: Fast only for accounts allowed it. */
export function requireTier(tier: string, fastTierEnabled: boolean): void {
  if (tier === "fast" && !fastTierEnabled) {
    throw new ApiError(403, "tier_not_allowed", 'this account is not entitled to the fast tier; use tier "flex"', {
      fields: [{ field: "tier", message: "fast tier not enabled for this account", code: "tier_not_allowed" }],
    });
  }
}
