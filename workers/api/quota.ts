/**
 * Quotas, checked inside the transaction that writes the job or endpoint, after locking the account
 * row, so concurrent submissions cannot together exceed them:
 * - concurrent GPUs: queued, placed and running jobs plus endpoints' minimum replicas;
 * - the optional monthly spend cap: month-to-date usage, plus the most that active work can still
 *   cost (every job at its max runtime on the dearest allowed model; endpoints' minimum replicas to
 *   the end of the month), plus the new work's own ceiling.
 */
import { sql } from "drizzle-orm";
import { centsFor, jobCeilingCents, usageCostCents, worstCasePriceCents } from "../../core/pricing/prices";
import type { GpuModel, Tier } from "../../core/schemas";
import type { AccountContext } from "../auth/caller";
import type { Db } from "../db/client";
import { ApiError } from "../http/errors";

type Tx = Parameters<Parameters<Db["transaction"]>[0]>[0];

export interface Demand {
  gpus: number;
  ceilingCents: number;
}

export async function lockAccount(tx: Tx, accountId: string): Promise<void> {
  await tx.execute(sql`select 1 from accounts where id = ${accountId} for update`);
}

interface ActiveGroup extends Record<string, unknown> {
  tier: Tier;
  gpu_models: string;
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

/** What the account holds now and has spent this month (UTC). */
export async function quotaUse(tx: Tx | Db, accountId: string, nowMs = Date.now()): Promise<QuotaUse> {
  const jobsActive = await tx.execute<ActiveGroup>(sql`
    select tier, to_jsonb(gpu_models) as gpu_models, sum(gpu_count) as gpus,
           sum(gpu_count::bigint * max_runtime_s) as gpu_seconds
      from jobs
     where account_id = ${accountId} and status in ('queued', 'placed', 'running')
     group by tier, gpu_models`);
  const endpointsActive = await tx.execute<ActiveGroup>(sql`
    select tier, to_jsonb(gpu_models) as gpu_models, sum(min_replicas * gpu_count) as gpus, 0 as gpu_seconds
      from endpoints
     where account_id = ${accountId} and status = 'active'
     group by tier, gpu_models`);
  const usage = await tx.execute<{ tier: Tier; gpu_model: GpuModel; gpu_seconds: string | number }>(sql`
    select tier, gpu_model, sum(gpu_seconds) as gpu_seconds
      from usage_events
     where account_id = ${accountId}
       and period_start >= date_trunc('month', now() at time zone 'UTC') at time zone 'UTC'
     group by tier, gpu_model`);

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
    usage.map((u) => ({ tier: u.tier, gpu_model: u.gpu_model, gpu_seconds: Number(u.gpu_seconds) })),
  );
  return { gpusInUse, monthToDateCents, committedCents };
}

/** Refuse work beyond the account's GPU cap or spend cap, with a code of its own for each. */
export async function enforceQuota(tx: Tx, account: AccountContext, demand: Demand): Promise<void> {
  const use = await quotaUse(tx, account.id);
  if (use.gpusInUse + demand.gpus > account.maxConcurrentGpus) {
    throw new ApiError(
      403,
      "gpu_quota_exceeded",
      `this would hold ${use.gpusInUse + demand.gpus} GPUs at once; the account's limit is ${account.maxConcurrentGpus}`,
      { limit: account.maxConcurrentGpus, in_use: use.gpusInUse, requested: demand.gpus },
    );
  }
  const cap = account.monthlySpendCapCents;
  if (cap !== null && use.monthToDateCents + use.committedCents + demand.ceilingCents > cap) {
    throw new ApiError(
      402,
      "spend_cap_exceeded",
      `this could take the month's spend past the account's cap of ${cap} cents`,
      {
        cap_cents: cap,
        month_to_date_cents: use.monthToDateCents,
        committed_cents: use.committedCents,
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

/** An endpoint commits its minimum replicas until the end of the month. */
export function endpointDemand(
  e: { tier: Tier; gpu_models: GpuModel[]; gpu_count: number; min_replicas: number },
  nowMs = Date.now(),
): Demand {
  const now = new Date(nowMs);
  const secondsLeft = Math.ceil((Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1) - nowMs) / 1000);
  const gpus = e.min_replicas * e.gpu_count;
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
