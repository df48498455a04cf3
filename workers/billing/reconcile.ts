/**
 * The hourly payment-hold task, and what it asks Stripe first: an invoice paid, voided or written
 * off whose webhook never came (the endpoint misconfigured, its secret rotated wrongly, Stripe
 * giving up after days of retries) would otherwise keep its account held for good, or never hold
 * it. Each invoice that holds an account, or is about to (uncollectible, or open past its grace),
 * is read from Stripe and its status applied as its event would have been (forward only,
 * webhooks.ts); then the sweep derives every hold due to change (payment-hold.ts).
 */
import { sql } from "drizzle-orm";
import type Stripe from "stripe";
import type { CronTask } from "../cron";
import { type Db, withDb } from "../db/client";
import { accounts, invoices } from "../db/schema";
import { errorFields, type Logger } from "../http/log";
import { stripeOf } from "./invoices";
import { dunningGraceMs, type HoldClock, sweepPaymentHolds } from "./payment-hold";
import { applyInvoiceEvent, type InvoiceEventType } from "./webhooks";

/** Invoices read from Stripe in one run, at most (the least recently updated first). */
export const RECONCILE_LIMIT = 100;

/** The event a status Stripe reports stands for; none for a status that holds nothing new. */
const EVENT_OF: Partial<Record<string, InvoiceEventType>> = {
  paid: "invoice.paid",
  void: "invoice.voided",
  uncollectible: "invoice.marked_uncollectible",
};

export interface ReconcileResult {
  checked: number;
  applied: number;
  failed: number;
}

/**
 * Reads from Stripe the unpaid invoices that hold an account or are about to, and applies what
 * changed; `accountId` limits it to one account's.
 */
export async function reconcileWithStripe(
  db: Db,
  stripe: Stripe,
  clock: HoldClock,
  log: Logger,
  accountId?: string,
): Promise<ReconcileResult> {
  const cutoff = new Date(clock.now - clock.graceMs).toISOString();
  const rows = await db.execute<{ id: string; stripe_invoice_id: string }>(sql`
    select i.id, i.stripe_invoice_id from ${invoices} i join ${accounts} a on a.id = i.account_id
     where i.stripe_invoice_id is not null and i.status in ('open', 'uncollectible')
       and (${accountId ?? null}::uuid is null or i.account_id = ${accountId ?? null}::uuid)
       and (i.id = (a.payment_hold ->> 'invoice_id')::uuid or i.status = 'uncollectible'
            or i.finalized_at <= ${cutoff}::timestamptz)
     order by i.updated_at limit ${RECONCILE_LIMIT}`);
  const result: ReconcileResult = { checked: rows.length, applied: 0, failed: 0 };
  for (const row of rows) {
    try {
      const invoice = await stripe.invoices.retrieve(row.stripe_invoice_id);
      const type = EVENT_OF[invoice.status ?? ""];
      const { outcome } = type
        ? await applyInvoiceEvent(db, type, invoice, Math.floor(clock.now / 1000))
        : { outcome: "unchanged" };
      if (outcome === "applied") {
        result.applied += 1;
        log.warn("billing.stripe_event_missed", { invoice_id: row.id, stripe_status: invoice.status });
      }
    } catch (error) {
      result.failed += 1;
      log.warn("billing.stripe_reconcile_failed", { invoice_id: row.id, ...errorFields(error) });
    }
  }
  return result;
}

/** The hourly cron task (workers/cron.ts): Stripe's word on held invoices, then the sweep, at the trigger's time. */
export const paymentHoldsTask: CronTask = {
  name: "billing.payment_holds",
  run: (env, log, trigger) =>
    withDb(env, async (db) => {
      const clock = { now: trigger.scheduledTime, graceMs: dunningGraceMs(env.DUNNING_GRACE_DAYS, log) };
      const stripe = stripeOf(env);
      if (stripe) await reconcileWithStripe(db, stripe, clock, log);
      return sweepPaymentHolds(db, clock, log);
    }),
};
