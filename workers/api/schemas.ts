/**
 * The public wire shapes of the v1 API (OpenAPI components). Request bodies are strict: an unknown
 * field is a 400 naming it. Times are RFC 3339 strings; money is integer cents.
 */
import { z } from "@hono/zod-openapi";
import {
  EnvVar,
  GpuModel,
  ImageRef,
  JobStatus,
  MAX_GPUS_PER_JOB,
  Region,
  ResourceRequest,
  Tier,
} from "../../core/schemas";
import { SCOPES } from "../auth/scopes";
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from "../http/pagination";

export const Uuid = z.uuid().openapi({ example: "3f1c2b0e-8a4d-4a57-9d1e-2c5b7f0a9e11" });
export const Timestamp = z.string().openapi({ format: "date-time", example: "2026-11-26T12:00:00.000Z" });
/**
 * A date-time a client sends (RFC 3339 with an offset), within the years Postgres stores: zod takes
 * `0000-01-01T00:00:00Z` and `9999-12-31T23:59:59-23:59` (year 10000 in UTC), which the database
 * would refuse with a 500.
 */
export const DateTimeInput = z.iso.datetime({ offset: true }).refine((v) => {
  const year = new Date(v).getUTCFullYear();
  return year >= 1 && year <= 9999;
}, "must be between years 1 and 9999 (UTC)");
export const Scope = z.enum(SCOPES).openapi("Scope");

export const ErrorEnvelope = z
  .object({
    error: z.object({
      code: z.string().openapi({ example: "invalid_request" }),
      message: z
        .string()
        .openapi({ example: "invalid body: gpu_count: 1 to 8 GPUs on one node, or a multiple of 8 up to 64" }),
      details: z.unknown().optional(),
      request_id: z.string().openapi({ example: "req_6c0f2f1d9b1e4f0c8d7a6b5c4d3e2f1a" }),
    }),
  })
  .openapi("Error");

const LABEL_KEY = /^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$/;
export const Labels = z
  .record(
    z.string().regex(LABEL_KEY, "a label key: lowercase letters, digits, . _ / -, at most 63"),
    z.string().max(256),
  )
  .refine((l) => Object.keys(l).length <= 32, "at most 32 labels")
  .openapi("Labels", { example: { team: "research", run: "sweep-7" } });

const EnvList = z
  .array(z.strictObject(EnvVar.shape))
  .max(128)
  .refine((env) => new Set(env.map((e) => e.name)).size === env.length, "environment variable names must be unique")
  .openapi({ description: "Values of entries with `secret: true` are never returned by any route." });

/** As the API returns an environment variable: no value when secret. */
export const EnvVarView = z
  .object({ name: z.string(), secret: z.boolean(), value: z.string().optional() })
  .openapi("EnvVar");

const Argv = z.array(z.string().max(4096)).max(256);

export const JobCreate = z
  .strictObject({
    image: ImageRef.openapi({ example: "ghcr.io/acme/train:1.4" }),
    command: Argv.default([]).openapi({ example: ["python", "train.py"] }),
    args: Argv.default([]),
    env: EnvList.default([]),
    gpu_count: ResourceRequest.shape.gpu_count.openapi({
      description: `1 to 8 GPUs on one node, or whole nodes (a multiple of 8, up to ${MAX_GPUS_PER_JOB}).`,
      example: 8,
    }),
    gpu_models: z.array(GpuModel).max(8).default([]).openapi({ description: "Allowed GPU models; empty means any." }),
    cpu_milli: ResourceRequest.shape.cpu_milli,
    memory_mib: ResourceRequest.shape.memory_mib,
    tier: Tier.optional().openapi({
      description:
        "`fast` starts in seconds (accounts entitled to it); `flex` waits for cheap capacity. Omitted: `fast` for an account entitled to it, else `flex` (the job says which).",
    }),
    priority: z.number().int().min(-1000).max(1000).default(0),
    max_runtime_s: z.number().int().min(1).max(2_592_000).default(3600),
    estimated_duration_s: z.number().int().min(1).max(2_592_000).optional(),
    max_attempts: z.number().int().min(1).max(20).default(3),
    region: Region.optional().openapi({ description: "Defaults to the first region served.", example: "us-west-1" }),
    labels: Labels.default({}),
  })
  .openapi("JobCreate");
export type JobCreate = z.infer<typeof JobCreate>;

export const PlacementMetrics = z
  .object({
    at: Timestamp.openapi({ description: "When the control plane received the heartbeat that measured it." }),
    cpu_pct: z.number().nullable().openapi({
      description: "CPU over the last heartbeat interval, in percent of one CPU (200: two CPUs busy).",
      example: 143.2,
    }),
    memory_bytes: z.number().nullable().openapi({ description: "Memory in use by the container.", example: 3.3e9 }),
    memory_limit_bytes: z
      .number()
      .nullable()
      .openapi({ description: "The container's memory limit (its `memory_mib`, in bytes).", example: 17_179_869_184 }),
    pids: z.number().int().nullable().openapi({ description: "Processes and threads in the container." }),
    gpus: z
      .array(
        z.object({
          index: z.number().int().openapi({ description: "The GPU's index on its node (one of `gpu_indices`)." }),
          utilisation_pct: z.number().nullable().openapi({ example: 87 }),
          memory_used_mib: z.number().nullable().openapi({ example: 62_668 }),
          memory_total_mib: z.number().nullable().openapi({ example: 81_559 }),
        }),
      )
      .openapi({
        description:
          "This placement's own GPUs, as nvidia-smi reports them; empty on a host without nvidia-smi. A figure the host did not report is null.",
      }),
  })
  .openapi("PlacementMetrics", {
    description:
      "A running placement's resource use at its node's latest heartbeat (one every ~10 s; `at` says when). Null before a heartbeat has measured its container, once it has ended, and after the region's scheduler restarts until the next heartbeat (it keeps them in memory only). A container figure is null when the agent had none (CPU needs two samples: null at the first heartbeat).",
  });
export type PlacementMetrics = z.infer<typeof PlacementMetrics>;

export const PlacementView = z
  .object({
    placement_id: z.string(),
    node_id: z.string(),
    zone: z.string(),
    gpu_indices: z.array(z.number().int()),
    attempt: z.number().int(),
    node_rank: z.number().int().openapi({
      description: "Its place in a multi-node job (the container's `SCALAR_NODE_RANK`); 0 on one node.",
    }),
    status: z.string(),
    placed_at: Timestamp,
    started_at: Timestamp.nullable(),
    finished_at: Timestamp.nullable(),
    exit_code: z.number().int().nullable(),
    metrics: PlacementMetrics.nullable(),
  })
  .openapi("Placement");
export type PlacementView = z.infer<typeof PlacementView>;

export const Job = z
  .object({
    id: Uuid,
    status: JobStatus,
    tier: Tier,
    priority: z.number().int(),
    region: z.string(),
    image: z.string(),
    command: z.array(z.string()),
    args: z.array(z.string()),
    env: z.array(EnvVarView),
    gpu_count: z.number().int(),
    gpu_models: z.array(GpuModel),
    cpu_milli: z.number().int(),
    memory_mib: z.number().int(),
    max_runtime_s: z.number().int(),
    estimated_duration_s: z.number().int().nullable(),
    max_attempts: z.number().int(),
    attempts: z.number().int(),
    labels: z.record(z.string(), z.string()),
    waiting_reason: z.string().nullable().openapi({
      description: "While queued: why the packer has not placed it yet.",
      example: "0/12 nodes: 9 insufficient free GPUs, 3 GPU model not allowed",
    }),
    next_attempt_at: Timestamp.nullable(),
    exit_code: z.number().int().nullable(),
    failure_reason: z.string().nullable(),
    dead_lettered: z.boolean(),
    placements: z.array(PlacementView),
    created_at: Timestamp,
    updated_at: Timestamp,
    started_at: Timestamp.nullable(),
    finished_at: Timestamp.nullable(),
  })
  .openapi("Job");
export type Job = z.infer<typeof Job>;

export function pageOf<T extends z.ZodType>(item: T, name: string) {
  return z
    .object({
      data: z.array(item),
      next_cursor: z
        .string()
        .nullable()
        .openapi({ description: "Pass as `cursor` for the next page; null on the last." }),
    })
    .openapi(name);
}

export const PageQuery = {
  limit: z.coerce.number().int().min(1).max(MAX_PAGE_SIZE).default(DEFAULT_PAGE_SIZE).openapi({ example: 20 }),
  cursor: z.string().max(512).optional(),
};

export const IdParam = z.strictObject({ id: Uuid.openapi({ param: { name: "id", in: "path" } }) });

/** Documents `Idempotency-Key` on POST routes (checked by the idempotency middleware). */
export const IdempotencyHeaders = z.object({
  "idempotency-key": z
    .string()
    .max(255)
    .optional()
    .openapi({ description: "Makes the POST safe to retry: the same key and body return the first result for 24 h." }),
});

/** The workload fields of an endpoint (one node's GPUs per replica). */
export const EndpointSpecFields = {
  image: ImageRef.openapi({ example: "ghcr.io/acme/serve:2.0" }),
  command: Argv.default([]),
  args: Argv.default([]),
  env: EnvList.default([]),
  gpu_count: z.number().int().min(1).max(8).openapi({ description: "GPUs per replica (one node).", example: 1 }),
  gpu_models: z.array(GpuModel).max(8).default([]),
  cpu_milli: ResourceRequest.shape.cpu_milli,
  memory_mib: ResourceRequest.shape.memory_mib,
  min_replicas: z.number().int().min(0).max(64).default(1).openapi({
    description:
      "Replicas kept placed at all times, traffic or not. 0 scales to zero: the first request after a quiet `scale_down_delay_s` waits for a replica to start.",
  }),
  max_replicas: z.number().int().min(1).max(64).default(1).openapi({
    description:
      "The most replicas traffic may scale to (≥ min_replicas). Quotas and the spend cap count this many, since traffic can ask for them at any time.",
  }),
  target_concurrency: z.number().int().min(1).max(1_000).default(4).openapi({
    description:
      "Requests in flight one replica is meant to take: traffic keeps ceil(in flight / target_concurrency) replicas, within min..max.",
  }),
  scale_down_delay_s: z.number().int().min(0).max(86_400).default(300).openapi({
    description:
      "How long replicas outlive the traffic that needed them: fewer are kept only after the need has been lower for this long.",
  }),
  port: z.number().int().min(1).max(65_535).default(8000),
  health_path: z
    .string()
    .max(512)
    .regex(/^\/[\x21-\x7e]*$/, "an absolute path such as /health")
    .default("/health"),
  startup_timeout_s: z.number().int().min(10).max(86_400).default(600).openapi({
    description:
      "A replica whose health check has not passed this long after its container started is restarted (a replica that passed once is restarted after failing for 30 s).",
  }),
};
