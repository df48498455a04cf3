/**
 * Monthly invoices. Scalar rates usage itself (rating.ts, core/pricing) and asks Stripe only to
 * collect: for every closed calendar month (UTC), once its usage has settled (SETTLE_MS after the
 * month's end, so the outbox has delivered the last runs' usage events), each account that used
 * GPUs gets one invoice row (`invoices`, unique per account and month) holding its rated lines;
 * then each draft is handed to Stripe: the account's customer (created once), a draft invoice, one
 * invoice item per line attached to it, and finalization. Every Stripe call carries an idempotency
 * key derived from the invoice (and line), so a run that fails half-way, or two runs at once, never
 * bill twice: the next run repeats the same calls and Stripe answers them as before. A failure is
 * kept in `last_error` and retried by the next run.
 *
 * A closed month's running work counts up to the month's end: when such a run ends, its usage event
 * spans both months and only its share after the 1st is billed next month (rating.ts).
 *
 * An account's invoice also waits while a region scheduler still holds run or usage records of it
 * decided before the month's end and not yet delivered to Postgres (its outbox, while Postgres or
 * the way there is down): rated without them, that usage would never be billed. While a region
 * does not answer, no invoice of the month is made.
 */
import { and, asc, eq, isNull, sql } from "drizzle-orm";
import Stripe from "stripe";
import { monthBounds, monthOf } from "../../core/pricing/month";
import { schedulerOf } from "../api/scheduler";
import type { Db } from "../db/client";
import { accounts, invoices } from "../db/schema";
import { errorFields, type Logger } from "../http/log";
import { regionsOf } from "../regions";
import { type RatedLine, rateUsage, totalsOf } from "./rating";

declare global {
  namespace Cloudflare {
    interface Env {
      /** A Worker secret: the Stripe secret key. Without it invoices are rated and kept as drafts. */
      STRIPE_SECRET_KEY?: string;
      /** Where the Stripe API is (default Stripe's own); locally the stand-in of tools/stripe-sim. */
      STRIPE_API_BASE?: string;
    }
  }
}

/** How long after a month ends its invoices wait for the last usage events. */
export const SETTLE_MS = 60 * 60_000;

/** The Stripe client of this deployment, or null when no key is configured. */
export function stripeOf(
  env: { STRIPE_SECRET_KEY?: string; STRIPE_API_BASE?: string },
  fetchFn?: typeof fetch,
): Stripe | null {
  const key = env.STRIPE_SECRET_KEY?.trim();
  if (!key) return null;
  const base = env.STRIPE_API_BASE ? new URL(env.STRIPE_API_BASE) : null;
  return new Stripe(key, {
    httpClient: Stripe.createFetchHttpClient(fetchFn),
    maxNetworkRetries: 2,
    ...(base
      ? {
          host: base.hostname,
          protocol: base.protocol === "http:" ? ("http" as const) : ("https" as const),
          ...(base.port ? { port: Number(base.port) } : {}),
        }
      : {}),
  });
}

export interface BillingDeps {
  db: Db;
  stripe: Stripe | null;
  now: number;
  log: Logger;
  /**
   * The accounts with usage overlapping [`startMs`, `endMs`) that Postgres does not have yet; null
   * when that cannot be known now (a region did not answer). `undeliveredUsageOf` in production.
   */
  undeliveredUsage: (startMs: number, endMs: number) => Promise<Set<string> | null>;
}

/** Asks every region served here; null if one does not answer. */
export function undeliveredUsageOf(env: Env, log: Logger): BillingDeps["undeliveredUsage"] {
  return async (startMs, endMs) => {
    const accounts = new Set<string>();
    for (const region of regionsOf(env)) {
      try {
        for (const id of (await schedulerOf(env, region).undeliveredUsage(startMs, endMs)).accounts) accounts.add(id);
      } catch (error) {
        log.warn("billing.region_unanswered", { region, ...errorFields(error) });
        return null;
      }
    }
    return accounts;
  };
}

export interface BillingResult {
  month: string | null;
  created: number;
  sent: number;
  failed: number;
}

/** The last month whose invoices are due at `now` (null in the first hour of a month). */
export function billableMonth(now: number): string | null {
  const current = monthBounds(monthOf(now))!;
  const previous = monthOf(current.startMs - 1);
  return now >= current.startMs + SETTLE_MS ? previous : null;
}

/**
 * How many closed months each run rates: the due month and the ones before it, for an account
 * whose usage reached Postgres late (a region's outbox held it, or a row waited for an operator).
 */
export const CATCH_UP_MONTHS = 12;

/**
 * One billing run: rate the invoices that do not exist yet of the due month and of the
 * `CATCH_UP_MONTHS - 1` months before it, oldest first, then send every draft.
 */
export async function runBilling(deps: BillingDeps): Promise<BillingResult> {
  const month = billableMonth(deps.now);
  let created = 0;
  if (month) {
    const months = [month];
    while (months.length < CATCH_UP_MONTHS) months.unshift(monthOf(monthBounds(months[0]!)!.startMs - 1));
    for (const m of months) created += await createInvoices(deps, m);
  }
  let sent = 0;
  let failed = 0;
  if (deps.stripe) {
    const drafts = await deps.db
      .select({ id: invoices.id })
      .from(invoices)
      .where(eq(invoices.status, "draft"))
      .orderBy(asc(invoices.periodStart), asc(invoices.createdAt));
    for (const { id } of drafts) {
      try {
        await sendInvoice(deps.db, deps.stripe, id);
        sent += 1;
      } catch (error) {
        failed += 1;
        const message = error instanceof Error ? error.message : String(error);
        deps.log.warn("billing.send_failed", { invoice_id: id, error: message.slice(0, 500) });
        await deps.db
          .update(invoices)
          .set({ lastError: message.slice(0, 1000), updatedAt: new Date(deps.now) })
          .where(eq(invoices.id, id));
      }
    }
  } else if (created > 0) {
    deps.log.warn("billing.no_stripe_key", { month, created });
  }
  return { month, created, sent, failed };
}

/** Invoice rows for `month` for every account that used GPUs in it and has none yet. */
async function createInvoices(deps: BillingDeps, month: string): Promise<number> {
  const bounds = monthBounds(month)!;
  const start = new Date(bounds.startMs).toISOString();
  const end = new Date(bounds.endMs).toISOString();
  // Accounts with ended runs overlapping the month, or runs that were running in it.
  const candidates = await deps.db.execute<{ account_id: string }>(sql`
    select account_id from usage_events
     where period_start < ${end}::timestamptz and period_end >= ${start}::timestamptz
    union
    select account_id from job_runs where status = 'running' and started_at < ${end}::timestamptz
    union
    select account_id from replica_runs where status = 'running' and started_at < ${end}::timestamptz
    except
    select account_id from invoices where period_start = ${start}::timestamptz`);
  if (candidates.length === 0) return 0;
  // Asked after the candidates were read: usage delivered in between is in Postgres by now, and
  // usage still held then is waited for.
  const waiting = await deps.undeliveredUsage(bounds.startMs, bounds.endMs);
  if (waiting === null) {
    deps.log.warn("billing.usage_unsettled", { month, reason: "a region scheduler did not answer" });
    return 0;
  }
  let created = 0;
  for (const { account_id } of candidates) {
    if (waiting.has(account_id)) {
      deps.log.warn("billing.usage_undelivered", { account_id, month });
      continue;
    }
    const lines = await rateUsage(deps.db, account_id, bounds, bounds.endMs);
    const totals = totalsOf(lines);
    if (totals.total_cents <= 0) continue;
    const inserted = await deps.db
      .insert(invoices)
      .values({
        accountId: account_id,
        periodStart: new Date(bounds.startMs),
        periodEnd: new Date(bounds.endMs),
        status: "draft",
        lines: lines.map(({ state: _state, ...line }) => line),
        subtotalCents: totals.total_cents,
        totalCents: totals.total_cents,
      })
      .onConflictDoNothing({ target: [invoices.accountId, invoices.periodStart] })
      .returning({ id: invoices.id });
    if (inserted.length > 0) {
      created += 1;
      deps.log.info("billing.invoice_created", { account_id, month, total_cents: totals.total_cents });
    }
  }
  return created;
}

type InvoiceLine = Omit<RatedLine, "state">;

const describeLine = (l: InvoiceLine, month: string) =>
  `${l.tier === "fast" ? "Fast" : "Flex"} ${l.gpu_model} GPU time, ${month}: ${(l.gpu_seconds / 3600).toFixed(4)} GPU-hours (${l.gpu_seconds} GPU-seconds) at $${(l.cents_per_gpu_hour / 100).toFixed(2)} per GPU-hour`;

/** Hands one draft invoice to Stripe, each step safe to repeat; marks it `open` (or `paid`). */
export async function sendInvoice(db: Db, stripe: Stripe, invoiceId: string): Promise<void> {
  const [row] = await db
    .select({ invoice: invoices, account: accounts })
    .from(invoices)
    .innerJoin(accounts, eq(accounts.id, invoices.accountId))
    .where(eq(invoices.id, invoiceId));
  if (row?.invoice.status !== "draft") return;
  const { invoice, account } = row;
  const month = monthOf(invoice.periodStart.getTime());

  let customer = account.stripeCustomerId;
  if (!customer) {
    const created = await stripe.customers.create(
      { name: account.name, metadata: { account_id: account.id } },
      { idempotencyKey: `scalar-customer-${account.id}` },
    );
    await db
      .update(accounts)
      .set({ stripeCustomerId: created.id })
      .where(and(eq(accounts.id, account.id), isNull(accounts.stripeCustomerId)));
    const [saved] = await db
      .select({ id: accounts.stripeCustomerId })
      .from(accounts)
      .where(eq(accounts.id, account.id));
    customer = saved?.id ?? created.id;
  }

  // A draft first, then its items attached to it by id: no other invoice can take them. A draft an
  // earlier run made is taken up again, not made anew: Stripe keeps idempotency keys 24 h, and a
  // run finishing a day later would otherwise make (and charge) a second invoice.
  const draft = invoice.stripeInvoiceId
    ? await stripe.invoices.retrieve(invoice.stripeInvoiceId)
    : await stripe.invoices.create(
        {
          customer,
          currency: invoice.currency,
          collection_method: "charge_automatically",
          // Not finalized by Stripe on its own an hour on (half-built, were a run to stop between the
          // draft and its items): this run finalizes it, and collection then advances automatically.
          auto_advance: false,
          pending_invoice_items_behavior: "exclude",
          description: `Scalar GPU usage, ${month}`,
          metadata: { invoice_id: invoice.id, account_id: account.id, month },
        },
        { idempotencyKey: `scalar-invoice-${invoice.id}` },
      );
  if (invoice.stripeInvoiceId !== draft.id) {
    await db
      .update(invoices)
      .set({ stripeInvoiceId: draft.id, updatedAt: new Date() })
      .where(eq(invoices.id, invoice.id));
  }
  const lines = invoice.lines as InvoiceLine[];
  // Lines an earlier run attached are not added again (their keys may be forgotten too).
  const attached = new Set<string>();
  if (invoice.stripeInvoiceId && draft.status === "draft") {
    for await (const line of stripe.invoices.listLineItems(draft.id as string, { limit: 100 })) {
      if (line.metadata?.invoice_id === invoice.id && line.metadata.line) attached.add(line.metadata.line);
    }
  }
  for (const [index, line] of lines.entries()) {
    if (draft.status !== "draft" || attached.has(String(index))) continue;
    await stripe.invoiceItems.create(
      {
        customer,
        invoice: draft.id as string,
        amount: line.amount_cents,
        currency: invoice.currency,
        description: describeLine(line, month),
        period: {
          start: Math.floor(invoice.periodStart.getTime() / 1000),
          end: Math.floor(invoice.periodEnd.getTime() / 1000),
        },
        metadata: { invoice_id: invoice.id, line: String(index), tier: line.tier, gpu_model: line.gpu_model },
      },
      { idempotencyKey: `scalar-invoice-${invoice.id}-line-${index}` },
    );
  }
  if (draft.status === "draft") {
    // Checked before finalizing: once finalized, Stripe collects whatever the invoice totals.
    const built = await stripe.invoices.retrieve(draft.id as string);
    if (built.total !== invoice.totalCents) {
      throw new Error(
        `Stripe's draft ${built.id} totals ${built.total} ¢, ours ${invoice.totalCents} ¢: not finalized`,
      );
    }
  }
  const finalized =
    draft.status === "draft"
      ? await stripe.invoices.finalizeInvoice(
          draft.id as string,
          { auto_advance: true },
          { idempotencyKey: `scalar-invoice-${invoice.id}-finalize` },
        )
      : draft;
  if (finalized.total !== invoice.totalCents) {
    throw new Error(`Stripe's invoice ${finalized.id} totals ${finalized.total} ¢, ours ${invoice.totalCents} ¢`);
  }
  // Stripe's own finalization time (a repeated run finds the first one); the payment hold's grace runs from it.
  const finalizedAt = new Date((finalized.status_transitions?.finalized_at ?? Math.floor(Date.now() / 1000)) * 1000);
  await db
    .update(invoices)
    .set({
      // Only from draft: a webhook may have moved it on (paid, void, uncollectible) meanwhile, and
      // its event is not delivered again.
      status: sql`case when ${invoices.status} = 'draft' then ${settledStatus(finalized.status)} else ${invoices.status} end`,
      number: finalized.number ?? null,
      hostedInvoiceUrl: finalized.hosted_invoice_url ?? null,
      finalizedAt: sql`coalesce(${invoices.finalizedAt}, ${finalizedAt.toISOString()}::timestamptz)`,
      lastError: null,
      updatedAt: new Date(),
    })
    .where(eq(invoices.id, invoice.id));
}

/** Our status for an invoice Stripe has finalized (or an earlier run's, found paid, void or uncollectible). */
function settledStatus(status: string | null): "open" | "paid" | "void" | "uncollectible" {
  if (status === "paid" || status === "void" || status === "uncollectible") return status;
  return "open";
}
