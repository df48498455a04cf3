import { describe, expect, it, vi } from "vitest";
import { ReservationBook } from "./backfill";
import { plan } from "./plan";
import { busy, job, node } from "./testing";

const H = 3_600_000;

describe("plan: placement", () => {
  it("places a job on specific GPU indices of the fullest node that fits", () => {
    const nodes = [node("a"), node("b"), node("c")];
    // a: 8 free; b: 3 free (0–4 busy); c: 1 free. A 2-GPU job fits b best (leaves 1).
    const allocations = [busy("b", [0, 1, 2, 3, 4]), busy("c", [0, 1, 2, 3, 4, 5, 6])];
    const p = plan({ now: 0, nodes, allocations, queue: [job("j", { gpu_count: 2 })] });
    expect(p.placements).toEqual([
      expect.objectContaining({
        job_id: "j",
        kind: "in_order",
        nodes: [{ node_id: "b", gpu_indices: [5, 6], cpu_milli: 4000, memory_mib: 16384 }],
      }),
    ]);
  });

  it("explains a waiting job: `0/12 nodes: 9 insufficient free GPUs, 3 GPU model not allowed`", () => {
    const nodes = Array.from({ length: 12 }, (_, i) => node(`n${i}`, { gpu_model: i < 9 ? "H100" : "H200" }));
    const allocations = nodes.slice(0, 9).map((n) => busy(n.id, [0, 1, 2, 3, 4, 5]));
    const p = plan({ now: 0, nodes, allocations, queue: [job("j", { gpu_count: 4, gpu_models: ["H100"] })] });
    expect(p.placements).toEqual([]);
    expect(p.waiting[0]).toMatchObject({
      job_id: "j",
      reason: "0/12 nodes: 9 insufficient free GPUs, 3 GPU model not allowed",
      counts: { insufficient_free_gpus: 9, gpu_model_not_allowed: 3 },
    });
  });

  it("tells a job waiting on idle GPUs held for Fast headroom so, and not 'insufficient'", () => {
    // One idle node: 8 GPUs held for Fast; another with 2 free and 6 busy. A 4-GPU Flex job fits neither.
    const nodes = [node("headroom"), node("busy")];
    const holds = [{ node_id: "headroom", gpu_indices: [0, 1, 2, 3, 4, 5, 6, 7], usable_by: "fast" as const }];
    const allocations = [busy("busy", [0, 1, 2, 3, 4, 5])];
    const queue = [job("x", { tier: "flex", gpu_count: 4 })];
    expect(plan({ now: 0, nodes, allocations, holds, queue }).waiting[0]).toMatchObject({
      reason: "0/2 nodes: 1 insufficient free GPUs, 1 free GPUs reserved for Fast",
      counts: { insufficient_free_gpus: 1, reserved_for_fast: 1 },
    });
    // The manual case: one node held whole, a 1-GPU Flex job.
    const one = plan({
      now: 0,
      nodes: [node("a")],
      holds: [{ ...holds[0]!, node_id: "a" }],
      queue: [job("y", { tier: "flex" })],
    });
    expect(one.waiting[0]!.reason).toBe("0/1 nodes: 1 free GPUs reserved for Fast");
  });

  it("counts cordoned, draining, lost, CPU, memory and block reasons", () => {
    const nodes = [
      node("lost", { state: "lost" }),
      node("cordoned", { state: "cordoned" }),
      node("drain", { state: "draining" }),
      node("cpu", { cpu_milli: 1_000 }),
      node("mem", { memory_mib: 1_000 }),
      node("block", { block_end_at: 1_000 }),
    ];
    const p = plan({ now: 0, nodes, queue: [job("j", { estimated_duration_s: 60 })] });
    expect(p.waiting[0]!.reason).toBe(
      "0/6 nodes: 1 node lost, 1 node cordoned, 1 node draining, 1 insufficient CPU, 1 insufficient memory, 1 block ends before the job's estimated end",
    );
  });

  it("says so when the region has no nodes", () => {
    expect(plan({ now: 0, nodes: [], queue: [job("j")] }).waiting[0]!.reason).toBe("0/0 nodes: no nodes in the region");
  });

  it("never places on GPUs held for no tier, and lets Fast (not Flex) use Fast headroom", () => {
    const nodes = [node("a")];
    const holds = [
      { node_id: "a", gpu_indices: [0, 1, 2, 3], usable_by: null },
      { node_id: "a", gpu_indices: [4, 5, 6, 7], usable_by: "fast" as const },
    ];
    const p = plan({
      now: 0,
      nodes,
      holds,
      queue: [job("flex", { tier: "flex" }), job("fast", { gpu_count: 4, submitted_at: 1 })],
    });
    expect(p.placements.map((x) => [x.job_id, x.nodes[0]!.gpu_indices])).toEqual([["fast", [4, 5, 6, 7]]]);
    expect(p.waiting.map((w) => w.job_id)).toEqual(["flex"]);
  });
});

describe("plan: gangs", () => {
  it("places k×8 GPUs on k whole nodes of one zone", () => {
    const nodes = [
      node("a1", { zone: "a" }),
      node("b1", { zone: "b" }),
      node("b2", { zone: "b" }),
      node("a2", { zone: "a" }),
    ];
    const p = plan({ now: 0, nodes, allocations: [busy("a2", [0])], queue: [job("g", { gpu_count: 16 })] });
    expect(p.placements[0]!.nodes.map((n) => [n.node_id, n.gpu_indices.length])).toEqual([
      ["b1", 8],
      ["b2", 8],
    ]);
  });

  it("is all or none: one whole node in each of two zones is not a 16-GPU gang", () => {
    const nodes = [node("a1", { zone: "a" }), node("b1", { zone: "b" })];
    const p = plan({ now: 0, nodes, queue: [job("g", { gpu_count: 16 })] });
    expect(p.placements).toEqual([]);
    expect(p.waiting[0]!.reason).toBe("2/2 nodes; no zone has 2 such nodes (most: 1 in a)");
  });

  it("prefers the zone with the fewest suitable nodes, keeping big zones whole", () => {
    const nodes = [
      ...["a1", "a2", "a3", "a4"].map((id) => node(id, { zone: "a" })),
      node("b1", { zone: "b" }),
      node("b2", { zone: "b" }),
    ];
    const p = plan({ now: 0, nodes, queue: [job("g", { gpu_count: 16 })] });
    expect(p.placements[0]!.nodes.map((n) => n.node_id)).toEqual(["b1", "b2"]);
  });
});

describe("plan: EASY backfill", () => {
  // One node, 8 GPUs: 6 busy until 2 h. The head needs 4 (starts at 2 h); 2 GPUs are free now.
  const nodes = [node("n")];
  const allocations = [busy("n", [0, 1, 2, 3, 4, 5], 2 * H)];
  const head = job("head", { gpu_count: 4, estimated_duration_s: 3_600 });

  it("reserves the head's earliest start and lets a short job start in front of it", () => {
    // small ends at 1 h ≤ 2 h: does not delay the head
    const small = job("small", { gpu_count: 2, estimated_duration_s: 3_600, submitted_at: 1 });
    const p = plan({ now: 0, nodes, allocations, queue: [head, small] });
    expect(p.waiting).toEqual([expect.objectContaining({ job_id: "head", reserved_start_at: 2 * H })]);
    expect(p.placements).toEqual([expect.objectContaining({ job_id: "small", kind: "backfill" })]);
  });

  it("lets a long job start when the reserved node keeps enough for the head anyway", () => {
    // long holds 2 GPUs past 2 h; at 2 h the node has 8 − 2 = 6 free ≥ the head's 4.
    const long = job("long", { gpu_count: 2, estimated_duration_s: 3 * 3_600, max_runtime_s: 86_400, submitted_at: 1 });
    expect(plan({ now: 0, nodes, allocations, queue: [head, long] }).placements.map((p) => p.job_id)).toEqual(["long"]);
  });

  it("refuses a long job that would delay the head", () => {
    // 7 busy until 2 h, the head needs all 8; a 1-GPU job running past 2 h leaves 8 − 1 = 7 < 8.
    const full = [busy("n", [0, 1, 2, 3, 4, 5, 6], 2 * H)];
    const bigHead = job("head", { gpu_count: 8, estimated_duration_s: 3_600 });
    const one = job("one", { gpu_count: 1, estimated_duration_s: 3 * 3_600, max_runtime_s: 86_400, submitted_at: 1 });
    const p = plan({ now: 0, nodes, allocations: full, queue: [bigHead, one] });
    expect(p.placements).toEqual([]);
    expect(p.waiting.map((w) => [w.job_id, w.reason])).toEqual([
      ["head", "0/1 nodes: 1 insufficient free GPUs"],
      ["one", "0/1 nodes: 1 would delay a reserved job"],
    ]);
  });

  it("reserves a gang only where every node's block outlives the gang's start", () => {
    // a is busy until 1 h; b is free but its block ends at 1 h. Together they would start at 1 h,
    // when b is gone: no reservation (the gang cannot run here).
    const ns = [node("a", { zone: "c" }), node("b", { zone: "c", block_end_at: H })];
    const gang = job("gang", { gpu_count: 16, estimated_duration_s: 600 });
    const p = plan({ now: 0, nodes: ns, allocations: [busy("a", [0, 1, 2, 3, 4, 5, 6, 7], H)], queue: [gang] });
    expect(p.waiting).toEqual([expect.objectContaining({ job_id: "gang", reserved_start_at: null })]);
    expect(p.reservations).toEqual([]);
  });

  it("passes the head's reservation to the next blocked job when the first can reserve no start", () => {
    // The gang cannot run here at all (b's block ends before a frees up); the 8-GPU Flex job behind
    // it can, at 2 h on n (a frees at 3 h, b ends too soon). It becomes the head: a long 1-GPU job may not
    // take n's free GPU.
    const ns = [node("a", { zone: "c" }), node("b", { zone: "c", block_end_at: H / 2 }), node("n", { zone: "d" })];
    const allocs = [busy("a", [0, 1, 2, 3, 4, 5, 6, 7], 3 * H), busy("n", [0, 1, 2, 3, 4, 5, 6], 2 * H)];
    const flex = { tier: "flex" as const, max_runtime_s: 86_400 };
    const q = [
      job("gang", { ...flex, gpu_count: 16, estimated_duration_s: 600 }),
      job("big", { ...flex, gpu_count: 8, estimated_duration_s: 3_600, submitted_at: 1 }),
      job("long", { ...flex, gpu_count: 1, estimated_duration_s: 10 * 3_600, submitted_at: 2 }),
    ];
    const p = plan({ now: 0, nodes: ns, allocations: allocs, queue: q });
    expect(p.waiting.map((w) => [w.job_id, w.reserved_start_at])).toEqual([
      ["gang", null],
      ["big", 2 * H],
      ["long", null],
    ]);
    expect(p.reservations).toEqual([{ job_id: "big", start_at: 2 * H, node_ids: ["n"], binds: "all" }]);
    expect(p.placements).toEqual([]);
  });

  it("tries a reservation once per job shape while none can be made and nothing changes", () => {
    // Every block ends in half an hour, before any of these 4-hour jobs could end: none can reserve,
    // and 300 blocked jobs of 3 shapes cost 3 reservation attempts, not 300.
    const ns = Array.from({ length: 20 }, (_, i) => node(`n${i}`, { block_end_at: H / 2 }));
    const allocs = ns.map((n) => busy(n.id, [0, 1, 2, 3, 4, 5, 6], H / 4));
    const q = Array.from({ length: 300 }, (_, i) =>
      job(`j${i}`, { tier: "flex", gpu_count: 2 + (i % 3), estimated_duration_s: 4 * 3_600, submitted_at: i }),
    );
    const reserve = vi.spyOn(ReservationBook.prototype, "reserve");
    try {
      const p = plan({ now: 0, nodes: ns, allocations: allocs, queue: q });
      expect(p.placements).toEqual([]);
      expect(p.reservations).toEqual([]);
      expect(reserve).toHaveBeenCalledTimes(3);
    } finally {
      reserve.mockRestore();
    }
  });

  it("lets a job with no estimate backfill only if its max runtime ends before the reserved start", () => {
    const full = [busy("n", [0, 1, 2, 3, 4, 5, 6], 2 * H)];
    const bigHead = job("head", { gpu_count: 8, estimated_duration_s: 3_600 });
    const q = (runtime: number) => [
      bigHead,
      job("x", { estimated_duration_s: null, max_runtime_s: runtime, submitted_at: 1 }),
    ];
    expect(plan({ now: 0, nodes, allocations: full, queue: q(3_600) }).placements.map((p) => p.job_id)).toEqual(["x"]);
    expect(plan({ now: 0, nodes, allocations: full, queue: q(3 * 3_600) }).placements).toEqual([]);
  });

  it("protects every blocked Fast job from Flex work, not only the head", () => {
    // Two nodes, each 7 of 8 busy until 2 h; fast-1 and fast-2 each need a whole node.
    const ns = [node("a"), node("b")];
    const allocs = [busy("a", [0, 1, 2, 3, 4, 5, 6], 2 * H), busy("b", [0, 1, 2, 3, 4, 5, 6], 2 * H)];
    const q = [
      job("fast-1", { gpu_count: 8, estimated_duration_s: 3_600 }),
      job("fast-2", { gpu_count: 8, estimated_duration_s: 3_600, submitted_at: 1 }),
      job("flex", {
        tier: "flex",
        gpu_count: 1,
        estimated_duration_s: 10 * 3_600,
        max_runtime_s: 86_400,
        submitted_at: 2,
      }),
      job("fast-3", { gpu_count: 1, estimated_duration_s: 10 * 3_600, max_runtime_s: 86_400, submitted_at: 3 }),
    ];
    const p = plan({ now: 0, nodes: ns, allocations: allocs, queue: q });
    // fast-1 reserves a at 2 h; a counts as taken by it until 3 h, so fast-2 reserves b at 2 h.
    // The Flex job would delay one or the other wherever it went. fast-3 is bound only by the
    // head (fast-1, on a), so it may take b's free GPU.
    expect(p.waiting.map((w) => [w.job_id, w.reserved_start_at])).toEqual([
      ["fast-1", 2 * H],
      ["fast-2", 2 * H],
      ["flex", null],
    ]);
    expect(p.placements.map((x) => [x.job_id, x.kind, x.nodes[0]!.node_id])).toEqual([["fast-3", "backfill", "b"]]);
  });
});
