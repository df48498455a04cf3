/** Checks of what callers hand the object: a clear message instead of a broken row. */
import { GPU_MODELS, isValidGpuCount, TIERS } from "../../core/schemas";
import type { EndpointSpec, SchedulerJob } from "./rpc";

const int = (x: unknown, lo: number, hi: number) => Number.isInteger(x) && (x as number) >= lo && (x as number) <= hi;
const strings = (x: unknown) => Array.isArray(x) && x.every((s) => typeof s === "string");
const envList = (x: unknown) =>
  Array.isArray(x) && x.every((e) => e && typeof e.name === "string" && typeof e.value === "string");

function resources(r: {
  gpu_count: unknown;
  gpu_models: unknown;
  cpu_milli: unknown;
  memory_mib: unknown;
  tier: unknown;
  image: unknown;
  command: unknown;
  args: unknown;
  env: unknown;
}): string | null {
  if (!TIERS.includes(r.tier as never)) return `tier must be one of ${TIERS.join(", ")}`;
  if (typeof r.gpu_count !== "number" || !isValidGpuCount(r.gpu_count)) {
    return "gpu_count must be 1 to 8, or a multiple of 8 up to 64";
  }
  if (!Array.isArray(r.gpu_models) || !r.gpu_models.every((m) => GPU_MODELS.includes(m))) {
    return `gpu_models must be a list of ${GPU_MODELS.join(", ")}`;
  }
  if (!int(r.cpu_milli, 1, 1_000_000)) return "cpu_milli must be a positive integer";
  if (!int(r.memory_mib, 1, 16_777_216)) return "memory_mib must be a positive integer";
  if (typeof r.image !== "string" || r.image.length === 0) return "image is required";
  if (!strings(r.command) || !strings(r.args)) return "command and args must be lists of strings";
  if (!envList(r.env)) return "env must be a list of { name, value }";
  return null;
}

export function validateJob(job: SchedulerJob): string | null {
  if (typeof job.id !== "string" || job.id.length === 0 || job.id.length > 128) return "id must be 1–128 characters";
  if (typeof job.account_id !== "string" || job.account_id.length === 0) return "account_id is required";
  if (!int(job.priority, -1000, 1000)) return "priority must be an integer from -1000 to 1000";
  if (job.estimated_duration_s !== null && !int(job.estimated_duration_s, 1, 2_592_000)) {
    return "estimated_duration_s must be null or 1 to 2,592,000";
  }
  if (!int(job.max_runtime_s, 1, 2_592_000)) return "max_runtime_s must be 1 to 2,592,000";
  if (!int(job.max_attempts, 1, 20)) return "max_attempts must be 1 to 20";
  if (!Number.isFinite(job.submitted_at)) return "submitted_at must be epoch milliseconds";
  return resources(job);
}

export function validateEndpoint(spec: EndpointSpec): string | null {
  if (typeof spec.id !== "string" || spec.id.length === 0 || spec.id.length > 100) return "id must be 1–100 characters";
  if (typeof spec.account_id !== "string" || spec.account_id.length === 0) return "account_id is required";
  if (!isVersion(spec.version)) return "version must be a positive integer";
  if (!int(spec.min_replicas, 0, 64) || !int(spec.max_replicas, 0, 64) || spec.min_replicas > spec.max_replicas) {
    return "replicas: 0 ≤ min_replicas ≤ max_replicas ≤ 64";
  }
  if (spec.startup_timeout_s !== undefined && !int(spec.startup_timeout_s, 10, 86_400)) {
    return "startup_timeout_s must be 10 to 86,400";
  }
  if (spec.target_concurrency !== undefined && !int(spec.target_concurrency, 1, 1_000)) {
    return "target_concurrency must be 1 to 1,000";
  }
  if (spec.scale_down_delay_s !== undefined && !int(spec.scale_down_delay_s, 0, 86_400)) {
    return "scale_down_delay_s must be 0 to 86,400";
  }
  if (spec.gpu_count > 8) return "an endpoint replica takes at most one node (gpu_count ≤ 8)";
  return resources(spec);
}

/** An endpoint's version as Postgres numbers it (an integer column, from 1). */
export function isVersion(x: unknown): boolean {
  return int(x, 1, 2_147_483_647);
}
