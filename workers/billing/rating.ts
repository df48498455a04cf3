/**
 * Rating: an account's usage inside a time window, per tier, GPU model and state, priced at
 * core/pricing. `ended` runs come from their usage events (a run spanning the window's edge counts
 * its share inside, by time: core/pricing/month.ts `shareInside`); `running` jobs and endpoint
 * replicas count their GPUs × the time they have run inside the window, up to `nowMs`. Each line is
 * rounded up to the cent once. `GET /v1/usage` shows it; the monthly invoices bill it.
 */
import { sql } from "drizzle-orm";
import { GPU_HOUR_PRICE_CENTS, gpuSecondsCostCents } from "../../core/pricing/prices";
import type { GpuModel, Tier } from "../../core/schemas";
import type { Db } from "../db/client";

export interface RatedLine {
  tier: Tier;
  gpu_model: GpuModel;
  state: "ended" | "running";
  gpu_seconds: number;
  cents_per_gpu_hour: number;
  amount_cents: number;
}

interface Row extends Record<string, unknown> {
  state: "ended" | "running";
  tier: Tier;
  gpu_model: GpuModel;
  gpu_seconds: string | number;
}

const ts = (ms: number) => sql`${new Date(ms).toISOString()}::timestamptz`;

/**
 * GPU-seconds per (state, tier, model) inside [start, end), as of `nowMs`. Ended runs: the usage
 * events' share inside the window (shareInside); running jobs and replicas: their GPUs × the time
 * they have run inside it.
 */
function usageQuery(accountId: string, startMs: number, endMs: number, nowMs: number) {
  const start = ts(startMs);
  const end = ts(endMs);
  const until = ts(Math.min(nowMs, endMs));
  return sql<Row>`
    select 'ended' as state, tier, gpu_model,
           ceil(sum(case when period_end <= period_start then gpu_seconds
                         else gpu_seconds * extract(epoch from least(period_end, ${end}) - greatest(period_start, ${start}))
                              / extract(epoch from period_end - period_start) end))::bigint as gpu_seconds
      from usage_events
     where account_id = ${accountId}
       and ((period_end > period_start and period_start < ${end} and period_end > ${start})
            or (period_end <= period_start and period_start >= ${start} and period_start < ${end}))
     group by tier, gpu_model
    union all
    select 'running', j.tier, n.gpu_model,
           ceil(sum(r.gpu_count * greatest(0, extract(epoch from ${until} - greatest(r.started_at, ${start})))))::bigint
      from job_runs r join jobs j on j.id = r.job_id join nodes n on n.id = r.node_id
     where r.account_id = ${accountId} and r.status = 'running' and r.started_at is not null and r.started_at < ${end}
     group by j.tier, n.gpu_model
    union all
    select 'running', coalesce(r.tier, e.tier), n.gpu_model,
           ceil(sum(coalesce(r.gpu_count, e.gpu_count) * greatest(0, extract(epoch from ${until} - greatest(r.started_at, ${start})))))::bigint
      from replica_runs r join endpoints e on e.id = r.endpoint_id join nodes n on n.id = r.node_id
     where r.account_id = ${accountId} and r.status = 'running' and r.started_at is not null and r.started_at < ${end}
     group by coalesce(r.tier, e.tier), n.gpu_model`;
}

/** The priced lines of an account's usage in [startMs, endMs) as of `nowMs`, lines of no use left out. */
export async function rateUsage(
  db: Db,
  accountId: string,
  window: { startMs: number; endMs: number },
  nowMs: number,
): Promise<RatedLine[]> {
  const rows = await db.execute<Row>(usageQuery(accountId, window.startMs, window.endMs, nowMs));
  // Running jobs and running replicas of one tier and model are one line, priced (rounded) once.
  const merged = new Map<string, Row & { gpu_seconds: number }>();
  for (const r of rows) {
    const key = `${r.state}/${r.tier}/${r.gpu_model}`;
    const seen = merged.get(key);
    if (seen) seen.gpu_seconds += Number(r.gpu_seconds);
    else merged.set(key, { ...r, gpu_seconds: Number(r.gpu_seconds) });
  }
  return [...merged.values()]
    .filter((r) => r.gpu_seconds > 0)
    .map((r) => ({
      tier: r.tier,
      gpu_model: r.gpu_model,
      state: r.state,
      gpu_seconds: r.gpu_seconds,
      cents_per_gpu_hour: GPU_HOUR_PRICE_CENTS[r.tier][r.gpu_model],
      amount_cents: gpuSecondsCostCents(r.gpu_seconds, r.tier, r.gpu_model),
    }))
    .sort(
      (a, b) =>
        a.state.localeCompare(b.state) || a.tier.localeCompare(b.tier) || a.gpu_model.localeCompare(b.gpu_model),
    );
}

export function totalsOf(lines: readonly RatedLine[]): { total_gpu_seconds: number; total_cents: number } {
  return {
    total_gpu_seconds: lines.reduce((s, l) => s + l.gpu_seconds, 0),
    total_cents: lines.reduce((s, l) => s + l.amount_cents, 0),
  };
}
