/** The v0 market engine in-process, on a virtual clock: orders, quotes, contracts, balances. */
import { describe, expect, it } from "vitest";
import type { Account } from "./accounts";
import { DAY_MS, HOUR_MS, MINUTE_MS } from "./clock";
import type { SimSettings } from "./config";
import { type DeepPartial, SimEngine } from "./engine";
import { SimError } from "./errors";
import type { OrderInput } from "./market";
import { quantityAt, toWire } from "./shape";
import { TEST_START } from "./testing";

function setup(settings: DeepPartial<SimSettings> = {}, balanceCents = 10_000_000) {
  const engine = new SimEngine({
    seed: 42,
    clock: "virtual",
    start: TEST_START,
    settings: { ...settings, market: { matchDelayMs: [50, 50], cancelDelayMs: [20, 20], ...settings.market } },
  });
  const me = engine.createAccount({ token: "me", balanceCents });
  return { engine, me, market: engine.market };
}

const nextHour = (t: number, plus = 1) => Math.ceil(t / HOUR_MS) * HOUR_MS + (plus - 1) * HOUR_MS;

function thrown(fn: () => unknown): SimError {
  try {
    fn();
  } catch (error) {
    if (error instanceof SimError) return error;
    throw error;
  }
  throw new Error("expected a SimError");
}

function buy(engine: SimEngine, overrides: Partial<OrderInput> = {}): OrderInput {
  return {
    side: "buy",
    instance_type: "h100v",
    quantity: 1,
    start_at: "NOW",
    end_at: nextHour(engine.now(), 2),
    price: 1_000_000,
    ...overrides,
  };
}

/** The quote for a block, then an order for exactly that block at `price`. */
function quoteThenOrder(engine: SimEngine, me: Account, delta: number) {
  const q = engine.market.quote(me, { side: "buy", quantity: 2, instance_type: "h100v", duration: 4 * 3600 }).quote!;
  const { order } = engine.market.placeOrder(me, {
    side: "buy",
    quantity: 2,
    start_at: q.startNow ? "NOW" : q.start,
    end_at: q.end,
    cluster: q.zone,
    price: q.price + delta,
  });
  engine.advanceBy(1000);
  return { q, order };
}

describe("buy orders", () => {
  it("accepts as pending, then fills immediate-or-cancel at the market price, never above the limit", () => {
    const { engine, me, market } = setup();
    const { order, response } = market.placeOrder(me, buy(engine), "key-1");
    expect(response).toEqual({ object: "order", status: "pending", id: order.id, idempotency_key: "key-1" });
    expect(order.id).toMatch(/^ordr_[0-9a-zA-Z_-]{1,21}$/);
    expect(order.status).toBe("pending");
    engine.advanceBy(1000);
    expect(order.status).toBe("filled");
    expect(order.executionPrice).toBeLessThanOrEqual(order.price);
    expect(order.executedAt).toBe(TEST_START + 50);
    const contract = market.contracts.get(order.contractId!)!;
    expect(toWire(contract.shape)).toEqual({
      intervals: [new Date(order.startAt).toISOString(), new Date(order.endAt).toISOString()],
      quantities: [1, 0],
    });
    expect(me.balanceCents).toBe(10_000_000 - order.executionPrice!);
  });

  it("cancels an immediate-or-cancel order whose limit is under the market", () => {
    const { engine, me, market } = setup();
    const { order } = market.placeOrder(me, buy(engine, { price: 100 }));
    engine.advanceBy(1000);
    expect(order.status).toBe("cancelled");
    expect(order.cancelled).toBe(true);
    expect(market.contracts.size).toBe(0);
    expect(me.balanceCents).toBe(10_000_000);
  });

  it("fills an order placed at the quoted block and price at exactly that price, and not one cent under it", () => {
    const a = setup();
    const filled = quoteThenOrder(a.engine, a.me, 0);
    expect(filled.order.status).toBe("filled");
    expect(filled.order.executionPrice).toBe(filled.q.price);
    const b = setup();
    const under = quoteThenOrder(b.engine, b.me, -1);
    expect(under.q.price).toBe(filled.q.price); // same seed, same market
    expect(under.order.status).toBe("cancelled");
  });

  it("rests a standing order as open with a hold, and auto-cancels it once its end has passed", () => {
    const { engine, me, market } = setup();
    const end = nextHour(engine.now(), 3);
    const { order } = market.placeOrder(me, buy(engine, { price: 500, end_at: end, flags: { ioc: false } }));
    engine.advanceBy(1000);
    expect(order.status).toBe("open");
    expect(me.heldCents).toBe(500);
    expect(me.availableCents).toBe(10_000_000 - 500);
    engine.advanceTo(end + MINUTE_MS);
    expect(order.status).toBe("cancelled");
    expect(me.heldCents).toBe(0);
  });

  it("fills a standing order when the market comes down to its limit", () => {
    const { engine, me, market } = setup();
    // A week-long block starting next Saturday: weekend hours are cheaper, and the level moves hourly.
    const start = Date.parse("2026-03-07T08:00:00Z");
    const block = { start, end: start + 48 * HOUR_MS, quantity: 1 };
    const zone = engine.k.catalog.zones.get("hayesvalley")!;
    const now = market.priceBuy(zone, block.start, block.end, 1)!.total;
    const limit = Math.floor(now * 0.97);
    const { order } = market.placeOrder(me, {
      side: "buy",
      cluster: "hayesvalley",
      quantity: 1,
      start_at: start,
      end_at: block.end,
      price: limit,
      flags: { ioc: false },
    });
    engine.advanceBy(1000);
    expect(order.status).toBe("open");
    // The price path is seeded: within the days before the start it crosses the limit at least once.
    for (let h = 0; h < 100 && order.status === "open"; h++) engine.advanceBy(HOUR_MS);
    expect(order.status).toBe("filled");
    expect(order.executionPrice).toBeLessThanOrEqual(limit);
    expect(me.heldCents).toBe(0);
  });

  it("never matches post-only on entry, and lets a market order ignore its limit", () => {
    const { engine, me, market } = setup();
    const post = market.placeOrder(me, buy(engine, { flags: { post_only: true, ioc: false } })).order;
    const postIoc = market.placeOrder(me, buy(engine, { flags: { post_only: true } })).order;
    const marketOrder = market.placeOrder(me, buy(engine, { price: 1, flags: { market: true } })).order;
    engine.advanceBy(1000);
    expect(post.status).toBe("open");
    expect(postIoc.status).toBe("cancelled");
    expect(marketOrder.status).toBe("filled");
    expect(marketOrder.executionPrice).toBeGreaterThan(1);
  });

  it("cancels asynchronously, refuses a second cancel, and lets the cancel lose a race with the fill", () => {
    const { engine, me, market } = setup({ market: { cancelDelayMs: [20, 20], matchDelayMs: [50, 50] } });
    const standing = market.placeOrder(me, buy(engine, { price: 1, flags: { ioc: false } })).order;
    engine.advanceBy(1000);
    market.cancelOrder(me, standing.id);
    expect(standing.status).toBe("open");
    expect(thrown(() => market.cancelOrder(me, standing.id))).toMatchObject({
      status: 400,
      message: "Order already cancelled",
    });
    engine.advanceBy(100);
    expect(standing.status).toBe("cancelled");

    const racing = setup({ market: { cancelDelayMs: [500, 500], matchDelayMs: [50, 50] } });
    const order = racing.market.placeOrder(racing.me, buy(racing.engine)).order;
    racing.market.cancelOrder(racing.me, order.id);
    racing.engine.advanceBy(1000);
    expect(order.status).toBe("cancelled"); // a cancel requested before the match wins it

    const late = setup({ market: { cancelDelayMs: [500, 500], matchDelayMs: [50, 50] } });
    const o2 = late.market.placeOrder(late.me, buy(late.engine)).order;
    late.engine.advanceBy(60);
    expect(o2.status).toBe("filled");
    expect(thrown(() => late.market.cancelOrder(late.me, o2.id)).status).toBe(400);
  });

  it("answers a repeated Idempotency-Key with the original order, and refuses the key on a different body", () => {
    const { engine, me, market } = setup();
    const first = market.placeOrder(me, buy(engine), "same");
    engine.advanceBy(1000);
    const again = market.placeOrder(me, buy(engine), "same");
    expect(again.replayed).toBe(true);
    expect(again.order.id).toBe(first.order.id);
    expect(again.response).toEqual(first.response);
    expect(market.orders.size).toBe(1);
    expect(thrown(() => market.placeOrder(me, buy(engine, { quantity: 2 }), "same"))).toMatchObject({
      status: 400,
      type: "idempotency_error",
    });
    // Keys are per account.
    const other = engine.createAccount({ token: "other", balanceCents: 10_000_000 });
    expect(market.placeOrder(other, buy(engine), "same").order.id).not.toBe(first.order.id);
  });

  it("refuses an order the balance does not cover, and rejects one that the balance no longer covers at match time", () => {
    const { engine, me, market } = setup({}, 1_000);
    expect(thrown(() => market.placeOrder(me, buy(engine, { price: 5_000 })))).toMatchObject({
      status: 400,
      message: "Insufficient balance",
    });
    const poor = setup({}, 10_000_000).engine;
    const rich = poor.createAccount({ token: "x", balanceCents: 3_000 });
    const { order } = poor.market.placeOrder(rich, buy(poor, { price: 3_000, flags: { market: true } }));
    poor.advanceBy(1000);
    expect(order.status).toBe("rejected");
    expect(order.rejectedReason).toBe("Insufficient balance");
  });

  it("runs out of supply: a block larger than a zone's free nodes does not fill, whatever the price", () => {
    const { engine, me, market } = setup({}, 1_000_000_000);
    const { order } = market.placeOrder(
      me,
      buy(engine, { quantity: 200, price: 500_000_000, end_at: nextHour(engine.now(), 24) }),
    );
    engine.advanceBy(1000);
    expect(order.status).toBe("cancelled");
    const q = market.quote(me, { side: "buy", quantity: 200, instance_type: "h100v", duration: 86_400 });
    expect(q).toEqual({ side: "buy", quote: null, noQuoteReason: "no_availability" });
  });

  it("hides a fill for the configured window after the POST (a 404 the CLI tolerates)", () => {
    const { engine, me, market } = setup({ market: { orderVisibilityDelayMs: 300 } });
    const { order } = market.placeOrder(me, buy(engine));
    expect(thrown(() => market.getOrder(me, order.id)).status).toBe(404);
    engine.advanceBy(300);
    expect(market.getOrder(me, order.id).id).toBe(order.id);
  });

  it("answers 403 for another account's order and 404 for an unknown one", () => {
    const { engine, me, market } = setup();
    const other = engine.createAccount({ token: "o", balanceCents: 1_000_000 });
    const { order } = market.placeOrder(me, buy(engine));
    expect(thrown(() => market.getOrder(other, order.id)).status).toBe(403);
    expect(thrown(() => market.getOrder(me, "ordr_nope")).status).toBe(404);
  });
});

describe("time rules", () => {
  it("takes NOW as the next minute and a start within a minute of now as now; refuses other starts off the hour", () => {
    const { engine, market } = setup();
    expect(market.resolveStart("NOW")).toEqual({ start: TEST_START, now: true }); // 17:20:00 is on a minute
    engine.advanceBy(30_000);
    expect(market.resolveStart("NOW").start).toBe(TEST_START + MINUTE_MS);
    expect(market.resolveStart(engine.now() - 50_000).now).toBe(true);
    expect(market.resolveStart(nextHour(engine.now()))).toEqual({ start: nextHour(engine.now()), now: false });
    expect(thrown(() => market.resolveStart(nextHour(engine.now()) + 30 * MINUTE_MS)).message).toMatch(
      /on a future hour/,
    );
    expect(thrown(() => market.resolveStart(engine.now() - HOUR_MS)).status).toBe(400);
  });

  it("wants the end on the hour, after the start, at least an hour and at most three years away", () => {
    const { market } = setup();
    const start = nextHour(TEST_START);
    expect(thrown(() => market.checkEnd(start, start + HOUR_MS + 1)).message).toBe("End time must be on the hour");
    expect(thrown(() => market.checkEnd(start, start)).message).toBe("End time must be after start time");
    expect(thrown(() => market.checkEnd(TEST_START, start)).message).toBe("Duration must be at least 1 hour");
    expect(thrown(() => market.checkEnd(start, start + 4 * 365 * DAY_MS)).message).toBe(
      "Duration must be at most 3 years",
    );
  });
});

describe("sell orders and contracts", () => {
  function owned(engine: SimEngine, me: Account, quantity = 4, hours = 6) {
    const start = nextHour(engine.now(), 2);
    const { order } = engine.market.placeOrder(me, {
      side: "buy",
      cluster: "hayesvalley",
      quantity,
      start_at: start,
      end_at: start + hours * HOUR_MS,
      price: 10_000_000,
    });
    engine.advanceBy(1000);
    expect(order.status).toBe("filled");
    return { contract: engine.market.contracts.get(order.contractId!)!, start };
  }

  it("carves a sold window out of the shape, credits the fill minus the resale fee, and returns the nodes to the market", () => {
    const { engine, me, market } = setup({ market: { resaleFee: { flatCentsPerNodeHour: 0, percentageBps: 500 } } });
    const { contract, start } = owned(engine, me);
    const before = me.balanceCents;
    const heldBefore = engine.k.supply.heldAt("hayesvalley", start / HOUR_MS + 1);
    const { order } = market.placeOrder(me, {
      side: "sell",
      contract_id: contract.id,
      quantity: 2,
      start_at: start + HOUR_MS,
      end_at: start + 2 * HOUR_MS,
      price: 0,
    });
    engine.advanceBy(1000);
    expect(order.status).toBe("filled");
    expect(order.executionPrice).toBeGreaterThan(0);
    // 4 nodes over [s, s+6h) minus 2 over [s+1h, s+2h) (reference §7.1's example).
    expect(contract.shape.map((b) => [b.t - start, b.q])).toEqual([
      [0, 4],
      [HOUR_MS, 2],
      [2 * HOUR_MS, 4],
      [6 * HOUR_MS, 0],
    ]);
    const fee = Math.ceil(order.executionPrice! * 0.05);
    expect(me.balanceCents - before).toBe(order.executionPrice! - fee);
    expect(engine.k.supply.heldAt("hayesvalley", start / HOUR_MS + 1)).toBe(heldBefore - 2);
  });

  it("refuses to sell more than the contract holds over the window, counting open sells", () => {
    const { engine, me, market } = setup();
    const { contract, start } = owned(engine, me, 2, 4);
    const sell = (quantity: number, from = start, to = start + HOUR_MS, flags?: OrderInput["flags"]) =>
      market.placeOrder(me, {
        side: "sell",
        contract_id: contract.id,
        quantity,
        start_at: from,
        end_at: to,
        price: 1e9,
        flags,
      });
    expect(thrown(() => sell(3)).message).toMatch(/holds 2 node/);
    expect(thrown(() => sell(1, start, start + 5 * HOUR_MS)).message).toMatch(/holds 0 node/);
    sell(2, start, start + HOUR_MS, { ioc: false }); // rests: its limit is far above any bid
    engine.advanceBy(1000);
    expect(thrown(() => sell(1)).message).toMatch(/holds 0 node/);
    // Someone else's contract is not found.
    const other = engine.createAccount({ token: "o", balanceCents: 1e7 });
    expect(
      thrown(() =>
        market.placeOrder(other, {
          side: "sell",
          contract_id: contract.id,
          quantity: 1,
          start_at: start,
          end_at: start + HOUR_MS,
          price: 0,
        }),
      ).status,
    ).toBe(404);
  });

  it("refuses sell orders and sell quotes by contract with 400 when set to (§16), and still buys", () => {
    const { engine, me, market } = setup({ market: { v0Sells: "reject" } });
    const { contract, start } = owned(engine, me);
    const window = { contract_id: contract.id, quantity: 1, start_at: start + HOUR_MS, end_at: start + 2 * HOUR_MS };
    const order = thrown(() => market.placeOrder(me, { side: "sell", price: 0, ...window }));
    expect([order.status, order.field, order.message]).toEqual([
      400,
      "side",
      "sell orders are not accepted by this API",
    ]);
    const quote = thrown(() =>
      market.quote(me, { side: "sell", quantity: 1, duration: 3600, contract_id: contract.id }),
    );
    expect([quote.status, quote.field]).toEqual([400, "side"]);
    // Buying is untouched.
    expect(market.placeOrder(me, buy(engine)).order.status).toBe("pending");
  });

  it("computes Upcoming, Active and Expired from the clock, and hides Expired unless asked", () => {
    const { engine, me, market } = setup();
    const { contract, start } = owned(engine, me, 1, 2);
    expect(market.contractState(contract)).toBe("Upcoming");
    engine.advanceTo(start + 1);
    expect(market.contractState(contract)).toBe("Active");
    expect(quantityAt(contract.shape, engine.now())).toBe(1);
    engine.advanceTo(start + 2 * HOUR_MS);
    expect(market.contractState(contract)).toBe("Expired");
    expect(market.listContracts(me, {})).toEqual([]);
    expect(market.listContracts(me, { state: "Expired" })).toEqual([contract]);
    expect(market.listContracts(me, { state: "All" })).toEqual([contract]);
    expect(
      market.listContracts(me, {
        state: "All",
        active_within_interval_start: start + 2 * HOUR_MS,
        active_within_interval_end: start + 3 * HOUR_MS,
      }),
    ).toEqual([]);
  });
});

describe("quotes", () => {
  it("enforces the parameter rules of §8", () => {
    const { me, market } = setup();
    const q = (p: Partial<Parameters<typeof market.quote>[1]>) =>
      thrown(() => market.quote(me, { side: "buy", quantity: 1, instance_type: "h100v", duration: 3600, ...p }));
    expect(q({ quantity: 0 }).field).toBe("quantity");
    expect(q({ quantity: 1025 }).field).toBe("quantity");
    expect(q({ duration: 1800 }).message).toMatch(/at least 3600/);
    expect(q({ min_duration: 3600, max_duration: 7200 }).message).toMatch(/cannot be combined/);
    expect(q({ duration: undefined }).message).toMatch(/required/);
    expect(q({ duration: undefined, min_duration: 7200, max_duration: 3600 }).field).toBe("max_duration");
    expect(q({ duration: 4 * 365 * 86_400 }).message).toMatch(/3 years/);
    expect(q({ min_start_date: TEST_START + DAY_MS, max_start_date: TEST_START }).code).toBe(
      "quote.invalid_date_range",
    );
    expect(q({ contract_id: "cont_x" }).field).toBe("contract_id");
    expect(q({ instance_type: undefined }).field).toBe("instance_type");
    expect(
      thrown(() => market.quote(me, { side: "sell", quantity: 1, duration: 3600, instance_type: "h100v" })).status,
    ).toBe(400);
    expect(thrown(() => market.quote(me, { side: "sell", quantity: 1, duration: 3600 })).field).toBe("contract_id");
    expect(market.quote(me, { side: "buy", quantity: 1, instance_type: "a100x", duration: 3600 }).noQuoteReason).toBe(
      "no_matching_clusters",
    );
  });

  it("prices within the reference's anchors: 1 h dearest, 1 day about $2, a month of 16 nodes cheapest", () => {
    const rates: Record<string, number[]> = { hour: [], day: [], month: [] };
    for (let seed = 1; seed <= 20; seed++) {
      const engine = new SimEngine({ seed, clock: "virtual", start: TEST_START + seed * 7 * HOUR_MS });
      const me = engine.createAccount({ token: "t", balanceCents: 0 });
      const rate = (quantity: number, hours: number) => {
        const q = engine.market.quote(me, {
          side: "buy",
          quantity,
          instance_type: "h100v",
          duration: hours * 3600,
        }).quote;
        if (!q) return null;
        return q.price / (quantity * 8) / ((q.end - q.start) / HOUR_MS) / 100; // $ per GPU-hour
      };
      for (const [key, n, h] of [
        ["hour", 1, 1],
        ["day", 1, 24],
        ["month", 16, 720],
      ] as const) {
        const r = rate(n, h);
        if (r !== null) rates[key]!.push(r);
      }
    }
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    expect(rates.hour!.length).toBe(20);
    expect(rates.day!.length).toBe(20);
    expect(rates.month!.length).toBeGreaterThan(10);
    expect(mean(rates.hour!)).toBeGreaterThan(2.3);
    expect(mean(rates.hour!)).toBeLessThan(3.6);
    expect(mean(rates.day!)).toBeGreaterThan(1.7);
    expect(mean(rates.day!)).toBeLessThan(2.5);
    expect(mean(rates.month!)).toBeGreaterThan(1.1);
    expect(mean(rates.month!)).toBeLessThan(1.6);
  });

  it("is the same market for the same seed and a different one for another", () => {
    const path = (seed: number) => {
      const engine = new SimEngine({ seed, clock: "virtual", start: TEST_START });
      const out: number[] = [];
      for (let h = 0; h < 72; h++) {
        out.push(engine.k.prices.level("hayesvalley", engine.now()));
        engine.advanceBy(HOUR_MS);
      }
      return out;
    };
    expect(path(5)).toEqual(path(5));
    expect(path(5)).not.toEqual(path(6));
  });

  it("has daily and weekly seasonality: weekday afternoons dearer than weekend nights", () => {
    const engine = new SimEngine({ seed: 1, clock: "virtual", start: TEST_START });
    const p = engine.k.prices;
    const hourOf = (iso: string) => Date.parse(iso) / HOUR_MS;
    expect(p.seasonality(hourOf("2026-03-04T22:00:00Z"))).toBeGreaterThan(
      p.seasonality(hourOf("2026-03-08T11:00:00Z")),
    );
    let week = 0;
    for (let h = 0; h < 168; h++) week += p.seasonality(hourOf("2026-03-02T00:00:00Z") + h);
    expect(week / 168).toBeCloseTo(1, 5);
  });
});

describe("the clock", () => {
  it("only moves when told to, and runs timers at their own instants", () => {
    const { engine, me, market } = setup();
    const { order } = market.placeOrder(me, buy(engine));
    expect(engine.now()).toBe(TEST_START);
    engine.sync();
    expect(order.status).toBe("pending");
    engine.advanceBy(49);
    expect(order.status).toBe("pending");
    engine.advanceBy(1);
    expect(order.status).toBe("filled");
    expect(order.executedAt).toBe(TEST_START + 50);
    expect(() => engine.advanceTo(TEST_START)).toThrow(/cannot go back/);
  });

  it("reports events to subscribers, in order", () => {
    const { engine, me, market } = setup();
    const seen: string[] = [];
    engine.subscribe((e) => seen.push(`${e.type}:${String(e.data.status ?? "")}`));
    market.placeOrder(me, buy(engine));
    engine.advanceBy(1000);
    expect(seen).toEqual(["order.status:pending", "contract.updated:", "order.status:filled", "clock.advanced:"]);
  });
});
