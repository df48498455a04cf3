/** Node tokens, the operator's node routes, and job logs shipped by agents and read by users. */
import { env, runDurableObjectAlarm, SELF } from "cloudflare:test";
import postgres from "postgres";
import { describe, expect, it } from "vitest";
import { AGENT_ROUTES } from "../../core/schemas";
import { deliver } from "../../durable-objects/region-scheduler/outbox-postgres";
import { openDb } from "../db/client";
import { createLogger } from "../http/log";
import { regionScheduler } from "../regions";
import { DEFAULT_LOG_RETENTION_DAYS, expireJobLogsTask, logRetentionDays } from "./housekeeping";
import { openTail, renewTail } from "./log-tails";
import {
  addMember,
  BASE,
  call,
  createKey,
  JOB,
  orphanIdempotencyKey,
  signUp,
  sql,
  type TestUser,
} from "./test-support";

const NODE = { gpu_model: "H100", cpu_milli: 64_000, memory_mib: 512_000 };

async function operator(): Promise<TestUser> {
  return signUp({ is_operator: true });
}

async function createNode(op: TestUser, extra: Record<string, unknown> = {}) {
  const res = await call("POST", "/v1/operator/nodes", op.token, { body: { ...NODE, ...extra } });
  expect(res.status).toBe(201);
  return res.json as { node: { id: string; has_token: boolean }; token: string };
}

/** Reads an event stream's text as it comes: `readUntil` a needle (false if the stream ended first). */
function sseReader(res: Response) {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let text = "";
  const readUntil = async (needle: string) => {
    while (!text.includes(needle)) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
    return text.includes(needle);
  };
  return { reader, readUntil, text: () => text };
}

/** A job of `user` with one run placed on `nodeId`, as the scheduler's outbox would record it. */
async function jobOnNode(user: TestUser, nodeId: string, status = "running") {
  const job = (await call("POST", "/v1/jobs", user.token, { body: JOB })).json;
  // The scheduler's outbox writes the job it queued now, not over the status set below.
  await runDurableObjectAlarm(regionScheduler(env, job.region));
  const placementId = `pl-${crypto.randomUUID()}`;
  await sql("update jobs set status = $2 where id = $1", [job.id, status]);
  await sql(
    `insert into job_runs (id, job_id, account_id, attempt, node_id, status, gpu_count, placed_at)
     values ($1, $2, $3, 1, $4, 'running', 1, now())`,
    [placementId, job.id, user.accountId, nodeId],
  );
  return { jobId: job.id as string, placementId };
}

const line = (placementId: string, seq: number, text: string, stream = "stdout") => ({
  placement_id: placementId,
  seq,
  stream,
  at: Date.now(),
  line: text,
});

/** A job placed on a new node whose agent has shipped one line ("booting"), and its owner. */
async function jobWithALine() {
  const op = await operator();
  const { node, token } = await createNode(op);
  const user = await signUp();
  const { jobId, placementId } = await jobOnNode(user, node.id);
  await call("POST", AGENT_ROUTES.logs, token, { body: { lines: [line(placementId, 0, "booting")] } });
  return { user, jobId, placementId, token };
}

describe("operator node routes", () => {
  it("are refused to everyone but the operator account's owners and admins", async () => {
    const user = await signUp();
    const res = await call("GET", "/v1/operator/nodes", user.token);
    expect(res.status).toBe(403);
    expect(res.json.error.code).toBe("not_operator");
    const op = await operator();
    const readOnlyKey = await createKey(op.token, ["jobs:read"]);
    expect((await call("GET", "/v1/operator/nodes", readOnlyKey.secret)).status).toBe(403);
    const adminKey = await createKey(op.token, ["admin"]);
    expect((await call("GET", "/v1/operator/nodes", adminKey.secret)).status).toBe(200);
  });

  it("create a node with a token shown once, rotate and revoke it, list with filters, and audit each", async () => {
    const op = await operator();
    const { node, token } = await createNode(op, { zone: "zone-x", hostname: "gpu-host-1" });
    expect(token).toMatch(/^snt_[A-Za-z0-9]{43}$/);
    expect(node).toMatchObject({ has_token: true, state: "provisioning", region: "us-west-1", gpu_count: 8 });
    const [row] = await sql<{ agent_token_hash: string }>("select agent_token_hash from nodes where id = $1", [
      node.id,
    ]);
    expect(row!.agent_token_hash).toMatch(/^[0-9a-f]{64}$/);

    const logs = { lines: [line("pl-none", 0, "x")] };
    expect((await call("POST", AGENT_ROUTES.logs, token, { body: logs })).status).toBe(200);
    const rotated = await call("POST", `/v1/operator/nodes/${node.id}/token`, op.token);
    expect(rotated.status).toBe(201);
    expect((await call("POST", AGENT_ROUTES.logs, token, { body: logs })).status).toBe(401);
    expect((await call("POST", AGENT_ROUTES.logs, rotated.json.token, { body: logs })).status).toBe(200);
    const revoked = await call("DELETE", `/v1/operator/nodes/${node.id}/token`, op.token);
    expect(revoked.json.has_token).toBe(false);
    const after = await call("POST", AGENT_ROUTES.logs, rotated.json.token, { body: logs });
    expect(after.status).toBe(401);
    expect(after.json.error.code).toBe("invalid_node_token");

    const duplicate = await call("POST", "/v1/operator/nodes", op.token, { body: { ...NODE, id: node.id } });
    expect(duplicate.status).toBe(409);
    // A retry that takes over the key of a request that died after making a node (no id given):
    // told which node was made, its token being gone; no second node.
    const died = { "idempotency-key": `node-${crypto.randomUUID()}` };
    const first = await call("POST", "/v1/operator/nodes", op.token, { body: NODE, headers: died });
    await orphanIdempotencyKey(op.accountId, died["idempotency-key"]);
    const retry = await call("POST", "/v1/operator/nodes", op.token, { body: NODE, headers: died });
    expect([retry.status, retry.json.error.code, retry.json.error.details]).toEqual([
      409,
      "idempotency_secret_withheld",
      { id: first.json.node.id, status: 201 },
    ]);
    const filtered = await call("GET", `/v1/operator/nodes?state=provisioning&limit=100`, op.token);
    expect(filtered.json.data.map((n: { id: string }) => n.id)).toContain(node.id);
    const none = await call("GET", `/v1/operator/nodes?region=nowhere-1`, op.token);
    expect(none.json.data).toEqual([]);
    const audit = await sql<{ action: string; actor_type: string; actor_id: string }>(
      "select action, actor_type, actor_id from audit_log where target_type = 'node' and target_id = $1 order by id",
      [node.id],
    );
    expect(audit.map((a) => a.action)).toEqual(["node.created", "node.token_issued", "node.token_revoked"]);
    expect(audit[0]).toMatchObject({ actor_type: "operator", actor_id: `user:${op.userId}` });
  });

  it("pages nodes by cursor without repeats", async () => {
    const op = await operator();
    const zone = `zone-${crypto.randomUUID().slice(0, 6)}`;
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await createNode(op, { zone })).node.id);
    const first = await call("GET", "/v1/operator/nodes?limit=2", op.token);
    const second = await call("GET", `/v1/operator/nodes?limit=2&cursor=${first.json.next_cursor}`, op.token);
    const seen = [...first.json.data, ...second.json.data].map((n: { id: string }) => n.id);
    expect(seen.slice(0, 3)).toEqual([...ids].reverse());
    expect(new Set(seen).size).toBe(seen.length);
  });
});

/** An event about a placement the scheduler does not know: taken (and listed as rejected) only once authenticated. */
const pulling = () => ({
  events: [{ event_id: crypto.randomUUID(), placement_id: "pl-none", type: "pulling", at: Date.now() }],
});

describe("agent authentication", () => {
  it("accepts only node tokens on the agent routes", async () => {
    const user = await signUp();
    const key = await createKey(user.token, ["admin"]);
    const body = { lines: [line("pl-x", 0, "hello")] };
    for (const credential of [user.token, key.secret, `snt_${"A".repeat(43)}`, "garbage"]) {
      const res = await call("POST", AGENT_ROUTES.logs, credential, { body });
      expect(res.status).toBe(401);
    }
    expect((await call("POST", AGENT_ROUTES.logs, null, { body })).status).toBe(401);
    // The routes that reuse recent verifications refuse the same credentials.
    for (const credential of [user.token, key.secret, `snt_${"A".repeat(43)}`]) {
      expect((await call("GET", `${AGENT_ROUTES.placements}?wait_ms=0`, credential)).status).toBe(401);
      expect((await call("POST", AGENT_ROUTES.events, credential, { body: pulling() })).status).toBe(401);
    }
  });

  it("the long poll and event reports reuse a recent verification; revoking through the API ends it at once", async () => {
    const op = await operator();
    const { node, token } = await createNode(op);
    const poll = () => call("GET", `${AGENT_ROUTES.placements}?wait_ms=0`, token);
    const report = () => call("POST", AGENT_ROUTES.events, token, { body: pulling() });
    const logs = () => call("POST", AGENT_ROUTES.logs, token, { body: { lines: [line("pl-none", 0, "x")] } });
    expect((await poll()).status).toBe(200);

    // Revoked behind the API's back (as another isolate would): the recent verification still
    // answers for the long poll and events for up to RECENT_ANSWER_MS (workers/auth/recent-answers.ts);
    // the other routes ask the database and refuse at once.
    await sql("update nodes set agent_token_hash = null where id = $1", [node.id]);
    expect((await poll()).status).toBe(200);
    expect((await report()).status).toBe(200);
    expect((await logs()).status).toBe(401);

    // Through the API, the isolate that revokes forgets the node's verifications.
    const rotated = await call("POST", `/v1/operator/nodes/${node.id}/token`, op.token);
    expect(rotated.status).toBe(201);
    expect((await poll()).status).toBe(401);
    const fresh = rotated.json.token as string;
    expect((await call("GET", `${AGENT_ROUTES.placements}?wait_ms=0`, fresh)).status).toBe(200);
    await call("DELETE", `/v1/operator/nodes/${node.id}/token`, op.token);
    const refused = await call("GET", `${AGENT_ROUTES.placements}?wait_ms=0`, fresh);
    expect(refused.status).toBe(401);
    expect(refused.json.error.code).toBe("invalid_node_token");
  });

  it("counts refused node tokens against the client's address, as the API's credentials are", async () => {
    const op = await operator();
    const { token } = await createNode(op);
    const from = (address: string) => ({ headers: { "cf-connecting-ip": address } });
    const guess = `${token.slice(0, -1)}${token.endsWith("a") ? "b" : "a"}`;
    const poll = (credential: string, address: string) =>
      call("GET", `${AGENT_ROUTES.placements}?wait_ms=0`, credential, from(address));
    for (let i = 0; i < 30; i++) expect((await poll(guess, "198.51.100.20")).status).toBe(401);
    const refused = await poll(guess, "198.51.100.20");
    expect(refused.status).toBe(429);
    expect(refused.json.error.details.scope).toBe("client");
    // The real node token from that address waits too; from its own address it is served.
    expect((await poll(token, "198.51.100.20")).status).toBe(429);
    expect((await poll(token, "198.51.100.21")).status).toBe(200);
  });
});

describe("job logs", () => {
  it("stores batches once per (placement, node, seq), and serves them to the job's account in pages", async () => {
    const op = await operator();
    const { node, token } = await createNode(op);
    const user = await signUp();
    const { jobId, placementId } = await jobOnNode(user, node.id);
    const batch = {
      lines: [0, 1, 2, 3, 4].map((i) => line(placementId, i, `line ${i}`, i === 3 ? "stderr" : "stdout")),
    };
    const first = await call("POST", AGENT_ROUTES.logs, token, { body: batch });
    expect(first.json).toEqual({ accepted: 5, duplicates: 0 });
    // A re-sent batch (the agent retried) adds nothing.
    const again = await call("POST", AGENT_ROUTES.logs, token, {
      body: { lines: [...batch.lines.slice(3), line(placementId, 5, "line 5")] },
    });
    expect(again.json).toEqual({ accepted: 1, duplicates: 2 });

    const page1 = await call("GET", `/v1/jobs/${jobId}/logs?limit=4`, user.token);
    expect(page1.status).toBe(200);
    expect(page1.json.data.map((l: { line: string }) => l.line)).toEqual(["line 0", "line 1", "line 2", "line 3"]);
    expect(page1.json.data[0]).toMatchObject({ placement_id: placementId, attempt: 1, seq: 0, stream: "stdout" });
    const page2 = await call("GET", `/v1/jobs/${jobId}/logs?limit=4&cursor=${page1.json.next_cursor}`, user.token);
    expect(page2.json.data.map((l: { line: string }) => l.line)).toEqual(["line 4", "line 5"]);
    expect(page2.json.next_cursor).toBeNull();
    const stderr = await call("GET", `/v1/jobs/${jobId}/logs?stream=stderr`, user.token);
    expect(stderr.json.data.map((l: { line: string }) => l.line)).toEqual(["line 3"]);

    // Lines claiming the placement from another node are not the job's.
    const other = await createNode(op);
    await call("POST", AGENT_ROUTES.logs, other.token, { body: { lines: [line(placementId, 99, "forged")] } });
    // Nor do they take the place of the job's own lines with the same numbers.
    await call("POST", AGENT_ROUTES.logs, other.token, { body: { lines: [line(placementId, 6, "forged first")] } });
    const own = await call("POST", AGENT_ROUTES.logs, token, { body: { lines: [line(placementId, 6, "line 6")] } });
    expect(own.json).toEqual({ accepted: 1, duplicates: 0 });
    const all = await call("GET", `/v1/jobs/${jobId}/logs?limit=100`, user.token);
    expect(all.text).not.toContain("forged");
    expect(all.json.data.at(-1)).toMatchObject({ seq: 6, line: "line 6" });

    // Another account sees nothing of it.
    const stranger = await signUp();
    const denied = await call("GET", `/v1/jobs/${jobId}/logs`, stranger.token);
    expect(denied.status).toBe(404);
    expect(denied.text).not.toContain("line 0");
  });

  it("say which node of a multi-node job wrote each line, as the job's placements do", async () => {
    const op = await operator();
    const nodes = [await createNode(op), await createNode(op)];
    const user = await signUp();
    const job = (await call("POST", "/v1/jobs", user.token, { body: JOB })).json;
    await sql("update jobs set status = 'running' where id = $1", [job.id]);
    for (const [rank, n] of nodes.entries()) {
      await sql(
        `insert into job_runs (id, job_id, account_id, attempt, gang_index, node_id, status, gpu_count, placed_at)
         values ($1, $2, $3, 1, $4, $5, 'running', 8, now())`,
        [`${job.id}-a1-g${rank}`, job.id, user.accountId, rank, n.node.id],
      );
    }
    for (const [rank, n] of [...nodes.entries()].reverse()) {
      const res = await call("POST", AGENT_ROUTES.logs, n.token, {
        body: { lines: [line(`${job.id}-a1-g${rank}`, 0, `hi from ${rank}`)] },
      });
      expect(res.status).toBe(200);
    }
    const logs = await call("GET", `/v1/jobs/${job.id}/logs`, user.token);
    expect(logs.json.data.map((l: { node_rank: number; line: string }) => [l.node_rank, l.line])).toEqual([
      [1, "hi from 1"],
      [0, "hi from 0"],
    ]);
    const got = await call("GET", `/v1/jobs/${job.id}`, user.token);
    expect(got.json.placements.map((p: { node_id: string; node_rank: number }) => [p.node_id, p.node_rank])).toEqual([
      [nodes[0]!.node.id, 0],
      [nodes[1]!.node.id, 1],
    ]);
  });

  it("of an endpoint: its replicas' lines across restarts, from their own nodes only; followed until it is deleted", async () => {
    const op = await operator();
    const { node, token } = await createNode(op);
    const user = await signUp();
    const ep = await call("POST", "/v1/endpoints", user.token, {
      body: { name: `logs-${crypto.randomUUID().slice(0, 6)}`, image: "busybox", gpu_count: 1, min_replicas: 0 },
    });
    expect(ep.status).toBe(201);
    const id = ep.json.id as string;
    // Two runs of replica 0 and one of replica 1, as the scheduler's outbox records them.
    const runs = [
      [`${id}#0-a1-g0`, 0, 1],
      [`${id}#0-a2-g0`, 0, 2],
      [`${id}#1-a1-g0`, 1, 1],
    ] as const;
    for (const [placement, replica, attempt] of runs) {
      await sql(
        `insert into replica_runs (id, endpoint_id, account_id, replica, attempt, node_id, status, placed_at)
         values ($1, $2, $3, $4, $5, $6, 'running', now())`,
        [placement, id, user.accountId, replica, attempt, node.id],
      );
    }
    const lines = runs.map(([placement, replica, attempt]) => line(placement, 0, `r${replica} a${attempt}`));
    expect((await call("POST", AGENT_ROUTES.logs, token, { body: { lines } })).status).toBe(200);
    // A line claiming a replica's placement from another node is not the endpoint's.
    const other = await createNode(op);
    await call("POST", AGENT_ROUTES.logs, other.token, { body: { lines: [line(runs[2][0], 1, "forged")] } });

    const res = await call("GET", `/v1/endpoints/${id}/logs`, user.token);
    expect(res.status).toBe(200);
    expect(
      res.json.data.map((l: { replica: number; attempt: number; line: string }) => [l.replica, l.attempt, l.line]),
    ).toEqual([
      [0, 1, "r0 a1"],
      [0, 2, "r0 a2"],
      [1, 1, "r1 a1"],
    ]);
    const paged = await call("GET", `/v1/endpoints/${id}/logs?limit=2`, user.token);
    expect(paged.json.data).toHaveLength(2);
    const rest = await call("GET", `/v1/endpoints/${id}/logs?cursor=${paged.json.next_cursor}`, user.token);
    expect(rest.json.data.map((l: { line: string }) => l.line)).toEqual(["r1 a1"]);
    expect((await call("GET", `/v1/endpoints/${id}/logs`, (await signUp()).token)).status).toBe(404);

    expect((await call("DELETE", `/v1/endpoints/${id}`, user.token)).status).toBe(200);
    const followed = await SELF.fetch(`${BASE}/v1/endpoints/${id}/logs?follow=true`, {
      headers: { authorization: `Bearer ${user.token}` },
    });
    const text = await followed.text();
    expect(text.match(/^event: log$/gm)).toHaveLength(3);
    expect(text).toContain('event: end\ndata: {"status":"deleted"}');
  });

  it("are kept for LOG_RETENTION_DAYS after they arrive, then deleted by the cron task", async () => {
    const op = await operator();
    const { node, token } = await createNode(op);
    const user = await signUp();
    const { jobId, placementId } = await jobOnNode(user, node.id);
    const lines = [0, 1, 2, 3].map((i) => line(placementId, i, `line ${i}`));
    expect((await call("POST", AGENT_ROUTES.logs, token, { body: { lines } })).status).toBe(200);
    const age = (seq: number, days: number) =>
      sql("update job_logs set received_at = now() - make_interval(days => $3) where placement_id = $1 and seq = $2", [
        placementId,
        seq,
        days,
      ]);
    await age(0, 45);
    await age(1, 31);
    await age(2, 29);
    const visible = async () =>
      (await call("GET", `/v1/jobs/${jobId}/logs?limit=100`, user.token)).json.data.map(
        (l: { line: string }) => l.line,
      );
    const log = createLogger("error");
    const trigger = { scheduledTime: Date.now() };

    const first = (await expireJobLogsTask.run(env, log, trigger)) as { deleted: number; retention_days: number };
    expect(first.retention_days).toBe(30);
    expect(first.deleted).toBeGreaterThanOrEqual(2);
    expect(await visible()).toEqual(["line 2", "line 3"]);
    // A shorter period set in the environment takes the 29-day-old line too; a second run finds nothing more.
    await expireJobLogsTask.run({ ...env, LOG_RETENTION_DAYS: "7" }, log, trigger);
    expect(await visible()).toEqual(["line 3"]);
    const again = (await expireJobLogsTask.run({ ...env, LOG_RETENTION_DAYS: "7" }, log, trigger)) as {
      deleted: number;
    };
    expect(again.deleted).toBe(0);
  });

  it("retention days: whole days from 1 to 3650, else the default", () => {
    expect(logRetentionDays(undefined)).toBe(DEFAULT_LOG_RETENTION_DAYS);
    expect(logRetentionDays("")).toBe(DEFAULT_LOG_RETENTION_DAYS);
    expect(logRetentionDays("1")).toBe(1);
    expect(logRetentionDays("3650")).toBe(3650);
    for (const bad of ["0", "-3", "1.5", "3651", "thirty"])
      expect(logRetentionDays(bad)).toBe(DEFAULT_LOG_RETENTION_DAYS);
  });

  it("validates batches: every line needs its fields, and NUL bytes do not break storage", async () => {
    const op = await operator();
    const { token } = await createNode(op);
    const missing = await call("POST", AGENT_ROUTES.logs, token, { body: { lines: [{ placement_id: "p", seq: 0 }] } });
    expect(missing.status).toBe(400);
    expect(missing.json.error.details.fields.map((f: { field: string }) => f.field)).toContain("lines[0].stream");
    const empty = await call("POST", AGENT_ROUTES.logs, token, { body: { lines: [] } });
    expect(empty.status).toBe(400);
    // A time past year 9999 is refused, not a 500 (past 8.64e15 not even a Date; the fuzz test found
    // 8.64e15 itself, a `+275760-…` ISO year, a 500 too); the last millisecond of 9999 is stored.
    for (const at of [9e15, 8.64e15, 253_402_300_800_000]) {
      const far = await call("POST", AGENT_ROUTES.logs, token, {
        body: { lines: [{ ...line("pl-far", 0, "x"), at }] },
      });
      expect([far.status, far.json.error?.details.fields[0].field], String(at)).toEqual([400, "lines[0].at"]);
    }
    const last = await call("POST", AGENT_ROUTES.logs, token, {
      body: { lines: [{ ...line(`pl-${crypto.randomUUID()}`, 0, "x"), at: 253_402_300_799_999 }] },
    });
    expect(last.json).toEqual({ accepted: 1, duplicates: 0 });
    const nul = await call("POST", AGENT_ROUTES.logs, token, { body: { lines: [line("pl-nul", 0, "a\u0000b")] } });
    expect(nul.json).toEqual({ accepted: 1, duplicates: 0 });
    // Nor do halves of UTF-16 surrogate pairs (stored as U+FFFD, as UTF-8 has no form for them).
    const halves = `pl-${crypto.randomUUID()}`;
    const split = await call("POST", AGENT_ROUTES.logs, token, {
      body: { lines: [line(halves, 0, "x\uD800y\uDC00z 🙂")] },
    });
    expect(split.json).toEqual({ accepted: 1, duplicates: 0 });
    const [stored] = await sql<{ line: string }>("select line from job_logs where placement_id = $1", [halves]);
    expect(stored!.line).toBe("x\uFFFDy\uFFFDz 🙂");
  });

  it("follows the logs as server-sent events until the job ends", async () => {
    const { user, jobId, placementId, token } = await jobWithALine();

    const res = await SELF.fetch(`${BASE}/v1/jobs/${jobId}/logs?follow=true`, {
      headers: { authorization: `Bearer ${user.token}` },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/event-stream");
    const sse = sseReader(res);
    const readUntil = sse.readUntil;
    const reader = sse.reader;
    expect(await readUntil("booting")).toBe(true);
    // More output arrives while following, then the job ends.
    await call("POST", AGENT_ROUTES.logs, token, { body: { lines: [line(placementId, 1, "training")] } });
    expect(await readUntil("training")).toBe(true);
    await sql("update jobs set status = 'succeeded', finished_at = now() where id = $1", [jobId]);
    await call("POST", AGENT_ROUTES.logs, token, { body: { lines: [line(placementId, 2, "done")] } });
    expect(await readUntil("event: end")).toBe(true);
    expect((await reader.read()).done).toBe(true);
    const events = sse.text().split("\n\n").filter(Boolean);
    const logs = events.filter((e) => e.startsWith("event: log"));
    expect(
      logs.map(
        (e) =>
          JSON.parse(
            e
              .split("\n")
              .find((l) => l.startsWith("data: "))!
              .slice(6),
          ).line,
      ),
    ).toEqual(["booting", "training", "done"]);
    expect(events.at(-1)).toContain('"status":"succeeded"');
    // The job's status first (after the lines read with it), then when it changed.
    const statuses = events.filter((e) => e.startsWith("event: status")).map((e) => JSON.parse(e.split("data: ")[1]!));
    expect(statuses.map((s) => s.status)).toEqual(["running", "succeeded"]);
    expect(statuses[0]).toEqual({
      status: "running",
      attempts: 0,
      max_attempts: 3,
      exit_code: null,
      failure_reason: null,
    });
    expect(events.findIndex((e) => e.startsWith("event: status"))).toBeGreaterThan(
      events.findIndex((e) => e.includes("booting")),
    );

    // Resuming from the id of the first event replays only what came after it.
    const firstId = logs[0]!
      .split("\n")
      .find((l) => l.startsWith("id: "))!
      .slice(4);
    const resumed = await SELF.fetch(`${BASE}/v1/jobs/${jobId}/logs?follow=true`, {
      headers: { authorization: `Bearer ${user.token}`, "last-event-id": firstId },
    });
    const resumedText = await resumed.text();
    expect(resumedText).not.toContain("booting");
    expect(resumedText).toContain("training");
    expect(resumedText).toContain("event: end");
  });
});

describe("a followed job's status (event: status)", () => {
  it("says when a failed attempt waits for its retry, once per change", async () => {
    const { user, jobId } = await jobWithALine();
    const res = await SELF.fetch(`${BASE}/v1/jobs/${jobId}/logs?follow=true`, {
      headers: { authorization: `Bearer ${user.token}` },
    });
    const sse = sseReader(res);
    expect(await sse.readUntil("event: status")).toBe(true);
    // As the scheduler's outbox writes a failed attempt whose retry waits.
    await sql(
      "update jobs set status = 'queued', attempts = 1, exit_code = 3, failure_reason = 'exit code 3' where id = $1",
      [jobId],
    );
    expect(await sse.readUntil('"failure_reason":"exit code 3"')).toBe(true);
    await sse.reader.cancel();
    const statuses = sse
      .text()
      .split("\n\n")
      .filter((e) => e.startsWith("event: status"))
      .map((e) => JSON.parse(e.split("data: ")[1]!));
    expect(statuses).toHaveLength(2);
    expect(statuses[1]).toEqual({
      status: "queued",
      attempts: 1,
      max_attempts: 3,
      exit_code: 3,
      failure_reason: "exit code 3",
    });
  });
});

describe("log streams followed (tails)", () => {
  /** The stream's text until `needle` appears or it ends. */
  async function readUntil(res: Response, needle: string): Promise<string> {
    const sse = sseReader(res);
    await sse.readUntil(needle);
    return sse.text();
  }

  it("ends a stream whose API key is revoked while it runs", async () => {
    const { user, jobId } = await jobWithALine();
    const key = await createKey(user.token, ["jobs:read"]);
    const res = await SELF.fetch(`${BASE}/v1/jobs/${jobId}/logs?follow=true`, {
      headers: { authorization: `Bearer ${key.secret}` },
    });
    expect(res.status).toBe(200);
    const revoked = await call("DELETE", `/v1/api-keys/${key.id}`, user.token);
    expect(revoked.status).toBe(200);
    // Within a check interval (10 s) the stream says why and ends, though the job still runs.
    const text = await readUntil(res, "access_revoked");
    expect(text).toContain("booting");
    expect(text).toContain("event: error");
    expect(text).toContain('"code":"access_revoked"');
    expect(text).not.toContain("event: end");
    // Its place among the account's tails is given back.
    const [left] = await sql<{ n: number }>("select count(*)::int as n from log_tails where account_id = $1", [
      user.accountId,
    ]);
    expect(left!.n).toBe(0);
  }, 20_000);

  it("ends a stream whose API key's creator is removed from the account while it runs", async () => {
    const { user, jobId } = await jobWithALine();
    const member = await addMember(user.accountId, "member");
    const key = await createKey(member.token, ["jobs:read"], { account: user.accountId });
    const res = await SELF.fetch(`${BASE}/v1/jobs/${jobId}/logs?follow=true`, {
      headers: { authorization: `Bearer ${key.secret}` },
    });
    expect(res.status).toBe(200);
    // The key itself stays live; its creator is no longer in the account (a new request with it is a 401).
    await sql("delete from memberships where account_id = $1 and user_id = $2", [user.accountId, member.userId]);
    const text = await readUntil(res, "access_revoked");
    expect(text).toContain("booting");
    expect(text).toContain('"code":"access_revoked"');
    expect(text).not.toContain("event: end");
  }, 20_000);

  it("refuses a follow beyond the account's open streams with 429, counting only live ones", async () => {
    const op = await operator();
    const { node } = await createNode(op);
    const user = await signUp();
    const { jobId } = await jobOnNode(user, node.id);
    // Fifty tails open elsewhere (other isolates), renewed just now.
    await sql("insert into log_tails (id, account_id) select gen_random_uuid(), $1 from generate_series(1, 50)", [
      user.accountId,
    ]);
    const url = `${BASE}/v1/jobs/${jobId}/logs?follow=true`;
    const headers = { authorization: `Bearer ${user.token}` };
    const refused = await SELF.fetch(url, { headers });
    expect(refused.status).toBe(429);
    expect(refused.headers.get("retry-after")).toBe("10");
    expect(((await refused.json()) as { error: { code: string; details: unknown } }).error).toMatchObject({
      code: "too_many_log_streams",
      details: { limit: 50 },
    });
    // Pages need no tail.
    expect((await call("GET", `/v1/jobs/${jobId}/logs`, user.token)).status).toBe(200);
    // Their isolates died: not renewed for a minute, they no longer count, and are swept.
    await sql("update log_tails set seen_at = now() - interval '1 minute' where account_id = $1", [user.accountId]);
    // Ended through its scheduler (whose outbox has the last word on the job's status).
    expect((await call("POST", `/v1/jobs/${jobId}/cancel`, user.token)).status).toBe(200);
    const followed = await SELF.fetch(url, { headers });
    expect(followed.status).toBe(200);
    expect(await readUntil(followed, "event: end")).toContain('"status":"cancelled"');
    const [left] = await sql<{ n: number }>("select count(*)::int as n from log_tails where account_id = $1", [
      user.accountId,
    ]);
    expect(left!.n).toBe(0);
  });
});

describe("a tail's periodic check (renewTail)", () => {
  it("renews a live tail, admits a swept one again within the limit, else says it is crowded", async () => {
    const user = await signUp();
    const caller = { userId: user.userId, apiKey: null };
    const { sql: client, close } = openDb(env);
    try {
      const tail = await openTail(client, user.accountId);
      const count = async () =>
        (
          await sql<{ n: number }>("select count(*)::int as n from log_tails where account_id = $1", [user.accountId])
        )[0]!.n;
      expect(await renewTail(client, tail, caller, user.accountId)).toBe("live");
      // Swept as stale (its isolate stalled) while there is room: it takes its place again.
      await sql("delete from log_tails where id = $1", [tail]);
      expect(await renewTail(client, tail, caller, user.accountId)).toBe("live");
      expect(await count()).toBe(1);
      // Swept, and the account's other streams took every place meanwhile: not re-added over the limit.
      await sql("delete from log_tails where id = $1", [tail]);
      await sql("insert into log_tails (id, account_id) select gen_random_uuid(), $1 from generate_series(1, 50)", [
        user.accountId,
      ]);
      expect(await renewTail(client, tail, caller, user.accountId)).toBe("crowded");
      expect(await count()).toBe(50);
      // An API key's tail, as apiKeyCaller takes the key: live while its creator is in its account,
      // revoked once the creator is gone (a deleted user leaves the key's created_by null).
      const key = await createKey(user.token, ["jobs:read"]);
      const byKey = { userId: user.userId, apiKey: { id: key.id, prefix: key.prefix } };
      await sql("delete from log_tails where account_id = $1", [user.accountId]);
      expect(await renewTail(client, tail, byKey, user.accountId)).toBe("live");
      await sql("update api_keys set created_by = null where id = $1", [key.id]);
      expect(await renewTail(client, tail, byKey, user.accountId)).toBe("revoked");
      // A caller who left the account is told so first.
      await sql("delete from memberships where user_id = $1", [user.userId]);
      expect(await renewTail(client, tail, caller, user.accountId)).toBe("revoked");
    } finally {
      await close();
    }
  });

  it("a followed stream that lost its place asks the client to reconnect from its cursor", async () => {
    const { user, jobId } = await jobWithALine();
    const res = await SELF.fetch(`${BASE}/v1/jobs/${jobId}/logs?follow=true`, {
      headers: { authorization: `Bearer ${user.token}` },
    });
    expect(res.status).toBe(200);
    const sse = sseReader(res);
    expect(await sse.readUntil("booting")).toBe(true);
    // Its row swept, and fifty streams of other isolates admitted meanwhile.
    await sql("delete from log_tails where account_id = $1", [user.accountId]);
    await sql("insert into log_tails (id, account_id) select gen_random_uuid(), $1 from generate_series(1, 50)", [
      user.accountId,
    ]);
    // Within a check interval (10 s) it ends with the cursor of the last line it sent.
    expect(await sse.readUntil("event: reconnect")).toBe(true);
    const ids = sse
      .text()
      .split("\n")
      .filter((l) => l.startsWith("id: "));
    expect(ids.at(-1)).toBe(ids[0]);
    expect(sse.text()).not.toContain("event: end");
  }, 20_000);
});

describe("log lines shipped before their run reached Postgres", () => {
  it("get new ids when the run row arrives, so a reader whose cursor passed them still reads them", async () => {
    const op = await operator();
    const { node, token } = await createNode(op);
    const user = await signUp();
    const { jobId, placementId: rank0 } = await jobOnNode(user, node.id);
    // Rank 1 of the same job, on another node, starts and ships before the outbox has written its run.
    const other = await createNode(op);
    const rank1 = `${jobId}-a1-g1`;
    await call("POST", AGENT_ROUTES.logs, other.token, { body: { lines: [line(rank1, 0, "rank 1, early")] } });
    await call("POST", AGENT_ROUTES.logs, token, { body: { lines: [line(rank0, 0, "rank 0")] } });
    const res = await SELF.fetch(`${BASE}/v1/jobs/${jobId}/logs?follow=true`, {
      headers: { authorization: `Bearer ${user.token}` },
    });
    const sse = sseReader(res);
    expect(await sse.readUntil("rank 0")).toBe(true);
    await sse.reader.cancel();
    expect(sse.text()).not.toContain("rank 1");
    const cursor = sse
      .text()
      .split("\n")
      .find((l) => l.startsWith("id: "))!
      .slice(4);

    // A client made as the scheduler's outbox makes it.
    const client = postgres(env.HYPERDRIVE.connectionString, { max: 1, fetch_types: false, onnotice: () => {} });
    try {
      const at = Date.now();
      const run = {
        id: rank1,
        job_id: jobId,
        account_id: user.accountId,
        attempt: 1,
        gang_index: 1,
        node: {
          id: other.node.id,
          region: "us-west-1",
          zone: "z",
          gpu_model: "H100",
          gpu_count: 8,
          cpu_milli: 64_000,
          memory_mib: 512_000,
          state: "ready",
          hostname: null,
          block_id: null,
          registered_at: at,
          last_heartbeat_at: at,
        },
        status: "running",
        gpu_count: 1,
        placed_at: at,
        started_at: at,
        finished_at: null,
        exit_code: null,
        oom_killed: false,
        failure_reason: null,
      };
      await deliver(client, { kind: "job_run", row: run });
      // A second delivery of the row (a retry) changes no id.
      const ids = await sql<{ id: string }>("select id::text from job_logs where placement_id = $1", [rank1]);
      await deliver(client, { kind: "job_run", row: { ...run, status: "succeeded", finished_at: at + 1 } });
      expect(await sql<{ id: string }>("select id::text from job_logs where placement_id = $1", [rank1])).toEqual(ids);
    } finally {
      await client.end();
    }
    const after = await call("GET", `/v1/jobs/${jobId}/logs?cursor=${encodeURIComponent(cursor)}`, user.token);
    expect(after.json.data.map((l: { line: string; node_rank: number }) => [l.line, l.node_rank])).toEqual([
      ["rank 1, early", 1],
    ]);
  });
});

/** Backends waiting for a lock that backend `pid` holds. */
async function blockedBy(pid: number): Promise<number[]> {
  const rows = await sql<{ pid: number }>("select pid from pg_stat_activity where $1 = any(pg_blocking_pids(pid))", [
    pid,
  ]);
  return rows.map((r) => r.pid);
}

async function waitFor<T>(what: string, check: () => Promise<T | null | undefined | false>): Promise<T> {
  for (let i = 0; i < 400; i++) {
    const value = await check();
    if (value) return value;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe("log batches stored concurrently", () => {
  // Two agents' batches of one job (its two nodes) or one endpoint (replicas on two nodes): A's takes
  // the lower ids but commits last, held up (as by a slow disk or network) behind a transaction this
  // test keeps open; B's, with the higher ids, is sent meanwhile. A reader pages through in between
  // and carries on from its cursor once both are in: it must see every line.
  it.each(["a job", "an endpoint"] as const)(
    "of %s: a reader's cursor never passes a line stored later",
    async (kind) => {
      const op = await operator();
      const nodes = [await createNode(op), await createNode(op)] as const;
      const user = await signUp();
      let path: string;
      let placements: [string, string];
      if (kind === "a job") {
        const job = (await call("POST", "/v1/jobs", user.token, { body: JOB })).json;
        await sql("update jobs set status = 'running' where id = $1", [job.id]);
        path = `/v1/jobs/${job.id}/logs`;
        placements = [`${job.id}-a1-g0`, `${job.id}-a1-g1`];
        for (const [rank, placement] of placements.entries()) {
          await sql(
            `insert into job_runs (id, job_id, account_id, attempt, gang_index, node_id, status, gpu_count, placed_at)
           values ($1, $2, $3, 1, $4, $5, 'running', 8, now())`,
            [placement, job.id, user.accountId, rank, nodes[rank]!.node.id],
          );
        }
      } else {
        const ep = await call("POST", "/v1/endpoints", user.token, {
          body: { name: `race-${crypto.randomUUID().slice(0, 6)}`, image: "busybox", gpu_count: 1, min_replicas: 0 },
        });
        expect(ep.status).toBe(201);
        path = `/v1/endpoints/${ep.json.id}/logs`;
        placements = [`${ep.json.id}#0-a1-g0`, `${ep.json.id}#1-a1-g0`];
        for (const [replica, placement] of placements.entries()) {
          await sql(
            `insert into replica_runs (id, endpoint_id, account_id, replica, attempt, node_id, status, placed_at)
           values ($1, $2, $3, $4, 1, $5, 'running', now())`,
            [placement, ep.json.id, user.accountId, replica, nodes[replica]!.node.id],
          );
        }
      }
      const aLines = Array.from({ length: 10 }, (_, i) => `a${i}`);

      // The hold-up: an uncommitted row with A's last (placement, seq), so A's insert takes all its
      // ids, then waits on the unique index until this transaction rolls back.
      const { sql: direct, close } = openDb(env);
      let release = () => {};
      const released = new Promise<void>((done) => {
        release = done;
      });
      let holderPid = 0;
      const holder = direct
        .begin(async (tx) => {
          const [me] = await tx<{ pid: number }[]>`select pg_backend_pid() as pid`;
          await tx`insert into job_logs (placement_id, node_id, seq, stream, at, line)
                 values (${placements[0]}, ${nodes[0].node.id}, ${aLines.length - 1}, 'stdout', now(), 'hold-up')`;
          holderPid = me!.pid;
          await released;
          throw new Error("rollback");
        })
        .catch(() => {});
      try {
        await waitFor("the hold-up", async () => holderPid);
        const a = call("POST", AGENT_ROUTES.logs, nodes[0].token, {
          body: { lines: aLines.map((text, seq) => line(placements[0], seq, text)) },
        });
        const aPid = await waitFor("A's batch to wait", async () => (await blockedBy(holderPid))[0]);
        let bDone = false;
        const b = call("POST", AGENT_ROUTES.logs, nodes[1].token, {
          body: { lines: [line(placements[1], 0, "b0"), line(placements[1], 1, "b1")] },
        }).finally(() => {
          bDone = true;
        });
        // B's batch is stored, or waits for A's.
        await waitFor("B's batch to be stored or wait", async () => bDone || (await blockedBy(aPid)).length > 0);

        const first = await call("GET", `${path}?limit=1`, user.token);
        expect(first.status).toBe(200);
        release();
        await holder;
        expect((await a).json).toEqual({ accepted: aLines.length, duplicates: 0 });
        expect((await b).json).toEqual({ accepted: 2, duplicates: 0 });

        const seen: string[] = first.json.data.map((l: { line: string }) => l.line);
        let cursor: string | null = first.json.next_cursor;
        do {
          const next = await call("GET", `${path}?limit=100${cursor ? `&cursor=${cursor}` : ""}`, user.token);
          seen.push(...next.json.data.map((l: { line: string }) => l.line));
          cursor = next.json.next_cursor;
        } while (cursor);
        expect(seen).toEqual([...aLines, "b0", "b1"]);
      } finally {
        release();
        await holder;
        await close().catch(() => {});
      }
    },
  );
});
