/**
 * The API's cron tasks: the submission reconciler (queued jobs and endpoint specs the region
 * schedulers have not acknowledged), the expiry of idempotency keys older than 24 h, and the
 * retention of job logs (`LOG_RETENTION_DAYS`, default 30).
 */
import type { CronTask } from "../cron";
import { withDb } from "../db/client";
import type { Logger } from "../http/log";
import { reconcileEndpoints } from "./endpoints";
import { forwardCancels, recheckAcknowledged, reconcileSubmissions } from "./submission";

/** Rows deleted per statement; a few statements per run, so a backlog drains over some minutes. */
const EXPIRY_BATCH = 10_000;
const LOG_BATCHES_PER_RUN = 5;
export const DEFAULT_LOG_RETENTION_DAYS = 30;

export const reconcileTask: CronTask = {
  name: "api.reconcile_submissions",
  run: (env, log) =>
    withDb(env, async (db) => ({
      jobs: await reconcileSubmissions(env, db, log),
      rechecked: await recheckAcknowledged(env, db, log),
      cancels: await forwardCancels(env, db, log),
      endpoints: await reconcileEndpoints(env, db, log),
    })),
};

export const expireIdempotencyKeysTask: CronTask = {
  name: "api.expire_idempotency_keys",
  run: (env) =>
    withDb(env, async (_db, sql) => {
      // Bounded per run, so a backlog drains over a few minutes instead of one long statement.
      const rows = await sql`delete from idempotency_keys where ctid in (
        select ctid from idempotency_keys where expires_at < now() limit ${EXPIRY_BATCH})`;
      return { deleted: rows.count };
    }),
};

/** `LOG_RETENTION_DAYS`: whole days, 1–3650; anything else is the default (with a warning). */
export function logRetentionDays(value: string | undefined, log?: Logger): number {
  if (value === undefined || value === "") return DEFAULT_LOG_RETENTION_DAYS;
  const days = Number(value);
  if (Number.isInteger(days) && days >= 1 && days <= 3650) return days;
  log?.warn("config.invalid_log_retention", { value, using_days: DEFAULT_LOG_RETENTION_DAYS });
  return DEFAULT_LOG_RETENTION_DAYS;
}

/** Job log lines are kept for the retention period after they arrived, then deleted. */
export const expireJobLogsTask: CronTask = {
  name: "api.expire_job_logs",
  run: (env, log) =>
    withDb(env, async (_db, sql) => {
      const days = logRetentionDays(env.LOG_RETENTION_DAYS, log);
      let deleted = 0;
      for (let i = 0; i < LOG_BATCHES_PER_RUN; i++) {
        const rows = await sql`delete from job_logs where id in (
          select id from job_logs where received_at < now() - make_interval(days => ${days})
          order by received_at limit ${EXPIRY_BATCH})`;
        deleted += rows.count;
        if (rows.count < EXPIRY_BATCH) break;
      }
      return { deleted, retention_days: days };
    }),
};
