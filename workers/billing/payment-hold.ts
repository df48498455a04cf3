/**
 * Dunning: an account with an unpaid invoice starts no new work until it pays. The hold lives on the
 * account (`accounts.payment_hold`, a copy of the invoice's figures) so that the submission reads it
 * in the statement it already sends (workers/api/payment-required.ts).
 *
 * An account is held while one of its invoices is `uncollectible`, or `open` and first finalized
 * more than the grace period ago (`DUNNING_GRACE_DAYS`, default 14). A hold stays on its invoice
 * until that invoice is paid or voided, whatever the clock of whoever looks next (a webhook's, the
 * cron's), so holds never flap; it then moves to the next unpaid invoice past grace, or clears.
 *
 * `ensurePaymentHold` derives the hold from the invoices' current statuses, under the account's
 * lock: it is idempotent, and an event that arrives late or twice cannot leave a wrong hold. Stripe's
 * webhooks call it for the invoice's account (webhooks.ts); the hourly sweep for every account whose
 * hold is due to change.
 */
import { and, asc, eq, inArray, sql } from "drizzle-orm";
import { monthOf } from "../../core/pricing/month";
import type { Db } from "../db/client";
import { accounts, auditLog, invoices, type PaymentHold } from "../db/schema";
import { errorFields, type Logger } from "../http/log";

type Tx = Parameters<Parameters<Db["transaction"]>[0]>[0];

export const DEFAULT_DUNNING_GRACE_DAYS = 14;
const DAY_MS = 86_400_000;
/** The statuses of an invoice not paid yet (and not voided). */
const UNPAID = ["open", "uncollectible"] as const;

/** `DUNNING_GRACE_DAYS`: whole days, 0–365; anything else is the default (with a warning). */
export function dunningGraceMs(value: string | undefined, log?: Logger): number {
  if (value === undefined || value === "") return DEFAULT_DUNNING_GRACE_DAYS * DAY_MS;
  const days = Number(value);
  if (Number.isInteger(days) && days >= 0 && days <= 365) return days * DAY_MS;
  log?.warn("config.invalid_dunning_grace", { value, using_days: DEFAULT_DUNNING_GRACE_DAYS });
  return DEFAULT_DUNNING_GRACE_DAYS * DAY_MS;
}

/** What decides a hold: the time it is decided at, and how long an open invoice may stay unpaid. */
export interface HoldClock {
  now: number;
  graceMs: number;
}

export type HoldChange = "set" | "moved" | "refreshed" | "cleared" | "unchanged";

type UnpaidInvoice = Pick<
  typeof invoices.$inferSelect,
  "id" | "status" | "number" | "periodStart" | "totalCents" | "currency" | "hostedInvoiceUrl" | "finalizedAt"
>;

function holdOf(invoice: UnpaidInvoice, since: string): PaymentHold {
  return {
    invoice_id: invoice.id,
    number: invoice.number,
    month: monthOf(invoice.periodStart.getTime()),
    amount_due_cents: invoice.totalCents,
    currency: invoice.currency,
    hosted_invoice_url: invoice.hostedInvoiceUrl,
    since,
  };
}

const sameHold = (a: PaymentHold, b: PaymentHold) =>
  (Object.keys(b) as (keyof PaymentHold)[]).every((k) => a[k] === b[k]);

/**
 * Brings the account's hold in line with its invoices, in the caller's transaction (it takes the
 * account's lock, as a submission does, so neither sees the other half-done). `actor` names who
 * decided, for the audit row (`stripe:<event id>`, `billing.sweep`).
 */
export async function ensurePaymentHold(
  tx: Tx,
  accountId: string,
  clock: HoldClock,
  actor: string,
): Promise<HoldChange> {
  const [account] = await tx
    .select({ hold: accounts.paymentHold })
    .from(accounts)
    .where(eq(accounts.id, accountId))
    .for("no key update");
  if (!account) return "unchanged";
  const held = account.hold;
  const unpaid = await tx
    .select({
      id: invoices.id,
      status: invoices.status,
      number: invoices.number,
      periodStart: invoices.periodStart,
      totalCents: invoices.totalCents,
      currency: invoices.currency,
      hostedInvoiceUrl: invoices.hostedInvoiceUrl,
      finalizedAt: invoices.finalizedAt,
    })
    .from(invoices)
    .where(and(eq(invoices.accountId, accountId), inArray(invoices.status, UNPAID)))
    .orderBy(asc(invoices.periodStart));
  const pastGrace = (i: UnpaidInvoice) =>
    i.status === "uncollectible" || (i.finalizedAt !== null && i.finalizedAt.getTime() <= clock.now - clock.graceMs);
  // The held invoice keeps the hold while it is unpaid; otherwise the oldest one past grace takes it.
  const due = unpaid.find((i) => i.id === held?.invoice_id) ?? unpaid.find(pastGrace);
  const next = due ? holdOf(due, held?.since ?? new Date(clock.now).toISOString()) : null;
  if (held === null && next === null) return "unchanged";
  if (held !== null && next !== null && sameHold(held, next)) return "unchanged";

  await tx.update(accounts).set({ paymentHold: next }).where(eq(accounts.id, accountId));
  const change: HoldChange =
    next === null ? "cleared" : held === null ? "set" : held.invoice_id === next.invoice_id ? "refreshed" : "moved";
  if (change === "refreshed") return change; // the same invoice's figures, newer: not a new decision
  const entry = {
    accountId,
    actorType: "system" as const,
    actorId: actor,
    targetType: "account",
    targetId: accountId,
  };
  if (next !== null) {
    await tx.insert(auditLog).values({
      ...entry,
      action: "account.payment_hold_set",
      data: {
        invoice_id: next.invoice_id,
        month: next.month,
        amount_due_cents: next.amount_due_cents,
        currency: next.currency,
        invoice_status: due?.status,
        grace_days: clock.graceMs / DAY_MS,
        ...(held ? { previous_invoice_id: held.invoice_id } : {}),
      },
    });
  } else if (held !== null) {
    const [was] = await tx.select({ status: invoices.status }).from(invoices).where(eq(invoices.id, held.invoice_id));
    await tx.insert(auditLog).values({
      ...entry,
      action: "account.payment_hold_cleared",
      data: { invoice_id: held.invoice_id, invoice_status: was?.status ?? null, since: held.since },
    });
  }
  return change;
}

export interface SweepResult {
  checked: number;
  set: number;
  cleared: number;
  failed: number;
}

/**
 * The hourly sweep: every account whose hold is due to change (not held, with an invoice past
 * grace; or held on an invoice no longer unpaid), each in a transaction of its own. The webhooks
 * usually got there first; this catches open invoices crossing the grace period, which no event
 * announces, and events that never came.
 */
export async function sweepPaymentHolds(db: Db, clock: HoldClock, log: Logger): Promise<SweepResult> {
  const cutoff = new Date(clock.now - clock.graceMs).toISOString();
  const due = await db.execute<{ account_id: string }>(sql`
    select i.account_id from ${invoices} i join ${accounts} a on a.id = i.account_id
     where a.payment_hold is null
       and (i.status = 'uncollectible' or (i.status = 'open' and i.finalized_at <= ${cutoff}::timestamptz))
    union
    select a.id from ${accounts} a
     where a.payment_hold is not null
       and not exists (select 1 from ${invoices} i
                        where i.id = (a.payment_hold ->> 'invoice_id')::uuid and i.status in ('open', 'uncollectible'))`);
  const result: SweepResult = { checked: due.length, set: 0, cleared: 0, failed: 0 };
  for (const { account_id } of due) {
    try {
      const change = await db.transaction((tx) => ensurePaymentHold(tx, account_id, clock, "billing.sweep"));
      if (change === "set" || change === "moved") result.set += 1;
      if (change === "cleared") result.cleared += 1;
    } catch (error) {
      result.failed += 1;
      log.warn("billing.payment_hold_failed", { account_id, ...errorFields(error) });
    }
  }
  if (result.set + result.cleared + result.failed > 0) log.info("billing.payment_holds", { ...result });
  return result;
}
