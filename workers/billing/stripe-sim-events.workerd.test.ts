/**
 * The Stripe stand-in's own events, end to end: invoices billed through tools/stripe-sim, then paid,
 * declined and written off there; the stand-in signs each event with the webhook secret and delivers
 * it to the API's webhook route, as Stripe does in production and the stand-in does under
 * `npm start`. Nothing here builds an event by hand: what the route receives is what the stand-in
 * sent, so the stand-in's events and signatures and the route's reading of them are checked together.
 */
import { env, SELF } from "cloudflare:test";
import { eq } from "drizzle-orm";
import type Stripe from "stripe";
import { afterAll, describe, expect, it } from "vitest";
import { StripeSimulator } from "../../tools/stripe-sim/simulator";
import { call, signUp } from "../api/test-support";
import { withDb } from "../db/client";
import { invoices } from "../db/schema";
import { createLogger } from "../http/log";
import { runBilling, sendInvoice } from "./invoices";
import { AFTER, addFlexHour, nothingUndelivered, stripeOver, thisMonth } from "./test-webhooks";

const log = createLogger("error");

/** The stand-in's clock (Scalar's billing runs at AFTER throughout). */
let clock = AFTER;
const sim = new StripeSimulator({
  now: () => clock,
  webhooks: [{ url: "https://scalar.test/v1/stripe/webhooks", secret: env.STRIPE_WEBHOOK_SECRET as string }],
  webhookDelivery: { deliver: (url, init) => SELF.fetch(url, init), retryDelaysMs: [] },
});
const stripe: Stripe = stripeOver(sim, "sk_test_scalar_sim_events");
afterAll(() => sim.webhooks.close());

/** A new account with an hour of Flex usage this month, billed: its invoice is open in the stand-in. */
async function billed() {
  const user = await signUp({});
  await addFlexHour(user.accountId, thisMonth.startMs);
  // Drafts for the month, then only this account's handed to this stand-in (other files bill too).
  await withDb(env, (db) => runBilling({ db, stripe: null, now: AFTER, log, undeliveredUsage: nothingUndelivered }));
  await withDb(env, async (db) => sendInvoice(db, stripe, (await rowOf(user.accountId)).id));
  await sim.webhooks.settle();
  const row = await rowOf(user.accountId);
  return { user, row, stripeId: row.stripeInvoiceId!, customer: sim.invoice(row.stripeInvoiceId!)!.customer as string };
}

const rowOf = async (accountId: string) =>
  (await withDb(env, (db) => db.select().from(invoices).where(eq(invoices.accountId, accountId))))[0]!;

/** The stand-in's events about this invoice in the order they happened, each with its deliveries' statuses. */
async function deliveries(stripeId: string) {
  await sim.webhooks.settle();
  return sim
    .events()
    .filter((e) => e.data.object.id === stripeId)
    .map((e) => [e.type, ...sim.webhooks.attempts.filter((a) => a.event_id === e.id).map((a) => a.status)]);
}

describe("the Stripe stand-in's webhooks reach the API", () => {
  it("a declined payment, then a paid one: the invoice follows, as the customer sees it", async () => {
    const { user, row, stripeId, customer } = await billed();
    expect(row.status).toBe("open");

    sim.declinePayments(customer, { decline_code: "insufficient_funds" });
    await expect(stripe.invoices.pay(stripeId)).rejects.toMatchObject({ type: "StripeCardError" });
    await sim.webhooks.settle();
    expect(await rowOf(user.accountId)).toMatchObject({
      status: "open",
      paymentAttempts: 1,
      nextPaymentAttemptAt: new Date(sim.invoice(stripeId)!.next_payment_attempt! * 1000),
    });

    sim.declinePayments(customer, null);
    await stripe.invoices.pay(stripeId);
    expect(await deliveries(stripeId)).toEqual([
      ["invoice.created", 200],
      ["invoice.finalized", 200],
      ["invoice.payment_failed", 200],
      ["invoice.paid", 200],
      ["invoice.payment_succeeded", 200],
    ]);
    const paid = await rowOf(user.accountId);
    expect(paid).toMatchObject({ status: "paid", nextPaymentAttemptAt: null });
    const listed = await call("GET", `/v1/invoices/${row.id}`, user.token);
    expect(listed.json).toMatchObject({ status: "paid", paid_at: expect.any(String) });
  });

  it("written off, then voided: the invoice is uncollectible, then void", async () => {
    const { user, stripeId } = await billed();
    await stripe.invoices.markUncollectible(stripeId);
    await sim.webhooks.settle();
    expect((await rowOf(user.accountId)).status).toBe("uncollectible");
    await stripe.invoices.voidInvoice(stripeId);
    expect((await deliveries(stripeId)).slice(2)).toEqual([
      ["invoice.marked_uncollectible", 200],
      ["invoice.voided", 200],
    ]);
    expect((await rowOf(user.accountId)).status).toBe("void");
  });

  it("Stripe's own collection: charged an hour after it was sent; a declined card retried until the last attempt", async () => {
    const paid = await billed();
    const declined = await billed();
    sim.declinePayments(declined.customer);
    try {
      clock = AFTER + 3_600_000;
      sim.sync();
      expect((await deliveries(paid.stripeId)).slice(2)).toEqual([
        ["invoice.paid", 200],
        ["invoice.payment_succeeded", 200],
      ]);
      expect(await rowOf(paid.user.accountId)).toMatchObject({ status: "paid" });
      expect(await rowOf(declined.user.accountId)).toMatchObject({ status: "open", paymentAttempts: 1 });

      // Three more attempts, 3 days apart; after the last Stripe leaves it open (dunning takes it from there).
      clock += 9 * 86_400_000;
      sim.sync();
      await sim.webhooks.settle();
      expect(await rowOf(declined.user.accountId)).toMatchObject({
        status: "open",
        paymentAttempts: 4,
        nextPaymentAttemptAt: null,
      });
    } finally {
      sim.declinePayments(declined.customer, null);
      clock = AFTER;
    }
  });
});
