/** The options a job and an endpoint share (image, GPUs, CPU, memory, env, labels, tier, region). */
import type { JobCreate } from "../api/client";
import { choiceOption, intOption, listOption, type Options, pairs, stringOption, type Values } from "../args";
import { UsageError } from "../errors";
import { parseCpu, parseMemory } from "../units";

export const TIERS = ["fast", "flex"] as const;
export const GPU_MODELS = ["H100", "H200"] as const;

export const WORKLOAD_OPTIONS: Options = {
  image: { type: "string", value: "IMG", description: "container image (required)" },
  gpus: { type: "string", value: "N", description: "GPUs: 1–8 on one node, or whole nodes (16, 24, … 64) (required)" },
  "gpu-model": { type: "string", multiple: true, value: "M", description: "allowed GPU model (H100, H200); repeat" },
  tier: {
    type: "string",
    value: "fast|flex",
    description:
      "fast starts in seconds; flex waits for cheap capacity (default: fast when the account may use it, else flex)",
  },
  cpu: { type: "string", value: "CORES", description: "CPU: cores (2, 0.5) or millicores (500m); default 4" },
  memory: { type: "string", value: "SIZE", description: "memory: 16Gi, 512Mi, …; default 16Gi" },
  env: { type: "string", multiple: true, value: "K=V", description: "environment variable; repeat" },
  "secret-env": {
    type: "string",
    multiple: true,
    value: "K=V",
    description: "environment variable whose value no API route ever returns; repeat",
  },
  region: { type: "string", value: "R", description: "region (default: the first one served)" },
  label: { type: "string", multiple: true, value: "k=v", description: "label; repeat" },
};

type Workload = Pick<
  JobCreate,
  "image" | "gpu_count" | "gpu_models" | "tier" | "cpu_milli" | "memory_mib" | "env" | "region" | "labels"
>;

/** The shared fields of the request body; only what was given (the API applies its defaults). */
export function workloadBody(values: Values): Workload {
  const fields = workloadChanges(values);
  if (!fields.image) throw new UsageError("--image is required");
  if (fields.gpu_count === undefined) throw new UsageError("--gpus is required");
  return fields as Workload;
}

/** The same fields for a change (PATCH): only those given, none required. */
export function workloadChanges(values: Values): Partial<Workload> {
  const image = stringOption(values, "image");
  const gpus = intOption(values, "gpus", { min: 1 });
  const models = listOption(values, "gpu-model").map((m) => m.toUpperCase());
  for (const m of models) {
    if (!(GPU_MODELS as readonly string[]).includes(m)) {
      throw new UsageError(`--gpu-model must be one of ${GPU_MODELS.join(", ")}, not \`${m}\``);
    }
  }
  const tier = choiceOption(values, "tier", TIERS);
  const cpu = stringOption(values, "cpu");
  const memory = stringOption(values, "memory");
  const env = [
    ...pairs(values, "env").map(([name, value]) => ({ name, value })),
    ...pairs(values, "secret-env").map(([name, value]) => ({ name, value, secret: true })),
  ];
  const labels = Object.fromEntries(pairs(values, "label"));
  const region = stringOption(values, "region");
  return {
    ...(image ? { image } : {}),
    ...(gpus !== undefined ? { gpu_count: gpus } : {}),
    ...(models.length > 0 ? { gpu_models: models as Workload["gpu_models"] } : {}),
    ...(tier ? { tier } : {}),
    ...(cpu !== undefined ? { cpu_milli: parseCpu(cpu) } : {}),
    ...(memory !== undefined ? { memory_mib: parseMemory(memory) } : {}),
    ...(env.length > 0 ? { env } : {}),
    ...(region ? { region } : {}),
    ...(Object.keys(labels).length > 0 ? { labels } : {}),
  };
}
