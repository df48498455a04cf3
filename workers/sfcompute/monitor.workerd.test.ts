/** The market monitor as the Worker runs it: from the every-minute cron, through Hyperdrive to Postgres. */
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { CRON_TASKS, dispatchCron, EVERY_MINUTE } from "../cron";

describe("market monitor cron task", () => {
  it("is registered every minute and runs against the database (without a token it only reads blocks)", async () => {
    expect(CRON_TASKS[EVERY_MINUTE]!.map((t) => t.name)).toContain("sfcompute.market-monitor");
    const result = await dispatchCron(EVERY_MINUTE, env);
    expect(result.results).toContainEqual({ task: "sfcompute.market-monitor", ok: true });
  });
});
