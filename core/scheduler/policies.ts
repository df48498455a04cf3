/**
 * The two baselines the replay and the benchmark compare Scalar's selection with, on the same
 * fleet, filters and reasons:
 *  - first fit: the first node in id order that passes every check (a linear scan);
 *  - best fit: the node left with the fewest free GPUs (ties: lowest id).
 * Gangs: first fit takes the first zone (in name order) that holds k suitable nodes; best fit the
 * zone with the fewest suitable nodes that still holds k.
 */

import { FILTER_CHAIN, firstRejection } from "./filter";
import type { Fleet, FleetNode } from "./fleet";
import { popcount } from "./gpus";
import type { JobNeed } from "./need";
import { addReason, type ReasonCounts } from "./reasons";
import { type Choice, pickGpus, type Selection, select, type Veto } from "./select";

export const POLICIES = ["scalar", "best-fit", "first-fit"] as const;
export type Policy = (typeof POLICIES)[number];

export type Selector = (
  fleet: Fleet,
  need: JobNeed,
  ctx: import("./score").ScoreContext,
  limit: number,
  veto?: Veto,
) => Selection;

export const SELECTORS: Record<Policy, Selector> = {
  scalar: select,
  "best-fit": (fleet, need, _ctx, _limit, veto) => scanSelect(fleet, need, veto, "best"),
  "first-fit": (fleet, need, _ctx, _limit, veto) => scanSelect(fleet, need, veto, "first"),
};

/** Every node through the whole chain, in id order: also the reference the index is tested against. */
export function scanSelect(fleet: Fleet, need: JobNeed, veto: Veto | undefined, mode: "first" | "best"): Selection {
  const counts: ReasonCounts = {};
  const byZone = new Map<number, FleetNode[]>();
  let best: FleetNode | null = null;
  let bestLeft = Number.POSITIVE_INFINITY;
  let feasible = 0;
  for (const node of fleet.nodes) {
    const why = firstRejection(need, node, FILTER_CHAIN) ?? (veto ? veto(need, node) : null);
    if (why !== null) {
      addReason(counts, why);
      continue;
    }
    feasible++;
    if (need.nodes === 1) {
      const left = popcount(node.usableMask(need.tier)) - need.perNode;
      if (left < bestLeft) {
        best = node;
        bestLeft = left;
      }
      if (mode === "first") break;
    } else {
      const list = byZone.get(node.zoneOrd) ?? [];
      list.push(node);
      byZone.set(node.zoneOrd, list);
      if (mode === "first" && list.length === need.nodes) break;
    }
  }
  const choose = (nodes: FleetNode[]): Selection => ({
    ok: true,
    choices: nodes.map((node): Choice => ({ node, mask: pickGpus(node, need), score: 0 })),
  });
  if (need.nodes === 1) return best ? choose([best]) : { ok: false, feasible: 0, counts };
  let zone: FleetNode[] | null = null;
  for (const [, list] of [...byZone].sort((a, b) => a[0] - b[0])) {
    if (list.length < need.nodes) continue;
    if (mode === "first") {
      zone = list;
      break;
    }
    if (zone === null || list.length < zone.length) zone = list;
  }
  if (zone) return choose(zone.slice(0, need.nodes));
  return {
    ok: false,
    feasible,
    counts,
    extra: `needs ${need.nodes} nodes with ${need.perNode} free GPUs in one zone`,
  };
}
