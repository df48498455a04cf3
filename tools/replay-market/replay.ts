/**
 * Replays a job trace through one capacity policy: the real packer places jobs on the region's
 * nodes, the policy runs every minute of virtual time, and the SF Compute simulator's engine prices,
 * fills, boots and ends what it buys. Time jumps from event to event (arrivals, job ends, the
 * engine's own timers such as VM boots, the policy's minute), so two weeks take seconds per policy.
 */
import {
  type AutoscalerConfig,
  type CapacityInput,
  type DemandWindow,
  estimateDemand,
  type InflightOrder,
  type PlanAction,
  planCapacity,
  type QuoteRequest,
  quoteRequests,
} from "../../core/autoscaler";
import type { PackerConfig } from "../../core/scheduler";
import type { Tier } from "../../core/schemas/common";
import { DEFAULT_CATALOG } from "../sfcompute-sim/catalog";
import { SimEngine } from "../sfcompute-sim/engine";
import { type BaselinePolicy, reactive, staticFleet } from "./baselines";
import { Ledger, type PolicyMetrics, type TierPrices } from "./ledger";
import { EngineMarket } from "./market";
import { RegionModel } from "./region";
import type { TraceJob } from "./trace";

export type PolicyName = "scalar" | "static" | "reactive";

export interface ReplaySetup {
  jobs: TraceJob[];
  /** Epoch ms of the window's first instant (the trace's own calendar time). */
  windowStart: number;
  windowMs: number;
  /**
   * Virtual time replayed before the window (default 0: the region starts empty at the window):
   * the jobs submitted in it run, the policy buys for them and learns their demand, and nothing of
   * it is measured (waits, money, use and orders count inside the window only). The market's price
   * path starts at the window whatever the warm-up, so runs with and without one see the same prices
   * in the window (the warm-up's are the path's long-run level).
   */
  warmUpMs?: number;
  seed: number;
  config: AutoscalerConfig;
  demand: DemandWindow;
  prices: TierPrices;
  /** Nodes of each VM zone of the simulated market. */
  zoneCapacityNodes: number;
  /** Static fleet size, nodes (from the window's 95th-percentile concurrent demand). */
  staticNodes: number;
  /** Called once a minute with the region's state, for a time-series dump (REPLAY_SERIES). */
  observe?: (sample: Record<string, number>) => void;
  packer?: Partial<PackerConfig>;
}

export interface PolicyRun {
  metrics: PolicyMetrics;
  diagnostics: {
    jobs_killed: number;
    jobs_never_started: number;
    /**
     * Of those, the ones that had waited past their tier's promise at the window's end (Fast: its
     * start goal; Flex: its maximum wait); the rest arrived too late in the window to count against it.
     */
    jobs_overdue_at_end: number;
    packer_passes: number;
    policy_cycles: number;
    reasons: Record<string, number>;
    spend_by: Record<string, number>;
    /** Fast jobs that waited over a minute, by the window's hour of their submission. */
    late_fast_by_hour: Record<string, number>;
    seconds: number;
  };
}

interface ReplayPolicy {
  quoteRequests(input: CapacityInput): QuoteRequest[];
  plan(input: CapacityInput): PlanAction[];
}

const MINUTE = 60_000;
const HOUR_MS = 60 * MINUTE;

/** A fresh market engine for the replay, at the start of its warm-up (or of its window). */
export function engineFor(
  setup: Pick<ReplaySetup, "seed" | "windowStart" | "zoneCapacityNodes" | "warmUpMs">,
): SimEngine {
  const catalog = {
    ...DEFAULT_CATALOG,
    zones: DEFAULT_CATALOG.zones.map((z) =>
      z.delivery_type === "VM" ? { ...z, capacity_nodes: setup.zoneCapacityNodes } : z,
    ),
  };
  return new SimEngine({
    seed: setup.seed,
    clock: "virtual",
    start: replayStart(setup),
    priceOrigin: setup.windowStart,
    settings: { catalog },
  });
}

function lateByHour(late: readonly { at: number }[], windowStart: number): Record<string, number> {
  const byHour: Record<string, number> = {};
  for (const j of late) {
    const hour = String(Math.floor((j.at - windowStart) / HOUR_MS));
    byHour[hour] = (byHour[hour] ?? 0) + 1;
  }
  return byHour;
}

/** Where the replay's clock starts: the window's first instant, or the warm-up's. */
function replayStart(setup: Pick<ReplaySetup, "windowStart" | "warmUpMs">): number {
  return setup.windowStart - (setup.warmUpMs ?? 0);
}

function policyOf(name: PolicyName, setup: ReplaySetup): ReplayPolicy {
  if (name === "scalar") return { quoteRequests, plan: (input) => planCapacity(input).actions };
  const baseline: BaselinePolicy =
    name === "static" ? staticFleet(setup.staticNodes, setup.windowStart + setup.windowMs) : reactive;
  return baseline;
}

export function runPolicy(name: PolicyName, setup: ReplaySetup): PolicyRun {
  const started = performance.now();
  const windowEnd = setup.windowStart + setup.windowMs;
  const ledger = new Ledger(setup.windowStart, windowEnd);
  const engine = engineFor(setup);
  const account = engine.createAccount({ token: `replay-${name}`, balanceCents: 1e13 });
  let killed = 0;
  const region = new RegionModel(
    {
      started: (job, at) => {
        ledger.started(job.id, at);
        // Holding GPUs again (a restart after its node went): it counts whole until it ends.
        const arrival = arrivalOf.get(job.id);
        if (arrival) delete arrival.heldMs;
      },
      used: (job, from, to) => {
        ledger.used(job.tier, job.gpus, from, to);
        // What the control plane learns when a run ends: how long the job held its GPUs, over its
        // runs so far (as workers/capacity/fleet.ts sums its attempts).
        const arrival = arrivalOf.get(job.id);
        if (arrival) {
          arrival.heldSoFarMs += to - from;
          arrival.heldMs = arrival.heldSoFarMs;
        }
      },
      killed: () => killed++,
    },
    setup.packer,
  );
  const market = new EngineMarket(engine, account, {
    nodeBought: (sfId, blockId, zone, start, end, price) => {
      region.addNode(sfId, blockId, zone, end);
      ledger.bought(price, 1, start, end);
    },
    nodeBooted: (sfId, at) => {
      region.nodeReady(sfId);
      // Waits before the very first node is ready are the cold start, not the policy (issue 7's target).
      ledger.nodeReady(at);
    },
    nodeGone: (sfId, at) => region.removeNode(sfId, at),
    extended: (sfId, start, end, price) => {
      region.setEnd(sfId, end);
      ledger.bought(price, 1, start, end, "extend");
    },
    soldBack: (sfId, start, end, net) => {
      region.setEnd(sfId, start);
      ledger.soldBack(net, 1, start, end);
    },
    orderPlaced: () => {
      if (engine.now() >= setup.windowStart) ledger.ordersPlaced++;
    },
    orderFailed: () => {
      if (engine.now() >= setup.windowStart) ledger.ordersFailed++;
    },
  });
  const policy = policyOf(name, setup);
  const arrivals: { id: string; at: number; tier: Tier; gpus: number; heldMs?: number; heldSoFarMs: number }[] = [];
  const arrivalOf = new Map<string, (typeof arrivals)[number]>();
  const levels: { at: number; gpus: number }[] = [];
  const reasons: Record<string, number> = {};
  let blockSeq = 0;
  let cycles = 0;

  const cycle = (now: number) => {
    cycles++;
    while (arrivals.length > 0 && arrivals[0]!.at <= now - setup.demand.lookbackMs) {
      arrivalOf.delete(arrivals.shift()!.id);
    }
    while (levels.length > 0 && levels[0]!.at <= now - (setup.demand.levelLookbackMs ?? setup.demand.lookbackMs)) {
      levels.shift();
    }
    levels.push({ at: now, gpus: region.demandGpus() });
    const fleet = region.fleet("H100").map((n) => ({
      ...n,
      sellGroup: market.groupKey(n.id),
    }));
    const inflight: InflightOrder[] = market.inflightNodes().map((p) => ({
      kind: "buy",
      gpuModel: setup.config.gpuModel,
      nodes: 1,
      startAt: p.start,
      endAt: p.end,
    }));
    const demand = estimateDemand({ arrivals, concurrency: levels }, now, setup.demand);
    const input: CapacityInput = {
      now,
      region: "replay",
      nodes: fleet,
      blocks: [],
      inflight,
      queue: region.waiting(now),
      quotes: [],
      demand,
      spentCents: 0,
      config: setup.config,
    };
    const quotes = policy
      .quoteRequests(input)
      .map((r) => {
        const from =
          r.side === "sell" ? fleet.find((n) => n.blockId === r.blockId && n.endAt === endOf(r))?.id : undefined;
        return market.quote(r, from);
      })
      .filter((q) => q !== null);
    const actions = policy.plan({ ...input, quotes });
    setup.observe?.({
      at: now,
      demand: region.demandGpus(),
      busy: region.busyGpus(),
      queued_fast: sumGpus(input.queue.filter((j) => j.tier === "fast")),
      queued_flex: sumGpus(input.queue.filter((j) => j.tier === "flex")),
      ready: fleet.filter((n) => n.state === "ready").length * 8,
      booting: fleet.filter((n) => n.state === "booting").length * 8,
      draining: fleet.filter((n) => n.state === "draining").length * 8,
      long: fleet.filter((n) => n.endAt >= now + 24 * 3_600_000).length * 8,
      idle_nodes: fleet.filter((n) => n.state === "ready" && n.work.length === 0).length,
      fragment_free: fleet.filter((n) => n.state === "ready" && n.work.length > 0).reduce((a, n) => a + n.freeGpus, 0),
      short_idle_nodes: fleet.filter(
        (n) => n.state === "ready" && n.work.length === 0 && n.endAt < now + 24 * 3_600_000,
      ).length,
      steady: demand.steadyGpus,
      peak: demand.peakGpus,
      headroom: demand.fastGpusInWindow,
    });
    for (const a of actions) {
      reasons[`${a.kind}:${a.reason.rule}`] = (reasons[`${a.kind}:${a.reason.rule}`] ?? 0) + 1;
      switch (a.kind) {
        case "buy":
          market.buyNodes(
            `b${++blockSeq}`,
            a.zone || "hayesvalley",
            a.nodes,
            a.endAt,
            a.endStepMs,
            a.limitPriceCents,
            now,
          );
          break;
        case "extend":
          market.extend(a.nodeIds, a.startAt, a.endAt, a.limitPriceCents);
          break;
        case "sell_back":
          market.sellBack(a.nodeIds, a.startAt, a.endAt, a.minPriceCents);
          break;
        case "drain":
          region.drain(a.nodeId);
          break;
        case "release":
          region.removeNode(a.nodeId, now);
          break;
        case "hold_headroom":
          region.holdForFast(a.gpus);
          break;
        case "hold":
          break;
      }
    }
  };

  const jobs = setup.jobs;
  let next = 0;
  let nextTick = replayStart(setup);
  for (;;) {
    const arrivalAt = next < jobs.length ? setup.windowStart + jobs[next]!.submitS * 1000 : Number.POSITIVE_INFINITY;
    const t = Math.min(arrivalAt, region.nextEndAt(), nextTick, engine.nextWakeAt());
    if (t >= windowEnd) break;
    engine.advanceTo(Math.max(t, engine.now()));
    market.settle();
    region.finishDue(t);
    while (next < jobs.length && setup.windowStart + jobs[next]!.submitS * 1000 <= t) {
      const job = jobs[next++]!;
      const at = setup.windowStart + job.submitS * 1000;
      region.submit(job, at);
      // A warm-up job runs and is bought for, but its wait is not the window's.
      if (at >= setup.windowStart) ledger.submit(job.id, job.tier, at);
      const arrival = { id: job.id, at, tier: job.tier, gpus: job.gpus, heldSoFarMs: 0 };
      arrivals.push(arrival);
      arrivalOf.set(job.id, arrival);
    }
    if (t >= nextTick) {
      cycle(t);
      nextTick += setup.config.cycleMs || MINUTE;
    }
    region.schedule(t);
  }
  region.close(windowEnd);
  const metrics = ledger.metrics(setup.prices);
  return {
    metrics,
    diagnostics: {
      jobs_killed: killed,
      jobs_never_started: ledger.waitingCount(),
      jobs_overdue_at_end: ledger.overdueCount((tier) =>
        tier === "fast" ? setup.config.fast.startGoalMs : setup.config.flex.maxWaitMs,
      ),
      packer_passes: region.packerPasses,
      policy_cycles: cycles,
      reasons,
      spend_by: ledger.spendBy,
      late_fast_by_hour: lateByHour(ledger.slowFast, setup.windowStart),
      seconds: Math.round((performance.now() - started) / 100) / 10,
    },
  };
}

const sumGpus = (jobs: { gpus: number }[]) => jobs.reduce((a, j) => a + j.gpus, 0);

/** The end of the block a sell quote request covers. */
function endOf(r: QuoteRequest): number {
  return (r.startAt === "now" ? 0 : r.startAt) + r.durationHours * 3_600_000;
}
