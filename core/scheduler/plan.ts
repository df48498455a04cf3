/**
 * One scheduling pass: order the queue, then for each job filter → score → select on a working
 * copy of the fleet, and return the plan. Nothing outside is changed; the caller (the region's
 * Durable Object) re-checks each placement against its current state before committing it.
 *
 * Backfill: the first job that cannot start and can reserve a start (the head) reserves its
 * earliest start; so does every blocked Fast job, against Flex work. Later jobs still start when they delay none of the
 * reservations that bind them (see backfill.ts); those placements are marked `backfill`.
 */
import { ReservationBook } from "./backfill";
import { Fleet, type FleetAllocation, type FleetNode } from "./fleet";
import {
  type NodeAssignment,
  type PackerAllocation,
  type PackerConfig,
  type PackerHold,
  type PackerJob,
  type PackerNode,
  resolveConfig,
} from "./model";
import { type JobNeed, needFor } from "./need";
import { SELECTORS } from "./policies";
import { orderQueue } from "./queue";
import { type ReasonCounts, summarise } from "./reasons";
import { type ScoreContext, scoreContext, sizeMixOf } from "./score";
import type { Selection } from "./select";

export interface PlanInput {
  now: number;
  nodes: readonly PackerNode[];
  allocations?: readonly PackerAllocation[];
  holds?: readonly PackerHold[];
  queue: readonly PackerJob[];
  config?: Partial<PackerConfig>;
}

export interface PlannedPlacement {
  job_id: string;
  /** `in_order`: nothing ahead of it was waiting; `backfill`: it starts past a waiting job. */
  kind: "in_order" | "backfill";
  nodes: NodeAssignment[];
  score: number;
}

export interface WaitingJob {
  job_id: string;
  /** e.g. `0/12 nodes: 9 insufficient free GPUs, 3 GPU model not allowed`. */
  reason: string;
  counts: ReasonCounts;
  /** The reserved start (backfill), when it has one. */
  reserved_start_at: number | null;
}

/** A waiting job's reserved start: what later jobs it binds must not delay. */
export interface PlannedReservation {
  job_id: string;
  start_at: number;
  node_ids: string[];
  binds: "all" | "flex";
}

export interface Plan {
  placements: PlannedPlacement[];
  waiting: WaitingJob[];
  reservations: PlannedReservation[];
  /** Job ids in the order they were considered. */
  order: string[];
}

export function plan(input: PlanInput): Plan {
  const cfg = resolveConfig(input.config);
  const fleet = Fleet.build(input.nodes, input.allocations, input.holds);
  const order = orderQueue(input.queue, input.now, cfg);
  const ctx = scoreContext(cfg.size_mix ?? sizeMixOf(input.queue), input.now, cfg.weights);
  const pass = new Pass(fleet, ctx, cfg, input.now);
  for (const job of order) pass.consider(job);
  return {
    placements: pass.placements,
    waiting: pass.waiting,
    reservations: pass.book.all.map((r) => ({
      job_id: r.job_id,
      start_at: r.start,
      node_ids: r.nodes.map((n) => n.id),
      binds: r.binds,
    })),
    order: order.map((j) => j.id),
  };
}

/** The state of one pass over the ordered queue. Exported for the benchmark and the replay. */
export class Pass {
  readonly placements: PlannedPlacement[] = [];
  readonly waiting: WaitingJob[] = [];
  readonly book = new ReservationBook();
  /** What each placement took on the fleet, for callers that keep the fleet and release later. */
  readonly allocated = new Map<string, FleetAllocation[]>();
  private blocked = false;
  /**
   * Whether a blocked job holds the head's reservation (binding all later work). A blocked job that
   * cannot reserve (a gang no blocks outlive, a model no node has) leaves the slot to the next one:
   * otherwise that one, and every job after it, would be starved by backfill with nothing protecting
   * them.
   */
  private headReserved = false;
  /** Blocked Fast jobs that hold a reservation; past the cap, Flex work stops for this pass. */
  private fastReserved = 0;
  private flexHalted = false;
  /**
   * Failed selections by job shape, valid while the fleet and the reservations are unchanged. With
   * reservations, a job that ends later can only be refused on more nodes, so a failure at end E
   * answers for every job of the shape that ends at E or later.
   */
  private readonly failed = new Map<string, { version: number; reservations: number; end: number; sel: Selection }>();
  /**
   * Job shapes that could reserve no start, valid while the fleet and the reservations are
   * unchanged: since a head that cannot reserve passes the slot on, every blocked job of a pass
   * where nothing can reserve (say, every block ends before any estimate) would try, each at the
   * cost of a walk over every node's allocations.
   */
  private readonly unreservable = new Map<string, { version: number; reservations: number }>();

  constructor(
    readonly fleet: Fleet,
    readonly ctx: ScoreContext,
    readonly cfg: PackerConfig,
    readonly now: number,
  ) {}

  consider(job: PackerJob): PlannedPlacement | WaitingJob {
    const need = needFor(job, this.fleet, this.now);
    if (this.flexHalted && job.tier === "flex") {
      return this.wait(need, {
        ok: false,
        feasible: 0,
        counts: {},
        extra: `more than ${this.cfg.max_protected_reservations} Fast jobs are waiting`,
      });
    }
    const sel = this.selectCached(need);
    if (sel.ok) {
      const taken: FleetAllocation[] = [];
      const placed: PlannedPlacement = {
        job_id: job.id,
        kind: this.blocked ? "backfill" : "in_order",
        nodes: sel.choices.map((c) => {
          taken.push(this.fleet.allocate(c.node, c.mask, need.cpu, need.mem, need.end));
          return {
            node_id: c.node.id,
            gpu_indices: this.fleet.gpuIndices(c.mask),
            cpu_milli: need.cpu,
            memory_mib: need.mem,
          };
        }),
        score: sel.choices.reduce((s, c) => s + c.score, 0) / sel.choices.length,
      };
      this.placements.push(placed);
      this.allocated.set(job.id, taken);
      return placed;
    }
    return this.wait(need, sel);
  }

  private selectCached(need: JobNeed): Selection {
    const veto = this.book.size > 0 ? (n: JobNeed, node: FleetNode) => this.book.delays(n, node) : undefined;
    const estimatedEnd = this.fleet.hasBlockEnds ? need.estimatedEnd : null;
    const key = shapeKey(need, estimatedEnd);
    const hit = this.failed.get(key);
    const current = hit && hit.version === this.fleet.version && hit.reservations === this.book.size;
    if (current && (this.book.size === 0 || need.end >= hit.end)) return hit.sel;
    const sel = SELECTORS[this.cfg.policy](this.fleet, need, this.ctx, this.cfg.candidates_per_bucket, veto);
    if (!sel.ok) {
      const end = current ? Math.min(hit.end, need.end) : need.end;
      this.failed.set(key, { version: this.fleet.version, reservations: this.book.size, end, sel });
    }
    return sel;
  }

  private reserveCached(need: JobNeed, binds: "all" | "flex"): { start: number } | null {
    // What decides whether a start exists: the shape, the tier's usable GPUs, the block check's
    // estimate; not the job's deadline (it only sets how long the reservation lasts).
    const key = shapeKey(need, need.estimate);
    const hit = this.unreservable.get(key);
    if (hit && hit.version === this.fleet.version && hit.reservations === this.book.size) return null;
    const r = this.book.reserve(this.fleet, need, this.now, binds);
    if (!r) this.unreservable.set(key, { version: this.fleet.version, reservations: this.book.size });
    return r;
  }

  private wait(need: JobNeed, sel: Extract<Selection, { ok: false }>): WaitingJob {
    let reserved: number | null = null;
    const head = !this.headReserved;
    this.blocked = true;
    if (head || need.tier === "fast") {
      if (need.tier === "fast" && this.fastReserved >= this.cfg.max_protected_reservations) {
        this.flexHalted = true;
      } else {
        const r = this.reserveCached(need, head ? "all" : "flex");
        if (r) {
          reserved = r.start;
          if (head) this.headReserved = true;
          if (need.tier === "fast") this.fastReserved++;
        }
      }
    }
    // A failed selection served from the cache keeps its summary, so it is written once.
    sel.summary ??= summarise(sel.feasible, this.fleet.nodes.length, sel.counts, sel.extra);
    const waiting: WaitingJob = {
      job_id: need.job.id,
      reason: sel.summary,
      counts: sel.counts,
      reserved_start_at: reserved,
    };
    this.waiting.push(waiting);
    return waiting;
  }
}

/** A job's shape for the caches of failed selections and reservations, with the time that decides them. */
function shapeKey(need: JobNeed, time: number | null): string {
  return `${need.perNode}|${need.nodes}|${need.tier}|${need.cpu}|${need.mem}|${time}|${need.job.gpu_models.join(",")}`;
}
