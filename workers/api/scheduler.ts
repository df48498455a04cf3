/**
 * The region scheduler as the API sees it: the RPC contract of
 * `durable-objects/region-scheduler/rpc.ts`, called through the named stub of `workers/regions.ts`.
 */
import type { GpuModel } from "../../core/schemas";
import type { RegionSchedulerRpc } from "../../durable-objects/region-scheduler/rpc";
import { CAPACITY_CONFIG } from "../capacity/config";
import { ApiError } from "../http/errors";
import { regionScheduler, regionsOf } from "../regions";

export function schedulerOf(env: Env, region: string): RegionSchedulerRpc {
  return regionScheduler(env, region) as unknown as RegionSchedulerRpc;
}

/** The region a request names (or the first served), refused with the field named if not served. */
export function servedRegion(
  env: Env,
  requested: string | undefined,
  field = "region",
  location: "body" | "query" = "body",
): string {
  const served = regionsOf(env);
  const region = requested ?? served[0];
  if (!region || !served.includes(region)) {
    throw new ApiError(400, "invalid_request", `${field}: not a region served here (${served.join(", ")})`, {
      location,
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

/**
 * Work that allows only GPU models the region neither has nor buys would wait for ever: refused
 * instead, naming what it could allow. The region's nodes are asked only in that rare case (any
 * model, or the model the capacity manager buys, passes without a call).
 */
export async function requireGpuModels(env: Env, region: string, allowed: readonly GpuModel[]): Promise<void> {
  const bought = CAPACITY_CONFIG.gpuModel;
  if (allowed.length === 0 || allowed.includes(bought)) return;
  const snapshot = await viaScheduler(region, () => schedulerOf(env, region).capacitySnapshot());
  const present = snapshot.by_model.filter((m) => m.total_gpus > 0).map((m) => m.gpu_model);
  if (allowed.some((m) => present.includes(m))) return;
  const possible = [...new Set([bought, ...present])].join(", ");
  throw new ApiError(
    422,
    "gpu_model_unavailable",
    `gpu_models: ${region} has no ${allowed.join(" or ")} GPUs and buys ${bought} only; allow ${possible}, or leave gpu_models empty for any`,
    {
      location: "body",
      fields: [{ field: "gpu_models", message: `one of ${possible}`, code: "gpu_model_unavailable" }],
    },
  );
}
