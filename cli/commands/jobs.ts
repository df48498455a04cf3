/** `scalar jobs ls | get | cancel | logs`. */
import { type Job, type LogLine, ok } from "../api/client";
import { type CommandSpec, choiceOption, listOption, pageQuery, stringOption } from "../args";
import { type Context, printJson, printPage } from "../context";
import { EXIT } from "../errors";
import { logText } from "../logs";
import { age, keyValues, metricsText, shorten, table } from "../output";
import { getJob, jobSummary } from "./job-run";
import { showLogs } from "./show-logs";
import { TIERS } from "./workload";

const ID = { min: 1, max: 1 };

export function jobsTable(jobs: Job[], now: number): string {
  return table(
    ["ID", "STATUS", "TIER", "GPUS", "REGION", "AGE", "IMAGE"],
    jobs.map((j) => [
      j.id,
      j.status,
      j.tier,
      String(j.gpu_count),
      j.region,
      age(j.created_at, now),
      shorten(j.image, 60),
    ]),
  );
}

/**
 * `2 of 3`. Only a re-drive (`POST /v1/operator/dead-letters/{id}/redrive`), which grants the job
 * `max_attempts` more, takes the count past the limit: said so, not `2 of 1`.
 */
function attemptsText(job: Job): string {
  if (job.attempts <= job.max_attempts) return `${job.attempts} of ${job.max_attempts}`;
  return `${job.attempts} (re-driven: each re-drive allows ${job.max_attempts} more)`;
}

/** `now`: the time the metrics' age is counted from. */
export function jobDetails(job: Job, now: number): string {
  const placement = job.placements.at(-1);
  return keyValues([
    ["id", job.id],
    ["status", job.status + (job.dead_lettered ? " (dead-lettered)" : "")],
    ["waiting", job.waiting_reason],
    ["tier", job.tier],
    ["region", job.region],
    ["image", job.image],
    ["command", [...job.command, ...job.args].map((a) => (/\s/.test(a) ? JSON.stringify(a) : a)).join(" ")],
    ["gpus", `${job.gpu_count}${job.gpu_models.length ? ` (${job.gpu_models.join(", ")})` : ""}`],
    ["cpu / memory", `${job.cpu_milli / 1000} cores / ${job.memory_mib} MiB`],
    ["attempts", attemptsText(job)],
    [
      "placement",
      placement ? `node ${placement.node_id} (${placement.zone}), GPUs ${placement.gpu_indices.join(",")}` : null,
    ],
    ["metrics", placement?.metrics ? metricsText(placement.metrics, now) : null],
    [
      "labels",
      Object.entries(job.labels)
        .map(([k, v]) => `${k}=${v}`)
        .join(", "),
    ],
    ["created", job.created_at],
    ["started", job.started_at],
    ["finished", job.finished_at],
    ["exit code", job.exit_code],
    ["failure", job.failure_reason],
  ]);
}

export const jobsLs: CommandSpec<Context> = {
  words: ["jobs", "ls"],
  summary: "list jobs, newest first",
  usage: "[--status S,…] [--limit N] [--cursor C]",
  positionals: { min: 0, max: 0 },
  options: {
    status: {
      type: "string",
      multiple: true,
      value: "S",
      description: "queued, placed, running, succeeded, failed, cancelled (comma list or repeat)",
    },
    tier: { type: "string", value: "fast|flex", description: "only this tier" },
    region: { type: "string", value: "R", description: "only this region" },
    label: {
      type: "string",
      multiple: true,
      value: "k=v",
      description: "only jobs with this label; repeat to require several",
    },
    limit: { type: "string", value: "N", description: "jobs per page, 1–100 (default 20)" },
    cursor: { type: "string", value: "C", description: "the next page (printed under the table)" },
  },
  examples: [
    "scalar jobs ls",
    "scalar jobs ls --status queued,running --limit 50",
    "scalar jobs ls --json | jq '.data[].id'",
  ],
  async run(ctx, { values }) {
    const status = listOption(values, "status").join(",");
    const labels = listOption(values, "label").map((l) => l.replace("=", ":"));
    const tier = choiceOption(values, "tier", TIERS);
    const region = stringOption(values, "region");
    const paging = pageQuery(values);
    const conn = ctx.connection();
    const page = await ok(
      conn,
      conn.api.GET("/v1/jobs", {
        params: {
          query: {
            ...(status ? { status } : {}),
            ...(tier ? { tier } : {}),
            ...(region ? { region } : {}),
            ...(labels.length ? { label: labels } : {}),
            ...paging,
          },
        },
      }),
    );
    printPage(ctx, page, { command: jobsLs, values, none: "no jobs", table: jobsTable });
    return EXIT.ok;
  },
};

export const jobsGet: CommandSpec<Context> = {
  words: ["jobs", "get"],
  summary: "show one job: status, why it waits, placement and its resource use, exit code",
  usage: "ID",
  positionals: ID,
  options: {},
  examples: ["scalar jobs get 3f1c2b0e-8a4d-4a57-9d1e-2c5b7f0a9e11"],
  async run(ctx, { positionals }) {
    const conn = ctx.connection();
    const job = await ok(conn, conn.api.GET("/v1/jobs/{id}", { params: { path: { id: positionals[0] as string } } }));
    if (ctx.json) printJson(ctx, job);
    else ctx.io.stdout(jobDetails(job, ctx.io.now()));
    return EXIT.ok;
  },
};

export const jobsCancel: CommandSpec<Context> = {
  words: ["jobs", "cancel"],
  summary: "cancel a job (a running container is stopped: grace period, then kill)",
  usage: "ID",
  positionals: ID,
  options: {},
  examples: ["scalar jobs cancel 3f1c2b0e-8a4d-4a57-9d1e-2c5b7f0a9e11"],
  async run(ctx, { positionals }) {
    const conn = ctx.connection();
    const job = await ok(
      conn,
      conn.api.POST("/v1/jobs/{id}/cancel", { params: { path: { id: positionals[0] as string } } }),
    );
    if (ctx.json) printJson(ctx, job);
    else ctx.io.stdout(`job ${job.id} ${job.status}\n`);
    return EXIT.ok;
  },
};

export const jobsLogs: CommandSpec<Context> = {
  words: ["jobs", "logs"],
  summary: "print a job's logs (all attempts); -f follows them until the job ends",
  usage: "ID [-f]",
  positionals: ID,
  options: {
    follow: { type: "boolean", short: "f", description: "keep streaming new lines until the job ends" },
  },
  examples: [
    "scalar jobs logs 3f1c2b0e-8a4d-4a57-9d1e-2c5b7f0a9e11",
    "scalar jobs logs -f 3f1c2b0e-8a4d-4a57-9d1e-2c5b7f0a9e11",
  ],
  async run(ctx, { positionals, values }) {
    const id = positionals[0] as string;
    const conn = ctx.connection();
    // Its size decides whether lines say which node wrote them (and an unknown id fails here, plainly).
    const { gpu_count } = ctx.json ? { gpu_count: 0 } : await getJob(conn, id);
    return showLogs<LogLine>(ctx, conn, id, {
      owner: "jobs",
      follow: values.follow === true,
      text: (line) => logText(line, gpu_count),
      // As `jobs run` shows them: a header before the lines of every attempt after the first.
      section: (line) => ({ key: line.attempt, header: `--- attempt ${line.attempt} ---` }),
      // How it ended, with the reason when it failed (the stream's end says only the status).
      ended: async (status) => {
        const job = await getJob(conn, id).catch(() => null);
        return job ? jobSummary(job) : `job ${id} ${status ?? "ended"}`;
      },
    });
  },
};
