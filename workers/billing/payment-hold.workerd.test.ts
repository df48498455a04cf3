/**
 * Dunning in workerd: an unpaid invoice puts its account on payment hold (by Stripe's webhook, or by
 * the hourly sweep once an open invoice is past its grace), the API then refuses new jobs and
 * endpoints with 402 payment_required, and the payment lifts the hold at once.
 */
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { monthBounds, monthOf } from "../../core/pricing/month";
import { call, createKey, JOB, signUp, sql } from "../api/test-support";
import { withDb } from "../db/client";
import type { PaymentHold } from "../db/schema";
import { createLogger } from "../http/log";
import { dunningGraceMs, ensurePaymentHold } from "./payment-hold";
import { paymentHoldsTask, reconcileWithStripe } from "./reconcile";
import { billedInvoice, deliver, event } from "./test-webhooks";

const log = createLogger("error");
const DAY = 86_400_000;

const holdOf = async (accountId: string) =>
  (await sql<{ payment_hold: PaymentHold | null }>("select payment_hold from accounts where id = $1", [accountId]))[0]!
    .payment_hold;

const holdAudit = (accountId: string) =>
  sql<{ action: string; actor_id: string; invoice_id: string }>(
    `select action, actor_id, data->>'invoice_id' as invoice_id from audit_log
      where account_id = $1 and action like 'account.payment_hold_%' order by id`,
    [accountId],
  );

/** An invoice of the account for the month `monthsAgo` before this one, finalized at `finalizedAt`. */
async function unpaidInvoice(accountId: string, status: "open" | "uncollectible", finalizedAt: number, monthsAgo = 3) {
  const now = new Date();
  const month = monthBounds(monthOf(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - monthsAgo, 1)))!;
  const [row] = await sql<{ id: string }>(
    `insert into invoices (account_id, period_start, period_end, status, subtotal_cents, total_cents, stripe_invoice_id,
                           number, hosted_invoice_url, finalized_at)
     values ($1, $2, $3, $4, 4200, 4200, $5, 'SCL-TEST-1', 'https://invoice.stripe.test/i/1', $6) returning id`,
    [
      accountId,
      new Date(month.startMs).toISOString(),
      new Date(month.endMs).toISOString(),
      status,
      `in_test_${crypto.randomUUID()}`,
      new Date(finalizedAt).toISOString(),
    ],
  );
  return { id: row!.id, month: month.month };
}

/** The account's hold brought in line with its invoices now, as a webhook would. */
const ensureNow = (accountId: string) =>
  withDb(env, (db) =>
    db.transaction((tx) => ensurePaymentHold(tx, accountId, { now: Date.now(), graceMs: 14 * DAY }, "test")),
  );

const submit = (token: string, headers: Record<string, string> = {}) =>
  call("POST", "/v1/jobs", token, { body: JOB, headers });

describe("payment holds", () => {
  it("an uncollectible invoice holds the account (402 naming it, shown in /v1/me) until it is paid", async () => {
    const { user, row, stripeInvoice } = await billedInvoice();
    // Open and within its grace: new work is taken.
    const before = await submit(user.token);
    expect(before.status).toBe(202);

    expect((await deliver(event("invoice.marked_uncollectible", stripeInvoice))).json.outcome).toBe("applied");
    const details = {
      invoice_id: row.id,
      month: monthOf(row.periodStart.getTime()),
      amount_due_cents: row.totalCents,
      currency: "usd",
      hosted_invoice_url: row.hostedInvoiceUrl,
    };
    expect(row.hostedInvoiceUrl).toEqual(expect.any(String));
    // Both ways a submission is written: in one statement (no spend cap), and with the cap's check.
    for (const cap of [null, 1_000_000_000]) {
      await sql("update accounts set monthly_spend_cap_cents = $2 where id = $1", [user.accountId, cap]);
      const refused = await submit(user.token);
      expect(refused.status, `cap ${cap}`).toBe(402);
      expect(refused.json.error).toMatchObject({ code: "payment_required", details });
      expect(refused.json.error.message).toContain(`invoice ${row.number}`);
      expect(refused.json.error.message).toContain(row.hostedInvoiceUrl!);
    }
    // A key without billing:read learns which invoice holds the account, not its amount or its page.
    const jobsOnly = await createKey(user.token, ["jobs:write"]);
    const hidden = { ...details, amount_due_cents: null, currency: null, hosted_invoice_url: null };
    const refusedKey = await submit(jobsOnly.secret);
    expect(refusedKey.status).toBe(402);
    expect(refusedKey.json.error).toMatchObject({ code: "payment_required", details: hidden });
    expect(refusedKey.json.error.message).toBe(
      `invoice ${row.number} (${details.month}) is unpaid: the account starts no new jobs or endpoints until it is paid; an owner or admin of the account can see and pay it`,
    );
    const keyMe = await call("GET", "/v1/me", jobsOnly.secret);
    expect(keyMe.json.account.billing.payment_hold).toEqual({ ...hidden, since: expect.any(String) });
    const [jobs] = await sql<{ n: number }>("select count(*)::int as n from jobs where account_id = $1", [
      user.accountId,
    ]);
    expect(jobs!.n).toBe(1);

    const me = await call("GET", "/v1/me", user.token);
    expect(me.json.account.billing.payment_hold).toEqual({ ...details, since: expect.any(String) });
    expect(me.json.account.quotas.max_concurrent_gpus).toBe(16);
    // What is already there keeps working: reads, invoices, cancelling.
    expect((await call("GET", "/v1/jobs", user.token)).json.data).toHaveLength(1);
    expect((await call("GET", "/v1/invoices", user.token)).status).toBe(200);
    expect((await call("POST", `/v1/jobs/${before.json.id}/cancel`, user.token)).status).toBe(200);

    // A late failure changes nothing; the payment lifts the hold at once.
    await deliver(event("invoice.payment_failed", stripeInvoice, { attempt_count: 2 }));
    expect(await holdOf(user.accountId)).toMatchObject({ invoice_id: row.id });
    expect((await deliver(event("invoice.paid", stripeInvoice))).json.outcome).toBe("applied");
    expect(await holdOf(user.accountId)).toBeNull();
    expect((await submit(user.token)).status).toBe(202);
    expect((await call("GET", "/v1/me", user.token)).json.account.billing).toEqual({ payment_hold: null });
    expect(await holdAudit(user.accountId)).toEqual([
      { action: "account.payment_hold_set", actor_id: expect.stringMatching(/^stripe:evt_/), invoice_id: row.id },
      { action: "account.payment_hold_cleared", actor_id: expect.stringMatching(/^stripe:evt_/), invoice_id: row.id },
    ]);
    // A void after the payment (out of order) holds nothing again.
    await deliver(event("invoice.voided", stripeInvoice));
    expect(await holdOf(user.accountId)).toBeNull();
  });

  it("the hourly sweep holds an account once an open invoice is past its grace, not before, and lifts it", async () => {
    const user = await signUp();
    // Finalized long ago and swept with a clock as old: the sweep looks at every account, and no other
    // test's open invoice (finalized now, or at next month's billing) is past grace at that clock.
    const finalized = Date.now() - 100 * DAY;
    const invoice = await unpaidInvoice(user.accountId, "open", finalized);
    const sweep = (at: number, days = "14") =>
      paymentHoldsTask.run({ ...env, DUNNING_GRACE_DAYS: days }, log, { scheduledTime: at });

    await sweep(finalized + 14 * DAY - 60_000);
    expect(await holdOf(user.accountId)).toBeNull();
    await sweep(finalized + 14 * DAY + 60_000, "30");
    expect(await holdOf(user.accountId)).toBeNull();
    await sweep(finalized + 14 * DAY + 60_000);
    expect(await holdOf(user.accountId)).toEqual({
      invoice_id: invoice.id,
      number: "SCL-TEST-1",
      month: invoice.month,
      amount_due_cents: 4200,
      currency: "usd",
      hosted_invoice_url: "https://invoice.stripe.test/i/1",
      since: new Date(finalized + 14 * DAY + 60_000).toISOString(),
    });
    expect((await submit(user.token)).json.error.code).toBe("payment_required");
    // Again: nothing changes, nothing more is audited.
    await sweep(finalized + 15 * DAY);
    expect(await holdAudit(user.accountId)).toEqual([
      { action: "account.payment_hold_set", actor_id: "billing.sweep", invoice_id: invoice.id },
    ]);

    // Paid without the hold lifted (a lost event): the next sweep lifts it.
    await sql("update invoices set status = 'paid' where id = $1", [invoice.id]);
    await sweep(finalized + 16 * DAY);
    expect(await holdOf(user.accountId)).toBeNull();
    expect((await holdAudit(user.accountId)).map((a) => a.action)).toEqual([
      "account.payment_hold_set",
      "account.payment_hold_cleared",
    ]);
    expect((await submit(user.token)).status).toBe(202);
  });

  it("applies what Stripe says of a held (or due) invoice whose event never came: written off, then paid", async () => {
    const { user, row, stripe } = await billedInvoice();
    // Past the invoice's grace: it is due to hold the account, so the hourly task asks Stripe.
    const clock = { now: row.finalizedAt!.getTime() + 15 * DAY, graceMs: 14 * DAY };
    const hourly = async () => {
      const reconciled = await withDb(env, (db) =>
        reconcileWithStripe(db, stripe, clock, log, { accountId: user.accountId }),
      );
      await withDb(env, (db) => db.transaction((tx) => ensurePaymentHold(tx, user.accountId, clock, "test")));
      return reconciled;
    };
    const statusOf = async () =>
      (await sql<{ status: string }>("select status from invoices where id = $1", [row.id]))[0]!.status;
    // Written off at Stripe, its event lost: read, applied, and the account held on it.
    await stripe.invoices.markUncollectible(row.stripeInvoiceId!);
    expect(await hourly()).toEqual({ due: 1, checked: 1, applied: 1, failed: 0, stopped: null });
    expect(await statusOf()).toBe("uncollectible");
    expect(await holdOf(user.accountId)).toMatchObject({ invoice_id: row.id });
    // Then paid on Stripe's page, its event lost too: the next run lifts the hold.
    await stripe.invoices.pay(row.stripeInvoiceId!, { paid_out_of_band: true });
    expect(await hourly()).toEqual({ due: 1, checked: 1, applied: 1, failed: 0, stopped: null });
    expect(await statusOf()).toBe("paid");
    expect(await holdOf(user.accountId)).toBeNull();
    expect((await submit(user.token)).status).toBe(202);
    // A paid invoice is not asked about again.
    expect(await hourly()).toEqual({ due: 0, checked: 0, applied: 0, failed: 0, stopped: null });
  });

  it("moves to the next unpaid invoice when the held one is paid", async () => {
    const user = await signUp();
    const older = await unpaidInvoice(user.accountId, "uncollectible", Date.now() - 60 * DAY, 3);
    const newer = await unpaidInvoice(user.accountId, "open", Date.now() - 30 * DAY, 2);
    expect(await ensureNow(user.accountId)).toBe("set");
    expect(await holdOf(user.accountId)).toMatchObject({ invoice_id: older.id });
    const since = (await holdOf(user.accountId))!.since;
    await sql("update invoices set status = 'paid' where id = $1", [older.id]);
    expect(await ensureNow(user.accountId)).toBe("moved");
    expect(await holdOf(user.accountId)).toMatchObject({ invoice_id: newer.id, since });
    await sql("update invoices set status = 'void' where id = $1", [newer.id]);
    expect(await ensureNow(user.accountId)).toBe("cleared");
    expect(await ensureNow(user.accountId)).toBe("unchanged");
  });

  it("a submission accepted before the hold is still answered by its Idempotency-Key", async () => {
    const user = await signUp();
    const headers = { "idempotency-key": `hold-${crypto.randomUUID()}` };
    const first = await submit(user.token, headers);
    expect(first.status).toBe(202);
    await unpaidInvoice(user.accountId, "uncollectible", Date.now() - DAY);
    expect(await ensureNow(user.accountId)).toBe("set");

    const replay = await submit(user.token, headers);
    expect(replay.status).toBe(202);
    expect(replay.headers.get("idempotency-replayed")).toBe("true");
    expect(replay.json).toEqual(first.json);
    const fresh = await submit(user.token, { "idempotency-key": `hold-${crypto.randomUUID()}` });
    expect(fresh.status).toBe(402);
    expect(fresh.json.error.code).toBe("payment_required");
  });

  it("endpoints: none created and none grown while held; lowering, changing and deleting still work", async () => {
    const user = await signUp();
    const spec = { image: "127.0.0.1:5000/test/busybox:1", command: ["httpd", "-f"], gpu_count: 1 };
    const name = () => `held-${crypto.randomUUID().slice(0, 8)}`;
    const created = await call("POST", "/v1/endpoints", user.token, {
      body: { ...spec, name: name(), min_replicas: 1, max_replicas: 3 },
    });
    expect(created.status).toBe(201);
    const id = created.json.id as string;
    const invoice = await unpaidInvoice(user.accountId, "uncollectible", Date.now() - DAY);
    expect(await ensureNow(user.accountId)).toBe("set");

    const refused = await call("POST", "/v1/endpoints", user.token, {
      body: { ...spec, name: name(), min_replicas: 1, max_replicas: 1 },
    });
    expect(refused.status).toBe(402);
    expect(refused.json.error).toMatchObject({ code: "payment_required", details: { invoice_id: invoice.id } });
    for (const body of [{ max_replicas: 4 }, { min_replicas: 2 }, { gpu_count: 2 }]) {
      const grown = await call("PATCH", `/v1/endpoints/${id}`, user.token, { body });
      expect(grown.status, JSON.stringify(body)).toBe(402);
      expect(grown.json.error.code).toBe("payment_required");
    }
    const lowered = await call("PATCH", `/v1/endpoints/${id}`, user.token, { body: { max_replicas: 2 } });
    expect(lowered.status).toBe(200);
    const changed = await call("PATCH", `/v1/endpoints/${id}`, user.token, { body: { image: "busybox:2" } });
    expect(changed.status).toBe(200);
    expect((await call("DELETE", `/v1/endpoints/${id}`, user.token)).status).toBe(200);
  });

  it("reads DUNNING_GRACE_DAYS as whole days, 0 to 365, else 14", () => {
    expect(dunningGraceMs(undefined)).toBe(14 * DAY);
    expect(dunningGraceMs("")).toBe(14 * DAY);
    expect(dunningGraceMs("0")).toBe(0);
    expect(dunningGraceMs("30")).toBe(30 * DAY);
    for (const bad of ["-1", "1.5", "366", "two"]) expect(dunningGraceMs(bad)).toBe(14 * DAY);
  });
});
