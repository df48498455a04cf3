/**
 * The hourly reconcile with Stripe in workerd, at month-end scale: more invoices due than one page
 * holds, all read in one run; and what bounds a run (its pages, its time), with the next runs taking
 * up the rest, least recently checked first. Each account's invoices are in the stand-in
 * (tools/stripe-sim) through the real SDK.
 */
import { env } from "cloudflare:test";
import type Stripe from "stripe";
import { describe, expect, it } from "vitest";
import { monthBounds, monthOf } from "../../core/pricing/month";
import { StripeSimulator } from "../../tools/stripe-sim/simulator";
import { signUp, sql } from "../api/test-support";
import { type Db, withDb } from "../db/client";
import { createLogger } from "../http/log";
import { stripeOf } from "./invoices";
import { RECONCILE_BUDGET_MS, RECONCILE_PAGE_SIZE, type ReconcileOptions, reconcileWithStripe } from "./reconcile";
import { stripeOver } from "./test-webhooks";

const log = createLogger("error");
const DAY = 86_400_000;
const HOUR = 3_600_000;

type Settled = "open" | "paid" | "void" | "uncollectible";

/**
 * A new account with `count` invoices, one a month going back, finalized 100 days ago (past any
 * grace) and `open` in Postgres; in Stripe each is then settled as `settle(i)` says, its event lost.
 */
async function overdueInvoices(stripe: Stripe, count: number, settle: (i: number) => Settled = () => "open") {
  const user = await signUp();
  const customer = await stripe.customers.create({ email: user.email });
  const now = new Date();
  const rows: { stripe_id: string; start: string; end: string; settled: Settled }[] = [];
  for (let i = 0; i < count; i++) {
    const draft = await stripe.invoices.create({
      customer: customer.id,
      pending_invoice_items_behavior: "exclude",
    });
    await stripe.invoiceItems.create({ customer: customer.id, invoice: draft.id, amount: 4200, currency: "usd" });
    const invoice = await stripe.invoices.finalizeInvoice(draft.id);
    const settled = settle(i);
    if (settled === "paid") await stripe.invoices.pay(invoice.id, { paid_out_of_band: true });
    if (settled === "void") await stripe.invoices.voidInvoice(invoice.id);
    if (settled === "uncollectible") await stripe.invoices.markUncollectible(invoice.id);
    const month = monthBounds(monthOf(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 1 - i, 1)))!;
    rows.push({
      stripe_id: invoice.id,
      start: new Date(month.startMs).toISOString(),
      end: new Date(month.endMs).toISOString(),
      settled,
    });
  }
  await sql(
    `insert into invoices (account_id, period_start, period_end, status, subtotal_cents, total_cents,
                           stripe_invoice_id, finalized_at)
     select $1, (r->>'start')::timestamptz, (r->>'end')::timestamptz, 'open', 4200, 4200, r->>'stripe_id', $3
       from jsonb_array_elements($2::jsonb) r`,
    [user.accountId, JSON.stringify(rows), new Date(Date.now() - 100 * DAY).toISOString()],
  );
  return { accountId: user.accountId, rows };
}

/** The Stripe ids of the invoices read (retrieved) since the simulator's log was last cleared. */
const retrieved = (sim: StripeSimulator) =>
  sim.requests
    .filter((r) => r.method === "GET" && /^\/v1\/invoices\/in_\w+$/.test(r.path))
    .map((r) => r.path.slice(13));

const reconcile = (stripe: Stripe, now: number, options: ReconcileOptions) =>
  withDb(env, (db) => reconcileWithStripe(db, stripe, { now, graceMs: 14 * DAY }, log, options));

/** The account's invoices by Stripe id, in the order a run takes them while none has been checked: by id. */
const inIdOrder = async (accountId: string) =>
  (
    await sql<{ stripe_invoice_id: string }>(
      "select stripe_invoice_id from invoices where account_id = $1 order by id",
      [accountId],
    )
  ).map((r) => r.stripe_invoice_id);

const statuses = async (accountId: string) =>
  new Map(
    (
      await sql<{ stripe_invoice_id: string; status: string }>(
        "select stripe_invoice_id, status from invoices where account_id = $1",
        [accountId],
      )
    ).map((r) => [r.stripe_invoice_id, r.status]),
  );

describe("reconcile with Stripe", () => {
  it("reads every due invoice in one run when there are more than a page, each once, and applies what changed", async () => {
    const sim = new StripeSimulator({ autoCollect: false });
    const stripe = stripeOver(sim);
    const ORDER: Settled[] = ["paid", "open", "uncollectible", "void"];
    const count = 2 * RECONCILE_PAGE_SIZE + 50;
    const { accountId, rows } = await overdueInvoices(stripe, count, (i) => ORDER[i % 4]!);
    sim.clearRequests();

    // Applied invoices leave the set as the run goes (paid, void): the pages after them still hold
    // every one not read yet.
    const changed = rows.filter((r) => r.settled !== "open").length;
    expect(await reconcile(stripe, Date.now(), { accountId })).toEqual({
      due: count,
      checked: count,
      applied: changed,
      failed: 0,
      stopped: null,
    });
    expect(retrieved(sim).sort()).toEqual(rows.map((r) => r.stripe_id).sort());
    const now = await statuses(accountId);
    for (const row of rows) expect(now.get(row.stripe_id), row.stripe_id).toBe(row.settled);

    // Only the still unpaid are due next hour, and nothing is applied twice.
    const unpaid = rows.filter((r) => r.settled === "open" || r.settled === "uncollectible").length;
    expect(await reconcile(stripe, Date.now() + HOUR, { accountId })).toEqual({
      due: unpaid,
      checked: unpaid,
      applied: 0,
      failed: 0,
      stopped: null,
    });
  });

  it("consecutive runs read every due invoice once before any is read twice", async () => {
    const sim = new StripeSimulator({ autoCollect: false });
    const stripe = stripeOver(sim);
    const { accountId, rows } = await overdueInvoices(stripe, 10);
    // 2 pages of 2 a run: 4 of the 10 each hour, so five hours read them twice over.
    const options = { accountId, pageSize: 2, maxPages: 2 };
    const hour = Math.floor(Date.now() / HOUR) * HOUR;
    const reads: string[] = [];
    for (let run = 0; run < 5; run++) {
      sim.clearRequests();
      expect(await reconcile(stripe, hour + run * HOUR + 17 * 60_000, options)).toEqual({
        due: 10,
        checked: 4,
        applied: 0,
        failed: 0,
        stopped: "pages",
      });
      reads.push(...retrieved(sim));
    }
    // The first ten reads are the ten due, each once; the next ten go round them in the same order.
    expect([...reads.slice(0, 10)].sort()).toEqual(rows.map((r) => r.stripe_id).sort());
    expect(reads.slice(10)).toEqual(reads.slice(0, 10));
  });

  it("a run that has spent its time reads no more, and the next run starts with the invoices it did not reach", async () => {
    let wall = 0;
    const sim = new StripeSimulator({ autoCollect: false });
    // Each read from Stripe takes a minute of wall time (a Stripe that answers slowly).
    const slowly = (i: RequestInfo | URL, init?: RequestInit) => {
      const request = new Request(i, init);
      if (request.method === "GET") wall += 60_000;
      return sim.fetch(request);
    };
    const stripe = stripeOf({ STRIPE_SECRET_KEY: "sk_test_scalar_reconcile" }, slowly as typeof fetch)!;
    const minutes = RECONCILE_BUDGET_MS / 60_000;
    const { accountId, rows } = await overdueInvoices(stripe, minutes + 2);
    const run = async () => {
      sim.clearRequests();
      expect(await reconcile(stripe, Date.now(), { accountId, wallNow: () => wall })).toEqual({
        due: minutes + 2,
        checked: minutes,
        applied: 0,
        failed: 0,
        stopped: "time",
      });
      return retrieved(sim);
    };
    const first = await run();
    const second = await run();
    // Far fewer than a run's pages were read, and still the next run goes on from there: the two
    // the first did not reach, then the first's in the order it read them.
    const unreached = rows.map((r) => r.stripe_id).filter((id) => !first.includes(id));
    expect(unreached).toHaveLength(2);
    expect(second.slice(0, 2).sort()).toEqual(unreached.sort());
    expect(second.slice(2)).toEqual(first.slice(0, minutes - 2));
  });

  it("an invoice whose read from Stripe fails goes behind the others", async () => {
    const sim = new StripeSimulator({ autoCollect: false });
    const stripe = stripeOver(sim);
    const { accountId } = await overdueInvoices(stripe, 4);
    const [failing, ...others] = await inIdOrder(accountId);
    // Stripe answers every read of the first a run would take with an error.
    sim.failNext(3, { method: "GET", path: `/v1/invoices/${failing}`, status: 404 });
    const options = { accountId, pageSize: 2, maxPages: 1 };
    const run = async (failed: number) => {
      sim.clearRequests();
      expect(await reconcile(stripe, Date.now(), options)).toEqual({
        due: 4,
        checked: 2,
        applied: 0,
        failed,
        stopped: "pages",
      });
      return retrieved(sim);
    };
    expect(await run(1)).toEqual([failing, others[0]]);
    // Not first again: the two not read yet come before it.
    expect(await run(0)).toEqual([others[1], others[2]]);
    expect(await run(1)).toEqual([failing, others[0]]);
  });

  it("a run that cannot stamp invoices checked reads none of them from Stripe, and ends after its pages", async () => {
    const sim = new StripeSimulator({ autoCollect: false });
    const stripe = stripeOver(sim);
    const { accountId } = await overdueInvoices(stripe, 3);
    sim.clearRequests();
    // Every stamp fails (a statement timeout, say): each page gives back the same two invoices.
    const refusing = (db: Db) =>
      Object.create(db, {
        update: {
          value: () => {
            throw new Error("canceling statement due to statement timeout");
          },
        },
      }) as Db;
    const result = await withDb(env, (db) =>
      reconcileWithStripe(refusing(db), stripe, { now: Date.now(), graceMs: 14 * DAY }, log, {
        accountId,
        pageSize: 2,
        maxPages: 3,
      }),
    );
    expect(result).toEqual({ due: 3, checked: 0, applied: 0, failed: 6, stopped: "pages" });
    expect(retrieved(sim)).toEqual([]);
  });
});
