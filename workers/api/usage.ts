/**
 * `GET /v1/usage`: what the account used in a calendar month (UTC) and what it costs at the price
 * list (core/pricing), per tier and GPU model: runs that ended (their usage events; a run spanning
 * the 1st counts its share in each month, by time: core/pricing/month.ts `shareInside`) and runs
 * still going (jobs and endpoint replicas, counted up to now), each line priced per GPU-second and
 * rounded up to the cent once.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { sql } from "drizzle-orm";
import { MONTH_PATTERN, monthBounds, monthOf } from "../../core/pricing/month";
import { GPU_HOUR_PRICE_CENTS, gpuSecondsCostCents } from "../../core/pricing/prices";
import { GpuModel, Tier } from "../../core/schemas";
import { requireAccount } from "../auth/caller";
import { ApiError } from "../http/errors";
import { BEARER, createRouter, errors, guard, respond } from "./router";
import { Timestamp } from "./schemas";

const UsageLine = z
  .object({
    tier: Tier,
    gpu_model: GpuModel,
    state: z.enum(["ended", "running"]).openapi({
      description: "`ended`: runs that finished (final); `running`: runs still going, counted up to `as_of`.",
    }),
    gpu_seconds: z.number().int(),
    cents_per_gpu_hour: z.number().int(),
    amount_cents: z.number().int().openapi({ description: "GPU-seconds × the price, rounded up to the cent." }),
  })
  .openapi("UsageLine");

const Usage = z
  .object({
    month: z.string().openapi({ example: "2026-11" }),
    period_start: Timestamp,
    period_end: Timestamp,
    as_of: Timestamp,
    currency: z.literal("usd"),
    lines: z.array(UsageLine),
    total_gpu_seconds: z.number().int(),
    total_cents: z.number().int(),
  })
  .openapi("Usage");

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
export function usageQuery(accountId: string, startMs: number, endMs: number, nowMs: number) {
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
    select 'running', e.tier, n.gpu_model,
           ceil(sum(e.gpu_count * greatest(0, extract(epoch from ${until} - greatest(r.started_at, ${start})))))::bigint
      from replica_runs r join endpoints e on e.id = r.endpoint_id join nodes n on n.id = r.node_id
     where r.account_id = ${accountId} and r.status = 'running' and r.started_at is not null and r.started_at < ${end}
     group by e.tier, n.gpu_model`;
}

export const usageRouter = createRouter();

usageRouter.openapi(
  createRoute({
    method: "get",
    path: "/v1/usage",
    tags: ["Account"],
    summary: "Usage and its cost in a month",
    description:
      "GPU-seconds and their cost at the price list, per tier, GPU model and state (`ended` runs are final; `running` ones are counted up to `as_of`), for a calendar month in UTC. A run that spans the 1st counts its share in each month, by time. Needs `billing:read`.",
    security: BEARER,
    middleware: guard({ scope: "billing:read" }),
    request: {
      query: z.strictObject({
        month: z
          .string()
          .regex(MONTH_PATTERN, "a month as YYYY-MM")
          .optional()
          .openapi({ example: "2026-11", description: "`YYYY-MM` (UTC); this month when absent." }),
      }),
    },
    responses: {
      200: { description: "The month's usage.", content: { "application/json": { schema: Usage } } },
      ...errors(),
    },
  }),
  async (c) => {
    const account = requireAccount(c.get("caller"));
    const nowMs = Date.now();
    const month = c.req.valid("query").month ?? monthOf(nowMs);
    const bounds = monthBounds(month)!;
    if (bounds.startMs > nowMs) {
      throw new ApiError(400, "invalid_request", `month: ${month} has not begun`, {
        location: "query",
        fields: [{ field: "month", message: "a month that has begun", code: "future_month" }],
      });
    }
    const rows = await c.get("pg").db.execute<Row>(usageQuery(account.id, bounds.startMs, bounds.endMs, nowMs));
    const lines = rows
      .map((r) => ({ ...r, gpu_seconds: Number(r.gpu_seconds) }))
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
    return respond(
      c,
      Usage,
      {
        month,
        period_start: new Date(bounds.startMs).toISOString(),
        period_end: new Date(bounds.endMs).toISOString(),
        as_of: new Date(nowMs).toISOString(),
        currency: "usd",
        lines,
        total_gpu_seconds: lines.reduce((s, l) => s + l.gpu_seconds, 0),
        total_cents: lines.reduce((s, l) => s + l.amount_cents, 0),
      },
      200,
    );
  },
);
