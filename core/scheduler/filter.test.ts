/** Each feasibility check on its own, one row per case, with the arithmetic that decides it. */
import { describe, expect, it } from "vitest";
import {
  blockEnd,
  cpu,
  FILTER_CHAIN,
  firstRejection,
  freeGpus,
  gpuModel,
  memory,
  type NodeFilter,
  nodeState,
} from "./filter";
import { Fleet } from "./fleet";
import type { PackerAllocation, PackerHold, PackerJob, PackerNode } from "./model";
import { needFor } from "./need";
import type { ReasonCode } from "./reasons";
import { busy, job, node } from "./testing";

const NOW = 1_000_000;

function check(
  filter: NodeFilter,
  n: PackerNode,
  j: PackerJob,
  allocations: PackerAllocation[] = [],
  holds: PackerHold[] = [],
): ReasonCode | null {
  const fleet = Fleet.build([n], allocations, holds);
  return filter(needFor(j, fleet, NOW), fleet.nodes[0]!);
}

describe("nodeState", () => {
  it.each([
    ["ready takes work", "ready", null],
    ["cordoned takes no new work", "cordoned", "node_cordoned"],
    ["draining takes no new work", "draining", "node_draining"],
    ["lost takes nothing", "lost", "node_lost"],
  ] as const)("%s", (_, state, expected) => {
    expect(check(nodeState, node("n", { state }), job("j"))).toBe(expected);
  });
});

describe("gpuModel", () => {
  it.each([
    ["empty list = any model", "H100", [], null],
    ["listed model", "H200", ["H100", "H200"], null],
    ["unlisted model", "H200", ["H100"], "gpu_model_not_allowed"],
  ] as const)("%s", (_, model, allowed, expected) => {
    expect(check(gpuModel, node("n", { gpu_model: model }), job("j", { gpu_models: [...allowed] }))).toBe(expected);
  });
});

describe("freeGpus", () => {
  it.each([
    // 8 GPUs − 4 busy = 4 free ≥ 4 asked
    ["exact fit", [0, 1, 2, 3], [], 4, null],
    // 8 − 5 busy = 3 free < 4
    ["one short", [0, 1, 2, 3, 4], [], 4, "insufficient_free_gpus"],
    // 8 − 2 busy − 1 unhealthy = 5 free ≥ 5
    ["unhealthy GPUs are not free", [0, 1], [7], 5, null],
    // 8 − 2 busy − 2 unhealthy = 4 free < 5
    ["two unhealthy", [0, 1], [6, 7], 5, "insufficient_free_gpus"],
    // a 16-GPU gang asks 8 per node: 8 − 1 busy = 7 < 8
    ["gang member needs a whole node", [3], [], 16, "insufficient_free_gpus"],
  ] as const)("%s", (_, taken, unhealthy, gpus, expected) => {
    const n = node("n", { unhealthy_gpus: [...unhealthy] });
    expect(check(freeGpus, n, job("j", { gpu_count: gpus }), [busy("n", [...taken])])).toBe(expected);
  });

  it("counts GPUs held for the job's tier as free, and not those held for the other tier", () => {
    // 8 − 4 busy = 4 free, of which 2 held for Fast: a Fast job sees 4, a Flex job 4 − 2 = 2.
    const n = node("n");
    const held: PackerHold[] = [{ node_id: "n", gpu_indices: [4, 5], usable_by: "fast" }];
    const allocations = [busy("n", [0, 1, 2, 3])];
    expect(check(freeGpus, n, job("f", { gpu_count: 4, tier: "fast" }), allocations, held)).toBeNull();
    expect(check(freeGpus, n, job("x", { gpu_count: 4, tier: "flex" }), allocations, held)).toBe("reserved_for_fast");
    expect(check(freeGpus, n, job("x", { gpu_count: 2, tier: "flex" }), allocations, held)).toBeNull();
  });

  // When usable GPUs fall short, is it because idle GPUs are held for others? Node of 8 GPUs.
  it.each([
    // 8 idle, all Fast headroom: a 1-GPU Flex job sees 0 usable, 0 + 8 held for Fast ≥ 1
    ["Flex job, whole node held for Fast", "flex", 1, [], { fast: [0, 1, 2, 3, 4, 5, 6, 7] }, "reserved_for_fast"],
    // 6 busy, 2 held for Fast: 0 usable, 0 + 2 ≥ 2
    ["Flex job, the idle rest held for Fast", "flex", 2, [0, 1, 2, 3, 4, 5], { fast: [6, 7] }, "reserved_for_fast"],
    // 6 busy, 2 held for Fast: 0 + 2 < 3, the GPUs really are busy
    [
      "Flex job, held ones would not be enough",
      "flex",
      3,
      [0, 1, 2, 3, 4, 5],
      { fast: [6, 7] },
      "insufficient_free_gpus",
    ],
    // 4 busy, 4 held for Flex: a Fast job sees 0 usable, 0 + 4 ≥ 4
    ["Fast job, idle GPUs held for Flex", "fast", 4, [0, 1, 2, 3], { flex: [4, 5, 6, 7] }, "reserved_for_flex"],
    // 4 busy, 4 held for Fast: a Fast job uses them (4 ≥ 4)
    ["Fast job, its own headroom", "fast", 4, [0, 1, 2, 3], { fast: [4, 5, 6, 7] }, null],
    // 8 idle held for no tier: nobody uses them
    ["held for no tier", "fast", 1, [], { none: [0, 1, 2, 3, 4, 5, 6, 7] }, "reserved"],
    // 2 free + 3 Fast + 3 none, Flex 6: 2 + 3 < 6 by Fast alone, 2 + 6 ≥ 6 counting every hold
    ["only every hold together would do", "flex", 6, [], { fast: [2, 3, 4], none: [5, 6, 7] }, "reserved"],
  ] as const)("%s", (_, tier, gpus, taken, held, expected) => {
    const holds: PackerHold[] = Object.entries(held).map(([t, indices]) => ({
      node_id: "n",
      gpu_indices: [...indices],
      usable_by: t === "none" ? null : (t as "fast" | "flex"),
    }));
    const allocations = taken.length ? [busy("n", [...taken])] : [];
    expect(check(freeGpus, node("n"), job("j", { tier, gpu_count: gpus }), allocations, holds)).toBe(expected);
  });
});

describe("cpu", () => {
  it.each([
    // 64,000 − 60,000 = 4,000 free ≥ 4,000
    ["exact fit", 60_000, 4_000, null],
    // 64,000 − 60,001 = 3,999 < 4,000
    ["one millicore short", 60_001, 4_000, "insufficient_cpu"],
  ] as const)("%s", (_, used, asked, expected) => {
    const allocations = [busy("n", [0], null, used, 0)];
    expect(check(cpu, node("n"), job("j", { cpu_milli: asked }), allocations)).toBe(expected);
  });
});

describe("memory", () => {
  it.each([
    // 512,000 − 500,000 = 12,000 free ≥ 12,000
    ["exact fit", 500_000, 12_000, null],
    // 512,000 − 500,000 = 12,000 < 16,384
    ["short", 500_000, 16_384, "insufficient_memory"],
  ] as const)("%s", (_, used, asked, expected) => {
    const allocations = [busy("n", [0], null, 0, used)];
    expect(check(memory, node("n"), job("j", { memory_mib: asked }), allocations)).toBe(expected);
  });
});

describe("blockEnd", () => {
  it.each([
    ["no estimate: not filtered (scored instead)", NOW + 1_000, null, null],
    ["no block end: never filtered", null, 86_400, null],
    // ends at NOW + 3,600 s; estimated end NOW + 3,600 s: just fits
    ["block ends exactly at the estimated end", NOW + 3_600_000, 3_600, null],
    // ends at NOW + 3,599.999 s < NOW + 3,600 s
    ["block ends 1 ms before the estimated end", NOW + 3_599_999, 3_600, "block_ends_too_soon"],
  ] as const)("%s", (_, end, estimate, expected) => {
    expect(
      check(
        blockEnd,
        node("n", { block_end_at: end }),
        job("j", { estimated_duration_s: estimate, max_runtime_s: 7_200 }),
      ),
    ).toBe(expected);
  });
});

describe("the chain", () => {
  it("attributes a node to the first check it fails, in the documented order", () => {
    // A lost node of the wrong model with no free GPUs is reported as lost, not as the others.
    const lost = node("n", { state: "lost", gpu_model: "H200" });
    const fleet = Fleet.build([lost], [busy("n", [0, 1, 2, 3, 4, 5, 6, 7])]);
    expect(firstRejection(needFor(job("j", { gpu_models: ["H100"] }), fleet, NOW), fleet.nodes[0]!)).toBe("node_lost");
    expect(FILTER_CHAIN).toEqual([nodeState, gpuModel, freeGpus, cpu, memory, blockEnd]);
  });
});
