/**
 * A job trace for the replay: the Philly CSV (`job_id,submit_s,num_gpus,duration_s,vc,...`), a window
 * of it, and a tier for each job. Philly jobs have no tier, so one is assigned by a seeded hash of
 * the job id: the same seed always gives the same tiers, whatever the window. Nor do they have the
 * estimated duration a customer may give (`estimated_duration_s`); `--estimates F` gives a seeded
 * share F of the jobs one, off from the true duration as customers' guesses are (`estimateOf`).
 */
import { readFileSync } from "node:fs";
import { GPUS_PER_NODE, type Tier } from "../../core/schemas/common";
import { MAX_GPUS_PER_JOB } from "../../core/schemas/job";

export interface TraceJob {
  id: string;
  /** Seconds from the window's start; negative for a job submitted in the warm-up before it. */
  submitS: number;
  gpus: number;
  durationS: number;
  tier: Tier;
  /** The duration the customer estimated (`estimated_duration_s`), seconds; null for none. */
  estimateS: number | null;
  /** Philly's virtual cluster: the account the job bills to (the packer is fair between accounts). */
  account: string;
}

export interface TraceWindow {
  /** First hour of the trace to replay (hours after the trace's first submit). */
  fromHour: number;
  /** How many hours. */
  hours: number;
  /**
   * Hours before the window whose jobs are replayed too (default 0), so the window opens on a
   * region already running the work submitted before it, with its demand history; only the
   * window's own jobs are measured.
   */
  warmUpHours?: number;
}

export interface TierRule {
  seed: number;
  /** Share of jobs that are Fast, e.g. 0.3. */
  fastShare: number;
  /** Share of jobs that come with an estimated duration (default 0: none, as in the trace). */
  estimateShare?: number;
}

/** Every replayed job's max runtime (the API's largest, 30 days): it is killed then. */
export const MAX_RUNTIME_S = 2_592_000;

/** An estimate's error: the true duration times e^(μ + σz), z standard normal. */
export const ESTIMATE_ERROR = {
  /** Customers pad their guesses: the median estimate is 1.5 × the true duration… */
  median: 1.5,
  /** …and 95 % of them lie within ×e^(±2σ) ≈ ×0.55–×4.1 of the true duration. */
  sigma: 0.5,
  /** No estimate under a minute. */
  minS: 60,
} as const;

/**
 * The job's estimated duration under the rule, or null: a seeded share of jobs have one, the true
 * duration times a log-normal error (`ESTIMATE_ERROR`), so some finish early and some run late; at
 * most the max runtime.
 */
export function estimateOf(jobId: string, durationS: number, rule: TierRule): number | null {
  const share = rule.estimateShare ?? 0;
  if (share <= 0 || unitHash(`${rule.seed}:estimate:${jobId}`) >= share) return null;
  // Box–Muller from two more hashes of the id.
  const u1 = Math.max(unitHash(`${rule.seed}:estimate-u1:${jobId}`), 2 ** -32);
  const u2 = unitHash(`${rule.seed}:estimate-u2:${jobId}`);
  const z = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  const factor = Math.exp(Math.log(ESTIMATE_ERROR.median) + ESTIMATE_ERROR.sigma * z);
  // The API takes no estimate past the max runtime.
  return Math.min(MAX_RUNTIME_S, Math.max(ESTIMATE_ERROR.minS, Math.round(durationS * factor)));
}

/** FNV-1a of the text, then a 32-bit finaliser: a well-mixed number in [0, 1) for the job. */
export function unitHash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  h ^= h >>> 16;
  return (h >>> 0) / 2 ** 32;
}

export function tierOf(jobId: string, rule: TierRule): Tier {
  return unitHash(`${rule.seed}:${jobId}`) < rule.fastShare ? "fast" : "flex";
}

/**
 * Scalar takes 1–8 GPUs or whole nodes up to 64: a Philly job of 12 GPUs becomes 16 (whole nodes),
 * one of 128 becomes 64 (the per-job maximum).
 */
export function scalarGpus(gpus: number): number {
  if (gpus <= GPUS_PER_NODE) return Math.max(1, gpus);
  return Math.min(MAX_GPUS_PER_JOB, Math.ceil(gpus / GPUS_PER_NODE) * GPUS_PER_NODE);
}

export function parseTrace(csv: string, window: TraceWindow, rule: TierRule): TraceJob[] {
  const lines = csv.split(/\r?\n/);
  const header = (lines[0] ?? "").split(",").map((c) => c.trim());
  const col = (name: string) => {
    const i = header.indexOf(name);
    if (i < 0) throw new Error(`trace: no "${name}" column in the header: ${lines[0]}`);
    return i;
  };
  const [idC, submitC, gpusC, durC] = [col("job_id"), col("submit_s"), col("num_gpus"), col("duration_s")];
  const vcC = header.indexOf("vc");
  const from = window.fromHour * 3600;
  const to = from + window.hours * 3600;
  const earliest = from - (window.warmUpHours ?? 0) * 3600;
  const jobs: TraceJob[] = [];
  for (let n = 1; n < lines.length; n++) {
    const line = lines[n]!;
    if (line.trim() === "") continue;
    const cells = line.split(",");
    const submit = Number(cells[submitC]);
    const gpus = Number(cells[gpusC]);
    const duration = Number(cells[durC]);
    const id = cells[idC] ?? "";
    if (!id || !Number.isFinite(submit) || !Number.isInteger(gpus) || gpus < 1 || !(duration >= 0)) {
      throw new Error(`trace line ${n + 1}: not a job: ${line}`);
    }
    if (submit < earliest || submit >= to) continue;
    jobs.push({
      id,
      submitS: submit - from,
      gpus: scalarGpus(gpus),
      durationS: duration,
      tier: tierOf(id, rule),
      estimateS: estimateOf(id, duration, rule),
      account: (vcC >= 0 ? cells[vcC] : undefined) || "philly",
    });
  }
  return jobs.sort((a, b) => a.submitS - b.submitS || a.id.localeCompare(b.id));
}

/**
 * The calendar instant of `submit_s` = 0, from the first row's original submit time (UTC), so the
 * replay's market sees the trace's real hours and weekdays; a trace without one starts 2017-09-04.
 */
export function traceOrigin(csv: string): number {
  const [head, first] = csv.split(/\r?\n/, 2);
  const header = (head ?? "").split(",").map((c) => c.trim());
  const cells = (first ?? "").split(",");
  const orig = cells[header.indexOf("submit_time_utc_orig")];
  const at = orig ? Date.parse(`${orig.trim().replace(" ", "T")}Z`) : Number.NaN;
  const submit = Number(cells[header.indexOf("submit_s")]);
  return Number.isFinite(at) && Number.isFinite(submit) ? at - submit * 1000 : Date.UTC(2017, 8, 4);
}

export function loadTrace(path: string, window: TraceWindow, rule: TierRule): { jobs: TraceJob[]; origin: number } {
  const csv = readFileSync(path, "utf8");
  return { jobs: parseTrace(csv, window, rule), origin: traceOrigin(csv) };
}

/**
 * GPUs demanded at once if every job ran from its submit for its duration (cut to the window: a
 * warm-up job counts from the window's start), sampled each minute: the static baseline sizes its
 * fleet from a quantile of this.
 */
export function idealConcurrency(jobs: readonly TraceJob[], windowS: number, stepS = 60): number[] {
  const slots = Math.ceil(windowS / stepS);
  const delta = new Float64Array(slots + 1);
  for (const j of jobs) {
    const a = Math.max(0, Math.floor(j.submitS / stepS));
    const b = Math.min(slots, Math.ceil(Math.min(windowS, j.submitS + j.durationS) / stepS));
    if (a >= slots || b <= a) continue;
    delta[a]! += j.gpus;
    delta[b]! -= j.gpus;
  }
  const out: number[] = [];
  let level = 0;
  for (let i = 0; i < slots; i++) {
    level += delta[i]!;
    out.push(level);
  }
  return out;
}
