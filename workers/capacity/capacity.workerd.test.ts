/**
 * The capacity manager end to end, inside workerd: the real RegionScheduler, Postgres, the agent
 * routes, and the SF Compute simulator in the same isolate on a virtual clock. Demand appears → one
 * buy, even when the simulator drops an answer → the nodes boot and their agents register with the
 * tokens from their cloud-init → the queue drains → idle nodes are drained and lapse at their end,
 * or are sold back when they have hours left.
 */
import { env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { and, desc, eq, like } from "drizzle-orm";
import { afterAll, describe, expect, it } from "vitest";
import { HOUR_MS, MINUTE_MS, type PlanAction } from "../../core/autoscaler";
import { AGENT_ROUTES, decodeUserData, type PlacementSet, parseNodeBootScript } from "../../core/schemas";
import type { RegionScheduler } from "../../durable-objects/region-scheduler/RegionScheduler";
import type { DrainResult } from "../../durable-objects/region-scheduler/rpc";
import type { MarketSettings, NodeSettings } from "../../tools/sfcompute-sim/config";
import { Simulator } from "../../tools/sfcompute-sim/simulator";
import { schedulerOf } from "../api/scheduler";
import { submitJob } from "../api/submission";
import { call, signUp } from "../api/test-support";
import { openDb } from "../db/client";
import { auditLog, blocks, jobRuns, jobs, marketOrders, nodes } from "../db/schema";
import { createLogger } from "../http/log";
import { issueNodeToken } from "../nodes/tokens";
import { SfComputeClient } from "../sfcompute/client";
import { CAPACITY_CONFIG, DEMAND_WINDOW, type IngressKnobs, nodeIngressFromEnv } from "./config";
import { H100_NODE_SHAPE } from "./cron";
import { recentArrivals } from "./fleet";
import {
  type CapacityDeps,
  type CapacityScheduler,
  CYCLE_LEASE_MS,
  CycleSkipped,
  runCapacityCycle,
  UNKNOWN_OUTCOME_WAIT_MS,
} from "./manager";
import { tokenOfCloudInit } from "./market";

const log = createLogger("error");
const { db, close } = openDb(env);
afterAll(() => close());

/** A simulator whose clock the test moves, and a cycle that runs on it. */
function harness(
  region: string,
  opts: {
    seed: number;
    /** The simulator's settings (e.g. node names not unique, as SF Compute does not promise). */
    sim?: { nodes?: Partial<NodeSettings>; market?: Partial<MarketSettings> };
    config?: Partial<typeof CAPACITY_CONFIG>;
    demand?: Partial<typeof DEMAND_WINDOW>;
    env?: IngressKnobs;
    /** Stands between the cycle and the region's scheduler (to fail a call, or act between two). */
    scheduler?: (real: CapacityScheduler) => CapacityScheduler;
  },
) {
  const sim = new Simulator({
    clock: "virtual",
    // Five past the current hour: every test starts at the same point of its hour.
    start: Math.floor(Date.now() / HOUR_MS) * HOUR_MS + 5 * MINUTE_MS,
    token: `sim-${region}`,
    // A seed per test: the simulator's ids come from it, and Postgres is shared by the test files.
    seed: opts.seed,
    bootSeconds: 300,
    ...(opts.sim ? { settings: opts.sim } : {}),
  });
  const client = new SfComputeClient({
    baseUrl: "https://api.sfcompute.test",
    token: `sim-${region}`,
    // Looked up at each call: a test may wrap the simulator's handler.
    fetch: (request: Request) => sim.fetch(request),
    // One attempt per call: a lost answer is left for the manager's next cycle to recover.
    retry: { maxAttempts: 1 },
    now: () => sim.engine.now(),
    sleep: async () => {},
  });
  const deps: CapacityDeps = {
    db,
    client,
    scheduler: opts.scheduler?.(schedulerOf(env, region)) ?? schedulerOf(env, region),
    log,
    now: () => sim.engine.now(),
    // No headroom from history: the buys here answer the waiting work alone.
    config: { ...CAPACITY_CONFIG, fast: { ...CAPACITY_CONFIG.fast, minHeadroomGpus: 0 }, ...opts.config },
    demand: { ...DEMAND_WINDOW, arrivalQuantile: 0, burstMs: 1, ...opts.demand },
    instanceType: "h100v",
    agentApiUrl: "http://scalar.test",
    defaultZone: "hayesvalley",
    nodeShape: H100_NODE_SHAPE,
    nodeIngress: nodeIngressFromEnv(opts.env ?? {}),
  };
  return {
    sim,
    cycle: () => runCapacityCycle(deps, region),
    advance: (ms: number) => sim.engine.advanceBy(ms),
    /** The simulator's nodes created for this region's capacity nodes. */
    simNodes: () => [...sim.engine.nodes.nodes.values()].filter((n) => n.name.startsWith("cap-")),
  };
}

/**
 * The region's object reads the simulator's clock, as the capacity cycle does. The tests send no
 * heartbeats: its nodes must not be declared lost while the minutes pass.
 */
async function onMarketClock(region: string, sim: Simulator) {
  const object = env.REGION_SCHEDULER.get(env.REGION_SCHEDULER.idFromName(region));
  await runInDurableObject(object, (instance) => {
    (instance as unknown as { clock: { now(): number } }).clock = { now: () => sim.engine.now() };
  });
  await (object as unknown as DurableObjectStub<RegionScheduler>).configure({ heartbeat_timeout_ms: HOUR_MS });
}

const ofKind = <K extends PlanAction["kind"]>(actions: PlanAction[], kind: K) =>
  actions.filter((a): a is Extract<PlanAction, { kind: K }> => a.kind === kind);

/** A job row written as the API writes it, then handed to the region's scheduler. */
async function submitTo(region: string, accountId: string, over: Partial<typeof jobs.$inferInsert>) {
  const [row] = await db
    .insert(jobs)
    .values({
      accountId,
      region,
      tier: "fast",
      image: "127.0.0.1:5000/test/busybox:1",
      gpuCount: 1,
      cpuMilli: 4_000,
      memoryMib: 16_384,
      maxRuntimeS: 3_600,
      ...over,
    })
    .returning();
  await submitJob(env, db, row!, log);
  return row!;
}

const submitFast = (region: string, accountId: string, gpus: number) =>
  submitTo(region, accountId, { command: ["sh", "-c", "sleep 1"], gpuCount: gpus, estimatedDurationS: 1_200 });

/**
 * Flex may buy 4-hour blocks (the limit sits above the market), so idle nodes have hours to sell;
 * the recent peak that sell-back keeps looks back 10 minutes, so the jobs' demand ages out.
 */
const sellHarness = (region: string, seed: number, more: Omit<Parameters<typeof harness>[1], "seed"> = {}) =>
  harness(region, {
    seed,
    config: { durationsHours: [4], flex: { ...CAPACITY_CONFIG.flex, limitCentsPerGpuHour: 1_000 } },
    demand: { peakLookbackMs: 10 * MINUTE_MS },
    ...more,
  });

/** Two 8-GPU Flex jobs → one buy of 2 nodes → their agents register and run the jobs: two idle nodes. */
async function twoIdleFlexNodes(h: ReturnType<typeof harness>, region: string) {
  const user = await signUp();
  for (let i = 0; i < 2; i++) {
    await submitTo(region, user.accountId, { tier: "flex", gpuCount: 8, estimatedDurationS: 600 });
  }
  expect(ofKind((await h.cycle()).plan.actions, "buy")).toMatchObject([{ tier: "flex", nodes: 2 }]);
  h.advance(7 * MINUTE_MS);
  await h.cycle();
  const tokens = h.simNodes().map((n) => ({ name: n.name, token: tokenOfCloudInit(n.cloudInitUserData!)! }));
  for (const t of tokens) expect((await register(t.token, t.name)).status).toBe(200);
  for (const t of tokens) await runToCompletion(t.token);
  return { user, tokens };
}

const sellOrders = (region: string) =>
  db
    .select()
    .from(marketOrders)
    .where(and(eq(marketOrders.region, region), eq(marketOrders.purpose, "capacity:sell_back")));

/** The sell-back order of this key, as it stands. */
const sellOrder = async (key: string) =>
  (await db.select().from(marketOrders).where(eq(marketOrders.idempotencyKey, key)))[0];

/** The one sell-back order left `placing` by a send that got no answer. */
async function unansweredSell(region: string) {
  const placing = (await sellOrders(region)).filter((o) => o.status === "placing");
  expect(placing).toHaveLength(1);
  expect(placing[0]!.sfOrderId).toBeNull();
  return placing[0]!;
}

const sellPosts = (h: ReturnType<typeof harness>) =>
  h.sim.requests.filter((r) => r.method === "POST" && r.path === "/v0/orders");

/** The sell orders SF Compute holds (the simulator's state) for a contract. */
const salesAtSf = (h: ReturnType<typeof harness>, contractId: string | null) =>
  [...h.sim.engine.market.orders.values()].filter((o) => o.side === "sell" && o.contractId === contractId);

/** SF Compute holds one sale under the order's key, and the order has its id (the monitor follows it). */
async function expectOneSaleAcknowledged(
  h: ReturnType<typeof harness>,
  order: { contractId: string | null; idempotencyKey: string },
) {
  const atSf = salesAtSf(h, order.contractId);
  expect(atSf.map((o) => o.idempotencyKey)).toEqual([order.idempotencyKey]);
  expect(await sellOrder(order.idempotencyKey)).toMatchObject({
    status: "pending",
    sfOrderId: atSf[0]!.id,
    lastError: null,
  });
  return atSf[0]!;
}

/**
 * The sale of two idle nodes is planned in the hour's last minutes; the second node's sell order
 * gets no answer (`first`: done and its answer lost, or a 5xx and not done), and SF Compute stays
 * unreachable for the minutes left (each resend a 503, the order still `placing`). Then the cycle
 * two minutes into the sale's hour, past the simulator's minute of tolerance for a start.
 */
async function unansweredUntilAfterItsStart(
  h: ReturnType<typeof harness>,
  region: string,
  first: "lose_response" | "error",
) {
  h.sim.faults.add({ action: first, method: "POST", path: "/v0/orders", skip: 1 });
  const nextHour = Math.floor(h.sim.engine.now() / HOUR_MS) * HOUR_MS + HOUR_MS;
  h.advance(nextHour - 5 * MINUTE_MS - h.sim.engine.now());
  expect(ofKind((await h.cycle()).plan.actions, "sell_back")).toHaveLength(1);
  const unanswered = await unansweredSell(region);
  h.sim.faults.add({ action: "error", method: "POST", path: "/v0/orders", times: Infinity });
  for (let minute = 0; minute < 4; minute++) {
    h.advance(MINUTE_MS);
    const cycle = await h.cycle();
    expect(cycle.failed.map((f) => f.action)).toEqual(["follow"]);
  }
  expect(sellPosts(h)).toHaveLength(6);
  expect(await sellOrder(unanswered.idempotencyKey)).toMatchObject({ status: "placing", sfOrderId: null });
  h.sim.faults.clear();
  h.advance(nextHour + 2 * MINUTE_MS - h.sim.engine.now());
  const late = await h.cycle();
  expect(sellPosts(h)).toHaveLength(7);
  expect(await sellOrders(region)).toHaveLength(2);
  return { unanswered, late };
}

/** What a node's agent does at boot: read its token from its cloud-init and register. */
async function register(token: string, nodeId: string) {
  const res = await call("POST", AGENT_ROUTES.register, token, {
    body: {
      hostname: `${nodeId}.vm`,
      agent_version: "test",
      gpu_model: "H100",
      gpus: Array.from({ length: 8 }, (_, index) => ({ index })),
      cpu_milli: H100_NODE_SHAPE.cpuMilli,
      memory_mib: H100_NODE_SHAPE.memoryMib,
    },
  });
  return res;
}

/**
 * A region whose Fast headroom (8 GPUs) the first cycle buys on a rolling block, on the market's
 * clock; seven minutes on, its node has booted and its agent registered.
 */
async function headroomNode(region: string, seed: number) {
  const h = harness(region, { seed, config: { fast: { ...CAPACITY_CONFIG.fast, minHeadroomGpus: 8 } } });
  const user = await signUp({ fast_tier_enabled: true });
  // Block ends are on the market's clock.
  await onMarketClock(region, h.sim);
  expect(ofKind((await h.cycle()).plan.actions, "buy")).toMatchObject([{ tier: "fast", nodes: 1 }]);
  h.advance(7 * MINUTE_MS);
  await h.cycle();
  const [sim] = h.simNodes();
  expect((await register(tokenOfCloudInit(sim!.cloudInitUserData!)!, sim!.name)).status).toBe(200);
  const endBefore = sim!.endAt;
  if (endBefore === null) throw new Error("the headroom's node has no end");
  return { h, user, sim: sim!, endBefore };
}

async function runToCompletion(token: string) {
  const set = (await call("GET", `${AGENT_ROUTES.placements}?since=0&wait_ms=0`, token, {})).json as PlacementSet;
  for (const [i, p] of set.placements.entries()) {
    for (const [type, extra] of [
      ["running", {}],
      ["exited", { exit_code: 0 }],
    ] as const) {
      const res = await call("POST", AGENT_ROUTES.events, token, {
        body: {
          events: [
            {
              event_id: `${p.placement_id}-${type}-${i}`,
              placement_id: p.placement_id,
              at: Date.now(),
              type,
              ...extra,
            },
          ],
        },
      });
      expect(res.status).toBe(200);
    }
  }
  return set.placements.length;
}

describe("the capacity cron against the simulator", () => {
  it("buys once for waiting Fast work despite a lost answer, registers the nodes, drains the queue, lets idle nodes lapse", async () => {
    const region = "capacity-e2e";
    // The buy is three single-node orders, each limited to the 3-node quote + the slack, and each
    // node bought raises the simulator's price for the next by about 1.1 % in busy hours of its
    // (time-of-day) price path: with the default 2 % slack the third can fail to fill and is bought
    // again next cycle. That is the policy working, but this test is about the lost answer, so its
    // limits leave room for the three.
    const h = harness(region, { seed: 11_001, config: { limitSlackBps: 500 } });
    const user = await signUp({ fast_tier_enabled: true });
    for (let i = 0; i < 3; i++) await submitFast(region, user.accountId, 8);

    // Cycle 1: three 8-GPU Fast jobs wait → one buy of 3 nodes. The answer to one of the three
    // node orders is lost after the simulator created the node.
    h.sim.faults.add({ action: "lose_response", method: "POST", path: "/v1/nodes", skip: 1 });
    const first = await h.cycle();
    const buys = ofKind(first.plan.actions, "buy");
    expect(buys).toHaveLength(1);
    expect(buys[0]).toMatchObject({ tier: "fast", nodes: 3 });
    expect(buys[0]!.reason.rule).toBe("fast_queue");
    expect(first.failed.map((f) => f.action)).toEqual(["buy:fast_queue"]);
    expect(h.simNodes()).toHaveLength(3);
    const placing = await db
      .select()
      .from(marketOrders)
      .where(and(eq(marketOrders.region, region), eq(marketOrders.status, "placing")));
    expect(placing).toHaveLength(1);

    // Cycle 2, a minute later: the lost order is found by its node's name, not bought again.
    h.advance(MINUTE_MS);
    const second = await h.cycle();
    expect(ofKind(second.plan.actions, "buy")).toHaveLength(0);
    expect(h.simNodes()).toHaveLength(3);
    const orders = await db
      .select()
      .from(marketOrders)
      .where(and(eq(marketOrders.region, region), eq(marketOrders.purpose, "capacity:buy")));
    expect(orders).toHaveLength(3);
    expect(orders.every((o) => o.status === "pending" || o.status === "filled")).toBe(true);

    // The VMs boot; the next cycle sees the nodes bought and the block active.
    h.advance(7 * MINUTE_MS);
    const third = await h.cycle();
    expect(ofKind(third.plan.actions, "buy")).toHaveLength(0);
    const [block] = await db.select().from(blocks).where(eq(blocks.id, orders[0]!.blockId!));
    expect(block).toMatchObject({ status: "active", nodeCount: 3, region });

    // Each agent finds its token in its node's cloud-init and registers; the queue drains.
    const ours = await db
      .select()
      .from(nodes)
      .where(and(eq(nodes.region, region), like(nodes.id, "cap-%")));
    expect(ours).toHaveLength(3);
    const tokens = new Map<string, string>();
    for (const n of h.simNodes()) {
      const token = tokenOfCloudInit(n.cloudInitUserData!)!;
      expect(token).toMatch(/^snt_/);
      expect((await register(token, n.name)).status).toBe(200);
      tokens.set(n.name, token);
    }
    const scheduler = schedulerOf(env, region);
    const snap = await scheduler.capacitySnapshot();
    expect(snap.queues.reduce((s, q) => s + q.queued_jobs, 0)).toBe(0);
    expect(snap.running).toHaveLength(3);
    let ran = 0;
    for (const token of tokens.values()) ran += await runToCompletion(token);
    expect(ran).toBe(3);
    expect((await scheduler.capacitySnapshot()).running).toHaveLength(0);

    // Near the blocks' end the nodes are idle: not extended, drained to lapse.
    const end = block!.endAt.getTime();
    h.advance(end - 9 * MINUTE_MS - h.sim.engine.now());
    const late = await h.cycle();
    expect(ofKind(late.plan.actions, "extend")).toHaveLength(0);
    const drains = ofKind(late.plan.actions, "drain");
    expect(drains.map((d) => d.nodeId).sort()).toEqual([...tokens.keys()].sort());
    expect(drains.every((d) => d.reason.rule === "idle_no_extend")).toBe(true);

    // After the end the market has taken them back: released, their tokens no longer work.
    h.advance(end + MINUTE_MS - h.sim.engine.now());
    const after = await h.cycle();
    expect(ofKind(after.plan.actions, "release")).toHaveLength(3);
    const left = await db
      .select()
      .from(nodes)
      .where(and(eq(nodes.region, region), like(nodes.id, "cap-%")));
    expect(left.every((n) => n.state === "released" && n.agentTokenHash === null)).toBe(true);
    // The region's scheduler has forgotten them: no GPUs of theirs are counted any more.
    const gone = await scheduler.capacitySnapshot();
    expect(gone.nodes).toEqual([]);
    expect(gone.by_model.reduce((s, m) => s + m.total_gpus, 0)).toBe(0);
    // The scheduler's outbox writes node rows a moment later (the drain before the release among
    // them): a released node stays released.
    await new Promise((r) => setTimeout(r, 2_500));
    await runDurableObjectAlarm(env.REGION_SCHEDULER.get(env.REGION_SCHEDULER.idFromName(region)));
    const settled = await db
      .select()
      .from(nodes)
      .where(and(eq(nodes.region, region), like(nodes.id, "cap-%")));
    expect(settled.map((n) => n.state)).toEqual(["released", "released", "released"]);
    const [token] = [...tokens.values()];
    expect((await register(token!, "gone")).status).toBe(401);
    const [expired] = await db.select().from(blocks).where(eq(blocks.id, block!.id));
    expect(expired!.status).toBe("expired");

    // Every minute's plan is in the audit log with its reasons.
    const plans = await db
      .select()
      .from(auditLog)
      .where(and(eq(auditLog.action, "capacity.plan"), eq(auditLog.targetId, region)));
    expect(plans.length).toBe(5);
    expect(JSON.stringify(plans.map((p) => p.data))).toContain("fast_queue");
  });

  it("keeps the Fast headroom across the minute boundary: a waiting Flex job is told why and never takes it", async () => {
    const region = "capacity-e2e-headroom";
    const h = harness(region, {
      seed: 11_004,
      config: { fast: { ...CAPACITY_CONFIG.fast, minHeadroomGpus: 8 } },
      env: { INGRESS_URL_TEMPLATE: "https://{node_id}.nodes.test" },
    });
    const user = await signUp({ fast_tier_enabled: true });
    // The reservations expire on the market's clock.
    await onMarketClock(region, h.sim);
    // Minute 1: no nodes, 8 GPUs of headroom wanted → one node bought; it boots and registers.
    const first = await h.cycle();
    expect(ofKind(first.plan.actions, "buy")).toMatchObject([{ tier: "fast", nodes: 1 }]);
    h.advance(7 * MINUTE_MS);
    await h.cycle();
    const [sim] = h.simNodes();
    // The node's boot script gives its agent an ingress at the node's own URL.
    const boot = parseNodeBootScript(decodeUserData(sim!.cloudInitUserData!))!;
    expect(boot).toMatchObject({ ingress_port: 8090, ingress_url: `https://${boot.node_id}.nodes.test` });
    expect((await register(tokenOfCloudInit(sim!.cloudInitUserData!)!, sim!.name)).status).toBe(200);
    const scheduler = schedulerOf(env, region);
    h.advance(MINUTE_MS);
    expect(ofKind((await h.cycle()).plan.actions, "hold_headroom")).toMatchObject([{ gpus: 8 }]);
    expect((await scheduler.capacitySnapshot()).by_model[0]).toMatchObject({ reserved_gpus: 8, free_gpus: 0 });

    // A 1-GPU Flex job: it waits on the idle node, and says it is held for Fast.
    const row = await submitTo(region, user.accountId, {
      tier: "flex",
      command: ["echo", "hello"],
      cpuMilli: 1_000,
      memoryMib: 1_024,
      maxRuntimeS: 600,
    });
    expect(await scheduler.jobState(row.id)).toMatchObject({
      status: "queued",
      waiting_reason: "0/1 nodes: 1 free GPUs reserved for Fast",
    });

    // The next minutes re-make the headroom: the job never slips in between old and new.
    for (let m = 0; m < 2; m++) {
      h.advance(MINUTE_MS);
      expect(ofKind((await h.cycle()).plan.actions, "hold_headroom")).toMatchObject([{ gpus: 8 }]);
      expect((await scheduler.jobState(row.id))?.status).toBe("queued");
      expect((await scheduler.capacitySnapshot()).by_model[0]).toMatchObject({ reserved_gpus: 8, busy_gpus: 0 });
    }
  });

  it("extends a ready node for a waiting Fast job estimated past its block, and the job is placed in that minute", async () => {
    const region = "capacity-e2e-estimate";
    const { h, user, sim, endBefore } = await headroomNode(region, 11_005);
    expect(endBefore - h.sim.engine.now()).toBeLessThan(2 * HOUR_MS);

    // A Fast job estimated at 3 h: the free node's block ends before it would, so it waits.
    const row = await submitTo(region, user.accountId, {
      command: ["true"],
      estimatedDurationS: 3 * 3_600,
      maxRuntimeS: 4 * 3_600,
    });
    const scheduler = schedulerOf(env, region);
    expect(await scheduler.jobState(row.id)).toMatchObject({ status: "queued" });

    // The next minute extends that node to cover the estimate (no node bought for the job), and the
    // region's scheduler places the job on it as soon as the extension is in.
    h.advance(MINUTE_MS);
    const next = await h.cycle();
    expect(next.failed).toEqual([]);
    const ext = ofKind(next.plan.actions, "extend");
    expect(ext.map((e) => [e.nodeIds, e.reason.rule])).toEqual([[[sim!.name], "extend_for_estimate"]]);
    expect(ext[0]!.endAt).toBeGreaterThanOrEqual(h.sim.engine.now() + 3 * HOUR_MS);
    expect(ofKind(next.plan.actions, "buy").filter((b) => b.reason.rule === "fast_queue")).toEqual([]);
    expect(h.simNodes()[0]!.endAt).toBe(ext[0]!.endAt);
    expect(await scheduler.jobState(row.id)).toMatchObject({ status: "placed" });
  });

  it("sends a refused extension again the next minute (the same order, re-opened), and the job is placed", async () => {
    const region = "capacity-e2e-extend-retry";
    const { h, user, endBefore } = await headroomNode(region, 11_007);
    const row = await submitTo(region, user.accountId, {
      command: ["true"],
      estimatedDurationS: 3 * 3_600,
      maxRuntimeS: 4 * 3_600,
    });
    const scheduler = schedulerOf(env, region);

    // The market refuses the first extension (as a limit under the ask is refused).
    h.sim.faults.add({ action: "error", method: "PATCH", path: "/v1/nodes/*", status: 400 });
    h.advance(MINUTE_MS);
    const refused = await h.cycle();
    const ext = ofKind(refused.plan.actions, "extend");
    expect(ext.map((e) => e.reason.rule)).toEqual(["extend_for_estimate"]);
    expect(refused.failed).toHaveLength(1);
    expect(h.simNodes()[0]!.endAt).toBe(endBefore);
    const ordersOf = () =>
      db
        .select()
        .from(marketOrders)
        .where(and(eq(marketOrders.region, region), eq(marketOrders.purpose, "capacity:extend")));
    expect((await ordersOf()).map((o) => o.status)).toEqual(["failed"]);

    // Planned again with the same end (the same key): sent again, and this time it is in.
    h.advance(MINUTE_MS);
    const again = await h.cycle();
    expect(again.failed).toEqual([]);
    expect(ofKind(again.plan.actions, "extend").map((e) => e.endAt)).toEqual([ext[0]!.endAt]);
    expect(h.simNodes()[0]!.endAt).toBe(ext[0]!.endAt);
    const orders = await ordersOf();
    expect(orders.map((o) => [o.status, o.lastError])).toEqual([["filled", null]]);
    expect(await scheduler.jobState(row.id)).toMatchObject({ status: "placed" });
  });

  it("extends once when an extension's answer is lost: it is not sent again before the wait is over", async () => {
    const region = "capacity-e2e-extend-lost";
    const { h, user, endBefore } = await headroomNode(region, 11_025);
    await submitTo(region, user.accountId, {
      command: ["true"],
      estimatedDurationS: 3 * 3_600,
      maxRuntimeS: 4 * 3_600,
    });
    const patches = () => h.sim.requests.filter((r) => r.method === "PATCH" && r.path.endsWith("/extend"));
    // Done at SF Compute, but the answer is lost; the node's end moves only later (a lagging read).
    h.sim.faults.add({ action: "lose_response", method: "PATCH", path: "/v1/nodes/*" });
    const original = h.sim.fetch;
    let lagging = true;
    h.sim.fetch = async (request) => {
      const answer = await original(request);
      if (!lagging || request.method !== "GET" || !new URL(request.url).pathname.startsWith("/v1/nodes")) return answer;
      const body = JSON.stringify(await answer.json()).replaceAll(/"end_at":\d+/g, `"end_at":${endBefore / 1000}`);
      return new Response(body, { status: answer.status, headers: answer.headers });
    };
    h.advance(MINUTE_MS);
    const lost = await h.cycle();
    expect(ofKind(lost.plan.actions, "extend")).toHaveLength(1);
    expect(patches()).toHaveLength(1);
    h.advance(MINUTE_MS);
    await h.cycle();
    expect(patches()).toHaveLength(1);
    lagging = false;
    h.advance(UNKNOWN_OUTCOME_WAIT_MS);
    await h.cycle();
    expect(patches()).toHaveLength(1);
    const [order] = await db
      .select()
      .from(marketOrders)
      .where(and(eq(marketOrders.region, region), eq(marketOrders.purpose, "capacity:extend")));
    expect(order!.status).toBe("filled");
    expect(h.simNodes()[0]!.endAt).toBeGreaterThan(endBefore);
  });

  it("runs one cycle of a region at a time: a cycle finding another's lease does nothing", async () => {
    const region = "capacity-e2e-lease";
    const h = harness(region, { seed: 11_010 });
    const user = await signUp({ fast_tier_enabled: true });
    await submitFast(region, user.accountId, 8);
    const scheduler = schedulerOf(env, region);
    // A cycle still running from the minute before (slowed by the market) holds the region.
    const slow = await scheduler.takeCapacityLease("the minute before", CYCLE_LEASE_MS);
    expect(slow.ok).toBe(true);
    await expect(h.cycle()).rejects.toBeInstanceOf(CycleSkipped);
    expect(h.simNodes()).toHaveLength(0);
    expect(await db.select().from(marketOrders).where(eq(marketOrders.region, region))).toEqual([]);
    // Once it is done (or its lease has run out), the next cycle buys, and leaves the lease free.
    expect(await scheduler.releaseCapacityLease("the minute before")).toEqual({ released: true });
    expect(ofKind((await h.cycle()).plan.actions, "buy")).toHaveLength(1);
    expect(h.simNodes()).toHaveLength(1);
    expect((await scheduler.takeCapacityLease("next", 1)).ok).toBe(true);
    await scheduler.releaseCapacityLease("next");
  });

  it("sends a lost buy again only if no node has its name, so the node keeps the token it booted with", async () => {
    const region = "capacity-e2e-lagging-list";
    const h = harness(region, { seed: 11_011 });
    const user = await signUp({ fast_tier_enabled: true });
    await submitFast(region, user.accountId, 8);
    // The node is created but the answer is lost; the next listing does not show it yet.
    h.sim.faults.add({ action: "lose_response", method: "POST", path: "/v1/nodes" });
    await h.cycle();
    expect(h.simNodes()).toHaveLength(1);
    const original = h.sim.fetch;
    let hidden = 0;
    h.sim.fetch = async (request) => {
      const answer = await original(request);
      const url = new URL(request.url);
      if (request.method !== "GET" || url.pathname !== "/v1/nodes" || hidden > 0) return answer;
      hidden += 1;
      const body = (await answer.json()) as { data: { name: string }[] };
      return Response.json({ ...body, data: body.data.filter((n) => !n.name.startsWith("cap-")) });
    };
    h.advance(MINUTE_MS);
    const second = await h.cycle();
    expect(hidden).toBe(1);
    expect(second.failed).toEqual([]);
    expect(h.simNodes()).toHaveLength(1);
    // The node boots with the token of the first send: its agent gets in.
    const [sim] = h.simNodes();
    expect((await register(tokenOfCloudInit(sim!.cloudInitUserData!)!, sim!.name)).status).toBe(200);
  });

  it("does not send a buy again while a send that got no answer may still be under way at SF Compute", async () => {
    // SF Compute does not promise unique node names: with duplicates allowed, a second send of a
    // request that lands late is a second node, paid for.
    const region = "capacity-e2e-late-send";
    const h = harness(region, { seed: 11_021, sim: { nodes: { uniqueNames: false } } });
    const user = await signUp({ fast_tier_enabled: true });
    await submitFast(region, user.accountId, 8);
    // The first send's connection fails before any answer, but the request reaches SF Compute later.
    const original = h.sim.fetch;
    let held: Request | undefined;
    h.sim.fetch = async (request) => {
      if (held || request.method !== "POST" || new URL(request.url).pathname !== "/v1/nodes") return original(request);
      held = request.clone();
      throw new TypeError("fetch failed");
    };
    const first = await h.cycle();
    expect(ofKind(first.plan.actions, "buy")).toHaveLength(1);
    expect(held).toBeDefined();
    expect(h.simNodes()).toHaveLength(0);
    const posts = () => h.sim.requests.filter((r) => r.method === "POST" && r.path === "/v1/nodes").length;

    // A minute later no node has the name yet: the order is still on its way, neither sent again
    // nor bought anew.
    h.advance(MINUTE_MS);
    const second = await h.cycle();
    expect(ofKind(second.plan.actions, "buy")).toHaveLength(0);
    expect(posts()).toBe(0);
    // Then the first request lands.
    expect((await original(held!)).status).toBe(201);
    expect(h.simNodes()).toHaveLength(1);

    h.advance(UNKNOWN_OUTCOME_WAIT_MS);
    const third = await h.cycle();
    expect(ofKind(third.plan.actions, "buy")).toHaveLength(0);
    expect(posts()).toBe(1);
    expect(h.simNodes()).toHaveLength(1);
    const [order] = await db.select().from(marketOrders).where(eq(marketOrders.region, region));
    expect(["pending", "filled"]).toContain(order!.status);
  });

  it("sends a buy that got no answer again once the wait is over, when no node has its name", async () => {
    const region = "capacity-e2e-unanswered";
    const h = harness(region, { seed: 11_023 });
    const user = await signUp({ fast_tier_enabled: true });
    await submitFast(region, user.accountId, 8);
    h.sim.faults.add({ action: "error", status: 503, method: "POST", path: "/v1/nodes" });
    await h.cycle();
    expect(h.simNodes()).toHaveLength(0);
    h.advance(MINUTE_MS);
    await h.cycle();
    expect(h.simNodes()).toHaveLength(0);
    h.advance(UNKNOWN_OUTCOME_WAIT_MS - MINUTE_MS);
    const later = await h.cycle();
    expect(ofKind(later.plan.actions, "buy")).toHaveLength(0);
    expect(later.failed).toEqual([]);
    expect(h.simNodes()).toHaveLength(1);
    const [order] = await db.select().from(marketOrders).where(eq(marketOrders.region, region));
    expect(order!.status).toBe("pending");
  });

  it("plans a refused buy again the next minute, and releases the node it could not get", async () => {
    const region = "capacity-e2e-refused";
    const h = harness(region, { seed: 11_003 });
    const user = await signUp({ fast_tier_enabled: true });
    await submitFast(region, user.accountId, 8);
    h.sim.faults.add({ action: "error", method: "POST", path: "/v1/nodes", status: 400 });
    const first = await h.cycle();
    expect(ofKind(first.plan.actions, "buy")).toHaveLength(1);
    expect(h.simNodes()).toHaveLength(0);
    const [refused] = await db.select().from(marketOrders).where(eq(marketOrders.region, region));
    expect(refused!.status).toBe("failed");
    const [gone] = await db.select().from(nodes).where(eq(nodes.region, region));
    expect(gone).toMatchObject({ state: "released", agentTokenHash: null });

    h.advance(MINUTE_MS);
    const second = await h.cycle();
    const again = ofKind(second.plan.actions, "buy");
    expect(again).toHaveLength(1);
    expect(again[0]!.reason.rule).toBe("fast_queue");
    expect(second.bought).toHaveLength(1);
    expect(h.simNodes()).toHaveLength(1);
    // A third minute: the node is on its way; nothing more is bought.
    h.advance(MINUTE_MS);
    expect(ofKind((await h.cycle()).plan.actions, "buy")).toHaveLength(0);
    expect(h.simNodes()).toHaveLength(1);
  });

  it("writes off a bought node whose agent never registers: buys the headroom again and drains it", async () => {
    const region = "capacity-e2e-no-boot";
    const h = harness(region, { seed: 11_006, config: { fast: { ...CAPACITY_CONFIG.fast, minHeadroomGpus: 8 } } });
    await onMarketClock(region, h.sim);
    expect(ofKind((await h.cycle()).plan.actions, "buy")).toMatchObject([{ tier: "fast", nodes: 1 }]);
    const [first] = h.simNodes();
    // Its agent never registers. Until the boot timeout the node counts as capacity on its way.
    for (let m = 0; m < 19; m++) {
      h.advance(MINUTE_MS);
      const { plan } = await h.cycle();
      expect(ofKind(plan.actions, "buy")).toHaveLength(0);
      expect(ofKind(plan.actions, "drain")).toHaveLength(0);
    }
    h.advance(2 * MINUTE_MS);
    const { plan } = await h.cycle();
    expect(ofKind(plan.actions, "drain")).toMatchObject([{ nodeId: first!.name, reason: { rule: "boot_timeout" } }]);
    expect(ofKind(plan.actions, "buy")).toMatchObject([{ reason: { rule: "fast_headroom" }, nodes: 1 }]);
    const [row] = await db.select().from(nodes).where(eq(nodes.id, first!.name));
    expect(row!.state).toBe("draining");
    // Drained, it is out of supply for good: no second write-off, no second buy.
    h.advance(MINUTE_MS);
    const next = (await h.cycle()).plan.actions;
    expect(ofKind(next, "drain").filter((d) => d.nodeId === first!.name)).toHaveLength(0);
    expect(ofKind(next, "buy")).toHaveLength(0);

    // Its agent comes after all: the scheduler kept the drain, so the node joins draining and takes
    // no work (its hours are being sold), and its row stays draining.
    expect((await register(tokenOfCloudInit(first!.cloudInitUserData!)!, first!.name)).status).toBe(200);
    const scheduler = schedulerOf(env, region);
    expect((await scheduler.listNodes()).map((n) => [n.node_id, n.state])).toContainEqual([first!.name, "draining"]);
    await new Promise((r) => setTimeout(r, 2_500));
    await runDurableObjectAlarm(env.REGION_SCHEDULER.get(env.REGION_SCHEDULER.idFromName(region)));
    const [late] = await db.select().from(nodes).where(eq(nodes.id, first!.name));
    expect(late!.state).toBe("draining");
  });

  it("makes the scheduler forget a node released before it forgot released nodes", async () => {
    const region = "capacity-e2e-forget";
    const h = harness(region, { seed: 11_005 });
    await onMarketClock(region, h.sim);
    const nodeId = `dev-${crypto.randomUUID().slice(0, 8)}`;
    await db.insert(nodes).values({
      id: nodeId,
      region,
      zone: "hayesvalley",
      gpuModel: "H100",
      gpuCount: 8,
      cpuMilli: H100_NODE_SHAPE.cpuMilli,
      memoryMib: H100_NODE_SHAPE.memoryMib,
      state: "provisioning",
    });
    const token = await issueNodeToken(db, nodeId);
    expect((await register(token!, nodeId)).status).toBe(200);
    const scheduler = schedulerOf(env, region);
    expect((await scheduler.capacitySnapshot()).nodes.map((n) => n.node_id)).toEqual([nodeId]);
    // Released here (as an earlier version did, leaving the scheduler holding it as lost for ever).
    await db.update(nodes).set({ state: "released" }).where(eq(nodes.id, nodeId));
    const report = await h.cycle();
    expect(report.failed).toEqual([]);
    expect((await scheduler.capacitySnapshot()).nodes).toEqual([]);
    expect(await scheduler.removeNode(nodeId)).toEqual({ removed: false });
  });

  it("sells back the future hours of idle nodes when the quote beats the resale fee", async () => {
    const region = "capacity-e2e-sell";
    const h = sellHarness(region, 11_002);
    const user = await signUp();
    for (let i = 0; i < 2; i++) {
      await submitTo(region, user.accountId, { tier: "flex", gpuCount: 8, estimatedDurationS: 600 });
    }
    const first = await h.cycle();
    const buys = ofKind(first.plan.actions, "buy");
    expect(buys).toHaveLength(1);
    expect(buys[0]).toMatchObject({ tier: "flex", nodes: 2 });
    expect(buys[0]!.reason.rule).toBe("flex_price");
    h.advance(7 * MINUTE_MS);
    await h.cycle();
    const tokens = h.simNodes().map((n) => ({ name: n.name, token: tokenOfCloudInit(n.cloudInitUserData!)! }));
    for (const t of tokens) expect((await register(t.token, t.name)).status).toBe(200);
    for (const t of tokens) await runToCompletion(t.token);

    // In the last minutes of the hour the idle nodes' remaining hours are surplus: drained and sold.
    // (Bought at :05, booted by :13; the hour ends at :00, and the 4-hour block three hours later.)
    const nextHour = Math.floor(h.sim.engine.now() / HOUR_MS) * HOUR_MS + HOUR_MS;
    h.advance(nextHour - 5 * MINUTE_MS - h.sim.engine.now());
    const selling = await h.cycle();
    const sales = ofKind(selling.plan.actions, "sell_back");
    expect(sales).toHaveLength(1);
    expect(sales[0]!.reason.rule).toBe("sell_back");
    expect(sales[0]!.startAt).toBe(nextHour);
    expect(selling.failed).toEqual([]);
    const sells = await db
      .select()
      .from(marketOrders)
      .where(and(eq(marketOrders.region, region), eq(marketOrders.purpose, "capacity:sell_back")));
    expect(sells).toHaveLength(2);
    // The simulator fills the sales and the nodes' time now ends at the hour.
    h.advance(MINUTE_MS);
    for (const n of h.simNodes()) expect(n.endAt).toBe(nextHour);
  });

  it("keeps idle nodes in service when SF Compute refuses sells by contract (§16: it may)", async () => {
    const region = "capacity-e2e-no-v0-sells";
    const h = sellHarness(region, 11_027, { sim: { market: { v0Sells: "reject" } } });
    const { tokens } = await twoIdleFlexNodes(h, region);

    // In the sell window the sell quotes are refused: no sale is planned, so nothing is drained.
    const nextHour = Math.floor(h.sim.engine.now() / HOUR_MS) * HOUR_MS + HOUR_MS;
    h.advance(nextHour - 5 * MINUTE_MS - h.sim.engine.now());
    for (let minute = 0; minute < 3; minute++) {
      const cycle = await h.cycle();
      expect(ofKind(cycle.plan.actions, "sell_back")).toEqual([]);
      expect(ofKind(cycle.plan.actions, "drain")).toEqual([]);
      h.advance(MINUTE_MS);
    }
    const sells = await db
      .select()
      .from(marketOrders)
      .where(and(eq(marketOrders.region, region), eq(marketOrders.purpose, "capacity:sell_back")));
    expect(sells).toEqual([]);
    const snapshot = await schedulerOf(env, region).capacitySnapshot();
    const ours = snapshot.nodes.filter((n) => tokens.some((t) => t.name === n.node_id));
    expect(ours.map((n) => n.state)).toEqual(["ready", "ready"]);
  });

  it("lists a sell order SF Compute refuses after its quote among the cycle's failures, in its audit row", async () => {
    const region = "capacity-e2e-sell-refused";
    const h = sellHarness(region, 11_029);
    await twoIdleFlexNodes(h, region);
    // The quotes are answered; the sell orders are refused (e.g. the price moved under the limit).
    h.sim.faults.add({ action: "error", method: "POST", path: "/v0/orders", status: 400, times: Infinity });
    const nextHour = Math.floor(h.sim.engine.now() / HOUR_MS) * HOUR_MS + HOUR_MS;
    h.advance(nextHour - 5 * MINUTE_MS - h.sim.engine.now());
    const refused = await h.cycle();
    expect(ofKind(refused.plan.actions, "sell_back")).toHaveLength(1);
    expect(refused.failed.map((f) => f.action)).toEqual(["sell_back:sell_back"]);
    expect(refused.failed[0]!.error).toMatch(/^not sold: SF Compute refused the sell orders of cap-/);
    const sells = await db
      .select()
      .from(marketOrders)
      .where(and(eq(marketOrders.region, region), eq(marketOrders.purpose, "capacity:sell_back")));
    expect(sells.map((s) => s.status)).toEqual(["failed", "failed"]);
    const [audit] = await db
      .select()
      .from(auditLog)
      .where(and(eq(auditLog.action, "capacity.plan"), eq(auditLog.targetId, region)))
      .orderBy(desc(auditLog.id))
      .limit(1);
    expect((audit!.data as { failed: unknown }).failed).toEqual(refused.failed);

    // Planned again a minute later (the drained nodes are idle): not sent again this hour, and
    // still listed as not sold rather than passed over in silence.
    h.advance(MINUTE_MS);
    const again = await h.cycle();
    expect(ofKind(again.plan.actions, "sell_back")).toHaveLength(1);
    expect(again.failed.map((f) => f.error)).toEqual([refused.failed[0]!.error]);
  });

  it("sends a sell order whose answer was lost again the next minute with its key: one sale at SF Compute, acknowledged", async () => {
    const region = "capacity-e2e-sell-lost";
    const h = sellHarness(region, 11_031);
    await twoIdleFlexNodes(h, region);
    // The second node's sell order is placed at SF Compute, but its answer is lost.
    h.sim.faults.add({ action: "lose_response", method: "POST", path: "/v0/orders", skip: 1 });
    const nextHour = Math.floor(h.sim.engine.now() / HOUR_MS) * HOUR_MS + HOUR_MS;
    h.advance(nextHour - 5 * MINUTE_MS - h.sim.engine.now());
    const lost = await h.cycle();
    expect(ofKind(lost.plan.actions, "sell_back")).toHaveLength(1);
    expect(lost.failed.map((f) => f.action)).toEqual(["sell_back:sell_back"]);
    const unanswered = await unansweredSell(region);

    h.advance(MINUTE_MS);
    const again = await h.cycle();
    expect(again.failed).toEqual([]);
    expect(sellPosts(h)).toHaveLength(3);
    expect(await sellOrders(region)).toHaveLength(2);
    await expectOneSaleAcknowledged(h, unanswered);
  });

  it("sends the rest of a sale group when a node's sell order gets no answer, and that one again the next minute", async () => {
    const region = "capacity-e2e-sell-lost-first";
    const h = sellHarness(region, 11_037);
    await twoIdleFlexNodes(h, region);
    // The first node's sell order is placed at SF Compute, but its answer is lost.
    h.sim.faults.add({ action: "lose_response", method: "POST", path: "/v0/orders" });
    const nextHour = Math.floor(h.sim.engine.now() / HOUR_MS) * HOUR_MS + HOUR_MS;
    h.advance(nextHour - 5 * MINUTE_MS - h.sim.engine.now());
    const lost = await h.cycle();
    expect(ofKind(lost.plan.actions, "sell_back")).toHaveLength(1);
    expect(lost.failed.map((f) => f.action)).toEqual(["sell_back:sell_back"]);
    expect(lost.failed[0]!.error).toMatch(/^no answer to the sell orders of cap-.* \(sent again\)$/);
    expect(sellPosts(h)).toHaveLength(2);
    const unanswered = await unansweredSell(region);
    const [answered] = (await sellOrders(region)).filter((o) => o.status !== "placing");
    await expectOneSaleAcknowledged(h, answered!);

    h.advance(MINUTE_MS);
    expect((await h.cycle()).failed).toEqual([]);
    await expectOneSaleAcknowledged(h, unanswered);
    for (const n of h.simNodes()) expect(n.endAt).toBe(nextHour);
  });

  it("sends a sell order that got no answer again after its start has passed: acknowledged if SF Compute took it", async () => {
    const region = "capacity-e2e-sell-lost-late";
    const h = sellHarness(region, 11_033);
    await twoIdleFlexNodes(h, region);
    const { unanswered, late } = await unansweredUntilAfterItsStart(h, region, "lose_response");
    expect(late.failed).toEqual([]);
    expect((await expectOneSaleAcknowledged(h, unanswered)).status).toBe("filled");
  });

  it("takes a sell order that got no answer as failed when SF Compute refuses it again after its start, and lists it", async () => {
    const region = "capacity-e2e-sell-unanswered";
    const h = sellHarness(region, 11_035);
    await twoIdleFlexNodes(h, region);
    const { unanswered, late } = await unansweredUntilAfterItsStart(h, region, "error");
    // SF Compute never got it, and a sale must start now or on a future hour.
    expect(late.failed.map((f) => f.action)).toEqual(["follow"]);
    expect(late.failed[0]!.error).toContain(`${unanswered.idempotencyKey}: sell order refused: `);
    expect(salesAtSf(h, unanswered.contractId)).toEqual([]);
    const refused = await sellOrder(unanswered.idempotencyKey);
    expect(refused).toMatchObject({ status: "failed", sfOrderId: null });
    expect(refused!.lastError).toMatch(/Start time/);
  });

  it("sells no node whose drain failed, nor one that took work between the plan and the sale", async () => {
    const region = "capacity-e2e-sell-guard";
    // Between the cycle and its scheduler, for the next drains in turn: a job submitted just before
    // one (the packer places it on the idle node while the quotes are fetched), a drain that fails
    // (the scheduler unreachable), or one answered without draining (what the hook returns).
    let before: ((nodeId: string) => Promise<DrainResult | undefined>)[] = [];
    const h = sellHarness(region, 11_008, {
      scheduler: (real) => ({
        capacitySnapshot: () => real.capacitySnapshot(),
        reserve: (r) => real.reserve(r),
        release: (id) => real.release(id),
        setNodeBlock: (id, block, end) => real.setNodeBlock(id, block, end),
        removeNode: (id) => real.removeNode(id),
        drain: async (id) => (await before.shift()?.(id)) ?? real.drain(id),
        takeCapacityLease: (holder, ttl) => real.takeCapacityLease(holder, ttl),
        releaseCapacityLease: (holder) => real.releaseCapacityLease(holder),
      }),
    });
    const { user, tokens } = await twoIdleFlexNodes(h, region);
    const sells = () =>
      db
        .select()
        .from(marketOrders)
        .where(and(eq(marketOrders.region, region), eq(marketOrders.purpose, "capacity:sell_back")));

    // The sale is planned; a job is placed on one of the idle nodes just before the first drain:
    // both nodes are drained, but the one with work is not sold (nor its group).
    const nextHour = Math.floor(h.sim.engine.now() / HOUR_MS) * HOUR_MS + HOUR_MS;
    h.advance(nextHour - 5 * MINUTE_MS - h.sim.engine.now());
    const scheduler = schedulerOf(env, region);
    let job = "";
    before = [
      async () => {
        job = (await submitTo(region, user.accountId, { tier: "flex", gpuCount: 8, estimatedDurationS: 600 })).id;
        return undefined;
      },
    ];
    const raced = await h.cycle();
    expect(ofKind(raced.plan.actions, "sell_back")).toHaveLength(1);
    const [busy] = (await scheduler.jobState(job))!.placements.map((p) => p.node_id);
    expect(raced.failed.map((f) => [f.action, f.error])).toEqual([
      ["sell_back:sell_back", `not sold: ${busy} still run work`],
    ]);
    expect(await sells()).toEqual([]);
    // Its work runs on (the node is drained: sold once it has emptied).
    expect((await scheduler.jobState(job))?.status).toBe("placed");
    await runToCompletion(tokens.find((t) => t.name === busy)!.token);

    // A minute later both are drained and idle: the sale is planned again, but the first node's
    // drain fails (the scheduler unreachable) and the second's is answered without a drain (a
    // scheduler that does not know the node and keeps nothing): nothing is sold.
    h.advance(MINUTE_MS);
    const refused: string[] = [];
    before = [
      async (id) => {
        refused.push(id);
        throw new Error("scheduler unreachable");
      },
      async (id) => {
        refused.push(id);
        return { ok: false, state: "unknown" };
      },
    ];
    const failed = await h.cycle();
    expect(ofKind(failed.plan.actions, "sell_back")).toHaveLength(1);
    expect(failed.failed.map((f) => [f.action, f.error])).toEqual([
      ["drain:sell_back", "scheduler unreachable"],
      ["drain:sell_back", `node ${refused[1]} not drained: the scheduler answers unknown`],
      ["sell_back:sell_back", `not sold: ${refused.join(",")} not drained`],
    ]);
    expect(await sells()).toEqual([]);
  });
});

describe("recent arrivals, the autoscaler's demand history", () => {
  it("carry how long each ended job held its GPUs, placement to end over its attempts; not running, queued or other regions' jobs", async () => {
    const region = `arrivals-${crypto.randomUUID().slice(0, 8)}`;
    const user = await signUp();
    const now = Date.now();
    const row = (over: Partial<typeof jobs.$inferInsert>) => ({
      accountId: user.accountId,
      region,
      tier: "fast" as const,
      image: "127.0.0.1:5000/test/busybox:1",
      gpuCount: 1,
      cpuMilli: 1_000,
      memoryMib: 1_024,
      maxRuntimeS: 3_600,
      ...over,
    });
    const nodeId = `n-${region}`;
    await db.insert(nodes).values({
      id: nodeId,
      region,
      zone: "z",
      gpuModel: "H100",
      gpuCount: 8,
      cpuMilli: 64_000,
      memoryMib: 512_000,
    });
    const [retried, cancelled] = await db
      .insert(jobs)
      .values([
        row({ status: "succeeded", gpuCount: 2, startedAt: new Date(now - 4_000), finishedAt: new Date(now - 3_000) }),
        // Cancelled while queued: it never held a GPU.
        row({ status: "cancelled", gpuCount: 4, finishedAt: new Date(now - 1_000) }),
        row({ status: "running", startedAt: new Date(now - 5_000) }),
        row({ status: "queued", tier: "flex" }),
        row({ status: "queued", region: `${region}-other` }),
      ])
      .returning({ id: jobs.id });
    // Two attempts of the retried job: placed 10 s before now for 1.5 s, then 3.5 s before for 0.5 s.
    const attempt = (n: number, placedAgo: number, heldMs: number) => ({
      id: `pl-${crypto.randomUUID()}`,
      jobId: retried!.id,
      accountId: user.accountId,
      attempt: n,
      nodeId,
      status: n === 1 ? "failed" : "succeeded",
      gpuCount: 2,
      placedAt: new Date(now - placedAgo),
      finishedAt: new Date(now - placedAgo + heldMs),
    });
    await db.insert(jobRuns).values([attempt(1, 10_000, 1_500), attempt(2, 3_500, 500)]);
    expect(cancelled).toBeDefined();
    const arrivals = await recentArrivals(db, region, now + 1_000, HOUR_MS);
    expect(
      arrivals.map(({ at: _, ...a }) => a).sort((a, b) => b.gpus - a.gpus || a.tier.localeCompare(b.tier)),
    ).toEqual([
      { tier: "fast", gpus: 4, heldMs: 0 },
      { tier: "fast", gpus: 2, heldMs: 2_000 },
      { tier: "fast", gpus: 1 },
      { tier: "flex", gpus: 1 },
    ]);
  });
});
