/** Regions served by this deployment, and the named stub of each region's scheduler. */
import type { RegionScheduler } from "../durable-objects";

export function regionsOf(env: { REGIONS: string }): string[] {
  return env.REGIONS.split(",")
    .map((r) => r.trim())
    .filter(Boolean);
}

export function regionScheduler(
  env: { REGION_SCHEDULER: DurableObjectNamespace<RegionScheduler> },
  region: string,
): DurableObjectStub<RegionScheduler> {
  return env.REGION_SCHEDULER.get(env.REGION_SCHEDULER.idFromName(region));
}
