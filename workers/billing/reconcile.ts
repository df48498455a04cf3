/**
 * The hourly payment-hold task, and what it asks Stripe first: an invoice paid, voided or written
 * off whose webhook never came (the endpoint misconfigured, its secret rotated wrongly, Stripe
 * giving up after days of retries) would otherwise keep its account held for good, or never hold
 * it. Each invoice that holds an account, or is about to (uncollectible, or open past its grace),
 * is read from Stripe and its status applied as its event would have been (forward only,
 * webhooks.ts); then the sweep derives every hold due to change (payment-hold.ts).
 *
 * A run pages through all of them (a month-end can bring many), least recently checked first
 * (`invoices.stripe_checked_at`, stamped at each read whatever comes of it), up to a bound:
 * RECONCILE_MAX_PAGES pages, and no new read after RECONCILE_BUDGET_MS. A run that stops leaves
 * the ones it did not reach at the front for the next, and an invoice Stripe will not answer
 * for goes behind the others rather than taking the same place every hour.
 */
import { eq, sql } from "drizzle-orm";
import type Stripe from "stripe";
import type { CronTask } from "../cron";
import { type Db, withDb } from "../db/client";
import { accounts, invoices } from "../db/schema";
import { errorFields, type Logger } from "../http/log";
import { stripeOf } from "./invoices";
import { dunningGraceMs, type HoldClock, sweepPaymentHolds } from "./payment-hold";
import { applyInvoiceEvent, type InvoiceEventType } from "./webhooks";

/** Invoices taken from Postgres at a time; each is then read from Stripe. */
export const RECONCILE_PAGE_SIZE = 100;
/**
 * Pages in one run, at most: 1,000 reads from Stripe, a tenth of the subrequests a Worker
 * invocation may make (10,000 on the Paid plan), which the same trigger's invoices task shares.
 */
export const RECONCILE_MAX_PAGES = 10;
/**
 * Wall time after which a run reads no more: a Stripe that answers slowly or fails (the SDK tries
 * each read three times) must not keep the sweep that follows from running within the
 * invocation's 15 minutes.
 */
export const RECONCILE_BUDGET_MS = 10 * 60_000;

/** The event a status Stripe reports stands for; none for a status that holds nothing new. */
const EVENT_OF: Partial<Record<string, InvoiceEventType>> = {
  paid: "invoice.paid",
  void: "invoice.voided",
  uncollectible: "invoice.marked_uncollectible",
};

export interface ReconcileResult {
  /** Invoices due to be read when the run began. */
  due: number;
  checked: number;
  applied: number;
  failed: number;
  /** Which bound ended the run before it had read every due invoice, if one did. */
  stopped: "pages" | "time" | null;
}

export interface ReconcileOptions {
  /** Only this account's invoices. */
  accountId?: string;
  pageSize?: number;
  maxPages?: number;
  budgetMs?: number;
  /** The clock the budget runs on: the trigger's time (`HoldClock.now`) stands still during a run. */
  wallNow?: () => number;
}

/** Reads from Stripe the unpaid invoices that hold an account or are about to, and applies what changed. */
export async function reconcileWithStripe(
  db: Db,
  stripe: Stripe,
  clock: HoldClock,
  log: Logger,
  options: ReconcileOptions = {},
): Promise<ReconcileResult> {
  const {
    accountId = null,
    pageSize = RECONCILE_PAGE_SIZE,
    maxPages = RECONCILE_MAX_PAGES,
    budgetMs = RECONCILE_BUDGET_MS,
    wallNow = Date.now,
  } = options;
  const started = wallNow();
  const cutoff = new Date(clock.now - clock.graceMs).toISOString();
  const dueFrom = sql`
    from ${invoices} i join ${accounts} a on a.id = i.account_id
   where i.stripe_invoice_id is not null and i.status in ('open', 'uncollectible')
     and (${accountId}::uuid is null or i.account_id = ${accountId}::uuid)
     and (i.id = (a.payment_hold ->> 'invoice_id')::uuid or i.status = 'uncollectible'
          or i.finalized_at <= ${cutoff}::timestamptz)`;
  // The run's start on the database's clock, the one the stamps are written with (as text, to keep
  // its microseconds): every stamp this run writes is later.
  const [run] = await db.execute<{ due: number; began: string }>(
    sql`select count(*)::int as due, now()::text as began ${dueFrom}`,
  );
  const result: ReconcileResult = { due: run?.due ?? 0, checked: 0, applied: 0, failed: 0, stopped: null };

  // Each invoice read is stamped and so leaves the set this query takes from: the next page is the
  // next least recently checked, with no cursor, and whatever a run does not reach is first in the
  // next run.
  for (let page = 0; result.stopped === null; page++) {
    if (page === maxPages) {
      if (result.checked < result.due) result.stopped = "pages";
      break;
    }
    const rows = await db.execute<DueRow>(sql`
      select i.id, i.stripe_invoice_id ${dueFrom}
         and (i.stripe_checked_at is null or i.stripe_checked_at < ${run?.began ?? null}::timestamptz)
       order by i.stripe_checked_at nulls first, i.id limit ${pageSize}`);
    for (const row of rows) {
      if (wallNow() - started >= budgetMs) {
        result.stopped = "time";
        break;
      }
      if (!(await stampChecked(db, log, row, result))) continue;
      result.checked += 1;
      await readOne(db, stripe, clock, log, row, result);
    }
    if (rows.length < pageSize) break;
  }
  if (result.stopped) log.warn("billing.stripe_reconcile_stopped", { ...result });
  return result;
}

type DueRow = { id: string; stripe_invoice_id: string };

/**
 * Stamps the invoice checked before Stripe is asked, so that whatever the read does (fails, or
 * hangs until the invocation is ended) it goes behind the others and cannot hold the front of
 * every run. An invoice whose stamp fails is not read: the next page would give it back, and
 * read it again (the run's pages still end that).
 */
async function stampChecked(db: Db, log: Logger, row: DueRow, result: ReconcileResult): Promise<boolean> {
  try {
    await db.update(invoices).set({ stripeCheckedAt: sql`now()` }).where(eq(invoices.id, row.id));
    return true;
  } catch (error) {
    result.failed += 1;
    log.warn("billing.stripe_reconcile_failed", { invoice_id: row.id, ...errorFields(error) });
    return false;
  }
}

/** Reads one invoice from Stripe and applies its status, counting the outcome in `result`. */
async function readOne(db: Db, stripe: Stripe, clock: HoldClock, log: Logger, row: DueRow, result: ReconcileResult) {
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
