/**
 * Invariants over random fleets and queues (fast-check): no GPU handed out twice, capacity never
 * exceeded, gangs all or none, Fast never behind an equal-priority Flex job except by a backfill
 * that does not delay it, the index agreeing with a plain scan, and the same input giving the same
 * plan whatever order it arrives in.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Fleet } from "./fleet";
import { popcount } from "./gpus";
import {
  DEFAULT_CONFIG,
  estimateMs,
  expectedEnd,
  gangShape,
  type PackerAllocation,
  type PackerHold,
  type PackerJob,
  type PackerNode,
} from "./model";
import { needFor } from "./need";
import { type Plan, type PlanInput, plan } from "./plan";
import { scanSelect } from "./policies";
import { orderQueue } from "./queue";
import { bucketBound, scoreContext, totalScore } from "./score";
import { select } from "./select";

const NOW = 10 * 3_600_000;
const H = 3_600_000;

/** A node and what holds its GPUs: each GPU free, busy (one of 3 allocations) or held. */
const nodeArb = (i: number) =>
  fc
    .record({
      zone: fc.constantFrom("a", "b", "c"),
      gpu_model: fc.constantFrom("H100", "H200"),
      unhealthy: fc.subarray([0, 1, 2, 3, 4, 5, 6, 7], { maxLength: 2 }),
      state: fc.constantFrom("ready", "ready", "ready", "ready", "cordoned", "draining", "lost"),
      cpu_milli: fc.integer({ min: 8, max: 64 }).map((x) => x * 1000),
      memory_mib: fc.integer({ min: 64, max: 512 }).map((x) => x * 1024),
      block_end_at: fc.option(fc.integer({ min: NOW, max: NOW + 24 * H }), { nil: null }),
      owners: fc.array(
        fc.constantFrom("free", "free", "free", "a0", "a1", "a2", "hold-fast", "hold-flex", "hold-none"),
        {
          minLength: 8,
          maxLength: 8,
        },
      ),
      ends: fc.array(fc.option(fc.integer({ min: NOW - H, max: NOW + 12 * H }), { nil: null }), {
        minLength: 3,
        maxLength: 3,
      }),
      cpuShare: fc.integer({ min: 0, max: 30 }),
    })
    .map((r) => {
      const id = `n${i}`;
      const n: PackerNode = {
        id,
        zone: r.zone,
        gpu_model: r.gpu_model,
        gpus: [0, 1, 2, 3, 4, 5, 6, 7],
        unhealthy_gpus: r.unhealthy,
        cpu_milli: r.cpu_milli,
        memory_mib: r.memory_mib,
        state: r.state as PackerNode["state"],
        block_end_at: r.block_end_at,
      };
      const allocations: PackerAllocation[] = [];
      ["a0", "a1", "a2"].forEach((owner, k) => {
        const gpus = r.owners.flatMap((o, g) => (o === owner ? [g] : []));
        if (gpus.length > 0) {
          allocations.push({
            node_id: id,
            gpu_indices: gpus,
            cpu_milli: Math.floor((r.cpu_milli * r.cpuShare) / 100),
            memory_mib: Math.floor((r.memory_mib * r.cpuShare) / 100),
            expected_end_at: r.ends[k] ?? null,
          });
        }
      });
      const holds: PackerHold[] = [];
      const fast = r.owners.flatMap((o, g) => (o === "hold-fast" && !r.unhealthy.includes(g) ? [g] : []));
      const flex = r.owners.flatMap((o, g) => (o === "hold-flex" && !r.unhealthy.includes(g) ? [g] : []));
      const none = r.owners.flatMap((o, g) => (o === "hold-none" && !r.unhealthy.includes(g) ? [g] : []));
      if (fast.length) holds.push({ node_id: id, gpu_indices: fast, usable_by: "fast" });
      if (flex.length) holds.push({ node_id: id, gpu_indices: flex, usable_by: "flex" });
      if (none.length) holds.push({ node_id: id, gpu_indices: none, usable_by: null });
      return { node: n, allocations, holds };
    });

const jobArb = (i: number) =>
  fc.record({
    id: fc.constant(`j${String(i).padStart(2, "0")}`),
    account_id: fc.constantFrom("acct-a", "acct-b", "acct-c"),
    tier: fc.constantFrom("fast", "flex"),
    priority: fc.constantFrom(-1, 0, 0, 1),
    gpu_count: fc.constantFrom(1, 1, 2, 3, 4, 8, 16, 24),
    gpu_models: fc.subarray(["H100", "H200"]),
    cpu_milli: fc.integer({ min: 1, max: 16 }).map((x) => x * 1000),
    memory_mib: fc.integer({ min: 1, max: 64 }).map((x) => x * 1024),
    estimated_duration_s: fc.option(fc.integer({ min: 60, max: 20 * 3_600 }), { nil: null }),
    max_runtime_s: fc.integer({ min: 60, max: 24 * 3_600 }),
    submitted_at: fc.integer({ min: 0, max: NOW }),
    attempt: fc.constant(0),
  }) as fc.Arbitrary<PackerJob>;

const inputArb: fc.Arbitrary<PlanInput> = fc
  .tuple(fc.integer({ min: 0, max: 10 }), fc.integer({ min: 0, max: 14 }))
  .chain(([n, q]) =>
    fc.tuple(
      fc.tuple(...Array.from({ length: n }, (_, i) => nodeArb(i))),
      fc.tuple(...Array.from({ length: q }, (_, i) => jobArb(i))),
    ),
  )
  .map(([nodes, queue]) => ({
    now: NOW,
    nodes: nodes.map((x) => x.node),
    allocations: nodes.flatMap((x) => x.allocations),
    holds: nodes.flatMap((x) => x.holds),
    queue,
  }));

const RUNS = { numRuns: 300 };
const key = (node: string, gpu: number) => `${node}/${gpu}`;

describe("packer invariants", () => {
  it("never hands a GPU out twice, nor an unhealthy or wrongly held one", () => {
    fc.assert(
      fc.property(inputArb, (input) => {
        const p = plan(input);
        const taken = new Set<string>();
        for (const a of input.allocations ?? []) for (const g of a.gpu_indices) taken.add(key(a.node_id, g));
        const held = new Map<string, PackerHold["usable_by"]>();
        for (const h of input.holds ?? []) for (const g of h.gpu_indices) held.set(key(h.node_id, g), h.usable_by);
        const jobs = new Map(input.queue.map((j) => [j.id, j]));
        for (const pl of p.placements) {
          for (const a of pl.nodes) {
            const node = input.nodes.find((n) => n.id === a.node_id)!;
            for (const g of a.gpu_indices) {
              const k = key(a.node_id, g);
              expect(taken.has(k)).toBe(false);
              expect(node.unhealthy_gpus).not.toContain(g);
              if (held.has(k)) expect(held.get(k)).toBe(jobs.get(pl.job_id)!.tier);
              taken.add(k);
            }
          }
        }
      }),
      RUNS,
    );
  });

  it("never exceeds a node's CPU or memory, and places only where every check passes", () => {
    fc.assert(
      fc.property(inputArb, (input) => {
        const p = plan(input);
        const jobs = new Map(input.queue.map((j) => [j.id, j]));
        for (const node of input.nodes) {
          const before = (input.allocations ?? []).filter((a) => a.node_id === node.id);
          const added = p.placements.flatMap((pl) => pl.nodes.filter((a) => a.node_id === node.id));
          const cpuAdded = added.reduce((s, a) => s + a.cpu_milli, 0);
          const memAdded = added.reduce((s, a) => s + a.memory_mib, 0);
          if (added.length === 0) continue;
          expect(node.state).toBe("ready");
          expect(before.reduce((s, a) => s + a.cpu_milli, 0) + cpuAdded).toBeLessThanOrEqual(node.cpu_milli);
          expect(before.reduce((s, a) => s + a.memory_mib, 0) + memAdded).toBeLessThanOrEqual(node.memory_mib);
        }
        for (const pl of p.placements) {
          const j = jobs.get(pl.job_id)!;
          for (const a of pl.nodes) {
            const node = input.nodes.find((n) => n.id === a.node_id)!;
            if (j.gpu_models.length) expect(j.gpu_models).toContain(node.gpu_model);
            const estimate = estimateMs(j);
            if (estimate != null && node.block_end_at != null) {
              expect(node.block_end_at).toBeGreaterThanOrEqual(input.now + estimate);
            }
          }
        }
      }),
      RUNS,
    );
  });

  it("places a gang all or none: k distinct nodes of one zone with 8 GPUs each; every job placed or waiting once", () => {
    fc.assert(
      fc.property(inputArb, (input) => {
        const p = plan(input);
        const jobs = new Map(input.queue.map((j) => [j.id, j]));
        for (const pl of p.placements) {
          const { perNode, nodes } = gangShape(jobs.get(pl.job_id)!.gpu_count);
          expect(pl.nodes).toHaveLength(nodes);
          expect(new Set(pl.nodes.map((a) => a.node_id)).size).toBe(nodes);
          for (const a of pl.nodes) expect(a.gpu_indices).toHaveLength(perNode);
          const zones = new Set(pl.nodes.map((a) => input.nodes.find((n) => n.id === a.node_id)!.zone));
          expect(zones.size).toBe(1);
        }
        const seen = [...p.placements.map((x) => x.job_id), ...p.waiting.map((w) => w.job_id)].sort();
        expect(seen).toEqual(input.queue.map((j) => j.id).sort());
      }),
      RUNS,
    );
  });

  it("orders a Fast job before every Flex job of equal priority, however long the Flex one waited", () => {
    fc.assert(
      fc.property(fc.array(jobArb(0), { maxLength: 30 }), fc.integer({ min: 0, max: 48 * H }), (raw, now) => {
        const queue = raw.map((j, i) => ({ ...j, id: `j${i}` }));
        const order = orderQueue(queue, now, DEFAULT_CONFIG);
        const at = new Map(order.map((j, i) => [j.id, i]));
        for (const f of queue.filter((j) => j.tier === "fast")) {
          for (const x of queue.filter((j) => j.tier === "flex" && j.priority === f.priority)) {
            expect(at.get(f.id)!).toBeLessThan(at.get(x.id)!);
          }
        }
      }),
      { numRuns: 500 },
    );
  });

  it("starts a Flex job past a waiting equal-priority Fast job only as a backfill that does not delay it", () => {
    fc.assert(
      fc.property(inputArb, (input) => {
        const p = plan(input);
        const jobs = new Map(input.queue.map((j) => [j.id, j]));
        const turn = new Map(p.order.map((id, i) => [id, i]));
        const waitingFast = p.waiting.map((w) => jobs.get(w.job_id)!).filter((j) => j.tier === "fast");
        for (const x of p.placements.filter((pl) => jobs.get(pl.job_id)!.tier === "flex")) {
          for (const f of waitingFast.filter((f) => f.priority === jobs.get(x.job_id)!.priority)) {
            expect(turn.get(f.id)!).toBeLessThan(turn.get(x.job_id)!);
            expect(x.kind).toBe("backfill");
            const r = p.reservations.find((r) => r.job_id === f.id);
            expect(bruteEarliest(input, p, f.id, r?.binds ?? "flex")).toBeLessThanOrEqual(
              r?.start_at ?? Number.POSITIVE_INFINITY,
            );
          }
        }
      }),
      { numRuns: 500 },
    );
  });

  it("keeps the head's reserved start: no backfill delays it", () => {
    fc.assert(
      fc.property(inputArb, (input) => {
        const p = plan(input);
        const head = p.waiting[0];
        if (!head) return;
        const r = p.reservations.find((r) => r.job_id === head.job_id);
        expect(bruteEarliest(input, p, head.job_id, "all")).toBeLessThanOrEqual(
          r?.start_at ?? Number.POSITIVE_INFINITY,
        );
      }),
      { numRuns: 1000 },
    );
  });

  it("gives the same plan for the same input, in whatever order nodes, allocations and jobs arrive", () => {
    fc.assert(
      fc.property(inputArb, fc.integer(), (input, seed) => {
        const shuffled: PlanInput = {
          ...input,
          nodes: shuffle(input.nodes, seed),
          allocations: shuffle(input.allocations ?? [], seed + 1),
          holds: shuffle(input.holds ?? [], seed + 2),
          queue: shuffle(input.queue, seed + 3),
        };
        expect(plan(shuffled)).toEqual(plan(input));
      }),
      RUNS,
    );
  });

  it("finds a node exactly when a plain scan of every node does, with the same reasons when it does not", () => {
    fc.assert(
      fc.property(inputArb, jobArb(99), (input, j) => {
        const fleet = Fleet.build(input.nodes, input.allocations, input.holds);
        const need = needFor(j, fleet, NOW);
        const ctx = scoreContext({ 1: 1, 8: 1 }, NOW, DEFAULT_CONFIG.weights);
        const indexed = select(fleet, need, ctx, DEFAULT_CONFIG.candidates_per_bucket);
        const scanned = scanSelect(fleet, need, undefined, "first");
        expect(indexed.ok).toBe(scanned.ok);
        if (!indexed.ok && !scanned.ok) expect(indexed.counts).toEqual(scanned.counts);
        // The bucket bound really bounds every node's score.
        for (const node of fleet.nodes) {
          const usable = popcount(node.usableMask(need.tier));
          if (node.state !== "ready" || usable < need.perNode) continue;
          const bound = bucketBound(need, usable, fleet.maxTotalByModel[node.modelOrd]!, ctx);
          expect(totalScore(need, node, ctx)).toBeLessThanOrEqual(bound + 1e-9);
        }
      }),
      { numRuns: 500 },
    );
  });
});

/**
 * Independent check of a reservation by brute force: the earliest instant (now, or any expected
 * end) at which the job fits on one node, or on k nodes of one zone, counting what was placed
 * before its turn, every later placement the reservation binds (all of them for the head, Flex ones
 * for a Fast job), reservations made before it (held from now until their end) and the capacity
 * manager's holds. It must not be later than the reserved start: the binding backfills did not
 * delay it (it may be earlier: a job that takes a held GPU gives it back as free).
 */
function bruteEarliest(input: PlanInput, p: Plan, jobId: string, binds: "all" | "flex"): number {
  const jobs = new Map(input.queue.map((j) => [j.id, j]));
  const job = jobs.get(jobId)!;
  const { perNode, nodes: k } = gangShape(job.gpu_count);
  const turn = new Map(p.order.map((id, i) => [id, i]));
  const mine = turn.get(jobId)!;
  type Holder = { node_id: string; gpus: number[]; cpu: number; mem: number; end: number };
  const holders: Holder[] = (input.allocations ?? []).map((a) => ({
    node_id: a.node_id,
    gpus: [...a.gpu_indices],
    cpu: a.cpu_milli,
    mem: a.memory_mib,
    end: a.expected_end_at ?? Number.POSITIVE_INFINITY,
  }));
  for (const pl of p.placements) {
    const t = turn.get(pl.job_id)!;
    if (!(t < mine || binds === "all" || jobs.get(pl.job_id)!.tier === "flex")) continue;
    const end = expectedEnd(jobs.get(pl.job_id)!, input.now);
    for (const a of pl.nodes)
      holders.push({ node_id: a.node_id, gpus: a.gpu_indices, cpu: a.cpu_milli, mem: a.memory_mib, end });
  }
  for (const r of p.reservations) {
    if (turn.get(r.job_id)! >= mine) continue;
    const rj = jobs.get(r.job_id)!;
    const end = r.start_at + (expectedEnd(rj, input.now) - input.now);
    const n = gangShape(rj.gpu_count).perNode;
    for (const id of r.node_ids)
      holders.push({ node_id: id, gpus: Array(n).fill(-1), cpu: rj.cpu_milli, mem: rj.memory_mib, end });
  }
  const times = [input.now, ...holders.map((h) => h.end).filter((t) => Number.isFinite(t) && t > input.now)].sort(
    (a, b) => a - b,
  );
  for (const t of times) {
    const fitting = input.nodes.filter((node) => {
      if (node.state !== "ready") return false;
      if (job.gpu_models.length && !job.gpu_models.includes(node.gpu_model)) return false;
      const estimate = estimateMs(job);
      if (estimate != null && node.block_end_at != null && node.block_end_at < t + estimate) return false;
      const healthy = node.gpus.filter((g) => !node.unhealthy_gpus.includes(g));
      const unavailable = new Set<number>();
      let virtual = 0;
      let cpu = node.cpu_milli;
      let mem = node.memory_mib;
      for (const h of holders.filter((h) => h.node_id === node.id && h.end > t)) {
        for (const g of h.gpus) {
          if (g === -1) virtual++;
          else unavailable.add(g);
        }
        cpu -= h.cpu;
        mem -= h.mem;
      }
      // A held GPU stays held until a job of its tier takes it; then it is that job's.
      const takenByPlan = new Set(
        p.placements.flatMap((pl) => pl.nodes.filter((a) => a.node_id === node.id).flatMap((a) => a.gpu_indices)),
      );
      for (const h of (input.holds ?? []).filter((h) => h.node_id === node.id && h.usable_by !== job.tier)) {
        for (const g of h.gpu_indices) if (!takenByPlan.has(g)) unavailable.add(g);
      }
      const gpus = healthy.filter((g) => !unavailable.has(g)).length - virtual;
      return gpus >= perNode && cpu >= job.cpu_milli && mem >= job.memory_mib;
    });
    const zones = new Map<string, number>();
    for (const n of fitting) zones.set(n.zone, (zones.get(n.zone) ?? 0) + 1);
    if ([...zones.values()].some((c) => c >= k)) return t;
  }
  return Number.POSITIVE_INFINITY;
}

function shuffle<T>(items: readonly T[], seed: number): T[] {
  const out = [...items];
  let s = seed >>> 0 || 1;
  for (let i = out.length - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const k = s % (i + 1);
    [out[i], out[k]] = [out[k]!, out[i]!];
  }
  return out;
}
