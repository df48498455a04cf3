/** Endpoints through the Worker in workerd. */
import { env } from "cloudflare:test";
import { eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { withDb } from "../db/client";
import { endpoints } from "../db/schema";
import { createLogger } from "../http/log";
import { syncEndpoint } from "./endpoints";
import { schedulerOf } from "./scheduler";
import { call, createKey, orphanIdempotencyKey, signUp, sql } from "./test-support";

const ENDPOINT = { image: "127.0.0.1:5000/test/busybox:1", command: ["httpd", "-f"], gpu_count: 1 };
const uniqueName = () => `svc-${crypto.randomUUID().slice(0, 8)}`;

describe("endpoints", () => {
  it("creates, reads, lists, updates and deletes an endpoint, auditing each change", async () => {
    const user = await signUp();
    const name = uniqueName();
    const created = await call("POST", "/v1/endpoints", user.token, {
      body: {
        ...ENDPOINT,
        name,
        min_replicas: 1,
        max_replicas: 3,
        port: 8080,
        health_path: "/ready",
        env: [{ name: "API_TOKEN", value: "tok_secret_123", secret: true }],
      },
    });
    expect(created.status).toBe(201);
    expect(created.json).toMatchObject({
      name,
      status: "active",
      region: "us-west-1",
      tier: "flex",
      min_replicas: 1,
      max_replicas: 3,
      scale_down_delay_s: 300,
      port: 8080,
      health_path: "/ready",
      startup_timeout_s: 600,
      env: [{ name: "API_TOKEN", secret: true }],
    });
    expect(created.text).not.toContain("tok_secret_123");
    const id = created.json.id as string;

    const read = await call("GET", `/v1/endpoints/${id}`, user.token);
    expect(read.status).toBe(200);
    expect(read.json.id).toBe(id);
    const list = await call("GET", `/v1/endpoints?name=${name}`, user.token);
    expect(list.json.data.map((e: { id: string }) => e.id)).toEqual([id]);

    const patched = await call("PATCH", `/v1/endpoints/${id}`, user.token, {
      body: { max_replicas: 5, image: "busybox:2", startup_timeout_s: 1_800 },
    });
    expect(patched.status).toBe(200);
    expect(patched.json).toMatchObject({
      max_replicas: 5,
      image: "busybox:2",
      min_replicas: 1,
      port: 8080,
      startup_timeout_s: 1_800,
    });
    expect(patched.json.env).toEqual([{ name: "API_TOKEN", secret: true }]);
    // Sealed at rest; a PATCH without env keeps the sealed value, one with env seals the new one.
    const storedEnv = async () =>
      (await sql<{ env: { sealed?: string; value?: string }[] }>("select env from endpoints where id = $1", [id]))[0]!
        .env;
    const [sealedBefore] = await storedEnv();
    expect(sealedBefore).toEqual({ name: "API_TOKEN", secret: true, sealed: expect.stringMatching(/^v1\./) });
    const newEnv = await call("PATCH", `/v1/endpoints/${id}`, user.token, {
      body: { env: [{ name: "API_TOKEN", value: "tok_secret_456", secret: true }] },
    });
    expect(newEnv.status).toBe(200);
    expect(newEnv.text).not.toContain("tok_secret_456");
    const [sealedAfter] = await storedEnv();
    expect(sealedAfter!.sealed).not.toBe(sealedBefore!.sealed);
    expect(JSON.stringify(await storedEnv())).not.toContain("tok_secret");
    const badPatch = await call("PATCH", `/v1/endpoints/${id}`, user.token, { body: { min_replicas: 9 } });
    expect(badPatch.status).toBe(400);
    expect(badPatch.json.error.details.fields[0].field).toBe("max_replicas");
    const renamed = await call("PATCH", `/v1/endpoints/${id}`, user.token, { body: { name: "other" } });
    expect(renamed.status).toBe(400);
    expect(renamed.json.error.details.fields[0]).toMatchObject({ field: "name", code: "unknown_field" });

    const deleted = await call("DELETE", `/v1/endpoints/${id}`, user.token);
    expect(deleted.status).toBe(200);
    expect(deleted.json.status).toBe("deleted");
    expect((await call("DELETE", `/v1/endpoints/${id}`, user.token)).json.status).toBe("deleted");
    expect((await call("GET", `/v1/endpoints?name=${name}`, user.token)).json.data).toEqual([]);
    expect((await call("GET", `/v1/endpoints?name=${name}&status=deleted`, user.token)).json.data).toHaveLength(1);
    expect((await call("PATCH", `/v1/endpoints/${id}`, user.token, { body: { max_replicas: 2 } })).status).toBe(409);

    const audit = await sql<{ action: string }>("select action from audit_log where target_id = $1 order by id", [id]);
    expect(audit.map((a) => a.action)).toEqual([
      "endpoint.created",
      "endpoint.updated",
      "endpoint.updated",
      "endpoint.deleted",
    ]);
    // The name is free again once deleted.
    expect((await call("POST", "/v1/endpoints", user.token, { body: { ...ENDPOINT, name } })).status).toBe(201);
  });

  it("answers a retry that takes over a dead request's key with the endpoint it stored, not 409 name_taken", async () => {
    const user = await signUp();
    const body = { ...ENDPOINT, name: uniqueName() };
    const headers = { "idempotency-key": `died-${crypto.randomUUID()}` };
    const first = await call("POST", "/v1/endpoints", user.token, { body, headers });
    expect(first.status).toBe(201);
    // As if the first request's isolate died after the endpoint's commit, before its answer was kept.
    const orphanKey = () => orphanIdempotencyKey(user.accountId, headers["idempotency-key"]);
    await orphanKey();
    const retry = await call("POST", "/v1/endpoints", user.token, { body, headers });
    expect(retry.status).toBe(201);
    expect(retry.json.id).toBe(first.json.id);
    expect(retry.headers.get("idempotency-replayed")).toBe("true");
    // Deleted meanwhile, its name free: still that endpoint (deleted), not a second one.
    expect((await call("DELETE", `/v1/endpoints/${first.json.id}`, user.token)).status).toBe(200);
    await orphanKey();
    const late = await call("POST", "/v1/endpoints", user.token, { body, headers });
    expect([late.status, late.json.id, late.json.status]).toEqual([201, first.json.id, "deleted"]);
    const [count] = await sql<{ n: number }>("select count(*)::int as n from endpoints where account_id = $1", [
      user.accountId,
    ]);
    expect(count!.n).toBe(1);
  });

  it("answers a takeover retry during a payment hold with the endpoint made before it, not 402", async () => {
    const user = await signUp();
    const body = { ...ENDPOINT, name: uniqueName() };
    const headers = { "idempotency-key": `died-${crypto.randomUUID()}` };
    const first = await call("POST", "/v1/endpoints", user.token, { body, headers });
    expect(first.status).toBe(201);
    await orphanIdempotencyKey(user.accountId, headers["idempotency-key"]);
    // The account is put on payment hold (an unpaid invoice) before the retry.
    const hold = { invoice_id: crypto.randomUUID(), number: null, month: "2026-01", amount_due_cents: 4200 };
    await sql("update accounts set payment_hold = $2::jsonb where id = $1", [
      user.accountId,
      JSON.stringify({ ...hold, currency: "usd", hosted_invoice_url: null, since: new Date().toISOString() }),
    ]);
    const retry = await call("POST", "/v1/endpoints", user.token, { body, headers });
    expect(retry.json.error).toBeUndefined();
    expect(retry.status).toBe(201);
    expect(retry.json.id).toBe(first.json.id);
    expect(retry.headers.get("idempotency-replayed")).toBe("true");
    // New work is still refused.
    const fresh = await call("POST", "/v1/endpoints", user.token, { body: { ...ENDPOINT, name: uniqueName() } });
    expect([fresh.status, fresh.json.error?.code]).toEqual([402, "payment_required"]);
  });

  it("refuses a second active endpoint with the same name (409), bad specs (400) and Fast without entitlement", async () => {
    const user = await signUp();
    const name = uniqueName();
    expect((await call("POST", "/v1/endpoints", user.token, { body: { ...ENDPOINT, name } })).status).toBe(201);
    const clash = await call("POST", "/v1/endpoints", user.token, { body: { ...ENDPOINT, name } });
    expect(clash.status).toBe(409);
    expect(clash.json.error.code).toBe("name_taken");
    for (const [body, field] of [
      [{ ...ENDPOINT, name: "Bad_Name" }, "name"],
      // Shaped like an id: invoke would read it as one.
      [{ ...ENDPOINT, name: "3f1c2b0e-8a4d-4a57-9d1e-2c5b7f0a9e11" }, "name"],
      [{ ...ENDPOINT, name: uniqueName(), gpu_count: 16 }, "gpu_count"],
      [{ ...ENDPOINT, name: uniqueName(), min_replicas: 4, max_replicas: 2 }, "max_replicas"],
      [{ ...ENDPOINT, name: uniqueName(), port: 70000 }, "port"],
      [{ ...ENDPOINT, name: uniqueName(), health_path: "health" }, "health_path"],
      [{ ...ENDPOINT, name: uniqueName(), startup_timeout_s: 5 }, "startup_timeout_s"],
      [{ ...ENDPOINT, name: uniqueName(), replicas: 2 }, "replicas"],
    ] as const) {
      const res = await call("POST", "/v1/endpoints", user.token, { body });
      expect(res.status, field).toBe(400);
      expect(res.json.error.details.fields.map((f: { field: string }) => f.field)).toContain(field);
    }
    const fast = await call("POST", "/v1/endpoints", user.token, {
      body: { ...ENDPOINT, name: uniqueName(), tier: "fast" },
    });
    expect(fast.status).toBe(403);
    expect(fast.json.error.code).toBe("tier_not_allowed");
  });

  it("counts maximum replicas (what traffic may scale to) against the concurrent GPU cap", async () => {
    const user = await signUp({ max_concurrent_gpus: 4 });
    const ok = await call("POST", "/v1/endpoints", user.token, {
      body: { ...ENDPOINT, name: uniqueName(), gpu_count: 2, min_replicas: 0, max_replicas: 2 },
    });
    expect(ok.status).toBe(201);
    const over = await call("POST", "/v1/endpoints", user.token, { body: { ...ENDPOINT, name: uniqueName() } });
    expect(over.status).toBe(403);
    expect(over.json.error).toMatchObject({ code: "gpu_quota_exceeded", details: { in_use: 4 } });
    const grow = await call("PATCH", `/v1/endpoints/${ok.json.id}`, user.token, { body: { max_replicas: 3 } });
    expect(grow.status).toBe(403);
    const shrink = await call("PATCH", `/v1/endpoints/${ok.json.id}`, user.token, { body: { max_replicas: 1 } });
    expect(shrink.status).toBe(200);
    expect((await call("POST", "/v1/jobs", user.token, { body: { image: "busybox", gpu_count: 2 } })).status).toBe(202);
  });

  it("answers another account's endpoint with 404 on read, update and delete, and lists none of it", async () => {
    const alice = await signUp();
    const bob = await signUp();
    const name = uniqueName();
    const mine = (await call("POST", "/v1/endpoints", alice.token, { body: { ...ENDPOINT, name } })).json;
    const bobKey = await createKey(bob.token, ["endpoints:read", "endpoints:write"]);
    for (const credential of [bob.token, bobKey.secret]) {
      for (const [method, body] of [
        ["GET", undefined],
        ["PATCH", { max_replicas: 9 }],
        ["DELETE", undefined],
      ] as const) {
        const res = await call(method, `/v1/endpoints/${mine.id}`, credential, { body });
        expect(res.status, method).toBe(404);
        expect(res.text).not.toContain(name);
      }
      const list = await call("GET", `/v1/endpoints?name=${name}&status=all`, credential);
      expect(list.json.data).toEqual([]);
    }
    const [row] = await sql<{ status: string; max_replicas: number }>(
      "select status, max_replicas from endpoints where id = $1",
      [mine.id],
    );
    expect(row).toEqual({ status: "active", max_replicas: 1 });
  });

  it("needs the endpoints scopes", async () => {
    const user = await signUp();
    const jobsOnly = await createKey(user.token, ["jobs:read", "jobs:write"]);
    const res = await call("GET", "/v1/endpoints", jobsOnly.secret);
    expect(res.status).toBe(403);
    expect(res.json.error.details.required_scope).toBe("endpoints:read");
  });
});

describe("endpoint sync with the region's scheduler", () => {
  const log = createLogger("error");
  /** The endpoint's row as a request or the reconciler read it, to sync later. */
  const rowOf = async (id: string) =>
    (await withDb(env, (db) => db.select().from(endpoints).where(eq(endpoints.id, id))))[0]!;
  const lateSync = (row: Awaited<ReturnType<typeof rowOf>>) => withDb(env, (db) => syncEndpoint(env, db, row, log));

  it("leaves a deleted endpoint deleted when a PATCH's sync arrives after the DELETE's", async () => {
    const user = await signUp();
    const created = await call("POST", "/v1/endpoints", user.token, {
      body: { ...ENDPOINT, name: uniqueName(), min_replicas: 1 },
    });
    const id = created.json.id as string;
    await call("PATCH", `/v1/endpoints/${id}`, user.token, { body: { max_replicas: 2 } });
    const patched = await rowOf(id);
    expect((await call("DELETE", `/v1/endpoints/${id}`, user.token)).json).toMatchObject({ synced: true });
    // The PATCH's sync (v2) reaches the scheduler after the DELETE's removal (v3).
    expect(await lateSync(patched)).toBeNull();
    expect(await schedulerOf(env, patched.region).endpointState(id)).toBeNull();
    expect((await call("GET", `/v1/endpoints/${id}`, user.token)).json).toMatchObject({
      status: "deleted",
      synced: true,
    });
  });

  it("keeps the newest spec in the scheduler when an older PATCH's sync arrives after a newer one's", async () => {
    const user = await signUp();
    const created = await call("POST", "/v1/endpoints", user.token, {
      body: { ...ENDPOINT, name: uniqueName(), min_replicas: 0 },
    });
    const id = created.json.id as string;
    await call("PATCH", `/v1/endpoints/${id}`, user.token, { body: { image: "127.0.0.1:5000/test/busybox:2" } });
    const v2 = await rowOf(id);
    await call("PATCH", `/v1/endpoints/${id}`, user.token, { body: { image: "127.0.0.1:5000/test/busybox:3" } });
    // The answer is the endpoint as the scheduler holds it: still v3.
    expect(await lateSync(v2)).toMatchObject({ id, version: 3 });
    expect((await schedulerOf(env, v2.region).endpointState(id))?.version).toBe(3);
    const [row] = await sql<{ version: number; synced_version: number }>(
      "select version, synced_version from endpoints where id = $1",
      [id],
    );
    expect(row).toEqual({ version: 3, synced_version: 3 });
  });
});
