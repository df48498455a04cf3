/** Container metrics for heartbeats, from one-shot engine samples taken one heartbeat apart. */
import type { ContainerMetrics } from "../core/schemas";
import type { StatsSample } from "./docker/engine";

/** CPU use between two samples in percent of one CPU (200 = two CPUs busy), like `docker stats`. */
export function cpuPercent(previous: StatsSample | undefined, current: StatsSample): number | undefined {
  if (!previous) return undefined;
  const cpu = current.cpuTotalNs - previous.cpuTotalNs;
  const system = current.systemCpuNs - previous.systemCpuNs;
  if (cpu < 0 || system <= 0 || current.onlineCpus <= 0) return undefined;
  return Math.round((cpu / system) * current.onlineCpus * 100 * 10) / 10;
}

export function containerMetrics(
  placementId: string,
  previous: StatsSample | undefined,
  current: StatsSample,
): ContainerMetrics {
  const cpu = cpuPercent(previous, current);
  return {
    placement_id: placementId,
    ...(cpu !== undefined ? { cpu_pct: cpu } : {}),
    ...(current.memoryBytes !== undefined ? { memory_bytes: current.memoryBytes } : {}),
    ...(current.memoryLimitBytes !== undefined ? { memory_limit_bytes: current.memoryLimitBytes } : {}),
    ...(current.pids !== undefined ? { pids: current.pids } : {}),
  };
}
