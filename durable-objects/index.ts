export { RegionScheduler } from "./region-scheduler/RegionScheduler";
