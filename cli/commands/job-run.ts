/**
 * `scalar jobs run`: submit a job (with an Idempotency-Key, so retries after a network error create
 * one job), show queued → placed → pulling → running on stderr, stream its logs, and exit with its
 * exit code.
 */
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { type Connection, type Job, type JobCreate, type JobEvent, type LogLine, ok, retrying } from "../api/client";
import { type CommandSpec, intOption, type Parsed, stringOption } from "../args";
import { type Context, printJson } from "../context";
import { CliError, EXIT } from "../errors";
import { followLogs, logText, readLogPages, retryNote } from "../logs";
import { duration } from "../output";
import { createProgress, type Progress } from "../progress";
import { parseDuration } from "../units";
import { WORKLOAD_OPTIONS, workloadBody } from "./workload";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const POLL_MS = 500;
const FLUSH_MS = 2_000;

export function jobCreateBody(args: Parsed): JobCreate {
  const maxRuntime = stringOption(args.values, "max-runtime");
  const estimate = stringOption(args.values, "estimate");
  const priority = intOption(args.values, "priority", { min: -1000, max: 1000 });
  const maxAttempts = intOption(args.values, "max-attempts", { min: 1, max: 20 });
  return {
    ...workloadBody(args.values),
    ...(args.rest.length > 0 ? { command: args.rest } : {}),
    ...(maxRuntime !== undefined ? { max_runtime_s: parseDuration(maxRuntime) } : {}),
    ...(estimate !== undefined ? { estimated_duration_s: parseDuration(estimate) } : {}),
    ...(priority !== undefined ? { priority } : {}),
    ...(maxAttempts !== undefined ? { max_attempts: maxAttempts } : {}),
  };
}

/** The process's exit code for a finished job (docs/cli.md, "Exit codes"). */
export function jobExitCode(job: Pick<Job, "status" | "exit_code" | "dead_lettered">): number {
  switch (job.status) {
    case "succeeded":
      return EXIT.ok;
    case "cancelled":
      return EXIT.jobCancelled;
    case "failed": {
      // -1: no container ever ran (stopped before the agent created one): no exit code of its own.
      const code = job.exit_code === null || job.exit_code < 0 ? 0 : job.exit_code % 256;
      if (code !== 0) return code;
      return job.dead_lettered ? EXIT.jobDeadLettered : EXIT.jobFailed;
    }
    default:
      return EXIT.error;
  }
}

/** The one line printed on stderr when the job has ended. */
export function jobSummary(job: Job): string {
  const took =
    job.started_at && job.finished_at
      ? ` after ${duration(Date.parse(job.finished_at) - Date.parse(job.started_at))}`
      : "";
  const attempts = job.attempts > 1 ? `, ${job.attempts} attempts` : "";
  switch (job.status) {
    case "succeeded":
      return `job ${job.id} succeeded${took}${attempts}`;
    case "cancelled":
      return `job ${job.id} was cancelled`;
    case "failed": {
      const exit = job.exit_code !== null ? `exit code ${job.exit_code}` : null;
      const why = [
        exit,
        job.failure_reason === exit ? null : job.failure_reason,
        job.dead_lettered
          ? `dead-lettered after ${job.attempts} attempt${job.attempts === 1 ? "" : "s"}${
              job.attempts < job.max_attempts ? " (not retried: another attempt would fail the same way)" : ""
            }`
          : null,
      ].filter(Boolean);
      return `job ${job.id} failed${took}${why.length ? `: ${why.join("; ")}` : ""}`;
    }
    default:
      return `job ${job.id} is ${job.status}`;
  }
}

/** What the progress line says about a live job: its stage and a detail. */
export function stageOf(job: Job, lastEvent: JobEvent | undefined): { stage: string; detail: string | null } {
  const placement = job.placements.at(-1);
  switch (job.status) {
    case "queued": {
      if (job.waiting_reason) return { stage: "queued", detail: `waiting: ${job.waiting_reason}` };
      if (job.next_attempt_at) return { stage: "queued", detail: `retry at ${job.next_attempt_at}` };
      return { stage: "queued", detail: null };
    }
    case "placed": {
      const where = placement ? `node ${placement.node_id}, GPUs ${placement.gpu_indices.join(",")}` : null;
      const pulling = lastEvent?.type === "pulling" && (placement ? lastEvent.attempt === placement.attempt : true);
      if (pulling) return { stage: "pulling", detail: lastEvent?.reason ?? job.image };
      return { stage: "placed", detail: where };
    }
    default:
      return { stage: job.status, detail: placement ? `node ${placement.node_id}` : null };
  }
}

/** Safe to send again: the Idempotency-Key makes every retry return the one job the first created. */
function submit(conn: Connection, body: JobCreate, idempotencyKey: string): Promise<Job> {
  return retrying(() =>
    ok(conn, conn.api.POST("/v1/jobs", { body, params: { header: { "idempotency-key": idempotencyKey } } })),
  );
}

export function getJob(conn: Connection, id: string): Promise<Job> {
  return retrying(() => ok(conn, conn.api.GET("/v1/jobs/{id}", { params: { path: { id } } })));
}

/**
 * Polls the job until it runs or ends, showing each stage; the events tell `pulling` apart from `placed`.
 * While the job waits for a retry, the ended attempt's lines are shown as they arrive (`flushLogs`),
 * not only when a later attempt is seen running.
 */
async function watchStart(
  conn: Connection,
  job: Job,
  progress: Progress,
  signal: AbortSignal,
  emit: Emit,
  flushLogs: () => Promise<void>,
) {
  let flushedAt = Number.NEGATIVE_INFINITY;
  // The cursor of the last page read: each poll re-reads that page and any after it.
  let pageCursor: string | undefined;
  let lastEvent: JobEvent | undefined;
  let shown = "";
  for (;;) {
    if (job.status === "placed") {
      for (;;) {
        const page = await retrying(() =>
          ok(
            conn,
            conn.api.GET("/v1/jobs/{id}/events", {
              params: {
                path: { id: job.id },
                query: { type: "placed,pulling,running", limit: 500, ...(pageCursor ? { cursor: pageCursor } : {}) },
              },
            }),
          ),
        );
        lastEvent = page.data.at(-1) ?? lastEvent;
        if (!page.next_cursor) break;
        pageCursor = page.next_cursor;
      }
    }
    const { stage, detail } = stageOf(job, lastEvent);
    progress.update(stage, detail);
    if (`${stage}|${detail}` !== shown) emit({ type: "status", status: job.status, stage, detail });
    shown = `${stage}|${detail}`;
    if (job.status === "running" || TERMINAL.has(job.status)) return job;
    // Waiting for a retry: the ended attempt's lines, as they reach the API (every 2 s at most).
    if (job.status === "queued" && job.attempts > 0 && Date.now() - flushedAt >= FLUSH_MS) {
      flushedAt = Date.now();
      await flushLogs();
    }
    try {
      await sleep(POLL_MS, undefined, { signal });
    } catch {
      return job;
    }
    job = await getJob(conn, job.id);
  }
}

type Emit = (record: Record<string, unknown>) => void;

export const jobsRun: CommandSpec<Context> = {
  words: ["jobs", "run"],
  summary: "run a job: submit it, show its progress, stream its logs, exit with its exit code",
  usage: "--gpus N --image IMG [options] [-- CMD…]",
  positionals: { min: 0, max: 0 },
  rest: true,
  options: {
    ...WORKLOAD_OPTIONS,
    "max-runtime": { type: "string", value: "DUR", description: "stop it after this long: 90s, 30m, 2h (default 1h)" },
    estimate: {
      type: "string",
      value: "DUR",
      description: "how long it should run, at most the max runtime (placement and backfill use it)",
    },
    priority: { type: "string", value: "P", description: "−1000…1000 (default 0)" },
    "max-attempts": { type: "string", value: "N", description: "attempts before it is dead-lettered (default 3)" },
    "idempotency-key": { type: "string", value: "K", description: "submit at most once per key (default: a new UUID)" },
    detach: { type: "boolean", short: "D", description: "print the job id and exit once it is submitted" },
  },
  examples: [
    "scalar jobs run --gpus 1 --image 127.0.0.1:5000/test/busybox:1 -- echo hello",
    "scalar jobs run --gpus 8 --tier fast --image ghcr.io/acme/train:1.4 --env EPOCHS=3 --max-runtime 2h -- python train.py",
    "scalar jobs run --detach --gpus 1 --image ghcr.io/acme/batch:2 -- ./batch.sh",
  ],
  async run(ctx, args) {
    const body = jobCreateBody(args);
    const { io } = ctx;
    const conn = ctx.connection();
    const submitted = await submit(conn, body, stringOption(args.values, "idempotency-key") ?? randomUUID());

    if (args.values.detach === true) {
      if (ctx.json) printJson(ctx, submitted);
      else {
        io.stdout(`${submitted.id}\n`);
        io.stderr(
          `submitted job ${submitted.id} (${submitted.status}); follow it: scalar jobs logs ${submitted.id} -f\n`,
        );
      }
      return EXIT.ok;
    }

    // --json: one JSON object per line on stdout (status changes, log lines, the final job).
    const emit: Emit = ctx.json ? (r) => io.stdout(`${JSON.stringify(r)}\n`) : () => {};
    const abort = new AbortController();
    const removeInterrupt = io.onInterrupt(() => abort.abort());
    const progress = createProgress({
      write: (t) => io.stderr(t),
      tty: io.stderrIsTTY,
      now: io.now,
      ...(io.columns ? { columns: io.columns } : {}),
    });
    progress.note(
      `job ${submitted.id} submitted (${submitted.tier}, ${submitted.gpu_count} GPU${submitted.gpu_count === 1 ? "" : "s"}, ${submitted.region})`,
    );
    // Each line once, in the order read, with a header when the attempt changes (lines of an ended
    // attempt may be shown while the job waits for its retry, and the stream then starts over).
    const shown = new Set<string>();
    let attempt = 1;
    const print = (line: LogLine) => {
      const key = `${line.placement_id}/${line.seq}`;
      if (shown.has(key)) return;
      shown.add(key);
      if (line.attempt !== attempt) {
        io.stderr(`--- attempt ${line.attempt} ---\n`);
        attempt = line.attempt;
      }
      if (ctx.json) emit({ type: "log", ...line });
      else if (line.stream === "stderr") io.stderr(`${logText(line, submitted.gpu_count)}\n`);
      else io.stdout(`${logText(line, submitted.gpu_count)}\n`);
    };
    // Where the last flush got to: the next reads on from there, not the whole log again.
    let flushedCursor: string | undefined;
    const flushLogs = async () => {
      const lines: LogLine[] = [];
      try {
        for await (const page of readLogPages(conn, submitted.id, "jobs", flushedCursor)) {
          lines.push(...page.data);
          flushedCursor = page.cursor;
        }
      } catch {
        // The rest not now: the next flush or the stream shows it.
      }
      if (lines.length === 0) return;
      progress.above(() => {
        for (const line of lines) print(line);
      });
    };
    try {
      let job = await watchStart(conn, submitted, progress, abort.signal, emit, flushLogs);
      if (!abort.signal.aborted) {
        let first = true;
        const onWait = (message: string) => progress.above(() => io.stderr(`${message}\n`));
        // The status last shown (as a record with --json), so the stream's first repeats none.
        let shownStatus = `${job.status}/${job.attempts}`;
        for await (const item of followLogs(conn, job.id, { signal: abort.signal, onWait })) {
          if (item.kind === "status") {
            const { status, attempts, failure_reason } = item.status;
            if (`${status}/${attempts}` === shownStatus) continue;
            shownStatus = `${status}/${attempts}`;
            const note = retryNote(item.status);
            if (ctx.json) emit({ type: "status", status, attempts, failure_reason });
            else if (note) progress.above(() => io.stderr(`${note}\n`));
            continue;
          }
          if (first) {
            progress.stop();
            first = false;
          }
          if (item.kind === "end") break;
          print(item.line);
        }
        progress.stop();
      }
      if (abort.signal.aborted) {
        progress.stop();
        io.stderr(
          `\nStopped watching; job ${submitted.id} keeps running.\n` +
            `  follow it:  scalar jobs logs ${submitted.id} -f\n` +
            `  cancel it:  scalar jobs cancel ${submitted.id}\n`,
        );
        return EXIT.interrupted;
      }
      job = await getJob(conn, job.id);
      emit({ type: "end", job });
      io.stderr(`${jobSummary(job)}\n`);
      return jobExitCode(job);
    } catch (error) {
      // Watching failed, not the job: say so on the same line.
      const message = error instanceof Error ? error.message : String(error);
      throw new CliError(
        `${message}; job ${submitted.id} was submitted and is not cancelled (follow it: scalar jobs logs ${submitted.id} -f)`,
        error instanceof CliError ? error.exitCode : EXIT.error,
      );
    } finally {
      progress.stop();
      removeInterrupt();
    }
  },
};
