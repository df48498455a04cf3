/**
 * One region in memory for the replay: its nodes, the jobs waiting and running, and the GPUs held
 * for Fast headroom. Placement is the real packer (`core/scheduler` `plan`), run on every change as
 * the RegionScheduler runs it; holds follow the RegionScheduler's reservations (whole free nodes
 * first; a Fast job placed on held GPUs uses them up). A job starts when it is placed (image pulls
 * are not modelled) and runs for its trace duration; a node whose block ends takes its work with it
 * (the job goes back to the queue, its progress lost).
 */
import type { FleetNode as PolicyNode, QueuedJob, RunningWork } from "../../core/autoscaler";
import {
  type PackerAllocation,
  type PackerConfig,
  type PackerHold,
  type PackerJob,
  type PackerNode,
  plan,
} from "../../core/scheduler";
import type { Tier } from "../../core/schemas/common";
import { MAX_RUNTIME_S, type TraceJob } from "./trace";

const GPU_INDICES = [0, 1, 2, 3, 4, 5, 6, 7] as const;
/** What an 8-GPU H100 node offers besides GPUs (the packer checks CPU and memory too). */
const NODE_CPU_MILLI = 208_000;
const NODE_MEMORY_MIB = 1_900_000;
/** Philly jobs have no CPU or memory request: a share of the node per GPU. */
const CPU_PER_GPU = 24_000;
const MEMORY_PER_GPU = 230_000;

export interface RegionNode {
  id: string;
  blockId: string;
  zone: string;
  state: "booting" | "ready" | "draining";
  /** When the market stops delivering it. */
  endAt: number;
  /** GPU index → job id. */
  busy: Map<number, string>;
  /** GPUs held for Fast. */
  held: Set<number>;
  /** The node's packer view, rebuilt when its end or state changes. */
  packer: PackerNode;
}

interface Run {
  job: TraceJob;
  packerJob: PackerJob;
  nodes: { nodeId: string; gpus: number[] }[];
  startedAt: number;
  endsAt: number;
}

export interface RegionEvents {
  started(job: TraceJob, at: number): void;
  /** GPU time used by a run, [from, to). */
  used(job: TraceJob, from: number, to: number): void;
  killed(job: TraceJob, at: number): void;
}

export class RegionModel {
  readonly nodes = new Map<string, RegionNode>();
  private readonly queue = new Map<string, { job: TraceJob; packerJob: PackerJob; queuedAt: number }>();
  private readonly runs = new Map<string, Run>();
  /** Runs by end, earliest last (popped from the end). */
  private ends: Run[] = [];
  private endsSorted = true;
  private dirty = false;
  packerPasses = 0;

  constructor(
    private readonly events: RegionEvents,
    private readonly packerConfig: Partial<PackerConfig> = {},
  ) {}

  submit(job: TraceJob, at: number): void {
    this.queue.set(job.id, { job, packerJob: toPackerJob(job, at, 0), queuedAt: at });
    this.dirty = true;
  }

  addNode(id: string, blockId: string, zone: string, endAt: number): void {
    const node: RegionNode = {
      id,
      blockId,
      zone,
      state: "booting",
      endAt,
      busy: new Map(),
      held: new Set(),
      packer: packerNode(id, zone, "ready", endAt),
    };
    this.nodes.set(id, node);
  }

  nodeReady(id: string): void {
    const node = this.nodes.get(id);
    if (node?.state !== "booting") return;
    node.state = "ready";
    this.dirty = true;
  }

  setEnd(id: string, endAt: number): void {
    const node = this.nodes.get(id);
    if (!node) return;
    node.endAt = endAt;
    node.packer = packerNode(id, node.zone, node.packer.state, endAt);
    this.dirty = true;
  }

  drain(id: string): void {
    const node = this.nodes.get(id);
    if (!node || node.state === "draining") return;
    node.state = "draining";
    node.held.clear();
    node.packer = packerNode(id, node.zone, "draining", node.endAt);
    this.dirty = true;
  }

  /** The node's time is over: it leaves, and whatever ran on it goes back to the queue. */
  removeNode(id: string, at: number): void {
    const node = this.nodes.get(id);
    if (!node) return;
    const victims = new Set(node.busy.values());
    for (const jobId of victims) {
      const run = this.runs.get(jobId);
      if (!run) continue;
      this.finishRun(run, at);
      this.events.killed(run.job, at);
      this.queue.set(jobId, {
        job: run.job,
        packerJob: toPackerJob(run.job, run.packerJob.submitted_at, run.packerJob.attempt + 1),
        queuedAt: at,
      });
    }
    this.nodes.delete(id);
    this.dirty = true;
  }

  /** The earliest time a run ends, or Infinity. */
  nextEndAt(): number {
    this.sortEnds();
    return this.ends.length > 0 ? this.ends[this.ends.length - 1]!.endsAt : Number.POSITIVE_INFINITY;
  }

  /** Ends the runs due by `at`. */
  finishDue(at: number): void {
    this.sortEnds();
    while (this.ends.length > 0 && this.ends[this.ends.length - 1]!.endsAt <= at) {
      const run = this.ends.pop()!;
      if (this.runs.get(run.job.id) !== run) continue; // killed earlier
      this.finishRun(run, run.endsAt);
    }
  }

  /** Runs the packer if anything changed since the last pass and starts what it placed. */
  schedule(now: number): void {
    if (!this.dirty) return;
    this.dirty = false;
    if (this.queue.size === 0) return;
    const nodes: PackerNode[] = [];
    const holds: PackerHold[] = [];
    for (const n of this.nodes.values()) {
      if (n.state === "booting") continue;
      nodes.push(n.packer);
      if (n.held.size > 0) holds.push({ node_id: n.id, gpu_indices: [...n.held], usable_by: "fast" });
    }
    if (nodes.length === 0) return;
    const allocations: PackerAllocation[] = [];
    for (const run of this.runs.values()) {
      for (const part of run.nodes) {
        allocations.push({
          node_id: part.nodeId,
          gpu_indices: part.gpus,
          cpu_milli: cpuOf(run.job, part.gpus.length),
          memory_mib: memOf(run.job, part.gpus.length),
          expected_end_at: run.startedAt + (run.job.estimateS ?? MAX_RUNTIME_S) * 1000,
        });
      }
    }
    const queue = [...this.queue.values()].map((q) => q.packerJob);
    this.packerPasses++;
    const p = plan({ now, nodes, allocations, holds, queue, config: this.packerConfig });
    for (const placement of p.placements) {
      const entry = this.queue.get(placement.job_id)!;
      this.queue.delete(placement.job_id);
      const run: Run = {
        job: entry.job,
        packerJob: entry.packerJob,
        nodes: placement.nodes.map((a) => ({ nodeId: a.node_id, gpus: a.gpu_indices })),
        startedAt: now,
        endsAt: now + entry.job.durationS * 1000,
      };
      for (const part of run.nodes) {
        const node = this.nodes.get(part.nodeId)!;
        for (const g of part.gpus) {
          node.busy.set(g, entry.job.id);
          node.held.delete(g);
        }
      }
      this.runs.set(entry.job.id, run);
      this.ends.push(run);
      this.endsSorted = false;
      if (entry.packerJob.attempt === 0) this.events.started(entry.job, now);
    }
  }

  /**
   * Holds `gpus` free GPUs for Fast, replacing the previous hold: whole free nodes first, then the
   * nodes with the most free GPUs (as the RegionScheduler's `reserve` picks them).
   */
  holdForFast(gpus: number): void {
    for (const n of this.nodes.values()) n.held.clear();
    const free = [...this.nodes.values()]
      .filter((n) => n.state === "ready")
      .map((n) => ({ node: n, free: GPU_INDICES.filter((g) => !n.busy.has(g)) }))
      .filter((f) => f.free.length > 0)
      .sort((a, b) => b.free.length - a.free.length || (a.node.id < b.node.id ? -1 : 1));
    let need = gpus;
    for (const f of free) {
      if (need <= 0) break;
      for (const g of f.free.slice(0, need)) f.node.held.add(g);
      need -= Math.min(need, f.free.length);
    }
    this.dirty = true;
  }

  /** The fleet as the autoscaler sees it. */
  fleet(gpuModel: "H100"): PolicyNode[] {
    const out: PolicyNode[] = [];
    for (const n of this.nodes.values()) {
      const work: RunningWork[] = [];
      const seen = new Set<string>();
      for (const jobId of n.busy.values()) {
        if (seen.has(jobId)) continue;
        seen.add(jobId);
        const run = this.runs.get(jobId)!;
        const gpus = run.nodes.find((p) => p.nodeId === n.id)?.gpus.length ?? 0;
        // As the capacity manager maps it (workers/capacity/fleet.ts): start + estimate, if any.
        const expectedEndAt = run.job.estimateS === null ? null : run.startedAt + run.job.estimateS * 1000;
        work.push({ tier: run.job.tier, gpus, startedAt: run.startedAt, expectedEndAt });
      }
      out.push({
        id: n.id,
        blockId: n.blockId,
        gpuModel,
        zone: n.zone,
        gpus: GPU_INDICES.length,
        freeGpus: n.state === "booting" ? GPU_INDICES.length : GPU_INDICES.length - n.busy.size,
        state: n.state,
        endAt: n.endAt,
        work,
      });
    }
    return out;
  }

  waiting(now: number): QueuedJob[] {
    return [...this.queue.values()].map((q) => ({
      id: q.job.id,
      tier: q.job.tier,
      gpus: q.job.gpus,
      gpuModels: [],
      waitedMs: now - q.queuedAt,
      estimateMs: q.job.estimateS === null ? null : q.job.estimateS * 1000,
    }));
  }

  /** GPUs running plus GPUs waiting: the concurrent demand. */
  demandGpus(): number {
    let gpus = 0;
    for (const run of this.runs.values()) gpus += run.job.gpus;
    for (const q of this.queue.values()) gpus += q.job.gpus;
    return gpus;
  }

  busyGpus(): number {
    let gpus = 0;
    for (const n of this.nodes.values()) gpus += n.busy.size;
    return gpus;
  }

  /** Ends every run at `at` (the window's end), counting the GPU time used so far. */
  close(at: number): void {
    for (const run of [...this.runs.values()]) this.finishRun(run, at);
  }

  private finishRun(run: Run, at: number): void {
    this.runs.delete(run.job.id);
    for (const part of run.nodes) {
      const node = this.nodes.get(part.nodeId);
      if (!node) continue;
      for (const g of part.gpus) if (node.busy.get(g) === run.job.id) node.busy.delete(g);
    }
    this.events.used(run.job, run.startedAt, at);
    this.dirty = true;
  }

  private sortEnds(): void {
    if (this.endsSorted) return;
    this.ends = this.ends.filter((r) => this.runs.get(r.job.id) === r).sort((a, b) => b.endsAt - a.endsAt);
    this.endsSorted = true;
  }
}

function packerNode(id: string, zone: string, state: PackerNode["state"], endAt: number): PackerNode {
  return {
    id,
    zone,
    gpu_model: "H100",
    gpus: GPU_INDICES,
    unhealthy_gpus: [],
    cpu_milli: NODE_CPU_MILLI,
    memory_mib: NODE_MEMORY_MIB,
    state,
    block_end_at: endAt,
  };
}

function toPackerJob(job: TraceJob, submittedAt: number, attempt: number): PackerJob {
  const perNode = Math.min(job.gpus, GPU_INDICES.length);
  return {
    id: job.id,
    account_id: job.account,
    tier: job.tier as Tier,
    priority: 0,
    gpu_count: job.gpus,
    gpu_models: [],
    cpu_milli: cpuOf(job, perNode),
    memory_mib: memOf(job, perNode),
    estimated_duration_s: job.estimateS,
    max_runtime_s: MAX_RUNTIME_S,
    submitted_at: submittedAt,
    attempt,
  };
}

const cpuOf = (_job: TraceJob, gpusOnNode: number) => CPU_PER_GPU * gpusOnNode;
const memOf = (_job: TraceJob, gpusOnNode: number) => MEMORY_PER_GPU * gpusOnNode;
