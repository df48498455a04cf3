/** Jobs: submit, list, read, cancel, and their events and logs. */
import { createRoute, z } from "@hono/zod-openapi";
import { and, desc, eq, getTableColumns, gte, inArray, lte, type SQL, sql } from "drizzle-orm";
import { endTime, startTime } from "hono/timing";
import { JOB_STATUSES, type JobStatus, TERMINAL_JOB_STATUSES, Tier } from "../../core/schemas";
import type { CancelResult } from "../../durable-objects/region-scheduler/rpc";
import { requireAccount } from "../auth/caller";
import { sealEnv } from "../auth/env-secrets";
import type { Db } from "../db/client";
import { pgError } from "../db/pg-error";
import { inlineRow, literal, mapColumns, pipelinedTransaction, pipelinedWrite } from "../db/round-trips";
import { auditLog, jobRuns, jobSubmissions, jobs } from "../db/schema";
import { ApiError } from "../http/errors";
import { beforeCursor, cursorTime, decodeTimeCursor, encodeTimeCursor, page } from "../http/pagination";
import { audit, auditRow } from "./audit";
import { loadJob } from "./job-rows";
import { paymentHoldCheck, paymentHoldError, readsBilling } from "./payment-required";
import {
  checkQuota,
  gpuQuotaCheck,
  gpuQuotaError,
  jobDemand,
  lockAccountStatement,
  type QuotaGroup,
  quotaGroupsQuery,
  quotaUseOf,
  requireTier,
} from "./quota";
import { BEARER, createRouter, errors, guard, respond } from "./router";
import { requireGpuModels, schedulerOf, servedRegion } from "./scheduler";
import { DateTimeInput, IdempotencyHeaders, IdParam, Job, JobCreate, PageQuery, pageOf } from "./schemas";
import { submitJob } from "./submission";
import { type JobRow, jobView, type RunRow, workloadColumns } from "./views";

const JobPage = pageOf(Job, "JobPage");

const LabelSelector = z
  .string()
  .regex(/^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?:.{0,256}$/, "key:value")
  .openapi({ example: "team:research" });

const ListJobsQuery = z.strictObject({
  ...PageQuery,
  status: z
    .string()
    .max(200)
    .refine((s) => s.split(",").every((x) => (JOB_STATUSES as readonly string[]).includes(x)), {
      message: `comma-separated statuses: ${JOB_STATUSES.join(", ")}`,
    })
    .optional()
    .openapi({ example: "queued,running" }),
  tier: Tier.optional(),
  region: z.string().max(32).optional(),
  label: z
    .union([LabelSelector, z.array(LabelSelector).max(10)])
    .optional()
    .openapi({ description: "`key:value`; repeat to require several labels." }),
  created_after: DateTimeInput.optional(),
  created_before: DateTimeInput.optional(),
});

export const jobsRouter = createRouter();

async function jobRunsOf(db: Db, jobId: string): Promise<RunRow[]> {
  return db
    .execute<RunRow & Record<string, unknown>>(sql`
    select r.id as placement_id, r.node_id, n.zone, r.attempt, r.gang_index as node_rank, r.status, r.placed_at, r.started_at,
           r.finished_at, r.exit_code,
           coalesce(array_agg(g.gpu_index order by g.gpu_index) filter (where g.gpu_index is not null), '{}') as gpu_indices
      from ${jobRuns} r
      join nodes n on n.id = r.node_id
      left join gpu_assignments g on g.job_run_id = r.id
     where r.job_id = ${sql.raw(literal(jobId))}
     group by r.id, n.zone
     order by r.attempt, r.gang_index, r.placed_at`)
    .then((rows) =>
      rows.map((r) => ({
        ...r,
        placed_at: new Date(r.placed_at as unknown as string),
        started_at: r.started_at ? new Date(r.started_at as unknown as string) : null,
        finished_at: r.finished_at ? new Date(r.finished_at as unknown as string) : null,
        gpu_indices: Array.isArray(r.gpu_indices) ? r.gpu_indices.map(Number) : parseIntArray(String(r.gpu_indices)),
      })),
    );
}

function parseIntArray(text: string): number[] {
  return text.replace(/[{}]/g, "").split(",").filter(Boolean).map(Number);
}

jobsRouter.openapi(
  createRoute({
    method: "post",
    path: "/v1/jobs",
    tags: ["Jobs"],
    summary: "Submit a job",
    description:
      "Validates the request, checks the tier entitlement, the payment hold (an unpaid invoice: `402 payment_required`) and quotas, stores the job (`queued`) and hands it to the region's scheduler. Safe to retry with `Idempotency-Key`.",
    security: BEARER,
    middleware: guard({ scope: "jobs:write" }),
    request: {
      headers: IdempotencyHeaders,
      body: { required: true, content: { "application/json": { schema: JobCreate } } },
    },
    responses: {
      202: {
        description:
          "Accepted: the job is stored and handed to its region's scheduler. As the scheduler answered: `placed` with its placement when capacity was free, else `queued` with `waiting_reason`; `queued` alone while the scheduler is unreachable (it is submitted again).",
        content: { "application/json": { schema: Job } },
      },
      ...errors(402, 409, 413, 415, 422, 503),
    },
  }),
  async (c) => {
    const caller = c.get("caller");
    const account = requireAccount(caller);
    const request = c.req.valid("json");
    // No tier asked for: the best the account may use (the job, and the CLI, say which it got).
    const body = { ...request, tier: request.tier ?? (account.fastTierEnabled ? "fast" : "flex") } as const;
    const region = servedRegion(c.env, body.region);
    requireTier(body.tier, account.fastTierEnabled);
    await requireGpuModels(c.env, region, body.gpu_models);
    if (body.estimated_duration_s !== undefined && body.estimated_duration_s > body.max_runtime_s) {
      throw new ApiError(400, "invalid_request", "estimated_duration_s: must not exceed max_runtime_s", {
        location: "body",
        fields: [{ field: "estimated_duration_s", message: "must not exceed max_runtime_s", code: "too_big" }],
      });
    }
    const { db, sql: client } = c.get("pg");
    // The account stays locked from the quota check to the commit, and every round trip in between
    // delays the account's other submissions. So one statement, after the lock, writes the job, its
    // ledger row (this first attempt counted) and its audit row, and checks the account's payment
    // hold and quota (from a snapshot taken after the lock, without the new job); held or over the
    // quota, the transaction rolls it all back. The id is chosen here so the three inserts need not
    // wait for one another; with an Idempotency-Key, the key chose it, so a retry that took over the
    // key of a request that died after its commit finds that job instead of making a second.
    const made = c.get("idempotentId");
    const id = made ?? crypto.randomUUID();
    const ledger = db.$with("ledger", {}).as(
      db
        .insert(jobSubmissions)
        .values(inlineRow(jobSubmissions, { jobId: id, region, attempts: 1, lastAttemptAt: new Date() }))
        .getSQL(),
    );
    const audited = db.$with("audited", {}).as(
      db
        .insert(auditLog)
        .values(
          inlineRow(
            auditLog,
            auditRow(caller, account.id, {
              action: "job.submitted",
              targetType: "job",
              targetId: id,
              data: { region, tier: body.tier, gpu_count: body.gpu_count, request_id: c.get("requestId") },
            }),
          ),
        )
        .getSQL(),
    );
    const values = inlineRow(jobs, {
      id,
      accountId: account.id,
      createdBy: caller.kind === "user" ? caller.userId : null,
      createdByKey: caller.apiKey?.id ?? null,
      region,
      tier: body.tier,
      priority: body.priority,
      // Secret values sealed (workers/auth/env-secrets.ts): only their ciphertext reaches Postgres.
      ...workloadColumns({ ...body, env: await sealEnv(c.env, account.id, body.env) }),
      maxRuntimeS: body.max_runtime_s,
      estimatedDurationS: body.estimated_duration_s ?? null,
      maxAttempts: body.max_attempts,
      labels: body.labels,
    });
    const demand = jobDemand(body);
    let row: JobRow;
    startTime(c, "write", "job stored: account lock + quota + insert + commit");
    const oneTrip =
      account.monthlySpendCapCents === null
        ? db
            .with(ledger, audited)
            .insert(jobs)
            .values(values)
            .returning({
              ...getTableColumns(jobs),
              holdOk: paymentHoldCheck(account.id),
              quotaOk: gpuQuotaCheck(account, demand.gpus),
            })
            .toSQL()
        : null;
    try {
      if (oneTrip && oneTrip.params.length === 0) {
        // No spend cap: the quota is the GPU count, which the statement checks itself (check_gpu_quota
        // raises over the limit, check_payment_hold while held), so BEGIN, the lock, the insert and
        // COMMIT leave together and the lock is held for no round trip at all.
        [row] = mapColumns<JobRow>(
          getTableColumns(jobs),
          await pipelinedWrite(client, lockAccountStatement(account.id), oneTrip.sql),
        ) as [JobRow];
      } else {
        // A spend cap (priced with core/pricing, here): the quota is checked between the insert and
        // the COMMIT.
        row = await pipelinedTransaction(client, lockAccountStatement(account.id), async () => {
          const quota = db.$with("quota", {}).as(quotaGroupsQuery(account.id));
          const [inserted] = await db
            .with(ledger, audited, quota)
            .insert(jobs)
            .values(values)
            .returning({
              ...getTableColumns(jobs),
              holdOk: paymentHoldCheck(account.id),
              quota: sql<QuotaGroup[]>`(select coalesce(json_agg(quota), '[]'::json) from quota)`,
            });
          const { quota: groups, holdOk: _held, ...job } = inserted!;
          checkQuota(account, quotaUseOf(groups), demand, readsBilling(caller));
          return job;
        });
      }
    } catch (error) {
      // 23505: the job's id, which the Idempotency-Key chose, is taken (by the request that died).
      if (made && pgError(error)?.code === "23505") {
        const existing = await loadJob(db, account.id, id).catch(() => null);
        if (existing) {
          c.header("Idempotency-Replayed", "true");
          return respond(c, Job, jobView(existing), 202);
        }
      }
      throw paymentHoldError(error, readsBilling(caller)) ?? gpuQuotaError(account, demand, error) ?? error;
    }
    endTime(c, "write");
    startTime(c, "schedule", "handed to the region scheduler and acknowledged");
    const submitted = await submitJob(c.env, db, row, c.get("log"), { attemptCounted: true });
    endTime(c, "schedule");
    const current =
      submitted.outcome === "acked" || submitted.outcome === "failed" ? row : await loadJob(db, account.id, row.id);
    if (submitted.outcome === "rejected") {
      throw new ApiError(422, "job_rejected", current.failureReason ?? "the scheduler rejected the job", {
        job_id: row.id,
      });
    }
    // The scheduler's answer (status, placement or why it waits) is fresher than the row, which its
    // outbox updates a moment later.
    if (submitted.outcome !== "acked") return respond(c, Job, jobView(current), 202);
    return respond(c, Job, { ...jobView(current, submitted.state), status: submitted.status }, 202);
  },
);

jobsRouter.openapi(
  createRoute({
    method: "get",
    path: "/v1/jobs",
    tags: ["Jobs"],
    summary: "List jobs",
    description: "Newest first. Filters combine with AND.",
    security: BEARER,
    middleware: guard({ scope: "jobs:read" }),
    request: { query: ListJobsQuery },
    responses: {
      200: { description: "A page of jobs.", content: { "application/json": { schema: JobPage } } },
      ...errors(),
    },
  }),
  async (c) => {
    const account = requireAccount(c.get("caller"));
    const q = c.req.valid("query");
    const cursor = decodeTimeCursor(q.cursor);
    const where: SQL[] = [eq(jobs.accountId, account.id)];
    if (q.status) where.push(inArray(jobs.status, q.status.split(",")));
    if (q.tier) where.push(eq(jobs.tier, q.tier));
    // A region never served is a typo, not an empty list (as a submission to it is refused).
    if (q.region) where.push(eq(jobs.region, servedRegion(c.env, q.region, "region", "query")));
    for (const selector of q.label === undefined ? [] : Array.isArray(q.label) ? q.label : [q.label]) {
      const at = selector.indexOf(":");
      const labels = { [selector.slice(0, at)]: selector.slice(at + 1) };
      where.push(sql`${jobs.labels} @> ${JSON.stringify(labels)}::jsonb`);
    }
    if (q.created_after) where.push(gte(jobs.createdAt, new Date(q.created_after)));
    if (q.created_before) where.push(lte(jobs.createdAt, new Date(q.created_before)));
    if (cursor) {
      where.push(beforeCursor(jobs.createdAt, jobs.id, cursor));
    }
    const rows = await c
      .get("pg")
      .db.select({ job: jobs, t: cursorTime(jobs.createdAt) })
      .from(jobs)
      .where(and(...where))
      .orderBy(desc(jobs.createdAt), desc(jobs.id))
      .limit(q.limit + 1);
    const p = page(rows, q.limit, (r) => encodeTimeCursor(r.t, r.job.id));
    return respond(c, JobPage, { data: p.data.map((r) => jobView(r.job)), next_cursor: p.next_cursor }, 200);
  },
);

jobsRouter.openapi(
  createRoute({
    method: "get",
    path: "/v1/jobs/{id}",
    tags: ["Jobs"],
    summary: "Get a job",
    description:
      "Status, placements and attempts. While the job is live the region scheduler's view is shown, including why a queued job is waiting.",
    security: BEARER,
    middleware: guard({ scope: "jobs:read" }),
    request: { params: IdParam },
    responses: { 200: { description: "The job.", content: { "application/json": { schema: Job } } }, ...errors(404) },
  }),
  async (c) => {
    const account = requireAccount(c.get("caller"));
    const db = c.get("pg").db;
    const row = await loadJob(db, account.id, c.req.valid("param").id);
    let live = null;
    if (!TERMINAL_JOB_STATUSES.includes(row.status as JobStatus)) {
      live = await schedulerOf(c.env, row.region)
        .jobState(row.id)
        .catch((error: unknown) => {
          c.get("log").warn("job.state_unavailable", { job_id: row.id, error: String(error) });
          return null;
        });
    }
    // The scheduler's placements, when it has some, are the fresher: then the stored runs are not read.
    const runs = live && live.placements.length > 0 ? [] : await jobRunsOf(db, row.id);
    return respond(c, Job, jobView(row, live, runs), 200);
  },
);

jobsRouter.openapi(
  createRoute({
    method: "post",
    path: "/v1/jobs/{id}/cancel",
    tags: ["Jobs"],
    summary: "Cancel a job",
    description:
      "A queued job is cancelled at once; a placed or running one is marked `cancelled` at once and its node's agent stops the container (grace period, then kill). Cancelling a cancelled job returns it unchanged; a finished job is 409 `job_finished`. With the region's scheduler unreachable, only a job it never acknowledged is cancelled (the cancel is passed on once it answers); otherwise 503 `scheduler_unavailable`: retry.",
    security: BEARER,
    middleware: guard({ scope: "jobs:write" }),
    request: { params: IdParam, headers: IdempotencyHeaders },
    responses: {
      200: { description: "The job after the request.", content: { "application/json": { schema: Job } } },
      ...errors(404, 409, 503),
    },
  }),
  async (c) => {
    const caller = c.get("caller");
    const account = requireAccount(caller);
    const db = c.get("pg").db;
    const row = await loadJob(db, account.id, c.req.valid("param").id);
    if (row.status === "cancelled") return respond(c, Job, jobView(row), 200);
    if (TERMINAL_JOB_STATUSES.includes(row.status as JobStatus)) {
      throw new ApiError(409, "job_finished", `job already ${row.status}`, { status: row.status });
    }
    const scheduler = schedulerOf(c.env, row.region);
    let result: CancelResult | null = null;
    try {
      result = await scheduler.cancel(row.id);
    } catch (error) {
      c.get("log").warn("job.cancel_unavailable", { job_id: row.id, error: String(error) });
      // Only a job that cannot be running anywhere may be cancelled without the scheduler: one it
      // has acknowledged may be placed there already, though Postgres still says queued.
      if (row.status !== "queued" || (await acknowledged(db, row.id))) {
        throw new ApiError(503, "scheduler_unavailable", "the region's scheduler is unreachable; retry shortly");
      }
    }
    if (result && !result.ok && result.code === "already_finished" && result.status !== "cancelled") {
      throw new ApiError(409, "job_finished", `job already ${result.status ?? "finished"}`, { status: result.status });
    }
    let current = row;
    // Cancelled there, now or by an earlier cancel (one whose answer or Postgres update was lost, or
    // one running at the same time): so here too. A running job's agent stops it and the scheduler's
    // outbox records its end when it has.
    if (result?.ok || result?.status === "cancelled") {
      if (result.status === "cancelled")
        current =
          (await markCancelled(db, row, ["queued", "placed", "running"])) ?? (await loadJob(db, account.id, row.id));
    } else {
      // Unknown to the scheduler or unreachable, never acknowledged: cancel the row, then tell the
      // scheduler once more in case a submission reached it meanwhile. The ledger stays
      // unacknowledged until the scheduler has heard it (the reconciler passes it on: forwardCancels).
      current = (await markCancelled(db, row, ["queued"])) ?? (await loadJob(db, account.id, row.id));
      await scheduler.cancel(row.id).catch(() => null);
    }
    await audit(db, caller, account.id, {
      action: "job.cancel_requested",
      targetType: "job",
      targetId: row.id,
      data: { status_before: row.status, status_after: current.status },
    });
    return respond(c, Job, jobView(current), 200);
  },
);

/** Whether the region's scheduler has acknowledged the job (the submission ledger's `acked_at`). */
async function acknowledged(db: Db, jobId: string): Promise<boolean> {
  const [ledger] = await db
    .select({ ackedAt: jobSubmissions.ackedAt })
    .from(jobSubmissions)
    .where(eq(jobSubmissions.jobId, jobId));
  return ledger?.ackedAt != null;
}

async function markCancelled(db: Db, row: JobRow, from: JobStatus[]): Promise<JobRow | undefined> {
  const [updated] = await db
    .update(jobs)
    .set({ status: "cancelled", finishedAt: new Date(), waitingReason: null })
    .where(and(eq(jobs.id, row.id), inArray(jobs.status, from)))
    .returning();
  return updated;
}
