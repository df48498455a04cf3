/**
 * The Fast and Flex autoscaler: one pure decision per cycle from the region's state, market quotes
 * and expected demand to a plan of actions, each with its reason. `quoteRequests` says which quotes
 * the decision needs; the caller fetches them and calls `planCapacity`.
 *
 * The order of the rules is the order of what matters most: work already running is never cut off
 * (busy nodes are extended), then Fast work waiting and Fast headroom, then Flex (at a good price or
 * at its deadline), then what is left over is sold back. The budget cap trims in that same order.
 */
import { GPUS_PER_NODE } from "../schemas/common";
import {
  blockEnd,
  blockPrice,
  formatInstant,
  formatRate,
  HOUR_MS,
  hoursBetween,
  marketNow,
  nextHour,
  ratePerGpuHour,
} from "./market-time";
import {
  type AutoscalerConfig,
  type CapacityInput,
  type CapacityPlan,
  DEFAULT_BOOT_TIMEOUT_MS,
  DEFAULT_CORDON_DRAIN_AFTER_MS,
  type FleetNode,
  type MarketQuote,
  type PlanAction,
  type QueuedJob,
  type QuoteRequest,
  type Reason,
  type RunningWork,
} from "./types";

/** What the rules see after the fleet is sorted into ending, surviving and incoming capacity. */
interface Assessment {
  /** Nodes held past now and not being sold. */
  held: FleetNode[];
  /** Waiting jobs estimated to run longer than any block the market quoted: nothing is bought for them. */
  uncoverable: QueuedJob[];
  /**
   * Waiting Fast jobs with estimates that fit on a ready node's free GPUs but outlast its block: that
   * node is extended to cover them (`quote`: the extension to place, null before quotes are known).
   */
  extendFor: EstimateExtension[];
  /** Decisions cover capacity up to this instant: a buy placed now is usable by then. */
  horizon: number;
  /** Nodes whose block is over. */
  ended: FleetNode[];
  /** Nodes ending by the horizon with work that continues past their end. */
  busyEnding: FleetNode[];
  /** Nodes ending by the horizon with nothing that outlasts them. */
  idleEnding: FleetNode[];
  /** Ready, not draining, lasting past the horizon (or already being extended). */
  surviving: FleetNode[];
  readyFreeGpus: number;
  wholeFreeNodes: number;
  incomingGpus: number;
  busyGpus: number;
  headroomGpus: number;
  headroomWholeNodes: number;
  queuedFast: QueuedJob[];
  queuedFlex: QueuedJob[];
  queuedFastGpus: number;
  queuedFlexGpus: number;
  /** GPUs the Fast rules must add: waiting Fast work plus the headroom deficit, after capacity on its way. */
  fastShortGpus: number;
  /** GPUs waiting Flex work needs beyond what is on its way and not taken by Fast. */
  flexShortGpus: number;
  /** Steady demand not yet covered by long blocks: buys and extensions up to this size go long. */
  steadyGapGpus: number;
  /** Idle nodes with future hours beyond the next hour, candidates for a sell-back. */
  sellCandidates: FleetNode[];
  /** Drained nodes with nothing left on them and future hours to sell. */
  drainedIdle: FleetNode[];
  /** Live nodes by sale group: a group is sold whole or not at all. */
  sellGroups: Map<string, FleetNode[]>;
  surplusGpus: number;
  sellWindowOpen: boolean;
}

const nodesFor = (gpus: number) => Math.ceil(gpus / GPUS_PER_NODE);

/** A ready node to extend so that waiting Fast jobs with estimates can start on it. */
interface EstimateExtension {
  node: FleetNode;
  jobs: QueuedJob[];
  /** The block must last until then: the longest of the jobs' estimated ends if they start a cycle from now. */
  needEnd: number;
  quote: { quote: MarketQuote; rate: number } | null;
}

/**
 * The packer places a job with an estimate only on a node whose block outlives it, so a waiting
 * Fast job with an estimate may wait while free GPUs sit on nodes whose blocks end too soon (Fast
 * headroom is on short rolling blocks). Extending such a node takes a market order, not a boot: the
 * job can start within a cycle, where a new node takes minutes. Jobs are matched, longest waiting
 * first, to the ready node with free GPUs for them whose block ends latest (the shortest extension);
 * a node gets one extension, for the longest need among its jobs (`quote`: the cheapest extension
 * quote that covers it, within the Fast limit).
 */
function estimateExtensions(input: CapacityInput, ready: FleetNode[], fast: QueuedJob[]): EstimateExtension[] {
  const { now, config: cfg } = input;
  const free = new Map(ready.map((n) => [n.id, n.freeGpus]));
  const byNode = new Map<string, EstimateExtension>();
  for (const job of [...fast].sort((a, b) => b.waitedMs - a.waitedMs || a.id.localeCompare(b.id))) {
    if (!job.estimateMs || job.gpus > GPUS_PER_NODE) continue;
    const needEnd = now + cfg.cycleMs + job.estimateMs;
    // A node whose block already outlives the estimate would have taken the job: it did not fit there.
    const node = ready
      .filter((n) => n.endAt < needEnd && (free.get(n.id) ?? 0) >= job.gpus)
      .sort((a, b) => b.endAt - a.endAt || a.id.localeCompare(b.id))[0];
    if (!node) continue;
    free.set(node.id, (free.get(node.id) ?? 0) - job.gpus);
    const e = byNode.get(node.id) ?? { node, jobs: [], needEnd, quote: null };
    e.jobs.push(job);
    e.needEnd = Math.max(e.needEnd, needEnd);
    byNode.set(node.id, e);
  }
  return [...byNode.values()].map((e) => ({ ...e, quote: coveringExtension(input, e.node, e.needEnd) }));
}

/** The cheapest extension quote for one node that lasts until `needEnd`, within the Fast limit. */
function coveringExtension(
  input: CapacityInput,
  node: FleetNode,
  needEnd: number,
): { quote: MarketQuote; rate: number } | null {
  const cfg = input.config;
  let best: { quote: MarketQuote; rate: number } | null = null;
  for (const q of input.quotes) {
    if (q.side !== "buy" || q.blockId !== node.blockId || q.startAt !== node.endAt || q.endAt < needEnd) continue;
    const rate = ratePerGpuHour(q.priceCents, q.nodes, q.startAt, q.endAt);
    if (rate > cfg.fast.limitCentsPerGpuHour) continue;
    if (!best || q.priceCents / q.nodes < best.quote.priceCents / best.quote.nodes) best = { quote: q, rate };
  }
  return best;
}

/** Nodes to buy on one block for waiting jobs whose estimates outlast the usual block. */
interface CoverGroup {
  quote: { quote: MarketQuote; rate: number };
  nodes: number;
  jobs: QueuedJob[];
}

/**
 * The packer places a job with an estimated duration only on a node whose block outlives it (from
 * when the block's nodes are up), so a waiting job estimated to outlast the block the rules would
 * buy (`usualEnd`) needs a longer one. Such jobs are grouped by the cheapest block that covers each;
 * of the `nodes` to buy, each group gets what its GPUs need (longest groups first), and `rest` is
 * left for the usual block. Only nodes for those jobs are bought long, not the whole buy.
 */
function coverGroups(
  jobs: readonly QueuedJob[],
  input: CapacityInput,
  nodes: number,
  usualEnd: number,
): { groups: CoverGroup[]; rest: number; restJobs: QueuedJob[] } {
  const byEnd = new Map<number, CoverGroup & { gpus: number }>();
  const restJobs: QueuedJob[] = [];
  for (const job of jobs) {
    const needEnd = job.estimateMs ? input.now + input.config.leadTimeMs + job.estimateMs : 0;
    const quote = needEnd > usualEnd ? coveringQuote(input, needEnd) : null;
    if (!quote || quote.quote.endAt <= usualEnd) {
      restJobs.push(job);
      continue;
    }
    const group = byEnd.get(quote.quote.endAt) ?? { quote, nodes: 0, jobs: [], gpus: 0 };
    group.jobs.push(job);
    group.gpus += job.gpus;
    byEnd.set(quote.quote.endAt, group);
  }
  let rest = nodes;
  const groups: CoverGroup[] = [];
  for (const g of [...byEnd.values()].sort((x, y) => y.quote.quote.endAt - x.quote.quote.endAt)) {
    const n = Math.min(rest, nodesFor(g.gpus));
    if (n <= 0) break;
    groups.push({ quote: g.quote, nodes: n, jobs: g.jobs });
    rest -= n;
  }
  return { groups, rest, restJobs };
}

const longestEstimate = (jobs: readonly QueuedJob[]) => formatHours(Math.max(...jobs.map((j) => j.estimateMs ?? 0)));
const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);

/**
 * The end a piece of work is still expected by: its estimated end while that lies ahead, else null
 * (unknown). Work still running past its estimate proved the estimate wrong: it is treated as work
 * with no estimate, not as work about to end, or its node would be let go with it still running.
 */
function knownEnd(w: RunningWork, now: number): number | null {
  return w.expectedEndAt !== null && w.expectedEndAt > now ? w.expectedEndAt : null;
}

/** Work on a node that runs past `t` (unknown ends are assumed to). */
function continuesPast(node: FleetNode, t: number, now: number): boolean {
  return node.work.some((w) => {
    const end = knownEnd(w, now);
    return end === null || end > t;
  });
}

function bootTimedOut(n: FleetNode, input: CapacityInput): boolean {
  const limit = input.config.bootTimeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS;
  return n.state === "booting" && n.bootingSince !== undefined && input.now - n.bootingSince >= limit;
}

/** Up but taking no new work: cordoned by an operator, or its container engine hung. */
function cordoned(n: FleetNode): boolean {
  return n.cordoned === true || n.cordonedSince !== undefined;
}

function fits(job: QueuedJob, cfg: AutoscalerConfig): boolean {
  return job.gpuModels.length === 0 || job.gpuModels.includes(cfg.gpuModel);
}

function assess(input: CapacityInput): Assessment {
  const { now, config: cfg, demand } = input;
  const nodes = input.nodes.filter((n) => n.gpuModel === cfg.gpuModel);
  const extending = new Set(input.inflight.filter((o) => o.kind === "extend").flatMap((o) => o.nodeIds ?? []));
  const selling = new Set(input.inflight.filter((o) => o.kind === "sell_back").flatMap((o) => o.nodeIds ?? []));
  const horizon = now + Math.max(cfg.leadTimeMs, cfg.extend.leadMs);

  const ended = nodes.filter((n) => n.endAt <= now);
  const held = nodes.filter((n) => n.endAt > now && !selling.has(n.id));
  // Draining nodes, and nodes that never booted, are out of supply.
  const live = held.filter((n) => n.state !== "draining" && !bootTimedOut(n, input));
  // Draining nodes take no new work, but work they still run must not be cut off at their end.
  const ending = held.filter((n) => n.endAt <= horizon && !extending.has(n.id));
  const busyEnding = ending.filter((n) => continuesPast(n, n.endAt, now));
  // A cordoned node takes no work: never kept for the headroom.
  const idleEnding = ending.filter(
    (n) => n.state !== "draining" && !cordoned(n) && !bootTimedOut(n, input) && !continuesPast(n, n.endAt, now),
  );
  const surviving = live.filter((n) => n.endAt > horizon || extending.has(n.id));

  const ready = surviving.filter((n) => n.state === "ready");
  // Waiting Fast jobs a quoted extension of a ready node will take are not bought for; before quotes
  // are known none is, so the buys' quotes are asked for too.
  const extendFor = estimateExtensions(
    input,
    ready.filter((n) => !extending.has(n.id)),
    input.queue.filter((j) => j.tier === "fast" && fits(j, cfg)),
  );
  const quoted = extendFor.filter((e) => e.quote);
  const extended = new Set(quoted.flatMap((e) => e.jobs.map((j) => j.id)));
  // …and the GPUs they will take are not free for the headroom.
  const readyFreeGpus = sum(ready.map((n) => n.freeGpus)) - sum(quoted.flatMap((e) => e.jobs.map((j) => j.gpus)));
  const wholeFreeNodes = ready.filter((n) => n.work.length === 0 && n.freeGpus === n.gpus).length;
  const booting = surviving.filter((n) => n.state === "booting");
  const buying = input.inflight.filter((o) => o.kind === "buy" && o.gpuModel === cfg.gpuModel && o.endAt > horizon);
  const incomingGpus = sum(booting.map((n) => n.gpus)) + sum(buying.map((o) => o.nodes * GPUS_PER_NODE));
  const busyGpus = sum(held.map((n) => sum(n.work.map((w) => w.gpus))));

  // A job estimated to run longer than any block quoted (a block as long as the longest estimate is
  // asked for, but the market may have none) fits no node bought now (the packer wants the block to
  // outlive the estimate): buying for it would buy, again every cycle, what it cannot use.
  const longestEnd = Math.max(
    0,
    ...input.quotes
      .filter((q) => q.side === "buy" && q.blockId === undefined && q.startAt <= now + HOUR_MS)
      .map((q) => q.endAt),
  );
  const coverable = (j: QueuedJob) =>
    !j.estimateMs || longestEnd === 0 || now + cfg.leadTimeMs + j.estimateMs <= longestEnd;
  const uncoverable = input.queue.filter((j) => fits(j, cfg) && !coverable(j));
  const queue = input.queue.filter((j) => fits(j, cfg) && !extended.has(j.id) && coverable(j));
  const queuedFast = queue.filter((j) => j.tier === "fast");
  const queuedFlex = queue.filter((j) => j.tier === "flex");
  const queuedFastGpus = sum(queuedFast.map((j) => j.gpus));
  const queuedFlexGpus = sum(queuedFlex.map((j) => j.gpus));

  const headroomGpus = Math.max(cfg.fast.minHeadroomGpus, demand.fastGpusInWindow, demand.fastGpusAtRecentRate);
  const headroomWholeNodes = demand.fastWholeNodesInWindow;
  // Waiting jobs did not fit on the free GPUs there are, so they need capacity on its way; the
  // headroom is made of free GPUs, and of whole free nodes for Fast jobs of 8 GPUs or more.
  const headroomDeficit = Math.max(
    headroomGpus - readyFreeGpus,
    (headroomWholeNodes - wholeFreeNodes) * GPUS_PER_NODE,
    0,
  );
  // Capacity on its way goes to waiting Fast work, then to waiting Flex work (the packer places it
  // the moment it arrives, before the next cycle can hold it for Fast); only what is left is headroom.
  const afterFast = Math.max(0, incomingGpus - queuedFastGpus);
  const flexTakes = Math.min(queuedFlexGpus, afterFast);
  const fastShortGpus =
    Math.max(0, queuedFastGpus - incomingGpus) + Math.max(0, headroomDeficit - (afterFast - flexTakes));
  const flexShortGpus = queuedFlexGpus - flexTakes;

  const longUntil = now + cfg.steadyBlockHours * HOUR_MS;
  const longGpus =
    sum(surviving.filter((n) => n.endAt >= longUntil).map((n) => n.gpus)) +
    sum(buying.filter((o) => o.endAt >= longUntil).map((o) => o.nodes * GPUS_PER_NODE));
  const steadyGapGpus = Math.max(0, demand.steadyGpus - longGpus);

  // Sell-backs start on the next hour; they are decided just before it, when idleness is known.
  const sellStart = nextHour(now);
  const sellWindowOpen = cfg.sellBack.enabled !== false && sellStart - now <= cfg.sellBack.leadMs;
  // A node extended for waiting jobs is about to take them: not for sale.
  const extendedNodes = new Set(quoted.map((e) => e.node.id));
  const sellCandidates = ready
    .filter(
      (n) => n.work.length === 0 && n.freeGpus === n.gpus && n.endAt >= sellStart + HOUR_MS && !extendedNodes.has(n.id),
    )
    .sort((a, b) => b.endAt - a.endAt || a.id.localeCompare(b.id));
  // Drained nodes that have emptied are sold whatever the surplus: they were taken out of supply.
  const drainedIdle = held.filter(
    (n) => n.state === "draining" && n.work.length === 0 && n.endAt >= sellStart + HOUR_MS,
  );
  const sellGroups = new Map<string, FleetNode[]>();
  for (const n of held) {
    const key = n.sellGroup ?? n.id;
    sellGroups.set(key, [...(sellGroups.get(key) ?? []), n]);
  }
  const supplyGpus = sum(surviving.map((n) => n.gpus)) + sum(buying.map((o) => o.nodes * GPUS_PER_NODE));
  const keepGpus = Math.max(busyGpus + queuedFastGpus + queuedFlexGpus, demand.peakGpus) + headroomGpus;
  const surplusGpus = Math.max(0, supplyGpus - keepGpus);

  return {
    held,
    uncoverable,
    extendFor,
    horizon,
    ended,
    busyEnding,
    idleEnding,
    surviving,
    readyFreeGpus,
    wholeFreeNodes,
    incomingGpus,
    busyGpus,
    headroomGpus,
    headroomWholeNodes,
    queuedFast,
    queuedFlex,
    queuedFastGpus,
    queuedFlexGpus,
    fastShortGpus,
    flexShortGpus,
    steadyGapGpus,
    sellCandidates,
    drainedIdle,
    sellGroups,
    surplusGpus,
    sellWindowOpen,
  };
}

/** Nodes grouped by block and end, in a stable order. */
function byBlock(nodes: FleetNode[]): { blockId: string; endAt: number; zone: string; nodes: FleetNode[] }[] {
  const groups = new Map<string, { blockId: string; endAt: number; zone: string; nodes: FleetNode[] }>();
  for (const n of [...nodes].sort((a, b) => a.id.localeCompare(b.id))) {
    const key = `${n.blockId}@${n.endAt}@${n.state === "draining"}`;
    const g = groups.get(key) ?? { blockId: n.blockId, endAt: n.endAt, zone: n.zone, nodes: [] };
    g.nodes.push(n);
    groups.set(key, g);
  }
  return [...groups.values()].sort((a, b) => a.endAt - b.endAt || a.blockId.localeCompare(b.blockId));
}

/**
 * Whole hours of a "now" block that covers the longest estimate among `jobs` from when its nodes are
 * up (now + the lead time), when that is longer than every usual length; else null.
 */
function coverHours(input: CapacityInput, jobs: readonly QueuedJob[]): number | null {
  const cfg = input.config;
  const longest = Math.max(0, ...jobs.map((j) => j.estimateMs ?? 0));
  const hours = Math.ceil((cfg.leadTimeMs + longest) / HOUR_MS);
  return longest > 0 && hours > Math.max(0, ...cfg.durationsHours) ? hours : null;
}

/**
 * The block lengths quoted each cycle: the configured ones, and the Fast and steady blocks' own
 * lengths (a length the plan picks by name is always among the quotes, never snapped to another).
 */
export function quotedLengths(cfg: AutoscalerConfig): number[] {
  return [...new Set([...cfg.durationsHours, cfg.fast.blockHours, cfg.steadyBlockHours])].sort((x, y) => x - y);
}

/** The quotes `planCapacity` will look for, given the same input without quotes. */
export function quoteRequests(input: CapacityInput): QuoteRequest[] {
  const cfg = input.config;
  const a = assess(input);
  const requests: QuoteRequest[] = [];
  const buyNodes = nodesFor(a.fastShortGpus + a.flexShortGpus);
  if (buyNodes > 0) {
    for (const d of quotedLengths(cfg)) {
      requests.push({ side: "buy", gpuModel: cfg.gpuModel, nodes: buyNodes, startAt: "now", durationHours: d });
    }
    // A waiting job estimated to outlast every usual length needs a block as long as its estimate:
    // the market sells any length (up to years), and without one the job could never start. (Blocks
    // of exactly each job's length were tried: they leave no long-lived room for the next estimated
    // job, and Fast and Flex waited longer; docs/capacity_planning.md.)
    const cover = coverHours(input, [...a.queuedFast, ...a.queuedFlex]);
    if (cover !== null) {
      requests.push({
        side: "buy",
        gpuModel: cfg.gpuModel,
        nodes: buyNodes,
        startAt: "now",
        durationHours: cover,
        cover: true,
      });
    }
  }
  for (const e of a.extendFor) {
    requests.push({
      side: "buy",
      gpuModel: cfg.gpuModel,
      nodes: 1,
      startAt: e.node.endAt,
      durationHours: Math.ceil((e.needEnd - e.node.endAt) / HOUR_MS),
      blockId: e.node.blockId,
      zone: e.node.zone,
    });
  }
  const extendable = a.fastShortGpus > 0 ? [...a.busyEnding, ...a.idleEnding] : a.busyEnding;
  for (const g of byBlock(extendable)) {
    for (const d of quotedLengths(cfg).filter((h) => h <= cfg.extend.maxHours)) {
      requests.push({
        side: "buy",
        gpuModel: cfg.gpuModel,
        nodes: g.nodes.length,
        startAt: g.endAt,
        durationHours: d,
        blockId: g.blockId,
        zone: g.zone,
      });
    }
  }
  if (a.sellWindowOpen) {
    for (const g of byBlock(sellable(a))) {
      const start = nextHour(input.now);
      requests.push({
        side: "sell",
        gpuModel: cfg.gpuModel,
        nodes: g.nodes.length,
        startAt: start,
        durationHours: hoursBetween(start, g.endAt),
        blockId: g.blockId,
        zone: g.zone,
      });
    }
  }
  return requests;
}

/**
 * Idle nodes to sell in whole sale groups: emptied drained nodes, then ready idle nodes
 * (longest-lived first) up to the surplus.
 */
function sellable(a: Assessment): FleetNode[] {
  let room = Math.floor(a.surplusGpus / GPUS_PER_NODE);
  const drained = new Set(a.drainedIdle.map((n) => n.id));
  const idle = new Set([...drained, ...a.sellCandidates.map((n) => n.id)]);
  const out: FleetNode[] = [];
  const done = new Set<string>();
  for (const n of [...a.drainedIdle, ...a.sellCandidates]) {
    const key = n.sellGroup ?? n.id;
    if (done.has(key)) continue;
    done.add(key);
    const group = a.sellGroups.get(key) ?? [n];
    const fromSurplus = group.filter((m) => !drained.has(m.id)).length;
    if (fromSurplus > room || !group.every((m) => idle.has(m.id))) continue;
    out.push(...group);
    room -= fromSurplus;
  }
  return out;
}

/** The cheapest "now" buy quote among those that are long (or short) blocks, by rate. */
function bestNowQuote(input: CapacityInput, long: boolean | null): { quote: MarketQuote; rate: number } | null {
  const cfg = input.config;
  const start = marketNow(input.now);
  let best: { quote: MarketQuote; rate: number } | null = null;
  for (const q of input.quotes) {
    if (q.side !== "buy" || q.blockId !== undefined || q.gpuModel !== cfg.gpuModel) continue;
    if (q.startAt > start + HOUR_MS || q.cover) continue;
    const isLong = hoursBetween(q.startAt, q.endAt) >= cfg.steadyBlockHours;
    if (long !== null && isLong !== long) continue;
    const rate = ratePerGpuHour(q.priceCents, q.nodes, q.startAt, q.endAt);
    if (!best || rate < best.rate || (rate === best.rate && q.endAt < best.quote.endAt)) best = { quote: q, rate };
  }
  return best;
}

/** The "now" quote closest to a given length (Fast's rolling blocks). */
function nowQuoteOfLength(input: CapacityInput, hours: number): { quote: MarketQuote; rate: number } | null {
  const cfg = input.config;
  const want = blockEnd(marketNow(input.now), hours);
  let best: { quote: MarketQuote; rate: number } | null = null;
  for (const q of input.quotes) {
    if (q.side !== "buy" || q.blockId !== undefined || q.gpuModel !== cfg.gpuModel) continue;
    if (!best || Math.abs(q.endAt - want) < Math.abs(best.quote.endAt - want)) {
      best = { quote: q, rate: ratePerGpuHour(q.priceCents, q.nodes, q.startAt, q.endAt) };
    }
  }
  return best;
}

/**
 * The cheapest "now" quote, in total, of a block that lasts until `minEnd` (for waiting jobs with
 * estimates); the longest when none does.
 */
function coveringQuote(input: CapacityInput, minEnd: number): { quote: MarketQuote; rate: number } | null {
  const cfg = input.config;
  const start = marketNow(input.now);
  let best: MarketQuote | null = null;
  let longest: MarketQuote | null = null;
  for (const q of input.quotes) {
    if (q.side !== "buy" || q.blockId !== undefined || q.gpuModel !== cfg.gpuModel) continue;
    if (q.startAt > start + HOUR_MS) continue;
    if (!longest || q.endAt > longest.endAt) longest = q;
    if (q.endAt < minEnd) continue;
    const perNode = q.priceCents / q.nodes;
    if (!best || perNode < best.priceCents / best.nodes) best = q;
  }
  const pick = best ?? longest;
  return pick ? { quote: pick, rate: ratePerGpuHour(pick.priceCents, pick.nodes, pick.startAt, pick.endAt) } : null;
}

/** A limit a little above the quote so a moving market still fills, never above the tier's limit. */
function limitFor(cfg: AutoscalerConfig, rate: number, capRate: number, nodes: number, start: number, end: number) {
  const withSlack = rate * (1 + cfg.limitSlackBps / 10_000);
  return blockPrice(Math.min(withSlack, capRate), nodes, start, end);
}

export function planCapacity(input: CapacityInput): CapacityPlan {
  const { now, config: cfg } = input;
  const a = assess(input);
  const actions: PlanAction[] = [];
  const marketStart = marketNow(now);
  let steadyGap = a.steadyGapGpus;

  // 1. Blocks that are over: their nodes leave the region.
  for (const n of a.ended) {
    actions.push({
      kind: "release",
      nodeId: n.id,
      blockId: n.blockId,
      reason: { rule: "block_ended", message: `block ${n.blockId} ended at ${formatInstant(n.endAt)}` },
    });
  }
  //    Nodes whose container engine has hung for long: out of supply for good (drained, so their
  //    idle hours are sold back like any drained node's).
  const cordonLimit = cfg.cordonDrainAfterMs ?? DEFAULT_CORDON_DRAIN_AFTER_MS;
  for (const n of a.held) {
    if (n.state !== "ready" || n.cordonedSince === undefined || now - n.cordonedSince < cordonLimit) continue;
    actions.push({
      kind: "drain",
      nodeId: n.id,
      blockId: n.blockId,
      reason: {
        rule: "engine_stuck",
        message: `node ${n.id}'s container engine has not answered since ${formatInstant(n.cordonedSince)} (${Math.round((now - n.cordonedSince) / 60_000)} min): drained; its work finishes, its idle hours are sold back`,
      },
    });
  }
  //    Nodes that never came up: written off (drained, so their hours are sold back) and replaced.
  for (const n of a.held) {
    if (!bootTimedOut(n, input)) continue;
    actions.push({
      kind: "drain",
      nodeId: n.id,
      blockId: n.blockId,
      reason: {
        rule: "boot_timeout",
        message: `node ${n.id} has had no agent in the region since ${formatInstant(n.bootingSince!)} (${Math.round((now - n.bootingSince!) / 60_000)} min): not counted, drained; its hours are sold back`,
      },
    });
  }

  // 2. Busy nodes about to end are extended for as long as their work is expected to last; thin
  //    ones with young work are drained to empty when the rest of the fleet has room to spare.
  const thinning = consolidation(input, a);
  for (const n of thinning) {
    actions.push({
      kind: "drain",
      nodeId: n.id,
      blockId: n.blockId,
      reason: {
        rule: "consolidate",
        message: `node ${n.id} ends at ${formatInstant(n.endAt)} running ${n.gpus - n.freeGpus} of ${n.gpus} GPUs of young work while ${a.readyFreeGpus} GPUs are free elsewhere (headroom ${a.headroomGpus}, ${a.queuedFastGpus + a.queuedFlexGpus} waiting): extended only for its work, drained to empty`,
      },
    });
  }
  const draining = new Set(thinning.map((n) => n.id));
  for (const g of byBlock(a.busyEnding.map((n) => (draining.has(n.id) ? { ...n, state: "draining" as const } : n)))) {
    const remainingMs = Math.max(...g.nodes.map((n) => expectedRemainingMs(n, g.endAt, cfg.extend.lindyFactor, now)));
    const draining = g.nodes.some((n) => n.state === "draining");
    const steady = !draining && steadyGap >= g.nodes.length * GPUS_PER_NODE;
    const coverMs = steady ? Math.max(remainingMs, cfg.steadyBlockHours * HOUR_MS) : remainingMs;
    const choice = chooseExtension(input, g.blockId, g.endAt, coverMs);
    if (steady) steadyGap -= g.nodes.length * GPUS_PER_NODE;
    const why = `${g.nodes.length} node(s) of block ${g.blockId} end at ${formatInstant(g.endAt)} with work expected to run ${formatHours(remainingMs)} more`;
    // Without a quote for the colocated block: the shortest length at the Fast limit, so running work is not cut off.
    const end = choice?.quote.endAt ?? blockEnd(g.endAt, cfg.durationsHours[0] ?? 1);
    // Running work is kept at the market's price, over the Fast limit if need be, with the usual
    // slack: a limit of the quote exactly can round under the ask per node-hour and never fill.
    const limit = choice
      ? limitFor(cfg, choice.rate, Number.POSITIVE_INFINITY, g.nodes.length, g.endAt, end)
      : blockPrice(cfg.fast.limitCentsPerGpuHour, g.nodes.length, g.endAt, end);
    const priced = choice
      ? `${hoursBetween(g.endAt, end)} h at ${formatRate(choice.rate)}${steady ? " (steady demand: long block)" : ""}`
      : "no quote, limit at the Fast limit";
    actions.push(extension(cfg, g, end, limit, { rule: "extend_busy", message: `${why}; ${priced}` }));
  }

  // 2b. Waiting Fast jobs with estimates: extend a ready node with room for each, so it starts there
  //     within a cycle instead of waiting for a node to be bought and to boot.
  for (const e of a.extendFor) {
    if (!e.quote) continue;
    const { quote: q, rate } = e.quote;
    const jobs = e.jobs
      .map((j) => `${j.id} (${j.gpus} GPU(s), estimated ${formatHours(j.estimateMs ?? 0)})`)
      .join(", ");
    const message = `waiting Fast job(s) ${jobs} fit on node ${e.node.id}, whose block ends ${formatInstant(e.node.endAt)}: extended ${hoursBetween(q.startAt, q.endAt)} h at ${formatRate(rate)}`;
    const g = { blockId: e.node.blockId, endAt: e.node.endAt, zone: e.node.zone, nodes: [e.node] };
    actions.push(
      extension(cfg, g, q.endAt, limitFor(cfg, rate, cfg.fast.limitCentsPerGpuHour, 1, q.startAt, q.endAt), {
        rule: "extend_for_estimate",
        message,
      }),
    );
  }

  // 3. Fast: idle nodes about to end are kept for the headroom before anything new is bought
  //    (they are booted already); the rest lapse, drained first so nothing new lands on them.
  let fastShort = a.fastShortGpus;
  const keepForFast: FleetNode[] = [];
  for (const n of [...a.idleEnding].sort((x, y) => y.endAt - x.endAt || x.id.localeCompare(y.id))) {
    if (fastShort <= 0) break;
    keepForFast.push(n);
    fastShort -= n.gpus;
  }
  for (const g of byBlock(keepForFast)) {
    const choice = chooseExtension(input, g.blockId, g.endAt, cfg.fast.blockHours * HOUR_MS);
    const end = choice?.quote.endAt ?? blockEnd(g.endAt, cfg.fast.blockHours);
    const rate = choice?.rate ?? cfg.fast.limitCentsPerGpuHour;
    if (rate > cfg.fast.limitCentsPerGpuHour) {
      fastShort += g.nodes.length * GPUS_PER_NODE;
      continue;
    }
    actions.push(
      extension(cfg, g, end, limitFor(cfg, rate, cfg.fast.limitCentsPerGpuHour, g.nodes.length, g.endAt, end), {
        rule: "extend_for_headroom",
        message: `${g.nodes.length} idle node(s) of block ${g.blockId} kept: Fast needs ${a.queuedFastGpus} waiting + ${a.headroomGpus} headroom GPUs, ${a.readyFreeGpus} free`,
      }),
    );
  }
  const kept = new Set(keepForFast.map((n) => n.id));
  for (const n of a.idleEnding) {
    if (kept.has(n.id) && actions.some((x) => x.kind === "extend" && x.nodeIds.includes(n.id))) continue;
    actions.push({
      kind: "drain",
      nodeId: n.id,
      blockId: n.blockId,
      reason: {
        rule: "idle_no_extend",
        message: `node ${n.id} of block ${n.blockId} is idle at its end ${formatInstant(n.endAt)}: not extended, left to lapse`,
      },
    });
  }

  if (fastShort > 0) {
    const nodes = nodesFor(fastShort);
    const rule = a.queuedFastGpus > 0 ? "fast_queue" : "fast_headroom";
    const why =
      rule === "fast_queue"
        ? `${a.queuedFast.length} Fast job(s) wait for ${a.queuedFastGpus} GPUs`
        : `Fast headroom ${a.headroomGpus} GPUs (${a.headroomWholeNodes} whole nodes), ${a.readyFreeGpus} free, ${a.incomingGpus} on the way`;
    // Nodes for waiting jobs estimated to outlast the rolling block go on blocks that cover them.
    const usualEnd =
      nowQuoteOfLength(input, cfg.fast.blockHours)?.quote.endAt ?? blockEnd(marketStart, cfg.fast.blockHours);
    const cover =
      rule === "fast_queue" ? coverGroups(a.queuedFast, input, nodes, usualEnd) : { groups: [], rest: nodes };
    for (const g of cover.groups) {
      const { quote: q, rate } = g.quote;
      const message = `${g.jobs.length} waiting Fast job(s) estimated to run up to ${longestEstimate(g.jobs)}: ${g.nodes} node(s) for ${hoursBetween(q.startAt, q.endAt).toFixed(2)} h at ${formatRate(rate)}`;
      if (rate > cfg.fast.limitCentsPerGpuHour) {
        actions.push({
          kind: "hold",
          tier: "fast",
          gpus: g.nodes * GPUS_PER_NODE,
          reason: { rule, message: `${message}, above the Fast limit ${formatRate(cfg.fast.limitCentsPerGpuHour)}` },
        });
        continue;
      }
      actions.push({
        kind: "buy",
        tier: "fast",
        gpuModel: cfg.gpuModel,
        zone: q.zone || cfg.zone || "",
        nodes: g.nodes,
        startAt: "now",
        endAt: q.endAt,
        endStepMs: staggerFor(cfg, q.startAt, q.endAt),
        limitPriceCents: limitFor(cfg, rate, cfg.fast.limitCentsPerGpuHour, g.nodes, q.startAt, q.endAt),
        reason: { rule, message },
      });
    }
    for (const part of splitSteady(cover.rest, steadyGap)) {
      steadyGap -= part.long ? part.nodes * GPUS_PER_NODE : 0;
      const q = part.long ? bestNowQuote(input, true) : nowQuoteOfLength(input, cfg.fast.blockHours);
      const end = q?.quote.endAt ?? blockEnd(marketStart, cfg.fast.blockHours);
      const start = q?.quote.startAt ?? marketStart;
      if (q && q.rate > cfg.fast.limitCentsPerGpuHour) {
        actions.push({
          kind: "hold",
          tier: "fast",
          gpus: part.nodes * GPUS_PER_NODE,
          reason: {
            rule,
            message: `${why}; quote ${formatRate(q.rate)} above the Fast limit ${formatRate(cfg.fast.limitCentsPerGpuHour)}`,
          },
        });
        continue;
      }
      actions.push({
        kind: "buy",
        tier: "fast",
        gpuModel: cfg.gpuModel,
        zone: q?.quote.zone ?? cfg.zone ?? "",
        nodes: part.nodes,
        startAt: "now",
        endAt: end,
        endStepMs: staggerFor(cfg, start, end),
        limitPriceCents: limitFor(
          cfg,
          q?.rate ?? cfg.fast.limitCentsPerGpuHour,
          cfg.fast.limitCentsPerGpuHour,
          part.nodes,
          start,
          end,
        ),
        reason: {
          rule: part.long ? "steady_base" : rule,
          message: `${why}; ${part.nodes} node(s) for ${hoursBetween(start, end).toFixed(2)} h${q ? ` at ${formatRate(q.rate)}` : ""}${part.long ? " (steady demand: long block)" : ""}`,
        },
      });
    }
  }

  // 4. Flex: buy at a good price, or when a job's wait runs out; one block for all of them.
  if (a.flexShortGpus > 0) {
    actions.push(...planFlex(input, a, steadyGap));
  }

  // 6. Sell back idle future hours the recent peak does not need, when the price beats the fee.
  if (a.sellWindowOpen) actions.push(...planSellBack(input, a));

  if (a.uncoverable.length > 0) {
    actions.push({
      kind: "hold",
      tier: null,
      gpus: sum(a.uncoverable.map((j) => j.gpus)),
      reason: {
        rule: "estimate_too_long",
        message: `${a.uncoverable.length} waiting job(s) estimated to run up to ${longestEstimate(a.uncoverable)}, longer than any block the market quoted: nothing bought for them (they can start on a node whose block outlives their estimate)`,
      },
    });
  }

  // 7. Keep the headroom for Fast.
  if (a.headroomGpus > 0) {
    actions.push({
      kind: "hold_headroom",
      gpuModel: cfg.gpuModel,
      gpus: Math.min(a.headroomGpus, a.readyFreeGpus),
      reason: {
        rule: "fast_headroom",
        message: `hold ${Math.min(a.headroomGpus, a.readyFreeGpus)} of ${a.readyFreeGpus} free GPUs for Fast (headroom ${a.headroomGpus})`,
      },
    });
  }

  const capped = applyBudget(input, actions);
  return {
    at: now,
    region: input.region,
    actions: capped,
    summary: {
      headroomGpus: a.headroomGpus,
      readyFreeGpus: a.readyFreeGpus,
      incomingGpus: a.incomingGpus,
      queuedFastGpus: a.queuedFastGpus,
      queuedFlexGpus: a.queuedFlexGpus,
      plannedSpendCents: sum(capped.map(spendOf)),
    },
  };
}

/** Extend a group of nodes of one block from their common end. */
function extension(
  cfg: AutoscalerConfig,
  g: { blockId: string; endAt: number; zone: string; nodes: FleetNode[] },
  endAt: number,
  limitPriceCents: number,
  reason: Reason,
): PlanAction {
  return {
    kind: "extend",
    blockId: g.blockId,
    nodeIds: g.nodes.map((n) => n.id),
    gpuModel: cfg.gpuModel,
    zone: g.zone,
    startAt: g.endAt,
    endAt,
    limitPriceCents,
    reason,
  };
}

/** Long blocks stagger their nodes' ends an hour apart (see `PlanAction` buy). */
function staggerFor(cfg: AutoscalerConfig, start: number, end: number): number {
  return hoursBetween(start, end) >= cfg.steadyBlockHours ? HOUR_MS : 0;
}

/** Long blocks for the part of a buy that steady demand covers, short ones for the rest. */
function splitSteady(nodes: number, steadyGapGpus: number): { nodes: number; long: boolean }[] {
  const long = Math.min(nodes, Math.floor(steadyGapGpus / GPUS_PER_NODE));
  const parts: { nodes: number; long: boolean }[] = [];
  if (long > 0) parts.push({ nodes: long, long: true });
  if (nodes - long > 0) parts.push({ nodes: nodes - long, long: false });
  return parts;
}

function planFlex(input: CapacityInput, assessment: Assessment, steadyGapGpus: number): PlanAction[] {
  const { config: cfg } = input;
  let a = assessment;
  const actions: PlanAction[] = [];
  let nodes = nodesFor(a.flexShortGpus);
  const long = steadyGapGpus >= GPUS_PER_NODE ? bestNowQuote(input, true) : null;
  const short = bestNowQuote(input, false) ?? bestNowQuote(input, null);
  // Nodes for waiting jobs estimated to outlast the block bought otherwise go on blocks that cover
  // them: at a price within the Flex limit, or at the deadline limit once one of them is due.
  const usual = (long && long.rate <= cfg.flex.limitCentsPerGpuHour ? long : short)?.quote.endAt;
  if (usual !== undefined) {
    const cover = coverGroups(a.queuedFlex, input, nodes, usual);
    const mustBuyBy = cfg.flex.maxWaitMs - cfg.leadTimeMs - cfg.cycleMs;
    for (const g of cover.groups) {
      const { rate } = g.quote;
      const due = g.jobs.some((j) => j.waitedMs >= mustBuyBy);
      const message = `${g.jobs.length} waiting Flex job(s) estimated to run up to ${longestEstimate(g.jobs)}: ${g.nodes} node(s) for ${hoursBetween(g.quote.quote.startAt, g.quote.quote.endAt).toFixed(2)} h at ${formatRate(rate)}`;
      nodes -= g.nodes;
      if (rate <= cfg.flex.limitCentsPerGpuHour) {
        actions.push(flexBuy(cfg, g.quote, g.nodes, cfg.flex.limitCentsPerGpuHour, { rule: "flex_price", message }));
      } else if (due && rate <= cfg.flex.deadlineLimitCentsPerGpuHour) {
        actions.push(
          flexBuy(cfg, g.quote, g.nodes, cfg.flex.deadlineLimitCentsPerGpuHour, { rule: "flex_deadline", message }),
        );
      } else {
        actions.push({
          kind: "hold",
          tier: "flex",
          gpus: g.nodes * GPUS_PER_NODE,
          reason: { rule: due ? "flex_deadline" : "flex_wait_price", message: `${message}, above the limit` },
        });
      }
    }
    if (nodes <= 0 || cover.restJobs.length === 0) return actions;
    a = {
      ...a,
      queuedFlex: cover.restJobs,
      queuedFlexGpus: sum(cover.restJobs.map((j) => j.gpus)),
      flexShortGpus: Math.min(a.flexShortGpus, nodes * GPUS_PER_NODE),
    };
  }
  // Prefer the long block while steady demand leaves room for it, else the cheapest short one.
  const pick = long && long.rate <= cfg.flex.limitCentsPerGpuHour ? long : short;
  const oldest = Math.max(...a.queuedFlex.map((j) => j.waitedMs));
  const waitNote = `oldest Flex job waited ${formatHours(oldest)} of ${formatHours(cfg.flex.maxWaitMs)}`;

  if (pick && pick.rate <= cfg.flex.limitCentsPerGpuHour) {
    const n = pick === long ? Math.min(nodes, Math.floor(steadyGapGpus / GPUS_PER_NODE)) : nodes;
    actions.push(
      flexBuy(cfg, pick, n, cfg.flex.limitCentsPerGpuHour, {
        rule: pick === long ? "steady_base" : "flex_price",
        message: `${a.queuedFlex.length} Flex job(s) wait for ${a.queuedFlexGpus} GPUs; quote ${formatRate(pick.rate)} within the Flex limit ${formatRate(cfg.flex.limitCentsPerGpuHour)}${pick === long ? " (steady demand: long block)" : ""}`,
      }),
    );
    if (n < nodes && short && short.rate <= cfg.flex.limitCentsPerGpuHour) {
      actions.push(
        flexBuy(cfg, short, nodes - n, cfg.flex.limitCentsPerGpuHour, {
          rule: "flex_price",
          message: `${a.queuedFlex.length} Flex job(s) wait; the rest at ${formatRate(short.rate)}`,
        }),
      );
    }
    return actions;
  }

  // The deadline: a job whose wait would run out before new capacity could be ready; jobs due
  // soon after ride in the same block.
  const mustBuyBy = cfg.flex.maxWaitMs - cfg.leadTimeMs - cfg.cycleMs;
  const due = a.queuedFlex.filter((j) => j.waitedMs >= mustBuyBy);
  if (due.length > 0) {
    const gathered = a.queuedFlex.filter((j) => j.waitedMs >= mustBuyBy - cfg.flex.gatherMs);
    const gpus = Math.min(a.flexShortGpus, sum(gathered.map((j) => j.gpus)));
    const q = short ?? pick;
    const message = `${due.length} Flex job(s) reach their ${formatHours(cfg.flex.maxWaitMs)} maximum wait (${waitNote}); buying for ${gathered.length} job(s), ${gpus} GPUs`;
    if (!q) {
      const end = blockEnd(marketNow(input.now), cfg.fast.blockHours);
      actions.push(
        flexBuy(
          cfg,
          {
            quote: {
              side: "buy",
              gpuModel: cfg.gpuModel,
              zone: cfg.zone ?? "",
              nodes: nodesFor(gpus),
              startAt: marketNow(input.now),
              endAt: end,
              priceCents: 0,
            },
            rate: cfg.flex.deadlineLimitCentsPerGpuHour,
          },
          nodesFor(gpus),
          cfg.flex.deadlineLimitCentsPerGpuHour,
          { rule: "flex_deadline", message: `${message}; no quote, limit at the deadline limit` },
        ),
      );
    } else if (q.rate > cfg.flex.deadlineLimitCentsPerGpuHour) {
      actions.push({
        kind: "hold",
        tier: "flex",
        gpus,
        reason: {
          rule: "flex_deadline",
          message: `${message}; quote ${formatRate(q.rate)} above the deadline limit ${formatRate(cfg.flex.deadlineLimitCentsPerGpuHour)}`,
        },
      });
    } else {
      actions.push(
        flexBuy(cfg, q, nodesFor(gpus), cfg.flex.deadlineLimitCentsPerGpuHour, {
          rule: "flex_deadline",
          message: `${message} at ${formatRate(q.rate)}`,
        }),
      );
    }
    return actions;
  }

  actions.push({
    kind: "hold",
    tier: "flex",
    gpus: a.flexShortGpus,
    reason: pick
      ? {
          rule: "flex_wait_price",
          message: `${a.queuedFlex.length} Flex job(s) wait for ${a.queuedFlexGpus} GPUs; best quote ${formatRate(pick.rate)} above the Flex limit ${formatRate(cfg.flex.limitCentsPerGpuHour)}; ${waitNote}`,
        }
      : { rule: "no_quote", message: `${a.queuedFlex.length} Flex job(s) wait; no quote yet; ${waitNote}` },
  });
  return actions;
}

function flexBuy(
  cfg: AutoscalerConfig,
  q: { quote: MarketQuote; rate: number },
  nodes: number,
  capRate: number,
  reason: Reason,
): PlanAction {
  return {
    kind: "buy",
    tier: "flex",
    gpuModel: cfg.gpuModel,
    zone: q.quote.zone || cfg.zone || "",
    nodes,
    startAt: "now",
    endAt: q.quote.endAt,
    endStepMs: staggerFor(cfg, q.quote.startAt, q.quote.endAt),
    limitPriceCents: limitFor(cfg, q.rate, capRate, nodes, q.quote.startAt, q.quote.endAt),
    reason,
  };
}

function consolidation(input: CapacityInput, a: Assessment): FleetNode[] {
  const { now, config: cfg } = input;
  const c = cfg.consolidate;
  // Ending nodes' free GPUs are not in `readyFreeGpus`: draining one takes nothing from the headroom.
  if (a.readyFreeGpus - a.headroomGpus - a.queuedFastGpus - a.queuedFlexGpus < c.marginGpus) return [];
  const young = (n: FleetNode) => n.work.every((w) => w.startedAt !== null && now - w.startedAt <= c.maxWorkAgeMs);
  return a.busyEnding.filter(
    (n) =>
      n.state === "ready" &&
      n.gpus - n.freeGpus <= c.maxBusyGpus &&
      n.work.every((w) => knownEnd(w, now) === null) &&
      young(n),
  );
}

function planSellBack(input: CapacityInput, a: Assessment): PlanAction[] {
  const { config: cfg, now } = input;
  const start = nextHour(now);
  const actions: PlanAction[] = [];
  for (const g of byBlock(sellable(a))) {
    const q = input.quotes.find(
      (x) => x.side === "sell" && x.blockId === g.blockId && x.startAt === start && x.endAt === g.endAt,
    );
    const gpus = g.nodes.length * GPUS_PER_NODE;
    if (!q) {
      actions.push({
        kind: "hold",
        tier: null,
        gpus,
        blockId: g.blockId,
        reason: { rule: "no_quote", message: `no sell quote for block ${g.blockId}; kept` },
      });
      continue;
    }
    const nodeHours = g.nodes.length * hoursBetween(start, g.endAt);
    const fee = resaleFee(cfg, q.priceCents, nodeHours);
    const what = `${g.nodes.length} idle node(s) of block ${g.blockId}, ${formatInstant(start)}–${formatInstant(g.endAt)}`;
    if (q.priceCents - fee <= 0) {
      actions.push({
        kind: "hold",
        tier: null,
        gpus,
        blockId: g.blockId,
        reason: {
          rule: "keep_unsold",
          message: `${what}: quote ${q.priceCents}¢ does not beat the resale fee ${fee}¢`,
        },
      });
      continue;
    }
    for (const n of g.nodes) {
      actions.push({
        kind: "drain",
        nodeId: n.id,
        blockId: g.blockId,
        reason: { rule: "sell_back", message: `sold back from ${formatInstant(start)}` },
      });
    }
    actions.push({
      kind: "sell_back",
      blockId: g.blockId,
      nodeIds: g.nodes.map((n) => n.id),
      gpuModel: cfg.gpuModel,
      startAt: start,
      endAt: g.endAt,
      minPriceCents: Math.floor(q.priceCents * (1 - cfg.limitSlackBps / 10_000)),
      reason: {
        rule: "sell_back",
        message: `${what} beyond the recent peak of ${input.demand.peakGpus} GPUs + ${a.headroomGpus} headroom; quote ${q.priceCents}¢ beats the resale fee ${fee}¢`,
      },
    });
  }
  return actions;
}

export function resaleFee(cfg: AutoscalerConfig, priceCents: number, nodeHours: number): number {
  return Math.ceil((priceCents * cfg.sellBack.feeBps) / 10_000 + cfg.sellBack.feeCentsPerNodeHour * nodeHours);
}

/**
 * How much longer a node's work runs past `t`: the latest expected end still ahead of `now`, else
 * `lindyFactor` times as long as the oldest work has run so far (long jobs tend to keep running), at
 * least an hour.
 */
export function expectedRemainingMs(node: FleetNode, t: number, lindyFactor = 1, now = t): number {
  let remaining = HOUR_MS;
  for (const w of node.work) {
    const end = knownEnd(w, now);
    if (end !== null) remaining = Math.max(remaining, end - t);
    else if (w.startedAt !== null) remaining = Math.max(remaining, (t - w.startedAt) * lindyFactor);
  }
  return remaining;
}

/**
 * The extension length that covers the expected remaining work most cheaply: a block shorter than
 * the work is renewed at about the same rate; a longer one pays for surplus hours, of which
 * `surplusRecovery` is expected back (sold back, or used by other work).
 */
function chooseExtension(
  input: CapacityInput,
  blockId: string,
  startAt: number,
  remainingMs: number,
): { quote: MarketQuote; rate: number } | null {
  const cfg = input.config;
  let best: { quote: MarketQuote; rate: number; cost: number } | null = null;
  for (const q of input.quotes) {
    if (q.side !== "buy" || q.blockId !== blockId || q.startAt !== startAt) continue;
    const hours = hoursBetween(q.startAt, q.endAt);
    if (hours > cfg.extend.maxHours) continue;
    const rate = ratePerGpuHour(q.priceCents, q.nodes, q.startAt, q.endAt);
    const needHours = remainingMs / HOUR_MS;
    const surplus = Math.max(0, hours - needHours);
    const cost =
      hours >= needHours ? rate * (needHours + (1 - cfg.extend.surplusRecovery) * surplus) : rate * needHours;
    if (
      !best ||
      cost < best.cost ||
      (cost === best.cost && hours < hoursBetween(best.quote.startAt, best.quote.endAt))
    ) {
      best = { quote: q, rate, cost };
    }
  }
  return best && { quote: best.quote, rate: best.rate };
}

function spendOf(action: PlanAction): number {
  return action.kind === "buy" || action.kind === "extend" ? action.limitPriceCents : 0;
}

/** Precedence under the budget cap: keep running work alive first, then Fast, then Flex. */
const BUDGET_ORDER: Record<string, number> = {
  extend_busy: 0,
  fast_queue: 1,
  extend_for_estimate: 1,
  extend_for_headroom: 2,
  fast_headroom: 3,
  steady_base: 4,
  flex_deadline: 5,
  flex_price: 6,
};

function applyBudget(input: CapacityInput, actions: PlanAction[]): PlanAction[] {
  const budget = input.config.budget;
  if (!budget) return actions;
  let left = budget.capCents - input.spentCents;
  const spending = actions
    .map((action, i) => ({ action, i }))
    .filter((x) => spendOf(x.action) > 0)
    .sort((x, y) => (BUDGET_ORDER[x.action.reason.rule] ?? 9) - (BUDGET_ORDER[y.action.reason.rule] ?? 9) || x.i - y.i);
  const replaced = new Map<number, PlanAction[]>();
  for (const { action, i } of spending) {
    const cost = spendOf(action);
    if (cost <= left) {
      left -= cost;
      continue;
    }
    const count = action.kind === "buy" ? action.nodes : action.kind === "extend" ? action.nodeIds.length : 0;
    const perNode = cost / count;
    const affordable = Math.floor(left / perNode);
    const capNote = `budget cap ${budget.capCents}¢ per ${formatHours(budget.periodMs)}: ${input.spentCents}¢ spent, ${Math.max(0, Math.floor(left))}¢ left`;
    const hold: PlanAction = {
      kind: "hold",
      tier: action.kind === "buy" ? action.tier : null,
      gpus: (count - affordable) * GPUS_PER_NODE,
      reason: {
        rule: "budget_cap",
        message: `${capNote}; held ${count - affordable} node(s) of: ${action.reason.message}`,
      },
    };
    const out: PlanAction[] = [];
    if (affordable > 0) {
      const trimmed = trim(action, affordable);
      left -= spendOf(trimmed);
      out.push(trimmed);
    }
    out.push(hold);
    replaced.set(i, out);
  }
  return actions.flatMap((action, i) => replaced.get(i) ?? [action]);
}

function trim(action: PlanAction, nodes: number): PlanAction {
  if (action.kind === "buy") {
    return { ...action, nodes, limitPriceCents: Math.floor((action.limitPriceCents * nodes) / action.nodes) };
  }
  if (action.kind === "extend") {
    return {
      ...action,
      nodeIds: action.nodeIds.slice(0, nodes),
      limitPriceCents: Math.floor((action.limitPriceCents * nodes) / action.nodeIds.length),
    };
  }
  return action;
}

function formatHours(ms: number): string {
  if (!Number.isFinite(ms)) return "∞";
  return ms >= HOUR_MS ? `${(ms / HOUR_MS).toFixed(1)} h` : `${Math.round(ms / 60_000)} min`;
}
