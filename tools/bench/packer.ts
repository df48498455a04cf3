/**
 * `npm run bench:packer [-- --trace FILE --decisions N --nodes 1000,10000 --fill 0.85 --seed S]`
 *
 * Decisions per second of the packer on fleets of 8-GPU nodes kept about `fill` full, with jobs
 * drawn from the GPU-count mix of a trace (default: the Philly sample in tools/replay/fixtures;
 * pass the full trace with --trace). A decision is one job through filter → score → select, plus
 * taking its GPUs on the live index; after each, random running jobs finish until the fleet is
 * back at `fill`. The first-fit baseline (a linear scan through the same filter chain) runs the
 * same job sequence in the same process. Prints a JSON array, one object per fleet size.
 */
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import {
  DEFAULT_CONFIG,
  Fleet,
  type FleetAllocation,
  needFor,
  type PackerJob,
  type PackerNode,
  type Policy,
  SELECTORS,
  scoreContext,
} from "../../core/scheduler";
import { isValidGpuCount } from "../../core/schemas/job";
import { gpuMix, readCsv, toJobs } from "../replay/trace";
import { mulberry32 } from "./random";

const { values } = parseArgs({
  options: {
    trace: { type: "string", default: resolve(import.meta.dirname, "../replay/fixtures/philly-sample.csv") },
    decisions: { type: "string", default: "50000" },
    nodes: { type: "string", default: "1000,10000" },
    fill: { type: "string", default: "0.85" },
    seed: { type: "string", default: "42" },
  },
});

const decisions = Number(values.decisions);
const fill = Number(values.fill);
const seed = Number(values.seed);
const mix = [...gpuMix(toJobs(readCsv(values.trace)))].filter(([g]) => isValidGpuCount(g));
const mixTotal = mix.reduce((s, [, n]) => s + n, 0);

function drawer(rand: () => number): () => number {
  return () => {
    let x = rand() * mixTotal;
    for (const [g, n] of mix) {
      x -= n;
      if (x < 0) return g;
    }
    return mix[mix.length - 1]![0];
  };
}

function fleetNodes(count: number): PackerNode[] {
  return Array.from({ length: count }, (_, i) => ({
    id: `node-${String(i).padStart(6, "0")}`,
    zone: `zone-${i % 4}`,
    gpu_model: "H100",
    gpus: [0, 1, 2, 3, 4, 5, 6, 7],
    unhealthy_gpus: [],
    cpu_milli: 208_000,
    memory_mib: 1_900_000,
    state: "ready",
    block_end_at: null,
  }));
}

function job(n: number, gpus: number): PackerJob {
  const perNode = Math.min(gpus, 8);
  return {
    id: `job-${n}`,
    account_id: `acct-${n % 17}`,
    tier: n % 3 === 0 ? "fast" : "flex",
    priority: 0,
    gpu_count: gpus,
    gpu_models: [],
    cpu_milli: 8_000 * perNode,
    memory_mib: 65_536 * perNode,
    estimated_duration_s: 3600,
    max_runtime_s: 86_400,
    submitted_at: 0,
    attempt: 0,
  };
}

interface Run {
  decisions_per_s: number;
  p99_decision_us: number;
  placed_share: number;
  gpu_utilisation: number;
  index_build_ms: number;
}

function run(nodeCount: number, policy: Policy): Run {
  const rand = mulberry32(seed);
  const draw = drawer(rand);
  const built = process.hrtime.bigint();
  const fleet = new Fleet(fleetNodes(nodeCount));
  const indexBuildMs = Number(process.hrtime.bigint() - built) / 1e6;
  const ctx = scoreContext(Object.fromEntries(mix), 0, DEFAULT_CONFIG.weights);
  const selector = SELECTORS[policy];
  const limit = DEFAULT_CONFIG.candidates_per_bucket;
  const total = nodeCount * 8;
  const target = Math.round(total * fill);
  const running: FleetAllocation[][] = [];
  let allocated = 0;
  let n = 0;

  const decide = (): boolean => {
    const j = job(n++, draw());
    const need = needFor(j, fleet, 0);
    const sel = selector(fleet, need, ctx, limit);
    if (!sel.ok) return false;
    running.push(sel.choices.map((c) => fleet.allocate(c.node, c.mask, need.cpu, need.mem, need.end)));
    allocated += j.gpu_count;
    return true;
  };
  const finishUntil = (level: number) => {
    while (allocated > level && running.length > 0) {
      const i = Math.floor(rand() * running.length);
      const done = running[i]!;
      running[i] = running[running.length - 1]!;
      running.pop();
      for (const a of done) {
        fleet.release(a);
        allocated -= a.gpus;
      }
    }
  };

  for (let tries = 0; allocated < target && tries < total * 4; tries++) decide();
  finishUntil(target);

  const times = new Float64Array(decisions);
  let placed = 0;
  for (let d = 0; d < decisions; d++) {
    const t0 = process.hrtime.bigint();
    const ok = decide();
    times[d] = Number(process.hrtime.bigint() - t0);
    if (ok) placed++;
    finishUntil(target);
  }
  const totalNs = times.reduce((s, t) => s + t, 0);
  times.sort();
  return {
    decisions_per_s: Math.round(decisions / (totalNs / 1e9)),
    p99_decision_us: round2(times[Math.floor(decisions * 0.99)]! / 1000),
    placed_share: round2(placed / decisions),
    gpu_utilisation: round2(allocated / total),
    index_build_ms: round2(indexBuildMs),
  };
}

const round2 = (x: number) => Math.round(x * 100) / 100;

const results = values.nodes.split(",").map((s) => {
  const nodes = Number(s);
  const scalar = run(nodes, "scalar");
  const firstFit = run(nodes, "first-fit");
  return {
    nodes,
    decisions_per_s: scalar.decisions_per_s,
    p99_decision_us: scalar.p99_decision_us,
    baseline_first_fit_decisions_per_s: firstFit.decisions_per_s,
    baseline_first_fit_p99_decision_us: firstFit.p99_decision_us,
    decisions,
    fill_target: fill,
    placed_share: scalar.placed_share,
    baseline_first_fit_placed_share: firstFit.placed_share,
    gpu_utilisation: scalar.gpu_utilisation,
    index_build_ms: scalar.index_build_ms,
  };
});
console.log(JSON.stringify(results, null, 2));
