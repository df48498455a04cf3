import { describe, expect, it } from "vitest";
import { DEFAULT_CONFIG } from "./model";
import { orderQueue, standing } from "./queue";
import { job } from "./testing";

const MIN = 60_000;
const cfg = { aging_step_ms: 5 * MIN, aging_cap: 100, flex_promote_after_ms: 360 * MIN };
const ids = (now: number, jobs: ReturnType<typeof job>[]) => orderQueue(jobs, now, cfg).map((j) => j.id);

describe("orderQueue", () => {
  it("puts Fast before Flex, then higher priority, then older", () => {
    const q = [
      job("flex-hi", { tier: "flex", priority: 50 }),
      job("fast-old", { submitted_at: 0 }),
      job("fast-new", { submitted_at: 10 }),
      job("fast-hi", { priority: 5, submitted_at: 20 }),
    ];
    expect(ids(20, q)).toEqual(["fast-hi", "fast-old", "fast-new", "flex-hi"]);
  });

  it("ages Flex work: +1 level per 5 minutes waited, so an old low-priority job passes a new higher one", () => {
    // old waited 60 min → 0 + 12 = 12; new waited 0 → 10
    const now = 60 * MIN;
    const q = [
      job("new", { tier: "flex", priority: 10, submitted_at: now }),
      job("old", { tier: "flex", submitted_at: 0 }),
    ];
    expect(standing(q[1]!, now, cfg).priority).toBe(12);
    expect(ids(now, q)).toEqual(["old", "new"]);
  });

  it("ages a retry from when it queued again, not from its first submission", () => {
    // Submitted 7 h ago, it ran, failed, and has waited 10 minutes for its retry: +2, not promoted.
    const now = 420 * MIN;
    const retry = job("retry", { tier: "flex", submitted_at: 0, queued_at: now - 10 * MIN });
    expect(standing(retry, now, cfg)).toEqual({ cls: 1, priority: 2, tierRank: 1 });
    expect(standing({ ...retry, queued_at: undefined }, now, cfg).cls).toBe(0);
    // Its place among jobs of equal standing is still by submission.
    const peer = job("peer", { tier: "flex", submitted_at: now - 10 * MIN });
    expect(ids(now, [peer, retry])).toEqual(["retry", "peer"]);
  });

  it("caps the aging bonus", () => {
    expect(standing(job("x", { tier: "flex" }), 359 * MIN, { ...cfg, aging_cap: 3 }).priority).toBe(3);
  });

  it("promotes Flex work waiting 6 h: ahead of lower-priority Fast, still behind Fast of its own priority", () => {
    const now = 360 * MIN;
    const q = [
      job("fast-low", { priority: -1, submitted_at: now }),
      job("fast-eq", { priority: 0, submitted_at: now }),
      job("flex-old", { tier: "flex", priority: 0, submitted_at: 0 }),
    ];
    expect(ids(now, q)).toEqual(["fast-eq", "flex-old", "fast-low"]);
  });

  it("interleaves accounts of equal standing so one account's burst does not hold the head", () => {
    const q = [
      job("a1", { account_id: "a", submitted_at: 1 }),
      job("a2", { account_id: "a", submitted_at: 2 }),
      job("a3", { account_id: "a", submitted_at: 3 }),
      job("b1", { account_id: "b", submitted_at: 4 }),
      job("c1", { account_id: "c", submitted_at: 5 }),
      job("b2", { account_id: "b", submitted_at: 6 }),
    ];
    expect(ids(10, q)).toEqual(["a1", "b1", "c1", "a2", "b2", "a3"]);
  });

  it("does not interleave across standings: a higher priority still goes first", () => {
    const q = [
      job("a1", { account_id: "a", priority: 1 }),
      job("a2", { account_id: "a", priority: 1 }),
      job("b1", { account_id: "b" }),
    ];
    expect(ids(0, q)).toEqual(["a1", "a2", "b1"]);
  });

  it("breaks exact ties by id, so the order depends on nothing but the queue and now", () => {
    const q = [job("b"), job("a")];
    expect(ids(0, q)).toEqual(["a", "b"]);
    expect(orderQueue(q, 0, DEFAULT_CONFIG).map((j) => j.id)).toEqual(["a", "b"]);
  });
});
