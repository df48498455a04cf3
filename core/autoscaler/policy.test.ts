import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { blockEnd, blockPrice, HOUR_MS, hoursBetween, MINUTE_MS, marketNow, perNodeHourLimit } from "./market-time";
import { planCapacity, quoteRequests } from "./policy";
import type {
  AutoscalerConfig,
  CapacityInput,
  FleetNode,
  MarketQuote,
  PlanAction,
  QueuedJob,
  QuoteRequest,
} from "./types";

const NOW = Date.parse("2026-03-02T10:20:00Z");
const at = (iso: string) => Date.parse(`2026-03-02T${iso}:00Z`);

const CONFIG: AutoscalerConfig = {
  gpuModel: "H100",
  zone: "hayesvalley",
  leadTimeMs: 6 * MINUTE_MS,
  cycleMs: MINUTE_MS,
  fast: { startGoalMs: 60_000, minHeadroomGpus: 0, limitCentsPerGpuHour: 400, blockHours: 1 },
  flex: {
    maxWaitMs: 2 * HOUR_MS,
    limitCentsPerGpuHour: 200,
    deadlineLimitCentsPerGpuHour: 400,
    gatherMs: 30 * MINUTE_MS,
  },
  durationsHours: [1, 4, 24, 168],
  steadyBlockHours: 24,
  extend: { leadMs: 10 * MINUTE_MS, maxHours: 168, lindyFactor: 1, surplusRecovery: 0 },
  sellBack: { feeBps: 500, feeCentsPerNodeHour: 0, leadMs: 10 * MINUTE_MS },
  consolidate: { marginGpus: 8, maxBusyGpus: 2, maxWorkAgeMs: HOUR_MS },
  budget: null,
  limitSlackBps: 200,
};

/** A price curve by block length, cents per GPU-hour: longer blocks are cheaper. */
const CURVE: Record<number, number> = { 1: 300, 4: 250, 24: 180, 168: 150 };

function node(id: string, over: Partial<FleetNode> = {}): FleetNode {
  return {
    id,
    blockId: "blk-a",
    gpuModel: "H100",
    zone: "hayesvalley",
    gpus: 8,
    freeGpus: 8,
    state: "ready",
    endAt: at("18:00"),
    work: [],
    ...over,
  };
}

/** A node running one job on all 8 GPUs, started `hoursAgo` before NOW with no known end. */
function busyNode(id: string, hoursAgo: number, over: Partial<FleetNode> = {}): FleetNode {
  return node(id, {
    freeGpus: 0,
    work: [{ tier: "flex", gpus: 8, startedAt: NOW - hoursAgo * HOUR_MS, expectedEndAt: null }],
    ...over,
  });
}

function job(id: string, tier: "fast" | "flex", gpus: number, waitedMin: number): QueuedJob {
  return { id, tier, gpus, gpuModels: [], waitedMs: waitedMin * MINUTE_MS };
}

function input(over: Partial<CapacityInput> = {}, config: Partial<AutoscalerConfig> = {}): CapacityInput {
  return {
    now: NOW,
    region: "us-west-1",
    nodes: [],
    blocks: [],
    inflight: [],
    queue: [],
    quotes: [],
    demand: { fastGpusInWindow: 0, fastWholeNodesInWindow: 0, fastGpusAtRecentRate: 0, steadyGpus: 0, peakGpus: 0 },
    spentCents: 0,
    config: { ...CONFIG, ...config },
    ...over,
  };
}

/** Answers the policy's quote requests from a price curve, as the market simulator would. */
function answer(requests: QuoteRequest[], now: number, curve: Record<number, number> = CURVE): MarketQuote[] {
  return requests.map((r) => {
    const start = r.startAt === "now" ? marketNow(now) : r.startAt;
    const end = r.startAt === "now" ? blockEnd(start, r.durationHours) : start + r.durationHours * HOUR_MS;
    const rate = curve[r.durationHours] ?? curve[1]!;
    const q: MarketQuote = {
      side: r.side,
      gpuModel: r.gpuModel,
      zone: r.zone ?? "hayesvalley",
      nodes: r.nodes,
      startAt: start,
      endAt: end,
      priceCents: blockPrice(rate, r.nodes, start, end),
    };
    if (r.blockId !== undefined) q.blockId = r.blockId;
    if (r.cover) q.cover = true;
    return q;
  });
}

/** Runs the two-phase cycle: ask for quotes, answer them, decide. */
function plan(i: CapacityInput, curve: Record<number, number> = CURVE) {
  return planCapacity({ ...i, quotes: answer(quoteRequests(i), i.now, curve) });
}

const ofKind = <K extends PlanAction["kind"]>(actions: PlanAction[], kind: K) =>
  actions.filter((a): a is Extract<PlanAction, { kind: K }> => a.kind === kind);

describe("Fast headroom", () => {
  it("buys a short rolling block at once when free GPUs fall below the headroom", () => {
    // 4 GPUs free, headroom 20 → 16 short → 2 nodes, NOW (10:20) to 12:00 (at least an hour, on the hour).
    const i = input({
      nodes: [node("n1", { freeGpus: 4, work: [{ tier: "flex", gpus: 4, startedAt: NOW, expectedEndAt: null }] })],
      demand: { fastGpusInWindow: 20, fastWholeNodesInWindow: 0, fastGpusAtRecentRate: 0, steadyGpus: 0, peakGpus: 4 },
    });
    const p = plan(i);
    const buys = ofKind(p.actions, "buy");
    expect(buys).toHaveLength(1);
    expect(buys[0]).toMatchObject({ tier: "fast", nodes: 2, startAt: "now", endAt: at("12:00") });
    expect(buys[0]!.reason.rule).toBe("fast_headroom");
    expect(buys[0]!.reason.message).toContain("Fast headroom 20 GPUs");
    // Limit: the 1 h rate with 2% slack, 16 GPUs × 1 h 40 min: 306 × 16 × 5/3 = 8160.
    expect(buys[0]!.limitPriceCents).toBe(8160);
    expect(ofKind(p.actions, "hold_headroom")[0]).toMatchObject({ gpus: 4 });
  });

  it("quotes and buys the Fast block's own length when it is not among the usual lengths", () => {
    // Until 27 Nov a length missing from durationsHours was never quoted: the plan took the nearest
    // quote (1 h), so fast.blockHours 2 bought what blockHours 1 did.
    const i = input(
      {
        nodes: [node("n1", { freeGpus: 4, work: [{ tier: "flex", gpus: 4, startedAt: NOW, expectedEndAt: null }] })],
        demand: {
          fastGpusInWindow: 20,
          fastWholeNodesInWindow: 0,
          fastGpusAtRecentRate: 0,
          steadyGpus: 0,
          peakGpus: 4,
        },
      },
      { fast: { ...CONFIG.fast, blockHours: 2 } },
    );
    expect(quoteRequests(i).map((r) => r.durationHours)).toEqual([1, 2, 4, 24, 168]);
    const buys = ofKind(plan(i, { ...CURVE, 2: 280 }).actions, "buy");
    expect(buys).toMatchObject([{ tier: "fast", nodes: 2, startAt: "now", endAt: at("13:00") }]);
    // The 2 h rate with 2% slack, 16 GPUs × 2 h 40 min: 285.6 × 16 × 8/3 = 12,185.6 → 12,186.
    expect(buys[0]!.limitPriceCents).toBe(12186);
  });

  it("counts a buy still in flight, so a lost response is not bought twice", () => {
    const i = input({
      nodes: [node("n1", { freeGpus: 4, work: [{ tier: "flex", gpus: 4, startedAt: NOW, expectedEndAt: null }] })],
      demand: { fastGpusInWindow: 20, fastWholeNodesInWindow: 0, fastGpusAtRecentRate: 0, steadyGpus: 0, peakGpus: 4 },
      inflight: [{ kind: "buy", gpuModel: "H100", nodes: 2, startAt: NOW - MINUTE_MS, endAt: at("12:00") }],
    });
    expect(ofKind(plan(i).actions, "buy")).toHaveLength(0);
  });

  it("sizes the headroom from a burst under way", () => {
    // History says 4 GPUs per window, but the last minutes' rate projects 30: 4 nodes.
    const i = input({
      demand: { fastGpusInWindow: 4, fastWholeNodesInWindow: 0, fastGpusAtRecentRate: 30, steadyGpus: 0, peakGpus: 0 },
    });
    const buys = ofKind(plan(i).actions, "buy");
    expect(buys[0]).toMatchObject({ tier: "fast", nodes: 4 });
    expect(buys[0]!.reason.message).toContain("Fast headroom 30 GPUs");
  });

  it("keeps whole free nodes for Fast jobs of 8 GPUs or more", () => {
    // 12 free GPUs, but split over two half-busy nodes: a Fast 8-GPU job would not fit.
    const half = (id: string) =>
      node(id, { freeGpus: 6, work: [{ tier: "flex", gpus: 2, startedAt: NOW, expectedEndAt: null }] });
    const i = input({
      nodes: [half("n1"), half("n2")],
      demand: { fastGpusInWindow: 8, fastWholeNodesInWindow: 1, fastGpusAtRecentRate: 0, steadyGpus: 0, peakGpus: 4 },
    });
    const buys = ofKind(plan(i).actions, "buy");
    expect(buys).toHaveLength(1);
    expect(buys[0]).toMatchObject({ tier: "fast", nodes: 1 });
    expect(buys[0]!.reason.rule).toBe("fast_headroom");
    expect(buys[0]!.reason.message).toContain("1 whole nodes");
  });

  it("buys for waiting Fast work beyond capacity on its way", () => {
    const i = input({
      queue: [job("j1", "fast", 8, 1), job("j2", "fast", 8, 0)],
      nodes: [node("n1", { state: "booting" })],
    });
    const buys = ofKind(plan(i).actions, "buy");
    expect(buys).toHaveLength(1);
    expect(buys[0]).toMatchObject({ tier: "fast", nodes: 1 });
    expect(buys[0]!.reason.rule).toBe("fast_queue");
  });

  it("buys for a waiting Fast job a block that outlives its estimated duration, not the 1-h rolling block", () => {
    // Estimated 3 h: a block must reach NOW + 6 min lead + 3 h = 13:26; the 4-h block (→ 15:00) does.
    const i = input({ queue: [{ ...job("j1", "fast", 8, 1), estimateMs: 3 * HOUR_MS }] });
    const buys = ofKind(plan(i).actions, "buy");
    expect(buys).toHaveLength(1);
    expect(buys[0]).toMatchObject({ tier: "fast", nodes: 1, endAt: at("15:00") });
    expect(buys[0]!.reason.rule).toBe("fast_queue");
    // Without an estimate: the rolling block, 10:20 → 12:00.
    const plain = ofKind(plan(input({ queue: [job("j1", "fast", 8, 1)] })).actions, "buy");
    expect(plain[0]!.endAt).toBe(at("12:00"));
  });

  it("extends a ready node with room for a waiting Fast job estimated past its block, instead of buying one", () => {
    // j1 (4 GPUs, estimated 3 h) must run until NOW + a cycle + 3 h = 13:21. n1 and n3 have 8 free
    // GPUs on blocks ending 12:00 and 12:30: n3 ends later (the shorter extension), so it is the one;
    // extended, it takes j1 within a cycle. n2 has only 2 GPUs free.
    const nodes = [
      node("n1", { endAt: at("12:00") }),
      node("n2", { freeGpus: 2, work: [{ tier: "flex", gpus: 6, startedAt: NOW, expectedEndAt: null }] }),
      node("n3", { blockId: "blk-b", endAt: at("12:30") }),
    ];
    // j2 (2 GPUs, 5 h, waiting less) fits on n3 too: one extension covers both, to 15:21.
    const queue = [
      { ...job("j1", "fast", 4, 2), estimateMs: 3 * HOUR_MS },
      { ...job("j2", "fast", 2, 1), estimateMs: 5 * HOUR_MS },
    ];
    const i = input({ nodes, queue });
    const requests = quoteRequests(i).filter((r) => r.blockId !== undefined);
    expect(requests).toEqual([
      {
        side: "buy",
        gpuModel: "H100",
        nodes: 1,
        startAt: at("12:30"),
        durationHours: 3,
        blockId: "blk-b",
        zone: "hayesvalley",
      },
    ]);
    const p = plan(i);
    expect(ofKind(p.actions, "buy")).toEqual([]);
    const ext = ofKind(p.actions, "extend");
    expect(ext.map((e) => [e.nodeIds, e.startAt, e.endAt, e.reason.rule])).toEqual([
      [["n3"], at("12:30"), at("15:30"), "extend_for_estimate"],
    ]);
    expect(ext[0]!.reason.message).toContain("waiting Fast job(s) j1 (4 GPU(s), estimated 3");
  });

  it("does not sell back an idle node it extends for a waiting job", () => {
    // 10:52, in the sell window: n1 (idle, block to 13:00) is surplus to a region with no demand, but
    // it is being extended for j1 (estimated 3 h): only the other idle node, n2, is sold.
    const now = at("10:52");
    const nodes = [node("n1", { endAt: at("13:00") }), node("n2", { blockId: "blk-b", endAt: at("12:00") })];
    const queue = [{ ...job("j1", "fast", 1, 1), estimateMs: 3 * HOUR_MS }];
    const i = input({ now, nodes, queue });
    const quotes = [
      ...answer(quoteRequests(i), now),
      // Sell quotes for both nodes' hours from 11:00, well above the fee.
      ...["n1", "n2"].map((id) => {
        const n = nodes.find((x) => x.id === id)!;
        return {
          side: "sell" as const,
          gpuModel: "H100" as const,
          zone: "hayesvalley",
          nodes: 1,
          startAt: at("11:00"),
          endAt: n.endAt,
          priceCents: blockPrice(250, 1, at("11:00"), n.endAt),
          blockId: n.blockId,
        };
      }),
    ];
    const p = planCapacity({ ...i, quotes });
    expect(ofKind(p.actions, "extend").map((e) => [e.nodeIds, e.reason.rule])).toEqual([
      [["n1"], "extend_for_estimate"],
    ]);
    expect(ofKind(p.actions, "sell_back").flatMap((x) => x.nodeIds)).toEqual(["n2"]);
  });

  it("buys a covering node for the job when the extension would cost more than the Fast limit", () => {
    const nodes = [node("n1", { endAt: at("12:00") })];
    const queue = [{ ...job("j1", "fast", 4, 1), estimateMs: 3 * HOUR_MS }];
    // The 2-h extension at $5.00 is above the $4.00 Fast limit: a 4-h block is bought instead.
    const p = plan(input({ nodes, queue }), { ...CURVE, 2: 500 });
    expect(ofKind(p.actions, "extend")).toEqual([]);
    const buys = ofKind(p.actions, "buy");
    expect(buys.map((b) => [b.nodes, b.endAt, b.reason.rule])).toEqual([[1, at("15:00"), "fast_queue"]]);
  });

  it("buys the steady part of demand as a long block", () => {
    // 32 GPUs have held steadily and no block lasts 24 h: the 2 nodes go on the cheapest long block.
    const i = input({
      demand: {
        fastGpusInWindow: 16,
        fastWholeNodesInWindow: 0,
        fastGpusAtRecentRate: 0,
        steadyGpus: 32,
        peakGpus: 40,
      },
    });
    const buys = ofKind(plan(i).actions, "buy");
    expect(buys).toHaveLength(1);
    expect(buys[0]!.reason.rule).toBe("steady_base");
    expect(buys[0]!.endAt).toBe(blockEnd(marketNow(NOW), 168));
    // Each node of a long block ends an hour after the previous one, so each can be sold back alone.
    expect(buys[0]!.endStepMs).toBe(HOUR_MS);
  });
});

describe("Flex", () => {
  const queue = [job("f1", "flex", 4, 10), job("f2", "flex", 4, 5), job("f3", "flex", 8, 1)];

  it("waits while every quote is above the Flex limit", () => {
    const p = plan(input({ queue }));
    expect(ofKind(p.actions, "buy")).toHaveLength(0);
    const hold = ofKind(p.actions, "hold").find((h) => h.tier === "flex");
    expect(hold?.reason.rule).toBe("flex_wait_price");
    expect(hold?.reason.message).toContain("above the Flex limit $2.00/GPU-h");
    expect(hold?.gpus).toBe(16);
  });

  it("buys one block for all waiting Flex jobs once the price is at or under the limit", () => {
    const cheap = { ...CURVE, 4: 190 };
    const p = plan(input({ queue }), cheap);
    const buys = ofKind(p.actions, "buy");
    expect(buys).toHaveLength(1);
    // 16 GPUs of three jobs in one 2-node block, 4 h from NOW (10:20 → 15:00) at $1.90.
    expect(buys[0]).toMatchObject({ tier: "flex", nodes: 2, endAt: at("15:00") });
    expect(buys[0]!.reason.rule).toBe("flex_price");
  });

  it("buys only the nodes for Flex jobs estimated to outlast the usual block on a block that covers them", () => {
    // At $1.90 the 4-h block (10:20 → 15:00) is within the limit. f2 is estimated at 20 h: its node
    // goes on the cheapest block that covers it, the 24-h one ($1.80); f1's node on the 4-h block.
    const cheap = { ...CURVE, 4: 190 };
    const estimated = [job("f1", "flex", 8, 10), { ...job("f2", "flex", 8, 5), estimateMs: 20 * HOUR_MS }];
    const buys = ofKind(plan(input({ queue: estimated }), cheap).actions, "buy");
    expect(buys.map((b) => [b.nodes, b.endAt, b.reason.rule])).toEqual([
      [1, blockEnd(marketNow(NOW), 24), "flex_price"],
      [1, at("15:00"), "flex_price"],
    ]);
    expect(buys[0]!.reason.message).toContain("1 waiting Flex job(s) estimated to run up to 20");
  });

  it("asks for a block as long as an estimate past every usual length, and buys it for that job alone", () => {
    // The usual lengths end at 168 h; f1 is estimated at 400 h: from when its node is up (NOW + 6 min)
    // that needs 401 h. Its maximum wait is due, so it is bought at the deadline limit.
    const queue = [{ ...job("f1", "flex", 8, 119), estimateMs: 400 * HOUR_MS }, job("f2", "flex", 8, 119)];
    const i = input({ queue });
    const lengths = quoteRequests(i)
      .filter((r) => r.blockId === undefined)
      .map((r) => r.durationHours);
    expect(lengths).toEqual([1, 4, 24, 168, 401]);
    const curve = { ...CURVE, 4: 190, 401: 140 };
    const buys = ofKind(plan(i, curve).actions, "buy");
    expect(buys.map((b) => [b.nodes, b.endAt, b.reason.rule])).toEqual([
      [1, blockEnd(marketNow(NOW), 401), "flex_price"],
      // f2 has no estimate: the long quote, though cheapest, is not one of the usual lengths.
      [1, at("15:00"), "flex_price"],
    ]);
    // No estimate past the usual lengths: no such request.
    expect(quoteRequests(input({ queue: [job("f2", "flex", 8, 119)] })).map((r) => r.durationHours)).toEqual([
      1, 4, 24, 168,
    ]);
  });

  it("buys nothing for a job estimated to run longer than any block the market quotes, and says so", () => {
    // The market answers every length but the 401-h block asked for: the job fits no node bought now.
    const queue = [{ ...job("f1", "flex", 8, 119), estimateMs: 400 * HOUR_MS }];
    const i = input({ queue });
    const quotes = answer(quoteRequests(i), NOW, { ...CURVE, 4: 190 }).filter(
      (q) => q.endAt - q.startAt < 200 * HOUR_MS,
    );
    const p = planCapacity({ ...i, quotes });
    expect(ofKind(p.actions, "buy")).toEqual([]);
    const hold = ofKind(p.actions, "hold").find((h) => h.reason.rule === "estimate_too_long");
    expect(hold?.gpus).toBe(8);
    expect(hold?.reason.message).toContain("1 waiting job(s) estimated to run up to 400");
  });

  it("buys at the deadline price when a job's maximum wait is about to run out", () => {
    // Max wait 2 h, lead 6 min + cycle 1 min: f1 (waited 115 min) must be bought for now; f2 (95 min)
    // is due within the 30-min gather window and rides along; f3 (10 min) keeps waiting.
    const due = [job("f1", "flex", 4, 115), job("f2", "flex", 4, 95), job("f3", "flex", 8, 10)];
    const p = plan(input({ queue: due }));
    const buys = ofKind(p.actions, "buy");
    expect(buys).toHaveLength(1);
    expect(buys[0]).toMatchObject({ tier: "flex", nodes: 1 });
    expect(buys[0]!.reason.rule).toBe("flex_deadline");
    expect(buys[0]!.reason.message).toContain("buying for 2 job(s), 8 GPUs");
  });
});

describe("idle capacity", () => {
  it("does not extend an idle block: its nodes are drained to lapse, while a busy block is extended", () => {
    const i = input({
      nodes: [
        node("idle-1", { blockId: "blk-idle", endAt: at("10:30") }),
        node("idle-2", { blockId: "blk-idle", endAt: at("10:30") }),
        busyNode("busy-1", 3, { blockId: "blk-busy", endAt: at("10:30") }),
      ],
    });
    const p = plan(i);
    const extends_ = ofKind(p.actions, "extend");
    expect(extends_.map((e) => e.blockId)).toEqual(["blk-busy"]);
    expect(extends_[0]!.reason.rule).toBe("extend_busy");
    expect(extends_[0]!.startAt).toBe(at("10:30"));
    const drains = ofKind(p.actions, "drain");
    expect(drains.map((d) => d.nodeId).sort()).toEqual(["idle-1", "idle-2"]);
    for (const d of drains) expect(d.reason.rule).toBe("idle_no_extend");
  });

  it("extends long-running work for longer than short work", () => {
    // 3 h of age → covering ~3 h: 1-h blocks at $3.00 beat 4 h at $2.50 (7.5 vs 10 per GPU);
    // 30 h of age → 24 h at $1.80 beats renewing hourly at $3.00.
    const p = plan(
      input({
        nodes: [
          busyNode("young", 3, { blockId: "blk-y", endAt: at("10:30") }),
          busyNode("old", 30, { blockId: "blk-o", endAt: at("10:30") }),
        ],
      }),
    );
    const ends = Object.fromEntries(ofKind(p.actions, "extend").map((e) => [e.blockId, e.endAt]));
    expect(ends["blk-y"]).toBe(at("11:30"));
    expect(ends["blk-o"]).toBe(at("10:30") + 24 * HOUR_MS);
  });

  it("keeps the limit's slack over the quote when extending running work above the Fast limit", () => {
    // The market is at $4.10/GPU-h, over the Fast limit ($4.00). Running work is extended anyway,
    // and its limit must sit above the quote: at the quote exactly, the per-node-hour limit the
    // market takes (whole cents, rounded down) can fall under the ask, and the extension fails
    // every minute until the node ends with the work on it (found by the market replay).
    const i = input({ nodes: [busyNode("busy-1", 3, { blockId: "blk-busy", endAt: at("10:30") })] });
    const p = plan(i, { 1: 410.0625, 4: 410.0625, 24: 410.0625, 168: 410.0625 });
    const [ext] = ofKind(p.actions, "extend");
    expect(ext!.reason.rule).toBe("extend_busy");
    const quote = blockPrice(410.0625, 1, ext!.startAt, ext!.endAt);
    expect(ext!.limitPriceCents).toBe(blockPrice(410.0625 * 1.02, 1, ext!.startAt, ext!.endAt));
    const perNodeHour = Math.floor(ext!.limitPriceCents / ((ext!.endAt - ext!.startAt) / HOUR_MS));
    expect(perNodeHour * ((ext!.endAt - ext!.startAt) / HOUR_MS)).toBeGreaterThan(quote);
  });

  it("sells back idle future hours beyond the recent peak when the quote beats the resale fee", () => {
    const now = at("10:52");
    const end = Date.parse("2026-03-03T00:00:00Z");
    const i = input({
      now,
      nodes: [
        busyNode("b1", 2, { blockId: "blk-long", endAt: end }),
        node("b2", { blockId: "blk-long", endAt: end }),
        node("b3", { blockId: "blk-long", endAt: end }),
        node("b4", { blockId: "blk-long", endAt: end }),
      ],
      demand: { fastGpusInWindow: 8, fastWholeNodesInWindow: 0, fastGpusAtRecentRate: 0, steadyGpus: 8, peakGpus: 8 },
    });
    // Supply 32; keep max(busy 8, peak 8) + headroom 8 = 16 → 2 idle nodes are surplus.
    const p = plan(i);
    const sells = ofKind(p.actions, "sell_back");
    expect(sells).toHaveLength(1);
    expect(sells[0]).toMatchObject({ blockId: "blk-long", startAt: at("11:00"), endAt: end });
    expect(sells[0]!.nodeIds).toHaveLength(2);
    expect(sells[0]!.reason.rule).toBe("sell_back");
    expect(sells[0]!.reason.message).toContain("beats the resale fee");
    const drained = ofKind(p.actions, "drain").map((d) => d.nodeId);
    expect(drained.sort()).toEqual([...sells[0]!.nodeIds].sort());
  });

  it("neither sells, quotes a sale nor drains for one when sell-back is switched off", () => {
    const now = at("10:52");
    const end = Date.parse("2026-03-03T00:00:00Z");
    const fleet = {
      now,
      nodes: [
        busyNode("b1", 2, { blockId: "blk-long", endAt: end }),
        node("b2", { blockId: "blk-long", endAt: end }),
        node("b3", { blockId: "blk-long", endAt: end }),
        // Drained and emptied: sold whatever the surplus, when selling is on.
        node("d1", { blockId: "blk-d", endAt: end, state: "draining" }),
      ],
      demand: { fastGpusInWindow: 8, fastWholeNodesInWindow: 0, fastGpusAtRecentRate: 0, steadyGpus: 8, peakGpus: 8 },
    };
    const on = plan(input(fleet));
    expect(ofKind(on.actions, "sell_back").map((s) => [s.blockId, s.reason.rule])).toEqual([
      ["blk-d", "sell_back"],
      ["blk-long", "sell_back"],
    ]);
    expect(plan(input(fleet, { sellBack: { ...CONFIG.sellBack, enabled: true } }))).toEqual(on);

    const off = input(fleet, { sellBack: { ...CONFIG.sellBack, enabled: false } });
    expect(quoteRequests(off).filter((r) => r.side === "sell")).toEqual([]);
    const p = plan(off);
    expect(ofKind(p.actions, "sell_back")).toEqual([]);
    expect(ofKind(p.actions, "drain")).toEqual([]);
    // Everything else is planned as it was.
    const notForSale = (a: PlanAction) => a.reason.rule !== "sell_back";
    expect(p.actions).toEqual(on.actions.filter(notForSale));
  });

  it("sells a sale group whole or not at all", () => {
    // b2 and b3 share a sale group with busy b1: none of them can be sold; b4 alone can.
    const now = at("10:52");
    const end = Date.parse("2026-03-03T00:00:00Z");
    const i = input({
      now,
      nodes: [
        busyNode("b1", 2, { blockId: "blk-long", endAt: end, sellGroup: "g1" }),
        node("b2", { blockId: "blk-long", endAt: end, sellGroup: "g1" }),
        node("b3", { blockId: "blk-long", endAt: end, sellGroup: "g1" }),
        node("b4", { blockId: "blk-other", endAt: end, sellGroup: "g2" }),
      ],
    });
    const sells = ofKind(plan(i).actions, "sell_back");
    expect(sells.map((x) => x.nodeIds)).toEqual([["b4"]]);
  });

  it("keeps idle hours whose quote does not beat the resale fee", () => {
    const now = at("10:52");
    const end = Date.parse("2026-03-03T00:00:00Z");
    const i = input(
      {
        now,
        nodes: [node("b2", { blockId: "blk-long", endAt: end }), node("b3", { blockId: "blk-long", endAt: end })],
      },
      // A flat fee of $30 per node-hour is more than the $14.40 a node-hour fetches at $1.80/GPU-h.
      { sellBack: { feeBps: 500, feeCentsPerNodeHour: 3_000, leadMs: 10 * MINUTE_MS } },
    );
    const p = plan(i);
    expect(ofKind(p.actions, "sell_back")).toHaveLength(0);
    const hold = ofKind(p.actions, "hold").find((h) => h.blockId === "blk-long");
    expect(hold?.reason.rule).toBe("keep_unsold");
  });

  it("does not sell back before the last minutes of the hour", () => {
    const end = Date.parse("2026-03-03T00:00:00Z");
    const i = input({ nodes: [node("b2", { blockId: "blk-long", endAt: end })] });
    expect(ofKind(plan(i).actions, "sell_back")).toHaveLength(0);
  });

  it("drains a thin node with young work at its end when the rest of the fleet has room", () => {
    // "thin" ends at 10:30 with 1 GPU of 20-minute-old work; 16 GPUs are free elsewhere against
    // 4 headroom + 4 margin: it is extended for its work only and drained. "old" runs 2 GPUs of
    // 5-hour-old work: kept as it is.
    const p = plan(
      input(
        {
          nodes: [
            node("thin", {
              blockId: "blk-t",
              endAt: at("10:30"),
              freeGpus: 7,
              work: [{ tier: "flex", gpus: 1, startedAt: NOW - 20 * MINUTE_MS, expectedEndAt: null }],
            }),
            node("old", {
              blockId: "blk-o",
              endAt: at("10:30"),
              freeGpus: 6,
              work: [{ tier: "flex", gpus: 2, startedAt: NOW - 5 * HOUR_MS, expectedEndAt: null }],
            }),
            node("spare-1"),
            node("spare-2"),
          ],
          demand: {
            fastGpusInWindow: 4,
            fastWholeNodesInWindow: 0,
            fastGpusAtRecentRate: 0,
            steadyGpus: 0,
            peakGpus: 16,
          },
        },
        { consolidate: { marginGpus: 4, maxBusyGpus: 2, maxWorkAgeMs: HOUR_MS } },
      ),
    );
    const drains = ofKind(p.actions, "drain");
    expect(drains.map((d) => d.nodeId)).toEqual(["thin"]);
    expect(drains[0]!.reason.rule).toBe("consolidate");
    const ext = Object.fromEntries(ofKind(p.actions, "extend").map((e) => [e.blockId, e.endAt]));
    expect(ext["blk-t"]).toBe(at("11:30"));
    expect(ext["blk-o"]).toBeDefined();
  });

  it("still extends a draining node whose work runs past its end", () => {
    const p = plan(input({ nodes: [busyNode("d1", 2, { endAt: at("10:30"), state: "draining" })] }));
    const ext = ofKind(p.actions, "extend");
    expect(ext.map((e) => e.nodeIds)).toEqual([["d1"]]);
    expect(ext[0]!.reason.rule).toBe("extend_busy");
  });

  it("extends a node for work whose estimated end is ahead, and lets it lapse only once that work is expected done", () => {
    const withEstimate = (id: string, endIso: string) =>
      busyNode(id, 2, {
        blockId: `blk-${id}`,
        endAt: at("10:30"),
        work: [{ tier: "flex", gpus: 8, startedAt: NOW - 2 * HOUR_MS, expectedEndAt: at(endIso) }],
      });
    // Ends at 13:00 (after the block's 10:30): extended to cover it, not by the work's age.
    // Ends at 10:25 (before 10:30): the node is idle at its end, not extended.
    const p = plan(input({ nodes: [withEstimate("late", "13:00"), withEstimate("early", "10:25")] }));
    const ext = ofKind(p.actions, "extend");
    expect(ext.map((e) => e.blockId)).toEqual(["blk-late"]);
    expect(ext[0]!.reason.message).toContain("expected to run 2.5 h more");
    expect(ofKind(p.actions, "drain").map((d) => [d.nodeId, d.reason.rule])).toEqual([["early", "idle_no_extend"]]);
  });

  it("treats work still running past its estimate as of unknown end: its node is extended, not let go with it", () => {
    // Estimated to end at 10:00; at 10:20 it still runs, and its block ends at 10:30.
    const overdue = busyNode("late-job", 5, {
      endAt: at("10:30"),
      work: [{ tier: "flex", gpus: 8, startedAt: NOW - 5 * HOUR_MS, expectedEndAt: at("10:00") }],
    });
    const p = plan(input({ nodes: [overdue] }));
    const ext = ofKind(p.actions, "extend");
    expect(ext.map((e) => e.nodeIds)).toEqual([["late-job"]]);
    expect(ext[0]!.reason.rule).toBe("extend_busy");
    expect(ofKind(p.actions, "drain")).toEqual([]);
  });

  it("releases the nodes of a block that has ended", () => {
    const p = plan(input({ nodes: [node("gone", { endAt: at("10:00"), state: "draining" })] }));
    const rel = ofKind(p.actions, "release");
    expect(rel).toHaveLength(1);
    expect(rel[0]!.reason.rule).toBe("block_ended");
  });
});

/** Demand that wants one node of Fast headroom. */
const ONE_NODE_HEADROOM = {
  fastGpusInWindow: 8,
  fastWholeNodesInWindow: 0,
  fastGpusAtRecentRate: 0,
  steadyGpus: 0,
  peakGpus: 8,
};

describe("a node whose container engine hangs (cordoned)", () => {
  it("is drained once cordoned for ten minutes, with the reason; not before", () => {
    const early = plan(
      input({ nodes: [node("hung", { freeGpus: 0, cordonedSince: NOW - 9 * MINUTE_MS }), node("ok")] }),
    );
    expect(ofKind(early.actions, "drain")).toEqual([]);
    const late = plan(
      input({ nodes: [node("hung", { freeGpus: 0, cordonedSince: NOW - 11 * MINUTE_MS }), node("ok")] }),
    );
    const drains = ofKind(late.actions, "drain");
    expect(drains.map((d) => [d.nodeId, d.reason.rule])).toEqual([["hung", "engine_stuck"]]);
    expect(drains[0]!.reason.message).toBe(
      "node hung's container engine has not answered since 2026-03-02 10:09 (11 min): drained; its work finishes, its idle hours are sold back",
    );
  });

  it("follows cordonDrainAfterMs", () => {
    const p = plan(
      input(
        { nodes: [node("hung", { freeGpus: 0, cordonedSince: NOW - 3 * MINUTE_MS })] },
        { cordonDrainAfterMs: 2 * MINUTE_MS },
      ),
    );
    expect(ofKind(p.actions, "drain").map((d) => d.reason.rule)).toEqual(["engine_stuck"]);
  });

  it("is not kept for the Fast headroom at its end: headroom is bought instead", () => {
    const ending = { endAt: at("10:25"), freeGpus: 0 };
    const healthy = plan(input({ nodes: [node("idle", { ...ending, freeGpus: 8 })], demand: ONE_NODE_HEADROOM }));
    expect(ofKind(healthy.actions, "extend").map((e) => e.reason.rule)).toEqual(["extend_for_headroom"]);
    const p = plan(
      input({ nodes: [node("hung", { ...ending, cordonedSince: NOW - MINUTE_MS })], demand: ONE_NODE_HEADROOM }),
    );
    expect(ofKind(p.actions, "extend")).toEqual([]);
    expect(ofKind(p.actions, "buy").map((b) => b.reason.rule)).toEqual(["fast_headroom"]);
  });
});

describe("a node an operator cordoned", () => {
  it("is neither drained nor kept for the Fast headroom at its end: headroom is bought instead", () => {
    // Idle at its end, like the healthy node kept above; the operator's cordon is theirs to lift.
    const cordoned = node("looked-at", { endAt: at("10:25"), freeGpus: 0, cordoned: true });
    const p = plan(input({ nodes: [cordoned], demand: ONE_NODE_HEADROOM }));
    expect(ofKind(p.actions, "extend")).toEqual([]);
    expect(ofKind(p.actions, "drain")).toEqual([]);
    expect(ofKind(p.actions, "buy").map((b) => b.reason.rule)).toEqual(["fast_headroom"]);
  });

  it("is never drained for a hung engine, however long it stays cordoned", () => {
    const p = plan(input({ nodes: [node("looked-at", { freeGpus: 0, cordoned: true }), node("ok")] }));
    expect(ofKind(p.actions, "drain")).toEqual([]);
  });
});

describe("a node that never gets an agent (boot timeout)", () => {
  const booting = (minutes: number) => node("slow", { state: "booting", bootingSince: NOW - minutes * MINUTE_MS });

  it("counts a booting node as capacity on its way, until the boot timeout", () => {
    const p = plan(input({ nodes: [booting(10)], demand: ONE_NODE_HEADROOM }));
    expect(ofKind(p.actions, "buy")).toEqual([]);
    expect(ofKind(p.actions, "drain")).toEqual([]);
  });

  it("then writes it off: drained with the reason, and the headroom bought elsewhere", () => {
    const p = plan(input({ nodes: [booting(21)], demand: ONE_NODE_HEADROOM }));
    const drains = ofKind(p.actions, "drain");
    expect(drains.map((d) => [d.nodeId, d.reason.rule])).toEqual([["slow", "boot_timeout"]]);
    expect(drains[0]!.reason.message).toBe(
      "node slow has had no agent in the region since 2026-03-02 09:59 (21 min): not counted, drained; its hours are sold back",
    );
    expect(ofKind(p.actions, "buy").map((b) => b.reason.rule)).toEqual(["fast_headroom"]);
  });

  it("follows bootTimeoutMs", () => {
    const p = plan(input({ nodes: [booting(6)], demand: ONE_NODE_HEADROOM }, { bootTimeoutMs: 5 * MINUTE_MS }));
    expect(ofKind(p.actions, "drain").map((d) => d.reason.rule)).toEqual(["boot_timeout"]);
  });
});

describe("budget cap", () => {
  it("trims buys to the budget and says so", () => {
    // Headroom needs 4 nodes (≈ 4 × 8 × 1.67 h × $3.06 = $163); $50 left covers one.
    const i = input(
      {
        demand: {
          fastGpusInWindow: 32,
          fastWholeNodesInWindow: 0,
          fastGpusAtRecentRate: 0,
          steadyGpus: 0,
          peakGpus: 0,
        },
        spentCents: 95_000,
      },
      { budget: { capCents: 100_000, periodMs: 24 * HOUR_MS } },
    );
    const p = plan(i);
    const buys = ofKind(p.actions, "buy");
    expect(buys).toHaveLength(1);
    expect(buys[0]!.nodes).toBe(1);
    const held = ofKind(p.actions, "hold").find((h) => h.reason.rule === "budget_cap");
    expect(held?.gpus).toBe(24);
    expect(held?.reason.message).toContain("budget cap 100000¢");
    expect(p.summary.plannedSpendCents).toBeLessThanOrEqual(5_000);
  });

  it("spends what is left on keeping running work alive before Fast headroom", () => {
    const i = input(
      {
        nodes: [busyNode("busy-1", 2, { blockId: "blk-busy", endAt: at("10:30") })],
        demand: {
          fastGpusInWindow: 16,
          fastWholeNodesInWindow: 0,
          fastGpusAtRecentRate: 0,
          steadyGpus: 0,
          peakGpus: 8,
        },
        spentCents: 97_000,
      },
      { budget: { capCents: 100_000, periodMs: 24 * HOUR_MS } },
    );
    const p = plan(i);
    expect(ofKind(p.actions, "extend")).toHaveLength(1);
    expect(ofKind(p.actions, "buy")).toHaveLength(0);
    expect(ofKind(p.actions, "hold").some((h) => h.reason.rule === "budget_cap" && h.tier === "fast")).toBe(true);
  });
});

describe("properties", () => {
  // Random regions: nodes idle or running work of unknown end, many about to end; queues of both
  // tiers with and without estimates; a price per block length of $0.75–$4.50/GPU-h in 1/16 ¢,
  // often close to the Fast limit ($4.00).
  const rate = fc.oneof(fc.integer({ min: 1200, max: 7200 }), fc.integer({ min: 6200, max: 6600 })).map((x) => x / 16);
  const arbNode = fc.record({
    busyHoursAgo: fc.option(fc.double({ min: 0.05, max: 200, noNaN: true }), { nil: null }),
    gpus: fc.integer({ min: 1, max: 8 }),
    // Often within the 10 minutes in which ending nodes are extended.
    endInMin: fc.oneof(fc.integer({ min: 1, max: 15 }), fc.integer({ min: 1, max: 40 * 60 })),
    block: fc.constantFrom("blk-a", "blk-b", "blk-c", "blk-d"),
  });
  const arbJob = fc.record({
    tier: fc.constantFrom("fast" as const, "flex" as const),
    gpus: fc.constantFrom(1, 2, 4, 8, 16),
    waitedMin: fc.integer({ min: 0, max: 150 }),
    estimateH: fc.option(fc.double({ min: 0.1, max: 400, noNaN: true }), { nil: null }),
  });

  const arbRegion = fc.record({
    nodes: fc.array(arbNode, { maxLength: 8 }),
    jobs: fc.array(arbJob, { maxLength: 6 }),
    curve: fc.record({ 1: rate, 4: rate, 24: rate, 168: rate }),
    headroom: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 40 })),
    // Any minute of the hour, often in its last ten, when idle nodes are sold back.
    minute: fc.oneof(fc.integer({ min: 50, max: 59 }), fc.integer({ min: 0, max: 59 })),
  });
  type Region = typeof arbRegion extends fc.Arbitrary<infer R> ? R : never;

  /** The region's input: nodes of one block share its end; busy nodes run one job of unknown end. */
  function regionInput(r: Region): CapacityInput {
    const now = Date.parse("2026-03-02T10:00:00Z") + r.minute * MINUTE_MS;
    const nodes = r.nodes.map((n, k) => {
      const end = now + r.nodes.find((m) => m.block === n.block)!.endInMin * MINUTE_MS;
      return n.busyHoursAgo === null
        ? node(`n${k}`, { blockId: n.block, endAt: end })
        : node(`n${k}`, {
            blockId: n.block,
            endAt: end,
            freeGpus: 8 - n.gpus,
            work: [{ tier: "flex", gpus: n.gpus, startedAt: now - n.busyHoursAgo * HOUR_MS, expectedEndAt: null }],
          });
    });
    const queue = r.jobs.map((j, k) => ({
      ...job(`j${k}`, j.tier, j.gpus, j.waitedMin),
      estimateMs: j.estimateH === null ? null : j.estimateH * HOUR_MS,
    }));
    const h = r.headroom;
    return input({
      now,
      nodes,
      queue,
      demand: { fastGpusInWindow: h, fastWholeNodesInWindow: 0, fastGpusAtRecentRate: 0, steadyGpus: h, peakGpus: h },
    });
  }

  it("extends every node about to end with work of unknown end on it, past its end", () => {
    fc.assert(
      fc.property(arbRegion, (r) => {
        const i = regionInput(r);
        const p = plan(i, r.curve);
        const horizon = i.now + Math.max(CONFIG.leadTimeMs, CONFIG.extend.leadMs);
        for (const n of i.nodes.filter((x) => x.work.length > 0 && x.endAt <= horizon)) {
          const ext = ofKind(p.actions, "extend").find((e) => e.nodeIds.includes(n.id));
          expect(ext, `busy node ${n.id} ending ${new Date(n.endAt).toISOString()}`).toBeDefined();
          expect(ext!.startAt).toBe(n.endAt);
          expect(ext!.endAt).toBeGreaterThan(n.endAt);
          expect(p.actions.some((a) => a.kind === "sell_back" && a.nodeIds.includes(n.id))).toBe(false);
        }
        // Nor is any node both extended and sold in one plan.
        const extended = new Set(ofKind(p.actions, "extend").flatMap((e) => e.nodeIds));
        for (const sale of ofKind(p.actions, "sell_back")) {
          expect(sale.nodeIds.filter((id) => extended.has(id))).toEqual([]);
        }
      }),
      { numRuns: 300 },
    );
  });

  // Every buy and extension the policy plans must fill at the quote it was priced from once the
  // cron turns its limit into what the market takes: whole cents per node-hour, rounded down
  // (`perNodeHourLimit`). A limit under the ask never fills: the order is planned again every
  // minute, and for running work the node ends with the work on it.
  it("prices every buy and extension at or above its quote, per node-hour in whole cents", () => {
    fc.assert(
      fc.property(arbRegion, (r) => {
        const i = regionInput(r);
        const quotes = answer(quoteRequests(i), i.now, r.curve);
        const p = planCapacity({ ...i, quotes });
        for (const a of p.actions) {
          if (a.kind !== "buy" && a.kind !== "extend") continue;
          const count = a.kind === "buy" ? a.nodes : a.nodeIds.length;
          const start = a.startAt === "now" ? marketNow(i.now) : a.startAt;
          const hours = hoursBetween(start, a.endAt);
          const from = quotes.filter(
            (q) =>
              q.side === "buy" &&
              q.startAt === start &&
              q.endAt === a.endAt &&
              (a.kind === "extend" ? q.blockId === a.blockId : q.blockId === undefined),
          );
          if (from.length === 0) continue; // priced without a quote (at a tier's limit)
          // Less a float's width: dividing a quote's total back by its hours is not exact. A
          // limit short by a cent per node-hour, or by half a cent as before the fix, still fails.
          const askPerNodeHour = Math.min(...from.map((q) => q.priceCents / q.nodes / hours)) - 1e-6;
          const limitPerNodeHour = perNodeHourLimit(a.limitPriceCents, count, start, a.endAt);
          expect(limitPerNodeHour, `${a.kind} ${a.reason.rule}: ${a.reason.message}`).toBeGreaterThanOrEqual(
            askPerNodeHour,
          );
        }
      }),
      { numRuns: 300 },
    );
  });
});
