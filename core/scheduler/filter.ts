/**
 * Feasibility: one tiny check per concern, each answering null (fits) or the reason it does not.
 * The chain's order is the order reasons are attributed in, so a node is counted under the first
 * check it fails:
 *   1. node state — a draining or lost node takes nothing, whatever else is true of it;
 *   2. GPU model — fixed for the node's life, so "wrong model" is the most useful answer;
 *   3. free GPUs — the scarce resource, and the usual reason to wait;
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

export const nodeState: NodeFilter = (_need, node) =>
  node.state === "ready" ? null : node.state === "lost" ? "node_lost" : "node_draining";

export const gpuModel: NodeFilter = (need, node) => (need.modelAllowed[node.modelOrd] ? null : "gpu_model_not_allowed");

export const freeGpus: NodeFilter = (need, node) =>
  popcount(node.usableMask(need.tier)) >= need.perNode ? null : "insufficient_free_gpus";

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
