/**
 * `GET /v1/usage`: what the account used in a calendar month (UTC) and what it costs at the price
 * list (core/pricing), per tier and GPU model: runs that ended (their usage events; a run spanning
 * the 1st counts its share in each month, by time: core/pricing/month.ts `shareInside`) and runs
 * still going (jobs and endpoint replicas, counted up to now), each line priced per GPU-second and
 * rounded up to the cent once.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { MONTH_PATTERN, monthBounds, monthOf } from "../../core/pricing/month";
import { GpuModel, Tier } from "../../core/schemas";
import { requireAccount } from "../auth/caller";
import { rateUsage, totalsOf } from "../billing/rating";
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
          .regex(MONTH_PATTERN, "a month as YYYY-MM, from 0001-01")
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
    const lines = await rateUsage(c.get("pg").db, account.id, bounds, nowMs);
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
        ...totalsOf(lines),
      },
      200,
    );
  },
);
