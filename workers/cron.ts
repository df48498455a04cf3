/**
 * Cron Triggers: each expression of `wrangler.toml` maps to a list of idempotent tasks. A failing task
 * is logged and does not stop the others.
 */
import { expireIdempotencyKeysTask, expireJobLogsTask, reconcileTask } from "./api/housekeeping";
import { runBilling, stripeOf, undeliveredUsageOf } from "./billing/invoices";
import { paymentHoldsTask } from "./billing/reconcile";
import { runCapacityCron } from "./capacity/cron";
import { withDb } from "./db/client";
import { createLogger, errorFields, type Logger } from "./http/log";
import { runMarketMonitorCron } from "./sfcompute/monitor-cron";

/** What fired the cron: `scheduledTime` is the trigger's own time (`controller.scheduledTime`), epoch ms. */
export interface CronTrigger {
  scheduledTime: number;
}

export type CronTask = { name: string; run: (env: Env, log: Logger, trigger: CronTrigger) => Promise<unknown> };

export const EVERY_MINUTE = "* * * * *";
/**
 * Hourly, at minute 17: the monthly invoices (workers/billing), due from an hour into a month, and
 * the payment holds of accounts with an invoice unpaid past its grace.
 */
export const HOURLY = "17 * * * *";

/** What runs on which schedule. */
export const CRON_TASKS: Record<string, CronTask[]> = {
  [EVERY_MINUTE]: [
    { name: "sfcompute.market-monitor", run: (env, log, trigger) => runMarketMonitorCron(env, log, trigger) },
    reconcileTask,
    expireIdempotencyKeysTask,
    expireJobLogsTask,
    { name: "capacity.autoscaler", run: (env, log, trigger) => runCapacityCron(env, log, trigger) },
  ],
  [HOURLY]: [
    {
      name: "billing.invoices",
      run: (env, log, trigger) =>
        withDb(env, (db) =>
          runBilling({
            db,
            stripe: stripeOf(env),
            now: trigger.scheduledTime,
            log,
            undeliveredUsage: undeliveredUsageOf(env, log),
          }),
        ),
    },
    paymentHoldsTask,
  ],
};

export async function dispatchCron(
  cron: string,
  env: Env,
  tasks: Record<string, CronTask[]> = CRON_TASKS,
  trigger: CronTrigger = { scheduledTime: Date.now() },
): Promise<{ cron: string; results: { task: string; ok: boolean; error?: string }[] }> {
  const log = createLogger(env.LOG_LEVEL, { cron });
  const list = tasks[cron];
  if (!list) {
    log.warn("cron.unknown_expression", { known: Object.keys(tasks) });
    return { cron, results: [] };
  }
  const results = await Promise.all(
    list.map(async (task) => {
      const started = Date.now();
      try {
        await task.run(env, log.child({ task: task.name }), trigger);
        log.info("cron.task_done", { task: task.name, duration_ms: Date.now() - started });
        return { task: task.name, ok: true };
      } catch (error) {
        log.error("cron.task_failed", { task: task.name, ...errorFields(error) });
        return { task: task.name, ok: false, error: error instanceof Error ? error.message : String(error) };
      }
    }),
  );
  return { cron, results };
}
