export { RateLimiter } from "./rate-limiter/RateLimiter";
export { RegionScheduler } from "./region-scheduler/RegionScheduler";
