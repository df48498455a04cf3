/**
 * Stripe's webhooks in workerd: invoices billed through the Stripe stand-in (tools/stripe-sim),
 * then Stripe's signed events about them posted to the route, signed with the real SDK's test
 * helper, and applied to the real Postgres once each, only forward.
 */
import { env, SELF } from "cloudflare:test";
import { eq } from "drizzle-orm";
import Stripe from "stripe";
import { describe, expect, it } from "vitest";
import { monthBounds, monthOf } from "../../core/pricing/month";
import { StripeSimulator } from "../../tools/stripe-sim/simulator";
import { BASE, call, signUp, sql } from "../api/test-support";
import { withDb } from "../db/client";
import { invoices } from "../db/schema";
import { ApiError } from "../http/errors";
import { createLogger } from "../http/log";
import { runBilling, SETTLE_MS, stripeOf } from "./invoices";
import { handleStripeWebhook } from "./webhooks";

const log = createLogger("error");
const thisMonth = monthBounds(monthOf(Date.now()))!;
const AFTER = thisMonth.endMs + SETTLE_MS + 60_000;
const SECRET = env.STRIPE_WEBHOOK_SECRET as string;
const subtle = Stripe.createSubtleCryptoProvider();

/** A new account with some usage this month, billed: its invoice is `open` in Stripe. */
async function billedInvoice() {
  const user = await signUp({});
  await sql(
    `insert into usage_events (account_id, job_run_id, tier, gpu_model, gpu_count, gpu_seconds, period_start, period_end)
     values ($1, $2, 'flex', 'H100', 1, 3600, $3, $4)`,
    [
      user.accountId,
      `run-${crypto.randomUUID()}`,
      new Date(thisMonth.startMs + 3_600_000).toISOString(),
      new Date(thisMonth.startMs + 7_200_000).toISOString(),
    ],
  );
  const sim = new StripeSimulator({ now: () => AFTER });
  const stripe = stripeOf({ STRIPE_SECRET_KEY: "sk_test_scalar_webhooks" }, ((
    i: RequestInfo | URL,
    init?: RequestInit,
  ) => sim.fetch(new Request(i, init))) as typeof fetch)!;
  await withDb(env, (db) => runBilling({ db, stripe, now: AFTER, log }));
  const [row] = await withDb(env, (db) => db.select().from(invoices).where(eq(invoices.accountId, user.accountId)));
  expect(row).toMatchObject({ status: "open" });
  return { user, row: row!, stripeInvoice: sim.invoice(row!.stripeInvoiceId!)! };
}

let seq = 0;
function event(type: string, invoice: object, extra: Record<string, unknown> = {}) {
  return {
    id: `evt_test_${Date.now()}_${++seq}`,
    object: "event",
    api_version: "2026-10-28.endive",
    created: Math.floor(Date.now() / 1000),
    livemode: false,
    pending_webhooks: 1,
    request: { id: null, idempotency_key: null },
    type,
    data: { object: { ...invoice, ...extra } },
  };
}

async function deliver(body: object | string, opts: { secret?: string; timestamp?: number; tamper?: boolean } = {}) {
  const payload = typeof body === "string" ? body : JSON.stringify(body);
  const signature = await Stripe.webhooks.generateTestHeaderStringAsync({
    payload,
    secret: opts.secret ?? SECRET,
    ...(opts.timestamp ? { timestamp: opts.timestamp } : {}),
    cryptoProvider: subtle,
  });
  const res = await SELF.fetch(`${BASE}/v1/stripe/webhooks`, {
    method: "POST",
    headers: { "content-type": "application/json", "stripe-signature": signature },
    body: opts.tamper ? payload.replace("invoice", "invoicf") : payload,
  });
  // biome-ignore lint/suspicious/noExplicitAny: tests read response bodies loosely
  return { status: res.status, json: (await res.json()) as Record<string, any> };
}

const invoiceRow = async (id: string) =>
  (await withDb(env, (db) => db.select().from(invoices).where(eq(invoices.id, id))))[0]!;

describe("Stripe's webhooks", () => {
  it("record a failed attempt, then the payment; once each, and never backwards", async () => {
    const { user, row, stripeInvoice } = await billedInvoice();
    const retryAt = Math.floor(AFTER / 1000) + 3 * 86_400;
    const failed = event("invoice.payment_failed", stripeInvoice, { attempt_count: 1, next_payment_attempt: retryAt });
    expect(await deliver(failed)).toEqual({
      status: 200,
      json: {
        received: true,
        event_id: failed.id,
        type: "invoice.payment_failed",
        outcome: "applied",
        duplicate: false,
      },
    });
    expect(await invoiceRow(row.id)).toMatchObject({
      status: "open",
      paymentAttempts: 1,
      paymentError: "the payment failed; Stripe will try again",
      nextPaymentAttemptAt: new Date(retryAt * 1000),
    });

    const paidAt = Math.floor(AFTER / 1000) + 3 * 86_400 + 60;
    const paid = event("invoice.paid", stripeInvoice, { status: "paid", status_transitions: { paid_at: paidAt } });
    expect((await deliver(paid)).json).toMatchObject({ outcome: "applied", duplicate: false });
    // Delivered again (Stripe delivers at least once): acknowledged, not applied again.
    expect((await deliver(paid)).json).toMatchObject({ outcome: "applied", duplicate: true });
    expect(await invoiceRow(row.id)).toMatchObject({
      status: "paid",
      paidAt: new Date(paidAt * 1000),
      nextPaymentAttemptAt: null,
      paymentAttempts: 1,
    });
    // Out of order: an older failure, or a void, after the payment changes nothing.
    const late = event("invoice.payment_failed", stripeInvoice, { attempt_count: 1, next_payment_attempt: retryAt });
    expect((await deliver(late)).json).toMatchObject({ outcome: "ignored: invoice already paid" });
    expect((await deliver(event("invoice.voided", stripeInvoice))).json.outcome).toBe("ignored: invoice already paid");
    expect(await invoiceRow(row.id)).toMatchObject({ status: "paid", nextPaymentAttemptAt: null });

    // The customer sees it in the API.
    const listed = await call("GET", "/v1/invoices", user.token);
    expect(listed.json.data[0]).toMatchObject({
      id: row.id,
      status: "paid",
      paid_at: new Date(paidAt * 1000).toISOString(),
      payment_attempts: 1,
      next_payment_attempt_at: null,
    });
  });

  it("mark an invoice uncollectible, still take its late payment, and keep a void final", async () => {
    const a = await billedInvoice();
    expect((await deliver(event("invoice.marked_uncollectible", a.stripeInvoice))).json.outcome).toBe("applied");
    expect((await invoiceRow(a.row.id)).status).toBe("uncollectible");
    expect((await deliver(event("invoice.paid", a.stripeInvoice))).json.outcome).toBe("applied");
    expect((await invoiceRow(a.row.id)).status).toBe("paid");

    const b = await billedInvoice();
    expect((await deliver(event("invoice.voided", b.stripeInvoice))).json.outcome).toBe("applied");
    expect((await deliver(event("invoice.paid", b.stripeInvoice))).json.outcome).toBe("ignored: invoice already void");
    expect((await invoiceRow(b.row.id)).status).toBe("void");
  });

  it("acknowledge what they do not act on, and refuse what is not signed by Stripe", async () => {
    const { row, stripeInvoice } = await billedInvoice();
    expect(await deliver(event("customer.created", { id: "cus_x", object: "customer" }))).toMatchObject({
      status: 200,
      json: { outcome: "ignored: customer.created is not acted on" },
    });
    expect((await deliver(event("invoice.paid", { ...stripeInvoice, id: "in_not_ours" }))).json.outcome).toBe(
      "ignored: no invoice of ours is Stripe's in_not_ours",
    );
    const paid = event("invoice.paid", stripeInvoice);
    for (const [opts, why] of [
      [{ secret: "whsec_someone_else" }, /No signatures found matching/],
      [{ tamper: true }, /No signatures found matching/],
      [{ timestamp: Math.floor(Date.now() / 1000) - 600 }, /Timestamp outside the tolerance zone/],
    ] as const) {
      const r = await deliver(paid, opts);
      expect(r.status, JSON.stringify(opts)).toBe(400);
      expect(r.json.error.code).toBe("invalid_signature");
      expect(r.json.error.message).toMatch(why);
    }
    const unsigned = await SELF.fetch(`${BASE}/v1/stripe/webhooks`, { method: "POST", body: JSON.stringify(paid) });
    expect(unsigned.status).toBe(400);
    expect((await invoiceRow(row.id)).status).toBe("open");
    // Without the secret configured: 503, so Stripe keeps the event and delivers it later.
    const err = await withDb(env, (db) =>
      handleStripeWebhook({}, db, JSON.stringify(paid), "t=1,v1=x", log).catch((e: unknown) => e),
    );
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status: 503, code: "webhooks_not_configured" });
  });
});
