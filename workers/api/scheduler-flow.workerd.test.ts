/**
 * The API with the real RegionScheduler: nodes registering through the agent routes, jobs placed,
 * run, cancelled, retried into the dead-letter list and re-driven, endpoints kept at their minimum,
 * the region summary, and the submission's failure semantics (row first, reconciler re-submits).
 * The scheduler's outbox is flushed by running its alarm (no waiting on timers).
 */
// The API's schemas extend core's with OpenAPI metadata: @hono/zod-openapi must load before core/schemas.
import "@hono/zod-openapi";
import { createExecutionContext, env, runDurableObjectAlarm, waitOnExecutionContext } from "cloudflare:test";
import { eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { AGENT_ROUTES } from "../../core/schemas";
import { createApp } from "../app";
import { newKeyEntry, sealEnv } from "../auth/env-secrets";
import { withDb } from "../db/client";
import { jobs } from "../db/schema";
import { createLogger } from "../http/log";
import { encodeSeqCursor, encodeTimeCursor } from "../http/pagination";
import { regionScheduler } from "../regions";
import { reconcileEndpoints } from "./endpoints";
import { forwardCancels, recheckAcknowledged, reconcileSubmissions, submitJob } from "./submission";
import { type Agent, gpuUse, measuredHeartbeat, poll, REGION, report, retire, startNode } from "./test-agent";
import { BASE, call, JOB, signUp, sql, type TestUser } from "./test-support";
import type { JobRow } from "./views";

const log = createLogger("error");

/** Deliver the scheduler's outbox to Postgres now. */
async function flush() {
  await runDurableObjectAlarm(regionScheduler(env, REGION));
}

async function submit(user: TestUser, body: Record<string, unknown>) {
  const res = await call("POST", "/v1/jobs", user.token, { body: { ...JOB, ...body } });
  expect(res.status).toBe(202);
  return res.json as {
    id: string;
    status: string;
    attempts: number;
    waiting_reason: string | null;
    placements: { node_id: string; attempt: number; gpu_indices: number[]; placement_id: string }[];
  };
}

async function getJob(user: TestUser, id: string) {
  const res = await call("GET", `/v1/jobs/${id}`, user.token);
  expect(res.status).toBe(200);
  return res.json;
}

describe("a job from submission to success", () => {
  it("is placed on a registered node, run by its agent, and recorded with its events, logs and usage", async () => {
    const op = await signUp({ is_operator: true });
    const agent = await startNode(op);
    const user = await signUp();
    const job = await submit(user, {
      gpu_count: 2,
      gpu_models: ["H100"],
      env: [{ name: "TOKEN", value: "s3cret-for-the-container", secret: true }],
    });
    expect(job.status).toBe("placed");
    // The submission's answer already says where (the scheduler's view, as GET shows it).
    expect(job.attempts).toBe(1);
    expect(job.placements).toHaveLength(1);

    const live = await getJob(user, job.id);
    expect(live.status).toBe("placed");
    expect(live.placements).toHaveLength(1);
    const placement = live.placements[0];
    expect(placement).toMatchObject({ node_id: agent.nodeId, attempt: 1 });
    expect(placement.gpu_indices).toHaveLength(2);
    expect(job.placements[0]).toEqual(placement);
    expect(JSON.stringify(live)).not.toContain("s3cret-for-the-container");

    // The agent gets the placement, with the secret it must pass to the container.
    const set = await poll(agent);
    const mine = set.placements.find((p) => p.job_id === job.id)!;
    expect(mine).toMatchObject({
      placement_id: placement.placement_id,
      desired: "running",
      gpu_indices: placement.gpu_indices,
    });
    expect(mine.env).toEqual([{ name: "TOKEN", value: "s3cret-for-the-container" }]);

    expect((await report(agent, mine.placement_id, "pulling")).accepted).toBe(1);
    expect((await report(agent, mine.placement_id, "running")).accepted).toBe(1);
    const logs = await call("POST", AGENT_ROUTES.logs, agent.token, {
      body: {
        lines: [
          { placement_id: mine.placement_id, seq: 0, stream: "stdout", at: Date.now(), line: "epoch 1" },
          { placement_id: mine.placement_id, seq: 1, stream: "stdout", at: Date.now(), line: "epoch 2" },
        ],
      },
    });
    expect(logs.json).toEqual({ accepted: 2, duplicates: 0 });
    const beat = await call("POST", AGENT_ROUTES.heartbeat, agent.token, {
      body: { at: Date.now(), gpus: [{ index: 0, healthy: true }], running: [mine.placement_id] },
    });
    expect(beat.json).toEqual({ state: "ready" });
    expect((await report(agent, mine.placement_id, "exited", { exit_code: 0 })).accepted).toBe(1);
    // The same event again (the agent retried its batch) is a duplicate; an unknown placement is refused.
    const again = await call("POST", AGENT_ROUTES.events, agent.token, {
      body: {
        events: [
          {
            event_id: `${agent.nodeId}-${agent.eventSeq}`,
            placement_id: mine.placement_id,
            at: Date.now(),
            type: "exited",
            exit_code: 0,
          },
          { event_id: "stray", placement_id: "pl-nobody", at: Date.now(), type: "running" },
        ],
      },
    });
    expect(again.json).toEqual({
      accepted: 0,
      duplicates: 1,
      rejected: [{ event_id: "stray", code: "unknown_placement" }],
    });

    await flush();
    const done = await getJob(user, job.id);
    expect(done).toMatchObject({ status: "succeeded", exit_code: 0, attempts: 1 });
    expect(done.finished_at).not.toBeNull();
    expect(done.placements).toEqual([
      expect.objectContaining({
        placement_id: mine.placement_id,
        node_id: agent.nodeId,
        status: "succeeded",
        gpu_indices: placement.gpu_indices,
        exit_code: 0,
      }),
    ]);
    const events = await call("GET", `/v1/jobs/${job.id}/events`, user.token);
    expect(events.status).toBe(200);
    const types = events.json.data.map((e: { type: string }) => e.type);
    expect(types[0]).toBe("queued");
    expect(types).toEqual(expect.arrayContaining(["placed", "running", "succeeded"]));
    expect(events.json.data.find((e: { type: string }) => e.type === "placed")).toMatchObject({
      node_id: agent.nodeId,
      gpu_indices: placement.gpu_indices,
    });
    const firstTwo = await call("GET", `/v1/jobs/${job.id}/events?limit=2`, user.token);
    const rest = await call("GET", `/v1/jobs/${job.id}/events?cursor=${firstTwo.json.next_cursor}`, user.token);
    expect([...firstTwo.json.data, ...rest.json.data].map((e: { seq: number }) => e.seq)).toEqual(
      events.json.data.map((e: { seq: number }) => e.seq),
    );
    // A forged cursor past the int4 `seq` column is one this API never returned (not Postgres's 500).
    const forged = await call("GET", `/v1/jobs/${job.id}/events?cursor=${encodeSeqCursor(2 ** 31)}`, user.token);
    expect(forged.status).toBe(400);
    expect(forged.json.error.code).toBe("invalid_cursor");
    const onlyPlaced = await call("GET", `/v1/jobs/${job.id}/events?type=placed`, user.token);
    expect(onlyPlaced.json.data.map((e: { type: string }) => e.type)).toEqual(["placed"]);
    const lines = await call("GET", `/v1/jobs/${job.id}/logs`, user.token);
    expect(lines.json.data.map((l: { line: string }) => l.line)).toEqual(["epoch 1", "epoch 2"]);
    const [usage] = await sql<{ gpu_count: number }>("select gpu_count from usage_events where job_id = $1", [job.id]);
    expect(usage?.gpu_count).toBe(2);

    // Another account sees none of it.
    const stranger = await signUp();
    expect((await call("GET", `/v1/jobs/${job.id}/events`, stranger.token)).status).toBe(404);
    await retire(op, agent);
  });
});

describe("waiting, cancelling and regions", () => {
  it("shows why a queued job waits, lists capacity per region, and cancels queued and running jobs", async () => {
    const op = await signUp({ is_operator: true });
    const agent = await startNode(op, "H100", 8);
    const user = await signUp();

    // More CPU than any node has: it waits, and says why.
    const waiting = await submit(user, { cpu_milli: 200_000 });
    expect(waiting.status).toBe("queued");
    expect(waiting.waiting_reason).toMatch(/CPU/);
    const state = await getJob(user, waiting.id);
    expect(state.status).toBe("queued");
    expect(state.waiting_reason).toMatch(/CPU/);

    const regions = await call("GET", "/v1/regions", user.token);
    expect(regions.status).toBe(200);
    const region = regions.json.data.find((r: { region: string }) => r.region === REGION);
    expect(region.available).toBe(true);
    expect(region.gpus.find((g: { gpu_model: string }) => g.gpu_model === "H100").total).toBeGreaterThanOrEqual(8);
    expect(region.queues.find((q: { tier: string }) => q.tier === "flex").queued_jobs).toBeGreaterThanOrEqual(1);
    expect(JSON.stringify(regions.json)).not.toContain(agent.nodeId);
    // GPUs held as Fast headroom are shown apart from free ones.
    const h100 = async () =>
      (await call("GET", `/v1/regions?region=${REGION}`, user.token)).json.data[0].gpus.find(
        (g: { gpu_model: string }) => g.gpu_model === "H100",
      ) as { free: number; held: number };
    const before = await h100();
    const hold = `test-hold-${crypto.randomUUID().slice(0, 8)}`;
    const scheduler = regionScheduler(env, REGION);
    const reserved = await scheduler.reserve({
      reservation_id: hold,
      gpu_model: "H100",
      gpu_count: 2,
      tier: "fast",
      expires_at: null,
      reason: "test",
    });
    expect(reserved.ok).toBe(true);
    expect(await h100()).toMatchObject({ free: before.free - 2, held: before.held + 2 });
    await scheduler.release(hold);
    const one = await call("GET", `/v1/regions?region=${REGION}`, user.token);
    expect(one.json.data.map((r: { region: string }) => r.region)).toEqual([REGION]);
    const mars = await call("GET", "/v1/regions?region=mars", user.token);
    expect(mars.status).toBe(400);
    expect(mars.json.error).toMatchObject({
      code: "invalid_request",
      details: { location: "query", fields: [{ field: "region", code: "unknown_region" }] },
    });
    const fastOnly = await call("GET", "/v1/regions?tier=fast", user.token);
    expect(fastOnly.json.data[0].queues.map((q: { tier: string }) => q.tier)).toEqual(["fast"]);

    const cancelledQueued = await call("POST", `/v1/jobs/${waiting.id}/cancel`, user.token);
    expect(cancelledQueued.json.status).toBe("cancelled");

    // A running job: the scheduler marks it cancelled and asks its agent to stop the container.
    const running = await submit(user, { gpu_models: ["H100"] });
    const set = await poll(agent);
    const placement = set.placements.find((p) => p.job_id === running.id)!;
    await report(agent, placement.placement_id, "running");
    const cancel = await call("POST", `/v1/jobs/${running.id}/cancel`, user.token);
    expect(cancel.status).toBe(200);
    expect(cancel.json.status).toBe("cancelled");
    const after = await poll(agent, set.version);
    expect(after.placements.find((p) => p.placement_id === placement.placement_id)?.desired).toBe("stopped");
    await report(agent, placement.placement_id, "exited", { exit_code: 143, stopped_by: "cancel" });
    await flush();
    const final = await getJob(user, running.id);
    expect(final.status).toBe("cancelled");
    const again = await call("POST", `/v1/jobs/${running.id}/cancel`, user.token);
    expect(again.json.status).toBe("cancelled");
    await retire(op, agent);
  });
});

describe("operators", () => {
  it("see a node whose agent registered with its container engine unreachable: cordoned, with the reason", async () => {
    const op = await signUp({ is_operator: true });
    const engine_stuck = {
      since: Date.now() - 1_000,
      operation: "ping",
      detail: "the container engine is not reachable",
    };
    const agent = await startNode(op, "H100", 8, () => ({ engine_stuck }));
    const listed = await call("GET", `/v1/operator/nodes?limit=100`, op.token);
    const node = listed.json.data.find((n: { id: string }) => n.id === agent.nodeId);
    expect(node.live).toMatchObject({
      state: "cordoned",
      engine_stuck: { operation: "ping", detail: "the container engine is not reachable" },
    });
    await retire(op, agent);
  });

  it("get a 400 for a forged node-list cursor whose id is no node id, and a page for one that is", async () => {
    const op = await signUp({ is_operator: true });
    const list = (id: string) =>
      call("GET", `/v1/operator/nodes?cursor=${encodeTimeCursor("2026-01-01T00:00:00.000000Z", id)}`, op.token);
    const forged = await list("a\u0000");
    expect(forged.status).toBe(400);
    expect(forged.json.error.code).toBe("invalid_cursor");
    expect((await list("cap-1a2b3c4d-0")).status).toBe(200);
  });

  it("see live nodes, drain one, and re-drive a dead-lettered job, each audited", async () => {
    const op = await signUp({ is_operator: true });
    const agent = await startNode(op, "H100", 8);
    const user = await signUp();

    const listed = await call("GET", `/v1/operator/nodes?limit=100`, op.token);
    const node = listed.json.data.find((n: { id: string }) => n.id === agent.nodeId);
    expect(node.live).toMatchObject({ state: "ready" });
    expect(node.live.free_gpus.length).toBeGreaterThan(0);

    // One attempt only: a failure goes straight to the dead-letter list.
    const job = await submit(user, { gpu_models: ["H100"], max_attempts: 1 });
    const placement = (await poll(agent)).placements.find((p) => p.job_id === job.id)!;
    await report(agent, placement.placement_id, "running");
    await report(agent, placement.placement_id, "exited", { exit_code: 3 });
    const letters = await call("GET", "/v1/operator/dead-letters", op.token);
    expect(letters.status).toBe(200);
    const letter = letters.json.data.find((d: { job_id: string }) => d.job_id === job.id);
    expect(letter).toMatchObject({ account_id: user.accountId, region: REGION, attempts: 1 });
    expect(letter.reasons.join(" ")).toMatch(/3/);
    const filtered = await call("GET", `/v1/operator/dead-letters?account_id=${user.accountId}`, op.token);
    expect(filtered.json.data.map((d: { job_id: string }) => d.job_id)).toEqual([job.id]);
    // Users see it as failed and dead-lettered.
    const failed = await getJob(user, job.id);
    expect(failed).toMatchObject({ status: "failed", dead_lettered: true });

    const redrive = await call("POST", `/v1/operator/dead-letters/${job.id}/redrive`, op.token);
    expect(redrive.status).toBe(200);
    expect(["queued", "placed"]).toContain(redrive.json.status);
    const twice = await call("POST", `/v1/operator/dead-letters/${job.id}/redrive`, op.token);
    expect(twice.status).toBe(409);
    expect((await call("POST", `/v1/operator/dead-letters/${crypto.randomUUID()}/redrive`, op.token)).status).toBe(404);

    const drained = await call("POST", `/v1/operator/nodes/${agent.nodeId}/drain`, op.token);
    expect(drained.status).toBe(200);
    expect(drained.json).toMatchObject({ state: "draining", live: { state: "draining" } });
    const beat = await call("POST", AGENT_ROUTES.heartbeat, agent.token, { body: { at: Date.now(), gpus: [] } });
    expect(beat.json.state).toBe("draining");

    const audit = await sql<{ action: string }>(
      "select action from audit_log where actor_type = 'operator' and (target_id = $1 or target_id = $2) order by id",
      [agent.nodeId, job.id],
    );
    expect(audit.map((a) => a.action)).toEqual(["node.created", "job.redriven", "node.drained"]);
    // Not for anyone else.
    expect((await call("POST", `/v1/operator/nodes/${agent.nodeId}/drain`, user.token)).status).toBe(403);
    expect((await call("GET", "/v1/operator/dead-letters", user.token)).status).toBe(403);
  });

  it("show how a failed attempt's run ended while its job waits for the retry", async () => {
    const op = await signUp({ is_operator: true });
    const agent = await startNode(op, "H100", 8);
    const user = await signUp();
    const job = await submit(user, { gpu_models: ["H100"], max_attempts: 2 });
    const placement = (await poll(agent)).placements.find((p) => p.job_id === job.id)!;
    await report(agent, placement.placement_id, "running");
    await report(agent, placement.placement_id, "exited", { exit_code: 3 });
    const waiting = await getJob(user, job.id);
    expect(waiting.status).toBe("queued");
    expect(waiting.placements).toMatchObject([
      { placement_id: placement.placement_id, status: "failed", exit_code: 3, finished_at: expect.any(String) },
    ]);
    // The region is shared: neither its retry nor the next test's work goes where it should not.
    expect((await call("POST", `/v1/jobs/${job.id}/cancel`, user.token)).status).toBe(200);
    await retire(op, agent);
  });

  it("cordon a node by hand and uncordon it: nothing new lands on it meanwhile, each audited", async () => {
    const op = await signUp({ is_operator: true });
    const agent = await startNode(op, "H100", 8);
    const user = await signUp();
    const action = (verb: string, id = agent.nodeId) => `/v1/operator/nodes/${id}/${verb}`;
    // Operators only.
    expect((await call("POST", action("cordon"), user.token)).status).toBe(403);
    expect((await call("POST", action("uncordon"), user.token)).status).toBe(403);
    expect((await call("POST", action("cordon", "node-nope"), op.token)).json.error.code).toBe("not_found");
    const tooLong = await call("POST", action("cordon"), op.token, { body: { reason: "x".repeat(501) } });
    expect(tooLong.status).toBe(400);

    const cordoned = await call("POST", action("cordon"), op.token, {
      body: { reason: "inspecting NVLink" },
      headers: { "idempotency-key": `cordon-${agent.nodeId}` },
    });
    expect(cordoned.status).toBe(200);
    expect(cordoned.json).toMatchObject({
      state: "ready",
      live: {
        state: "cordoned",
        engine_stuck: null,
        cordon: { reason: "inspecting NVLink", by: `user:${op.userId}`, since: expect.any(String) },
      },
    });
    // Again, without a body: the first cordon stays.
    const again = await call("POST", action("cordon"), op.token);
    expect(again.json.live.cordon).toEqual(cordoned.json.live.cordon);

    const job = await submit(user, { gpu_models: ["H100"], gpu_count: 8 });
    expect((await poll(agent)).placements.map((p) => p.job_id)).not.toContain(job.id);
    expect((await getJob(user, job.id)).waiting_reason).toMatch(/1 node cordoned/);

    const uncordoned = await call("POST", action("uncordon"), op.token);
    expect(uncordoned.status).toBe(200);
    expect(uncordoned.json.live).toMatchObject({ state: "ready", cordon: null });
    // What waited is placed there at once.
    expect((await poll(agent)).placements.map((p) => p.job_id)).toContain(job.id);

    // Drained, it cannot be cordoned (it takes no new work already, for good).
    await retire(op, agent);
    const draining = await call("POST", action("cordon"), op.token);
    expect([draining.status, draining.json.error.code]).toEqual([409, "node_draining"]);
    const audit = await sql<{ action: string; data: Record<string, unknown> }>(
      "select action, data from audit_log where actor_type = 'operator' and target_id = $1 order by id",
      [agent.nodeId],
    );
    expect(audit.map((a) => [a.action, a.data])).toEqual([
      ["node.created", expect.anything()],
      ["node.cordoned", { region: REGION, reason: "inspecting NVLink" }],
      ["node.cordoned", { region: REGION, reason: null }],
      ["node.uncordoned", { region: REGION }],
      ["node.drained", { region: REGION }],
    ]);
  });
});

describe("GPU models", () => {
  it("refuses work that allows only models the region neither has nor buys, storing nothing; takes it once a node has them", async () => {
    const op = await signUp({ is_operator: true });
    const user = await signUp();
    const refused = await call("POST", "/v1/jobs", user.token, { body: { ...JOB, gpu_models: ["H200"] } });
    expect(refused.status).toBe(422);
    expect(refused.json.error).toMatchObject({
      code: "gpu_model_unavailable",
      message: `gpu_models: ${REGION} has no H200 GPUs and buys H100 only; allow H100, or leave gpu_models empty for any`,
      details: { fields: [{ field: "gpu_models", code: "gpu_model_unavailable" }] },
    });
    const endpoint = await call("POST", "/v1/endpoints", user.token, {
      body: { name: "h200", image: "busybox", gpu_count: 1, gpu_models: ["H200"], min_replicas: 0, max_replicas: 1 },
    });
    expect(endpoint.json.error.code).toBe("gpu_model_unavailable");
    const stored = await sql<{ n: number }>(
      "select (select count(*) from jobs where account_id = $1) + (select count(*) from endpoints where account_id = $1) as n",
      [user.accountId],
    );
    expect(Number(stored[0]!.n)).toBe(0);
    // Any model, or the one the region buys among others, is taken without asking the nodes.
    expect(
      (await call("POST", "/v1/jobs", user.token, { body: { ...JOB, gpu_models: ["H200", "H100"] } })).status,
    ).toBe(202);

    const any = await call("POST", "/v1/endpoints", user.token, {
      body: { name: "any", image: "busybox", gpu_count: 1, min_replicas: 0, max_replicas: 1 },
    });
    expect(any.status).toBe(201);
    const patched = await call("PATCH", `/v1/endpoints/${any.json.id}`, user.token, { body: { gpu_models: ["H200"] } });
    expect(patched.json.error.code).toBe("gpu_model_unavailable");

    const agent = await startNode(op, "H200", 8);
    expect((await call("POST", "/v1/jobs", user.token, { body: { ...JOB, gpu_models: ["H200"] } })).status).toBe(202);
    const repatched = await call("PATCH", `/v1/endpoints/${any.json.id}`, user.token, {
      body: { gpu_models: ["H200"] },
    });
    expect(repatched.json.gpu_models).toEqual(["H200"]);
    await retire(op, agent);
  });
});

describe("endpoints with the scheduler", () => {
  it("keeps the minimum replicas placed, and removes them when deleted", async () => {
    const op = await signUp({ is_operator: true });
    const agent = await startNode(op, "H200", 8);
    const user = await signUp();
    const created = await call("POST", "/v1/endpoints", user.token, {
      body: { name: "serve", image: "busybox", gpu_count: 1, gpu_models: ["H200"], min_replicas: 2, max_replicas: 4 },
    });
    expect(created.status).toBe(201);
    expect(created.json.synced).toBe(true);
    expect(created.json.replicas).toHaveLength(2);
    const read = await call("GET", `/v1/endpoints/${created.json.id}`, user.token);
    expect(read.json.replicas.map((r: { node_id: string | null }) => r.node_id)).toEqual([agent.nodeId, agent.nodeId]);
    // Placed, not running: not ready; never restarted.
    expect(read.json.replicas.map((r: { ready: boolean | null }) => r.ready)).toEqual([false, false]);
    expect(read.json.replicas[0]).toMatchObject({ restarts: 0, last_exit: null });
    const onNode = (await poll(agent)).placements.filter((p) => p.job_id.startsWith(created.json.id));
    expect(onNode).toHaveLength(2);

    const grown = await call("PATCH", `/v1/endpoints/${created.json.id}`, user.token, { body: { min_replicas: 3 } });
    expect(grown.json.replicas).toHaveLength(3);
    const deleted = await call("DELETE", `/v1/endpoints/${created.json.id}`, user.token);
    expect(deleted.json).toMatchObject({ status: "deleted", synced: true });
    const stopped = (await poll(agent)).placements.filter((p) => p.job_id.startsWith(created.json.id));
    expect(stopped.every((p) => p.desired === "stopped")).toBe(true);
    await retire(op, agent);
  });
});

describe("resource use", () => {
  it("shows a running job's and replica's last measured use, their own GPUs only, until they end", async () => {
    const op = await signUp({ is_operator: true });
    const agent = await startNode(op);
    const user = await signUp();
    const [a, b] = [await submit(user, { gpu_models: ["H100"] }), await submit(user, { gpu_models: ["H100"] })];
    const endpoint = await call("POST", "/v1/endpoints", user.token, {
      body: { name: "measured", image: "busybox", gpu_count: 1, gpu_models: ["H100"] },
    });
    expect(endpoint.status).toBe(201);
    const placed = (await poll(agent)).placements;
    const [pa, pb, pr] = [a.id, b.id, endpoint.json.id].map((id) => placed.find((p) => p.job_id.startsWith(id))!);
    for (const p of [pa!, pb!, pr!]) await report(agent, p.placement_id, "running");
    expect((await getJob(user, a.id)).placements[0].metrics).toBeNull();

    const before = Date.now();
    await measuredHeartbeat(agent, 1, { [pa!.placement_id]: 150, [pb!.placement_id]: 40, [pr!.placement_id]: 5 });
    const measured = (await getJob(user, a.id)).placements[0].metrics;
    expect(measured).toEqual({
      at: expect.any(String),
      cpu_pct: 150,
      memory_bytes: 3e9,
      memory_limit_bytes: 16 * 1024 ** 3,
      pids: 7,
      gpus: pa!.gpu_indices.map((i) => gpuUse(i, 1)),
    });
    expect(Date.parse(measured.at)).toBeGreaterThanOrEqual(before);
    expect((await getJob(user, b.id)).placements[0].metrics).toMatchObject({
      cpu_pct: 40,
      gpus: pb!.gpu_indices.map((i) => gpuUse(i, 1)),
    });
    const read = await call("GET", `/v1/endpoints/${endpoint.json.id}`, user.token);
    expect(read.json.replicas[0].metrics).toMatchObject({ cpu_pct: 5, gpus: pr!.gpu_indices.map((i) => gpuUse(i, 1)) });

    await measuredHeartbeat(agent, 2, { [pa!.placement_id]: 90, [pb!.placement_id]: 40, [pr!.placement_id]: 5 });
    expect((await getJob(user, a.id)).placements[0].metrics).toMatchObject({
      cpu_pct: 90,
      gpus: pa!.gpu_indices.map((i) => gpuUse(i, 2)),
    });

    await report(agent, pa!.placement_id, "exited", { exit_code: 0 });
    expect((await getJob(user, a.id)).placements[0]).toMatchObject({ status: "succeeded", metrics: null });
    await flush();
    expect((await getJob(user, a.id)).placements[0]).toMatchObject({ status: "succeeded", metrics: null });
    expect((await call("POST", `/v1/jobs/${b.id}/cancel`, user.token)).status).toBe(200);
    expect((await call("DELETE", `/v1/endpoints/${endpoint.json.id}`, user.token)).status).toBe(200);
    await retire(op, agent);
  });
});

describe("registry credentials for a placement's pull", () => {
  it("go only to the node running the account's placement, for its image's registry, while it is active", async () => {
    const op = await signUp({ is_operator: true });
    const agent = await startNode(op, "H200", 8);
    const other = await startNode(op, "H200", 8);
    await retire(op, other);
    const user = await signUp();
    const set = await call("POST", "/v1/registry-credentials", user.token, {
      body: { registry: "ghcr.io", username: "puller", password: "ghp_token_for_nodes" },
    });
    expect(set.status).toBe(201);
    const auth = (a: Agent, placementId: string) =>
      call("GET", AGENT_ROUTES.registryAuth.replace("{placement_id}", encodeURIComponent(placementId)), a.token);

    const job = await submit(user, { image: "ghcr.io/acme/private-model:1", gpu_models: ["H200"] });
    const publicJob = await submit(user, { image: "127.0.0.1:5000/test/busybox:1", gpu_models: ["H200"] });
    const placements = (await poll(agent)).placements;
    const mine = placements.find((p) => p.job_id === job.id)!;
    const pub = placements.find((p) => p.job_id === publicJob.id)!;

    const answer = await auth(agent, mine.placement_id);
    expect(answer.status).toBe(200);
    expect(answer.json).toEqual({
      registry: "ghcr.io",
      credentials: { username: "puller", password: "ghp_token_for_nodes" },
    });
    // No credentials for the local registry: the agent pulls anonymously.
    expect((await auth(agent, pub.placement_id)).json).toEqual({ registry: "127.0.0.1:5000", credentials: null });
    // Another node's token learns nothing of this placement; nor does anyone without a node token.
    const stranger = await auth(other, mine.placement_id);
    expect(stranger.status).toBe(404);
    expect(stranger.json.error.code).toBe("unknown_placement");
    expect((await auth({ ...agent, token: user.token }, mine.placement_id)).status).toBe(401);

    // Removed credentials stop at once; an ended placement gets none.
    await call("DELETE", `/v1/registry-credentials/${set.json.id}`, user.token);
    expect((await auth(agent, mine.placement_id)).json).toEqual({ registry: "ghcr.io", credentials: null });
    await report(agent, mine.placement_id, "running");
    await report(agent, mine.placement_id, "exited", { exit_code: 0 });
    expect((await auth(agent, mine.placement_id)).status).toBe(404);
    await retire(op, agent);
  });
});

/** A job stored as the API stores it (row and unacknowledged ledger row), not yet submitted. */
async function storedJob(user: TestUser, storedEnv: unknown[] = []): Promise<{ id: string; stored: JobRow }> {
  const [row] = await sql<{ id: string }>(
    `insert into jobs (account_id, region, tier, image, gpu_count, cpu_milli, memory_mib, max_runtime_s, env)
     values ($1, $2, 'flex', 'busybox', 1, 1000, 1024, 60, $3::jsonb) returning id`,
    [user.accountId, REGION, JSON.stringify(storedEnv)],
  );
  const id = row!.id;
  await sql("insert into job_submissions (job_id, region) values ($1, $2)", [id, REGION]);
  const [stored] = await withDb(env, (db) => db.select().from(jobs).where(eq(jobs.id, id)));
  return { id, stored: stored! };
}

describe("submission's failure semantics", () => {
  /** The env with a region scheduler that cannot be reached (every call throws, as on a network failure). */
  const unreachable = {
    ...env,
    REGION_SCHEDULER: {
      idFromName: (name: string) => env.REGION_SCHEDULER.idFromName(name),
      get: () =>
        new Proxy(
          {},
          {
            get: () => () => Promise.reject(new Error("Network connection lost.")),
          },
        ),
    },
  } as unknown as Env;

  it("keeps the job queued when the scheduler call fails, and the reconciler submits it later", async () => {
    const user = await signUp();
    const job = await submit(user, { gpu_models: ["H100"] });
    // A second job, stored as the API stores it, whose submission fails.
    const { id, stored } = await storedJob(user);
    const outcome = await withDb(env, (db) => submitJob(unreachable, db, stored, log));
    expect(outcome).toEqual({ outcome: "failed" });
    const [ledger] = await sql<{ acked_at: Date | null; attempts: number; last_error: string }>(
      "select acked_at, attempts, last_error from job_submissions where job_id = $1",
      [id],
    );
    expect(ledger).toMatchObject({ acked_at: null, attempts: 1, last_error: "Network connection lost." });
    expect((await getJob(user, id)).status).toBe("queued");
    expect(await regionScheduler(env, REGION).jobState(id)).toBeNull();

    // Too young for the reconciler (the creating request may still be submitting it).
    expect((await withDb(env, (db) => reconcileSubmissions(env, db, log))).submitted).toBe(0);
    await sql("update jobs set created_at = now() - interval '1 minute' where id = $1", [id]);
    const first = await withDb(env, (db) => reconcileSubmissions(env, db, log));
    expect(first).toEqual({ submitted: 1, acked: 1 });
    expect((await regionScheduler(env, REGION).jobState(id))?.id).toBe(id);
    const [acked] = await sql<{ acked_at: Date | null }>("select acked_at from job_submissions where job_id = $1", [
      id,
    ]);
    expect(acked!.acked_at).not.toBeNull();
    // Nothing left to do; the first job was acknowledged when it was created.
    expect((await withDb(env, (db) => reconcileSubmissions(env, db, log))).submitted).toBe(0);
    const [firstLedger] = await sql<{ acked_at: Date | null }>(
      "select acked_at from job_submissions where job_id = $1",
      [job.id],
    );
    expect(firstLedger!.acked_at).not.toBeNull();
  });

  it("re-submits an acknowledged queued job the scheduler no longer knows, and leaves known ones alone", async () => {
    const user = await signUp({ max_concurrent_gpus: 128 });
    // 64 GPUs (8 whole nodes): more than this file's region ever has, so it stays queued.
    const known = await submit(user, { gpu_count: 64 });
    // A job acknowledged long ago whose state the object lost (as after a wiped local object).
    const [row] = await sql<{ id: string }>(
      `insert into jobs (account_id, region, tier, image, gpu_count, cpu_milli, memory_mib, max_runtime_s)
       values ($1, $2, 'flex', 'busybox', 1, 1000, 1024, 60) returning id`,
      [user.accountId, REGION],
    );
    const lost = row!.id;
    await sql("insert into job_submissions (job_id, region, acked_at) values ($1, $2, now() - interval '1 hour')", [
      lost,
      REGION,
    ]);
    await sql("update job_submissions set last_attempt_at = now() - interval '1 hour' where job_id = $1", [known.id]);
    expect(await regionScheduler(env, REGION).jobState(lost)).toBeNull();
    const result = await withDb(env, (db) => recheckAcknowledged(env, db, log));
    expect(result.resubmitted).toBe(1);
    expect(result.checked).toBeGreaterThanOrEqual(2);
    expect((await regionScheduler(env, REGION).jobState(lost))?.id).toBe(lost);
    // Both were just checked: nothing is due again for a while.
    expect((await withDb(env, (db) => recheckAcknowledged(env, db, log))).checked).toBe(0);
    await call("POST", `/v1/jobs/${known.id}/cancel`, user.token);
    await call("POST", `/v1/jobs/${lost}/cancel`, user.token);
  });

  it("fails a job whose sealed secrets no configured key opens, with the reason, instead of retrying it", async () => {
    const user = await signUp();
    // Sealed under a key the deployment no longer lists (dropped from ENV_SECRETS_KEYS too early).
    const sealedEnv = await sealEnv({ ENV_SECRETS_KEYS: newKeyEntry("gone") }, user.accountId, [
      { name: "TOKEN", value: "s3cret", secret: true },
    ]);
    const { id, stored } = await storedJob(user, sealedEnv);
    const outcome = await withDb(env, (db) => submitJob(env, db, stored, log));
    expect(outcome).toEqual({ outcome: "rejected" });
    const failed = await getJob(user, id);
    expect(failed.status).toBe("failed");
    expect(failed.failure_reason).toMatch(
      /^its secret environment values cannot be opened: the secret TOKEN was sealed with key gone/,
    );
    expect(await regionScheduler(env, REGION).jobState(id)).toBeNull();
  });

  it("does not re-submit a job cancelled while the scheduler was unreachable", async () => {
    const user = await signUp();
    const job = await submit(user, {});
    await regionScheduler(env, REGION).cancel(job.id);
    // Make it look never acknowledged and cancelled in Postgres: the reconciler must leave it alone.
    await sql("update job_submissions set acked_at = null where job_id = $1", [job.id]);
    await sql("update jobs set status = 'cancelled', created_at = now() - interval '1 minute' where id = $1", [job.id]);
    const result = await withDb(env, (db) => reconcileSubmissions(env, db, log));
    expect(result.submitted).toBe(0);
  });

  it("cancels a job without an unreachable scheduler only if it never acknowledged it, and passes the cancel on", async () => {
    const user = await signUp({ max_concurrent_gpus: 128 });
    const app = createApp();
    /** POST /v1/jobs/{id}/cancel through the API with the scheduler unreachable. */
    const cancelUnreachable = async (id: string) => {
      const ctx = createExecutionContext();
      const res = await app.fetch(
        new Request(`${BASE}/v1/jobs/${id}/cancel`, {
          method: "POST",
          headers: { authorization: `Bearer ${user.token}` },
        }),
        unreachable,
        ctx,
      );
      await waitOnExecutionContext(ctx);
      return { status: res.status, json: (await res.json()) as { status?: string; error?: { code: string } } };
    };
    // 64 GPUs: more than this file's region ever has, so both stay queued in the scheduler.
    const acked = await submit(user, { gpu_count: 64 });
    const refused = await cancelUnreachable(acked.id);
    expect(refused).toMatchObject({ status: 503, json: { error: { code: "scheduler_unavailable" } } });
    expect((await getJob(user, acked.id)).status).toBe("queued");

    // A submission that reached the scheduler but whose answer was lost: the ledger never says so.
    const lost = await submit(user, { gpu_count: 64 });
    await sql("update job_submissions set acked_at = null where job_id = $1", [lost.id]);
    expect(await cancelUnreachable(lost.id)).toMatchObject({ status: 200, json: { status: "cancelled" } });
    const scheduler = regionScheduler(env, REGION);
    expect((await scheduler.jobState(lost.id))?.status).toBe("queued");
    // The reconciler passes the cancel on, once the scheduler answers.
    expect(await withDb(env, (db) => forwardCancels(unreachable, db, log))).toEqual({ forwarded: 0 });
    const ledgerOf = async (id: string) =>
      (await sql<{ acked_at: Date | null }>("select acked_at from job_submissions where job_id = $1", [id]))[0]!;
    expect((await ledgerOf(lost.id)).acked_at).toBeNull();
    // (Other files' rows may be passed on in the same run: the count is at least this one.)
    expect((await withDb(env, (db) => forwardCancels(env, db, log))).forwarded).toBeGreaterThanOrEqual(1);
    expect((await scheduler.jobState(lost.id))?.status).toBe("cancelled");
    // Closed: not passed on again.
    expect((await ledgerOf(lost.id)).acked_at).not.toBeNull();
    await call("POST", `/v1/jobs/${acked.id}/cancel`, user.token);
  });

  it("passes on a cancel that landed during the submission even when the first forward of it fails", async () => {
    const user = await signUp({ max_concurrent_gpus: 128 });
    // 64 GPUs: more than this file's region ever has, so it stays queued in the scheduler.
    const { id, stored } = await storedJob(user);
    await sql("update jobs set gpu_count = 64 where id = $1", [id]);
    stored.gpuCount = 64;
    const real = regionScheduler(env, REGION);
    let cancelCalls = 0;
    /** The real scheduler, but the job is cancelled in Postgres while its submission is in flight, and
     * the submission's first forward of that cancel fails. */
    const racing = {
      ...env,
      REGION_SCHEDULER: {
        idFromName: (name: string) => env.REGION_SCHEDULER.idFromName(name),
        get: () => ({
          submit: async (job: Parameters<typeof real.submit>[0]) => {
            const result = await real.submit(job);
            await sql("update jobs set status = 'cancelled', finished_at = now() where id = $1", [id]);
            return result;
          },
          cancel: async (jobId: string) => {
            cancelCalls += 1;
            if (cancelCalls === 1) throw new Error("Network connection lost.");
            return real.cancel(jobId);
          },
        }),
      },
    } as unknown as Env;
    expect(await withDb(env, (db) => submitJob(racing, db, stored, log))).toEqual({ outcome: "cancelled" });
    expect(cancelCalls).toBe(1);
    expect((await real.jobState(id))?.status).toBe("queued");
    // The reconciler passes it on (other files' rows may be passed on in the same run), and closes the ledger row.
    await withDb(env, (db) => forwardCancels(racing, db, log));
    expect((await real.jobState(id))?.status).toBe("cancelled");
    expect(cancelCalls).toBe(2);
    const [ledger] = await sql<{ acked_at: Date | null }>("select acked_at from job_submissions where job_id = $1", [
      id,
    ]);
    expect(ledger!.acked_at).not.toBeNull();
  });

  it("syncs an endpoint whose spec the scheduler missed", async () => {
    const user = await signUp();
    const created = await call("POST", "/v1/endpoints", user.token, {
      body: { name: "late", image: "busybox", gpu_count: 1, min_replicas: 0 },
    });
    await sql("update endpoints set synced_version = 0, updated_at = now() - interval '1 minute' where id = $1", [
      created.json.id,
    ]);
    expect((await call("GET", `/v1/endpoints/${created.json.id}`, user.token)).json.synced).toBe(false);
    expect(await withDb(env, (db) => reconcileEndpoints(env, db, log))).toBe(1);
    expect((await call("GET", `/v1/endpoints/${created.json.id}`, user.token)).json.synced).toBe(true);
  });
});
