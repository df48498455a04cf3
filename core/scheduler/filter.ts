/**
 * Feasibility: one tiny check per concern, each answering null (fits) or the reason it does not.
 * The chain's order is the order reasons are attributed in, so a node is counted under the first
 * check it fails:
 *   1. node state — a cordoned, draining or lost node takes nothing, whatever else is true of it;
 *   2. GPU model — fixed for the node's life, so "wrong model" is the most useful answer;
 *   3. free GPUs — the scarce resource, and the usual reason to wait; when the GPUs are there
 *      but held by reservations the job's tier may not use, the reason says so (held for Fast
 *      headroom, for Flex, or for no tier), so a job waiting on idle GPUs is told why;
 *   4. CPU, 5. memory — rarely binding on 8-GPU nodes, checked only once GPUs fit;
 *   6. block end — the node would leave the region before the job's estimated end.
 * The packer's index already answers 1–3 for whole buckets of nodes; these functions are the
 * definition it must agree with (tests compare the two).
 */
import type { FleetNode } from "./fleet";
import { popcount } from "./gpus";
import type { JobNeed } from "./need";
import type { ReasonCode } from "./reasons";

export type NodeFilter = (need: JobNeed, node: FleetNode) => ReasonCode | null;

const STATE_REASON = { ready: null, cordoned: "node_cordoned", draining: "node_draining", lost: "node_lost" } as const;

export const nodeState: NodeFilter = (_need, node) => STATE_REASON[node.state];

export const gpuModel: NodeFilter = (need, node) => (need.modelAllowed[node.modelOrd] ? null : "gpu_model_not_allowed");

export const freeGpus: NodeFilter = (need, node) => {
  const usable = node.usableMask(need.tier);
  return popcount(usable) >= need.perNode ? null : shortOfGpus(need, node, usable);
};

/**
 * Why a node's usable GPUs fall short: would the GPUs held for Fast, then those held for Flex, then
 * every held GPU make up the difference? If so the GPUs are idle but reserved; else they are busy
 * (or unhealthy).
 */
export function shortOfGpus(need: JobNeed, node: FleetNode, usable: number): ReasonCode {
  if (popcount(usable | node.heldFast) >= need.perNode) return "reserved_for_fast";
  if (popcount(usable | node.heldFlex) >= need.perNode) return "reserved_for_flex";
  if (popcount(usable | node.heldFast | node.heldFlex | node.heldNone) >= need.perNode) return "reserved";
  return "insufficient_free_gpus";
}

export const cpu: NodeFilter = (need, node) => (node.cpuFree >= need.cpu ? null : "insufficient_cpu");

export const memory: NodeFilter = (need, node) => (node.memFree >= need.mem ? null : "insufficient_memory");

export const blockEnd: NodeFilter = (need, node) =>
  need.estimatedEnd === null || node.blockEnd >= need.estimatedEnd ? null : "block_ends_too_soon";

export const FILTER_CHAIN: readonly NodeFilter[] = [nodeState, gpuModel, freeGpus, cpu, memory, blockEnd];

/** The checks the index does not answer: run on nodes drawn from a bucket that already fits 1–3. */
export const RESOURCE_CHAIN: readonly NodeFilter[] = [cpu, memory, blockEnd];

export function firstRejection(
  need: JobNeed,
  node: FleetNode,
  chain: readonly NodeFilter[] = FILTER_CHAIN,
): ReasonCode | null {
  for (const check of chain) {
    const reason = check(need, node);
    if (reason !== null) return reason;
  }
  return null;
}
