/**
 * The two policies Scalar's is measured against, on the same fleet view and the same market:
 * - static: a fixed fleet sized to the window's 95th-percentile concurrent demand, bought once for
 *   the whole window at the start;
 * - reactive: beta9's on-demand loop: when work waits and nothing is on its way for it, buy one
 *   short block for it; keep a node while it is busy, let it lapse when idle.
 * Both return the same plan actions as `planCapacity`, so the replay executes all three alike.
 */
import {
  type AutoscalerConfig,
  blockEnd,
  blockPrice,
  type CapacityInput,
  type FleetNode,
  HOUR_MS,
  type MarketQuote,
  marketNow,
  type PlanAction,
  type QuoteRequest,
  ratePerGpuHour,
} from "../../core/autoscaler";
import { GPUS_PER_NODE } from "../../core/schemas/common";

export interface BaselinePolicy {
  name: "static" | "reactive";
  quoteRequests(input: CapacityInput): QuoteRequest[];
  plan(input: CapacityInput): PlanAction[];
}

const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);

function released(input: CapacityInput): PlanAction[] {
  return input.nodes
    .filter((n) => n.endAt <= input.now)
    .map((n) => ({
      kind: "release" as const,
      nodeId: n.id,
      blockId: n.blockId,
      reason: { rule: "block_ended" as const, message: "block ended" },
    }));
}

function limitAbove(cfg: AutoscalerConfig, q: MarketQuote | undefined, nodes: number, start: number, end: number) {
  const rate = q ? ratePerGpuHour(q.priceCents, q.nodes, q.startAt, q.endAt) : cfg.fast.limitCentsPerGpuHour;
  return blockPrice(rate * (1 + cfg.limitSlackBps / 10_000), nodes, start, end);
}

/**
 * A fleet of `nodes` bought at the start for the whole window, never extended, never sold. Nodes
 * the market does not fill are bought again the next minute until the fleet is whole.
 */
export function staticFleet(nodes: number, windowEnd: number): BaselinePolicy {
  const missing = (input: CapacityInput) =>
    input.now < windowEnd - HOUR_MS
      ? nodes -
        input.nodes.filter((n) => n.endAt > input.now).length -
        sum(input.inflight.filter((o) => o.kind === "buy").map((o) => o.nodes))
      : 0;
  const hours = (input: CapacityInput) => Math.ceil((windowEnd - marketNow(input.now)) / HOUR_MS);
  return {
    name: "static",
    quoteRequests: (input) =>
      missing(input) > 0
        ? [{ side: "buy", gpuModel: input.config.gpuModel, nodes: 1, startAt: "now", durationHours: hours(input) }]
        : [],
    plan: (input) => {
      const actions = released(input);
      const count = missing(input);
      if (count <= 0) return actions;
      const start = marketNow(input.now);
      const end = blockEnd(start, hours(input));
      const q = input.quotes.find((x) => x.side === "buy" && x.blockId === undefined);
      actions.push({
        kind: "buy",
        tier: "flex",
        gpuModel: input.config.gpuModel,
        zone: q?.zone ?? input.config.zone ?? "",
        nodes: count,
        startAt: "now",
        endAt: end,
        endStepMs: 0,
        limitPriceCents: limitAbove(input.config, q, count, start, end),
        reason: { rule: "steady_base", message: `static fleet: ${count} of ${nodes} nodes to buy` },
      });
      return actions;
    },
  };
}

function endingNodes(input: CapacityInput): { busy: FleetNode[]; idle: FleetNode[] } {
  const extending = new Set(input.inflight.filter((o) => o.kind === "extend").flatMap((o) => o.nodeIds ?? []));
  const horizon = input.now + Math.max(input.config.leadTimeMs, input.config.extend.leadMs);
  const ending = input.nodes.filter(
    (n) => n.endAt > input.now && n.endAt <= horizon && n.state !== "draining" && !extending.has(n.id),
  );
  return { busy: ending.filter((n) => n.work.length > 0), idle: ending.filter((n) => n.work.length === 0) };
}

function waitingShortNodes(input: CapacityInput): number {
  const horizon = input.now + Math.max(input.config.leadTimeMs, input.config.extend.leadMs);
  const incoming =
    sum(input.nodes.filter((n) => n.state === "booting" && n.endAt > horizon).map((n) => n.gpus)) +
    sum(input.inflight.filter((o) => o.kind === "buy").map((o) => o.nodes * GPUS_PER_NODE));
  const waiting = sum(input.queue.map((j) => j.gpus));
  return Math.ceil(Math.max(0, waiting - incoming) / GPUS_PER_NODE);
}

/**
 * Hours of the block bought for waiting work: 1, or long enough for the longest estimate among the
 * waiting jobs (from when the nodes are up), since the packer places a job with an estimate only on
 * a node whose block outlives it.
 */
function reactiveBlockHours(input: CapacityInput): number {
  const lead = input.config.leadTimeMs;
  return Math.max(1, ...input.queue.map((j) => Math.ceil((lead + (j.estimateMs ?? 0)) / HOUR_MS)));
}

/**
 * Buy 1-hour blocks for waiting work (longer when a waiting job's estimate needs it), extend busy
 * nodes by an hour, let idle ones lapse.
 */
export const reactive: BaselinePolicy = {
  name: "reactive",
  quoteRequests: (input) => {
    const requests: QuoteRequest[] = [];
    const short = waitingShortNodes(input);
    const gpuModel = input.config.gpuModel;
    if (short > 0) {
      requests.push({ side: "buy", gpuModel, nodes: short, startAt: "now", durationHours: reactiveBlockHours(input) });
    }
    for (const n of endingNodes(input).busy) {
      requests.push({
        side: "buy",
        gpuModel,
        nodes: 1,
        startAt: n.endAt,
        durationHours: 1,
        blockId: n.blockId,
        zone: n.zone,
      });
    }
    return requests;
  },
  plan: (input) => {
    const cfg = input.config;
    const actions = released(input);
    const { busy, idle } = endingNodes(input);
    for (const n of busy) {
      const q = input.quotes.find((x) => x.side === "buy" && x.blockId === n.blockId && x.startAt === n.endAt);
      const end = n.endAt + HOUR_MS;
      actions.push({
        kind: "extend",
        blockId: n.blockId,
        nodeIds: [n.id],
        gpuModel: cfg.gpuModel,
        zone: n.zone,
        startAt: n.endAt,
        endAt: end,
        limitPriceCents: limitAbove(cfg, q, 1, n.endAt, end),
        reason: { rule: "extend_busy", message: "busy at its end" },
      });
    }
    for (const n of idle) {
      actions.push({
        kind: "drain",
        nodeId: n.id,
        blockId: n.blockId,
        reason: { rule: "idle_no_extend", message: "idle at its end" },
      });
    }
    const short = waitingShortNodes(input);
    if (short > 0) {
      const q = input.quotes.find((x) => x.side === "buy" && x.blockId === undefined);
      const start = marketNow(input.now);
      const end = q?.endAt ?? blockEnd(start, reactiveBlockHours(input));
      actions.push({
        kind: "buy",
        tier: "fast",
        gpuModel: cfg.gpuModel,
        zone: q?.zone ?? cfg.zone ?? "",
        nodes: short,
        startAt: "now",
        endAt: end,
        endStepMs: 0,
        limitPriceCents: limitAbove(cfg, q, short, start, end),
        reason: { rule: "fast_queue", message: `${short} node(s) for waiting work` },
      });
    }
    return actions;
  },
};
