/**
 * Stripe's webhooks in workerd: invoices billed through the Stripe stand-in (tools/stripe-sim),
 * then Stripe's signed events about them posted to the route, signed with the real SDK's test
 * helper, and applied to the real Postgres once each, only forward.
 */
import { env, SELF } from "cloudflare:test";
import { eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { BASE, call } from "../api/test-support";
import { withDb } from "../db/client";
import { invoices } from "../db/schema";
import { ApiError } from "../http/errors";
import { createLogger } from "../http/log";
import { AFTER, billedInvoice, deliver, event } from "./test-webhooks";
import { handleStripeWebhook } from "./webhooks";

const log = createLogger("error");

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

    // The second failure, then the first delivered late (deliveries come in any order): the newer stays.
    const secondAt = retryAt + 3 * 86_400;
    await deliver(event("invoice.payment_failed", stripeInvoice, { attempt_count: 2, next_payment_attempt: secondAt }));
    expect(
      (
        await deliver(
          event("invoice.payment_failed", stripeInvoice, { attempt_count: 1, next_payment_attempt: retryAt }),
        )
      ).json.outcome,
    ).toBe("applied");
    expect(await invoiceRow(row.id)).toMatchObject({
      paymentAttempts: 2,
      nextPaymentAttemptAt: new Date(secondAt * 1000),
    });
    const last = event("invoice.payment_failed", stripeInvoice, { attempt_count: 4, next_payment_attempt: null });
    await deliver(last);
    await deliver(
      event("invoice.payment_failed", stripeInvoice, { attempt_count: 3, next_payment_attempt: secondAt + 3 * 86_400 }),
    );
    expect(await invoiceRow(row.id)).toMatchObject({
      paymentAttempts: 4,
      paymentError: "the payment failed; Stripe will not try again",
      nextPaymentAttemptAt: null,
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
      paymentAttempts: 4,
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
      payment_attempts: 4,
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
