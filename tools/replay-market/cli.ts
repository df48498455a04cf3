/**
 * npm run replay:market -- --jobs FILE [--from-hour H --hours N] [--seed S] [--fast-share F] [--estimates E]
 *   [--warm-up-hours W]
 *
 * Replays a window of a job trace through Scalar's capacity policy and the static and reactive
 * baselines on the same simulated market, and prints one JSON object (see docs/capacity_planning.md).
 * Progress and diagnostics go to stderr.
 */
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { HOUR_MS, quotedLengths } from "../../core/autoscaler";
import type { ReplayResult } from "./ledger";
import { clairvoyantFleet, formulaLowerBoundCents, lowerBoundCents } from "./lower-bound";
import { engineFor, type PolicyName, runPolicy } from "./replay";
import { replaySetup } from "./setup";
import { loadTrace } from "./trace";

const { values } = parseArgs({
  options: {
    jobs: { type: "string" },
    "from-hour": { type: "string", default: "720" },
    hours: { type: "string", default: "336" },
    seed: { type: "string", default: "1" },
    "fast-share": { type: "string", default: "0.3" },
    estimates: { type: "string", default: "0" },
    "warm-up-hours": { type: "string", default: "0" },
  },
});

function number(name: string, value: string | undefined): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) {
    console.error(`--${name} must be a non-negative number, got ${value}`);
    process.exit(2);
  }
  return n;
}

if (!values.jobs) {
  console.error(
    "usage: npm run replay:market -- --jobs FILE [--from-hour H --hours N] [--seed S] [--fast-share F] [--estimates E] [--warm-up-hours W]",
  );
  process.exit(2);
}
const fromHour = number("from-hour", values["from-hour"]);
const hours = number("hours", values.hours);
const seed = number("seed", values.seed);
const fastShare = number("fast-share", values["fast-share"]);
const estimateShare = number("estimates", values.estimates);
const warmUpHours = number("warm-up-hours", values["warm-up-hours"]);
if (fastShare > 1 || estimateShare > 1) {
  console.error("--fast-share and --estimates are shares of the jobs, between 0 and 1");
  process.exit(2);
}
if (!Number.isInteger(warmUpHours) || warmUpHours > fromHour) {
  console.error(`--warm-up-hours must be whole hours, at most --from-hour (${fromHour}), got ${warmUpHours}`);
  process.exit(2);
}
const { jobs, origin } = loadTrace(values.jobs, { fromHour, hours, warmUpHours }, { seed, fastShare, estimateShare });
const windowStart = origin + fromHour * HOUR_MS;
const base = replaySetup(jobs, windowStart, hours, seed, { warmUpMs: warmUpHours * HOUR_MS });
// REPLAY_TUNE='{"config":{…},"demand":{…}}' overrides settings (for tuning runs; the docs' numbers use none).
const tune = process.env.REPLAY_TUNE ? JSON.parse(process.env.REPLAY_TUNE) : {};
const setup: typeof base = {
  ...base,
  ...tune,
  config: deepMerge(base.config, tune.config ?? {}),
  demand: { ...base.demand, ...tune.demand },
};
const windowJobs = jobs.filter((j) => j.submitS >= 0);
console.error(
  `replay: ${windowJobs.length} jobs (${windowJobs.filter((j) => j.tier === "fast").length} Fast, ${windowJobs.filter((j) => j.estimateS !== null).length} with an estimated duration), ${hours} h from ${new Date(windowStart).toISOString()}, static fleet ${setup.staticNodes} nodes${warmUpHours > 0 ? `; warm-up ${warmUpHours} h before it: ${jobs.length - windowJobs.length} jobs, not measured` : ""}`,
);

const runs = {} as Record<PolicyName, ReturnType<typeof runPolicy>>;
// REPLAY_ONLY=scalar[,…] runs only those policies (the others repeat the first that ran; for tuning runs).
const only = process.env.REPLAY_ONLY ? process.env.REPLAY_ONLY.split(",") : null;
const POLICIES = ["scalar", "static", "reactive"] as const;
if (only && !POLICIES.some((name) => only.includes(name))) {
  console.error(`REPLAY_ONLY names none of ${POLICIES.join(", ")}: ${process.env.REPLAY_ONLY}`);
  process.exit(2);
}
for (const name of POLICIES) {
  if (only && !only.includes(name)) continue;
  // REPLAY_SERIES=DIR writes each policy's minute-by-minute state there (for plots and tuning).
  const dir = process.env.REPLAY_SERIES;
  const series: Record<string, number>[] = [];
  runs[name] = runPolicy(name, dir ? { ...setup, observe: (s) => series.push(s) } : setup);
  if (dir) writeFileSync(`${dir}/${name}.json`, JSON.stringify(series));
  console.error(`${name}: ${JSON.stringify(runs[name].diagnostics)}`);
  // Work lost or never served is a defect of the policy under test, not a figure to average away.
  const {
    jobs_killed: killed,
    jobs_never_started: neverStarted,
    jobs_overdue_at_end: overdue,
  } = runs[name].diagnostics;
  if (killed > 0) console.error(`WARNING ${name}: ${killed} job(s) cut off when their node's time ended`);
  if (overdue > 0) {
    console.error(`WARNING ${name}: ${overdue} job(s) of the window never started, past their tier's wait at its end`);
  }
  if (neverStarted > overdue) {
    console.error(
      `${name}: ${neverStarted - overdue} job(s) submitted late in the window had not started at its end, within their tier's wait`,
    );
  }
}
const first = runs[POLICIES.find((name) => runs[name] !== undefined)!];
for (const name of POLICIES) runs[name] ??= first;
// The block lengths the policies buy: Scalar's, and the static fleet's whole window (and warm-up).
const lengths = [...quotedLengths(setup.config), hours + warmUpHours];
const lowerBound = lowerBoundCents(engineFor(setup), jobs, windowStart, setup.windowMs, lengths, setup.warmUpMs);
// The references below price the window only (an engine starting at it: the same prices there).
const inWindow = { ...setup, warmUpMs: 0 };
const formula = formulaLowerBoundCents(
  engineFor(inWindow),
  jobs,
  windowStart,
  setup.windowMs,
  Math.max(...lengths) * HOUR_MS,
);
console.error(`lower bound without congestion, at the price model's own terms: $${(formula / 100).toFixed(2)}`);
// A reference for the targets: what a fleet that knew the demand in advance and packed it perfectly pays.
const oracle = clairvoyantFleet(engineFor(inWindow), jobs, windowStart, setup.windowMs, quotedLengths(setup.config));
console.error(
  `clairvoyant fleet (known demand, perfect packing, no headroom): $${(oracle.cents / 100).toFixed(2)} = ${(oracle.cents / lowerBound).toFixed(3)} × the lower bound, utilisation ${oracle.utilisation.toFixed(3)}, node-hours by block length ${JSON.stringify(oracle.nodeHoursByLength)}`,
);
const result: ReplayResult = {
  scalar: runs.scalar.metrics,
  static: runs.static.metrics,
  reactive: runs.reactive.metrics,
  lower_bound_spend_usd: Math.round(lowerBound) / 100,
};
console.log(JSON.stringify(result, null, 2));

function deepMerge<T>(base: T, patch: Record<string, unknown>): T {
  const out = { ...base } as Record<string, unknown>;
  for (const [k, v] of Object.entries(patch)) {
    const cur = out[k];
    out[k] =
      v && typeof v === "object" && !Array.isArray(v) && cur && typeof cur === "object"
        ? deepMerge(cur, v as Record<string, unknown>)
        : v;
  }
  return out as T;
}
