/**
 * Properties of the market under random sequences of buys, sells, cancels, node operations and
 * time jumps by two accounts: no fill above a buy's limit (or below a sell's), no sale of contract
 * time the seller does not hold, no negative quantity anywhere, no negative available balance, and
 * the supply book always equal to what the contracts hold.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { HOUR_MS, MINUTE_MS } from "./clock";
import { SimEngine } from "./engine";
import { SimError } from "./errors";
import type { OrderInput, OrderRecord } from "./market";
import { addBlock, blockShape, type Shape } from "./shape";
import { TEST_START } from "./testing";

type Op =
  | {
      kind: "buy";
      who: 0 | 1;
      zone: number;
      byType: boolean;
      quantity: number;
      startHours: number;
      hours: number;
      limitFactor: number;
      ioc: boolean;
      postOnly: boolean;
      market: boolean;
      prorate: boolean;
    }
  | {
      kind: "sell";
      who: 0 | 1;
      mine: boolean;
      inside: boolean;
      pick: number;
      quantity: number;
      fromHours: number;
      hours: number;
      limitFactor: number;
      ioc: boolean;
      market: boolean;
    }
  | { kind: "cancel"; who: 0 | 1; pick: number }
  | { kind: "node"; who: 0 | 1; count: number; hours: number; maxPrice: number }
  | { kind: "extend"; who: 0 | 1; pick: number; hours: number; maxPrice: number }
  | { kind: "advance"; minutes: number };

const who = fc.constantFrom<0 | 1>(0, 1);
const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("buy" as const),
      who,
      zone: fc.nat(3),
      byType: fc.boolean(),
      quantity: fc.integer({ min: 1, max: 40 }),
      startHours: fc.integer({ min: -1, max: 30 }),
      hours: fc.integer({ min: 1, max: 72 }),
      limitFactor: fc.double({ min: 0.3, max: 2, noNaN: true }),
      ioc: fc.boolean(),
      postOnly: fc.boolean(),
      market: fc.boolean(),
      prorate: fc.boolean(),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("sell" as const),
      who,
      mine: fc.boolean().map((b) => b || Math.random() < 0.6),
      inside: fc.integer({ min: 0, max: 4 }).map((n) => n > 0),
      pick: fc.nat(),
      quantity: fc.integer({ min: 1, max: 8 }),
      fromHours: fc.integer({ min: -1, max: 40 }),
      hours: fc.integer({ min: 1, max: 48 }),
      limitFactor: fc.double({ min: 0, max: 1.5, noNaN: true }),
      ioc: fc.boolean(),
      market: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("cancel" as const), who, pick: fc.nat() }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("node" as const),
      who,
      count: fc.integer({ min: 1, max: 4 }),
      hours: fc.integer({ min: 1, max: 12 }),
      maxPrice: fc.integer({ min: 500, max: 5_000 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("extend" as const),
      who,
      pick: fc.nat(),
      hours: fc.integer({ min: 1, max: 6 }),
      maxPrice: fc.integer({ min: 500, max: 5_000 }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({ kind: fc.constant("advance" as const), minutes: fc.integer({ min: 0, max: 600 }) }),
  },
);

const ZONES = ["hayesvalley", "fishermanswharf", "marina", "richmond"];

function run(ops: Op[], seed: number): void {
  const engine = new SimEngine({
    seed,
    clock: "virtual",
    start: TEST_START + (seed % 97) * 13 * MINUTE_MS,
    settings: {
      market: { matchDelayMs: [10, 300], cancelDelayMs: [10, 300] },
      nodes: { bootDelayMs: [60_000, 600_000] },
    },
  });
  const accounts = [
    engine.createAccount({ token: "a", balanceCents: 5_000_000 }),
    engine.createAccount({ token: "b", balanceCents: 2_000_000 }),
  ];
  const market = engine.market;
  /** The limit each order was placed with (prorate may lower `price` later, never raise it). */
  const placedLimit = new Map<string, number>();
  const hour = (t: number, n: number) => (Math.ceil(t / HOUR_MS) + n) * HOUR_MS;

  const attempt = (fn: () => void) => {
    try {
      fn();
    } catch (error) {
      if (!(error instanceof SimError)) throw error; // a validation refusal is fine; anything else is a bug
      expect(error.status).toBeLessThan(500);
    }
  };

  for (const o of ops) {
    const now = engine.now();
    if (o.kind === "advance") {
      engine.advanceBy(o.minutes * MINUTE_MS);
      continue;
    }
    const me = accounts[o.who]!;
    if (o.kind === "buy") {
      const zone = engine.k.catalog.zones.get(ZONES[o.zone]!)!;
      const start = o.startHours < 0 ? now : hour(now, o.startHours);
      const end = hour(start, o.hours);
      const ask = market.priceBuy(zone, start, end, o.quantity)?.total ?? 1_000_000;
      const input: OrderInput = {
        side: "buy",
        quantity: o.quantity,
        start_at: o.startHours < 0 ? "NOW" : start,
        end_at: end,
        price: Math.floor(ask * o.limitFactor),
        flags: { ioc: o.ioc, post_only: o.postOnly, market: o.market, prorate: o.prorate },
        ...(o.byType ? { instance_type: zone.instance_type } : { cluster: zone.name }),
      };
      attempt(() => {
        const { order } = market.placeOrder(me, input);
        placedLimit.set(order.id, input.price);
      });
    } else if (o.kind === "sell") {
      // Mostly our own contracts and windows inside them; sometimes the other account's contract,
      // or a window reaching past what is held (both must be refused).
      const all = [...market.contracts.values()].filter((c) => (c.accountId === me.id) === o.mine);
      const contract = all[o.pick % Math.max(1, all.length)];
      if (!contract) continue;
      let start = o.fromHours < 0 ? now : hour(now, o.fromHours);
      let end = hour(start, o.hours);
      const held = { from: contract.shape[0]?.t ?? now, to: contract.shape[contract.shape.length - 1]?.t ?? now };
      const first = Math.max(hour(now + MINUTE_MS + 1, 0), hour(held.from, 0));
      if (o.inside && o.fromHours >= 0 && first < held.to) {
        start = first + (o.fromHours % ((held.to - first) / HOUR_MS)) * HOUR_MS;
        end = Math.min(held.to, start + o.hours * HOUR_MS);
      }
      const zone = engine.k.catalog.zones.get(contract.zone)!;
      const bid = market.priceSell(zone, Math.max(start, now), end, o.quantity)?.total ?? 10_000;
      const input: OrderInput = {
        side: "sell",
        contract_id: contract.id,
        quantity: o.quantity,
        start_at: o.fromHours < 0 ? "NOW" : start,
        end_at: end,
        price: Math.floor(bid * o.limitFactor),
        flags: { ioc: o.ioc, market: o.market },
      };
      attempt(() => {
        const { order } = market.placeOrder(me, input);
        expect(contract.accountId).toBe(me.id);
        placedLimit.set(order.id, input.price);
      });
    } else if (o.kind === "cancel") {
      const mine = market.listOrders(me);
      const order = mine[o.pick % Math.max(1, mine.length)];
      if (order) attempt(() => market.cancelOrder(me, order.id));
    } else if (o.kind === "node") {
      attempt(() =>
        engine.nodes.create(me, {
          desired_count: o.count,
          max_price_per_node_hour: o.maxPrice,
          zone: "hayesvalley",
          end_at: hour(now, o.hours) / 1000,
        }),
      );
    } else {
      const mine = engine.nodes.list(me, {});
      const node = mine[o.pick % Math.max(1, mine.length)];
      if (node)
        attempt(() =>
          engine.nodes.extend(me, node.id, { duration_seconds: o.hours * 3600, max_price_per_node_hour: o.maxPrice }),
        );
    }
    for (const a of accounts) expect(a.availableCents).toBeGreaterThanOrEqual(0);
  }
  engine.advanceBy(2 * HOUR_MS);

  const orders = [...market.orders.values()];
  for (const order of orders.filter((x) => x.status === "filled" && !x.flags.market)) {
    if (order.side === "buy") {
      expect(order.executionPrice!).toBeLessThanOrEqual(order.price);
      expect(order.price).toBeLessThanOrEqual(placedLimit.get(order.id)!);
    } else {
      expect(order.executionPrice!).toBeGreaterThanOrEqual(order.price);
    }
  }
  checkContracts(engine, orders);
}

/** Each contract = what was bought − what was sold, never negative, sold only by its owner; supply agrees. */
function checkContracts(engine: SimEngine, orders: OrderRecord[]): void {
  const heldByZoneHour = new Map<string, number>();
  for (const contract of engine.market.contracts.values()) {
    for (const b of contract.shape) expect(b.q).toBeGreaterThanOrEqual(0);
    const buys = orders.filter((o) => o.side === "buy" && o.status === "filled" && o.contractId === contract.id);
    const sells = orders.filter((o) => o.side === "sell" && o.status === "filled" && o.contractId === contract.id);
    for (const s of sells) expect(s.accountId).toBe(contract.accountId);
    if (!contract.isNode) {
      expect(buys).toHaveLength(1);
      let expected: Shape = blockShape(buys[0]!.startAt, buys[0]!.endAt, buys[0]!.quantity);
      // addBlock throws if a sale took the quantity below zero at any instant.
      for (const s of sells) expected = addBlock(expected, s.startAt, s.endAt, -s.quantity);
      expect(contract.shape).toEqual(expected);
    }
    // Supply counts, per hour, the most the contract holds at any moment of that hour.
    const most = new Map<number, number>();
    for (let i = 0; i + 1 < contract.shape.length; i++) {
      const { t, q } = contract.shape[i]!;
      for (let h = Math.floor(t / HOUR_MS); h < Math.ceil(contract.shape[i + 1]!.t / HOUR_MS); h++) {
        most.set(h, Math.max(most.get(h) ?? 0, q));
      }
    }
    for (const [h, q] of most) {
      const key = `${contract.zone}:${h}`;
      heldByZoneHour.set(key, (heldByZoneHour.get(key) ?? 0) + q);
    }
  }
  for (const [key, q] of heldByZoneHour) {
    const [zone, h] = key.split(":");
    expect(engine.k.supply.heldAt(zone!, Number(h)), key).toBe(q);
  }
}

describe("market invariants (fast-check)", () => {
  it("never fills above the limit, never sells time not held, never goes negative", () => {
    fc.assert(
      fc.property(
        fc.array(op, { minLength: 5, maxLength: 80, size: "max" }),
        fc.integer({ min: 1, max: 10_000 }),
        (ops, seed) => run(ops, seed),
      ),
      { numRuns: 150 },
    );
  });
});
