/** Each scorer on its own, one row per case, with the arithmetic that gives the score. */
import { describe, expect, it } from "vitest";
import { Fleet } from "./fleet";
import { DEFAULT_CONFIG, type PackerAllocation, type PackerJob, type PackerNode } from "./model";
import { needFor } from "./need";
import {
  binPack,
  blockFit,
  bucketBound,
  fragmentation,
  fragTable,
  type Scorer,
  scoreContext,
  sizeMixOf,
  totalScore,
} from "./score";
import { busy, job, node } from "./testing";

const H = 3_600_000;

function score(
  scorer: Scorer,
  n: PackerNode,
  j: PackerJob,
  allocations: PackerAllocation[] = [],
  mix: Record<number, number> = { 1: 1 },
) {
  const fleet = Fleet.build([n], allocations);
  return scorer(needFor(j, fleet, 0), fleet.nodes[0]!, scoreContext(mix, 0, DEFAULT_CONFIG.weights));
}

describe("binPack (most allocated)", () => {
  it.each([
    // used after = 8 − (2 free − 2) = 8 of 8 → 100
    ["fills the node", [0, 1, 2, 3, 4, 5], [], 2, 100],
    // 8 − (4 − 2) = 6 of 8 → 75
    ["half-used node", [0, 1, 2, 3], [], 2, 75],
    // 8 − (8 − 1) = 1 of 8 → 12.5
    ["breaks a whole node", [], [], 1, 12.5],
    // 7 healthy: 7 − (7 − 1) = 1 of 7 → 14.29
    ["unhealthy GPUs do not count", [], [7], 1, 100 / 7],
  ] as const)("%s", (_, taken, unhealthy, gpus, expected) => {
    const s = score(binPack, node("n", { unhealthy_gpus: [...unhealthy] }), job("j", { gpu_count: gpus }), [
      busy("n", [...taken]),
    ]);
    expect(s).toBeCloseTo(expected, 6);
  });
});

describe("fragmentation", () => {
  // Mix {1: ½, 4: ½}: frag[f] = f × P(size > f) → frag = [0, 0.5, 1, 1.5, 0, 0, …].
  const mix = { 1: 1, 4: 1 };

  it("builds the table", () => {
    expect([...fragTable(mix)].slice(0, 6)).toEqual([0, 0.5, 1, 1.5, 0, 0]);
  });

  it.each([
    // 4 free → 3: Δ = 1.5 − 0 = +1.5 per GPU taken → 50 × (1 − 1.5) < 0 → 0 (breaks a 4-GPU hole)
    ["breaking a 4-GPU hole for 1 GPU", 4, 1, 0],
    // 5 free → 4: Δ = 0 − 0 = 0 → 50
    ["taking the spare GPU beside a 4-GPU hole", 5, 1, 50],
    // 1 free → 0: Δ = 0 − 0.5 = −0.5 → 50 × 1.5 = 75 (closes a useless hole)
    ["filling a 1-GPU hole", 1, 1, 75],
    // 3 free → 1: Δ = 0.5 − 1.5 = −1 over 2 GPUs → 50 × (1 + ½) = 75
    ["2 GPUs from a 3-GPU hole", 3, 2, 75],
  ] as const)("%s", (_, free, gpus, expected) => {
    const taken = [0, 1, 2, 3, 4, 5, 6, 7].slice(0, 8 - free);
    expect(score(fragmentation, node("n"), job("j", { gpu_count: gpus }), [busy("n", taken)], mix)).toBeCloseTo(
      expected,
      6,
    );
  });

  it("derives the mix from the queue, a gang counting as k whole nodes, over an even prior", () => {
    // prior ¼ each of 1, 2, 4, 8; two 1-GPU jobs add 2; a 16-GPU gang adds 2 nodes of 8.
    expect(sizeMixOf([{ gpu_count: 1 }, { gpu_count: 1 }, { gpu_count: 16 }])).toEqual({
      1: 2.25,
      2: 0.25,
      4: 0.25,
      8: 2.25,
    });
  });
});

describe("blockFit", () => {
  const j = (estimate: number | null, runtime: number | null = 4 * 3_600) =>
    job("j", { estimated_duration_s: estimate, max_runtime_s: runtime });
  it.each([
    ["no block end", null, j(3_600), 100],
    // block 5 h ≥ deadline 4 h
    ["outlives the deadline", 5 * H, j(3_600), 100],
    // 50 + 50 × (2 h − 1 h) / (4 h − 1 h) = 66.67
    ["between estimate and deadline", 2 * H, j(3_600), 50 + 50 / 3],
    // 50 + 50 × (1 h − 1 h) / 3 h = 50
    ["ends at the estimate", 1 * H, j(3_600), 50],
    // no estimate: 50 × 1 h / 4 h = 12.5
    ["no estimate: share of the deadline covered", 1 * H, j(null), 12.5],
    // a replica (no deadline) on a node whose block ends: 50 × 1 h / ∞ = 0
    ["no deadline, block ends", 1 * H, j(null, null), 0],
  ] as const)("%s", (_, end, jb, expected) => {
    expect(score(blockFit, node("n", { block_end_at: end }), jb)).toBeCloseTo(expected, 6);
  });
});

describe("totalScore", () => {
  it("is the weighted mean, normalised once, and never above the bucket's bound", () => {
    // 4 free of 8, 1 GPU, mix {1: 1}: pack 8 − 3 = 5/8 → 62.5; frag all 0 → Δ 0 → 50; no block → 100.
    // (62.5 + 50 + 100) / 3 = 70.83
    const fleet = Fleet.build([node("n")], [busy("n", [0, 1, 2, 3])]);
    const need = needFor(job("j"), fleet, 0);
    const ctx = scoreContext({ 1: 1 }, 0, DEFAULT_CONFIG.weights);
    expect(totalScore(need, fleet.nodes[0]!, ctx)).toBeCloseTo(212.5 / 3, 6);
    expect(bucketBound(need, 4, 8, ctx)).toBeCloseTo(212.5 / 3, 6);
    // weights 2:0:0 → pack alone: 62.5
    const packOnly = scoreContext({ 1: 1 }, 0, { bin_pack: 2, fragmentation: 0, block_fit: 0 });
    expect(totalScore(need, fleet.nodes[0]!, packOnly)).toBeCloseTo(62.5, 6);
  });
});
