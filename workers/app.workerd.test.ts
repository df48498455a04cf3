/** The Worker inside workerd: health through Hyperdrive to the embedded Postgres, the error envelope, crons. */
import { createExecutionContext, env, runInDurableObject, SELF, waitOnExecutionContext } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { SCHEMA } from "../durable-objects/region-scheduler/schema";
import { type CronTask, dispatchCron, EVERY_MINUTE } from "./cron";
import { regionScheduler } from "./regions";

describe("GET /healthz", () => {
  it("reports the database reachable through the Hyperdrive binding and each region's scheduler", async () => {
    const res = await SELF.fetch("http://scalar.test/healthz");
    expect(res.status).toBe(200);
    expect(res.headers.get("x-request-id")).toMatch(/^req_/);
    const body = (await res.json()) as {
      status: string;
      database: { reachable: boolean; server_version: string };
      regions: { region: string; ok: boolean; schema_version: number }[];
    };
    expect(body.status).toBe("ok");
    expect(body.database.reachable).toBe(true);
    expect(body.database.server_version).toMatch(/^17\./);
    expect(body.regions).toEqual([
      expect.objectContaining({ region: "us-west-1", ok: true, schema_version: SCHEMA.length }),
    ]);
  });
});

describe("GET /ping", () => {
  it("answers pong without the request context (no request id, no auth)", async () => {
    const res = await SELF.fetch("http://scalar.test/ping");
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("pong");
    expect(res.headers.get("x-request-id")).toBeNull();
    expect((await SELF.fetch("http://scalar.test/ping", { method: "POST" })).status).toBe(405);
  });
});

describe("error envelope", () => {
  it("answers an unknown route with a 404 in the envelope, echoing a sane request id", async () => {
    const res = await SELF.fetch("http://scalar.test/v1/nothing-here", {
      headers: { "x-request-id": "client-req-12345" },
    });
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({
      error: { code: "not_found", message: "no route for GET /v1/nothing-here", request_id: "client-req-12345" },
    });
  });

  it("answers a method a route does not take with a 405 and the methods it does take", async () => {
    const list = await SELF.fetch("http://scalar.test/v1/jobs", { method: "DELETE" });
    expect(list.status).toBe(405);
    expect(list.headers.get("allow")).toBe("GET, HEAD, POST");
    expect(await list.json()).toMatchObject({
      error: { code: "method_not_allowed", message: "/v1/jobs does not take DELETE; it takes GET, HEAD, POST" },
    });
    const one = await SELF.fetch(`http://scalar.test/v1/jobs/${crypto.randomUUID()}`, { method: "PUT" });
    expect(one.status).toBe(405);
    expect(one.headers.get("allow")).toBe("GET, HEAD");
    const cancel = await SELF.fetch(`http://scalar.test/v1/jobs/${crypto.randomUUID()}/cancel`);
    expect(cancel.status).toBe(405);
    expect(cancel.headers.get("allow")).toBe("POST");
    // A path no route has stays a 404, whatever the method.
    expect((await SELF.fetch("http://scalar.test/v1/nothing-here", { method: "POST" })).status).toBe(404);
  });
});

describe("RegionScheduler", () => {
  it("creates its versioned SQLite schema once and keeps it across calls", async () => {
    const stub = regionScheduler(env, "test-region");
    const first = await stub.ping("test-region");
    expect(first).toEqual({ region: "test-region", schema_version: SCHEMA.length, nodes: 0 });
    await runInDurableObject(stub, async (_instance, state) => {
      const rows = state.storage.sql.exec<{ version: number }>("select version from _schema").toArray();
      expect(rows).toEqual([{ version: SCHEMA.length }]);
    });
    expect(await stub.ping("other-name")).toEqual(first);
  });
});

describe("scheduled", () => {
  it("dispatches by cron expression, isolates a failing task, and ignores an unknown expression", async () => {
    const ran: string[] = [];
    const tasks: Record<string, CronTask[]> = {
      [EVERY_MINUTE]: [
        { name: "ok", run: async () => void ran.push("ok") },
        {
          name: "broken",
          run: async () => {
            throw new Error("boom");
          },
        },
      ],
    };
    const result = await dispatchCron(EVERY_MINUTE, env, tasks);
    expect(ran).toEqual(["ok"]);
    expect(result.results).toEqual([
      { task: "ok", ok: true },
      { task: "broken", ok: false, error: "boom" },
    ]);
    expect((await dispatchCron("0 0 * * *", env, tasks)).results).toEqual([]);
  });

  it("runs the Worker's scheduled handler", async () => {
    const worker = (await import("./index")).default;
    const ctx = createExecutionContext();
    worker.scheduled({ cron: EVERY_MINUTE, scheduledTime: Date.now(), noRetry() {} } as ScheduledController, env, ctx);
    await waitOnExecutionContext(ctx);
  });
});
