/**
 * npm run replay:sweep -- --jobs FILE [--windows 720,1200] [--seeds 1,2,3] [--hours N]
 *   [--tune NAME=JSON ...] [--parallel P]
 *
 * Compares settings of the capacity policy over several windows and seeds, since one run of one
 * setting moves by ±3–5 % with the seed (docs/capacity_planning.md). For each window and seed it
 * runs the reactive baseline once and Scalar once per `--tune` (a `REPLAY_TUNE` object, as the
 * replay takes it; `default={}` when none is given), each a `replay:market` process, `--parallel`
 * at a time (default 2). Prints one JSON object: every run's Scalar figures with its spend against
 * reactive's and the replay's warnings (jobs cut off or never started), and per setting the mean,
 * lowest and highest of that ratio and how many runs warned. Progress goes to stderr.
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    jobs: { type: "string" },
    windows: { type: "string", default: "720,1200" },
    seeds: { type: "string", default: "1,2,3" },
    hours: { type: "string", default: "336" },
    tune: { type: "string", multiple: true },
    parallel: { type: "string", default: "2" },
  },
});

const USAGE =
  "usage: npm run replay:sweep -- --jobs FILE [--windows 720,1200] [--seeds 1,2,3] [--hours N] [--tune NAME=JSON ...] [--parallel P]";

function fail(message: string): never {
  console.error(message);
  process.exit(2);
}

function wholeNumbers(name: string, text: string): number[] {
  const list = text.split(",").map((s) => Number(s.trim()));
  if (list.length === 0 || list.some((n) => !Number.isInteger(n) || n < 0)) {
    fail(`--${name} must be a comma-separated list of whole numbers, got ${text}`);
  }
  return list;
}

if (!values.jobs) fail(USAGE);
const windows = wholeNumbers("windows", values.windows);
const seeds = wholeNumbers("seeds", values.seeds);
const [hours] = wholeNumbers("hours", values.hours);
const [parallel] = wholeNumbers("parallel", values.parallel);
if (!hours || !parallel) fail("--hours and --parallel must be at least 1");
const tunes = (values.tune ?? ["default={}"]).map((t) => {
  const at = t.indexOf("=");
  if (at < 1) fail(`--tune must be NAME=JSON, got ${t}`);
  const json = t.slice(at + 1);
  try {
    JSON.parse(json);
  } catch {
    fail(`--tune ${t.slice(0, at)}: not JSON: ${json}`);
  }
  return { name: t.slice(0, at), json };
});
if (new Set(tunes.map((t) => t.name)).size !== tunes.length) fail("--tune names must differ");

interface Task {
  window: number;
  seed: number;
  policy: "scalar" | "reactive";
  tune: { name: string; json: string } | null;
}

type Figures = Record<string, number>;

const root = fileURLToPath(new URL("../..", import.meta.url));

/** One `replay:market` process: its JSON's figures for the policy it ran, and its WARNING lines. */
function replay(task: Task): Promise<{ figures: Figures; warnings: string[] }> {
  const args = [
    "tsx",
    "tools/replay-market/cli.ts",
    "--jobs",
    values.jobs!,
    "--from-hour",
    String(task.window),
    "--hours",
    String(hours),
    "--seed",
    String(task.seed),
  ];
  const env = { ...process.env, REPLAY_ONLY: task.policy, REPLAY_TUNE: task.tune?.json ?? "" };
  return new Promise((resolve, reject) => {
    const child = spawn("npx", args, { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => {
      out += d;
    });
    child.stderr.on("data", (d) => {
      err += d;
    });
    child.on("close", (code) => {
      if (code !== 0) {
        reject(
          new Error(`replay of window ${task.window}, seed ${task.seed} exited ${code}: ${err.trim().slice(-500)}`),
        );
        return;
      }
      const warnings = err.split("\n").filter((line) => line.startsWith("WARNING"));
      resolve({ figures: JSON.parse(out)[task.policy] as Figures, warnings });
    });
  });
}

const tasks: Task[] = [];
for (const window of windows) {
  for (const seed of seeds) {
    tasks.push({ window, seed, policy: "reactive", tune: null });
    for (const tune of tunes) tasks.push({ window, seed, policy: "scalar", tune });
  }
}

const results = new Map<Task, { figures: Figures; warnings: string[] }>();
let done = 0;
const started = performance.now();
async function worker(queue: Task[]): Promise<void> {
  for (let task = queue.shift(); task; task = queue.shift()) {
    const result = await replay(task);
    results.set(task, result);
    done += 1;
    const label = task.policy === "reactive" ? "reactive" : `scalar ${task.tune!.name}`;
    const elapsed = ((performance.now() - started) / 1000).toFixed(0);
    console.error(`[${done}/${tasks.length}, ${elapsed} s] window ${task.window} seed ${task.seed}: ${label}`);
    for (const line of result.warnings) console.error(`  ${line}`);
  }
}
const queue = [...tasks];
try {
  await Promise.all(Array.from({ length: Math.min(parallel, tasks.length) }, () => worker(queue)));
} catch (error) {
  fail((error as Error).message);
}

const reactiveOf = (window: number, seed: number) =>
  results.get(tasks.find((t) => t.policy === "reactive" && t.window === window && t.seed === seed)!)!.figures;
const round = (x: number, digits: number) => Math.round(x * 10 ** digits) / 10 ** digits;
const runs = tasks
  .filter((t) => t.policy === "scalar")
  .map((t) => {
    const { figures: scalar, warnings } = results.get(t)!;
    const reactive = reactiveOf(t.window, t.seed);
    const vs = (scalar.spend_usd! / reactive.spend_usd! - 1) * 100;
    return {
      setting: t.tune!.name,
      from_hour: t.window,
      seed: t.seed,
      spend_vs_reactive_pct: round(vs, 1),
      reactive_spend_usd: reactive.spend_usd,
      reactive_fast_start_p99_s: reactive.fast_start_p99_s,
      scalar,
      // Jobs Scalar cut off or left unstarted in this run (the replay's WARNING lines).
      warnings,
    };
  });
const settings = Object.fromEntries(
  tunes.map((tune) => {
    const mine = runs.filter((r) => r.setting === tune.name);
    const vs = mine.map((r) => r.spend_vs_reactive_pct);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    return [
      tune.name,
      {
        tune: JSON.parse(tune.json),
        runs: mine.length,
        spend_vs_reactive_pct: { mean: round(mean(vs), 1), best: Math.min(...vs), worst: Math.max(...vs) },
        fast_start_p99_s_mean: round(mean(mine.map((r) => r.scalar.fast_start_p99_s!)), 1),
        utilisation_mean: round(mean(mine.map((r) => r.scalar.utilisation!)), 4),
        runs_with_warnings: mine.filter((r) => r.warnings.length > 0).length,
      },
    ];
  }),
);
console.log(JSON.stringify({ hours, windows, seeds, settings, runs }, null, 2));
