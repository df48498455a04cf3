/** The v1 node fleet in-process: lifecycle from the contract's coverage, extension, release, delete. */
import { describe, expect, it } from "vitest";
import { HOUR_MS, MINUTE_MS } from "./clock";
import { SimEngine } from "./engine";
import { SimError } from "./errors";
import type { SimEvent } from "./events";
import type { CreateNodesInput } from "./nodes";
import { TEST_START } from "./testing";

const BOOT_MS = 5 * MINUTE_MS;

function setup(balanceCents = 10_000_000) {
  const engine = new SimEngine({
    seed: 42,
    clock: "virtual",
    start: TEST_START,
    settings: {
      market: { matchDelayMs: [50, 50] },
      nodes: { nodeStartDelayMs: 60_000, bootDelayMs: [BOOT_MS, BOOT_MS] },
    },
  });
  const me = engine.createAccount({ token: "me", balanceCents });
  const events: SimEvent[] = [];
  engine.subscribe((e) => events.push(e));
  return { engine, me, fleet: engine.nodes, events };
}

const hourAfter = (t: number, n: number) => (Math.ceil(t / HOUR_MS) + n - 1) * HOUR_MS;
const seconds = (ms: number) => ms / 1000;

function reserved(engine: SimEngine, overrides: Partial<CreateNodesInput> = {}): CreateNodesInput {
  return {
    desired_count: 1,
    max_price_per_node_hour: 4_000,
    zone: "hayesvalley",
    end_at: seconds(hourAfter(engine.now(), 3)),
    ...overrides,
  };
}

function thrown(fn: () => unknown): SimError {
  try {
    fn();
  } catch (error) {
    if (error instanceof SimError) return error;
    throw error;
  }
  throw new Error("expected a SimError");
}

describe("reserved nodes", () => {
  it("go pending → running after the start delay, their VM Pending → Running after the boot delay, and terminate at the end", () => {
    const { engine, me, fleet, events } = setup();
    const [node] = fleet.create(me, reserved(engine, { names: ["train-1"] }));
    expect(node!.status).toBe("pending");
    expect(node!.name).toBe("train-1");
    expect(node!.vms).toEqual([]);
    engine.advanceBy(1000); // the purchase
    expect(node!.contractId).toMatch(/^cont_/);
    expect(engine.market.contracts.get(node!.contractId!)!.isNode).toBe(true);
    const vm = node!.vms[0]!;
    expect(vm.status).toBe("Pending");
    engine.advanceBy(60_000);
    expect(node!.status).toBe("running");
    expect(vm.status).toBe("Pending");
    engine.advanceBy(BOOT_MS);
    expect(vm.status).toBe("Running");
    engine.advanceTo(node!.endAt!);
    expect(node!.status).toBe("terminated");
    expect(vm.status).toBe("Destroyed");
    expect(vm.endAt).toBe(node!.endAt);
    const statuses = events
      .filter((e) => e.type === "node.status" || e.type === "vm.status")
      .map((e) => `${e.type}:${e.data.status}`);
    expect(statuses).toEqual([
      "node.status:pending",
      "vm.status:Pending",
      "node.status:running",
      "vm.status:Running",
      "vm.status:Destroyed",
      "node.status:terminated",
    ]);
  });

  it("start later when asked to, and fail when the market is above their max price", () => {
    const { engine, me, fleet } = setup();
    const start = hourAfter(engine.now(), 2);
    const [later] = fleet.create(
      me,
      reserved(engine, { start_at: seconds(start), end_at: seconds(start + 2 * HOUR_MS) }),
    );
    const [cheap] = fleet.create(me, reserved(engine, { max_price_per_node_hour: 100 }));
    engine.advanceBy(1000);
    expect(later!.status).toBe("pending");
    expect(later!.vms).toEqual([]);
    expect(cheap!.status).toBe("failed");
    engine.advanceTo(start + BOOT_MS);
    expect(later!.status).toBe("running");
    expect(later!.vms[0]!.status).toBe("Running");
  });

  it("extend by whole hours: the contract grows, the node runs on, and the price and balance are checked", () => {
    const { engine, me, fleet } = setup();
    const [node] = fleet.create(me, reserved(engine));
    engine.advanceBy(BOOT_MS + MINUTE_MS);
    const end = node!.endAt!;
    const balance = me.balanceCents;
    fleet.extend(me, node!.id, { duration_seconds: 7200, max_price_per_node_hour: 4_000 });
    expect(node!.endAt).toBe(end + 2 * HOUR_MS);
    expect(me.balanceCents).toBeLessThan(balance);
    engine.advanceTo(end + HOUR_MS);
    expect(node!.status).toBe("running");
    expect(node!.vms).toHaveLength(1); // same VM: no gap in coverage
    expect(
      thrown(() => fleet.extend(me, node!.id, { duration_seconds: 1800, max_price_per_node_hour: 4_000 })).status,
    ).toBe(400);
    expect(
      thrown(() => fleet.extend(me, node!.id, { duration_seconds: 5400, max_price_per_node_hour: 4_000 })).status,
    ).toBe(400);
    expect(
      thrown(() => fleet.extend(me, node!.id, { duration_seconds: 3600, max_price_per_node_hour: 10 })),
    ).toMatchObject({
      status: 422,
    });
    engine.advanceTo(node!.endAt!);
    expect(node!.status).toBe("terminated");
    expect(
      thrown(() => fleet.extend(me, node!.id, { duration_seconds: 3600, max_price_per_node_hour: 4_000 })).status,
    ).toBe(400);
  });

  it("answers 402 when the balance cannot cover the max price, and 422 when the zone has no room to extend", () => {
    const poor = setup(1_000);
    expect(thrown(() => poor.fleet.create(poor.me, reserved(poor.engine))).status).toBe(402);
    const { engine, me, fleet } = setup(1_000_000_000);
    const [node] = fleet.create(me, reserved(engine));
    engine.advanceBy(1000);
    // Fill the zone for the hour after the node's end (as other buyers would), then try to extend into it.
    const from = node!.endAt!;
    const zone = engine.k.catalog.zones.get("hayesvalley")!;
    const free = engine.k.supply.availability(zone, from, from + HOUR_MS, engine.now()).free;
    engine.k.supply.hold("hayesvalley", from, from + HOUR_MS, free);
    expect(
      thrown(() => fleet.extend(me, node!.id, { duration_seconds: 3600, max_price_per_node_hour: 100_000 })),
    ).toMatchObject({
      status: 422,
      message: "Extension failed due to capacity",
    });
  });

  it("cannot be deleted while a VM is pending or running, and can once terminated", () => {
    const { engine, me, fleet } = setup();
    const [node] = fleet.create(me, reserved(engine));
    engine.advanceBy(1000);
    expect(thrown(() => fleet.delete(me, node!.id))).toMatchObject({ status: 409, type: "conflict" });
    engine.advanceTo(node!.endAt!);
    fleet.delete(me, node!.id);
    expect(node!.status).toBe("deleted");
    expect(node!.deletedAt).toBe(engine.now());
  });

  it("validate names, times, zones and counts", () => {
    const { engine, me, fleet } = setup();
    const bad = (o: Partial<CreateNodesInput>) => thrown(() => fleet.create(me, reserved(engine, o)));
    expect(bad({ names: ["n_abc"] }).field).toBe("names");
    expect(bad({ names: ["vm_abc"] }).field).toBe("names");
    expect(bad({ names: ["12345"] }).field).toBe("names");
    expect(bad({ names: ["a", "b"] }).field).toBe("names");
    expect(bad({ names: ["x".repeat(257)] }).field).toBe("names");
    expect(bad({ end_at: seconds(hourAfter(engine.now(), 3)) + 60 }).message).toBe("End time must be on the hour");
    expect(bad({ end_at: hourAfter(engine.now(), 3) }).message).toMatch(/not milliseconds/);
    expect(bad({ zone: "atlantis" }).message).toBe("Unknown zone: atlantis");
    expect(bad({ zone: "marina" }).message).toMatch(/does not deliver VMs/);
    expect(bad({ desired_count: 0 }).field).toBe("desired_count");
    expect(bad({ node_type: "reserved", end_at: undefined }).message).toMatch(/end_at is required/);
    expect(bad({ cloud_init_user_data: "not base64!" }).field).toBe("cloud_init_user_data");
    fleet.create(me, reserved(engine, { names: ["only-one"] }));
    expect(bad({ names: ["only-one"] })).toMatchObject({ status: 409, type: "conflict" });
  });
});

describe("auto-reserved nodes", () => {
  it("are kept alive hour by hour by their procurement while the price is under their max, and stop when released", () => {
    const { engine, me, fleet } = setup();
    const [node] = fleet.create(me, { desired_count: 1, max_price_per_node_hour: 5_000, zone: "hayesvalley" });
    expect(node!.nodeType).toBe("autoreserved");
    expect(node!.procurementId).toMatch(/^proc_/);
    engine.advanceBy(BOOT_MS + MINUTE_MS);
    expect(node!.status).toBe("running");
    engine.advanceBy(5 * HOUR_MS);
    expect(node!.status).toBe("running");
    expect(node!.vms).toHaveLength(1);
    fleet.release(me, node!.id);
    expect(node!.status).toBe("released");
    expect(node!.vms[0]!.status).toBe("Destroyed");
    expect(thrown(() => fleet.release(me, node!.id)).status).toBe(400);
  });

  it("wait for capacity when the market is above their max price", () => {
    const { engine, me, fleet } = setup();
    const [node] = fleet.create(me, { desired_count: 1, max_price_per_node_hour: 10, zone: "hayesvalley" });
    engine.advanceBy(3 * HOUR_MS);
    expect(node!.status).toBe("awaitingcapacity");
    expect(node!.vms).toEqual([]);
  });

  it("need a zone unless any_zone, and cannot be extended", () => {
    const { engine, me, fleet } = setup();
    expect(thrown(() => fleet.create(me, { desired_count: 1, max_price_per_node_hour: 5_000 })).field).toBe("zone");
    const [node] = fleet.create(me, { desired_count: 1, max_price_per_node_hour: 5_000, any_zone: true });
    engine.advanceBy(1000);
    expect(node!.zone).not.toBeNull();
    expect(
      thrown(() => fleet.extend(me, node!.id, { duration_seconds: 3600, max_price_per_node_hour: 5_000 })).status,
    ).toBe(400);
  });
});

describe("nodes and the market", () => {
  it("terminate a node whose contract time is sold back", () => {
    const { engine, me, fleet } = setup();
    const [node] = fleet.create(me, reserved(engine, { end_at: seconds(hourAfter(engine.now(), 4)) }));
    engine.advanceBy(BOOT_MS + MINUTE_MS);
    const sellFrom = hourAfter(engine.now(), 1);
    const { order } = engine.market.placeOrder(me, {
      side: "sell",
      contract_id: node!.contractId!,
      quantity: 1,
      start_at: sellFrom,
      end_at: node!.endAt!,
      price: 0,
    });
    engine.advanceBy(1000);
    expect(order.status).toBe("filled");
    expect(node!.endAt).toBe(sellFrom);
    engine.advanceTo(sellFrom);
    expect(node!.status).toBe("terminated");
  });

  it("take capacity from the same supply as v0 orders", () => {
    const { engine, me, fleet } = setup(1_000_000_000);
    const zone = engine.k.catalog.zones.get("fishermanswharf")!;
    const end = hourAfter(engine.now(), 3);
    const free = engine.k.supply.availability(zone, engine.market.nowStart(), end, engine.now()).free;
    const nodes = fleet.create(
      me,
      reserved(engine, { zone: "fishermanswharf", desired_count: free, max_price_per_node_hour: 100_000 }),
    );
    engine.advanceBy(1000);
    expect(nodes.every((n) => n.contractId !== null)).toBe(true);
    const { order } = engine.market.placeOrder(me, {
      side: "buy",
      cluster: "fishermanswharf",
      quantity: 1,
      start_at: "NOW",
      end_at: end,
      price: 1_000_000,
    });
    engine.advanceBy(1000);
    expect(order.status).toBe("cancelled");
  });
});

describe("ids", () => {
  const firstNodeId = (idSeed?: string) => {
    const engine = new SimEngine({ seed: 42, clock: "virtual", start: TEST_START, ...(idSeed ? { idSeed } : {}) });
    const me = engine.createAccount({ token: "me", balanceCents: 10_000_000 });
    return engine.nodes.create(me, reserved(engine))[0]!.id;
  };

  it("follow the seed, unless an id seed is given: a restarted market need not hand out the last run's ids", () => {
    expect(firstNodeId()).toBe(firstNodeId());
    expect(firstNodeId("run-a")).toBe(firstNodeId("run-a"));
    expect(new Set([firstNodeId(), firstNodeId("run-a"), firstNodeId("run-b")]).size).toBe(3);
  });
});
