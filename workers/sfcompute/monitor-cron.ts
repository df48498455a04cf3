/** The market monitor as a cron task: one short database session; the client only when a token is set. */
import type { CapacityKnobs } from "../capacity/config";
import { type DbBinding, withDb } from "../db/client";
import type { Logger } from "../http/log";
import { sfComputeClientFromEnv } from "./client";
import { DEFAULT_EXPIRY_WARNING_MINUTES, type MarketMonitorReport, monitorPresent, runMarketMonitor } from "./monitor";

/** What the cron task reads from the Worker's environment. */
export interface MarketMonitorEnv extends DbBinding, Pick<CapacityKnobs, "CAPACITY_CLOCK"> {
  SF_API_KEY?: string;
  SF_API_BASE_URL?: string;
  /** Minutes before a block's end to warn about it (default 30). */
  SF_EXPIRY_WARNING_MINUTES?: string;
}

/** Its present: `monitorPresent` (the capacity cycle's clock). */
export function runMarketMonitorCron(
  env: MarketMonitorEnv,
  log: Logger,
  trigger?: { scheduledTime: number },
): Promise<MarketMonitorReport> {
  const minutes = Number(env.SF_EXPIRY_WARNING_MINUTES ?? DEFAULT_EXPIRY_WARNING_MINUTES);
  const client = env.SF_API_KEY ? sfComputeClientFromEnv(env, { timeoutMs: 10_000, retry: { maxAttempts: 2 } }) : null;
  if (!client) log.debug("sfcompute.monitor_without_client", { reason: "SF_API_KEY is not set" });
  return withDb(env, (db) =>
    runMarketMonitor(db, {
      now: monitorPresent(env, trigger?.scheduledTime),
      warningWindowMs: (Number.isFinite(minutes) && minutes > 0 ? minutes : DEFAULT_EXPIRY_WARNING_MINUTES) * 60_000,
      client,
      log,
    }),
  );
}
