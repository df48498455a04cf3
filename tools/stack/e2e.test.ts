/**
 * The whole platform end to end, on the real local stack (tools/stack): embedded Postgres, wrangler
 * dev, the SF Compute simulator, node agents on the real Docker engine. With no capacity, a Fast job
 * makes the autoscaler buy a node; the node boots, its agent registers, the job runs in a container,
 * its logs and usage are recorded; the idle block then lapses. A job that always fails is retried,
 * dead-lettered after its attempt limit and re-driven by an operator.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import postgres from "postgres";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { TEST_IMAGE } from "../test/docker";
import { has } from "../test/parts";
import { type Stack, startStack } from "./index";

const HOUR = 3_600_000;
/** The `scalar` CLI's bin (what `npx scalar` runs). */
const CLI = resolve(import.meta.dirname, "../../cli/bin/scalar.mjs");
const started = Date.now();
const lines: string[] = [];
const log = (line: string) => {
  lines.push(`[${((Date.now() - started) / 1000).toFixed(1)} s] ${line}`);
  if (process.env.SCALAR_STACK_VERBOSE) console.log(lines.at(-1));
};

// Skipped only outside CI when a Docker engine or the local registry is missing (`npm test` reports which); with CI=true `has()` is true, so a
// missing part fails the test instead (tools/test/parts.ts).
describe.skipIf(!has("docker") || !has("registry"))("the local platform, end to end", () => {
  let stack: Stack;
  let sql: postgres.Sql;
  let stateDir: string;
  const ctx: { jobId?: string; nodeId?: string; sfNodeId?: string; blockId?: string } = {};

  /** Polls until `probe` returns a value; on timeout the message carries what was last seen and the logs. */
  async function until<T>(what: string, probe: () => Promise<T | undefined | null | false>, timeoutMs = 60_000) {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    while (Date.now() < deadline) {
      try {
        const v = await probe();
        if (v) return v as T;
        last = v;
      } catch (error) {
        last = error;
      }
      await new Promise((r) => setTimeout(r, 300));
    }
    throw new Error(
      `${what}: not after ${timeoutMs / 1000} s (last: ${last instanceof Error ? last.message : JSON.stringify(last)})\n` +
        `--- stack ---\n${lines.slice(-20).join("\n")}\n${stack.logTails(40)}`,
    );
  }

  async function api<T = Record<string, unknown>>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await fetch(`${stack.apiUrl}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${stack.apiKey}`,
        ...(body !== undefined ? { "content-type": "application/json" } : {}),
        ...(method === "POST" ? { "idempotency-key": crypto.randomUUID() } : {}),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return JSON.parse(text) as T;
  }

  const job = (id: string) =>
    api<{ status: string; attempts: number; dead_lettered: boolean }>("GET", `/v1/jobs/${id}`);
  const submit = (command: string[], extra: Record<string, unknown> = {}) =>
    api<{ id: string; status: string }>("POST", "/v1/jobs", {
      image: TEST_IMAGE,
      command,
      gpu_count: 1,
      cpu_milli: 500,
      memory_mib: 256,
      tier: "fast",
      max_runtime_s: 300,
      ...extra,
    });

  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), "scalar-e2e-"));
    const t0 = Date.now();
    stack = await startStack({
      stateDir,
      apiPort: 0,
      fastHeadroomGpus: 0,
      cronIntervalMs: 2_000,
      simBootSeconds: 3,
      credentialsFile: null,
      log,
    });
    console.log(`[e2e] startStack took ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    sql = postgres(stack.databaseUrl, { max: 2, onnotice: () => {} });
    expect(stack.docker.available, stack.docker.detail).toBe(true);
    expect(stack.image).toBe(TEST_IMAGE);
  }, 180_000);

  // Any failure, not only a timed-out wait, comes with the stack's story and the processes' logs.
  beforeEach(({ onTestFailed }) => {
    onTestFailed(() => {
      console.log(
        `--- stack ---\n${lines.slice(-30).join("\n")}\n${stack?.logTails(40) ?? "(the stack did not start)"}`,
      );
    });
  });

  afterAll(async () => {
    await sql?.end({ timeout: 2 });
    await stack?.stop();
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
    console.log(`[e2e] wall time ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }, 60_000);

  it("buys a node for a Fast job with no capacity, runs it in a container, records logs and usage", async () => {
    expect(stack.agents()).toEqual([]);
    // The word "scalar" reaches the container only as a secret environment value: sealed in Postgres,
    // opened for the scheduler, handed to the agent with the placement.
    const { id } = await submit(["sh", "-c", "echo hello-from-$WHO"], {
      env: [{ name: "WHO", value: "scalar", secret: true }],
    });
    ctx.jobId = id;
    expect((await job(id)).status).toBe("queued");
    const [stored] = await sql<{ env: string }[]>`select env::text as env from jobs where id = ${id}`;
    expect(stored!.env).toMatch(/"sealed": "v1\.local\./);
    expect(stored!.env).not.toContain('"value"');

    // The autoscaler buys: a market order and a block in Postgres, a node in the simulator.
    await stack.tickCron();
    const order = await until("a capacity buy order", async () => {
      const [row] = await sql<{ block_id: string; idempotency_key: string; status: string }[]>`
        select block_id, idempotency_key, status from market_orders where purpose = 'capacity:buy'`;
      return row;
    });
    ctx.blockId = order.block_id;
    ctx.nodeId = order.idempotency_key.split("|")[0];
    const [block] = await sql`select status, end_at from blocks where id = ${order.block_id}`;
    expect(block).toBeDefined();
    const sfNode = await until("the node in the simulator", async () => {
      const res = await fetch(`${stack.simUrl}/v1/nodes/${ctx.nodeId}`, {
        headers: { authorization: `Bearer ${stack.simToken}` },
      });
      return res.ok ? ((await res.json()) as { id: string; name: string; status: string }) : null;
    });
    ctx.sfNodeId = sfNode.id;
    expect(sfNode.name).toBe(ctx.nodeId);
    // SF Compute starts "now" at the next minute: skip to it instead of waiting.
    await stack.advanceMarket(60_000);

    // The node boots, its agent registers, the job runs and succeeds.
    await stack.waitForNodes(1, 90_000);
    expect(stack.agents().map((a) => a.nodeId)).toEqual([ctx.nodeId]);
    const done = await until(
      "the job to finish",
      async () => {
        const j = await job(id);
        return ["succeeded", "failed", "cancelled"].includes(j.status) ? j : null;
      },
      120_000,
    );
    expect(done.status).toBe("succeeded");
    const logs = await until("the job's log line", async () => {
      const page = await api<{ data: { line: string }[] }>("GET", `/v1/jobs/${id}/logs`);
      return page.data.some((l) => l.line.includes("hello-from-scalar")) ? page : null;
    });
    expect(logs.data.map((l) => l.line)).toContain("hello-from-scalar");
    // The same logs through the CLI: the next test.

    const usage = await until("a usage event", async () => {
      const rows = await sql<{ gpu_count: number; tier: string }[]>`
        select gpu_count, tier from usage_events where job_id = ${id}`;
      return rows.length > 0 ? rows : null;
    });
    expect(usage[0]).toMatchObject({ gpu_count: 1, tier: "fast" });
    const bought = await until("the block active", async () => {
      const [b] = await sql<{ status: string }[]>`select status from blocks where id = ${ctx.blockId!}`;
      return b?.status === "active" ? b : null;
    });
    expect(bought.status).toBe("active");
  }, 240_000);

  it("reads the first job's logs through the CLI (`scalar jobs logs`, `scalar jobs get`)", async () => {
    expect(ctx.jobId, "needs the job of the first test").toBeDefined();
    const scalar = (args: string[]) =>
      new Promise<{ code: number; stdout: string; stderr: string }>((done) => {
        const env = { ...process.env, SCALAR_API_URL: stack.apiUrl, SCALAR_API_KEY: stack.apiKey };
        execFile(process.execPath, [CLI, ...args], { env, timeout: 60_000 }, (error, stdout, stderr) => {
          done({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, stdout, stderr });
        });
      });
    const json = await scalar(["jobs", "logs", ctx.jobId!, "--json"]);
    expect(json.code, json.stderr).toBe(0);
    expect(
      json.stdout
        .trimEnd()
        .split("\n")
        .map((l) => JSON.parse(l).line),
    ).toContain("hello-from-scalar");
    expect(await scalar(["jobs", "logs", ctx.jobId!])).toEqual({ code: 0, stdout: "hello-from-scalar\n", stderr: "" });
    const got = await scalar(["jobs", "get", ctx.jobId!, "--json"]);
    expect(JSON.parse(got.stdout)).toMatchObject({ id: ctx.jobId, status: "succeeded", exit_code: 0 });
  });

  it("retries a failing job, dead-letters it after its attempts, and runs it again when re-driven", async () => {
    expect(ctx.nodeId, "needs the node of the first test").toBeDefined();
    const { id } = await submit(["sh", "-c", "echo failing-attempt; exit 3"], { max_attempts: 2 });
    const dead = await until(
      "the job dead-lettered",
      async () => {
        const j = await job(id);
        return j.dead_lettered ? j : null;
      },
      90_000,
    );
    expect(dead).toMatchObject({ status: "failed", attempts: 2, dead_lettered: true });
    const letters = await api<{ data: { job_id: string; attempts: number; reasons: unknown[] }[] }>(
      "GET",
      "/v1/operator/dead-letters",
    );
    const letter = letters.data.find((d) => d.job_id === id);
    expect(letter?.attempts).toBe(2);

    const redriven = await api<{ status: string }>("POST", `/v1/operator/dead-letters/${id}/redrive`);
    expect(["queued", "placed", "running"]).toContain(redriven.status);
    const again = await until(
      "the re-driven job to run and fail again",
      async () => {
        const j = await job(id);
        return j.attempts > 2 && j.status === "failed" ? j : null;
      },
      90_000,
    );
    expect(again.attempts).toBeGreaterThan(2);
    const [events] = await sql<{ n: number }[]>`
      select count(*)::int as n from job_events where job_id = ${id} and type = 'redriven'`;
    expect(events?.n).toBe(1);
  }, 240_000);

  it("lets the idle block lapse when the market passes its end", async () => {
    expect(ctx.blockId, "needs the block of the first test").toBeDefined();
    const [block] = await sql<{ end_at: Date }[]>`select end_at from blocks where id = ${ctx.blockId!}`;
    // Past the block's end, and past the 12 h the autoscaler looks back at Fast arrivals for
    // headroom, so no new node is bought in its place.
    await stack.advanceMarket(Math.max(0, block!.end_at.getTime() - stack.marketNow()) + 13 * HOUR);
    const jumpedTo = new Date(stack.marketNow());
    await stack.tickCron();
    await until("the node released", async () => {
      const [n] = await sql<{ state: string; agent_token_hash: string | null }[]>`
        select state, agent_token_hash from nodes where id = ${ctx.nodeId!}`;
      return n?.state === "released" && n.agent_token_hash === null ? n : null;
    });
    const [b] = await sql<{ status: string }[]>`select status from blocks where id = ${ctx.blockId!}`;
    expect(b?.status).toBe("expired");
    const res = await fetch(`${stack.simUrl}/v1/nodes/${ctx.sfNodeId}`, {
      headers: { authorization: `Bearer ${stack.simToken}` },
    });
    expect(((await res.json()) as { status: string }).status).toBe("terminated");
    await until("the agent stopped", async () => stack.agents().length === 0);
    // Nothing is bought in its place: no demand is left within the autoscaler's look-back.
    await stack.tickCron();
    const orders = await sql<{ idempotency_key: string; status: string; placed_at: Date }[]>`
      select idempotency_key, status, placed_at from market_orders where purpose = 'capacity:buy' order by id`;
    const after = orders.filter((o) => o.placed_at >= jumpedTo);
    expect(after, `orders: ${JSON.stringify(orders, null, 1)}`).toEqual([]);
    // Every node bought (two Fast arrivals within 3 minutes may have made the burst rule buy a second) is gone.
    const [live] = await sql<{ n: number }[]>`
      select count(*)::int as n from nodes where id like 'cap-%' and state <> 'released'`;
    expect(live?.n).toBe(0);
  }, 120_000);
});
