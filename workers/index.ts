/** The Worker: the HTTP API, the cron dispatcher and the region scheduler's class. */
import { createApp } from "./app";
import { CRON_TASKS, dispatchCron } from "./cron";

export { RateLimiter, RegionScheduler } from "../durable-objects";

const app = createApp();

export default {
  fetch: app.fetch,
  scheduled(controller, env, ctx) {
    ctx.waitUntil(dispatchCron(controller.cron, env, CRON_TASKS, { scheduledTime: controller.scheduledTime }));
  },
} satisfies ExportedHandler<Env>;
