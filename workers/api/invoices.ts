/**
 * The account's monthly invoices (workers/billing/invoices.ts makes them): each month's rated lines,
 * totals, and where Stripe has it (number, payment page). Needs `billing:read`.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { and, desc, eq, type SQL } from "drizzle-orm";
import { monthOf } from "../../core/pricing/month";
import { GpuModel, Tier } from "../../core/schemas";
import { requireAccount } from "../auth/caller";
import type { RatedLine } from "../billing/rating";
import { INVOICE_STATUSES, invoices } from "../db/schema";
import { ApiError } from "../http/errors";
import { beforeCursor, cursorTime, decodeTimeCursor, encodeTimeCursor, page } from "../http/pagination";
import { BEARER, createRouter, errors, guard, respond } from "./router";
import { IdParam, PageQuery, pageOf, Timestamp, Uuid } from "./schemas";
import { iso } from "./views";

const InvoiceLine = z
  .object({
    tier: Tier,
    gpu_model: GpuModel,
    gpu_seconds: z.number().int(),
    cents_per_gpu_hour: z.number().int(),
    amount_cents: z.number().int(),
  })
  .openapi("InvoiceLine");

export const Invoice = z
  .object({
    id: Uuid,
    month: z.string().openapi({ example: "2026-10" }),
    period_start: Timestamp,
    period_end: Timestamp,
    status: z.enum(INVOICE_STATUSES).openapi({
      description:
        "`draft`: rated, not yet with Stripe (or Stripe failed: retried hourly); `open`: finalized in Stripe, being collected; `paid`, `void`, `uncollectible` as Stripe says.",
    }),
    currency: z.string(),
    lines: z.array(InvoiceLine),
    subtotal_cents: z.number().int(),
    total_cents: z.number().int(),
    number: z.string().nullable().openapi({ description: "Stripe's invoice number, once finalized." }),
    hosted_invoice_url: z.string().nullable().openapi({ description: "Stripe's page to view and pay it." }),
    finalized_at: Timestamp.nullable().openapi({
      description:
        "When Stripe first finalized it (sent it for collection). Still open `DUNNING_GRACE_DAYS` (14) days later, it puts the account on payment hold.",
    }),
    paid_at: Timestamp.nullable().openapi({ description: "When Stripe collected it." }),
    payment_attempts: z.number().int().openapi({ description: "Collection attempts that failed so far." }),
    payment_error: z.string().nullable().openapi({ description: "Why the last attempt failed." }),
    next_payment_attempt_at: Timestamp.nullable().openapi({
      description: "When Stripe tries again; null: it will not.",
    }),
    created_at: Timestamp,
    updated_at: Timestamp,
  })
  .openapi("Invoice");

const InvoicePage = pageOf(Invoice, "InvoicePage");
type Row = typeof invoices.$inferSelect;

const view = (r: Row) => ({
  id: r.id,
  month: monthOf(r.periodStart.getTime()),
  period_start: r.periodStart.toISOString(),
  period_end: r.periodEnd.toISOString(),
  status: r.status as (typeof INVOICE_STATUSES)[number],
  currency: r.currency,
  lines: r.lines as Omit<RatedLine, "state">[],
  subtotal_cents: r.subtotalCents,
  total_cents: r.totalCents,
  number: r.number,
  hosted_invoice_url: r.hostedInvoiceUrl,
  finalized_at: iso(r.finalizedAt),
  paid_at: iso(r.paidAt),
  payment_attempts: r.paymentAttempts,
  payment_error: r.paymentError,
  next_payment_attempt_at: iso(r.nextPaymentAttemptAt),
  created_at: r.createdAt.toISOString(),
  updated_at: r.updatedAt.toISOString(),
});

export const invoicesRouter = createRouter();

invoicesRouter.openapi(
  createRoute({
    method: "get",
    path: "/v1/invoices",
    tags: ["Account"],
    summary: "List invoices",
    description:
      "Newest month first. One invoice per calendar month (UTC) in which the account used GPUs, made an hour after the month ends.",
    security: BEARER,
    middleware: guard({ scope: "billing:read" }),
    request: { query: z.strictObject({ ...PageQuery }) },
    responses: {
      200: { description: "A page of invoices.", content: { "application/json": { schema: InvoicePage } } },
      ...errors(),
    },
  }),
  async (c) => {
    const account = requireAccount(c.get("caller"));
    const q = c.req.valid("query");
    const cursor = decodeTimeCursor(q.cursor);
    const where: SQL[] = [eq(invoices.accountId, account.id)];
    if (cursor) where.push(beforeCursor(invoices.periodStart, invoices.id, cursor));
    const rows = await c
      .get("pg")
      .db.select({ r: invoices, t: cursorTime(invoices.periodStart) })
      .from(invoices)
      .where(and(...where))
      .orderBy(desc(invoices.periodStart), desc(invoices.id))
      .limit(q.limit + 1);
    const p = page(rows, q.limit, (r) => encodeTimeCursor(r.t, r.r.id));
    return respond(c, InvoicePage, { data: p.data.map((r) => view(r.r)), next_cursor: p.next_cursor }, 200);
  },
);

invoicesRouter.openapi(
  createRoute({
    method: "get",
    path: "/v1/invoices/{id}",
    tags: ["Account"],
    summary: "Get an invoice",
    security: BEARER,
    middleware: guard({ scope: "billing:read" }),
    request: { params: IdParam },
    responses: {
      200: { description: "The invoice.", content: { "application/json": { schema: Invoice } } },
      ...errors(404),
    },
  }),
  async (c) => {
    const account = requireAccount(c.get("caller"));
    const { id } = c.req.valid("param");
    const [row] = await c
      .get("pg")
      .db.select()
      .from(invoices)
      .where(and(eq(invoices.id, id), eq(invoices.accountId, account.id)));
    if (!row) throw new ApiError(404, "not_found", `no invoice ${id} in this account`);
    return respond(c, Invoice, view(row), 200);
  },
);
