/**
 * The autoscaler as a cron task: every minute, one capacity cycle per region served, each with its
 * own database session; a region that fails is logged and the others go on. Without an SF Compute
 * token (SF_API_KEY) there is no market to act on, and the task says so and does nothing.
 */

import { schedulerOf } from "../api/scheduler";
import type { CronTrigger } from "../cron";
import type { DbBinding } from "../db/client";
import { withDb } from "../db/client";
import { errorFields, type Logger } from "../http/log";
import { regionsOf } from "../regions";
import { sfComputeClientFromEnv } from "../sfcompute/client";
import {
  type CapacityKnobs,
  capacityClock,
  capacityConfigFromEnv,
  DEMAND_WINDOW,
  type IngressKnobs,
  nodeIngressFromEnv,
} from "./config";
import { type CycleReport, CycleSkipped, runCapacityCycle } from "./manager";

export interface CapacityEnv extends DbBinding, CapacityKnobs, IngressKnobs {
  REGIONS: string;
  SF_API_KEY?: string;
  SF_API_BASE_URL?: string;
  /** The control plane's public URL, written into each node's cloud-init for its agent. */
  SCALAR_AGENT_API_URL?: string;
  /** Where to buy when no quote names a zone (default hayesvalley). */
  CAPACITY_DEFAULT_ZONE?: string;
}

/** An 8-GPU H100 VM's CPU and memory as SF Compute delivers it, until the agent reports its own. */
export const H100_NODE_SHAPE = { cpuMilli: 208_000, memoryMib: 1_900_000 };

export async function runCapacityCron(
  env: Env & CapacityEnv,
  log: Logger,
  trigger?: CronTrigger,
): Promise<CycleReport[]> {
  if (!env.SF_API_KEY) {
    log.debug("capacity.no_market", { reason: "SF_API_KEY is not set" });
    return [];
  }
  // Misconfigured knobs stop the cycle with a clear error (logged as the task's failure).
  const config = capacityConfigFromEnv(env);
  const nodeIngress = nodeIngressFromEnv(env);
  const now = capacityClock(env, trigger?.scheduledTime);
  // Quotes too are held to 20 s an attempt (the client's own default for a quote is the CLI's 600 s,
  // a solver call): a cycle runs every minute and asks several quotes one after another, so a slow
  // market answer is skipped this minute (the policy plans without that quote) rather than holding
  // the cycle for up to 20 minutes, past a cron invocation's 15-minute wall time.
  const client = sfComputeClientFromEnv(env, { timeoutMs: 20_000, quoteTimeoutMs: 20_000, retry: { maxAttempts: 2 } });
  const reports: CycleReport[] = [];
  for (const region of regionsOf(env)) {
    try {
      const report = await withDb(env, (db) =>
        runCapacityCycle(
          {
            db,
            client,
            scheduler: schedulerOf(env, region),
            log: log.child({ region }),
            now,
            config,
            demand: DEMAND_WINDOW,
            instanceType: "h100v",
            agentApiUrl: env.SCALAR_AGENT_API_URL ?? "http://127.0.0.1:8787",
            defaultZone: env.CAPACITY_DEFAULT_ZONE ?? "hayesvalley",
            nodeShape: H100_NODE_SHAPE,
            nodeIngress,
          },
          region,
        ),
      );
      reports.push(report);
    } catch (error) {
      if (error instanceof CycleSkipped) log.warn("capacity.cycle_skipped", { region, lease_until: error.until });
      else log.error("capacity.cycle_failed", { region, ...errorFields(error) });
    }
  }
  return reports;
}
