/** The packer's input drawn from the object's rows, and the re-check of its plan before commit. */
import {
  estimateMs,
  type PackerAllocation,
  type PackerHold,
  type PackerJob,
  type PackerNode,
} from "../../core/scheduler";
import {
  cordoned,
  type JobRow,
  json,
  liveState,
  type NodeRow,
  type ReservationRow,
  type RunRow,
  waitingSince,
} from "./rows";

export function toPackerNode(n: NodeRow): PackerNode {
  return {
    id: n.id,
    zone: n.zone,
    gpu_model: n.gpu_model,
    gpus: json.numbers(n.gpus),
    unhealthy_gpus: json.numbers(n.unhealthy_gpus),
    cpu_milli: n.cpu_milli,
    memory_mib: n.memory_mib,
    state: liveState(n),
    block_end_at: n.block_end_at,
  };
}
export function toPackerJob(j: JobRow): PackerJob {
  return {
    id: j.id,
    account_id: j.account_id,
    tier: j.tier,
    priority: j.priority,
    gpu_count: j.gpu_count,
    gpu_models: json.strings(j.gpu_models),
    cpu_milli: j.cpu_milli,
    memory_mib: j.memory_mib,
    estimated_duration_s: j.estimated_duration_s,
    max_runtime_s: j.max_runtime_s,
    submitted_at: j.submitted_at,
    queued_at: waitingSince(j),
    attempt: j.attempt,
  };
}
/** A running run frees its GPUs at its estimated end (from start, else placement), else its deadline. */
export function toAllocation(r: RunRow, job: JobRow): PackerAllocation {
  const estimate = estimateMs(job);
  return {
    node_id: r.node_id,
    gpu_indices: json.numbers(r.gpu_indices),
    cpu_milli: r.cpu_milli,
    memory_mib: r.memory_mib,
    expected_end_at: estimate != null ? (r.started_at ?? r.placed_at) + estimate : r.kill_deadline,
  };
}
export function toHolds(r: ReservationRow): PackerHold[] {
  return (JSON.parse(r.gpus) as { node_id: string; gpu_indices: number[] }[]).map((h) => ({
    node_id: h.node_id,
    gpu_indices: h.gpu_indices,
    usable_by: r.tier,
  }));
}

/** A plan is re-checked against the rows it was made from, plus what this apply loop has added. */
export class PlacementCheck {
  private readonly busy = new Map<string, Set<number>>();
  private readonly cpu = new Map<string, number>();
  private readonly mem = new Map<string, number>();
  private readonly nodes: Map<string, NodeRow>;
  private readonly heldFor = new Map<string, { tier: string | null }>();

  constructor(nodes: NodeRow[], runs: RunRow[], reservations: ReservationRow[]) {
    this.nodes = new Map(nodes.map((n) => [n.id, n]));
    for (const r of runs) this.take(r.node_id, json.numbers(r.gpu_indices), r.cpu_milli, r.memory_mib);
    for (const r of reservations) {
      for (const h of toHolds(r))
        for (const g of h.gpu_indices) this.heldFor.set(`${h.node_id}/${g}`, { tier: r.tier });
    }
  }

  private take(nodeId: string, gpus: number[], cpu: number, mem: number): void {
    const set = this.busy.get(nodeId) ?? new Set<number>();
    for (const g of gpus) set.add(g);
    this.busy.set(nodeId, set);
    this.cpu.set(nodeId, (this.cpu.get(nodeId) ?? 0) + cpu);
    this.mem.set(nodeId, (this.mem.get(nodeId) ?? 0) + mem);
  }

  admit(
    job: JobRow,
    assignments: { node_id: string; gpu_indices: number[]; cpu_milli: number; memory_mib: number }[],
  ): string | null {
    for (const a of assignments) {
      const node = this.nodes.get(a.node_id);
      if (node?.state !== "ready") return `node ${a.node_id} is not ready`;
      if (cordoned(node)) return `node ${a.node_id} is cordoned`;
      const unhealthy = json.numbers(node.unhealthy_gpus);
      const all = json.numbers(node.gpus);
      for (const g of a.gpu_indices) {
        if (!all.includes(g) || unhealthy.includes(g)) return `GPU ${g} of ${a.node_id} is not usable`;
        if (this.busy.get(a.node_id)?.has(g)) return `GPU ${g} of ${a.node_id} is taken`;
        const held = this.heldFor.get(`${a.node_id}/${g}`);
        if (held && held.tier !== job.tier) return `GPU ${g} of ${a.node_id} is reserved`;
      }
      if ((this.cpu.get(a.node_id) ?? 0) + a.cpu_milli > node.cpu_milli) return `CPU of ${a.node_id} exceeded`;
      if ((this.mem.get(a.node_id) ?? 0) + a.memory_mib > node.memory_mib) return `memory of ${a.node_id} exceeded`;
    }
    for (const a of assignments) this.take(a.node_id, a.gpu_indices, a.cpu_milli, a.memory_mib);
    return null;
  }
}
