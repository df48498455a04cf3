/**
 * The autoscaler's own view of a region: what the capacity manager (and the trace replay) map the
 * scheduler's snapshot, the blocks table and market quotes into. Times are epoch milliseconds, money
 * is integer cents (rates are cents per GPU-hour), capacity is GPUs unless a name says nodes.
 */
import type { GpuModel, Tier } from "../schemas/common";

/** Work running on a node. */
export interface RunningWork {
  tier: Tier;
  gpus: number;
  /** When it started; null if unknown. The age of long work predicts how much of it is left. */
  startedAt: number | null;
  /** Its expected end (from an estimated duration); null if unknown. */
  expectedEndAt: number | null;
}

/** A node we hold: delivered by a filled block, booting until its agent registers. */
export interface FleetNode {
  id: string;
  blockId: string;
  gpuModel: GpuModel;
  zone: string;
  gpus: number;
  /** Healthy GPUs with nothing placed and nothing reserved except Fast headroom. All of them while booting. */
  freeGpus: number;
  state: "booting" | "ready" | "draining";
  /** When the market stops delivering this node: its block's end, or the end of its latest extension. */
  endAt: number;
  work: RunningWork[];
  /**
   * The node is up but takes no new work (the scheduler's state `cordoned`): an operator cordoned
   * it, or its container engine does not answer (`cordonedSince`). Never kept for the headroom.
   */
  cordoned?: boolean;
  /**
   * Since when the node's container engine has not answered (it is cordoned); absent when it
   * answers. Cordoned so longer than `cordonDrainAfterMs`, it is drained. An operator's cordon sets
   * only `cordoned`: the operator lifts it, the policy never drains for it.
   */
  cordonedSince?: number;
  /**
   * Booting nodes: since when the node could have had an agent in the region (bought and its block
   * started; for a node lost after registering, when it was last heard from). One still without
   * an agent after `bootTimeoutMs` is not counted as capacity on its way (it may never come) and is
   * drained.
   */
  bootingSince?: number;
  /**
   * Nodes that can only be sold back together (the market does not say which of their contracts
   * is which node's); none = the node alone.
   */
  sellGroup?: string;
}

/** A block held in the region (bought, not yet over). Its nodes are the `FleetNode`s naming it. */
export interface HeldBlock {
  id: string;
  zone: string;
  gpuModel: GpuModel;
  nodeCount: number;
  startAt: number;
  endAt: number;
  priceCents: number;
}

/** An order placed whose outcome is not final yet: counted as capacity on its way, so it is never bought twice. */
export interface InflightOrder {
  kind: "buy" | "extend" | "sell_back";
  gpuModel: GpuModel;
  nodes: number;
  startAt: number;
  endAt: number;
  /** Extensions and sell-backs name the block and the nodes they act on. */
  blockId?: string;
  nodeIds?: string[];
}

/** A job waiting for capacity (the packer could not place it on what is there now). */
export interface QueuedJob {
  id: string;
  tier: Tier;
  gpus: number;
  /** Empty: any model. */
  gpuModels: GpuModel[];
  waitedMs: number;
  /**
   * Its estimated duration, ms; null or absent for none. The packer places a job with an estimate
   * only on a node whose block outlives it, so capacity bought for it must last that long.
   */
  estimateMs?: number | null;
}

/** A market quote: a whole block's total price. Sell quotes name the block (contract) they sell from. */
export interface MarketQuote {
  side: "buy" | "sell";
  gpuModel: GpuModel;
  zone: string;
  nodes: number;
  startAt: number;
  endAt: number;
  priceCents: number;
  blockId?: string;
  /** Answers a request for a block that covers waiting jobs' estimates (`QuoteRequest.cover`). */
  cover?: true;
}

/** A quote the policy wants before it can decide: the caller fetches it and calls `planCapacity` with the answer. */
export interface QuoteRequest {
  side: "buy" | "sell";
  gpuModel: GpuModel;
  nodes: number;
  /** "now", or an instant on the hour (an extension starts at its block's end; a sell-back at the next hour). */
  startAt: "now" | number;
  /** Whole hours; a "now" block ends on the hour at or after `now + durationHours`. */
  durationHours: number;
  /** Sell quotes and colocated extension quotes. */
  blockId?: string;
  zone?: string;
  /**
   * A block as long as some waiting jobs' estimates need, besides the usual lengths: its quote is
   * used only for those jobs (the answer carries the same mark).
   */
  cover?: true;
}

/**
 * What the policy expects of demand in the near term. Today it is measured from recent history
 * (`estimateDemand`); a forecaster can fill the same fields later.
 */
export interface DemandEstimate {
  /** Fast GPUs that arrive within the headroom window, at a high quantile of recent windows. */
  fastGpusInWindow: number;
  /** Whole nodes that Fast jobs of ≥ 8 GPUs ask for within the headroom window, at the same quantile. */
  fastWholeNodesInWindow: number;
  /** Fast GPUs a headroom window brings if arrivals keep the rate of the last few minutes (a burst under way). */
  fastGpusAtRecentRate: number;
  /** Concurrent GPU demand (running and waiting) that held through the recent past: a low quantile. */
  steadyGpus: number;
  /** Recent peak of concurrent GPU demand: a high quantile. Capacity below it is not sold back. */
  peakGpus: number;
}

export interface AutoscalerConfig {
  gpuModel: GpuModel;
  /** Zone to buy in; null = wherever the quote says. */
  zone: string | null;
  /** From placing a buy to its nodes accepting work: fill, boot, agent registration. */
  leadTimeMs: number;
  /** How often the policy runs (the cron period). */
  cycleMs: number;
  fast: {
    /** Fast work should start within this long of its submission. */
    startGoalMs: number;
    /** Headroom never drops below this many free GPUs. */
    minHeadroomGpus: number;
    /** Highest price paid for Fast capacity, cents per GPU-hour. */
    limitCentsPerGpuHour: number;
    /** Length of Fast's short rolling blocks, hours. */
    blockHours: number;
  };
  flex: {
    /** A Flex job waits at most this long for a cheap price before it is bought for at the deadline price. */
    maxWaitMs: number;
    /** Flex buys at or under this price, cents per GPU-hour. */
    limitCentsPerGpuHour: number;
    /** Highest price paid when a Flex job's wait runs out. */
    deadlineLimitCentsPerGpuHour: number;
    /** Jobs whose deadline falls within this long are bought for together with the first one. */
    gatherMs: number;
  };
  /** Block lengths the policy may buy, in hours (the first is the shortest). */
  durationsHours: number[];
  /** A block at least this long counts as the steady base of the fleet; its nodes' ends are staggered by an hour. */
  steadyBlockHours: number;
  extend: {
    /** Extensions are decided this long before a node's end (its price is known by then). */
    leadMs: number;
    /** Longest extension, hours. */
    maxHours: number;
    /**
     * Work of unknown end is expected to run `lindyFactor` times as long again as it has run so
     * far (1 = as long again); the extension covers that.
     */
    lindyFactor: number;
    /**
     * Share of the price of hours bought past the work's expected end that is expected back (sold
     * back, or used by other work), when comparing extension lengths.
     */
    surplusRecovery: number;
  };
  sellBack: {
    /** The market's resale fee: a share of the fill price in basis points plus a flat part per node-hour. */
    feeBps: number;
    feeCentsPerNodeHour: number;
    /** Sell-backs are decided this long before the hour they start at. */
    leadMs: number;
    /** False: nothing is sold back, nor quoted or drained for a sale (an operator's switch). Default true. */
    enabled?: boolean;
  };
  /**
   * Jobs cannot move, so after a burst the work left behind is spread thin over many nodes. A node
   * at its block's end running at most `maxBusyGpus` GPUs of work younger than `maxWorkAgeMs`
   * (young work tends to end soon) is extended only for that work and drained, so it empties and
   * lapses, when the other nodes' free GPUs cover Fast headroom and waiting work plus `marginGpus`.
   */
  consolidate: { marginGpus: number; maxBusyGpus: number; maxWorkAgeMs: number };
  /** Spend cap over a rolling period; null = none. */
  budget: { capCents: number; periodMs: number } | null;
  /** Limit price above the quote, in basis points, so a moving market still fills. */
  limitSlackBps: number;
  /**
   * A node cordoned this long (its container engine hung) is drained: its work finishes, its idle
   * hours are sold back, and headroom is bought elsewhere. Default DEFAULT_CORDON_DRAIN_AFTER_MS.
   */
  cordonDrainAfterMs?: number;
  /** A node whose agent has not registered this long after it could boot is written off (`boot_timeout`). Default DEFAULT_BOOT_TIMEOUT_MS. */
  bootTimeoutMs?: number;
}

/** SF Compute nodes boot in 4–10 minutes; one not up in 20 has failed to. */
export const DEFAULT_BOOT_TIMEOUT_MS = 20 * 60_000;

/** A hung engine that has not recovered in ten minutes is not expected to (it needs a restart). */
export const DEFAULT_CORDON_DRAIN_AFTER_MS = 10 * 60_000;

export interface CapacityInput {
  now: number;
  region: string;
  nodes: FleetNode[];
  blocks: HeldBlock[];
  inflight: InflightOrder[];
  queue: QueuedJob[];
  quotes: MarketQuote[];
  demand: DemandEstimate;
  /** Spent on the market within the current budget period (cents). */
  spentCents: number;
  config: AutoscalerConfig;
}

export type ReasonRule =
  | "fast_queue"
  | "fast_headroom"
  | "flex_price"
  | "flex_deadline"
  | "flex_wait_price"
  | "steady_base"
  | "extend_busy"
  | "extend_for_headroom"
  | "extend_for_estimate"
  | "idle_no_extend"
  | "consolidate"
  | "sell_back"
  | "keep_unsold"
  | "budget_cap"
  | "no_quote"
  | "block_ended"
  | "engine_stuck"
  | "boot_timeout"
  | "estimate_too_long";

/** Why an action is in the plan: a stable rule name for code and tests, and a sentence for people. */
export interface Reason {
  rule: ReasonRule;
  message: string;
}

export type PlanAction =
  | {
      kind: "buy";
      tier: Tier;
      gpuModel: GpuModel;
      zone: string;
      nodes: number;
      /** "now" or an instant on the hour. */
      startAt: "now" | number;
      endAt: number;
      /**
       * Node i of the block ends `i × endStepMs` after `endAt`: long blocks stagger their ends an hour
       * apart so each node's contract can be told apart (and sold back) on its own. 0 = all at `endAt`.
       */
      endStepMs: number;
      /** The whole block's limit, cents. Immediate-or-cancel: a buy that does not fill is re-planned next cycle. */
      limitPriceCents: number;
      reason: Reason;
    }
  | {
      kind: "extend";
      blockId: string;
      nodeIds: string[];
      gpuModel: GpuModel;
      zone: string;
      /** The nodes' current end: the extension starts there (on the hour). */
      startAt: number;
      endAt: number;
      limitPriceCents: number;
      reason: Reason;
    }
  | {
      kind: "sell_back";
      blockId: string;
      nodeIds: string[];
      gpuModel: GpuModel;
      /** On the hour. */
      startAt: number;
      endAt: number;
      /** Lowest total accepted, cents (before the resale fee). */
      minPriceCents: number;
      reason: Reason;
    }
  /** Stop placing new work on a node (it lapses, is sold back, or its block ended). */
  | { kind: "drain"; nodeId: string; blockId: string; reason: Reason }
  /** The node's block is over: revoke its agent token and remove it from the region. */
  | { kind: "release"; nodeId: string; blockId: string; reason: Reason }
  /** Hold free GPUs for Fast work so Flex does not take the headroom. */
  | { kind: "hold_headroom"; gpuModel: GpuModel; gpus: number; reason: Reason }
  /** A decision not to act (yet), with why: Flex waiting for a price, a budget cap, an idle block left to lapse. */
  | { kind: "hold"; tier: Tier | null; gpus: number; blockId?: string; reason: Reason };

export interface CapacityPlan {
  at: number;
  region: string;
  actions: PlanAction[];
  /** The numbers the decisions came from, for the audit row and for people asking why. */
  summary: {
    headroomGpus: number;
    readyFreeGpus: number;
    incomingGpus: number;
    queuedFastGpus: number;
    queuedFlexGpus: number;
    plannedSpendCents: number;
  };
}
