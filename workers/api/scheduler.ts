/**
 * The region scheduler as the API sees it: the RPC contract of
 * `durable-objects/region-scheduler/rpc.ts`, called through the named stub of `workers/regions.ts`.
 */
import type { RegionSchedulerRpc } from "../../durable-objects/region-scheduler/rpc";
import { ApiError } from "../http/errors";
import { regionScheduler, regionsOf } from "../regions";

export function schedulerOf(env: Env, region: string): RegionSchedulerRpc {
  return regionScheduler(env, region) as unknown as RegionSchedulerRpc;
}

/** The region a request names (or the first served), refused with the field named if not served. */
export function servedRegion(env: Env, requested: string | undefined, field = "region"): string {
  const served = regionsOf(env);
  const region = requested ?? served[0];
  if (!region || !served.includes(region)) {
    throw new ApiError(400, "invalid_request", `${field}: not a region served here (${served.join(", ")})`, {
      location: "body",
      fields: [{ field, message: `one of ${served.join(", ")}`, code: "unknown_region" }],
    });
  }
  return region;
}

/**
 * A scheduler call whose failure the caller cannot absorb (the agent routes, operator actions):
 * a thrown RPC error becomes a 503 in the envelope, with a hint to retry.
 */
export async function viaScheduler<T>(region: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw new ApiError(
      503,
      "scheduler_unavailable",
      `the ${region} scheduler did not answer; retry shortly`,
      { region, cause: error instanceof Error ? error.message.slice(0, 200) : String(error) },
      { "Retry-After": "2" },
    );
  }
}
