/**
 * Shared by the workerd tests of billing and Stripe's webhooks: usage to bill, a Stripe client over
 * the Stripe stand-in, an account billed through it, and Stripe's signed events about its invoice,
 * posted to the route (signed with the real SDK's test helper).
 */
import { env, SELF } from "cloudflare:test";
import { eq } from "drizzle-orm";
import Stripe from "stripe";
import { expect } from "vitest";
import { monthBounds, monthOf } from "../../core/pricing/month";
import { StripeSimulator } from "../../tools/stripe-sim/simulator";
import { BASE, signUp, sql } from "../api/test-support";
import { withDb } from "../db/client";
import { invoices } from "../db/schema";
import { createLogger } from "../http/log";
import { runBilling, SETTLE_MS, stripeOf } from "./invoices";

const log = createLogger("error");
export const thisMonth = monthBounds(monthOf(Date.now()))!;
/** An hour and a minute after this month ends: this month's invoices are due. */
export const AFTER = thisMonth.endMs + SETTLE_MS + 60_000;
const SECRET = env.STRIPE_WEBHOOK_SECRET as string;
/** Every region has delivered all its usage to Postgres (billing's `undeliveredUsage`). */
export const nothingUndelivered = async () => new Set<string>();
const subtle = Stripe.createSubtleCryptoProvider();

/** One hour of one Flex H100 GPU for the account, in the second hour of the month starting at `monthStartMs`. */
export async function addFlexHour(accountId: string, monthStartMs: number): Promise<void> {
  await sql(
    `insert into usage_events (account_id, job_run_id, tier, gpu_model, gpu_count, gpu_seconds, period_start, period_end)
     values ($1, $2, 'flex', 'H100', 1, 3600, $3, $4)`,
    [
      accountId,
      `run-${crypto.randomUUID()}`,
      new Date(monthStartMs + 3_600_000).toISOString(),
      new Date(monthStartMs + 7_200_000).toISOString(),
    ],
  );
}

/** The real SDK, in-process against the stand-in `sim` (as billing's Stripe client, `stripeOf`). */
export function stripeOver(sim: StripeSimulator, key = "sk_test_scalar_webhooks"): Stripe {
  return stripeOf({ STRIPE_SECRET_KEY: key }, ((i: RequestInfo | URL, init?: RequestInit) =>
    sim.fetch(new Request(i, init))) as typeof fetch)!;
}

/** A new account with some usage this month, billed: its invoice is `open` in Stripe. */
export async function billedInvoice() {
  const user = await signUp({});
  await addFlexHour(user.accountId, thisMonth.startMs);
  const sim = new StripeSimulator({ now: () => AFTER });
  const stripe = stripeOver(sim);
  await withDb(env, (db) => runBilling({ db, stripe, now: AFTER, log, undeliveredUsage: nothingUndelivered }));
  const [row] = await withDb(env, (db) => db.select().from(invoices).where(eq(invoices.accountId, user.accountId)));
  expect(row).toMatchObject({ status: "open" });
  return { user, row: row!, stripeInvoice: sim.invoice(row!.stripeInvoiceId!)!, stripe };
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
