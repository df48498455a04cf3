/**
 * The capacity manager: one cycle per region per minute.
 *
 *   1. follow what earlier cycles started (purchases, extensions, unanswered sales) to their outcome;
 *   2. read the fleet (our rows, SF Compute's nodes, the region's snapshot) and recent demand;
 *   3. ask the policy which quotes it needs, fetch them, and let it plan;
 *   4. carry out the plan: buy, extend, sell back, drain, release, hold Fast headroom;
 *   5. record the plan and its reasons in `audit_log`, and the minute's demand in `capacity_samples`.
 *
 * Nothing is sent to SF Compute before its row is written: a node row and its `market_orders` row
 * exist before `POST /v1/nodes`, and node names are derived from the plan, so a lost answer is found
 * by name on the next cycle instead of being bought again. A failure in one action is logged and the
 * others go on; whatever did not happen is planned again next minute from the state as it is.
 */
import { and, sql as dsql, eq, gt, inArray, lte } from "drizzle-orm";
import {
  type AutoscalerConfig,
  type CapacityInput,
  type CapacityPlan,
  type DemandWindow,
  estimateDemand,
  HOUR_MS,
  type MarketQuote,
  MINUTE_MS,
  marketNow,
  type PlanAction,
  perNodeHourLimit,
  planCapacity,
  quoteRequests,
} from "../../core/autoscaler";
import type { CapacitySnapshot, RegionSchedulerRpc } from "../../durable-objects/region-scheduler/rpc";
import type { Db } from "../db/client";
import { auditLog, blocks, capacitySamples, marketOrders, nodes } from "../db/schema";
import type { Logger } from "../http/log";
import { issueNodeToken, revokeNodeToken } from "../nodes/tokens";
import type { SfComputeClient } from "../sfcompute/client";
import { isSfComputeError } from "../sfcompute/errors";
import { type MarketOrderRow, placeJournaledOrder } from "../sfcompute/journal";
import type { Node as SfNode } from "../sfcompute/schemas";
import { blockCents, centsPerNodeHour, epochSeconds } from "../sfcompute/units";
import { CAPACITY_NODE_PREFIX, type Fleet, loadFleet, nodeOfOrder, type OrderRow, recentArrivals } from "./fleet";
import { cloudInit, contractSaleGroup, fetchQuote, nodeSaleGroup } from "./market";

/** What the cycle calls on the region's scheduler. */
export type CapacityScheduler = Pick<
  RegionSchedulerRpc,
  | "capacitySnapshot"
  | "reserve"
  | "release"
  | "drain"
  | "setNodeBlock"
  | "removeNode"
  | "takeCapacityLease"
  | "releaseCapacityLease"
>;

export interface CapacityDeps {
  db: Db;
  client: SfComputeClient;
  scheduler: CapacityScheduler;
  log: Logger;
  /** The market's clock (wall time in production). */
  now: () => number;
  config: AutoscalerConfig;
  demand: DemandWindow;
  /** SF Compute's ticker for the region's GPU model (VM delivery). */
  instanceType: string;
  /** Where a node's agent reaches the control plane (written into its cloud-init). */
  agentApiUrl: string;
  /** Where to buy when the plan names no zone (no quote said where). */
  defaultZone: string;
  /** An 8-GPU node's CPU and memory, until its agent reports them. */
  nodeShape: { cpuMilli: number; memoryMib: number };
  /** A node's agent ingress for its boot script (config.ts nodeIngressFromEnv); absent: none. */
  nodeIngress?: ((nodeId: string) => { ingress_port: number; ingress_url: string }) | null;
}

export interface CycleReport {
  region: string;
  plan: CapacityPlan;
  bought: string[];
  failed: { action: string; error: string }[];
}

const minuteOf = (t: number) => new Date(Math.floor(t / MINUTE_MS) * MINUTE_MS).toISOString();

/** How long a capacity cycle's lease on its region lasts if the cycle dies without releasing it. */
export const CYCLE_LEASE_MS = 10 * MINUTE_MS;

/** Another cycle of the region is still running (it holds the region's lease): this one does nothing. */
export class CycleSkipped extends Error {
  constructor(
    readonly region: string,
    readonly until: number,
  ) {
    super(`another capacity cycle of ${region} is running (its lease lasts until ${new Date(until).toISOString()})`);
    this.name = "CycleSkipped";
  }
}

/**
 * One minute's capacity work for a region, under the region's lease (the scheduler's
 * takeCapacityLease): a cycle that outlasts its minute is never run beside the next one. Throws
 * CycleSkipped when another cycle holds it.
 */
export async function runCapacityCycle(deps: CapacityDeps, region: string): Promise<CycleReport> {
  const holder = crypto.randomUUID();
  const lease = await deps.scheduler.takeCapacityLease(holder, CYCLE_LEASE_MS);
  if (!lease.ok) throw new CycleSkipped(region, lease.until);
  try {
    return await cycle(deps, region);
  } finally {
    await deps.scheduler.releaseCapacityLease(holder).catch((error: unknown) =>
      deps.log.warn("capacity.lease_not_released", {
        region,
        error: error instanceof Error ? error.message : String(error),
      }),
    );
  }
}

async function cycle(deps: CapacityDeps, region: string): Promise<CycleReport> {
  const { db, client, scheduler, log } = deps;
  const now = deps.now();
  const failed: CycleReport["failed"] = [];
  const attempt = async (what: string, fn: () => Promise<unknown>) => {
    try {
      await fn();
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      failed.push({ action: what, error: message });
      log.warn("capacity.action_failed", { region, action: what, error: message });
    }
  };

  // 1. What earlier cycles started; blocks whose time is over.
  const market = await client.listNodes();
  await attempt("follow", () => followOrders(deps, region, market, now));
  await db
    .update(blocks)
    .set({ status: "expired" })
    .where(and(eq(blocks.region, region), eq(blocks.status, "active"), lte(blocks.endAt, new Date(now))));
  const marketAfter = await client.listNodes();

  // 2. The fleet and demand.
  let snapshot = await scheduler.capacitySnapshot();
  let forgotten = 0;
  await attempt("forget_released", async () => {
    forgotten = await forgetReleased(deps, region, snapshot);
  });
  if (forgotten > 0) snapshot = await scheduler.capacitySnapshot();
  const fleet = await loadFleet(db, region, deps.config.gpuModel, marketAfter, snapshot, now);
  await recordSample(db, region, snapshot, now);
  const concurrency = await db
    .select({ at: capacitySamples.at, gpus: capacitySamples.demandGpus })
    .from(capacitySamples)
    .where(
      and(
        eq(capacitySamples.region, region),
        gt(capacitySamples.at, new Date(now - (deps.demand.levelLookbackMs ?? deps.demand.lookbackMs))),
      ),
    );
  const arrivals = await recentArrivals(db, region, now, deps.demand.lookbackMs);
  const demand = estimateDemand(
    { arrivals, concurrency: concurrency.map((c) => ({ at: c.at.getTime(), gpus: c.gpus })) },
    now,
    deps.demand,
  );

  // 3. Quotes, then the plan.
  const input: CapacityInput = {
    now,
    region,
    nodes: fleet.policyNodes,
    blocks: [],
    inflight: fleet.inflight,
    queue: fleet.queue,
    quotes: [],
    demand,
    spentCents: await spentInPeriod(db, region, now, deps.config),
    config: deps.config,
  };
  const quotes: MarketQuote[] = [];
  const contracts = await nodeContracts(client);
  for (const request of quoteRequests(input)) {
    const sellFrom =
      request.side === "sell" ? saleGroupOf(fleet, request.blockId ?? "", request, contracts)?.[0] : undefined;
    await attempt(`quote ${request.side} ${request.durationHours}h`, async () => {
      const q = await fetchQuote(client, request, deps.instanceType, now, sellFrom);
      if (q) quotes.push(q);
    });
  }
  const plan = planCapacity({ ...input, quotes });

  // 4. Carry it out.
  const bought: string[] = [];
  const minute = minuteOf(now);
  // Nodes whose drain took in this cycle: a sale's nodes are drained by the actions before it.
  const drained = new Set<string>();
  for (const [i, action] of plan.actions.entries()) {
    const what = `${action.kind}:${action.reason.rule}`;
    await attempt(what, () =>
      execute(deps, region, fleet, contracts, action, `${region}|${minute}|${i}`, bought, drained),
    );
  }

  // 5. The record.
  await db
    .insert(auditLog)
    .values({
      actorType: "system",
      actorId: "capacity.autoscaler",
      action: "capacity.plan",
      targetType: "region",
      targetId: region,
      data: {
        at: new Date(now).toISOString(),
        summary: plan.summary,
        demand,
        actions: plan.actions.map(describe),
        failed,
      },
      dedupeKey: `capacity.plan:${region}:${minute}`,
    })
    .onConflictDoNothing({ target: auditLog.dedupeKey });
  return { region, plan, bought, failed };
}

// ---- 1. following orders ------------------------------------------------------------------

/** Brings every open capacity order up to date with what SF Compute says happened. */
async function followOrders(deps: CapacityDeps, region: string, market: SfNode[], now: number): Promise<void> {
  const { db } = deps;
  const byName = new Map(market.map((n) => [n.name, n]));
  const open = await db
    .select()
    .from(marketOrders)
    .where(
      and(
        eq(marketOrders.region, region),
        inArray(marketOrders.purpose, ["capacity:buy", "capacity:extend", "capacity:sell_back"]),
        inArray(marketOrders.status, ["placing", "pending"]),
      ),
    );
  const errors: string[] = [];
  for (const order of open) {
    const nodeId = nodeOfOrder(order);
    const sf = byName.get(nodeId);
    try {
      if (order.purpose === "capacity:sell_back") {
        // A `pending` sale has SF Compute's order id: the market monitor follows it.
        if (order.status === "placing") await resendSale(deps, order, now);
      } else if (order.purpose === "capacity:buy") {
        // Never created, or the answer was lost before SF Compute acted: send it again, same name.
        // Looked up by name first: the listing can lag behind a create whose answer was lost, and a
        // new token for a node that exists would lock out its agent (its boot script has the first).
        const found = !sf && order.status === "placing" ? await nodeNamed(deps, nodeId) : sf;
        if (found) await settlePurchase(deps, order, found, now);
        else if (order.status === "placing" && outcomeKnown(order, now)) await createNode(deps, region, order, now);
      } else if (sf && sf.end_at != null && sf.end_at * 1000 >= order.endAt.getTime()) {
        await finishExtension(deps, order, nodeId, now);
      } else if (order.status === "placing" && !outcomeKnown(order, now)) {
        // The last send failed without an answer: it may still be under way. Looked at again later.
      } else {
        // The node's end did not move: the extension did not happen; the policy plans it again.
        await db
          .update(marketOrders)
          .set({ status: "failed", lastError: "node end unchanged", lastCheckedAt: new Date(now) })
          .where(eq(marketOrders.id, order.id));
      }
    } catch (error) {
      errors.push(`${order.idempotencyKey}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  if (errors.length > 0) throw new Error(`following ${errors.length} order(s) failed: ${errors.join("; ")}`);
}

/**
 * How long a node creation or extension that failed without an answer (a timeout, a lost
 * connection, a 5xx) is given before it is taken as not done: the Nodes API has no idempotency
 * key, and such a request may still be under way at SF Compute, where neither the node's name
 * nor its `end_at` shows it yet. Sending it again sooner could buy a node or its hours twice.
 * Three cycles: more than the client's 60 s timeout and any listing lag seen so far.
 */
export const UNKNOWN_OUTCOME_WAIT_MS = 3 * MINUTE_MS;

/** Whether a `placing` order's last send (or its journaling, if never sent) is old enough to judge. */
function outcomeKnown(order: OrderRow, now: number): boolean {
  return now - (order.lastCheckedAt ?? order.placedAt).getTime() >= UNKNOWN_OUTCOME_WAIT_MS;
}

/**
 * Sends again, with its own key, a sell-back whose send got no answer (or was never made): SF
 * Compute's orders API executes a key once and answers a repeat with the first order (reference
 * §12), so the sale is either acknowledged (its row gets the order id; the market monitor follows
 * it) or refused (`failed`: no longer in flight, its node may be sold from a later hour). Left
 * `placing`, its node would be excluded from sale by the policy, drained, until its block ends.
 * Sent even once the sale's start has passed: a sale SF Compute never got is then refused (a start
 * must be now or a future hour), one it did get is answered with its id; taking it as not done
 * without asking could leave a sale that happened unrecorded.
 */
async function resendSale(deps: CapacityDeps, order: OrderRow, now: number): Promise<void> {
  const row = await placeJournaledOrder(
    deps.db,
    deps.client,
    {
      region: order.region,
      side: "sell",
      instanceType: order.instanceType,
      zone: order.zone ?? undefined,
      contractId: order.contractId ?? undefined,
      quantity: order.quantity,
      startAt: order.startAt,
      endAt: order.endAt,
      // The body sellBack sent (with no flags): a key repeated with another body may be refused.
      limitPrice: blockCents(order.limitPriceCents),
      purpose: order.purpose ?? undefined,
      blockId: order.blockId ?? undefined,
      idempotencyKey: order.idempotencyKey,
    },
    new Date(now),
  );
  if (row.status === "failed") throw new Error(`sell order refused: ${row.lastError}`);
}

/** SF Compute's node of this name, or null when it has none (any other error throws). */
async function nodeNamed(deps: CapacityDeps, name: string): Promise<SfNode | null> {
  try {
    return await deps.client.getNode(name);
  } catch (error) {
    if (isSfComputeError(error) && error.status === 404) return null;
    throw error;
  }
}

async function settlePurchase(deps: CapacityDeps, order: OrderRow, sf: SfNode, now: number): Promise<void> {
  const { db } = deps;
  const nodeId = nodeOfOrder(order);
  await db
    .update(nodes)
    .set({ sfNodeId: sf.id, zone: sf.zone ?? undefined })
    .where(eq(nodes.id, nodeId));
  if (sf.status === "failed" || sf.status === "terminated" || sf.status === "deleted") {
    await db
      .update(marketOrders)
      .set({ sfOrderId: null, status: "cancelled", cancelledAt: new Date(now), lastCheckedAt: new Date(now) })
      .where(eq(marketOrders.id, order.id));
    await releaseNode(deps, nodeId);
    await settleBlock(db, order.blockId);
    return;
  }
  // Bought once its VM exists (its time has started) or it reports running.
  const bought = sf.status === "running" || sf.current_vm != null || (sf.vms?.data.length ?? 0) > 0;
  await db
    .update(marketOrders)
    .set({
      status: bought ? "filled" : "pending",
      zone: sf.zone ?? order.zone,
      filledAt: bought ? new Date(now) : null,
      lastCheckedAt: new Date(now),
      lastError: null,
    })
    .where(eq(marketOrders.id, order.id));
  if (bought) await settleBlock(db, order.blockId);
}

/** A block is active once any of its nodes is bought, cancelled if none could be. */
async function settleBlock(db: Db, blockId: string | null): Promise<void> {
  if (!blockId) return;
  const orders = await db
    .select({ status: marketOrders.status })
    .from(marketOrders)
    .where(and(eq(marketOrders.blockId, blockId), eq(marketOrders.purpose, "capacity:buy")));
  const filled = orders.filter((o) => o.status === "filled").length;
  const open = orders.filter((o) => o.status === "placing" || o.status === "pending").length;
  const status = filled > 0 ? "active" : open > 0 ? "pending" : "cancelled";
  await db
    .update(blocks)
    .set(filled > 0 ? { status, nodeCount: filled + open } : { status })
    .where(eq(blocks.id, blockId));
}

async function finishExtension(deps: CapacityDeps, order: OrderRow, nodeId: string, now: number): Promise<void> {
  await deps.db
    .update(marketOrders)
    .set({ status: "filled", filledAt: new Date(now), lastCheckedAt: new Date(now), lastError: null })
    .where(eq(marketOrders.id, order.id));
  if (order.blockId) {
    await deps.db.update(nodes).set({ blockId: order.blockId }).where(eq(nodes.id, nodeId));
    await deps.db.update(blocks).set({ status: "active" }).where(eq(blocks.id, order.blockId));
  }
  await deps.scheduler.setNodeBlock(nodeId, order.blockId, order.endAt.getTime());
}

// ---- 4. the actions ---------------------------------------------------------------------

async function execute(
  deps: CapacityDeps,
  region: string,
  fleet: Fleet,
  contracts: ContractIndex,
  action: PlanAction,
  intent: string,
  bought: string[],
  drained: Set<string>,
): Promise<void> {
  switch (action.kind) {
    case "buy":
      bought.push(...(await buy(deps, region, action, intent)));
      return;
    case "extend":
      await extend(deps, region, fleet, action, intent);
      return;
    case "sell_back":
      await sellBack(deps, region, fleet, contracts, action, drained);
      return;
    case "drain":
      await drainNode(deps, action.nodeId);
      drained.add(action.nodeId);
      return;
    case "release":
      await releaseNode(deps, action.nodeId);
      return;
    case "hold_headroom":
      await holdHeadroom(deps, region, action.gpuModel, action.gpus, action.reason.message);
      return;
    case "hold":
      return;
  }
}

/**
 * The region's scheduler drains the node, then our row says `draining`. Drained: it answers
 * `draining`, or `lost` (it comes back draining), or does not know the node yet and keeps the drain
 * for its registration (`pending`: a node written off before its agent came). Anything else throws,
 * and the row is left as it was: the policy plans the drain again next minute.
 */
async function drainNode(deps: CapacityDeps, nodeId: string): Promise<void> {
  const result = await deps.scheduler.drain(nodeId);
  if (!result.ok && !(result.state === "unknown" && result.pending)) {
    throw new Error(`node ${nodeId} not drained: the scheduler answers ${result.state}`);
  }
  await deps.db.update(nodes).set({ state: "draining" }).where(eq(nodes.id, nodeId));
}

async function buy(
  deps: CapacityDeps,
  region: string,
  action: Extract<PlanAction, { kind: "buy" }>,
  intent: string,
): Promise<string[]> {
  const { db } = deps;
  const now = deps.now();
  const start = marketNow(now);
  const blockId = await uuidOf(intent);
  const lastEnd = action.endAt + (action.nodes - 1) * action.endStepMs;
  await recordBlock(deps, region, blockId, action, action.nodes, start, lastEnd);
  const perNodeHour = perNodeHourLimit(action.limitPriceCents, action.nodes, start, action.endAt);
  const ids: string[] = [];
  const errors: string[] = [];
  for (let i = 0; i < action.nodes; i++) {
    const nodeId = `${CAPACITY_NODE_PREFIX}${blockId.slice(0, 8)}-${i}`;
    const endAt = action.endAt + i * action.endStepMs;
    await db
      .insert(nodes)
      .values({
        id: nodeId,
        blockId,
        region,
        zone: action.zone,
        gpuModel: action.gpuModel,
        gpuCount: 8,
        cpuMilli: deps.nodeShape.cpuMilli,
        memoryMib: deps.nodeShape.memoryMib,
        state: "provisioning",
      })
      .onConflictDoNothing();
    const [order] = await db
      .insert(marketOrders)
      .values({
        idempotencyKey: `${nodeId}|buy|${new Date(start).toISOString()}`,
        region,
        side: "buy",
        instanceType: deps.instanceType,
        zone: action.zone || null,
        quantity: 1,
        startAt: new Date(start),
        endAt: new Date(endAt),
        limitPriceCents: Math.ceil((perNodeHour * (endAt - start)) / HOUR_MS),
        purpose: "capacity:buy",
        blockId,
        placedAt: new Date(now),
      })
      .onConflictDoNothing({ target: marketOrders.idempotencyKey })
      .returning();
    if (!order) continue; // this cycle ran before and placed it
    try {
      if (await createNode(deps, region, order, now)) ids.push(nodeId);
    } catch (error) {
      errors.push(`${nodeId}: ${String(error)}`);
    }
  }
  if (errors.length > 0) throw new Error(`${errors.length} of ${action.nodes} nodes not ordered: ${errors.join("; ")}`);
  return ids;
}

/**
 * Issues the node's agent token and asks SF Compute for the node, with the token in its cloud-init.
 * True when SF Compute took the request; a refusal releases the node; anything else (a timeout, a
 * lost answer) leaves the order `placing` for the next cycle, which looks the node up by name first.
 */
async function createNode(deps: CapacityDeps, region: string, order: OrderRow, now: number): Promise<boolean> {
  const { db, client } = deps;
  const nodeId = nodeOfOrder(order);
  const token = await issueNodeToken(db, nodeId);
  if (!token) throw new Error(`node ${nodeId} has no row to issue a token for`);
  // The order's limit covers [start, end) exactly (a "now" block has a part-hour): back to a node-hour rate.
  const hours = (order.endAt.getTime() - order.startAt.getTime()) / HOUR_MS;
  const zone = order.zone || deps.defaultZone;
  try {
    const [node] = await client.createNodes({
      desired_count: 1,
      names: [nodeId],
      node_type: "reserved",
      zone,
      end_at: epochSeconds(order.endAt.getTime() / 1000),
      max_price_per_node_hour: centsPerNodeHour(Math.floor(order.limitPriceCents / hours)),
      cloud_init_user_data: cloudInit({
        api_url: deps.agentApiUrl,
        node_token: token,
        node_id: nodeId,
        region,
        zone,
        gpu_model: deps.config.gpuModel,
        ...(deps.nodeIngress?.(nodeId) ?? {}),
      }),
    });
    await db
      .update(marketOrders)
      .set({ status: "pending", zone: node?.zone ?? order.zone, lastError: null, lastCheckedAt: new Date(now) })
      .where(eq(marketOrders.id, order.id));
    if (node)
      await db
        .update(nodes)
        .set({ sfNodeId: node.id, zone: node.zone ?? undefined })
        .where(eq(nodes.id, nodeId));
    deps.log.info("capacity.node_ordered", { region, node_id: nodeId, sf_node_id: node?.id });
    return true;
  } catch (error) {
    // A 409 is the name taken: the node exists (an earlier answer was lost); the next cycle finds it.
    const refused =
      isSfComputeError(error) && error.status >= 400 && error.status < 500 && error.status !== 409 && !error.transient;
    await db
      .update(marketOrders)
      .set({ status: refused ? "failed" : "placing", lastError: String(error), lastCheckedAt: new Date(now) })
      .where(eq(marketOrders.id, order.id));
    if (refused) {
      await releaseNode(deps, nodeId);
      await settleBlock(db, order.blockId);
    }
    throw error;
  }
}

async function extend(
  deps: CapacityDeps,
  region: string,
  fleet: Fleet,
  action: Extract<PlanAction, { kind: "extend" }>,
  intent: string,
): Promise<void> {
  const { db, client } = deps;
  const now = deps.now();
  const blockId = await uuidOf(`${intent}|extend`);
  await recordBlock(deps, region, blockId, action, action.nodeIds.length, action.startAt, action.endAt);
  const perNodeHour = perNodeHourLimit(action.limitPriceCents, action.nodeIds.length, action.startAt, action.endAt);
  const hours = Math.round((action.endAt - action.startAt) / HOUR_MS);
  const errors: string[] = [];
  for (const nodeId of action.nodeIds) {
    const sfId = fleet.market.get(nodeId)?.id;
    if (!sfId) continue;
    const idempotencyKey = `${nodeId}|extend|${new Date(action.endAt).toISOString()}`;
    const [inserted] = await db
      .insert(marketOrders)
      .values({
        idempotencyKey,
        region,
        side: "buy",
        instanceType: deps.instanceType,
        zone: action.zone,
        quantity: 1,
        startAt: new Date(action.startAt),
        endAt: new Date(action.endAt),
        limitPriceCents: perNodeHour * hours,
        purpose: "capacity:extend",
        blockId,
        placedAt: new Date(now),
      })
      .onConflictDoNothing({ target: marketOrders.idempotencyKey })
      .returning();
    // The same extension tried before and `failed` (refused, or its node's end did not move): the
    // policy planned it again, so it is sent again, at this plan's limit. One still `placing` or
    // `pending` is followed by followOrders; a `filled` one is done.
    const order =
      inserted ??
      (
        await db
          .update(marketOrders)
          .set({
            status: "placing",
            limitPriceCents: perNodeHour * hours,
            blockId,
            placedAt: new Date(now),
            lastError: null,
            lastCheckedAt: new Date(now),
          })
          .where(and(eq(marketOrders.idempotencyKey, idempotencyKey), eq(marketOrders.status, "failed")))
          .returning()
      )[0];
    if (!order) continue;
    try {
      await client.extendNode(sfId, {
        duration_seconds: hours * 3600,
        max_price_per_node_hour: centsPerNodeHour(perNodeHour),
      });
      await finishExtension(deps, order, nodeId, now);
    } catch (error) {
      const refused = isSfComputeError(error) && error.status >= 400 && error.status < 500 && !error.transient;
      await db
        .update(marketOrders)
        .set({ status: refused ? "failed" : "placing", lastError: String(error), lastCheckedAt: new Date(now) })
        .where(eq(marketOrders.id, order.id));
      errors.push(`${nodeId}: ${String(error)}`);
    }
  }
  if (errors.length > 0) throw new Error(`extension failed for ${errors.join("; ")}`);
}

/**
 * A block row for a buy or an extension, `pending` until a node of it is bought. Its price is the
 * limit: the Nodes API does not report what a purchase cost.
 */
async function recordBlock(
  deps: CapacityDeps,
  region: string,
  blockId: string,
  action: { zone: string; gpuModel: string; limitPriceCents: number },
  nodeCount: number,
  startAt: number,
  endAt: number,
): Promise<void> {
  await deps.db
    .insert(blocks)
    .values({
      id: blockId,
      region,
      zone: action.zone,
      instanceType: deps.instanceType,
      gpuModel: action.gpuModel,
      nodeCount,
      startAt: new Date(startAt),
      endAt: new Date(endAt),
      priceCents: action.limitPriceCents,
      status: "pending",
    })
    .onConflictDoNothing();
}

type ContractIndex = Map<string, string[]>;

/** Our node contracts by sale group. */
async function nodeContracts(client: SfComputeClient): Promise<ContractIndex> {
  const out: ContractIndex = new Map();
  for (const c of await client.listContracts({ include_nodes: true })) {
    if (c.status !== "active" || !c.is_node) continue;
    const key = contractSaleGroup(c);
    out.set(key, [...(out.get(key) ?? []), c.id]);
  }
  return out;
}

/** The contracts of the sale group of a block's nodes ending where a sell request ends, if the group is whole. */
function saleGroupOf(
  fleet: Fleet,
  blockId: string,
  request: { startAt: number | "now"; durationHours: number },
  contracts: ContractIndex,
): string[] | undefined {
  const end = (request.startAt === "now" ? 0 : request.startAt) + request.durationHours * HOUR_MS;
  const node = fleet.policyNodes.find((n) => n.blockId === blockId && n.endAt === end && n.sellGroup);
  return node?.sellGroup ? contracts.get(node.sellGroup) : undefined;
}

async function sellBack(
  deps: CapacityDeps,
  region: string,
  fleet: Fleet,
  contracts: ContractIndex,
  action: Extract<PlanAction, { kind: "sell_back" }>,
  drained: Set<string>,
): Promise<void> {
  const groups = new Set(action.nodeIds.map((id) => fleet.market.get(id)).map((n) => (n ? nodeSaleGroup(n) : "")));
  const [group] = [...groups];
  const ids = group ? (contracts.get(group) ?? []) : [];
  // Every node of the group is sold, so which contract is which node does not matter; anything
  // else cannot be told apart and is not sold.
  if (groups.size !== 1 || ids.length !== action.nodeIds.length) {
    throw new Error(`sale group of ${action.nodeIds.join(",")} does not match its contracts`);
  }
  // The plan saw these nodes idle at the start of the cycle. Sold only if each one's drain took in
  // this cycle and, looked at again after it, none has work: the scheduler may have placed a job on
  // an idle node while the quotes were fetched, and work on a sold node is cut off at the sale.
  const undrained = action.nodeIds.filter((id) => !drained.has(id));
  if (undrained.length > 0) throw new Error(`not sold: ${undrained.join(",")} not drained`);
  const live = await deps.scheduler.capacitySnapshot();
  const busy = action.nodeIds.filter((id) => live.running.some((r) => r.node_id === id));
  if (busy.length > 0) throw new Error(`not sold: ${busy.join(",")} still run work`);
  const perNode = Math.floor(action.minPriceCents / action.nodeIds.length);
  const refused: string[] = [];
  const unanswered: string[] = [];
  for (const [i, contractId] of ids.entries()) {
    let order: MarketOrderRow;
    try {
      order = await placeJournaledOrder(
        deps.db,
        deps.client,
        {
          region,
          side: "sell",
          instanceType: deps.instanceType,
          zone: fleet.market.get(action.nodeIds[i]!)?.zone ?? undefined,
          contractId,
          quantity: 1,
          startAt: new Date(action.startAt),
          endAt: new Date(action.endAt),
          limitPrice: blockCents(perNode),
          purpose: "capacity:sell_back",
          blockId: action.blockId,
          idempotencyKey: `${action.nodeIds[i]}|sell|${new Date(action.startAt).toISOString()}`,
        },
        new Date(deps.now()),
      );
    } catch (error) {
      // An unknown outcome: its row is left `placing`, sent again next minute (resendSale). The
      // group's other nodes are still offered now, each on its own contract: held back, they
      // could miss the hour.
      unanswered.push(`${action.nodeIds[i]} (${error instanceof Error ? error.message : String(error)})`);
      continue;
    }
    // The journal answers a refusal with the `failed` row instead of throwing, and answers a key
    // refused earlier this hour the same way.
    if (order.status === "failed") refused.push(`${action.nodeIds[i]} (${order.lastError})`);
  }
  const why = [
    ...(refused.length > 0 ? [`not sold: SF Compute refused the sell orders of ${refused.join(", ")}`] : []),
    ...(unanswered.length > 0 ? [`no answer to the sell orders of ${unanswered.join(", ")} (sent again)`] : []),
  ];
  if (why.length > 0) throw new Error(why.join("; "));
}

/**
 * The node's time is over or it never came: its token stops working, the region's scheduler forgets
 * it, and it is released. In that order: if the scheduler cannot be reached, the node is not yet
 * released and the next cycle plans its release again.
 */
async function releaseNode(deps: CapacityDeps, nodeId: string): Promise<void> {
  await revokeNodeToken(deps.db, nodeId);
  await deps.scheduler.removeNode(nodeId);
  await deps.db.update(nodes).set({ state: "released" }).where(eq(nodes.id, nodeId));
}

/**
 * Nodes the scheduler still holds that are released here (a release from before the scheduler
 * forgot nodes, or one whose scheduler call was lost): forgotten now. Returns how many.
 */
async function forgetReleased(deps: CapacityDeps, region: string, snapshot: CapacitySnapshot): Promise<number> {
  const held = snapshot.nodes.map((n) => n.node_id);
  if (held.length === 0) return 0;
  const released = await deps.db
    .select({ id: nodes.id })
    .from(nodes)
    .where(and(eq(nodes.region, region), eq(nodes.state, "released"), inArray(nodes.id, held)));
  for (const { id } of released) await deps.scheduler.removeNode(id);
  return released.length;
}

/** One Fast reservation per minute, replacing the last one; it lapses by itself if a cycle is missed. */
async function holdHeadroom(
  deps: CapacityDeps,
  region: string,
  gpuModel: "H100" | "H200",
  gpus: number,
  reason: string,
): Promise<void> {
  const now = deps.now();
  const id = (t: number) => `headroom:${region}:${minuteOf(t)}`;
  if (gpus <= 0) {
    await deps.scheduler.release(id(now - MINUTE_MS));
    return;
  }
  // One call: last minute's reservation is handed over to this one in the same transaction. A
  // release then a reserve would let the packer give the headroom to waiting Flex work in between.
  const held = await deps.scheduler.reserve({
    reservation_id: id(now),
    gpu_model: gpuModel,
    gpu_count: gpus,
    tier: "fast",
    expires_at: now + 3 * MINUTE_MS,
    reason,
    replaces: id(now - MINUTE_MS),
  });
  if (!held.ok) deps.log.info("capacity.headroom_short", { region, gpus, message: held.message });
}

// ---- the record ---------------------------------------------------------------------------

async function recordSample(
  db: Db,
  region: string,
  snapshot: Awaited<ReturnType<CapacityScheduler["capacitySnapshot"]>>,
  now: number,
): Promise<void> {
  const queued = (tier: string) => snapshot.queues.find((q) => q.tier === tier)?.queued_gpus ?? 0;
  const busy = snapshot.by_model.reduce((a, m) => a + m.busy_gpus, 0);
  await db
    .insert(capacitySamples)
    .values({
      region,
      at: new Date(Math.floor(now / MINUTE_MS) * MINUTE_MS),
      demandGpus: busy + queued("fast") + queued("flex"),
      busyGpus: busy,
      queuedFastGpus: queued("fast"),
      queuedFlexGpus: queued("flex"),
      totalGpus: snapshot.by_model.reduce((a, m) => a + m.total_gpus, 0),
      freeGpus: snapshot.by_model.reduce((a, m) => a + m.free_gpus, 0),
    })
    .onConflictDoNothing();
}

/** What capacity orders committed within the budget period (their limits: an upper bound of the cost). */
async function spentInPeriod(db: Db, region: string, now: number, config: AutoscalerConfig): Promise<number> {
  if (!config.budget) return 0;
  const [row] = await db
    .select({ cents: dsql<string>`coalesce(sum(${marketOrders.limitPriceCents}), 0)` })
    .from(marketOrders)
    .where(
      and(
        eq(marketOrders.region, region),
        inArray(marketOrders.purpose, ["capacity:buy", "capacity:extend"]),
        inArray(marketOrders.status, ["placing", "pending", "filled"]),
        gt(marketOrders.placedAt, new Date(now - config.budget.periodMs)),
      ),
    );
  return Number(row?.cents ?? 0);
}

function describe(a: PlanAction): Record<string, unknown> {
  const { reason, ...rest } = a;
  return { ...rest, rule: reason.rule, message: reason.message };
}

/** A stable UUID for an intent (the same plan step gets the same block id if the cycle runs twice). */
async function uuidOf(text: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  const hex = [...digest.slice(0, 16)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-5${hex.slice(13, 16)}-${((Number.parseInt(hex[16]!, 16) & 3) | 8).toString(16)}${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}
