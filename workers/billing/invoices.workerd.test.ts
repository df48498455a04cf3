/**
 * Monthly invoices in workerd: the real Postgres, the real `stripe` SDK, and the Stripe stand-in
 * (tools/stripe-sim) in the same isolate, reached through the SDK's fetch client.
 */
import { env } from "cloudflare:test";
import { eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { monthBounds, monthOf } from "../../core/pricing/month";
import { StripeSimulator } from "../../tools/stripe-sim/simulator";
import { call, signUp, sql } from "../api/test-support";
import { withDb } from "../db/client";
import { invoices } from "../db/schema";
import { createLogger } from "../http/log";
import { billableMonth, runBilling, SETTLE_MS, stripeOf } from "./invoices";
import { nothingUndelivered } from "./test-webhooks";

const log = createLogger("error");
const thisMonth = monthBounds(monthOf(Date.now()))!;
/** An hour and a minute after this month ends: this month is the one due. */
const AFTER = thisMonth.endMs + SETTLE_MS + 60_000;

async function usage(accountId: string, tier: string, model: string, gpuSeconds: number, fromH: number, toH: number) {
  await sql(
    `insert into usage_events (account_id, job_run_id, tier, gpu_model, gpu_count, gpu_seconds, period_start, period_end)
     values ($1, $2, $3, $4, 1, $5, $6, $7)`,
    [
      accountId,
      `run-${crypto.randomUUID()}`,
      tier,
      model,
      gpuSeconds,
      new Date(thisMonth.startMs + fromH * 3_600_000).toISOString(),
      new Date(thisMonth.startMs + toH * 3_600_000).toISOString(),
    ],
  );
}

function stack() {
  const clock = { now: AFTER };
  const sim = new StripeSimulator({ now: () => clock.now });
  const stripe = stripeOf({ STRIPE_SECRET_KEY: "sk_test_scalar_billing" }, ((
    input: RequestInfo | URL,
    init?: RequestInit,
  ) => sim.fetch(new Request(input, init))) as typeof fetch)!;
  const run = () =>
    withDb(env, (db) => runBilling({ db, stripe, now: clock.now, log, undeliveredUsage: nothingUndelivered }));
  return { sim, run, clock };
}

/** Stripe down after a draft's first item (more failures than the SDK's retries); the answer brings it back. */
function downAfterFirstItem(sim: StripeSimulator): () => void {
  let items = 0;
  const original = sim.fetch;
  sim.fetch = async (request) => {
    if (request.method === "POST" && new URL(request.url).pathname === "/v1/invoiceitems" && ++items > 1) {
      return Response.json({ error: { type: "api_error", message: "down" } }, { status: 500 });
    }
    return original(request);
  };
  return () => {
    sim.fetch = original;
  };
}

const invoiceOf = (accountId: string) =>
  withDb(env, (db) => db.select().from(invoices).where(eq(invoices.accountId, accountId)));

describe("monthly invoices", () => {
  it("bill a closed month once an hour has passed, never before", () => {
    // In a month's first hour no month is due (the last one's usage events may still be on their way).
    expect(billableMonth(thisMonth.endMs + SETTLE_MS - 1)).toBeNull();
    expect(billableMonth(thisMonth.endMs + SETTLE_MS)).toBe(monthOf(thisMonth.startMs));
    expect(billableMonth(thisMonth.endMs + 20 * 86_400_000)).toBe(monthOf(thisMonth.startMs));
  });

  it("rate the month, hand it to Stripe once (customer, draft, items, finalized), and show it in the API", async () => {
    const user = await signUp();
    await usage(user.accountId, "flex", "H100", 10_800, 1, 4); // 3 GPU-hours of Flex H100: 537 ¢
    await usage(user.accountId, "fast", "H100", 600, 5, 5); // 10 GPU-minutes of Fast H100: 50 ¢
    const { sim, run } = stack();

    const first = await run();
    expect(first.month).toBe(monthOf(thisMonth.startMs));
    expect(first.failed).toBe(0);
    const [row] = await invoiceOf(user.accountId);
    expect(row).toMatchObject({ status: "open", totalCents: 587, subtotalCents: 587, lastError: null });
    expect(row!.lines).toEqual([
      { tier: "fast", gpu_model: "H100", gpu_seconds: 600, cents_per_gpu_hour: 299, amount_cents: 50 },
      { tier: "flex", gpu_model: "H100", gpu_seconds: 10_800, cents_per_gpu_hour: 179, amount_cents: 537 },
    ]);
    const [account] = await sql<{ stripe_customer_id: string }>(
      "select stripe_customer_id from accounts where id = $1",
      [user.accountId],
    );
    const customer = sim.customer(account!.stripe_customer_id)!;
    expect(customer.metadata).toEqual({ account_id: user.accountId });
    const inStripe = sim.invoice(row!.stripeInvoiceId!)!;
    expect(inStripe).toMatchObject({ status: "open", total: 587, customer: customer.id, number: row!.number });
    expect(inStripe.lines.data.map((l) => l.amount)).toEqual([50, 537]);
    expect(inStripe.lines.data[1]!.description).toMatch(/^Flex H100 GPU time, \d{4}-\d{2}: 3\.0000 GPU-hours/);

    // Again: nothing new, in Postgres or in Stripe.
    const objects = () => ({
      customers: sim.customers().filter((c) => c.metadata?.account_id === user.accountId).length,
      invoices: sim.invoices().filter((i) => i.customer === customer.id).length,
      items: sim.invoiceItems().filter((i) => i.customer === customer.id).length,
    });
    const before = objects();
    await run();
    expect(objects()).toEqual(before);
    expect(await invoiceOf(user.accountId)).toHaveLength(1);

    const listed = await call("GET", "/v1/invoices", user.token);
    expect(listed.status).toBe(200);
    expect(listed.json.data).toEqual([
      expect.objectContaining({
        id: row!.id,
        month: monthOf(thisMonth.startMs),
        status: "open",
        total_cents: 587,
        number: row!.number,
        hosted_invoice_url: expect.any(String),
      }),
    ]);
    expect((await call("GET", `/v1/invoices/${row!.id}`, user.token)).json.lines).toHaveLength(2);
    expect((await call("GET", `/v1/invoices/${row!.id}`, (await signUp()).token)).status).toBe(404);
  });

  it("a run that fails half-way is finished by the next one, and bills nothing twice", async () => {
    const user = await signUp();
    await usage(user.accountId, "fast", "H200", 7_200, 2, 4); // 2 GPU-hours of Fast H200: 798 ¢
    await usage(user.accountId, "flex", "H200", 3_600, 2, 3); // 1 GPU-hour of Flex H200: 239 ¢
    const { sim, run, clock } = stack();
    const stripeBack = downAfterFirstItem(sim);
    const failed = await run();
    expect(failed.failed).toBeGreaterThanOrEqual(1);
    const [draft] = await invoiceOf(user.accountId);
    expect(draft).toMatchObject({ status: "draft", lastError: expect.stringMatching(/.+/) });
    expect(draft!.stripeInvoiceId).toEqual(expect.any(String));
    stripeBack();
    // The next run comes two hours later: the half-built draft must still be a draft (not finalized
    // by Stripe on its own), and the item that went through is not added again.
    clock.now += 2 * 3_600_000;
    // One lost answer on the way (Stripe acted; the SDK retries with the same key).
    sim.dropNext(1, { method: "POST", path: "/v1/invoiceitems" });
    await run();
    const [done] = await invoiceOf(user.accountId);
    expect(done).toMatchObject({
      status: "open",
      totalCents: 1037,
      lastError: null,
      stripeInvoiceId: draft!.stripeInvoiceId,
    });
    const mine = sim.invoices().filter((i) => i.metadata?.invoice_id === done!.id);
    expect(mine).toHaveLength(1);
    expect(mine[0]!.lines.data.map((l) => l.amount).sort((a, b) => a - b)).toEqual([239, 798]);
    expect(sim.invoiceItems().filter((i) => i.metadata?.invoice_id === done!.id)).toHaveLength(2);
  });

  it("finishes a half-built invoice a day later on the same Stripe draft, after Stripe forgot the keys", async () => {
    const user = await signUp();
    await usage(user.accountId, "fast", "H100", 3_600, 2, 3); // 299 ¢
    await usage(user.accountId, "flex", "H100", 3_600, 2, 3); // 179 ¢
    const { sim, run, clock } = stack();
    const stripeBack = downAfterFirstItem(sim);
    await run();
    const [draft] = await invoiceOf(user.accountId);
    expect(draft).toMatchObject({ status: "draft", stripeInvoiceId: expect.any(String) });
    stripeBack();
    // Stripe keeps idempotency keys 24 h: the next run, 25 h on, must not lean on them.
    clock.now += 25 * 3_600_000;
    await run();
    const [done] = await invoiceOf(user.accountId);
    expect(done).toMatchObject({
      status: "open",
      totalCents: 478,
      lastError: null,
      stripeInvoiceId: draft!.stripeInvoiceId,
    });
    expect(sim.invoices().filter((i) => i.metadata?.invoice_id === done!.id)).toHaveLength(1);
    expect(sim.invoiceItems().filter((i) => i.metadata?.invoice_id === done!.id)).toHaveLength(2);
  });

  it("does not move an invoice a webhook moved on while it was being sent back to open", async () => {
    const user = await signUp();
    await usage(user.accountId, "flex", "H100", 3_600, 1, 2); // 179 ¢
    const { sim, run } = stack();
    // The invoice is paid (its webhook applied) while the run waits for Stripe's finalize answer.
    const original = sim.fetch;
    sim.fetch = async (request) => {
      const answer = await original(request);
      if (request.method === "POST" && new URL(request.url).pathname.endsWith("/finalize")) {
        await sql("update invoices set status = 'paid' where account_id = $1", [user.accountId]);
      }
      return answer;
    };
    await run();
    const [row] = await invoiceOf(user.accountId);
    expect(row).toMatchObject({ status: "paid", totalCents: 179, lastError: null });
    // Stripe's own fields are still filled in.
    expect(row!.number).toEqual(expect.any(String));
    expect(row!.finalizedAt).toBeInstanceOf(Date);
  });

  it("finalizes no draft whose total at Stripe differs from ours (an item not ours on it)", async () => {
    const { sim, run } = stack();
    const user = await signUp();
    await usage(user.accountId, "flex", "H100", 3_600, 1, 2);
    // Something else adds an item to the draft just after our first one.
    let added = false;
    const original = sim.fetch;
    sim.fetch = async (request) => {
      const answer = await original(request.clone());
      if (!added && request.method === "POST" && new URL(request.url).pathname === "/v1/invoiceitems") {
        added = true;
        const body = new URLSearchParams(await request.text());
        body.set("amount", "500");
        body.set("metadata[line]", "not ours");
        const headers = {
          authorization: request.headers.get("authorization")!,
          "content-type": request.headers.get("content-type")!,
        };
        expect((await original(new Request(request.url, { method: "POST", headers, body }))).status).toBe(200);
      }
      return answer;
    };
    expect(await run()).toMatchObject({ failed: 1 });
    const [row] = await invoiceOf(user.accountId);
    expect(row).toMatchObject({ status: "draft", totalCents: 179 });
    expect(row!.lastError).toMatch(/totals 679 ¢, ours 179 ¢: not finalized/);
    expect(sim.invoice(row!.stripeInvoiceId!)!.status).toBe("draft");
  });

  it("without a Stripe key, rates the month and keeps the invoice as a draft", async () => {
    const user = await signUp();
    await usage(user.accountId, "flex", "H100", 3_600, 1, 2);
    const result = await withDb(env, (db) =>
      runBilling({ db, stripe: stripeOf({}), now: AFTER, log, undeliveredUsage: nothingUndelivered }),
    );
    expect(result.sent).toBe(0);
    const [row] = await invoiceOf(user.accountId);
    expect(row).toMatchObject({ status: "draft", totalCents: 179, stripeInvoiceId: null });
  });
});

describe("monthly invoices and usage not yet in Postgres", () => {
  const draftRun = (now: number, undeliveredUsage: (startMs: number, endMs: number) => Promise<Set<string> | null>) =>
    withDb(env, (db) => runBilling({ db, stripe: stripeOf({}), now, log, undeliveredUsage }));

  it("waits for an account whose usage a region still holds, and for every account while a region is silent", async () => {
    const held = await signUp();
    const other = await signUp();
    await usage(held.accountId, "flex", "H100", 3_600, 1, 2);
    await usage(other.accountId, "flex", "H100", 3_600, 1, 2);
    const asked: [number, number][] = [];
    // A region still holds usage of `held` in the month.
    await draftRun(AFTER, async (startMs, endMs) => {
      asked.push([startMs, endMs]);
      return new Set([held.accountId]);
    });
    expect(asked).toContainEqual([thisMonth.startMs, thisMonth.endMs]);
    expect(await invoiceOf(held.accountId)).toEqual([]);
    expect(await invoiceOf(other.accountId)).toHaveLength(1);

    // A region does not answer: nobody's invoice is made (what it holds is unknown).
    await draftRun(AFTER + 3_600_000, async () => null);
    expect(await invoiceOf(held.accountId)).toEqual([]);

    // Its usage has arrived (a second hour of it): the invoice bills all of it.
    await usage(held.accountId, "flex", "H100", 3_600, 3, 4);
    await draftRun(AFTER + 7_200_000, nothingUndelivered);
    const [row] = await invoiceOf(held.accountId);
    expect(row).toMatchObject({ status: "draft", totalCents: 2 * 179 });
  });

  it("bills a month whose usage reached Postgres only after the next month had ended", async () => {
    const user = await signUp();
    const nextMonth = monthBounds(monthOf(thisMonth.endMs))!;
    // Held somewhere through this month's billing and all of the next month.
    await draftRun(AFTER, async () => new Set([user.accountId]));
    await usage(user.accountId, "flex", "H100", 3_600, 1, 2);
    const later = nextMonth.endMs + SETTLE_MS + 60_000;
    await draftRun(later, nothingUndelivered);
    const rows = await invoiceOf(user.accountId);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ periodStart: new Date(thisMonth.startMs), totalCents: 179 });
  });

  it("bills a month whose usage a parked record held for three months", async () => {
    const user = await signUp();
    await draftRun(AFTER, async () => new Set([user.accountId]));
    await usage(user.accountId, "flex", "H100", 3_600, 1, 2);
    let end = thisMonth.endMs;
    for (let i = 0; i < 3; i++) end = monthBounds(monthOf(end))!.endMs;
    await draftRun(end + SETTLE_MS + 60_000, nothingUndelivered);
    const rows = await invoiceOf(user.accountId);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ periodStart: new Date(thisMonth.startMs), totalCents: 179 });
  });
});
