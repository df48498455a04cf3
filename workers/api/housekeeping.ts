/**
 * The API's cron tasks: the submission reconciler (queued jobs and endpoint specs the region
 * schedulers have not acknowledged) and the expiry of idempotency keys older than 24 h.
 */
import type { CronTask } from "../cron";
import { withDb } from "../db/client";
import { reconcileEndpoints } from "./endpoints";
import { recheckAcknowledged, reconcileSubmissions } from "./submission";

export const reconcileTask: CronTask = {
  name: "api.reconcile_submissions",
  run: (env, log) =>
    withDb(env, async (db) => ({
      jobs: await reconcileSubmissions(env, db, log),
      rechecked: await recheckAcknowledged(env, db, log),
      endpoints: await reconcileEndpoints(env, db, log),
    })),
};

export const expireIdempotencyKeysTask: CronTask = {
  name: "api.expire_idempotency_keys",
  run: (env) =>
    withDb(env, async (_db, sql) => {
      // Bounded per run, so a backlog drains over a few minutes instead of one long statement.
      const rows = await sql`delete from idempotency_keys where ctid in (
        select ctid from idempotency_keys where expires_at < now() limit 10000)`;
      return { deleted: rows.count };
    }),
};
