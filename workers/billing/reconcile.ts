/**
 * The hourly payment-hold task, and what it asks Stripe first: an invoice paid, voided or written
 * off whose webhook never came (the endpoint misconfigured, its secret rotated wrongly, Stripe
 * giving up after days of retries) would otherwise keep its account held for good, or never hold
 * it. Each invoice that holds an account, or is about to (uncollectible, or open past its grace),
 * is read from Stripe and its status applied as its event would have been (forward only,
 * webhooks.ts); then the sweep derives every hold due to change (payment-hold.ts).
 *
 * A run pages through all of them (a month-end can bring many), up to a bound: RECONCILE_MAX_PAGES
 * pages, and no new read after RECONCILE_BUDGET_MS. When more are due than a run's pages hold,
 * each hour's run starts that many further along the list, so the next runs take up the rest.
 */
import { type SQL, sql } from "drizzle-orm";
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

const HOUR_MS = 3_600_000;
/** Below every invoice id: a run that starts here reads them in plain id order. */
const LOWEST_ID = "00000000-0000-0000-0000-000000000000";

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
  const dueFrom = (then: SQL) => sql`
    from ${invoices} i join ${accounts} a on a.id = i.account_id
   where i.stripe_invoice_id is not null and i.status in ('open', 'uncollectible')
     and (${accountId}::uuid is null or i.account_id = ${accountId}::uuid)
     and (i.id = (a.payment_hold ->> 'invoice_id')::uuid or i.status = 'uncollectible'
          or i.finalized_at <= ${cutoff}::timestamptz)
     ${then}`;
  const [count] = await db.execute<{ n: number }>(sql`select count(*)::int as n ${dueFrom(sql``)}`);
  const result: ReconcileResult = { due: count?.n ?? 0, checked: 0, applied: 0, failed: 0, stopped: null };

  // More due than a run reads: each hour starts a run's worth further along (in id order, wrapping
  // around), so the invoices a run leaves are the next one's, with no cursor to keep.
  const perRun = pageSize * maxPages;
  let start = LOWEST_ID;
  if (result.due > perRun) {
    const offset = (Math.floor(clock.now / HOUR_MS) * perRun) % result.due;
    const [first] = await db.execute<{ id: string }>(
      sql`select i.id ${dueFrom(sql`order by i.id offset ${offset} limit 1`)}`,
    );
    start = first?.id ?? LOWEST_ID;
  }
  // The ids from `start` up, then those below it. A keyset, not an offset: an invoice the run moves
  // out of the set (paid, void) moves no other one past the next page.
  const key = sql`(i.id < ${start}::uuid, i.id)`;
  let after: DueRow | null = null;
  for (let page = 0; result.stopped === null; page++) {
    if (page === maxPages) {
      if (result.checked < result.due) result.stopped = "pages";
      break;
    }
    const rows: DueRow[] = await db.execute<DueRow>(sql`
      select i.id, i.stripe_invoice_id, i.id < ${start}::uuid as wrapped
      ${dueFrom(sql`${after ? sql`and ${key} > (${after.wrapped}::boolean, ${after.id}::uuid)` : sql``}
       order by ${key} limit ${pageSize}`)}`);
    for (const row of rows) {
      if (wallNow() - started >= budgetMs) {
        result.stopped = "time";
        break;
      }
      result.checked += 1;
      await readOne(db, stripe, clock, log, row, result);
    }
    after = rows.at(-1) ?? null;
    if (rows.length < pageSize) break;
  }
  if (result.stopped) log.warn("billing.stripe_reconcile_stopped", { ...result });
  return result;
}

type DueRow = { id: string; stripe_invoice_id: string; wrapped: boolean };

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
