/**
 * The packer's working state: every node with its free GPUs (a mask), CPU and memory, indexed by
 * (GPU model, free GPU count) so a search starts at the tightest fit instead of scanning the fleet.
 * `plan()` builds one from a snapshot and changes only its own copy; the benchmark and the replay
 * keep one alive and allocate and release on it directly.
 */
import { indicesOf, maskOf, popcount } from "./gpus";
import type { NodeState, PackerAllocation, PackerHold, PackerNode, Tier } from "./model";
import { NodeSet } from "./node-set";

export const MAX_GPUS_PER_NODE = 16;

export interface FleetAllocation {
  readonly node: FleetNode;
  readonly mask: number;
  readonly gpus: number;
  readonly cpu: number;
  readonly mem: number;
  /** Expected release time; Infinity when unknown. */
  readonly end: number;
}

export class FleetNode {
  /** GPUs that are healthy, not allocated and not held by a reservation. */
  free: number;
  /** Held GPUs that jobs of one tier may still use. */
  heldFast = 0;
  heldFlex = 0;
  /** Held GPUs no job may use. */
  heldNone = 0;
  cpuFree: number;
  memFree: number;
  readonly allocations: FleetAllocation[] = [];
  readonly healthy: number;
  readonly gpuTotal: number;
  readonly blockEnd: number;
  readonly cpuTotal: number;
  readonly memTotal: number;

  constructor(
    readonly id: string,
    readonly ord: number,
    readonly zone: string,
    readonly zoneOrd: number,
    readonly model: string,
    readonly modelOrd: number,
    readonly state: NodeState,
    node: PackerNode,
  ) {
    this.healthy = maskOf(node.gpus) & ~maskOf(node.unhealthy_gpus);
    this.gpuTotal = popcount(this.healthy);
    this.free = this.healthy;
    this.cpuFree = this.cpuTotal = node.cpu_milli;
    this.memFree = this.memTotal = node.memory_mib;
    this.blockEnd = node.block_end_at ?? Number.POSITIVE_INFINITY;
  }

  /** GPUs a job of `tier` may take here: free ones plus those held for its tier. */
  usableMask(tier: Tier): number {
    return this.free | (tier === "fast" ? this.heldFast : this.heldFlex);
  }
}

export class Fleet {
  readonly nodes: FleetNode[];
  readonly byId = new Map<string, FleetNode>();
  readonly models: string[];
  readonly zones: string[];
  /** Ready nodes by [model ordinal][free GPU count]. */
  readonly buckets: NodeSet[][];
  /** Ready nodes with GPUs held for a tier (few: the capacity manager's headroom). */
  readonly heldFor: Record<Tier, NodeSet>;
  /** Ready nodes with any held GPUs, whoever may use them (for the reasons a job waits). */
  readonly heldAny: NodeSet;
  readonly readyByModel: number[];
  readonly maxTotalByModel: number[];
  cordoned = 0;
  draining = 0;
  lost = 0;
  /** Free GPUs over ready nodes (not counting held ones). */
  freeGpus = 0;
  /** Whether any node's block ends: if none, the block-end check can never reject. */
  readonly hasBlockEnds: boolean;
  private readonly allowedByModels = new Map<string, readonly boolean[]>();
  /** Bumped by every change, so a pass can cache answers between changes. */
  version = 0;

  constructor(nodes: readonly PackerNode[]) {
    const sorted = [...nodes].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    this.models = [...new Set(sorted.map((n) => n.gpu_model))].sort();
    this.zones = [...new Set(sorted.map((n) => n.zone))].sort();
    const modelOrd = new Map(this.models.map((m, i) => [m, i]));
    const zoneOrd = new Map(this.zones.map((z, i) => [z, i]));
    this.buckets = this.models.map(() =>
      Array.from({ length: MAX_GPUS_PER_NODE + 1 }, () => new NodeSet(sorted.length)),
    );
    this.heldFor = { fast: new NodeSet(sorted.length), flex: new NodeSet(sorted.length) };
    this.heldAny = new NodeSet(sorted.length);
    this.readyByModel = this.models.map(() => 0);
    this.maxTotalByModel = this.models.map(() => 0);
    this.nodes = sorted.map((n, ord) => {
      const m = modelOrd.get(n.gpu_model)!;
      const node = new FleetNode(n.id, ord, n.zone, zoneOrd.get(n.zone)!, n.gpu_model, m, n.state, n);
      this.byId.set(n.id, node);
      if (n.state === "ready") {
        this.readyByModel[m]!++;
        this.maxTotalByModel[m] = Math.max(this.maxTotalByModel[m]!, node.gpuTotal);
        this.buckets[m]![popcount(node.free)]!.add(ord);
        this.freeGpus += popcount(node.free);
      } else if (n.state === "cordoned") this.cordoned++;
      else if (n.state === "draining") this.draining++;
      else this.lost++;
      return node;
    });
    this.hasBlockEnds = this.nodes.some((n) => Number.isFinite(n.blockEnd));
  }

  /** By model ordinal: may a job asking for `models` (empty = any) use that model? Cached per list. */
  allowed(models: readonly string[]): readonly boolean[] {
    const key = models.join("|");
    let allowed = this.allowedByModels.get(key);
    if (!allowed) {
      allowed = this.models.map((m) => models.length === 0 || models.includes(m));
      this.allowedByModels.set(key, allowed);
    }
    return allowed;
  }

  static build(
    nodes: readonly PackerNode[],
    allocations: readonly PackerAllocation[] = [],
    holds: readonly PackerHold[] = [],
  ): Fleet {
    const fleet = new Fleet(nodes);
    for (const a of allocations) {
      const node = fleet.byId.get(a.node_id);
      if (!node) continue;
      fleet.allocate(node, maskOf(a.gpu_indices), a.cpu_milli, a.memory_mib, a.expected_end_at ?? Infinity);
    }
    for (const h of holds) {
      const node = fleet.byId.get(h.node_id);
      if (node) fleet.hold(node, maskOf(h.gpu_indices), h.usable_by);
    }
    return fleet;
  }

  /** Take GPUs (free or held for the job's tier), CPU and memory on a node. */
  allocate(node: FleetNode, mask: number, cpu: number, mem: number, end: number): FleetAllocation {
    const before = popcount(node.free);
    node.free &= ~mask;
    const fromHeld = (node.heldFast | node.heldFlex) & mask;
    if (fromHeld !== 0) {
      node.heldFast &= ~mask;
      node.heldFlex &= ~mask;
      this.refreshHeld(node);
    }
    node.cpuFree -= cpu;
    node.memFree -= mem;
    const allocation: FleetAllocation = { node, mask, gpus: popcount(mask), cpu, mem, end };
    node.allocations.push(allocation);
    this.rebucket(node, before);
    return allocation;
  }

  /** Give an allocation's resources back (its GPUs return as free, not as held). */
  release(allocation: FleetAllocation): void {
    const node = allocation.node;
    const i = node.allocations.indexOf(allocation);
    if (i < 0) return;
    node.allocations.splice(i, 1);
    const before = popcount(node.free);
    node.free |= allocation.mask & node.healthy;
    node.cpuFree += allocation.cpu;
    node.memFree += allocation.mem;
    this.rebucket(node, before);
  }

  /** Hold free GPUs for a reservation: usable by one tier's jobs, or by none. */
  hold(node: FleetNode, mask: number, usableBy: Tier | null): void {
    const before = popcount(node.free);
    const taken = node.free & mask;
    node.free &= ~taken;
    if (usableBy === "fast") node.heldFast |= taken;
    if (usableBy === "flex") node.heldFlex |= taken;
    if (usableBy === null) node.heldNone |= taken;
    this.refreshHeld(node);
    this.rebucket(node, before);
  }

  gpuIndices(mask: number): number[] {
    return indicesOf(mask);
  }

  private refreshHeld(node: FleetNode): void {
    if (node.state !== "ready") return;
    if (node.heldFast !== 0) this.heldFor.fast.add(node.ord);
    else this.heldFor.fast.delete(node.ord);
    if (node.heldFlex !== 0) this.heldFor.flex.add(node.ord);
    else this.heldFor.flex.delete(node.ord);
    if ((node.heldFast | node.heldFlex | node.heldNone) !== 0) this.heldAny.add(node.ord);
    else this.heldAny.delete(node.ord);
  }

  private rebucket(node: FleetNode, freeBefore: number): void {
    this.version++;
    if (node.state !== "ready") return;
    const after = popcount(node.free);
    if (after === freeBefore) return;
    this.freeGpus += after - freeBefore;
    const row = this.buckets[node.modelOrd]!;
    row[freeBefore]!.delete(node.ord);
    row[after]!.add(node.ord);
  }
}
