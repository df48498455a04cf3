/**
 * GPU discovery and health from `nvidia-smi --query-gpu=… --format=csv,noheader,nounits`. The parser
 * also takes the default csv format (a header, units inside values such as `81559 MiB`, `0 %`,
 * `124.69 W`) and `[N/A]`-style placeholders, so captured output from any host parses.
 */
import { execFile } from "node:child_process";
import { GPU_MODELS, type GpuHealth, type GpuInventory, type GpuModel } from "../core/schemas";

export const NVIDIA_SMI_FIELDS = [
  "index",
  "uuid",
  "name",
  "memory.total",
  "memory.used",
  "utilization.gpu",
  "temperature.gpu",
  "power.draw",
] as const;
type Field = (typeof NVIDIA_SMI_FIELDS)[number];

export interface GpuReading {
  index: number;
  uuid?: string;
  name?: string;
  memory_total_mib?: number;
  memory_used_mib?: number;
  utilisation_pct?: number;
  temperature_c?: number;
  power_w?: number;
}

/** `81559 MiB` → 81559; `[N/A]`, `[Not Supported]`, `` → undefined. */
function number(raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const match = raw.trim().match(/^(-?\d+(?:\.\d+)?)(?:\s*(?:MiB|%|W|C))?$/i);
  return match ? Number(match[1]) : undefined;
}

function text(raw: string | undefined): string | undefined {
  const v = raw?.trim();
  return v && !/^\[.*\]$/.test(v) ? v : undefined;
}

export function parseNvidiaSmiQuery(output: string): GpuReading[] {
  const rows = output
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line.length > 0)
    .map((line) => line.split(",").map((cell) => cell.trim()));
  let columns: readonly string[] = NVIDIA_SMI_FIELDS;
  if (rows[0] && rows[0][0] !== undefined && Number.isNaN(Number(rows[0][0]))) {
    // A header such as `index, uuid, name, memory.total [MiB], …`: read columns by name.
    columns = rows.shift()!.map((h) => h.replace(/\s*\[.*\]$/, "").trim());
  }
  const at = (row: string[], field: Field) => {
    const i = columns.indexOf(field);
    return i >= 0 ? row[i] : undefined;
  };
  const readings: GpuReading[] = [];
  for (const row of rows) {
    const index = number(at(row, "index"));
    if (index === undefined || !Number.isInteger(index)) {
      throw new Error(`nvidia-smi: cannot read a GPU index in "${row.join(", ")}"`);
    }
    const reading: GpuReading = { index };
    const set = <K extends keyof GpuReading>(key: K, value: GpuReading[K] | undefined) => {
      if (value !== undefined) reading[key] = value;
    };
    set("uuid", text(at(row, "uuid")));
    set("name", text(at(row, "name")));
    set("memory_total_mib", number(at(row, "memory.total")));
    set("memory_used_mib", number(at(row, "memory.used")));
    set("utilisation_pct", number(at(row, "utilization.gpu")));
    set("temperature_c", number(at(row, "temperature.gpu")));
    set("power_w", number(at(row, "power.draw")));
    readings.push(reading);
  }
  return readings;
}

/** `NVIDIA H100 80GB HBM3` → H100. Null for a model Scalar does not sell. */
export function gpuModelFromName(name: string): GpuModel | null {
  for (const model of GPU_MODELS) if (new RegExp(`\\b${model}\\b`, "i").test(name)) return model;
  return null;
}

export interface GpuInventoryResult {
  model: GpuModel;
  gpus: GpuInventory[];
}

/** Where the agent learns about its GPUs. */
export interface GpuSource {
  inventory(): Promise<GpuInventoryResult>;
  health(): Promise<GpuHealth[]>;
}

export function inventoryFromReadings(readings: GpuReading[]): GpuInventoryResult {
  if (readings.length === 0) throw new Error("nvidia-smi lists no GPU");
  const models = new Set(readings.map((r) => (r.name ? gpuModelFromName(r.name) : null)));
  const [model] = models;
  if (models.size !== 1 || !model) {
    const names = [...new Set(readings.map((r) => r.name ?? "unknown"))].join(", ");
    throw new Error(`unsupported GPUs (${names}): Scalar runs nodes of one model among ${GPU_MODELS.join(", ")}`);
  }
  return {
    model,
    gpus: readings.map((r) => ({
      index: r.index,
      ...(r.uuid ? { uuid: r.uuid } : {}),
      ...(r.name ? { name: r.name } : {}),
      ...(r.memory_total_mib !== undefined ? { memory_total_mib: Math.round(r.memory_total_mib) } : {}),
    })),
  };
}

/** A GPU that nvidia-smi no longer lists, or that reports no temperature, is unhealthy. */
export function healthFromReadings(known: number[], readings: GpuReading[]): GpuHealth[] {
  const byIndex = new Map(readings.map((r) => [r.index, r]));
  return known.map((index) => {
    const r = byIndex.get(index);
    if (!r) return { index, healthy: false };
    const health: GpuHealth = { index, healthy: r.temperature_c !== undefined };
    if (r.temperature_c !== undefined) health.temperature_c = r.temperature_c;
    if (r.utilisation_pct !== undefined) health.utilisation_pct = Math.min(100, Math.max(0, r.utilisation_pct));
    if (r.memory_used_mib !== undefined) health.memory_used_mib = r.memory_used_mib;
    if (r.memory_total_mib !== undefined) health.memory_total_mib = r.memory_total_mib;
    if (r.power_w !== undefined) health.power_w = r.power_w;
    return health;
  });
}

export class NvidiaSmi implements GpuSource {
  private known: number[] = [];
  constructor(private readonly binary = "nvidia-smi") {}

  private query(): Promise<GpuReading[]> {
    const args = [`--query-gpu=${NVIDIA_SMI_FIELDS.join(",")}`, "--format=csv,noheader,nounits"];
    return new Promise((done, fail) => {
      execFile(this.binary, args, { timeout: 15_000 }, (error, stdout, stderr) => {
        if (error) return fail(new Error(`${this.binary} failed: ${String(stderr || error.message).trim()}`));
        try {
          done(parseNvidiaSmiQuery(stdout));
        } catch (e) {
          fail(e);
        }
      });
    });
  }

  async inventory(): Promise<GpuInventoryResult> {
    const result = inventoryFromReadings(await this.query());
    this.known = result.gpus.map((g) => g.index);
    return result;
  }

  async health(): Promise<GpuHealth[]> {
    try {
      return healthFromReadings(this.known, await this.query());
    } catch {
      // The driver not answering is the worst health there is.
      return this.known.map((index) => ({ index, healthy: false }));
    }
  }
}

/** `--gpus N --gpu-model M`: GPUs declared by the operator on a host without NVIDIA tools (development, CI). */
export class DeclaredGpus implements GpuSource {
  constructor(
    private readonly count: number,
    private readonly model: GpuModel,
  ) {}

  async inventory(): Promise<GpuInventoryResult> {
    return { model: this.model, gpus: Array.from({ length: this.count }, (_, index) => ({ index })) };
  }

  async health(): Promise<GpuHealth[]> {
    return Array.from({ length: this.count }, (_, index) => ({ index, healthy: true }));
  }
}
