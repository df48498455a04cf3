/**
 * The Stripe simulator driven by the real SDK (stripe 23.1.0), both over HTTP
 * (`{ host, port, protocol: "http" }`) and in-process (`Stripe.createFetchHttpClient(sim.fetch)`,
 * as Worker code does inside workerd). If the SDK can drive it and raises the right error classes,
 * the paths, bodies, shapes and envelopes are Stripe's.
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { resolve } from "node:path";
import Stripe from "stripe";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type RunningStripeSimulator, startStripeSimulator } from "./server";
import { StripeSimulator, type StripeSimulatorOptions } from "./simulator";

const KEY = "sk_test_scalar";
const START = Date.parse("2026-03-01T00:00:00Z");

interface Harness {
  sim: StripeSimulator;
  /** A client for this transport (`maxNetworkRetries` 2, the SDK's default). */
  client(key?: string, config?: Stripe.StripeConfig): Stripe;
  close(): Promise<void>;
}

/** A Stripe client that calls `sim.fetch` directly (no sockets): what Worker code does in workerd. */
function inProcessClient(sim: StripeSimulator, key = KEY, config: Stripe.StripeConfig = {}): Stripe {
  return new Stripe(key, {
    httpClient: Stripe.createFetchHttpClient((url, init) => sim.fetch(new Request(url, init))),
    ...config,
  });
}

async function harness(transport: "http" | "in-process", options: StripeSimulatorOptions = {}): Promise<Harness> {
  if (transport === "in-process") {
    const sim = new StripeSimulator(options);
    return { sim, client: (key, config) => inProcessClient(sim, key, config), close: async () => {} };
  }
  const running: RunningStripeSimulator = await startStripeSimulator(options);
  return {
    sim: running.simulator,
    client: (key = KEY, config = {}) =>
      new Stripe(key, { host: "127.0.0.1", port: running.port, protocol: "http", ...config }),
    close: () => running.close(),
  };
}

/** stripe-node gives `lastResponse.headers` as a plain object (Node client) or a `Headers` (fetch client). */
function header(response: { lastResponse: { headers: unknown } }, name: string): string | null {
  const headers = response.lastResponse.headers;
  if (headers instanceof Headers) return headers.get(name);
  return (headers as Record<string, string | undefined>)[name] ?? null;
}

async function rejection(promise: Promise<unknown>): Promise<Stripe.errors.StripeError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof Stripe.errors.StripeError) return error;
    throw error;
  }
  throw new Error("expected the call to fail");
}

describe.each(["http", "in-process"] as const)("the real SDK against the simulator (%s)", (transport) => {
  let h: Harness;
  let stripe: Stripe;
  beforeAll(async () => {
    h = await harness(transport);
    stripe = h.client();
  });
  afterAll(async () => {
    await h?.close();
  });
  afterEach(() => {
    h.sim.clearFaults();
  });

  it("creates and retrieves a customer", async () => {
    const created = await stripe.customers.create({
      name: "Ada Lovelace",
      email: "ada@example.com",
      description: "GPU tenant",
      metadata: { account_id: "acc_1" },
    });
    expect(created).toMatchObject({
      object: "customer",
      name: "Ada Lovelace",
      email: "ada@example.com",
      description: "GPU tenant",
      metadata: { account_id: "acc_1" },
      livemode: false,
      balance: 0,
    });
    expect(created.id).toMatch(/^cus_/);
    expect(Math.abs(created.created - Date.now() / 1000)).toBeLessThan(60);
    expect(created.lastResponse.statusCode).toBe(200);
    expect(created.lastResponse.requestId).toMatch(/^req_/);
    const fetched = await stripe.customers.retrieve(created.id);
    expect(fetched).toMatchObject({ id: created.id, email: "ada@example.com", metadata: { account_id: "acc_1" } });

    const last = h.sim.requests.at(-2)!;
    expect(last).toMatchObject({
      method: "POST",
      path: "/v1/customers",
      apiKey: KEY,
      stripeVersion: "2026-10-28.endive",
    });
    expect(last.idempotencyKey).toMatch(/^stripe-node-retry-/);
    expect(last.params).toMatchObject({ metadata: { account_id: "acc_1" } });
  });

  it("updates a customer, merging and unsetting metadata", async () => {
    const c = await stripe.customers.create({ email: "a@example.com", metadata: { a: "1", b: "2" } });
    const updated = await stripe.customers.update(c.id, { email: "b@example.com", metadata: { a: "", c: "3" } });
    expect(updated.email).toBe("b@example.com");
    expect(updated.metadata).toEqual({ b: "2", c: "3" });
  });

  it("builds an invoice from pending items with include, and an empty one with exclude (the default)", async () => {
    const customer = await stripe.customers.create({ email: "bill@example.com" });
    const gpu = await stripe.invoiceItems.create({
      customer: customer.id,
      amount: 12_345,
      currency: "usd",
      description: "H100 GPU-seconds, March",
      metadata: { line_id: "L1" },
      period: { start: 1_772_323_200, end: 1_775_001_600 },
    });
    expect(gpu).toMatchObject({
      object: "invoiceitem",
      amount: 12_345,
      currency: "usd",
      customer: customer.id,
      invoice: null,
      quantity: 1,
      period: { start: 1_772_323_200, end: 1_775_001_600 },
      metadata: { line_id: "L1" },
    });
    expect(gpu.quantity_decimal.toString()).toBe("1");
    const storage = await stripe.invoiceItems.create({
      customer: customer.id,
      currency: "usd",
      quantity: 3,
      unit_amount_decimal: Stripe.Decimal.from("33.5"),
      description: "Storage",
    });
    expect(storage.amount).toBe(101); // 3 × 33.5 = 100.5 → 101
    expect(storage.pricing?.unit_amount_decimal?.toString()).toBe("33.5");

    const empty = await stripe.invoices.create({ customer: customer.id });
    expect(empty).toMatchObject({ status: "draft", subtotal: 0, total: 0, amount_due: 0, auto_advance: false });
    expect(empty.lines.data).toEqual([]);

    const invoice = await stripe.invoices.create({
      customer: customer.id,
      pending_invoice_items_behavior: "include",
      collection_method: "send_invoice",
      days_until_due: 30,
      description: "March usage",
      metadata: { invoice_run: "2026-03" },
    });
    expect(invoice).toMatchObject({
      object: "invoice",
      customer: customer.id,
      status: "draft",
      currency: "usd",
      subtotal: 12_446,
      total: 12_446,
      amount_due: 12_446,
      amount_paid: 0,
      number: null,
      collection_method: "send_invoice",
      due_date: invoice.created + 30 * 86_400,
      metadata: { invoice_run: "2026-03" },
    });
    expect(invoice.id).toMatch(/^in_/);
    expect(invoice.lines.object).toBe("list");
    expect(
      invoice.lines.data.map((l) => [l.amount, l.description, l.parent?.invoice_item_details?.invoice_item]),
    ).toEqual([
      [12_345, "H100 GPU-seconds, March", gpu.id],
      [101, "Storage", storage.id],
    ]);
    expect((await stripe.invoiceItems.retrieve(gpu.id)).invoice).toBe(invoice.id);

    // Nothing pending any more: a second include has no lines.
    const again = await stripe.invoices.create({ customer: customer.id, pending_invoice_items_behavior: "include" });
    expect(again.lines.data).toHaveLength(0);
  });

  it("finalizes a draft to open with a number and hosted URL; finalizing again fails", async () => {
    const customer = await stripe.customers.create({ email: "fin@example.com" });
    await stripe.invoiceItems.create({ customer: customer.id, amount: 5_000, currency: "usd" });
    const draft = await stripe.invoices.create({
      customer: customer.id,
      pending_invoice_items_behavior: "include",
      auto_advance: false,
    });
    const open = await stripe.invoices.finalizeInvoice(draft.id);
    expect(open).toMatchObject({
      id: draft.id,
      status: "open",
      amount_due: 5_000,
      amount_remaining: 5_000,
      ending_balance: 0,
    });
    expect(open.number).toMatch(/^[0-9A-F]{8}-0001$/);
    expect(open.status_transitions.finalized_at).toBeGreaterThan(0);
    expect(open.hosted_invoice_url).toMatch(/^https:\/\/invoice\.stripe\.com\/i\//);
    expect((await stripe.invoices.retrieve(draft.id)).status).toBe("open");

    const error = await rejection(stripe.invoices.finalizeInvoice(draft.id));
    expect(error).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(error).toMatchObject({ statusCode: 400, code: "invoice_not_editable" });
    expect(error.message).toMatch(/already finalized/);

    // A zero invoice is paid on finalization; the customer's numbering continues.
    const zero = await stripe.invoices.finalizeInvoice((await stripe.invoices.create({ customer: customer.id })).id);
    expect(zero.status).toBe("paid");
    expect(zero.number).toBe(open.number!.replace(/0001$/, "0002"));
  });

  it("rejects a missing param, an unknown param, a non-integer amount and an unknown customer", async () => {
    const customer = await stripe.customers.create({});
    const missing = await rejection(
      stripe.invoiceItems.create({ amount: 100, currency: "usd" } as Stripe.InvoiceItemCreateParams),
    );
    expect(missing).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(missing).toMatchObject({ statusCode: 400, code: "parameter_missing", param: "customer" });
    expect(missing.message).toBe("Missing required param: customer.");

    const unknown = await rejection(stripe.customers.create({ nickname: "x" } as Stripe.CustomerCreateParams));
    expect(unknown).toMatchObject({ statusCode: 400, code: "parameter_unknown", param: "nickname" });
    expect(unknown.message).toBe("Received unknown parameter: nickname");

    const nested = await rejection(
      stripe.invoiceItems.create({
        customer: customer.id,
        amount: 1,
        currency: "usd",
        period: { start: 1, end: 2, middle: 3 },
      } as Stripe.InvoiceItemCreateParams),
    );
    expect(nested).toMatchObject({ code: "parameter_unknown", param: "period[middle]" });

    const notInteger = await rejection(
      stripe.invoiceItems.create({ customer: customer.id, amount: 12.5, currency: "usd" }),
    );
    expect(notInteger).toMatchObject({ statusCode: 400, code: "parameter_invalid_integer", param: "amount" });
    expect(notInteger.message).toBe("Invalid integer: 12.5");

    const noCustomer = await rejection(
      stripe.invoiceItems.create({ customer: "cus_nope", amount: 1, currency: "usd" }),
    );
    expect(noCustomer).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(noCustomer).toMatchObject({ statusCode: 400, code: "resource_missing", param: "customer" });
    expect(noCustomer.message).toBe("No such customer: 'cus_nope'");

    const noObject = await rejection(stripe.customers.retrieve("cus_nope"));
    expect(noObject).toMatchObject({ statusCode: 404, code: "resource_missing", param: "id" });
    const noInvoice = await rejection(stripe.invoices.finalizeInvoice("in_nope"));
    expect(noInvoice).toMatchObject({ statusCode: 404, code: "resource_missing", param: "id" });

    const sendWithoutDays = await rejection(
      stripe.invoices.create({ customer: customer.id, collection_method: "send_invoice" }),
    );
    expect(sendWithoutDays).toMatchObject({ code: "parameter_missing", param: "days_until_due" });

    const notModelled = await rejection(
      stripe.invoiceItems.create({ customer: customer.id, amount: 1, currency: "usd", tax_rates: ["txr_1"] }),
    );
    expect(notModelled).toMatchObject({ statusCode: 400, code: "stripe_sim_unsupported", param: "tax_rates" });
  });

  it("answers an unknown path with Stripe's 404 envelope", async () => {
    const raw = await stripe.rawRequest("GET", "/v1/nothing_here").catch((e: unknown) => e);
    expect(raw).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(raw).toMatchObject({ statusCode: 404 });
    expect((raw as Error).message).toMatch(/^Unrecognized request URL \(GET: \/v1\/nothing_here\)/);
  });

  it("rejects a bad key with StripeAuthenticationError", async () => {
    const bad = h.client("sk_live_realkey1234");
    const error = await rejection(bad.customers.create({ email: "x@example.com" }));
    expect(error).toBeInstanceOf(Stripe.errors.StripeAuthenticationError);
    expect(error.statusCode).toBe(401);
    expect(error.rawType ?? (error.raw as { type?: string }).type).toBe("invalid_request_error");
    expect(error.message).toBe("Invalid API Key provided: sk_live_*******1234");
    expect(h.sim.customers().some((c) => c.email === "x@example.com")).toBe(false);
  });

  it("replays an idempotency key (no second customer) and refuses it with other params", async () => {
    const before = h.sim.customers().length;
    const key = `signup-${crypto.randomUUID()}`;
    const first = await stripe.customers.create({ email: "idem@example.com" }, { idempotencyKey: key });
    const second = await stripe.customers.create({ email: "idem@example.com" }, { idempotencyKey: key });
    expect(second.id).toBe(first.id);
    expect(header(second, "idempotent-replayed")).toBe("true");
    expect(header(second, "original-request")).toBe(first.lastResponse.requestId);
    expect(h.sim.customers().length).toBe(before + 1);

    const reused = await rejection(stripe.customers.create({ email: "other@example.com" }, { idempotencyKey: key }));
    expect(reused).toBeInstanceOf(Stripe.errors.StripeIdempotencyError);
    expect(reused.statusCode).toBe(400);
    expect(reused.message).toMatch(
      /^Keys for idempotent requests can only be used with the same parameters they were first used with\./,
    );

    const otherEndpoint = await rejection(stripe.invoices.create({ customer: first.id }, { idempotencyKey: key }));
    expect(otherEndpoint).toBeInstanceOf(Stripe.errors.StripeIdempotencyError);
    expect(otherEndpoint.message).toMatch(/only be used for the same endpoint/);
    expect(h.sim.customers().length).toBe(before + 1);
  });

  it("with dropNext, the SDK's own retry (same automatic key) gets the first result: one invoice, not two", async () => {
    const customer = await stripe.customers.create({ email: "drop@example.com" });
    await stripe.invoiceItems.create({ customer: customer.id, amount: 700, currency: "usd" });
    const before = h.sim.invoices().length;
    h.sim.dropNext(1, { method: "POST", path: "/v1/invoices" });
    const invoice = await stripe.invoices.create({ customer: customer.id, pending_invoice_items_behavior: "include" });
    expect(invoice.total).toBe(700);
    expect(h.sim.invoices().length).toBe(before + 1);
    const attempts = h.sim.requests.filter((r) => r.path === "/v1/invoices" && r.method === "POST").slice(-2);
    expect(attempts.map((r) => [r.status, r.fault, r.replayed])).toEqual([
      [500, "drop", false],
      [200, null, true],
    ]);
    expect(attempts[0]!.idempotencyKey).toMatch(/^stripe-node-retry-/);
    expect(attempts[1]!.idempotencyKey).toBe(attempts[0]!.idempotencyKey);

    // The same with the connection reset instead of a 500 (a failed fetch in-process).
    h.sim.dropNext(1, { method: "POST", path: "/v1/invoiceitems", as: "reset" });
    const item = await stripe.invoiceItems.create({ customer: customer.id, amount: 1, currency: "usd" });
    expect(
      h.sim
        .invoiceItems()
        .filter((i) => i.customer === customer.id)
        .map((i) => i.id),
    ).toContain(item.id);
    expect(h.sim.invoiceItems().filter((i) => i.customer === customer.id)).toHaveLength(2);
  });

  it("with failNext, the SDK retries a 500 that did nothing and creates once", async () => {
    const before = h.sim.customers().length;
    h.sim.failNext(2, { path: "/v1/customers" });
    const created = await stripe.customers.create({ email: "retry@example.com" });
    expect(created.email).toBe("retry@example.com");
    expect(h.sim.customers().length).toBe(before + 1);
    expect(h.sim.requests.slice(-3).map((r) => r.status)).toEqual([500, 500, 200]);

    h.sim.failNext(3);
    const error = await rejection(stripe.customers.create({ email: "gives-up@example.com" }));
    expect(error).toBeInstanceOf(Stripe.errors.StripeAPIError);
    expect(error.statusCode).toBe(500);
    expect(h.sim.customers().length).toBe(before + 1);
  });

  it("lists invoices for a customer newest first, paging with starting_after", async () => {
    const customer = await stripe.customers.create({ email: "list@example.com" });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await stripe.invoices.create({ customer: customer.id })).id);
    const first = await stripe.invoices.list({ customer: customer.id, limit: 2 });
    expect(first.object).toBe("list");
    expect(first.url).toBe("/v1/invoices");
    expect(first.has_more).toBe(true);
    expect(first.data.map((i) => i.id)).toEqual([ids[4], ids[3]]);
    const second = await stripe.invoices.list({ customer: customer.id, limit: 2, starting_after: ids[3] });
    expect(second.data.map((i) => i.id)).toEqual([ids[2], ids[1]]);
    const last = await stripe.invoices.list({ customer: customer.id, limit: 2, starting_after: ids[1] });
    expect(last.data.map((i) => i.id)).toEqual([ids[0]]);
    expect(last.has_more).toBe(false);
    const back = await stripe.invoices.list({ customer: customer.id, limit: 2, ending_before: ids[0] });
    expect(back.data.map((i) => i.id)).toEqual([ids[2], ids[1]]);
    expect(back.has_more).toBe(true);

    const all = await stripe.invoices.list({ customer: customer.id, limit: 2 }).autoPagingToArray({ limit: 100 });
    expect(all.map((i) => i.id)).toEqual([...ids].reverse());

    const drafts = await stripe.invoices.list({ customer: customer.id, status: "open" });
    expect(drafts.data).toEqual([]);
    const badCursor = await rejection(stripe.invoices.list({ starting_after: "in_nope" }));
    expect(badCursor).toMatchObject({ code: "resource_missing", param: "starting_after" });
  });
});

describe("the simulator's finer rules (in-process)", () => {
  let t = START;
  const sim = new StripeSimulator({ now: () => t });
  const stripe = inProcessClient(sim);

  it("stamps objects with the injected clock (unix seconds)", async () => {
    const c = await stripe.customers.create({ email: "clock@example.com" });
    expect(c.created).toBe(START / 1000);
    const item = await stripe.invoiceItems.create({ customer: c.id, amount: 1, currency: "eur" });
    expect(item.date).toBe(START / 1000);
    expect(item.period).toEqual({ start: START / 1000, end: START / 1000 });
    // The customer's first item sets its currency, and invoices default to it.
    expect((await stripe.customers.retrieve(c.id)) as Stripe.Customer).toMatchObject({ currency: "eur" });
    expect((await stripe.invoices.create({ customer: c.id })).currency).toBe("eur");
  });

  it("forgets idempotency keys after 24 hours of its clock", async () => {
    const key = "daily-run-1";
    const a = await stripe.customers.create({ email: "ttl@example.com" }, { idempotencyKey: key });
    t += 23 * 3_600_000;
    expect((await stripe.customers.create({ email: "ttl@example.com" }, { idempotencyKey: key })).id).toBe(a.id);
    t += 2 * 3_600_000;
    const c = await stripe.customers.create({ email: "ttl@example.com" }, { idempotencyKey: key });
    expect(c.id).not.toBe(a.id);
  });

  it("scopes idempotency keys to the API key", async () => {
    const other = inProcessClient(sim, "sk_test_other");
    const a = await stripe.customers.create({ email: "scope@example.com" }, { idempotencyKey: "shared" });
    const b = await other.customers.create({ email: "scope@example.com" }, { idempotencyKey: "shared" });
    expect(b.id).not.toBe(a.id);
    expect(sim.idempotencyKeys("sk_test_other").map((k) => k.key)).toEqual(["shared"]);
  });

  it("does not save parameter-validation errors under the key, but saves errors from running the endpoint", async () => {
    const c = await stripe.customers.create({});
    // Validation: a retry with the same key runs again (and here, the same body fails the same way).
    const bad = () => stripe.invoiceItems.create({ customer: c.id, amount: 1 }, { idempotencyKey: "val-1" });
    expect(await rejection(bad())).toMatchObject({ code: "parameter_missing", param: "currency" });
    expect(sim.idempotencyKeys(KEY).some((k) => k.key === "val-1")).toBe(false);
    // Execution: an unknown customer is saved, and replayed.
    const missing = () => stripe.invoices.create({ customer: "cus_gone" }, { idempotencyKey: "exec-1" });
    expect(await rejection(missing())).toMatchObject({ code: "resource_missing" });
    expect(await rejection(missing())).toMatchObject({ code: "resource_missing" });
    expect(sim.requests.at(-1)!.replayed).toBe(true);
    expect(sim.idempotencyKeys(KEY).find((k) => k.key === "exec-1")?.status).toBe(400);
  });

  it("can save validation errors too when asked", async () => {
    const strict = new StripeSimulator({ storeValidationErrors: true });
    const client = inProcessClient(strict);
    await rejection(client.customers.create({ bogus: 1 } as Stripe.CustomerCreateParams, { idempotencyKey: "v" }));
    expect(strict.idempotencyKeys().map((k) => [k.key, k.status])).toEqual([["v", 400]]);
  });

  it("a failNext with store: true is replayed to the retries, like a 500 Stripe saved", async () => {
    sim.failNext(1, { store: true, path: "/v1/customers" });
    const before = sim.customers().length;
    const error = await rejection(stripe.customers.create({ email: "stored500@example.com" }));
    expect(error).toBeInstanceOf(Stripe.errors.StripeAPIError);
    const attempts = sim.requests.slice(-3);
    expect(attempts.map((r) => [r.status, r.replayed])).toEqual([
      [500, false],
      [500, true],
      [500, true],
    ]);
    expect(sim.customers().length).toBe(before);
  });

  it("dropNext as a reset connection: the SDK retries after the connection error, one object", async () => {
    const before = sim.customers().length;
    sim.dropNext(1, { as: "reset" });
    const c = await stripe.customers.create({ email: "reset@example.com" });
    expect(sim.customers().length).toBe(before + 1);
    expect(sim.customer(c.id)?.email).toBe("reset@example.com");
    const noRetry = inProcessClient(sim, KEY, { maxNetworkRetries: 0 });
    sim.dropNext(2, { as: "reset" });
    // stripe-node retries a closed connection once even with retries off, but this is a failed fetch.
    const error = await rejection(noRetry.customers.create({ email: "lost@example.com" }));
    expect(error).toBeInstanceOf(Stripe.errors.StripeConnectionError);
    sim.clearFaults();
    expect(sim.customers().filter((x) => x.email === "lost@example.com")).toHaveLength(1);
  });

  it("attaches an item to a draft invoice directly, and refuses one for a finalized invoice", async () => {
    const c = await stripe.customers.create({});
    const draft = await stripe.invoices.create({ customer: c.id, currency: "usd" });
    const item = await stripe.invoiceItems.create({ customer: c.id, invoice: draft.id, amount: 250 });
    expect(item).toMatchObject({ invoice: draft.id, currency: "usd" });
    const refreshed = await stripe.invoices.retrieve(draft.id);
    expect(refreshed.total).toBe(250);
    await stripe.invoices.finalizeInvoice(draft.id);
    const late = await rejection(stripe.invoiceItems.create({ customer: c.id, invoice: draft.id, amount: 1 }));
    expect(late).toMatchObject({ code: "invoice_not_editable", param: "invoice" });
  });

  it("embeds 10 lines and pages the rest through /lines", async () => {
    const c = await stripe.customers.create({});
    for (let i = 1; i <= 12; i++) await stripe.invoiceItems.create({ customer: c.id, amount: i, currency: "usd" });
    const inv = await stripe.invoices.create({ customer: c.id, pending_invoice_items_behavior: "include" });
    expect(inv.total).toBe(78);
    expect(inv.lines.data).toHaveLength(10);
    expect(inv.lines.has_more).toBe(true);
    const lines = await stripe.invoices.listLineItems(inv.id, { limit: 100 });
    expect(lines.data.map((l) => l.amount)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    expect(sim.invoice(inv.id)!.lines.data).toHaveLength(12);
  });

  it("turns a negative total into customer credit that the next invoice uses", async () => {
    const c = await stripe.customers.create({});
    await stripe.invoiceItems.create({ customer: c.id, amount: -300, currency: "usd", description: "refund" });
    const credit = await stripe.invoices.finalizeInvoice(
      (await stripe.invoices.create({ customer: c.id, pending_invoice_items_behavior: "include" })).id,
    );
    expect(credit).toMatchObject({ status: "paid", total: -300, amount_due: 0, ending_balance: -300 });
    expect(((await stripe.customers.retrieve(c.id)) as Stripe.Customer).balance).toBe(-300);
    await stripe.invoiceItems.create({ customer: c.id, amount: 1_000, currency: "usd" });
    const next = await stripe.invoices.finalizeInvoice(
      (await stripe.invoices.create({ customer: c.id, pending_invoice_items_behavior: "include" })).id,
    );
    expect(next).toMatchObject({
      status: "open",
      total: 1_000,
      starting_balance: -300,
      amount_due: 700,
      ending_balance: 0,
    });
  });

  it("finalizes auto-advancing drafts an hour after creation", async () => {
    const c = await stripe.customers.create({});
    await stripe.invoiceItems.create({ customer: c.id, amount: 900, currency: "usd" });
    const draft = await stripe.invoices.create({
      customer: c.id,
      auto_advance: true,
      pending_invoice_items_behavior: "include",
    });
    expect(draft.automatically_finalizes_at).toBe(draft.created + 3600);
    t += 59 * 60_000;
    expect((await stripe.invoices.retrieve(draft.id)).status).toBe("draft");
    t += 60_000;
    const open = await stripe.invoices.retrieve(draft.id);
    expect(open.status).toBe("open");
    expect(open.status_transitions.finalized_at).toBe(draft.created + 3600);
    expect(open.automatically_finalizes_at).toBeNull();
  });

  describe("automatic collection", () => {
    const HOUR = 3_600_000;
    const DAY = 86_400_000;

    /** An open invoice of a new customer, finalized as Scalar's billing does: auto_advance on. */
    async function collected(client: Stripe, amount = 7_700) {
      const c = await client.customers.create({});
      await client.invoiceItems.create({ customer: c.id, amount, currency: "usd" });
      const draft = await client.invoices.create({ customer: c.id, pending_invoice_items_behavior: "include" });
      const invoice = await client.invoices.finalizeInvoice(draft.id, { auto_advance: true });
      return { customer: c.id, invoice };
    }

    const failures = (s: StripeSimulator, id: string) =>
      s.events().filter((e) => (e.data.object as { id: string }).id === id && e.type !== "invoice.created");

    it("charges an open auto-advancing invoice an hour after it was finalized, as Stripe collects", async () => {
      const { invoice } = await collected(stripe);
      const finalizedAt = invoice.status_transitions.finalized_at!;
      expect(invoice).toMatchObject({ status: "open", attempt_count: 0, next_payment_attempt: finalizedAt + 3600 });
      t += HOUR - 1000;
      expect((await stripe.invoices.retrieve(invoice.id)).status).toBe("open");
      t += 1000;
      const paid = await stripe.invoices.retrieve(invoice.id);
      expect(paid).toMatchObject({ status: "paid", attempt_count: 1, amount_paid: 7_700, next_payment_attempt: null });
      expect(paid.status_transitions.paid_at).toBe(finalizedAt + 3600);
      const events = failures(sim, invoice.id);
      expect(events.map((e) => e.type)).toEqual(["invoice.finalized", "invoice.paid", "invoice.payment_succeeded"]);
      // Done by the clock, not by a request.
      expect(events[1]!.request).toEqual({ id: null, idempotency_key: null });
    });

    it("retries a declined card every 3 days, 4 attempts in all, then leaves the invoice open", async () => {
      const { customer, invoice } = await collected(stripe);
      const first = invoice.next_payment_attempt!;
      sim.declinePayments(customer);
      t += HOUR;
      expect(sim.invoice(invoice.id)).toMatchObject({
        status: "open",
        attempt_count: 1,
        next_payment_attempt: first + 3 * 86_400,
      });
      // The clock jumps past the three retries at once: each is made, in order.
      t += 10 * DAY;
      expect(sim.invoice(invoice.id)).toMatchObject({ status: "open", attempt_count: 4, next_payment_attempt: null });
      expect(failures(sim, invoice.id).map((e) => e.type)).toEqual([
        "invoice.finalized",
        ...Array(4).fill("invoice.payment_failed"),
      ]);
      // A card that works again is charged only by hand now.
      sim.declinePayments(customer, null);
      t += 10 * DAY;
      expect(sim.invoice(invoice.id)!.status).toBe("open");
      expect((await stripe.invoices.pay(invoice.id)).status).toBe("paid");
    });

    it("a retry that succeeds pays it; with afterLastFailure mark_uncollectible the last failure writes it off", async () => {
      const { customer, invoice } = await collected(stripe);
      sim.declinePayments(customer);
      t += HOUR;
      expect(sim.invoice(invoice.id)).toMatchObject({ status: "open", attempt_count: 1 });
      sim.declinePayments(customer, null);
      t += 3 * DAY;
      expect(sim.invoice(invoice.id)).toMatchObject({ status: "paid", attempt_count: 2 });

      const strict = new StripeSimulator({ now: () => t, autoCollect: { afterLastFailure: "mark_uncollectible" } });
      const client = inProcessClient(strict);
      const unpaid = await collected(client);
      strict.declinePayments(unpaid.customer);
      t += HOUR + 9 * DAY;
      expect(strict.invoice(unpaid.invoice.id)).toMatchObject({ status: "uncollectible", attempt_count: 4 });
      expect(
        failures(strict, unpaid.invoice.id)
          .map((e) => e.type)
          .slice(-2),
      ).toEqual(["invoice.payment_failed", "invoice.marked_uncollectible"]);
    });

    it("charges nothing by itself with autoCollect false, nor invoices without auto_advance", async () => {
      const manual = new StripeSimulator({ now: () => t, autoCollect: false });
      const { invoice } = await collected(inProcessClient(manual));
      expect(invoice.next_payment_attempt).toBeNull();
      const c = await stripe.customers.create({});
      await stripe.invoiceItems.create({ customer: c.id, amount: 100, currency: "usd" });
      const draft = await stripe.invoices.create({ customer: c.id, pending_invoice_items_behavior: "include" });
      const plain = await stripe.invoices.finalizeInvoice(draft.id);
      t += 30 * DAY;
      expect(manual.invoice(invoice.id)).toMatchObject({ status: "open", attempt_count: 0 });
      expect(sim.invoice(plain.id)).toMatchObject({ status: "open", attempt_count: 0, next_payment_attempt: null });
    });
  });

  it("expands customer and invoice", async () => {
    const c = await stripe.customers.create({ email: "expand@example.com" });
    const draft = await stripe.invoices.create({ customer: c.id });
    const item = await stripe.invoiceItems.create({
      customer: c.id,
      invoice: draft.id,
      amount: 5,
      expand: ["customer", "invoice"],
    });
    expect((item.customer as Stripe.Customer).email).toBe("expand@example.com");
    expect((item.invoice as Stripe.Invoice).total).toBe(5);
    const listed = await stripe.invoices.list({ customer: c.id, expand: ["data.customer"] });
    expect((listed.data[0]!.customer as Stripe.Customer).id).toBe(c.id);
    const bad = await rejection(stripe.invoices.retrieve(draft.id, { expand: ["subscription"] }));
    expect(bad.message).toMatch(/^This property cannot be expanded \(subscription\)/);
  });

  it("accepts only the configured keys when given, and answers a missing key with 401", async () => {
    const locked = new StripeSimulator({ apiKeys: ["sk_test_only"] });
    await expect(inProcessClient(locked, "sk_test_only").customers.create({})).resolves.toMatchObject({
      object: "customer",
    });
    const other = await rejection(inProcessClient(locked, "sk_test_other").customers.create({}));
    expect(other).toBeInstanceOf(Stripe.errors.StripeAuthenticationError);
    const raw = await locked.fetch(new Request("http://sim/v1/customers", { method: "POST" }));
    expect(raw.status).toBe(401);
    expect(await raw.json()).toMatchObject({
      error: { type: "invalid_request_error", message: /did not provide an API key/ },
    });
  });

  it("speaks plain form encoding with bracket arrays too (curl style), and always answers JSON", async () => {
    const res = await sim.fetch(
      new Request("http://sim/v1/customers", {
        method: "POST",
        headers: { authorization: `Bearer ${KEY}`, "content-type": "application/x-www-form-urlencoded" },
        body: "email=curl%40example.com&metadata[a]=1&expand[]=",
      }),
    );
    expect(res.status).toBe(400);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/cannot be expanded/);
    const bad = await sim.fetch(new Request("http://sim/v1/nope", { headers: { authorization: `Bearer ${KEY}` } }));
    expect(bad.status).toBe(404);
    expect(await bad.json()).toMatchObject({ error: { type: "invalid_request_error" } });
  });
});

/** A webhook receiver on a free port: keeps each delivery's body and signature; `answer` picks the status. */
async function receiver(answer: (body: string) => number = () => 200) {
  const got: { body: string; signature: string }[] = [];
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => {
      body += c.toString();
    });
    req.on("end", () => {
      got.push({ body, signature: String(req.headers["stripe-signature"] ?? "") });
      res.writeHead(answer(body)).end();
    });
  });
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
    got,
    close: () => new Promise<void>((done) => server.close(() => done())),
  };
}

describe("collection, events and webhooks (the real SDK over HTTP)", () => {
  const SECRET = "whsec_scalar_sim_test";
  const subtle = Stripe.createSubtleCryptoProvider();
  let hook: Awaited<ReturnType<typeof receiver>>;
  let running: RunningStripeSimulator;
  let stripe: Stripe;
  /** Deliveries of this event type still to refuse. */
  let refuse = { type: "", times: 0 };
  beforeAll(async () => {
    hook = await receiver((body) => {
      if (JSON.parse(body).type !== refuse.type || refuse.times === 0) return 200;
      refuse.times--;
      return refuse.times === 1 ? 500 : 503;
    });
    running = await startStripeSimulator({
      webhooks: [{ url: hook.url, secret: SECRET }],
      webhookDelivery: { retryDelaysMs: [20, 20] },
    });
    stripe = new Stripe(KEY, { host: "127.0.0.1", port: running.port, protocol: "http" });
  });
  afterAll(async () => {
    await running?.close();
    await hook?.close();
  });

  async function openInvoice(amount = 4_200) {
    const customer = await stripe.customers.create({ email: `pay-${amount}@example.com` });
    await stripe.invoiceItems.create({ customer: customer.id, amount, currency: "usd" });
    const draft = await stripe.invoices.create({ customer: customer.id, pending_invoice_items_behavior: "include" });
    return { customer, invoice: await stripe.invoices.finalizeInvoice(draft.id) };
  }

  /**
   * The events the receiver got about this invoice, each checked by the SDK's own verification, in
   * the order they happened (deliveries run side by side, so they may land in another).
   */
  async function delivered(invoiceId: string) {
    await running.simulator.webhooks.settle();
    const events: Stripe.Event[] = [];
    for (const d of hook.got) {
      const event = await stripe.webhooks.constructEventAsync(d.body, d.signature, SECRET, undefined, subtle);
      if ((event.data.object as { id?: string }).id === invoiceId) events.push(event);
    }
    const order = running.simulator.events().map((e) => e.id);
    return events.sort((a, b) => order.indexOf(a.id) - order.indexOf(b.id));
  }

  it("pays an open invoice: invoice.paid and invoice.payment_succeeded, signed, once each; paying again fails", async () => {
    const { invoice } = await openInvoice();
    const paid = await stripe.invoices.pay(invoice.id, {}, { idempotencyKey: `pay-${invoice.id}` });
    expect(paid).toMatchObject({ status: "paid", amount_paid: 4_200, amount_remaining: 0, attempt_count: 1 });
    expect(paid.status_transitions.paid_at).toBeGreaterThan(0);
    // The same key again: Stripe's saved answer, no second payment and no second event.
    await stripe.invoices.pay(invoice.id, {}, { idempotencyKey: `pay-${invoice.id}` });
    const events = await delivered(invoice.id);
    expect(events.map((e) => e.type)).toEqual([
      "invoice.created",
      "invoice.finalized",
      "invoice.paid",
      "invoice.payment_succeeded",
    ]);
    expect(events[2]!.request).toMatchObject({ idempotency_key: `pay-${invoice.id}` });
    expect((events[2]!.data.object as Stripe.Invoice).status).toBe("paid");

    const again = await rejection(stripe.invoices.pay(invoice.id));
    expect(again).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(again.message).toBe("Invoice is already paid");
  });

  it("a declined card: 402 StripeCardError, invoice.payment_failed with the next attempt; then it pays", async () => {
    const { customer, invoice } = await openInvoice(9_900);
    running.simulator.declinePayments(customer.id, { decline_code: "insufficient_funds" });
    const error = await rejection(stripe.invoices.pay(invoice.id));
    expect(error).toBeInstanceOf(Stripe.errors.StripeCardError);
    expect(error).toMatchObject({ statusCode: 402, code: "card_declined", decline_code: "insufficient_funds" });
    const failed = await stripe.invoices.retrieve(invoice.id);
    expect(failed).toMatchObject({ status: "open", attempt_count: 1, attempted: true });
    expect(failed.next_payment_attempt! - failed.status_transitions.finalized_at!).toBeGreaterThanOrEqual(3 * 86_400);

    running.simulator.declinePayments(customer.id, null);
    expect((await stripe.invoices.pay(invoice.id)).status).toBe("paid");
    const types = (await delivered(invoice.id)).map((e) => e.type);
    expect(types.slice(2)).toEqual(["invoice.payment_failed", "invoice.paid", "invoice.payment_succeeded"]);
  });

  it("paid out of band: invoice.paid only; uncollectible then void; a paid invoice cannot be voided", async () => {
    const a = await openInvoice(1_000);
    expect((await stripe.invoices.pay(a.invoice.id, { paid_out_of_band: true })).status).toBe("paid");
    expect((await delivered(a.invoice.id)).map((e) => e.type).slice(2)).toEqual(["invoice.paid"]);
    const refused = await rejection(stripe.invoices.voidInvoice(a.invoice.id));
    expect(refused).toMatchObject({ statusCode: 400 });

    const b = await openInvoice(2_000);
    const lost = await stripe.invoices.markUncollectible(b.invoice.id);
    expect(lost.status).toBe("uncollectible");
    expect(lost.status_transitions.marked_uncollectible_at).toBeGreaterThan(0);
    expect((await stripe.invoices.voidInvoice(b.invoice.id)).status).toBe("void");
    expect(await rejection(stripe.invoices.pay(b.invoice.id))).toMatchObject({ statusCode: 400 });
    expect((await delivered(b.invoice.id)).map((e) => e.type).slice(2)).toEqual([
      "invoice.marked_uncollectible",
      "invoice.voided",
    ]);
  });

  it("retries a delivery the receiver refused, with the same event", async () => {
    refuse = { type: "invoice.created", times: 2 };
    hook.got.length = 0;
    try {
      const { invoice } = await openInvoice(3_000);
      await running.simulator.webhooks.settle();
      const ids = hook.got.map((d) => JSON.parse(d.body).id as string);
      // invoice.created refused twice, then taken; invoice.finalized taken at once.
      expect(ids.length).toBe(4);
      expect(new Set(ids).size).toBe(2);
      const attempts = running.simulator.webhooks.attempts.filter((a) => ids.includes(a.event_id));
      expect(attempts.map((a) => [a.type, a.attempt, a.status]).sort()).toEqual([
        ["invoice.created", 1, 500],
        ["invoice.created", 2, 503],
        ["invoice.created", 3, 200],
        ["invoice.finalized", 1, 200],
      ]);
      expect((await delivered(invoice.id)).length).toBe(4);
    } finally {
      refuse = { type: "", times: 0 };
    }
  });

  it("a served simulator collects on its own clock and sends the webhooks without any request", async () => {
    const got: string[] = [];
    const own = await receiver((body) => {
      got.push(JSON.parse(body).type);
      return 200;
    });
    const served = await startStripeSimulator({
      webhooks: [{ url: own.url }],
      autoCollect: { firstAttemptAfterS: 1 },
      syncIntervalMs: 50,
    });
    try {
      const client = new Stripe(KEY, { host: "127.0.0.1", port: served.port, protocol: "http" });
      const c = await client.customers.create({});
      await client.invoiceItems.create({ customer: c.id, amount: 2_500, currency: "usd" });
      const draft = await client.invoices.create({ customer: c.id, pending_invoice_items_behavior: "include" });
      await client.invoices.finalizeInvoice(draft.id, { auto_advance: true });
      const deadline = Date.now() + 5_000;
      while (!got.includes("invoice.payment_succeeded") && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(got).toContain("invoice.paid");
      expect(got).toContain("invoice.payment_succeeded");
    } finally {
      await served.close();
      await own.close();
    }
  });

  it("webhook endpoints made through the API get their own secret and only their events; events list and page", async () => {
    const other = await receiver();
    try {
      const endpoint = await stripe.webhookEndpoints.create({ url: other.url, enabled_events: ["invoice.voided"] });
      expect(endpoint.secret).toMatch(/^whsec_/);
      expect((await stripe.webhookEndpoints.retrieve(endpoint.id)).secret).toBeUndefined();
      expect((await stripe.webhookEndpoints.list()).data.map((e) => e.id)).toContain(endpoint.id);
      const bad = await rejection(stripe.webhookEndpoints.create({ url: "ftp://x", enabled_events: ["*"] }));
      expect(bad).toMatchObject({ statusCode: 400, param: "url" });

      const { invoice } = await openInvoice(5_000);
      await stripe.invoices.voidInvoice(invoice.id);
      await running.simulator.webhooks.settle();
      expect(other.got.length).toBe(1);
      const event = await stripe.webhooks.constructEventAsync(
        other.got[0]!.body,
        other.got[0]!.signature,
        endpoint.secret!,
        undefined,
        subtle,
      );
      expect(event.type).toBe("invoice.voided");

      expect((await stripe.events.retrieve(event.id)).type).toBe("invoice.voided");
      const page = await stripe.events.list({ type: "invoice.*", limit: 2 });
      expect(page.data.map((e) => e.type)).toEqual(["invoice.voided", "invoice.finalized"]);
      expect(page.has_more).toBe(true);
      const next = await stripe.events.list({ type: "invoice.*", limit: 2, starting_after: page.data[1]!.id });
      expect(next.data[0]!.type).toBe("invoice.created");
      expect(
        (await stripe.events.list({ types: ["invoice.voided"] })).data.every((e) => e.type === "invoice.voided"),
      ).toBe(true);
    } finally {
      await other.close();
    }
  });
});

describe("the CLI", () => {
  it("starts a server on the given port, prints its URL, and sends events to --webhook", async () => {
    const root = resolve(import.meta.dirname, "../..");
    const hook = await receiver();
    const args = ["tools/stripe-sim/cli.ts", "--port", "0", "--webhook", hook.url, "--webhook-secret", "whsec_cli"];
    const child = spawn(process.execPath, ["--import", "tsx", ...args], {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"],
    });
    try {
      let out = "";
      const url = await new Promise<string>((done, fail) => {
        child.stdout.on("data", (chunk: Buffer) => {
          out += chunk.toString();
          const m = /listening on (http:\/\/\S+)/.exec(out);
          if (m) done(m[1]!);
        });
        child.once("exit", (code) => fail(new Error(`cli exited ${code}: ${out}`)));
      });
      const port = Number(new URL(url).port);
      const stripe = new Stripe(KEY, { host: "127.0.0.1", port, protocol: "http" });
      const customer = await stripe.customers.create({ email: "cli@example.com" });
      expect(customer.email).toBe("cli@example.com");
      await stripe.invoices.create({ customer: customer.id });
      await expect.poll(() => hook.got.length, { timeout: 10_000 }).toBe(1);
      const event = await stripe.webhooks.constructEventAsync(hook.got[0]!.body, hook.got[0]!.signature, "whsec_cli");
      expect(event.type).toBe("invoice.created");
    } finally {
      await hook.close();
      child.kill("SIGTERM");
      if (child.exitCode === null) await once(child, "exit");
    }
  });
});
