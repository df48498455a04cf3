/**
 * Select: walk the fleet's (model, free GPUs) buckets from the best possible score down, run the
 * remaining checks on their nodes, score the feasible ones and keep the best. Like Nomad's limit
 * iterator, a bucket stops after `candidates_per_bucket` feasible nodes (its nodes differ only by
 * block), and a bucket whose best possible score cannot beat the best found is skipped. When
 * nothing fits, the walk has seen every node, so it also returns the count of each reason.
 */

import { FILTER_CHAIN, firstRejection, RESOURCE_CHAIN, shortOfGpus } from "./filter";
import type { Fleet, FleetNode } from "./fleet";
import { lowestBits, popcount } from "./gpus";
import type { JobNeed } from "./need";
import type { NodeSet } from "./node-set";
import { addReason, type ReasonCode, type ReasonCounts } from "./reasons";
import { bucketBound, type ScoreContext, totalScore } from "./score";

/** A plan-level check run after the node checks (backfill: "would this delay a reserved job?"). */
export type Veto = (need: JobNeed, node: FleetNode) => ReasonCode | null;

export interface Choice {
  node: FleetNode;
  mask: number;
  score: number;
}

export type Selection =
  | { ok: true; choices: Choice[] }
  | { ok: false; feasible: number; counts: ReasonCounts; extra?: string; summary?: string };

export function select(fleet: Fleet, need: JobNeed, ctx: ScoreContext, limit: number, veto?: Veto): Selection {
  return need.nodes === 1 ? selectNode(fleet, need, ctx, limit, veto) : selectGang(fleet, need, ctx, veto);
}

function selectNode(fleet: Fleet, need: JobNeed, ctx: ScoreContext, limit: number, veto?: Veto): Selection {
  const counts: ReasonCounts = {};
  let best: Choice | null = null;
  let bestKey = 0;
  const consider = (node: FleetNode, reason: ReasonCode | null) => {
    const why = reason ?? (veto ? veto(need, node) : null);
    if (why !== null) {
      addReason(counts, why);
      return false;
    }
    const score = totalScore(need, node, ctx);
    const key = tieKey(node);
    if (best === null || score > best.score || (score === best.score && key < bestKey)) {
      best = { node, mask: 0, score };
      bestKey = key;
    }
    return true;
  };

  // Nodes with GPUs held for this tier: few, and their usable count is not their bucket's.
  const held = fleet.heldFor[need.tier];
  for (let i = held.next(0); i >= 0; i = held.next(i + 1)) {
    const node = fleet.nodes[i]!;
    consider(node, firstRejection(need, node, FILTER_CHAIN));
  }

  for (const { row, bound } of bucketsByBound(fleet, need, ctx)) {
    if (best !== null && bound < (best as Choice).score) break;
    let found = 0;
    for (let i = row.next(0); i >= 0 && found < limit; i = row.next(i + 1)) {
      if (held.has(i)) continue;
      const node = fleet.nodes[i]!;
      if (consider(node, firstRejection(need, node, RESOURCE_CHAIN))) found++;
    }
  }

  if (best !== null) {
    const choice = best as Choice;
    choice.mask = pickGpus(choice.node, need);
    return { ok: true, choices: [choice] };
  }
  countByIndex(fleet, need, counts);
  return { ok: false, feasible: 0, counts };
}

/** k×8 GPUs: k nodes with 8 free GPUs each in one zone, all or none. */
function selectGang(fleet: Fleet, need: JobNeed, ctx: ScoreContext, veto?: Veto): Selection {
  const counts: ReasonCounts = {};
  const byZone = new Map<number, Choice[]>();
  const take = (node: FleetNode, reason: ReasonCode | null) => {
    const why = reason ?? (veto ? veto(need, node) : null);
    if (why !== null) return addReason(counts, why);
    const list = byZone.get(node.zoneOrd) ?? [];
    list.push({ node, mask: 0, score: totalScore(need, node, ctx) });
    byZone.set(node.zoneOrd, list);
  };
  const held = fleet.heldFor[need.tier];
  for (let i = held.next(0); i >= 0; i = held.next(i + 1)) {
    const node = fleet.nodes[i]!;
    take(node, firstRejection(need, node));
  }
  for (const { row } of bucketsByBound(fleet, need, ctx)) {
    for (let i = row.next(0); i >= 0; i = row.next(i + 1)) {
      if (!held.has(i)) take(fleet.nodes[i]!, firstRejection(need, fleet.nodes[i]!, RESOURCE_CHAIN));
    }
  }

  // Best fit among zones: the one with the fewest suitable nodes that still holds the gang, so
  // zones with many whole nodes stay whole for bigger gangs.
  let zone: Choice[] | null = null;
  let feasible = 0;
  let most = { zone: -1, n: 0 };
  for (const [z, list] of [...byZone].sort((a, b) => a[0] - b[0])) {
    feasible += list.length;
    if (list.length > most.n) most = { zone: z, n: list.length };
    if (list.length >= need.nodes && (zone === null || list.length < zone.length)) zone = list;
  }
  if (zone !== null) {
    const chosen = zone
      .sort((a, b) => b.score - a.score || tieKey(a.node) - tieKey(b.node))
      .slice(0, need.nodes)
      .sort((a, b) => a.node.ord - b.node.ord);
    for (const c of chosen) c.mask = pickGpus(c.node, need);
    return { ok: true, choices: chosen };
  }
  countByIndex(fleet, need, counts);
  const extra =
    most.n > 0
      ? `no zone has ${need.nodes} such nodes (most: ${most.n} in ${fleet.zones[most.zone]})`
      : `needs ${need.nodes} nodes with ${need.perNode} free GPUs in one zone`;
  return { ok: false, feasible, counts, extra };
}

interface BucketRef {
  row: NodeSet;
  free: number;
  bound: number;
}

/** Non-empty buckets the job's GPUs fit in, best possible score first (ties: fewer free GPUs). */
function bucketsByBound(fleet: Fleet, need: JobNeed, ctx: ScoreContext): BucketRef[] {
  const out: BucketRef[] = [];
  for (let m = 0; m < fleet.models.length; m++) {
    if (!need.modelAllowed[m] || fleet.readyByModel[m] === 0) continue;
    const rows = fleet.buckets[m]!;
    for (let f = need.perNode; f < rows.length; f++) {
      const row = rows[f]!;
      if (row.size > 0) out.push({ row, free: f, bound: bucketBound(need, f, fleet.maxTotalByModel[m]!, ctx) });
    }
  }
  return out.sort((a, b) => b.bound - a.bound || a.free - b.free);
}

/**
 * Reasons the index answers without visiting nodes: node state, GPU model, and too few free GPUs.
 * Nodes with GPUs held for the job's tier were visited one by one, so they are taken out of the
 * bucket counts; short nodes with GPUs held for others (few) are looked at to tell "reserved" from
 * "insufficient".
 */
function countByIndex(fleet: Fleet, need: JobNeed, counts: ReasonCounts): void {
  addReason(counts, "node_lost", fleet.lost);
  addReason(counts, "node_cordoned", fleet.cordoned);
  addReason(counts, "node_draining", fleet.draining);
  const held = fleet.heldFor[need.tier];
  for (let m = 0; m < fleet.models.length; m++) {
    if (!need.modelAllowed[m]) {
      let visited = 0;
      for (let i = held.next(0); i >= 0; i = held.next(i + 1)) if (fleet.nodes[i]!.modelOrd === m) visited++;
      addReason(counts, "gpu_model_not_allowed", fleet.readyByModel[m]! - visited);
      continue;
    }
    const rows = fleet.buckets[m]!;
    let short = 0;
    for (let f = 0; f < need.perNode && f < rows.length; f++) short += rows[f]!.size;
    for (let i = held.next(0); i >= 0; i = held.next(i + 1)) {
      const node = fleet.nodes[i]!;
      if (node.modelOrd === m && popcount(node.free) < need.perNode) short--;
    }
    // Short nodes whose idle GPUs are held for another tier (or none): say so, not "insufficient".
    const reserved = fleet.heldAny;
    for (let i = reserved.next(0); i >= 0; i = reserved.next(i + 1)) {
      const node = fleet.nodes[i]!;
      if (node.modelOrd !== m || held.has(i) || popcount(node.free) >= need.perNode) continue;
      const why = shortOfGpus(need, node, node.free);
      if (why === "insufficient_free_gpus") continue;
      short--;
      addReason(counts, why);
    }
    addReason(counts, "insufficient_free_gpus", short);
  }
}

/** The lowest free GPU indices, then GPUs held for the job's tier: a reservation is used last. */
export function pickGpus(node: FleetNode, need: JobNeed): number {
  const fromFree = lowestBits(node.free, need.perNode);
  const short = need.perNode - popcount(fromFree);
  if (short <= 0) return fromFree;
  const held = need.tier === "fast" ? node.heldFast : node.heldFlex;
  return fromFree | lowestBits(held & ~fromFree, short);
}

/**
 * Equal scores go to the lowest node id: work keeps to the same nodes and the others drain whole.
 * (Spreading equal jobs over equal nodes doubled the median wait of the Philly replay on a busy
 * fleet: see docs/scheduler.md.)
 */
function tieKey(node: FleetNode): number {
  return node.ord;
}
