/**
 * Shared by the workerd tests of Stripe's webhooks: an account billed through the Stripe stand-in,
 * and Stripe's signed events about its invoice, posted to the route (signed with the real SDK's
 * test helper).
 */
import { env, SELF } from "cloudflare:test";
import { eq } from "drizzle-orm";
import Stripe from "stripe";
import { expect } from "vitest";
import { monthBounds, monthOf } from "../../core/pricing/month";
import { StripeSimulator } from "../../tools/stripe-sim/simulator";
import { BASE, signUp } from "../api/test-support";
import { withDb } from "../db/client";
import { invoices } from "../db/schema";
import { createLogger } from "../http/log";
import { runBilling, SETTLE_MS, stripeOf } from "./invoices";
import { addFlexHour } from "./test-billing";

const log = createLogger("error");
export const thisMonth = monthBounds(monthOf(Date.now()))!;
/** An hour and a minute after this month ends: this month's invoices are due. */
export const AFTER = thisMonth.endMs + SETTLE_MS + 60_000;
const SECRET = env.STRIPE_WEBHOOK_SECRET as string;
const subtle = Stripe.createSubtleCryptoProvider();

/** A new account with some usage this month, billed: its invoice is `open` in Stripe. */
export async function billedInvoice() {
  const user = await signUp({});
  await addFlexHour(user.accountId, thisMonth.startMs);
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
/** A Stripe event of `type` about `invoice`, with `extra` fields on the invoice. */
export function event(type: string, invoice: object, extra: Record<string, unknown> = {}) {
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

/** Posts an event to the webhook route, signed as Stripe signs (or not quite, as `opts` say). */
export async function deliver(
  body: object | string,
  opts: { secret?: string; timestamp?: number; tamper?: boolean } = {},
) {
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
