/**
 * Replaying a job trace through the real packer on a fixed fleet, in virtual time.
 *
 * Dynamic: jobs arrive at their submit time and run for their trace duration; after every arrival
 * or end, one packer pass (queue order, filter → score → select, EASY backfill with the trace
 * durations as exact estimates) runs over the waiting jobs on the live fleet. The policy changes
 * only how a node is chosen; queue order and backfill are the same for all three.
 * Static: jobs are offered in file order and none finishes; those that do not fit are skipped,
 * until the GPUs offered reach the fleet's total (the allocation-ratio method of Weng et al.).
 *
 * Jobs without a tier replay as Flex; without CPU or memory, they ask none. A job that cannot fit
 * even on the empty fleet (or has a GPU count the API refuses) is reported as unplaceable.
 */
import {
  DEFAULT_CONFIG,
  Fleet,
  type FleetAllocation,
  needFor,
  orderQueue,
  type PackerJob,
  type PackerNode,
  Pass,
  type Policy,
  REASON_TEXT,
  type ReasonCode,
  resolveConfig,
  SELECTORS,
  scanSelect,
  scoreContext,
  summarise,
} from "../../core/scheduler";
import { isValidGpuCount } from "../../core/schemas/job";
import { MinHeap } from "./heap";
import type { TraceJob, TraceNode } from "./trace";

export interface FleetOptions {
  /** Zones a fleet of COUNT nodes is spread over (round robin); a gang needs its nodes in one. */
  zones: number;
}

const DEFAULT_NODE = { gpus: 8, gpu_model: "H100", cpu_milli: 208_000, memory_mib: 1_900_000 };

export function fleetOf(nodes: readonly TraceNode[] | number, opts: FleetOptions = { zones: 1 }): PackerNode[] {
  const list: TraceNode[] =
    typeof nodes === "number"
      ? Array.from({ length: nodes }, (_, i) => ({ id: `node-${String(i).padStart(5, "0")}`, ...DEFAULT_NODE }))
      : [...nodes];
  return list.map((n, i) => ({
    id: n.id,
    zone: `zone-${i % Math.max(1, opts.zones)}`,
    gpu_model: n.gpu_model,
    gpus: Array.from({ length: n.gpus }, (_, g) => g),
    unhealthy_gpus: [],
    // No CPU or memory given: the node does not run short of them.
    cpu_milli: n.cpu_milli ?? Number.MAX_SAFE_INTEGER,
    memory_mib: n.memory_mib ?? Number.MAX_SAFE_INTEGER,
    state: "ready",
    block_end_at: null,
  }));
}

function toPackerJob(j: TraceJob): PackerJob {
  return {
    id: j.id,
    account_id: j.account,
    tier: j.tier ?? "flex",
    priority: 0,
    gpu_count: j.gpus,
    gpu_models: j.gpu_models,
    cpu_milli: j.cpu_milli ?? 0,
    memory_mib: j.memory_mib ?? 0,
    estimated_duration_s: j.duration_s,
    max_runtime_s: null,
    submitted_at: j.submit_s * 1000,
    attempt: 0,
  };
}

/** Why a job can never run on this fleet, or null when it fits on the fleet empty. */
function unplaceableReason(empty: Fleet, job: PackerJob, cache: Map<string, string | null>): string | null {
  if (!isValidGpuCount(job.gpu_count)) return "invalid GPU count (1 to 8, or a multiple of 8 up to 64)";
  const key = `${job.gpu_count}|${job.gpu_models.join(",")}|${job.cpu_milli}|${job.memory_mib}`;
  const hit = cache.get(key);
  if (hit !== undefined) return hit;
  const sel = scanSelect(empty, needFor(job, empty, 0), undefined, "first");
  const reason = sel.ok ? null : summarise(sel.feasible, empty.nodes.length, sel.counts, sel.extra);
  cache.set(key, reason);
  return reason;
}

function mixOf(jobs: readonly TraceJob[]): Record<number, number> {
  const mix: Record<number, number> = {};
  for (const j of jobs) {
    if (!isValidGpuCount(j.gpus)) continue;
    const perNode = Math.min(j.gpus, 8);
    mix[perNode] = (mix[perNode] ?? 0) + (j.gpus > 8 ? j.gpus / 8 : 1);
  }
  return mix;
}

/** Nearest-rank percentile. */
export function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

const round = (x: number, digits = 4) => Math.round(x * 10 ** digits) / 10 ** digits;

export interface Unplaceable {
  count: number;
  reasons: Record<string, number>;
}

export interface DynamicResult {
  policy: Policy;
  mode: "dynamic";
  nodes: number;
  total_gpus: number;
  jobs: number;
  placed: number;
  backfilled: number;
  gpu_utilisation: number;
  wait_p50_s: number | null;
  wait_p99_s: number | null;
  wait_mean_s: number | null;
  by_tier?: Record<string, { jobs: number; wait_p50_s: number | null; wait_p99_s: number | null }>;
  makespan_s: number;
  max_queue: number;
  unplaceable: Unplaceable;
}

export function replayDynamic(jobs: readonly TraceJob[], nodes: PackerNode[], policy: Policy): DynamicResult {
  const empty = new Fleet(nodes);
  const fleet = new Fleet(nodes);
  const cfg = resolveConfig({ policy, size_mix: mixOf(jobs) });
  const base = scoreContext(cfg.size_mix!, 0, cfg.weights);
  const unplaceable: Unplaceable = { count: 0, reasons: {} };
  const cache = new Map<string, string | null>();
  const arrivals: { job: PackerJob; trace: TraceJob }[] = [];
  for (const trace of [...jobs].sort((a, b) => a.submit_s - b.submit_s || (a.id < b.id ? -1 : 1))) {
    const job = toPackerJob(trace);
    const reason = unplaceableReason(empty, job, cache);
    if (reason) {
      unplaceable.count++;
      unplaceable.reasons[reason] = (unplaceable.reasons[reason] ?? 0) + 1;
    } else arrivals.push({ job, trace });
  }
  const traceOf = new Map(arrivals.map((a) => [a.job.id, a.trace]));
  const ends = new MinHeap<string>();
  const held = new Map<string, FleetAllocation[]>();
  const waits: { tier: string; wait: number }[] = [];
  let queue: PackerJob[] = [];
  let next = 0;
  let busyGpuSeconds = 0;
  let lastEnd = 0;
  let backfilled = 0;
  let maxQueue = 0;
  const first = arrivals[0]?.trace.submit_s ?? 0;

  while (next < arrivals.length || ends.size > 0) {
    const t = Math.min(
      arrivals[next]?.trace.submit_s ?? Number.POSITIVE_INFINITY,
      ends.peekKey() ?? Number.POSITIVE_INFINITY,
    );
    while (ends.size > 0 && ends.peekKey() === t) {
      for (const a of held.get(ends.pop()!) ?? []) fleet.release(a);
    }
    while (next < arrivals.length && arrivals[next]!.trace.submit_s === t) queue.push(arrivals[next++]!.job);
    maxQueue = Math.max(maxQueue, queue.length);
    if (queue.length === 0 || fleet.freeGpus === 0) continue;
    const now = t * 1000;
    const pass = new Pass(fleet, { ...base, now }, cfg, now);
    const placed = new Set<string>();
    for (const job of orderQueue(queue, now, cfg)) {
      // Nothing else can start on a full fleet: the rest of the pass would only explain why.
      if (fleet.freeGpus === 0) break;
      const r = pass.consider(job);
      if (!("kind" in r)) continue;
      const trace = traceOf.get(job.id)!;
      placed.add(job.id);
      held.set(job.id, pass.allocated.get(job.id)!);
      ends.push(t + trace.duration_s, job.id);
      waits.push({ tier: job.tier, wait: t - trace.submit_s });
      busyGpuSeconds += trace.gpus * trace.duration_s;
      lastEnd = Math.max(lastEnd, t + trace.duration_s);
      if (r.kind === "backfill") backfilled++;
    }
    if (placed.size > 0) queue = queue.filter((j) => !placed.has(j.id));
  }

  const totalGpus = nodes.reduce((s, n) => s + n.gpus.length, 0);
  const makespan = Math.max(0, lastEnd - first);
  const sortedWaits = waits.map((w) => w.wait).sort((a, b) => a - b);
  const tiers = new Set(jobs.map((j) => j.tier).filter((t) => t !== null));
  const result: DynamicResult = {
    policy,
    mode: "dynamic",
    nodes: nodes.length,
    total_gpus: totalGpus,
    jobs: jobs.length,
    placed: waits.length,
    backfilled,
    gpu_utilisation: makespan > 0 && totalGpus > 0 ? round(busyGpuSeconds / (totalGpus * makespan)) : 0,
    wait_p50_s: percentile(sortedWaits, 50),
    wait_p99_s: percentile(sortedWaits, 99),
    wait_mean_s: sortedWaits.length ? round(sortedWaits.reduce((s, w) => s + w, 0) / sortedWaits.length, 1) : null,
    makespan_s: makespan,
    max_queue: maxQueue,
    unplaceable,
  };
  if (tiers.size > 0) {
    result.by_tier = Object.fromEntries(
      ["fast", "flex"].map((tier) => {
        const of = waits
          .filter((w) => w.tier === tier)
          .map((w) => w.wait)
          .sort((a, b) => a - b);
        return [tier, { jobs: of.length, wait_p50_s: percentile(of, 50), wait_p99_s: percentile(of, 99) }];
      }),
    );
  }
  return result;
}

export interface StaticResult {
  policy: Policy;
  mode: "static";
  nodes: number;
  total_gpus: number;
  jobs: number;
  placed: number;
  skipped: number;
  gpus_offered: number;
  gpus_allocated: number;
  gpu_allocation_ratio: number;
  skipped_reasons: Record<string, number>;
}

export function replayStatic(jobs: readonly TraceJob[], nodes: PackerNode[], policy: Policy): StaticResult {
  const fleet = new Fleet(nodes);
  const cfg = resolveConfig({ policy, size_mix: mixOf(jobs) });
  const ctx = scoreContext(cfg.size_mix!, 0, cfg.weights);
  const total = nodes.reduce((s, n) => s + n.gpus.length, 0);
  const reasons: Record<string, number> = {};
  let offered = 0;
  let allocated = 0;
  let placed = 0;
  let skipped = 0;
  let count = 0;
  for (const trace of jobs) {
    if (offered >= total) break;
    count++;
    offered += trace.gpus;
    const job = toPackerJob(trace);
    if (!isValidGpuCount(job.gpu_count)) {
      skipped++;
      reasons["invalid GPU count"] = (reasons["invalid GPU count"] ?? 0) + 1;
      continue;
    }
    const need = needFor(job, fleet, 0);
    const sel = SELECTORS[policy](fleet, need, ctx, DEFAULT_CONFIG.candidates_per_bucket);
    if (!sel.ok) {
      skipped++;
      // The most common reason among the nodes, as the waiting summary would name it.
      const top = (Object.entries(sel.counts) as [ReasonCode, number][]).sort((a, b) => b[1] - a[1])[0]?.[0];
      const reason = top ? REASON_TEXT[top] : "no node";
      reasons[reason] = (reasons[reason] ?? 0) + 1;
      continue;
    }
    for (const c of sel.choices) fleet.allocate(c.node, c.mask, need.cpu, need.mem, need.end);
    allocated += job.gpu_count;
    placed++;
  }
  return {
    policy,
    mode: "static",
    nodes: nodes.length,
    total_gpus: total,
    jobs: count,
    placed,
    skipped,
    gpus_offered: offered,
    gpus_allocated: allocated,
    gpu_allocation_ratio: total > 0 ? round(allocated / total) : 0,
    skipped_reasons: reasons,
  };
}
