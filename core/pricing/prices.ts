/**
 * What customers pay, in integer cents per GPU-hour by tier and GPU model, and the arithmetic the
 * spend cap uses. Integer maths only: costs round up to the next cent once per line.
 */
import { GPU_MODELS, type GpuModel, type Tier } from "../schemas/common";

export const GPU_HOUR_PRICE_CENTS: Record<Tier, Record<GpuModel, number>> = {
  fast: { H100: 299, H200: 399 },
  flex: { H100: 179, H200: 239 },
};

/** `ceil(numerator / denominator)` for non-negative safe integers, without floating-point rounding. */
function ceilDiv(numerator: number, denominator: number): number {
  const q = Math.floor(numerator / denominator);
  return numerator - q * denominator > 0 ? q + 1 : q;
}

/** GPU-seconds at a price per GPU-hour, rounded up to the cent. */
export function centsFor(gpuSeconds: number, centsPerGpuHour: number): number {
  return ceilDiv(gpuSeconds * centsPerGpuHour, 3600);
}

export function gpuSecondsCostCents(gpuSeconds: number, tier: Tier, model: GpuModel): number {
  return centsFor(gpuSeconds, GPU_HOUR_PRICE_CENTS[tier][model]);
}

/** The dearest model a request may land on (an empty list allows every model). */
export function worstCasePriceCents(tier: Tier, models: readonly GpuModel[]): number {
  const allowed = models.length > 0 ? models : GPU_MODELS;
  return Math.max(...allowed.map((m) => GPU_HOUR_PRICE_CENTS[tier][m]));
}

/** The most a job can cost: all its GPUs for its whole max runtime on the dearest allowed model. */
export function jobCeilingCents(job: {
  tier: Tier;
  gpu_models: readonly GpuModel[];
  gpu_count: number;
  max_runtime_s: number;
}): number {
  return centsFor(job.gpu_count * job.max_runtime_s, worstCasePriceCents(job.tier, job.gpu_models));
}

/** Usage grouped by tier and model → cents. */
export function usageCostCents(lines: readonly { tier: Tier; gpu_model: GpuModel; gpu_seconds: number }[]): number {
  return lines.reduce((sum, l) => sum + gpuSecondsCostCents(l.gpu_seconds, l.tier, l.gpu_model), 0);
}
