/**
 * The SF Compute client against the simulator over HTTP: every endpoint's happy path, the
 * documented errors, and the retry rules (429 after the advertised delay, 5xx, a lost answer after
 * an order was committed, a lost node-creation answer).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestSimulator, type TestSimulator } from "../../tools/sfcompute-sim/testing";
import { type AttemptInfo, SfComputeClient, type SfComputeClientOptions } from "./client";
import { isSfComputeError, type SfComputeError } from "./errors";
import { Contract as ContractSchema, type ShapedContract } from "./schemas";
import {
  alignBlock,
  blockCents,
  blockPriceFromNodeHourRate,
  centsPerNodeHour,
  epochSeconds,
  gpuHourRateOfBlock,
  HOUR_MS,
  MINUTE_MS,
} from "./units";

let sim: TestSimulator;
let accountSeq = 0;

beforeAll(async () => {
  sim = await startTestSimulator({ bootSeconds: 120 });
});
afterAll(async () => {
  await sim?.close();
});

/** A fresh account (so counts are per test) and a client for it that records its attempts. */
function fresh(balanceCents = 50_000_000, options: Partial<SfComputeClientOptions> = {}) {
  const token = `client-test-${++accountSeq}`;
  const account = sim.sim.engine.createAccount({ token, balanceCents });
  const attempts: AttemptInfo[] = [];
  const client = new SfComputeClient({
    baseUrl: sim.url,
    token,
    timeoutMs: 2_000,
    retry: { baseDelayMs: 20, maxDelayMs: 200 },
    onAttempt: (a) => attempts.push(a),
    ...options,
  });
  return { client, account, attempts, token };
}

async function failure(promise: Promise<unknown>): Promise<SfComputeError> {
  try {
    await promise;
  } catch (error) {
    if (isSfComputeError(error)) return error;
    throw error;
  }
  throw new Error("expected the call to fail");
}

const block = (hours: number) => alignBlock("NOW", hours * HOUR_MS, sim.now());
const endIn = (hours: number) => epochSeconds((Math.ceil(sim.now() / HOUR_MS) + hours) * 3600);

describe("v0 market: happy paths", () => {
  it("quotes, buys at the quote, follows the order to filled, and finds the contract", async () => {
    const { client } = fresh();
    const quote = await client.quote({ side: "buy", quantity: 2, instance_type: "h100v", duration: 4 * 3600 });
    expect(quote.quote).not.toBeNull();
    const q = quote.quote!;
    expect(q.start_at).toBe("NOW");
    const rate = gpuHourRateOfBlock(q.price, 2, Date.parse(q.end_at) - sim.now());
    expect(rate).toBeGreaterThan(100);
    expect(rate).toBeLessThan(450);

    const created = await client.placeBuyOrder({
      cluster: q.zone!,
      quantity: 2,
      start_at: "NOW",
      end_at: q.end_at,
      price: q.price,
    });
    expect(created.status).toBe("pending");
    expect(created.idempotency_key).toMatch(/^[0-9a-f-]{36}$/); // the client made one
    sim.advance(1000);
    const order = await client.waitForOrder(created.id);
    expect(order).toMatchObject({
      status: "filled",
      executed: true,
      quantity: 2,
      execution_price: q.price,
      cluster: q.zone,
    });

    const contracts = await client.listContracts({ instance_type: "h100v" });
    expect(contracts).toHaveLength(1);
    const contract = contracts[0] as ShapedContract;
    expect(contract.shape.quantities).toEqual([2, 0]);
    expect(contract.shape.intervals[1]).toBe(order.end_at);
    expect(await client.getContract(contract.id)).toEqual(contract);
    expect((await client.listOrders({ only_filled: true })).data.map((o) => o.id)).toEqual([order.id]);
  });

  it("rests a standing order, shows its hold in the balance, and cancels it asynchronously", async () => {
    const { client } = fresh(1_000_000);
    const { start_at, end_at } = block(3);
    const created = await client.placeBuyOrder({
      instance_type: "h100v",
      quantity: 1,
      start_at,
      end_at,
      price: blockCents(400),
      flags: { ioc: false },
    });
    sim.advance(1000);
    expect((await client.getOrder(created.id)).status).toBe("open");
    expect((await client.legacyBalance()).reserved.amount).toBe(400);
    expect((await client.balance()).available_balance_cents).toBe(1_000_000 - 400);
    expect((await client.listOrders({ only_open: true })).data).toHaveLength(1);

    await client.cancelOrder(created.id);
    sim.advance(1000);
    const order = await client.getOrder(created.id);
    expect(order.status).toBe("cancelled");
    expect(order.cancelled_at).not.toBeNull();
    expect((await client.balance()).available_balance_cents).toBe(1_000_000);
  });

  it("sells held time back: the contract's shape loses the window and the balance gains the proceeds", async () => {
    const { client } = fresh();
    const start = new Date((Math.ceil(sim.now() / HOUR_MS) + 1) * HOUR_MS);
    const end = new Date(start.getTime() + 4 * HOUR_MS);
    const buy = await client.placeBuyOrder({
      cluster: "hayesvalley",
      quantity: 2,
      start_at: start,
      end_at: end,
      price: blockCents(10_000_000),
    });
    sim.advance(1000);
    expect((await client.getOrder(buy.id)).status).toBe("filled");
    const [contract] = (await client.listContracts()) as ShapedContract[];
    const before = (await client.balance()).current_balance_cents;
    const sellQuote = await client.quote({
      side: "sell",
      quantity: 1,
      contract_id: contract!.id,
      min_start_date: start,
      max_start_date: start,
      duration: 3600,
    });
    expect(sellQuote.quote?.contract_id).toBe(contract!.id);
    const sell = await client.placeSellOrder({
      contract_id: contract!.id,
      quantity: 1,
      start_at: start,
      end_at: new Date(start.getTime() + HOUR_MS),
      price: blockCents(0),
    });
    sim.advance(1000);
    const sold = await client.getOrder(sell.id);
    expect(sold.status).toBe("filled");
    expect((await client.balance()).current_balance_cents).toBeGreaterThan(before);
    const after = (await client.getContract(contract!.id)) as ShapedContract;
    expect(after.shape.quantities).toEqual([1, 2, 0]);
  });

  it("lists zones and gets one", async () => {
    const { client } = fresh();
    const zones = await client.listZones();
    expect(zones.map((z) => z.name)).toContain("hayesvalley");
    expect((await client.getZone("richmond")).hardware_type).toBe("H200");
  });
});

describe("v1 nodes: happy paths", () => {
  it("creates reserved nodes, sees them boot, reads SSH details, extends one, and deletes it after its end", async () => {
    const { client } = fresh();
    const nodes = await client.createNodes({
      desired_count: 2,
      max_price_per_node_hour: centsPerNodeHour(4_000),
      zone: "hayesvalley",
      end_at: endIn(2),
    });
    expect(nodes.map((n) => n.name)).toEqual([
      expect.stringMatching(/^scalar-[0-9a-f]{8}-1$/),
      expect.stringMatching(/-2$/),
    ]);
    expect(nodes.every((n) => n.status === "pending")).toBe(true);
    sim.advance(3 * MINUTE_MS);
    const running = await client.getNode(nodes[0]!.id);
    expect(running.status).toBe("running");
    expect(running.current_vm?.status).toBe("Running");
    const ssh = await client.vmSsh(running.current_vm!.id);
    expect(ssh.ssh_port).toBe(22);

    const extended = await client.extendNode(running.id, {
      duration_seconds: 7200,
      max_price_per_node_hour: centsPerNodeHour(4_000),
    });
    expect(extended.end_at).toBe(running.end_at! + 7200);
    expect((await client.listNodes({ name: nodes.map((n) => n.name) })).map((n) => n.id)).toEqual(
      nodes.map((n) => n.id),
    );
    expect((await client.listNodes({ type: "reserved" })).length).toBe(2);

    sim.advance(5 * HOUR_MS);
    expect((await client.getNode(running.id)).status).toBe("terminated");
    await client.deleteNode(running.id);
    expect((await client.getNode(running.id)).status).toBe("deleted");
  });

  it("releases an auto-reserved node", async () => {
    const { client } = fresh();
    const [node] = await client.createNodes({
      desired_count: 1,
      max_price_per_node_hour: centsPerNodeHour(5_000),
      zone: "hayesvalley",
      names: ["auto-1"],
    });
    sim.advance(3 * MINUTE_MS);
    expect((await client.releaseNode("auto-1")).status).toBe("released");
    expect(node!.node_type).toBe("autoreserved");
  });

  it("lists nodes by ids, names and type together: a node matches each filter given", async () => {
    const { client } = fresh();
    const auto = await client.createNodes({
      desired_count: 1,
      max_price_per_node_hour: centsPerNodeHour(5_000),
      zone: "hayesvalley",
      names: ["both-auto"],
    });
    const reserved = await client.createNodes({
      desired_count: 1,
      max_price_per_node_hour: centsPerNodeHour(5_000),
      zone: "hayesvalley",
      end_at: endIn(2),
      names: ["both-reserved"],
    });
    const names = ["both-auto", "both-reserved"];
    expect((await client.listNodes({ name: names, type: "reserved" })).map((n) => n.name)).toEqual(["both-reserved"]);
    expect(
      (await client.listNodes({ id: [auto[0]!.id, reserved[0]!.id], name: ["both-auto"] })).map((n) => n.name),
    ).toEqual(["both-auto"]);
  });
});

describe("documented errors", () => {
  const orderErrors: [string, (now: number) => Record<string, unknown>, string, string | null][] = [
    [
      "a start off the hour",
      (now) => ({ start_at: new Date(Math.ceil(now / HOUR_MS) * HOUR_MS + 30 * MINUTE_MS) }),
      "Start time must be 'NOW', within +/- 1 minute of now, or on a future hour",
      "start_at",
    ],
    [
      "a start in the past",
      (now) => ({ start_at: new Date(now - 2 * HOUR_MS) }),
      "Start time must be 'NOW', within +/- 1 minute of now, or on a future hour",
      "start_at",
    ],
    [
      "an end off the hour",
      (now) => ({ end_at: new Date(Math.ceil(now / HOUR_MS) * HOUR_MS + 90 * MINUTE_MS) }),
      "End time must be on the hour",
      "end_at",
    ],
    [
      "an end before the start",
      (now) => ({
        start_at: new Date(Math.ceil(now / HOUR_MS + 3) * HOUR_MS),
        end_at: new Date(Math.ceil(now / HOUR_MS + 2) * HOUR_MS),
      }),
      "End time must be after start time",
      "end_at",
    ],
    [
      "less than an hour",
      (now) => ({ end_at: new Date(Math.ceil((now + MINUTE_MS) / HOUR_MS) * HOUR_MS) }),
      "Duration must be at least 1 hour",
      "end_at",
    ],
    [
      "more than three years",
      (now) => ({ end_at: new Date(Math.ceil(now / HOUR_MS) * HOUR_MS + 4 * 365 * 24 * HOUR_MS) }),
      "Duration must be at most 3 years",
      "end_at",
    ],
    ["quantity 0", () => ({ quantity: 0 }), "quantity must be an integer between 1 and 1024 (nodes)", "quantity"],
    ["quantity 1025", () => ({ quantity: 1025 }), "quantity must be an integer between 1 and 1024 (nodes)", "quantity"],
    [
      "a fractional quantity",
      () => ({ quantity: 1.5 }),
      "quantity must be an integer between 1 and 1024 (nodes)",
      "quantity",
    ],
    [
      "a negative price",
      () => ({ price: -1 }),
      "price must be a non-negative integer: cents for the whole block",
      "price",
    ],
    [
      "a fractional price",
      () => ({ price: 10.5 }),
      "price must be a non-negative integer: cents for the whole block",
      "price",
    ],
    ["an unknown instance type", () => ({ instance_type: "b200z" }), "Unknown instance type: b200z", "instance_type"],
    ["an unknown cluster", () => ({ cluster: "atlantis" }), "Cluster not found: atlantis", "cluster"],
    [
      "an unknown colocation target",
      () => ({ colocate_with: ["cont_nothere"] }),
      "Contract to colocate with not found: cont_nothere",
      "colocate_with",
    ],
    ["a price above the balance", () => ({ price: 60_000_000 }), "Insufficient balance", "price"],
  ];

  it.each(orderErrors)(
    "refuses a buy order with %s (400 invalid_request_error)",
    async (_what, change, message, field) => {
      const { client, attempts } = fresh();
      const { start_at, end_at } = block(2);
      const error = await failure(
        client.placeBuyOrder({
          instance_type: "h100v",
          quantity: 1,
          start_at,
          end_at,
          price: blockCents(1_000_000),
          ...(change(sim.now()) as object),
        }),
      );
      expect(error).toMatchObject({ status: 400, code: "invalid_request_error", message });
      expect(error.extra.field ?? null).toBe(field);
      expect(attempts).toHaveLength(1); // a 400 is not retried
    },
  );

  it("refuses sells: without a contract, beyond what the contract holds, and on someone else's contract", async () => {
    const { client } = fresh();
    const { start_at, end_at } = block(2);
    expect(
      await failure(client.placeSellOrder({ contract_id: "", quantity: 1, start_at, end_at, price: blockCents(0) })),
    ).toMatchObject({ status: 400, message: "contract_id is required for sell orders" });
    const buy = await client.placeBuyOrder({
      cluster: "hayesvalley",
      quantity: 1,
      start_at,
      end_at,
      price: blockCents(1_000_000),
    });
    sim.advance(1000);
    await client.waitForOrder(buy.id);
    const [contract] = await client.listContracts();
    const over = await failure(
      client.placeSellOrder({ contract_id: contract!.id, quantity: 2, start_at, end_at, price: blockCents(0) }),
    );
    expect(over).toMatchObject({
      status: 400,
      code: "invalid_request_error",
      reason: "order.insufficient_contract_quantity",
    });
    const other = fresh().client;
    expect(
      await failure(
        other.placeSellOrder({ contract_id: contract!.id, quantity: 1, start_at, end_at, price: blockCents(0) }),
      ),
    ).toMatchObject({
      status: 404,
      reason: "order.contract_not_found",
    });
  });

  it("answers 404 for an unknown order, 403 for another account's, and 400 to a second cancel", async () => {
    const a = fresh().client;
    const b = fresh().client;
    expect(await failure(a.getOrder("ordr_unknown"))).toMatchObject({
      status: 404,
      code: "not_found",
      reason: "order.not_found",
    });
    const { start_at, end_at } = block(2);
    const created = await a.placeBuyOrder({
      instance_type: "h100v",
      quantity: 1,
      start_at,
      end_at,
      price: blockCents(1),
      flags: { ioc: false },
    });
    expect(await failure(b.getOrder(created.id))).toMatchObject({ status: 403, code: "forbidden" });
    await a.cancelOrder(created.id);
    expect(await failure(a.cancelOrder(created.id))).toMatchObject({
      status: 400,
      message: "Order already cancelled",
      reason: "order.already_cancelled",
    });
  });

  it("enforces the quote rules", async () => {
    const { client } = fresh();
    const bad = (p: Partial<Parameters<SfComputeClient["quote"]>[0]>) =>
      failure(client.quote({ side: "buy", quantity: 1, instance_type: "h100v", duration: 3600, ...p }));
    expect(await bad({ quantity: 0 })).toMatchObject({ status: 400, extra: { field: "quantity" } });
    expect(await bad({ quantity: 2000 })).toMatchObject({ status: 400, extra: { field: "quantity" } });
    expect(await bad({ duration: 600 })).toMatchObject({
      status: 400,
      message: "Duration must be at least 3600 seconds",
    });
    expect(await bad({ min_duration: 3600, max_duration: 7200 })).toMatchObject({
      status: 400,
      extra: { field: "duration" },
    });
    expect(await bad({ contract_id: "cont_x" })).toMatchObject({ status: 400, extra: { field: "contract_id" } });
    expect(
      await bad({ min_start_date: new Date(sim.now() + 5 * HOUR_MS), max_start_date: new Date(sim.now() + HOUR_MS) }),
    ).toMatchObject({ status: 400, reason: "quote.invalid_date_range" });
    expect(await failure(client.quote({ side: "sell", quantity: 1, duration: 3600 }))).toMatchObject({
      status: 400,
      extra: { field: "contract_id" },
    });
  });

  it("answers 400 when the contracts interval filter is given by half", async () => {
    const { client } = fresh();
    expect(await failure(client.listContracts({ active_within_interval_start: new Date(sim.now()) }))).toMatchObject({
      status: 400,
      code: "invalid_request_error",
    });
  });

  it("refuses node creation and extension as documented: 400, 402, 409, 422", async () => {
    const { client } = fresh();
    const base = {
      desired_count: 1,
      max_price_per_node_hour: centsPerNodeHour(4_000),
      zone: "hayesvalley",
      end_at: endIn(2),
    };
    expect(await failure(client.createNodes({ ...base, end_at: epochSeconds(endIn(2) + 60) }))).toMatchObject({
      status: 400,
      message: "End time must be on the hour",
    });
    expect(await failure(client.createNodes({ ...base, zone: "atlantis" }))).toMatchObject({
      status: 400,
      message: "Unknown zone: atlantis",
    });
    expect(await failure(client.createNodes({ ...base, names: ["n_reserved"] }))).toMatchObject({
      status: 400,
      extra: { field: "names" },
    });
    expect(await failure(fresh(100).client.createNodes(base))).toMatchObject({ status: 402, code: "payment_required" });
    const [node] = await client.createNodes({ ...base, names: ["dup"] });
    expect(await failure(client.createNodes({ ...base, names: ["dup"] }))).toMatchObject({
      status: 409,
      code: "conflict",
    });
    sim.advance(1000);
    expect(
      await failure(
        client.extendNode(node!.id, { duration_seconds: 1800, max_price_per_node_hour: centsPerNodeHour(4_000) }),
      ),
    ).toMatchObject({
      status: 400,
    });
    expect(
      await failure(
        client.extendNode(node!.id, { duration_seconds: 3600, max_price_per_node_hour: centsPerNodeHour(1) }),
      ),
    ).toMatchObject({
      status: 422,
      code: "unprocessable_entity",
    });
    sim.advance(MINUTE_MS); // past its start (NOW is the next minute): its VM is now pending
    expect(await failure(client.deleteNode(node!.id))).toMatchObject({ status: 409 });
  });

  it("reads the flat and legacy error bodies into the same error", async () => {
    const { client } = fresh();
    try {
      sim.sim.engine.configure({ errorStyle: "flat" });
      expect(await failure(client.getOrder("ordr_nope"))).toMatchObject({
        status: 404,
        code: "not_found",
        message: "Order not found: ordr_nope",
      });
      sim.sim.engine.configure({ errorStyle: "legacy" });
      expect(await failure(client.getOrder("ordr_nope"))).toMatchObject({
        status: 404,
        code: "order.not_found",
        message: "Order not found: ordr_nope",
      });
    } finally {
      sim.sim.engine.configure({ errorStyle: "current" });
    }
  });

  it("reads VM statuses in either case (some docs examples write them in lower case)", async () => {
    const { client, token } = fresh();
    const [node] = await client.createNodes({
      desired_count: 1,
      max_price_per_node_hour: centsPerNodeHour(4_000),
      zone: "hayesvalley",
      end_at: endIn(2),
    });
    sim.advance(3 * MINUTE_MS);
    try {
      sim.sim.engine.configure({ nodes: { vmStatusCase: "lower" } });
      const raw = (await (
        await fetch(`${sim.url}/v1/nodes/${node!.id}`, {
          headers: { Authorization: `Bearer ${token}` },
        })
      ).json()) as {
        current_vm: { status: string };
      };
      expect(raw.current_vm.status).toBe("running");
      expect((await client.getNode(node!.id)).current_vm?.status).toBe("Running");
    } finally {
      sim.sim.engine.configure({ nodes: { vmStatusCase: "title" } });
    }
  });

  it("answers 401 for a bad token, without retrying", async () => {
    const attempts: AttemptInfo[] = [];
    const client = new SfComputeClient({ baseUrl: sim.url, token: "wrong", onAttempt: (a) => attempts.push(a) });
    expect(await failure(client.balance())).toMatchObject({ status: 401, code: "authentication_error" });
    expect(attempts).toHaveLength(1);
  });
});

describe("contract forms", () => {
  it("keeps the shape of a pending contract in the full form, and reads the bare pending form", () => {
    const full = {
      object: "contract",
      id: "cont_x",
      status: "pending",
      created_at: "2026-03-02T16:00:00Z",
      instance_type: "h100v",
      shape: { intervals: ["2026-03-02T17:00:00Z", "2026-03-02T19:00:00Z"], quantities: [1, 0] },
      state: "Upcoming",
      is_node: true,
      zone: "hayesvalley",
    };
    expect(ContractSchema.parse(full)).toMatchObject({ status: "pending", shape: full.shape, is_node: true });
    expect(ContractSchema.parse({ object: "contract", id: "cont_y", status: "pending" })).toEqual({
      object: "contract",
      id: "cont_y",
      status: "pending",
    });
  });
});

describe("retries", () => {
  /**
   * The limiter's windows are aligned to the wall clock, so real time would make these tests depend on
   * where a window boundary falls. One fake wall clock drives the limiter, the client's `now` and its
   * sleeps: a sleep moves time on instead of waiting.
   */
  function fakeWall(windowMs: number) {
    const clock = { now: Math.ceil(Date.now() / windowMs) * windowMs + 1_000, sleeps: [] as number[] };
    sim.sim.rateLimiter.wallClock = () => clock.now;
    const options: Partial<SfComputeClientOptions> = {
      now: () => clock.now,
      sleep: async (ms) => {
        clock.sleeps.push(ms);
        clock.now += ms;
      },
    };
    return { clock, options };
  }

  it("retries a 429 after the delay the RateLimit headers advertise", async () => {
    const { clock, options } = fakeWall(60_000);
    const { client, attempts, token } = fresh(50_000_000, options);
    sim.sim.rateLimiter.config = { limit: 2, windowMs: 60_000, paths: ["/v0/quote"] };
    try {
      const seen = () => sim.sim.requests.filter((r) => r.path === "/v0/quote");
      const before = seen().length;
      for (let i = 0; i < 3; i++)
        await client.quote({ side: "buy", quantity: 1, instance_type: "h100v", duration: 3600 });
      const log = seen().slice(before);
      expect(log.map((r) => r.status)).toEqual([200, 200, 429, 200]);
      const limited = attempts.find((a) => a.status === 429)!;
      expect(limited.attempt).toBe(1);
      // RateLimit-Reset is a Unix timestamp in whole seconds: 59 s to the window's end, waited in full.
      expect(limited.advertisedDelayMs).toBe(59_000);
      expect(limited.retryInMs).toBeGreaterThanOrEqual(limited.advertisedDelayMs!);
      expect(clock.sleeps).toEqual([limited.retryInMs]);
      expect(attempts.filter((a) => a.path === "/v0/quote").map((a) => a.status)).toEqual([200, 200, 429, 200]);
      expect(token).toBeTruthy();
    } finally {
      sim.sim.rateLimiter.config = null;
      sim.sim.rateLimiter.wallClock = Date.now;
    }
  });

  it("honours Retry-After when the server sends it", async () => {
    const { clock, options } = fakeWall(10_000);
    const { client, attempts } = fresh(50_000_000, options);
    sim.sim.rateLimiter.config = {
      limit: 1,
      windowMs: 10_000,
      paths: ["/v1/balances"],
      retryAfter: true,
      resetFormat: "delta",
    };
    try {
      await client.balance();
      await client.balance();
      const limited = attempts.find((a) => a.status === 429)!;
      expect(limited.advertisedDelayMs).toBe(9_000); // Retry-After: 9 (seconds to the window's end)
      expect(limited.retryInMs).toBeGreaterThanOrEqual(9_000);
      expect(clock.sleeps).toEqual([limited.retryInMs]);
    } finally {
      sim.sim.rateLimiter.config = null;
      sim.sim.rateLimiter.wallClock = Date.now;
    }
  });

  it("retries 5xx answers with backoff, and gives up after the last attempt", async () => {
    const { client, attempts } = fresh();
    sim.sim.faults.add({ action: "error", status: 503, path: "/v1/balances", times: 2 });
    expect((await client.balance()).object).toBe("balances");
    expect(attempts.map((a) => a.status)).toEqual([503, 503, 200]);

    sim.sim.faults.add({ action: "error", status: 500, path: "/v0/zones", times: 10 });
    const error = await failure(client.listZones());
    expect(error).toMatchObject({ status: 500, attempts: 4 });
    sim.sim.faults.clear();
  });

  it("retries a 503 on a rate-limited path with its own backoff, not until the quota window's reset", async () => {
    // SF Compute sends the window's RateLimit-* headers on every answer of a limited path.
    let failures = 0;
    const { client, attempts } = fresh(50_000_000, {
      fetch: async (request) => {
        if (new URL(request.url).pathname !== "/v0/quote" || failures++ > 0) return fetch(request);
        const reset = String(Math.ceil(Date.now() / 1000) + 600);
        return new Response(JSON.stringify({ error: { type: "api_error", message: "unavailable" } }), {
          status: 503,
          headers: { "RateLimit-Limit": "60", "RateLimit-Remaining": "59", "RateLimit-Reset": reset },
        });
      },
    });
    const quote = await client.quote({ side: "buy", quantity: 1, instance_type: "h100v", duration: 3600 });
    expect(quote.quote).not.toBeNull();
    expect(attempts.map((a) => a.status)).toEqual([503, 200]);
    expect(attempts[0]!.advertisedDelayMs).toBeUndefined();
    expect(attempts[0]!.retryInMs).toBeLessThanOrEqual(20);
  });

  it("after a timeout on an order the server committed, the retry with the same key returns the same order", async () => {
    const { client, attempts } = fresh(50_000_000, { timeoutMs: 400 });
    sim.sim.faults.add({ action: "lose_response", lose: "hang", method: "POST", path: "/v0/orders" });
    const { start_at, end_at } = block(2);
    const created = await client.placeBuyOrder(
      { instance_type: "h100v", quantity: 1, start_at, end_at, price: blockCents(1_000_000) },
      { idempotencyKey: "scalar-order-1" },
    );
    expect(attempts.map((a) => a.status)).toEqual([0, 200]);
    expect(attempts[0]!.error).toMatch(/^timeout/);
    sim.advance(1000);
    const orders = (await client.listOrders()).data;
    expect(orders.map((o) => o.id)).toEqual([created.id]);
    expect(created.idempotency_key).toBe("scalar-order-1");
  });

  it("after a reset connection on an order the server committed, the retry returns the same order", async () => {
    const { client, attempts } = fresh();
    sim.sim.faults.add({ action: "lose_response", method: "POST", path: "/v0/orders" });
    const { start_at, end_at } = block(2);
    const created = await client.placeBuyOrder({
      instance_type: "h100v",
      quantity: 1,
      start_at,
      end_at,
      price: blockCents(1_000_000),
    });
    expect(attempts.map((a) => a.status)).toEqual([0, 200]);
    expect(attempts[0]!.error).toMatch(/^network_error/);
    expect((await client.listOrders()).data.map((o) => o.id)).toEqual([created.id]);
  });

  it("does not send a node creation again after a lost answer: it fails, and the nodes are found by name", async () => {
    const { client, attempts } = fresh(50_000_000, { timeoutMs: 400 });
    sim.sim.faults.add({ action: "lose_response", lose: "hang", method: "POST", path: "/v1/nodes" });
    const names = [`lost-${accountSeq}-1`, `lost-${accountSeq}-2`];
    const error = await failure(
      client.createNodes({
        desired_count: 2,
        names,
        max_price_per_node_hour: centsPerNodeHour(4_000),
        zone: "hayesvalley",
        end_at: endIn(2),
      }),
    );
    // The request may still be under way at SF Compute, where no lookup sees it yet: the caller
    // follows it up later by the names (the capacity manager waits minutes before sending again).
    expect(error).toMatchObject({ status: 0, code: "timeout", attempts: 1 });
    expect(error.transient).toBe(true);
    expect(attempts.filter((a) => a.path === "/v1/nodes" && a.method === "POST").map((a) => a.status)).toEqual([0]);
    expect((await client.listNodes({ name: names })).map((n) => n.name).sort()).toEqual(names);
  });

  it("sends a node creation again after a 429 or 408, which did nothing, and creates the nodes once", async () => {
    const { client, attempts } = fresh();
    sim.sim.faults.add({ action: "error", status: 429, method: "POST", path: "/v1/nodes" });
    sim.sim.faults.add({ action: "error", status: 408, method: "POST", path: "/v1/nodes", skip: 1 });
    const nodes = await client.createNodes({
      desired_count: 1,
      max_price_per_node_hour: centsPerNodeHour(4_000),
      zone: "hayesvalley",
      end_at: endIn(2),
    });
    expect(nodes).toHaveLength(1);
    expect(await client.listNodes()).toHaveLength(1);
    expect(attempts.filter((a) => a.path === "/v1/nodes" && a.method === "POST").map((a) => a.status)).toEqual([
      429, 408, 200,
    ]);
  });

  it("does not send a node creation again after a 5xx or a request that got no answer", async () => {
    const { client } = fresh(50_000_000, { timeoutMs: 300 });
    for (const fault of [
      { action: "error", status: 503 },
      { action: "timeout", status: undefined },
    ] as const) {
      sim.sim.faults.add({ ...fault, method: "POST", path: "/v1/nodes" });
      const before = sim.sim.requests.filter((r) => r.path === "/v1/nodes" && r.method === "POST").length;
      const error = await failure(
        client.createNodes({
          desired_count: 1,
          max_price_per_node_hour: centsPerNodeHour(4_000),
          zone: "hayesvalley",
          end_at: endIn(2),
        }),
      );
      expect(error.transient).toBe(true);
      expect(sim.sim.requests.filter((r) => r.path === "/v1/nodes" && r.method === "POST").length).toBe(before + 1);
    }
    expect(await client.listNodes()).toHaveLength(0);
  });

  it("does not send an extension again after a lost answer; the node's end moved once", async () => {
    const { client, attempts } = fresh(50_000_000, { timeoutMs: 400 });
    const [node] = await client.createNodes({
      desired_count: 1,
      max_price_per_node_hour: centsPerNodeHour(4_000),
      zone: "hayesvalley",
      end_at: endIn(2),
    });
    sim.advance(1000);
    const before = (await client.getNode(node!.id)).end_at!;
    sim.sim.faults.add({ action: "lose_response", method: "PATCH", path: `/v1/nodes/${node!.id}/extend` });
    const error = await failure(
      client.extendNode(node!.id, { duration_seconds: 3600, max_price_per_node_hour: centsPerNodeHour(4_000) }),
    );
    expect(error.transient).toBe(true);
    expect(attempts.filter((a) => a.method === "PATCH").map((a) => a.status)).toEqual([0]);
    expect((await client.getNode(node!.id)).end_at).toBe(before + 3600);

    // A 429 did nothing: sent again, extended once more.
    sim.sim.faults.add({ action: "error", status: 429, method: "PATCH", path: `/v1/nodes/${node!.id}/extend` });
    const extended = await client.extendNode(node!.id, {
      duration_seconds: 3600,
      max_price_per_node_hour: centsPerNodeHour(4_000),
    });
    expect(extended.end_at).toBe(before + 7200);
  });

  it("runs in-process against the simulator's fetch handler, with no sockets", async () => {
    const token = `in-process-${++accountSeq}`;
    sim.sim.engine.createAccount({ token, balanceCents: 1_000_000 });
    const attempts: AttemptInfo[] = [];
    const client = new SfComputeClient({
      baseUrl: "http://sim.invalid",
      token,
      fetch: sim.sim.fetch,
      timeoutMs: 200,
      retry: { baseDelayMs: 10 },
      onAttempt: (a) => attempts.push(a),
    });
    const q = await client.quote({ side: "buy", quantity: 1, instance_type: "h100v", duration: 3600 });
    expect(q.quote?.price).toBeGreaterThan(blockPriceFromNodeHourRate(500, 1, HOUR_MS));
    // A lost answer in-process surfaces as the caller's own timeout, and the key still saves the day.
    sim.sim.faults.add({ action: "lose_response", lose: "hang", method: "POST", path: "/v0/orders" });
    const { start_at, end_at } = block(2);
    const created = await client.placeBuyOrder({
      instance_type: "h100v",
      quantity: 1,
      start_at,
      end_at,
      price: blockCents(100_000),
    });
    expect(attempts.filter((a) => a.path === "/v0/orders").map((a) => [a.status, a.error?.split(":")[0]])).toEqual([
      [0, "timeout"],
      [200, undefined],
    ]);
    expect((await client.listOrders()).data.map((o) => o.id)).toEqual([created.id]);
  });
});
