/**
 * EASY backfill. When a job cannot start, it gets a reservation: the earliest instant its GPUs,
 * CPU and memory will be free on some node (or k nodes of one zone), assuming running work ends
 * at its expected end (estimate, else kill deadline). A later job may then start only if it does
 * not delay that instant: it ends first, or it leaves enough of the reserved node free anyway.
 * Reservations made earlier in a pass count as taken (from now until their expected end) when a
 * later one is computed, so two waiting jobs are not promised the same GPUs.
 */
import type { Fleet, FleetNode } from "./fleet";
import { popcount } from "./gpus";
import type { Tier } from "./model";
import type { JobNeed } from "./need";
import type { ReasonCode } from "./reasons";

export interface Reservation {
  job_id: string;
  tier: Tier;
  /** Order of creation within the pass. */
  seq: number;
  start: number;
  /** Expected end if it starts at `start` (Infinity: unknown). */
  end: number;
  /** What the job needs on each reserved node at `start`. */
  nodes: FleetNode[];
  gpus: number;
  cpu: number;
  mem: number;
  /** Whom it binds: everyone (the head of the queue), or only Flex work (a blocked Fast job). */
  binds: "all" | "flex";
}

interface Amount {
  gpus: number;
  cpu: number;
  mem: number;
}

/** Resources of `node` usable by `tier` at instant `t`, if everything expected to end by then has. */
function freeAt(node: FleetNode, tier: Tier, t: number): Amount {
  const out = { gpus: popcount(node.usableMask(tier)), cpu: node.cpuFree, mem: node.memFree };
  for (const a of node.allocations) {
    if (a.end <= t) {
      out.gpus += popcount(a.mask & node.healthy);
      out.cpu += a.cpu;
      out.mem += a.mem;
    }
  }
  return out;
}

/**
 * The earliest instant `need` fits on this node, given expected ends and the reservations already
 * on it (held from now until their end); Infinity if never.
 */
export function earliestFit(node: FleetNode, need: JobNeed, now: number, held: readonly Reservation[] = []): number {
  if (node.state !== "ready" || !need.modelAllowed[node.modelOrd]) return Number.POSITIVE_INFINITY;
  const have = { gpus: popcount(node.usableMask(need.tier)), cpu: node.cpuFree, mem: node.memFree };
  const releases: { at: number; gpus: number; cpu: number; mem: number }[] = [];
  for (const a of node.allocations) {
    if (Number.isFinite(a.end))
      releases.push({ at: a.end, gpus: popcount(a.mask & node.healthy), cpu: a.cpu, mem: a.mem });
  }
  for (const r of held) {
    have.gpus -= r.gpus;
    have.cpu -= r.cpu;
    have.mem -= r.mem;
    if (Number.isFinite(r.end)) releases.push({ at: r.end, gpus: r.gpus, cpu: r.cpu, mem: r.mem });
  }
  const fits = () => have.gpus >= need.perNode && have.cpu >= need.cpu && have.mem >= need.mem;
  let at = now;
  if (!fits()) {
    at = Number.POSITIVE_INFINITY;
    releases.sort((a, b) => a.at - b.at);
    for (const r of releases) {
      have.gpus += r.gpus;
      have.cpu += r.cpu;
      have.mem += r.mem;
      if (fits()) {
        at = Math.max(now, r.at);
        break;
      }
    }
  }
  // The block must still be there when the job would end.
  if (need.estimate != null && node.blockEnd < at + need.estimate) {
    return Number.POSITIVE_INFINITY;
  }
  return at;
}

/** Reservations of one pass, indexed by node, and the veto a later job's candidate node must pass. */
export class ReservationBook {
  readonly all: Reservation[] = [];
  private readonly byNode = new Map<number, Reservation[]>();

  get size(): number {
    return this.all.length;
  }

  on(node: FleetNode): readonly Reservation[] {
    return this.byNode.get(node.ord) ?? [];
  }

  /** Reserve the earliest start for `need`: one node, or k nodes of one zone. Null if it can never fit. */
  reserve(fleet: Fleet, need: JobNeed, now: number, binds: Reservation["binds"]): Reservation | null {
    const fits: { node: FleetNode; at: number }[] = [];
    for (const node of fleet.nodes) {
      const at = earliestFit(node, need, now, this.on(node));
      if (Number.isFinite(at)) fits.push({ node, at });
    }
    fits.sort((a, b) => a.at - b.at || a.node.ord - b.node.ord);
    let chosen: { node: FleetNode; at: number }[] | null = null;
    if (need.nodes === 1) {
      chosen = fits.length > 0 ? [fits[0]!] : null;
    } else {
      // A gang starts when its last node is free; every node's block must outlive it from then.
      const byZone = new Map<number, { node: FleetNode; at: number }[]>();
      for (const f of fits) {
        const list = byZone.get(f.node.zoneOrd) ?? [];
        list.push(f);
        byZone.set(f.node.zoneOrd, list);
      }
      for (const [, list] of [...byZone].sort((a, b) => a[0] - b[0])) {
        for (let i = need.nodes - 1; i < list.length; i++) {
          const start = list[i]!.at;
          if (chosen !== null && start >= chosen[chosen.length - 1]!.at) break;
          const ok = list
            .slice(0, i + 1)
            .filter((f) => need.estimate == null || f.node.blockEnd >= start + need.estimate);
          if (ok.length >= need.nodes) {
            chosen = [...ok.slice(0, need.nodes - 1), { node: ok[need.nodes - 1]!.node, at: start }];
            break;
          }
        }
      }
    }
    if (chosen === null) return null;
    const start = chosen[chosen.length - 1]!.at;
    const duration = need.end - now;
    const r: Reservation = {
      job_id: need.job.id,
      tier: need.tier,
      seq: this.all.length,
      start,
      end: start + duration,
      nodes: chosen.map((c) => c.node),
      gpus: need.perNode,
      cpu: need.cpu,
      mem: need.mem,
      binds,
    };
    this.all.push(r);
    for (const n of r.nodes) {
      const list = this.byNode.get(n.ord) ?? [];
      list.push(r);
      this.byNode.set(n.ord, list);
    }
    return r;
  }

  /** Would placing `need` on `node` now push back the start of a reservation that binds it? */
  delays(need: JobNeed, node: FleetNode): ReasonCode | null {
    const list = this.byNode.get(node.ord);
    if (list === undefined) return null;
    for (const r of list) {
      if (r.binds === "flex" && need.tier !== "flex") continue;
      if (need.end <= r.start) continue;
      const left = freeAt(node, r.tier, r.start);
      for (const earlier of list) {
        if (earlier.seq < r.seq && earlier.end > r.start) {
          left.gpus -= earlier.gpus;
          left.cpu -= earlier.cpu;
          left.mem -= earlier.mem;
        }
      }
      if (left.gpus - need.perNode < r.gpus || left.cpu - need.cpu < r.cpu || left.mem - need.mem < r.mem) {
        return "would_delay_reserved_job";
      }
    }
    return null;
  }
}
