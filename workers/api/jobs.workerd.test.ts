/** Jobs through the Worker in workerd, against the embedded Postgres. */
import { createExecutionContext, env, runDurableObjectAlarm, waitOnExecutionContext } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { MAX_BODY_BYTES } from "../http/body";
import { createLogger } from "../http/log";
import { encodeTimeCursor } from "../http/pagination";
import { regionScheduler } from "../regions";
import { expireIdempotencyKeysTask } from "./housekeeping";
import { poll, retire, startNode } from "./test-agent";
import { addMember, call, createKey, JOB, orphanIdempotencyKey, rateLimitOverride, signUp, sql } from "./test-support";

describe("POST /v1/jobs", () => {
  it("stores the job queued, never returns secret values, and audits it", async () => {
    const user = await signUp();
    const res = await call("POST", "/v1/jobs", user.token, {
      body: {
        ...JOB,
        env: [
          { name: "MODE", value: "train" },
          { name: "HF_TOKEN", value: "hf_very_secret_value", secret: true },
        ],
        labels: { team: "research" },
        gpu_models: ["H100"],
        max_runtime_s: 600,
      },
    });
    expect(res.status).toBe(202);
    expect(res.json).toMatchObject({
      status: "queued",
      tier: "flex",
      region: "us-west-1",
      gpu_count: 1,
      gpu_models: ["H100"],
      max_runtime_s: 600,
      labels: { team: "research" },
      env: [
        { name: "MODE", secret: false, value: "train" },
        { name: "HF_TOKEN", secret: true },
      ],
    });
    expect(res.text).not.toContain("hf_very_secret_value");
    const id = res.json.id as string;
    for (const path of [`/v1/jobs/${id}`, "/v1/jobs"]) {
      const read = await call("GET", path, user.token);
      expect(read.status).toBe(200);
      expect(read.text).not.toContain("hf_very_secret_value");
    }
    const [row] = await sql<{ env: Record<string, unknown>[]; account_id: string; text: string }>(
      "select env, account_id, env::text as text from jobs where id = $1",
      [id],
    );
    expect(row!.account_id).toBe(user.accountId);
    // The secret is stored sealed (workers/auth/env-secrets.ts): its value never reaches Postgres.
    expect(row!.env[0]).toEqual({ name: "MODE", secret: false, value: "train" });
    expect(row!.env[1]).toEqual({ name: "HF_TOKEN", secret: true, sealed: expect.stringMatching(/^v1\.test\./) });
    expect(row!.text).not.toContain("hf_very_secret_value");
    // Both written by the statement that inserts the job (the trigger's row last), in one transaction.
    const audit = await sql<{ action: string; actor_type: string }>(
      "select action, actor_type from audit_log where target_id = $1 order by action",
      [id],
    );
    expect(audit).toEqual([
      { action: "job.created", actor_type: "system" },
      { action: "job.submitted", actor_type: "user" },
    ]);
    const [submission] = await sql<{ region: string; attempts: number }>(
      "select region, attempts from job_submissions where job_id = $1",
      [id],
    );
    expect(submission).toMatchObject({ region: "us-west-1", attempts: 1 });
  });

  it("without a secret or a spend cap (one round trip), answers with the row it stored, ledger and audit included", async () => {
    const user = await signUp();
    const res = await call("POST", "/v1/jobs", user.token, {
      body: {
        ...JOB,
        env: [{ name: "QUOTE", value: 'it\'s \\ "quoted"' }],
        labels: { "team/x": "a'b" },
        gpu_models: ["H100", "H200"],
        estimated_duration_s: 30,
      },
    });
    expect(res.json.error).toBeUndefined();
    expect(res.status).toBe(202);
    const read = await call("GET", `/v1/jobs/${res.json.id}`, user.token);
    const { status: _s, updated_at: _u, placements: _p, waiting_reason: _w, ...posted } = res.json;
    const { status: _s2, updated_at: _u2, placements: _p2, waiting_reason: _w2, ...stored } = read.json;
    expect(posted).toEqual(stored);
    expect(posted).toMatchObject({
      env: [{ name: "QUOTE", secret: false, value: 'it\'s \\ "quoted"' }],
      labels: { "team/x": "a'b" },
      gpu_models: ["H100", "H200"],
      estimated_duration_s: 30,
    });
    const audit = await sql<{ action: string }>("select action from audit_log where target_id = $1 order by action", [
      res.json.id,
    ]);
    expect(audit.map((a) => a.action)).toEqual(["job.created", "job.submitted"]);
    const [submission] = await sql<{ attempts: number }>("select attempts from job_submissions where job_id = $1", [
      res.json.id,
    ]);
    expect(submission).toMatchObject({ attempts: 1 });
  });

  it("keeps backslashes and quotes in command, args and env as sent, through to the node's placement", async () => {
    const op = await signUp({ is_operator: true });
    const agent = await startNode(op, "H100", 8);
    const user = await signUp({ fast_tier_enabled: true });
    // Written with escapes: each "\\" below is one backslash the container must get.
    const command = ["sh", "-c", 'printf \'a\\r\\nb\\\\c "q" \\{x\\}\\n\' && echo "$1"'];
    const args = ["C:\\temp\\new", '{"json":"a\\"b"}', "\\\\", ""];
    const env = [{ name: "PATTERN", value: "^\\d+\\.\\d+$" }];
    const res = await call("POST", "/v1/jobs", user.token, { body: { ...JOB, command, args, env } });
    expect(res.status, res.text).toBe(202);
    expect(res.json).toMatchObject({ command, args });
    const got = await call("GET", `/v1/jobs/${res.json.id}`, user.token);
    expect(got.json).toMatchObject({ command, args, env: [{ name: "PATTERN", value: env[0]!.value }] });
    const [placement] = (await poll(agent)).placements.filter((p) => p.job_id === res.json.id);
    expect(placement).toMatchObject({ command, args, env: [{ name: "PATTERN", value: env[0]!.value }] });

    const ep = await call("POST", "/v1/endpoints", user.token, {
      body: { name: "slashes", image: JOB.image, gpu_count: 1, command, args },
    });
    expect(ep.status, ep.text).toBe(201);
    expect(ep.json).toMatchObject({ command, args });
    expect((await call("GET", `/v1/endpoints/${ep.json.id}`, user.token)).json).toMatchObject({ command, args });
    await retire(op, agent);
  });

  it("says where its time went in Server-Timing: auth, claim (with an Idempotency-Key), write, schedule, total", async () => {
    const user = await signUp();
    const res = await call("POST", "/v1/jobs", user.token, { body: JOB, headers: { "idempotency-key": "st-1" } });
    expect(res.status).toBe(202);
    const names = (res.headers.get("server-timing") ?? "").split(",").map((e) => e.trim().split(";")[0]);
    expect(names).toEqual(["auth", "claim", "write", "schedule", "total"]);
    expect(res.headers.get("server-timing")).toMatch(/total;dur=\d+(\.\d+)?;desc="in the Worker"/);
    const read = await call("GET", "/v1/jobs", user.token);
    expect(read.headers.get("server-timing")).toMatch(/^auth;.*total;/);
  });

  it("refuses the fast tier to an account not entitled to it, and accepts it when entitled", async () => {
    const flexOnly = await signUp();
    const refused = await call("POST", "/v1/jobs", flexOnly.token, { body: { ...JOB, tier: "fast" } });
    expect(refused.status).toBe(403);
    expect(refused.json.error).toMatchObject({ code: "tier_not_allowed" });
    expect(refused.json.error.details.fields[0].field).toBe("tier");
    const fast = await signUp({ fast_tier_enabled: true });
    const ok = await call("POST", "/v1/jobs", fast.token, { body: { ...JOB, tier: "fast" } });
    expect(ok.status).toBe(202);
    expect(ok.json.tier).toBe("fast");
  });

  it("without a tier, gives Fast to an account entitled to it and Flex to the others", async () => {
    const untiered = JOB; // no tier
    const flexOnly = await signUp();
    const flex = await call("POST", "/v1/jobs", flexOnly.token, { body: untiered });
    expect(flex.status).toBe(202);
    expect(flex.json.tier).toBe("flex");
    const entitled = await signUp({ fast_tier_enabled: true });
    const fast = await call("POST", "/v1/jobs", entitled.token, { body: untiered });
    expect(fast.status).toBe(202);
    expect(fast.json.tier).toBe("fast");
    const asked = await call("POST", "/v1/jobs", entitled.token, { body: { ...untiered, tier: "flex" } });
    expect(asked.json.tier).toBe("flex");
  });

  const bad: [string, unknown, string][] = [
    ["a string GPU count", { ...JOB, gpu_count: "8" }, "gpu_count"],
    ["zero GPUs", { ...JOB, gpu_count: 0 }, "gpu_count"],
    ["negative GPUs", { ...JOB, gpu_count: -2 }, "gpu_count"],
    ["9 GPUs (more than a node, not whole nodes)", { ...JOB, gpu_count: 9 }, "gpu_count"],
    ["72 GPUs (above the maximum)", { ...JOB, gpu_count: 72 }, "gpu_count"],
    ["a fractional GPU count", { ...JOB, gpu_count: 1.5 }, "gpu_count"],
    ["an unknown tier", { ...JOB, tier: "turbo" }, "tier"],
    ["an unknown GPU model", { ...JOB, gpu_models: ["H100", "A100"] }, "gpu_models[1]"],
    ["an unknown field", { ...JOB, gpus: 8 }, "gpus"],
    ["a missing image", { gpu_count: 1 }, "image"],
    ["an image with spaces", { ...JOB, image: "not an image" }, "image"],
    ["a command that is not a list", { ...JOB, command: "python train.py" }, "command"],
    [
      "a duplicate env name",
      {
        ...JOB,
        env: [
          { name: "A", value: "1" },
          { name: "A", value: "2" },
        ],
      },
      "env",
    ],
    ["an env entry with an unknown field", { ...JOB, env: [{ name: "A", value: "1", hidden: true }] }, "env[0].hidden"],
    ["a bad label key", { ...JOB, labels: { "Bad Key": "x" } }, "labels.Bad Key"],
    ["too much memory", { ...JOB, memory_mib: 10_000_000 }, "memory_mib"],
    ["a priority out of range", { ...JOB, priority: 5000 }, "priority"],
    ["a null body field", { ...JOB, max_runtime_s: null }, "max_runtime_s"],
    ["an unknown region", { ...JOB, region: "mars-1" }, "region"],
    [
      "an estimate above the max runtime",
      { ...JOB, max_runtime_s: 60, estimated_duration_s: 120 },
      "estimated_duration_s",
    ],
    ["an array instead of an object", [JOB], "(body)"],
  ];

  it.each(bad)("answers %s with a 400 naming the field", async (_name, body, field) => {
    const user = await signUp();
    const res = await call("POST", "/v1/jobs", user.token, { body });
    expect(res.status).toBe(400);
    expect(res.json.error).toMatchObject({ code: "invalid_request", request_id: expect.any(String) });
    expect(res.json.error.details.fields.map((f: { field: string }) => f.field)).toContain(field);
    expect(res.json.error.message).toContain(field);
  });

  it("answers invalid JSON, a non-JSON body and an oversized body with 4xx envelopes", async () => {
    const user = await signUp();
    const broken = await call("POST", "/v1/jobs", user.token, {
      raw: '{"image": "busybox", "gpu_count": 1',
      headers: { "content-type": "application/json" },
    });
    expect(broken.status).toBe(400);
    expect(broken.json.error.code).toBe("invalid_json");
    // No body and no Content-Type where the route needs a body: the same 415 envelope as a body of
    // another type (and with a JSON Content-Type, invalid_json: below).
    const bare = await call("POST", "/v1/jobs", user.token, { raw: "" });
    expect(bare.status).toBe(415);
    expect(bare.json.error).toMatchObject({ code: "unsupported_media_type", request_id: expect.any(String) });
    const text = await call("POST", "/v1/jobs", user.token, {
      raw: "image=busybox",
      headers: { "content-type": "text/plain" },
    });
    expect(text.status).toBe(415);
    expect(text.json.error.code).toBe("unsupported_media_type");
    // A JSON type written with a space before its parameters: refused, saying how to write it.
    const spaced = await call("POST", "/v1/jobs", user.token, {
      raw: JSON.stringify(JOB),
      headers: { "content-type": "application/json ; charset=utf-8" },
    });
    expect(spaced.status).toBe(415);
    expect(spaced.json.error).toMatchObject({
      code: "unsupported_media_type",
      details: { content_type: "application/json ; charset=utf-8" },
    });
    expect(spaced.json.error.message).toContain("no space before it");
    const charset = await call("POST", "/v1/jobs", user.token, {
      raw: JSON.stringify(JOB),
      headers: { "content-type": "application/json;charset=UTF-8" },
    });
    expect(charset.status).toBe(202);
    const huge = await call("POST", "/v1/jobs", user.token, {
      body: { ...JOB, args: ["x".repeat(MAX_BODY_BYTES)] },
    });
    expect(huge.status).toBe(413);
    expect(huge.json.error.code).toBe("payload_too_large");
    const empty = await call("POST", "/v1/jobs", user.token, {
      headers: { "content-type": "application/json" },
      raw: "",
    });
    expect(empty.status).toBe(400);
    expect(empty.json.error).toMatchObject({
      code: "invalid_json",
      message: "this route needs a JSON body (an object)",
    });
  });
});

describe("listing, reading and cancelling jobs", () => {
  it("pages newest first with a cursor, without repeats, and filters by status, tier, label and time", async () => {
    const user = await signUp({ fast_tier_enabled: true });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      // More CPU than any test node has: they stay queued whatever nodes other files register.
      const res = await call("POST", "/v1/jobs", user.token, {
        body: {
          ...JOB,
          cpu_milli: 200_000,
          tier: i % 2 ? "fast" : "flex",
          labels: { run: `r${i}`, team: i < 3 ? "a" : "b" },
        },
      });
      ids.push(res.json.id);
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const res = await call("GET", `/v1/jobs?limit=2${cursor ? `&cursor=${cursor}` : ""}`, user.token);
      expect(res.status).toBe(200);
      seen.push(...res.json.data.map((j: { id: string }) => j.id));
      cursor = res.json.next_cursor;
      pages += 1;
    } while (cursor);
    expect(pages).toBe(3);
    expect(seen).toEqual([...ids].reverse());

    const fast = await call("GET", "/v1/jobs?tier=fast", user.token);
    expect(fast.json.data.map((j: { id: string }) => j.id)).toEqual([ids[3], ids[1]]);
    const team = await call("GET", "/v1/jobs?label=team:b", user.token);
    expect(team.json.data).toHaveLength(2);
    const both = await call("GET", "/v1/jobs?label=team:a&label=run:r0", user.token);
    expect(both.json.data.map((j: { id: string }) => j.id)).toEqual([ids[0]]);
    // The route takes no body: one that asks for something is refused, not ignored; `{}` is nothing.
    const asking = await call("POST", `/v1/jobs/${ids[2]}/cancel`, user.token, { body: { force: true } });
    expect(asking.status).toBe(400);
    expect(asking.json.error).toMatchObject({
      code: "invalid_request",
      details: { fields: [{ field: "body", code: "unexpected_body" }] },
    });
    expect((await call("GET", `/v1/jobs/${ids[2]}`, user.token)).json.status).not.toBe("cancelled");
    const cancel = await call("POST", `/v1/jobs/${ids[2]}/cancel`, user.token, { body: {} });
    expect([cancel.status, cancel.json.status]).toEqual([200, "cancelled"]);
    const cancelled = await call("GET", "/v1/jobs?status=cancelled", user.token);
    expect(cancelled.json.data.map((j: { id: string }) => j.id)).toEqual([ids[2]]);
    const live = await call("GET", "/v1/jobs?status=queued,running", user.token);
    expect(live.json.data).toHaveLength(4);
    const future = await call(
      "GET",
      `/v1/jobs?created_after=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`,
      user.token,
    );
    expect(future.json.data).toEqual([]);

    for (const query of [
      "status=lost",
      "tier=turbo",
      "limit=0",
      "limit=101",
      "cursor=garbage",
      "label=nocolon",
      "sort=asc",
      "region=mars",
      // Dates zod takes but Postgres does not hold: year 0, and year 10000 once in UTC.
      "created_after=0000-01-01T00:00:00Z",
      `created_before=${encodeURIComponent("9999-12-31T23:59:59-23:59")}`,
      // Forged cursors whose instant does not exist: 30 February, year 0.
      `cursor=${encodeTimeCursor("2026-02-30T00:00:00.000000Z", ids[0]!)}`,
      `cursor=${encodeTimeCursor("0000-01-01T00:00:00.000000Z", ids[0]!)}`,
    ]) {
      const res = await call("GET", `/v1/jobs?${query}`, user.token);
      expect(res.status, query).toBe(400);
    }
    const farKey = await call("POST", "/v1/api-keys", user.token, {
      body: { name: "far", scopes: ["jobs:read"], expires_at: "9999-12-31T23:59:59-23:59" },
    });
    expect([farKey.status, farKey.json.error?.details?.fields?.[0]?.field]).toEqual([400, "expires_at"]);

    // A parameter given twice is named as such; label takes repeats.
    const twice = await call("GET", "/v1/jobs?limit=1&limit=2&tier=fast&tier=flex", user.token);
    expect(twice.status).toBe(400);
    expect(twice.json.error.message).toBe(
      "invalid query parameter: limit: given 2 times; takes one value; tier: given 2 times; takes one value",
    );
    expect(twice.json.error.details.fields).toEqual([
      { field: "limit", message: "given 2 times; takes one value", code: "repeated" },
      { field: "tier", message: "given 2 times; takes one value", code: "repeated" },
    ]);
    expect((await call("GET", "/v1/jobs?label=a:b&label=c:d", user.token)).status).toBe(200);
  });

  it("cancels a queued job, is idempotent about it, and refuses a finished one with 409", async () => {
    const user = await signUp();
    // More CPU than any test node has, so the job stays queued whatever nodes other files register.
    const job = (await call("POST", "/v1/jobs", user.token, { body: { ...JOB, cpu_milli: 200_000 } })).json;
    const first = await call("POST", `/v1/jobs/${job.id}/cancel`, user.token);
    expect(first.status).toBe(200);
    expect(first.json).toMatchObject({ id: job.id, status: "cancelled" });
    expect(first.json.finished_at).not.toBeNull();
    const again = await call("POST", `/v1/jobs/${job.id}/cancel`, user.token);
    expect(again.json.status).toBe("cancelled");
    // The scheduler's outbox writes to the same audit log on its own schedule, so check the rows the
    // cancel owes rather than the exact list.
    const audit = await sql<{ action: string; to: string | null }>(
      "select action, data->>'to' as to from audit_log where target_id = $1 order by id",
      [job.id],
    );
    // Both written by the statement that inserts the job, so their order between them is not fixed.
    expect(new Set(audit.slice(0, 2).map((a) => a.action))).toEqual(new Set(["job.created", "job.submitted"]));
    expect(audit.filter((a) => a.action === "job.cancel_requested")).toHaveLength(1); // the second cancel adds none
    expect(audit.filter((a) => a.action === "job.status_changed" && a.to === "cancelled")).toHaveLength(1);

    const done = (await call("POST", "/v1/jobs", user.token, { body: JOB })).json;
    await sql("update jobs set status = 'succeeded', finished_at = now() where id = $1", [done.id]);
    const late = await call("POST", `/v1/jobs/${done.id}/cancel`, user.token);
    expect(late.status).toBe(409);
    expect(late.json.error).toMatchObject({ code: "job_finished", details: { status: "succeeded" } });
  });

  it("answers a cancel of a job the scheduler cancelled already but Postgres still says queued with the job, cancelled", async () => {
    const user = await signUp();
    // More CPU than any test node has, so the job stays queued whatever nodes other files register.
    const job = (await call("POST", "/v1/jobs", user.token, { body: { ...JOB, cpu_milli: 200_000 } })).json;
    // An earlier cancel reached the scheduler, but its answer was lost, or its Postgres update failed.
    const scheduler = regionScheduler(env, job.region);
    expect(await scheduler.cancel(job.id)).toMatchObject({ ok: true, status: "cancelled" });
    // The scheduler's outbox delivered now, then Postgres put back as that cancel left it: queued.
    await runDurableObjectAlarm(scheduler);
    await sql("update jobs set status = 'queued', finished_at = null where id = $1", [job.id]);
    const retried = await call("POST", `/v1/jobs/${job.id}/cancel`, user.token);
    expect(retried.status).toBe(200);
    expect(retried.json).toMatchObject({ id: job.id, status: "cancelled" });
    const [after] = await sql<{ status: string; finished_at: Date | null }>(
      "select status, finished_at from jobs where id = $1",
      [job.id],
    );
    expect(after!.status).toBe("cancelled");
    expect(after!.finished_at).not.toBeNull();
  });
});

describe("cross-account isolation", () => {
  it("answers another account's job with 404 on every route, never with its data", async () => {
    const alice = await signUp();
    const bob = await signUp();
    const job = (await call("POST", "/v1/jobs", alice.token, { body: { ...JOB, labels: { secret: "alice" } } })).json;
    const bobKey = await createKey(bob.token, ["jobs:read", "jobs:write"]);
    for (const credential of [bob.token, bobKey.secret]) {
      for (const [method, path] of [
        ["GET", `/v1/jobs/${job.id}`],
        ["POST", `/v1/jobs/${job.id}/cancel`],
        ["GET", `/v1/jobs/${job.id}/logs`],
        ["GET", `/v1/jobs/${job.id}/logs?follow=true`],
      ] as const) {
        const res = await call(method, path, credential);
        expect(res.status, `${method} ${path}`).toBe(404);
        expect(res.json.error.code).toBe("not_found");
        expect(res.text).not.toContain("alice");
      }
      const list = await call("GET", "/v1/jobs?label=secret:alice", credential);
      expect(list.json.data).toEqual([]);
      // Naming Alice's account does not help either.
      expect((await call("GET", "/v1/jobs", credential, { account: alice.accountId })).status).toBe(
        credential === bob.token ? 403 : 200,
      );
    }
    const [row] = await sql<{ status: string }>("select status from jobs where id = $1", [job.id]);
    expect(row!.status).toBe("queued");
  });
});

describe("Idempotency-Key", () => {
  it("replays only to the caller who made the request, and keeps no copy of a secret it answered", async () => {
    const user = await signUp();
    const admin = await createKey(user.token, ["admin", "jobs:write"]);
    const headers = { "idempotency-key": `key-${crypto.randomUUID()}` };
    const body = { name: "ci", scopes: ["jobs:write"] };
    const made = await call("POST", "/v1/api-keys", user.token, { body, headers });
    expect(made.status).toBe(201);
    expect(made.json.secret).toMatch(/^sk_/);
    // Another credential of the same account, the same key and body: not a replay of someone else's answer.
    const other = await call("POST", "/v1/api-keys", admin.secret, { body, headers });
    expect(other.status).toBe(422);
    expect(other.json.error.code).toBe("idempotency_key_reused");
    // The same caller again: the key is not made twice, and its secret is not kept to be replayed.
    const again = await call("POST", "/v1/api-keys", user.token, { body, headers });
    expect(again.status).toBe(409);
    expect(again.json.error).toMatchObject({ code: "idempotency_secret_withheld", details: { id: made.json.id } });
    const [stored] = await sql<{ body: string }>(
      "select response_body::text as body from idempotency_keys where account_id = $1 and key = $2",
      [user.accountId, headers["idempotency-key"]],
    );
    expect(stored!.body).not.toContain(made.json.secret);
    const keys = await call("GET", "/v1/api-keys", user.token);
    expect(keys.json.data.filter((k: { name: string }) => k.name === "ci")).toHaveLength(1);
    // A retry that takes over the key of a request that died after making the key: told what was
    // made (its secret is gone), no second key, and so is every later retry.
    const died = { "idempotency-key": `key-${crypto.randomUUID()}` };
    const lost = await call("POST", "/v1/api-keys", user.token, { body: { ...body, name: "lost" }, headers: died });
    await orphanIdempotencyKey(user.accountId, died["idempotency-key"]);
    for (let i = 0; i < 2; i++) {
      const retry = await call("POST", "/v1/api-keys", user.token, { body: { ...body, name: "lost" }, headers: died });
      expect([retry.status, retry.json.error.code, retry.json.error.details]).toEqual([
        409,
        "idempotency_secret_withheld",
        { id: lost.json.id, status: 201 },
      ]);
    }
    const all = await call("GET", "/v1/api-keys", user.token);
    expect(all.json.data.filter((k: { name: string }) => k.name === "lost")).toHaveLength(1);
    // Jobs likewise: another key of the account sending the same submission is refused, not replayed.
    const submitKey = { "idempotency-key": `job-${crypto.randomUUID()}` };
    expect((await call("POST", "/v1/jobs", user.token, { body: JOB, headers: submitKey })).status).toBe(202);
    const stranger = await call("POST", "/v1/jobs", admin.secret, { body: JOB, headers: submitKey });
    expect(stranger.json.error?.code).toBe("idempotency_key_reused");
  });

  it("replays the first result for the same body, refuses another body with 422, and keeps keys 24 h", async () => {
    const user = await signUp();
    const headers = { "idempotency-key": `submit-${crypto.randomUUID()}` };
    const first = await call("POST", "/v1/jobs", user.token, { body: JOB, headers });
    expect(first.status).toBe(202);
    // Same body with its keys in another order: the same request.
    const reordered = { gpu_count: JOB.gpu_count, command: JOB.command, image: JOB.image };
    const replay = await call("POST", "/v1/jobs", user.token, { body: reordered, headers });
    expect(replay.status).toBe(202);
    expect(replay.json).toEqual(first.json);
    expect(replay.headers.get("idempotency-replayed")).toBe("true");
    const conflict = await call("POST", "/v1/jobs", user.token, { body: { ...JOB, gpu_count: 2 }, headers });
    expect(conflict.status).toBe(422);
    expect(conflict.json.error.code).toBe("idempotency_key_reused");
    const [count] = await sql<{ n: number }>("select count(*)::int as n from jobs where account_id = $1", [
      user.accountId,
    ]);
    expect(count!.n).toBe(1);

    const [stored] = await sql<{ hours: number; state: string }>(
      `select (extract(epoch from expires_at - created_at) / 3600)::float8 as hours, state
         from idempotency_keys where account_id = $1 and key = $2`,
      [user.accountId, headers["idempotency-key"]],
    );
    expect(stored).toEqual({ hours: 24, state: "completed" });
    // After 24 h the key is forgotten: the same request is new work.
    await sql(
      `update idempotency_keys set created_at = now() - interval '25 hours', expires_at = now() - interval '1 hour'
        where account_id = $1 and key = $2`,
      [user.accountId, headers["idempotency-key"]],
    );
    const later = await call("POST", "/v1/jobs", user.token, { body: JOB, headers });
    expect(later.status).toBe(202);
    expect(later.json.id).not.toBe(first.json.id);
    expect(later.headers.get("idempotency-replayed")).toBeNull();
  });

  it("answers a retry that takes over a dead request's key with the job it stored, making no second job", async () => {
    const user = await signUp();
    const headers = { "idempotency-key": `died-${crypto.randomUUID()}` };
    const first = await call("POST", "/v1/jobs", user.token, { body: JOB, headers });
    expect(first.status).toBe(202);
    // As if the first request's isolate died after the job's commit, before its answer was kept.
    await orphanIdempotencyKey(user.accountId, headers["idempotency-key"]);
    const retry = await call("POST", "/v1/jobs", user.token, { body: JOB, headers });
    expect(retry.status).toBe(202);
    expect(retry.json.id).toBe(first.json.id);
    expect(retry.headers.get("idempotency-replayed")).toBe("true");
    const [count] = await sql<{ n: number }>("select count(*)::int as n from jobs where account_id = $1", [
      user.accountId,
    ]);
    expect(count!.n).toBe(1);
    // The answer is kept again: a later retry is a plain replay.
    const again = await call("POST", "/v1/jobs", user.token, { body: JOB, headers });
    expect(again.json.id).toBe(first.json.id);
    expect(again.headers.get("idempotency-replayed")).toBe("true");
  });

  it("answers a takeover retry with its job on a spend-capped account too (the two-round-trip path)", async () => {
    // The spend cap is checked between the insert and the COMMIT, through drizzle, which wraps the
    // unique violation of the job's id (DrizzleQueryError, with Postgres's error as its cause).
    const user = await signUp({ monthly_spend_cap_cents: 1_000_000 });
    const headers = { "idempotency-key": `died-${crypto.randomUUID()}` };
    const first = await call("POST", "/v1/jobs", user.token, { body: JOB, headers });
    expect(first.status).toBe(202);
    await orphanIdempotencyKey(user.accountId, headers["idempotency-key"]);
    const retry = await call("POST", "/v1/jobs", user.token, { body: JOB, headers });
    expect(retry.json.error).toBeUndefined();
    expect(retry.status).toBe(202);
    expect(retry.json.id).toBe(first.json.id);
    expect(retry.headers.get("idempotency-replayed")).toBe("true");
    // One more retry: still that job, and still one job.
    const again = await call("POST", "/v1/jobs", user.token, { body: JOB, headers });
    expect(again.json.id).toBe(first.json.id);
    const [count] = await sql<{ n: number }>("select count(*)::int as n from jobs where account_id = $1", [
      user.accountId,
    ]);
    expect(count!.n).toBe(1);
  });

  it("refuses a secret with 503 secrets_unavailable when the deployment has no sealing key, storing nothing", async () => {
    const user = await signUp();
    const worker = (await import("../index")).default;
    const noKey = { ...env, ENV_SECRETS_KEYS: undefined } as Env;
    const post = async (body: unknown, key: string) => {
      const ctx = createExecutionContext();
      const res = await worker.fetch(
        new Request("http://scalar.test/v1/jobs", {
          method: "POST",
          headers: {
            authorization: `Bearer ${user.token}`,
            "content-type": "application/json",
            "idempotency-key": key,
          },
          body: JSON.stringify(body),
        }),
        noKey,
        ctx,
      );
      await waitOnExecutionContext(ctx);
      return { status: res.status, json: (await res.json()) as { error?: { code: string; message: string } } };
    };
    const refused = await post({ ...JOB, env: [{ name: "TOKEN", value: "s3cret", secret: true }] }, "needs-a-key");
    expect(refused.status).toBe(503);
    expect(refused.json.error).toMatchObject({ code: "secrets_unavailable" });
    expect(refused.json.error!.message).toMatch(/ENV_SECRETS_KEYS is not set.*nothing was stored/);
    const [count] = await sql<{ n: number }>("select count(*)::int as n from jobs where account_id = $1", [
      user.accountId,
    ]);
    expect(count!.n).toBe(0);
    // Without secrets nothing needs the key; the refused key was released and works once a key is back.
    expect((await post(JOB, "no-secrets")).status).toBe(202);
    const retried = await call("POST", "/v1/jobs", user.token, {
      body: { ...JOB, env: [{ name: "TOKEN", value: "s3cret", secret: true }] },
      headers: { "idempotency-key": "needs-a-key" },
    });
    expect(retried.status).toBe(202);
  });

  it("expired keys are deleted by the cron task; live ones stay", async () => {
    const user = await signUp();
    for (const key of ["old", "live"]) {
      const res = await call("POST", "/v1/jobs", user.token, { body: JOB, headers: { "idempotency-key": key } });
      expect(res.status).toBe(202);
    }
    await sql(
      "update idempotency_keys set expires_at = now() - interval '1 second' where account_id = $1 and key = 'old'",
      [user.accountId],
    );
    const result = (await expireIdempotencyKeysTask.run(env, createLogger("error"), { scheduledTime: Date.now() })) as {
      deleted: number;
    };
    expect(result.deleted).toBeGreaterThanOrEqual(1);
    const left = await sql<{ key: string }>("select key from idempotency_keys where account_id = $1", [user.accountId]);
    expect(left.map((r) => r.key)).toEqual(["live"]);
  });

  it("stores and replays a key with quotes and backslashes exactly (it is written into the SQL as a literal)", async () => {
    const user = await signUp();
    const key = `it's\\';delete/**/from/**/jobs;--\\${crypto.randomUUID()}`;
    const headers = { "idempotency-key": key };
    const body = { ...JOB, labels: { note: 'o\'k \\ "q"' } };
    const first = await call("POST", "/v1/jobs", user.token, { body, headers });
    expect(first.status).toBe(202);
    const replay = await call("POST", "/v1/jobs", user.token, { body, headers });
    expect(replay.headers.get("idempotency-replayed")).toBe("true");
    expect(replay.json).toEqual(first.json);
    expect(replay.json.labels).toEqual({ note: 'o\'k \\ "q"' });
    const [stored] = await sql<{ key: string; state: string }>(
      "select key, state from idempotency_keys where account_id = $1",
      [user.accountId],
    );
    expect(stored).toEqual({ key, state: "completed" });
  });

  it("runs concurrent requests with one key once: one job", async () => {
    const user = await signUp();
    const headers = { "idempotency-key": `race-${crypto.randomUUID()}` };
    const results = await Promise.all(
      Array.from({ length: 6 }, () => call("POST", "/v1/jobs", user.token, { body: JOB, headers })),
    );
    const statuses = results.map((r) => r.status);
    expect(statuses.every((s) => s === 202 || s === 409)).toBe(true);
    const accepted = results.filter((r) => r.status === 202);
    expect(new Set(accepted.map((r) => r.json.id)).size).toBe(1);
    for (const r of results.filter((r) => r.status === 409)) {
      expect(r.json.error.code).toBe("idempotency_key_in_progress");
      expect(r.headers.get("retry-after")).toBe("1");
    }
    const [count] = await sql<{ n: number }>("select count(*)::int as n from jobs where account_id = $1", [
      user.accountId,
    ]);
    expect(count!.n).toBe(1);
  });

  it("does not keep a failed request's key, and applies to every POST", async () => {
    const user = await signUp({ max_concurrent_gpus: 1 });
    const headers = { "idempotency-key": "retry-after-fix" };
    const refused = await call("POST", "/v1/jobs", user.token, { body: { ...JOB, gpu_count: 2 }, headers });
    expect(refused.status).toBe(403);
    const fixed = await call("POST", "/v1/jobs", user.token, { body: JOB, headers });
    expect(fixed.status).toBe(202);

    const keyHeaders = { "idempotency-key": "make-key" };
    const k1 = await call("POST", "/v1/api-keys", user.token, {
      body: { name: "a", scopes: ["jobs:read"] },
      headers: keyHeaders,
    });
    const k2 = await call("POST", "/v1/api-keys", user.token, {
      body: { name: "a", scopes: ["jobs:read"] },
      headers: keyHeaders,
    });
    // One key made; its secret is not replayed (see "keeps no copy of a secret").
    expect(k2.json.error).toMatchObject({ code: "idempotency_secret_withheld", details: { id: k1.json.id } });
    const cancel1 = await call("POST", `/v1/jobs/${fixed.json.id}/cancel`, user.token, {
      headers: { "idempotency-key": "c" },
    });
    const cancel2 = await call("POST", `/v1/jobs/${fixed.json.id}/cancel`, user.token, {
      headers: { "idempotency-key": "c" },
    });
    expect(cancel2.json).toEqual(cancel1.json);
    expect(cancel2.headers.get("idempotency-replayed")).toBe("true");
    const bad = await call("POST", "/v1/jobs", user.token, { body: JOB, headers: { "idempotency-key": "é" } });
    expect(bad.status).toBe(400);
  });
});

describe("rate limits", () => {
  it("answers the N+1th request in the window with 429, Retry-After and RateLimit-* headers", async () => {
    const user = await signUp();
    // 5 per hour: no refill can happen while the test runs.
    await rateLimitOverride(user.accountId, 5, 5, 3600);
    const remaining: string[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await call("GET", "/v1/jobs", user.token);
      expect(res.status).toBe(200);
      expect(res.headers.get("ratelimit-limit")).toBe("5");
      remaining.push(res.headers.get("ratelimit-remaining")!);
    }
    expect(remaining).toEqual(["4", "3", "2", "1", "0"]);
    const limited = await call("GET", "/v1/jobs", user.token);
    expect(limited.status).toBe(429);
    expect(limited.json.error).toMatchObject({ code: "rate_limited", details: { limit: 5, window_s: 3600 } });
    expect(Number(limited.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(limited.headers.get("ratelimit-limit")).toBe("5");
    expect(limited.headers.get("ratelimit-remaining")).toBe("0");
    expect(Number(limited.headers.get("ratelimit-reset"))).toBeGreaterThan(0);
    expect(limited.headers.get("ratelimit-policy")).toBe("5;w=3600");
  });

  it("refuses a POST with an Idempotency-Key over the limit before anything runs, keeping no claim on the key", async () => {
    const user = await signUp();
    await rateLimitOverride(user.accountId, 2, 2, 3600);
    // The limiter and the key's claim run side by side on this path: an allowed one carries the headers.
    const first = await call("POST", "/v1/jobs", user.token, { body: JOB, headers: { "idempotency-key": "rl-1" } });
    expect(first.status).toBe(202);
    expect(first.headers.get("ratelimit-remaining")).toBe("1");
    expect((await call("GET", "/v1/jobs", user.token)).status).toBe(200);
    const refused = await call("POST", "/v1/jobs", user.token, { body: JOB, headers: { "idempotency-key": "rl-2" } });
    expect(refused.status).toBe(429);
    expect(refused.json.error.code).toBe("rate_limited");
    expect(refused.headers.get("retry-after")).not.toBeNull();
    // A replay of a stored response waits for the limiter too, and a malformed body loses to the 429.
    const replay = await call("POST", "/v1/jobs", user.token, { body: JOB, headers: { "idempotency-key": "rl-1" } });
    expect(replay.status).toBe(429);
    const malformed = await call("POST", "/v1/jobs", user.token, {
      body: { ...JOB, gpu_count: "two" },
      headers: { "idempotency-key": "rl-3" },
    });
    expect(malformed.status).toBe(429);
    const rows = await sql<{ key: string; state: string }>(
      "select key, state from idempotency_keys where account_id = $1 order by key",
      [user.accountId],
    );
    expect(rows).toEqual([{ key: "rl-1", state: "completed" }]);
    const [jobsMade] = await sql<{ n: number }>("select count(*)::int as n from jobs where account_id = $1", [
      user.accountId,
    ]);
    expect(jobsMade!.n).toBe(1);
  });

  it("limits each key and the account as a whole", async () => {
    const user = await signUp();
    await rateLimitOverride(user.accountId, 5, 3, 3600);
    const a = await createKey(user.token, ["jobs:read"]);
    const b = await createKey(user.token, ["jobs:read"]);
    // Creating the two keys took 2 of the account's 5 tokens; key a takes its 3: the account is at 0.
    for (let i = 0; i < 3; i++) expect((await call("GET", "/v1/jobs", a.secret)).status).toBe(200);
    // Key a's own bucket (3 per hour) refills slowest, so it is what a retry waits for.
    const keyLimited = await call("GET", "/v1/jobs", a.secret);
    expect(keyLimited.status).toBe(429);
    expect(keyLimited.json.error.details.scope).toBe("api_key");
    // Key b has its 3 tokens, but the account has none.
    const accountLimited = await call("GET", "/v1/jobs", b.secret);
    expect(accountLimited.status).toBe(429);
    expect(accountLimited.json.error.details.scope).toBe("account");
  });

  it("gives accounts entitled to Fast the higher plan", async () => {
    const standard = await signUp();
    const fast = await signUp({ fast_tier_enabled: true });
    const s = await call("GET", "/v1/me", standard.token);
    const f = await call("GET", "/v1/me", fast.token);
    expect(s.json.account.rate_limit).toMatchObject({ plan: "standard", account_limit: 600, key_limit: 300 });
    expect(f.json.account.rate_limit).toMatchObject({ plan: "fast", account_limit: 3000, key_limit: 1200 });
    expect(f.headers.get("ratelimit-limit")).toBe("1200");
  });
});

describe("quotas", () => {
  it("refuses GPUs beyond the account's concurrent cap with gpu_quota_exceeded, and frees them on cancel", async () => {
    const user = await signUp({ max_concurrent_gpus: 8 });
    // More CPU than any test node has, so it stays queued (a placed job's GPUs are freed only once
    // its agent has stopped it) whatever nodes other files register.
    const big = await call("POST", "/v1/jobs", user.token, { body: { ...JOB, gpu_count: 8, cpu_milli: 200_000 } });
    expect(big.status).toBe(202);
    const over = await call("POST", "/v1/jobs", user.token, { body: JOB });
    expect(over.status).toBe(403);
    expect(over.json.error).toMatchObject({
      code: "gpu_quota_exceeded",
      details: { limit: 8, in_use: 8, requested: 1 },
    });
    await call("POST", `/v1/jobs/${big.json.id}/cancel`, user.token);
    expect((await call("POST", "/v1/jobs", user.token, { body: JOB })).status).toBe(202);
  });

  it("holds concurrent submissions to the cap together", async () => {
    const user = await signUp({ max_concurrent_gpus: 4 });
    const results = await Promise.all(
      Array.from({ length: 6 }, () => call("POST", "/v1/jobs", user.token, { body: JOB })),
    );
    expect(results.filter((r) => r.status === 202)).toHaveLength(4);
    expect(results.filter((r) => r.status === 403)).toHaveLength(2);
  });

  it("holds a spend-capped account, and a job with a secret, to the GPU cap as well (the two-round-trip path)", async () => {
    const capped = await signUp({ max_concurrent_gpus: 2, monthly_spend_cap_cents: 1_000_000 });
    expect((await call("POST", "/v1/jobs", capped.token, { body: { ...JOB, gpu_count: 2 } })).status).toBe(202);
    const over = await call("POST", "/v1/jobs", capped.token, { body: JOB });
    expect(over.status).toBe(403);
    expect(over.json.error).toMatchObject({
      code: "gpu_quota_exceeded",
      details: { limit: 2, in_use: 2, requested: 1 },
    });
    const secretive = await signUp({ max_concurrent_gpus: 2 });
    const withSecret = { ...JOB, env: [{ name: "TOKEN", value: "s3cret", secret: true }] };
    expect((await call("POST", "/v1/jobs", secretive.token, { body: { ...withSecret, gpu_count: 2 } })).status).toBe(
      202,
    );
    const refused = await call("POST", "/v1/jobs", secretive.token, { body: withSecret });
    expect(refused.json.error).toMatchObject({ code: "gpu_quota_exceeded", details: { limit: 2, in_use: 2 } });
    // A refused submission leaves nothing behind: no job, no ledger row, no audit row.
    const [counts] = await sql<{ jobs: number; audits: number }>(
      `select (select count(*)::int from jobs where account_id = $1) as jobs,
              (select count(*)::int from audit_log where account_id = $1 and action = 'job.submitted') as audits`,
      [secretive.accountId],
    );
    expect(counts).toEqual({ jobs: 1, audits: 1 });
  });

  it("counts endpoints' minimum replicas against the GPU cap, and leaves nothing of a refused job", async () => {
    const user = await signUp({ max_concurrent_gpus: 3 });
    const endpoint = await call("POST", "/v1/endpoints", user.token, {
      body: {
        image: "127.0.0.1:5000/test/busybox:1",
        command: ["httpd", "-f"],
        gpu_count: 1,
        min_replicas: 2,
        max_replicas: 2,
        name: `q-${crypto.randomUUID().slice(0, 8)}`,
      },
    });
    expect(endpoint.json.error).toBeUndefined();
    expect(endpoint.status).toBe(201);
    const over = await call("POST", "/v1/jobs", user.token, { body: { ...JOB, gpu_count: 2 } });
    expect(over.status).toBe(403);
    expect(over.json.error).toMatchObject({
      code: "gpu_quota_exceeded",
      details: { limit: 3, in_use: 2, requested: 2 },
    });
    const [counts] = await sql<{ jobs: number; ledger: number; audits: number }>(
      `select (select count(*)::int from jobs where account_id = $1) as jobs,
              (select count(*)::int from job_submissions s join jobs j on j.id = s.job_id where j.account_id = $1) as ledger,
              (select count(*)::int from audit_log where account_id = $1 and action = 'job.submitted') as audits`,
      [user.accountId],
    );
    expect(counts).toEqual({ jobs: 0, ledger: 0, audits: 0 });
    expect((await call("POST", "/v1/jobs", user.token, { body: JOB })).status).toBe(202);
  });

  it("refuses work that could pass the monthly spend cap with spend_cap_exceeded", async () => {
    // Flex H100: 179 ¢ per GPU-hour. One job of 1 GPU for up to 1 h fits a 300 ¢ cap; two do not.
    const user = await signUp({ monthly_spend_cap_cents: 300 });
    const job = { ...JOB, gpu_models: ["H100"], max_runtime_s: 3600 };
    expect((await call("POST", "/v1/jobs", user.token, { body: job })).status).toBe(202);
    const over = await call("POST", "/v1/jobs", user.token, { body: job });
    expect(over.status).toBe(402);
    expect(over.json.error).toMatchObject({
      code: "spend_cap_exceeded",
      details: { cap_cents: 300, month_to_date_cents: 0, committed_cents: 179, requested_ceiling_cents: 179 },
    });
    // Usage already recorded this month counts too: 10 min of Flex H100 is 30 ¢ (29.83 rounded up).
    const other = await signUp({ monthly_spend_cap_cents: 200 });
    await sql(
      `insert into usage_events (account_id, job_run_id, tier, gpu_model, gpu_count, gpu_seconds, period_start, period_end)
       values ($1, $2, 'flex', 'H100', 1, 600, now(), now())`,
      [other.accountId, `run-${crypto.randomUUID()}`],
    );
    const me = await call("GET", "/v1/me", other.token);
    expect(me.json.account.quotas.month_to_date_cents).toBe(30);
    const refused = await call("POST", "/v1/jobs", other.token, { body: job });
    expect(refused.status).toBe(402);
    expect(refused.json.error.details.month_to_date_cents).toBe(30);
  });

  it("shows spend_cap_exceeded's month-to-date amounts only to callers who may read billing", async () => {
    const owner = await signUp({ monthly_spend_cap_cents: 300 });
    const job = { ...JOB, gpu_models: ["H100"], max_runtime_s: 3600 };
    expect((await call("POST", "/v1/jobs", owner.token, { body: job })).status).toBe(202);
    const member = await addMember(owner.accountId, "member");
    const key = await createKey(owner.token, ["jobs:write"]);
    for (const [token, account] of [
      [member.token, owner.accountId],
      [key.secret, undefined],
    ] as const) {
      const refused = await call("POST", "/v1/jobs", token, { body: job, account });
      expect(refused.status).toBe(402);
      expect(refused.json.error).toMatchObject({
        code: "spend_cap_exceeded",
        details: { cap_cents: 300, month_to_date_cents: null, committed_cents: null, requested_ceiling_cents: 179 },
      });
    }
    const shown = await call("POST", "/v1/jobs", owner.token, { body: job });
    expect(shown.json.error.details).toMatchObject({ month_to_date_cents: 0, committed_cents: 179 });
  });

  it("counts this month's share of a run that began last month, and endpoint replicas still running", async () => {
    const user = await signUp();
    const mtd = async () => (await call("GET", "/v1/me", user.token)).json.account.quotas.month_to_date_cents as number;
    expect(await mtd()).toBe(0);
    // 1 GPU from an hour before the 1st (UTC) to an hour after: half of it, 3,600 GPU-s, is this
    // month's: 179 ¢ of Flex H100. (Until now a run that began last month counted in neither.)
    await sql(
      `insert into usage_events (account_id, job_run_id, tier, gpu_model, gpu_count, gpu_seconds, period_start, period_end)
       select $1, $2, 'flex', 'H100', 1, 7200, m - interval '1 hour', m + interval '1 hour'
         from (select date_trunc('month', now() at time zone 'UTC') at time zone 'UTC' as m) month`,
      [user.accountId, `run-${crypto.randomUUID()}`],
    );
    expect(await mtd()).toBe(179);
    // A replica running for ten minutes (2 GPUs, Flex H100): counted before its run ends.
    const endpoint = await call("POST", "/v1/endpoints", user.token, {
      body: { name: `mtd-${crypto.randomUUID().slice(0, 8)}`, image: "busybox:1", gpu_count: 2, min_replicas: 0 },
    });
    expect(endpoint.status).toBe(201);
    const nodeId = `mtd-node-${crypto.randomUUID().slice(0, 8)}`;
    await sql(
      `insert into nodes (id, region, zone, gpu_model, gpu_count, cpu_milli, memory_mib, state)
       values ($1, 'us-west-1', 'test', 'H100', 8, 16000, 65536, 'ready')`,
      [nodeId],
    );
    const [run] = await sql<{ secs: number }>(
      `insert into replica_runs (id, endpoint_id, account_id, replica, attempt, node_id, status, placed_at, started_at)
       values ($1, $2, $3, 0, 1, $4, 'running', now(), now() - interval '10 minutes')
       returning extract(epoch from now() - greatest(started_at,
         date_trunc('month', now() at time zone 'UTC') at time zone 'UTC'))::float8 as secs`,
      [`pl-${crypto.randomUUID()}`, endpoint.json.id, user.accountId, nodeId],
    );
    const expected = 179 + Math.ceil((2 * run!.secs * 179) / 3600);
    const withReplica = await mtd();
    expect(withReplica).toBeGreaterThanOrEqual(expected);
    expect(withReplica).toBeLessThanOrEqual(expected + 1); // the seconds between the insert and the read
    // A run placed before the endpoint changed is priced by its own tier and GPUs (1 GPU of Fast,
    // 299 ¢ an hour), not the endpoint's present ones (2 GPUs of Flex).
    const [old] = await sql<{ secs: number }>(
      `insert into replica_runs (id, endpoint_id, account_id, replica, attempt, node_id, status, placed_at, started_at,
                                 tier, gpu_count)
       values ($1, $2, $3, 0, 1, $4, 'running', now(), now() - interval '10 minutes', 'fast', 1)
       returning extract(epoch from now() - started_at)::float8 as secs`,
      [`pl-${crypto.randomUUID()}`, endpoint.json.id, user.accountId, nodeId],
    );
    const withOld = await mtd();
    expect(withOld - withReplica).toBeGreaterThanOrEqual(Math.ceil((old!.secs * 299) / 3600) - 1);
    expect(withOld - withReplica).toBeLessThanOrEqual(Math.ceil((old!.secs * 299) / 3600) + 2);
    // A job running beside them on Flex H100 joins the replica's Flex line: one line per tier and model.
    const [job] = await sql<{ id: string }>(
      `insert into jobs (account_id, region, tier, image, gpu_count, cpu_milli, memory_mib, max_runtime_s, status)
       values ($1, 'us-west-1', 'flex', 'busybox', 1, 1000, 1024, 3600, 'running') returning id`,
      [user.accountId],
    );
    await sql(
      `insert into job_runs (id, job_id, account_id, attempt, node_id, status, gpu_count, placed_at, started_at)
       values ($1, $2, $3, 1, $4, 'running', 1, now(), now() - interval '5 minutes')`,
      [`pl-${crypto.randomUUID()}`, job!.id, user.accountId, nodeId],
    );
    const usage = await call("GET", "/v1/usage", user.token);
    const running = usage.json.lines.filter((l: { state: string }) => l.state === "running");
    expect(running.map((l: { tier: string }) => l.tier).sort()).toEqual(["fast", "flex"]);
    const flex = running.find((l: { tier: string }) => l.tier === "flex");
    // The replica's 2 GPUs × 10 min and the job's 1 GPU × 5 min, in one line.
    expect(flex.gpu_seconds).toBeGreaterThanOrEqual(2 * 600 + 300);
    expect(flex.gpu_seconds).toBeLessThanOrEqual(2 * 600 + 300 + 10);
  });
});
