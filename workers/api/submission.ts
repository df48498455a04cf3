/**
 * Handing jobs to their region's scheduler. The `jobs` row (`queued`) is written first; then
 * `submit(job)`, idempotent by job id. If the call fails the job stays queued and the reconciler
 * (a cron task) submits it again. The ledger `job_submissions` records which jobs the scheduler has
 * acknowledged. A cancel that lands while a submission is in flight is caught by re-reading the
 * job's status after the call (see docs/api.md, "Submission").
 */
import { and, asc, eq, inArray, isNotNull, isNull, lt, sql } from "drizzle-orm";
import type { JobStatus, Tier } from "../../core/schemas";
import type { JobState, SchedulerJob } from "../../durable-objects/region-scheduler/rpc";
import { openEnv, SecretKeyError } from "../auth/env-secrets";
import type { Db } from "../db/client";
import { literal } from "../db/round-trips";
import { jobSubmissions, jobs } from "../db/schema";
import { errorFields, type Logger } from "../http/log";
import { regionsOf } from "../regions";
import { schedulerOf } from "./scheduler";
import { type JobRow, schedulerWorkload } from "./views";

/** The job as its scheduler takes it, secret values opened. Throws SecretKeyError. */
export async function schedulerJob(env: Env, row: JobRow): Promise<SchedulerJob> {
  return {
    id: row.id,
    account_id: row.accountId,
    tier: row.tier as Tier,
    priority: row.priority,
    ...schedulerWorkload(row, await openEnv(env, row.accountId, row.env)),
    estimated_duration_s: row.estimatedDurationS,
    max_runtime_s: row.maxRuntimeS,
    max_attempts: row.maxAttempts,
    submitted_at: row.createdAt.getTime(),
  };
}

/**
 * `acked` carries the status the scheduler gave the job (e.g. `placed` when capacity was free) and
 * its live state then (the placement, or why it waits).
 */
export type SubmitOutcome =
  | { outcome: "acked"; status: JobStatus; state: JobState | null }
  | { outcome: "rejected" | "failed" | "cancelled" };

/**
 * Submit one stored job; never throws (a failure leaves the job queued for the reconciler).
 * `attemptCounted`: the caller already counted this attempt in the ledger (the submitting request
 * does, in the transaction that writes the job).
 */
export async function submitJob(
  env: Env,
  db: Db,
  row: JobRow,
  log: Logger,
  opts: { attemptCounted?: boolean } = {},
): Promise<SubmitOutcome> {
  const scheduler = schedulerOf(env, row.region);
  let status: JobStatus = "queued";
  let state: JobState | null = null;
  let statusNow: string | undefined;
  if (!opts.attemptCounted) {
    await db
      .update(jobSubmissions)
      .set({ attempts: sql`${jobSubmissions.attempts} + 1`, lastAttemptAt: new Date() })
      .where(eq(jobSubmissions.jobId, row.id));
  }
  try {
    // A job whose secrets cannot be opened (a key removed from ENV_SECRETS_KEYS, an altered row) could
    // never run: it fails now, with the reason, instead of waiting in the reconciler for ever.
    let unopened = "";
    const job = await schedulerJob(env, row).catch((error: unknown) => {
      if (!(error instanceof SecretKeyError)) throw error;
      unopened = error.message;
      return null;
    });
    const result = job ? await scheduler.submit(job) : { ok: false as const, message: unopened };
    if (!result.ok) {
      await db.transaction(async (tx) => {
        await tx
          .update(jobs)
          .set({
            status: "failed",
            failureReason: job
              ? `rejected by the scheduler: ${result.message}`
              : `its secret environment values cannot be opened: ${result.message}`,
            finishedAt: new Date(),
          })
          .where(and(eq(jobs.id, row.id), eq(jobs.status, "queued")));
        await tx
          .update(jobSubmissions)
          .set({ ackedAt: new Date(), lastError: result.message })
          .where(eq(jobSubmissions.jobId, row.id));
      });
      return { outcome: "rejected" };
    }
    // The acknowledgement and the re-read of the job's status, in one statement (the id inlined:
    // without parameters it is one round trip). A job cancelled meanwhile is not acknowledged: its
    // cancel still has to reach the scheduler, and the ledger row left open is what makes the
    // reconciler pass it on (forwardCancels) if the call below fails or never happens.
    const id = sql.raw(literal(row.id));
    const [now] = await db.execute<{ status: string }>(sql`
      with job as (select status from ${jobs} where id = ${id}),
      acked as (
        update ${jobSubmissions}
        set acked_at = case when (select status from job) = 'cancelled' then null else now() end, last_error = null
        where job_id = ${id}
      )
      select status from job`);
    status = result.status;
    state = result.state ?? null;
    statusNow = now?.status;
  } catch (error) {
    log.warn("job.submit_failed", { job_id: row.id, region: row.region, ...errorFields(error) });
    await db
      .update(jobSubmissions)
      .set({ lastError: error instanceof Error ? error.message.slice(0, 1000) : String(error) })
      .where(eq(jobSubmissions.jobId, row.id))
      .catch(() => {});
    return { outcome: "failed" };
  }
  // A cancel that ran while the call was in flight found nothing to cancel there: pass it on now,
  // and close the ledger row once the scheduler has it (else forwardCancels passes it on).
  if (statusNow === "cancelled") {
    try {
      await scheduler.cancel(row.id);
      await db.update(jobSubmissions).set({ ackedAt: new Date() }).where(eq(jobSubmissions.jobId, row.id));
    } catch (error) {
      log.warn("job.cancel_forward_failed", { job_id: row.id, ...errorFields(error) });
    }
    return { outcome: "cancelled" };
  }
  return { outcome: "acked", status, state };
}

/** Jobs younger than this are left to the request that created them. */
const GRACE_SECONDS = 15;
const BATCH = 100;

/** Cron task: submit again the queued jobs no scheduler has acknowledged. */
export async function reconcileSubmissions(
  env: Env,
  db: Db,
  log: Logger,
): Promise<{ submitted: number; acked: number }> {
  const pending = await db
    .select({ job: jobs })
    .from(jobSubmissions)
    .innerJoin(jobs, eq(jobs.id, jobSubmissions.jobId))
    .where(
      and(
        isNull(jobSubmissions.ackedAt),
        eq(jobs.status, "queued"),
        inArray(jobs.region, regionsOf(env)),
        lt(jobs.createdAt, sql`now() - make_interval(secs => ${GRACE_SECONDS})`),
      ),
    )
    .orderBy(asc(jobs.createdAt))
    .limit(BATCH);
  let acked = 0;
  for (const { job } of pending) {
    const outcome = await submitJob(env, db, job, log);
    if (outcome.outcome !== "failed") acked += 1;
  }
  if (pending.length > 0) log.info("reconcile.submissions", { pending: pending.length, acked });
  return { submitted: pending.length, acked };
}

/**
 * Cron task: jobs cancelled in Postgres that their scheduler never acknowledged (cancelled while it
 * was unreachable, or while their submission was in flight and its answer, or its forward of the
 * cancel, lost) may still be queued there, where nothing would ever stop them. Each such cancel
 * is passed on until the scheduler answers; its answer, whatever it is (cancelled there, unknown,
 * already finished), closes the ledger row.
 */
export async function forwardCancels(env: Env, db: Db, log: Logger): Promise<{ forwarded: number }> {
  const pending = await db
    .select({ id: jobs.id, region: jobs.region })
    .from(jobSubmissions)
    .innerJoin(jobs, eq(jobs.id, jobSubmissions.jobId))
    .where(and(isNull(jobSubmissions.ackedAt), eq(jobs.status, "cancelled"), inArray(jobs.region, regionsOf(env))))
    .orderBy(asc(jobs.createdAt))
    .limit(BATCH);
  let forwarded = 0;
  for (const job of pending) {
    try {
      const result = await schedulerOf(env, job.region).cancel(job.id);
      await db
        .update(jobSubmissions)
        .set({ ackedAt: new Date(), lastError: null, lastAttemptAt: new Date() })
        .where(eq(jobSubmissions.jobId, job.id));
      if (result.ok) log.warn("reconcile.cancel_forwarded", { job_id: job.id, region: job.region });
      forwarded += 1;
    } catch (error) {
      await db
        .update(jobSubmissions)
        .set({ lastError: error instanceof Error ? error.message.slice(0, 1000) : String(error) })
        .where(eq(jobSubmissions.jobId, job.id));
    }
  }
  return { forwarded };
}

/** Acknowledged jobs still queued are checked again this long after their last check. */
const RECHECK_MINUTES = 10;
const RECHECK_BATCH = 50;

/**
 * Cron task, the slow half: a job the scheduler acknowledged is durable there, unless its state was
 * lost (e.g. a wiped local object). A few of the longest-unchecked queued jobs are asked about each
 * run; one the scheduler does not know is submitted again.
 */
export async function recheckAcknowledged(
  env: Env,
  db: Db,
  log: Logger,
): Promise<{ checked: number; resubmitted: number }> {
  const due = await db
    .select({ job: jobs })
    .from(jobSubmissions)
    .innerJoin(jobs, eq(jobs.id, jobSubmissions.jobId))
    .where(
      and(
        isNotNull(jobSubmissions.ackedAt),
        eq(jobs.status, "queued"),
        inArray(jobs.region, regionsOf(env)),
        lt(
          sql`coalesce(${jobSubmissions.lastAttemptAt}, ${jobSubmissions.ackedAt})`,
          sql`now() - make_interval(mins => ${RECHECK_MINUTES})`,
        ),
      ),
    )
    .orderBy(asc(sql`coalesce(${jobSubmissions.lastAttemptAt}, ${jobSubmissions.ackedAt})`))
    .limit(RECHECK_BATCH);
  let resubmitted = 0;
  for (const { job } of due) {
    const state = await schedulerOf(env, job.region)
      .jobState(job.id)
      .catch(() => undefined);
    if (state === undefined) continue; // unreachable: ask again next run
    if (state === null) {
      log.warn("reconcile.lost_job", { job_id: job.id, region: job.region });
      await submitJob(env, db, job, log);
      resubmitted += 1;
    } else {
      await db.update(jobSubmissions).set({ lastAttemptAt: new Date() }).where(eq(jobSubmissions.jobId, job.id));
    }
  }
  return { checked: due.length, resubmitted };
}
