/** A run's resource use from its node's heartbeat: its container's figures and its own GPUs'. */
import type { ContainerMetrics, GpuHealth } from "../../core/schemas";
import type { GpuSample, RunMetrics } from "./rpc";

const CONTAINER_FIGURES = ["cpu_pct", "memory_bytes", "memory_limit_bytes", "pids"] as const;
const GPU_FIGURES = ["utilisation_pct", "memory_used_mib", "memory_total_mib"] as const;

/** Whether the agent measured the container at all (with a hung engine it sends only readiness). */
export function measured(c: ContainerMetrics): boolean {
  return CONTAINER_FIGURES.some((figure) => c[figure] !== undefined);
}

/** The run's GPUs (`gpuIndices` on its node) that the heartbeat has figures for; another run's never. */
function ownGpus(gpuIndices: number[], gpus: GpuHealth[]): GpuSample[] {
  const byIndex = new Map(gpus.map((g) => [g.index, g]));
  return gpuIndices.flatMap((index) => {
    const g = byIndex.get(index);
    if (!g || !GPU_FIGURES.some((figure) => g[figure] !== undefined)) return [];
    return [
      {
        index,
        utilisation_pct: g.utilisation_pct ?? null,
        memory_used_mib: g.memory_used_mib ?? null,
        memory_total_mib: g.memory_total_mib ?? null,
      },
    ];
  });
}

export function runMetrics(gpuIndices: number[], c: ContainerMetrics, gpus: GpuHealth[], at: number): RunMetrics {
  return {
    at,
    cpu_pct: c.cpu_pct ?? null,
    memory_bytes: c.memory_bytes ?? null,
    memory_limit_bytes: c.memory_limit_bytes ?? null,
    pids: c.pids ?? null,
    gpus: ownGpus(gpuIndices, gpus),
  };
}
