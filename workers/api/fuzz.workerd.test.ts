/**
 * Bad input never yields a 5xx: for every operation of docs/openapi.json, random and mutated bodies,
 * path parameters, query strings and headers, sent through the Worker. Every answer must be below
 * 500, and every 4xx must be the error envelope. Seeded (SEED below), so a failure replays.
 *
 * Requests go to the Worker's own fetch handler with the test env (real Hyperdrive, Durable
 * Objects): SELF.fetch slows down with every request a workerd instance has served
 * (cloudflare/workers-sdk#15446), which makes thousands of requests in one file take many minutes.
 */
import { createExecutionContext, env, waitOnExecutionContext } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import committed from "../../docs/openapi.json";
import worker from "../index";
import { BodyGenerator, prng } from "./fuzz-bodies";
import { BASE, call, createKey, rateLimitOverride, signUp, sql } from "./test-support";

type Op = {
  path: string;
  method: string;
  parameters?: { name: string; in: string; schema: Record<string, unknown> }[];
  requestBody?: { content: Record<string, { schema: Record<string, unknown> }> };
};

const SEED = 20261126;
const PER_OPERATION = 120;
const CONCURRENCY = 6;

describe("fuzzing every route from docs/openapi.json", () => {
  it(`answers ${PER_OPERATION} random or mutated requests per operation without a 5xx`, {
    timeout: 600_000,
  }, async () => {
    const rng = prng(SEED);
    const gen = new BodyGenerator(committed.components.schemas as never, rng);

    // Someone who may call everything: an operator account entitled to Fast, with room to spare.
    const op = await signUp({ is_operator: true, fast_tier_enabled: true, max_concurrent_gpus: 1_000_000 });
    await rateLimitOverride(op.accountId, 1_000_000, 1_000_000, 3600);
    const job = (await call("POST", "/v1/jobs", op.token, { body: { image: "busybox", gpu_count: 1 } })).json;
    const endpoint = (
      await call("POST", "/v1/endpoints", op.token, { body: { name: "fuzz-target", image: "busybox", gpu_count: 1 } })
    ).json;
    const key = await createKey(op.token, ["jobs:read"]);
    const agentNode = (
      await call("POST", "/v1/operator/nodes", op.token, {
        body: { gpu_model: "H100", cpu_milli: 64000, memory_mib: 512000 },
      })
    ).json;
    const targetNode = (
      await call("POST", "/v1/operator/nodes", op.token, {
        body: { gpu_model: "H100", cpu_milli: 64000, memory_mib: 512000 },
      })
    ).json;
    expect([job.id, endpoint.id, key.id, agentNode.token, targetNode.node.id].every(Boolean)).toBe(true);

    const operations: Op[] = Object.entries(committed.paths as unknown as Record<string, Record<string, Op>>).flatMap(
      ([path, ops]) => Object.entries(ops).map(([method, o]) => ({ ...o, path, method: method.toUpperCase() })),
    );

    const realId = (path: string) =>
      path.startsWith("/v1/jobs")
        ? job.id
        : path.startsWith("/v1/endpoints")
          ? endpoint.id
          : path.startsWith("/v1/api-keys")
            ? key.id
            : path.startsWith("/v1/operator/nodes")
              ? targetNode.node.id
              : job.id;
    const pathValue = (path: string) =>
      rng.pick([
        realId(path),
        realId(path),
        crypto.randomUUID(),
        "not-a-uuid",
        "%2e%2e%2f%2e%2e",
        "%00",
        "x".repeat(300),
        "ümlaut",
        realId(path).toUpperCase(),
      ]);

    const build = (o: Op) => {
      const path = o.path.replace(/\{(\w+)\}/g, () => encodeURI(pathValue(o.path)));
      const query = new URLSearchParams();
      for (const p of o.parameters ?? []) {
        if (p.in !== "query" || !rng.chance(0.5)) continue;
        const v = rng.chance(0.7)
          ? gen.valid(p.schema)
          : rng.pick(["", "-1", "1e99", "[]", "%", "x".repeat(600), "true,false"]);
        query.append(p.name, typeof v === "string" ? v : JSON.stringify(v));
      }
      // Long polls and log tails would hold the connection; their waiting paths have their own tests.
      if (o.path === "/v1/agent/placements") query.set("wait_ms", "0");
      if (o.path.endsWith("/logs")) query.set("follow", "false");
      if (rng.chance(0.05)) query.append("unknown_param", "1");

      const headers: Record<string, string> = {
        authorization: `Bearer ${o.path.startsWith("/v1/agent/") ? agentNode.token : op.token}`,
      };
      // Now and then a credential that is not one: it gets a 401 (or a 413: sizes are checked first).
      const forged = rng.chance(0.03);
      if (forged) {
        headers.authorization = rng.pick([
          "Bearer a.b.c",
          `Bearer ${op.token.slice(0, -4)}AAAA`,
          `Bearer ${key.secret.slice(0, -1)}`,
          "Bearer sk_live_",
          "Bearer snt_x",
          `Bearer ${"x".repeat(5000)}`,
          "Basic Zm9vOmJhcg==",
          "",
        ]);
      }
      if (rng.chance(0.1)) headers["idempotency-key"] = rng.pick(["k1", "k2", `k-${rng.int(0, 9)}`, " ", "é"]);
      if (rng.chance(0.05)) headers["scalar-account"] = rng.pick([op.accountId, crypto.randomUUID(), "nope"]);
      let body: string | undefined;
      const schema = o.requestBody?.content["application/json"]?.schema;
      if ((schema || rng.chance(0.1)) && o.method !== "GET") {
        const s = schema ?? { type: "object" };
        const kind = rng.int(0, 9);
        body = kind < 3 ? JSON.stringify(gen.valid(s)) : kind < 8 ? JSON.stringify(gen.mutated(s)) : gen.rawBody(s);
        headers["content-type"] = rng.chance(0.9)
          ? "application/json"
          : rng.pick(["text/plain", "application/xml", ""]);
        if (rng.chance(0.01)) body = JSON.stringify({ pad: "x".repeat(300_000) });
      }
      return {
        url: `${BASE}${path}${query.size ? `?${query}` : ""}`,
        init: { method: o.method, headers, body },
        forged,
      };
    };

    const requests = operations.flatMap((o) => Array.from({ length: PER_OPERATION }, () => ({ o, ...build(o) })));
    const failures: string[] = [];
    const statuses = new Map<number, number>();
    for (let i = 0; i < requests.length; i += CONCURRENCY) {
      await Promise.all(
        requests.slice(i, i + CONCURRENCY).map(async ({ o, url, init, forged }) => {
          const ctx = createExecutionContext();
          const res = await worker.fetch(new Request(url, init), env, ctx);
          const text = await res.text();
          await waitOnExecutionContext(ctx);
          statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
          if (forged && res.status !== 401 && res.status !== 413)
            failures.push(`forged credential got ${res.status}: ${o.method} ${url}`);
          if (res.status >= 500)
            failures.push(
              `${res.status} ${o.method} ${url} ${String(init.body).slice(0, 300)} → ${text.slice(0, 300)}`,
            );
          if (res.status >= 400) {
            const envelope = JSON.parse(text) as { error?: { code?: string; request_id?: string } };
            if (!envelope.error?.code || !envelope.error.request_id)
              failures.push(`no envelope: ${o.method} ${url} → ${text.slice(0, 200)}`);
          }
        }),
      );
    }
    console.log(
      JSON.stringify({
        seed: SEED,
        requests: requests.length,
        operations: operations.length,
        statuses: Object.fromEntries(statuses),
      }),
    );
    expect(failures).toEqual([]);
    // The run reached the handlers, not only the validators.
    expect([...statuses.keys()].some((s) => s >= 200 && s < 300)).toBe(true);
    const [jobsMade] = await sql<{ n: number }>("select count(*)::int as n from jobs where account_id = $1", [
      op.accountId,
    ]);
    expect(jobsMade!.n).toBeGreaterThan(1);
  });
});

describe("text Postgres cannot store", () => {
  it("refuses a NUL or a lone surrogate in a body, a query or a path with 400 invalid_request, the field named", async () => {
    const user = await signUp({ is_operator: true, fast_tier_enabled: true });
    const send = async (method: string, path: string, body?: string, headers: Record<string, string> = {}) => {
      const ctx = createExecutionContext();
      const res = await worker.fetch(
        new Request(`${BASE}${path}`, {
          method,
          headers: {
            authorization: `Bearer ${user.token}`,
            ...(body ? { "content-type": "application/json" } : {}),
            ...headers,
          },
          body,
        }),
        env,
        ctx,
      );
      await waitOnExecutionContext(ctx);
      const json = (await res.json()) as { error: { code: string; details?: { fields?: { field: string }[] } } };
      return { status: res.status, code: json.error?.code, field: json.error?.details?.fields?.[0]?.field };
    };
    const job1 = (extra: string) => `{"image":"busybox","gpu_count":1,${extra}}`;
    const cases: [string, string, string | undefined, Record<string, string>, string][] = [
      ["POST", "/v1/jobs", job1('"command":["a\\u0000b"]'), {}, "command[0]"],
      ["POST", "/v1/jobs", job1('"env":[{"name":"A","value":"\\u0000"}]'), {}, "env[0].value"],
      ["POST", "/v1/jobs", job1('"labels":{"team":"x\\u0000"}'), {}, "labels.team"],
      ["POST", "/v1/jobs", job1('"labels":{"team":"\\ud800"}'), {}, "labels.team"],
      ["POST", "/v1/endpoints", '{"name":"nul","image":"busybox","gpu_count":1,"args":["\\u0000"]}', {}, "args[0]"],
      ["POST", "/v1/api-keys", '{"name":"\\u0000","scopes":["jobs:read"]}', {}, "name"],
      ["GET", "/v1/jobs?label=team:%00", undefined, {}, "label"],
      ["GET", "/v1/api-keys?prefix=%00", undefined, {}, "prefix"],
      ["POST", "/v1/jobs/%00/cancel", undefined, { "idempotency-key": "nul-cancel" }, "path"],
    ];
    for (const [method, path, body, headers, field] of cases) {
      const answer = await send(method, path, body, headers);
      expect({ method, path, ...answer }).toEqual({ method, path, status: 400, code: "invalid_request", field });
    }
    // An endpoint's reference with a NUL: no such endpoint (the rest of the path is the replica's).
    expect(await send("GET", "/v1/endpoints/%00/invoke")).toMatchObject({ status: 404, code: "not_found" });
    // Escapes that are fine still are: an emoji as a surrogate pair, a tab.
    const fine = await send("POST", "/v1/jobs", job1('"labels":{"team":"\\ud83d\\ude80\\t"}'));
    expect(fine.status).toBe(202);
  });
});

describe("deeply nested bodies", () => {
  it("refuses a body nested past the limit with 400 too_deep, and validates one at the limit as usual", async () => {
    const user = await signUp();
    const raw = { "content-type": "application/json" };
    const deep = (inner: string, depth: number) => "[".repeat(depth) + inner + "]".repeat(depth);
    // Past the limit: before the idempotency hash or the text check walks it (a stack overflow, a 500).
    const keyed = await call("POST", "/v1/jobs", user.token, {
      raw: deep("", 20_000),
      headers: { ...raw, "idempotency-key": "deep" },
    });
    const escaped = await call("PATCH", `/v1/endpoints/${crypto.randomUUID()}`, user.token, {
      raw: deep('"\\u0041"', 20_000),
      headers: raw,
    });
    for (const res of [keyed, escaped]) {
      expect(res.status).toBe(400);
      expect(res.json.error).toMatchObject({
        code: "invalid_request",
        details: { location: "body", max_depth: 64, fields: [{ field: "body", code: "too_deep" }] },
      });
    }
    // At the limit (the job object, `labels`, then 62 arrays): the route's own answer about the label.
    const atLimit = `{"image":"busybox","gpu_count":1,"labels":{"team":${deep('"\\u0041"', 62)}}}`;
    const valid = await call("POST", "/v1/jobs", user.token, {
      raw: atLimit,
      headers: { ...raw, "idempotency-key": "d" },
    });
    expect(valid.status).toBe(400);
    expect(valid.json.error.details.fields[0]).toMatchObject({ field: "labels.team" });
    const past = `{"image":"busybox","gpu_count":1,"labels":{"team":${deep("", 63)}}}`;
    const refused = await call("POST", "/v1/jobs", user.token, { raw: past, headers: raw });
    expect(refused.json.error.details.fields[0]).toMatchObject({ field: "body", code: "too_deep" });
  });
});
