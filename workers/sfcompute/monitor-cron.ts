/** The market monitor as a cron task: one short database session; the client only when a token is set. */
import { type DbBinding, withDb } from "../db/client";
import type { Logger } from "../http/log";
import { sfComputeClientFromEnv } from "./client";
import { DEFAULT_EXPIRY_WARNING_MINUTES, type MarketMonitorReport, runMarketMonitor } from "./monitor";

/** What the cron task reads from the Worker's environment. */
export interface MarketMonitorEnv extends DbBinding {
  SF_API_KEY?: string;
  SF_API_BASE_URL?: string;
  /** Minutes before a block's end to warn about it (default 30). */
  SF_EXPIRY_WARNING_MINUTES?: string;
}

export function runMarketMonitorCron(env: MarketMonitorEnv, log: Logger): Promise<MarketMonitorReport> {
  const minutes = Number(env.SF_EXPIRY_WARNING_MINUTES ?? DEFAULT_EXPIRY_WARNING_MINUTES);
  const client = env.SF_API_KEY ? sfComputeClientFromEnv(env, { timeoutMs: 10_000, retry: { maxAttempts: 2 } }) : null;
  if (!client) log.debug("sfcompute.monitor_without_client", { reason: "SF_API_KEY is not set" });
  return withDb(env, (db) =>
    runMarketMonitor(db, {
      now: new Date(),
      warningWindowMs: (Number.isFinite(minutes) && minutes > 0 ? minutes : DEFAULT_EXPIRY_WARNING_MINUTES) * 60_000,
      client,
      log,
    }),
  );
}
