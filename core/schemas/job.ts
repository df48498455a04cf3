import { z } from "zod";
import { GPUS_PER_NODE, GpuModel } from "./common";

/** Lifecycle of a job as users see it. `failed` jobs that exhausted their attempts also sit in the dead-letter list. */
export const JOB_STATUSES = ["queued", "placed", "running", "succeeded", "failed", "cancelled"] as const;
export const JobStatus = z.enum(JOB_STATUSES);
export type JobStatus = z.infer<typeof JobStatus>;
export const TERMINAL_JOB_STATUSES: readonly JobStatus[] = ["succeeded", "failed", "cancelled"];

/** Lifecycle of one attempt (a run) of a job on a node. */
export const RUN_STATUSES = ["placed", "pulling", "running", "succeeded", "failed", "cancelled", "lost"] as const;
export const RunStatus = z.enum(RUN_STATUSES);
export type RunStatus = z.infer<typeof RunStatus>;

/** Up to one node's worth of GPUs, or whole nodes (gang placement in one zone). */
export const MAX_GPUS_PER_JOB = 64;
export function isValidGpuCount(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= MAX_GPUS_PER_JOB && (n <= GPUS_PER_NODE || n % GPUS_PER_NODE === 0);
}

/**
 * The resources and placement constraints of a unit of work, shared by the API, the scheduler and
 * the agent. CPU in millicores, memory in MiB, times in seconds.
 */
export const ResourceRequest = z.object({
  gpu_count: z
    .number()
    .int()
    .refine(isValidGpuCount, {
      message: `1 to ${GPUS_PER_NODE} GPUs on one node, or a multiple of ${GPUS_PER_NODE} up to ${MAX_GPUS_PER_JOB}`,
    }),
  gpu_models: z.array(GpuModel).max(8).default([]),
  cpu_milli: z.number().int().min(100).max(256_000).default(4_000),
  memory_mib: z.number().int().min(64).max(2_097_152).default(16_384),
});
export type ResourceRequest = z.infer<typeof ResourceRequest>;

export const EnvVar = z.object({
  name: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, "an environment variable name"),
  value: z.string().max(32_768),
  secret: z.boolean().default(false),
});
export type EnvVar = z.infer<typeof EnvVar>;

export const ImageRef = z
  .string()
  .min(1)
  .max(512)
  // Any case written out, not with the i flag, which the OpenAPI pattern cannot carry.
  .regex(/^[a-zA-Z0-9][a-zA-Z0-9._\-/:@]*$/, "a container image reference such as registry/repo:tag");
