/**
 * Endpoint traffic through the API with the real RegionScheduler: `/v1/endpoints/{id or name}/invoke/…`
 * leased to a ready replica, forwarded to its node's ingress (the fake of test-ingress.ts, which
 * checks the node's key) and streamed back; cold starts from zero, retries past unreachable
 * replicas, the ingress's refusals, and the route's own errors.
 */
import { env, runDurableObjectAlarm, runInDurableObject, SELF } from "cloudflare:test";
import { describe, expect, inject, it } from "vitest";
import { INGRESS } from "../../core/schemas";
import type { Traffic } from "../../durable-objects/region-scheduler/traffic";
import { regionScheduler } from "../regions";
import { type Agent, heartbeat, poll, REGION, reportReady, retire, startNode } from "./test-agent";
import type {} from "./test-ingress-setup";
import { BASE, call, createKey, rateLimitOverride, signUp, type TestUser } from "./test-support";

const IMAGE = "127.0.0.1:5000/test/busybox:1";

/** A node whose ingress is the run's fake one (or `url`, e.g. a port nobody listens on). */
const ingressNode = (op: TestUser, url?: string) =>
  startNode(op, "H100", 8, (nodeId) => ({ ingress_url: url ?? `${inject("ingressUrl")}/n/${nodeId}` }));

async function createEndpoint(user: TestUser, body: Record<string, unknown>) {
  const res = await call("POST", "/v1/endpoints", user.token, {
    body: { image: IMAGE, gpu_count: 8, port: 8080, health_path: "/ok", ...body },
  });
  expect(res.status, res.text).toBe(201);
  return res.json as { id: string; name: string };
}

/** The agent's running replicas of this endpoint, by placement id. */
async function replicasOn(agent: Agent, endpointId: string): Promise<string[]> {
  return (await poll(agent)).placements
    .filter((p) => p.job_id.startsWith(endpointId) && p.desired === "running")
    .map((p) => p.placement_id);
}

/**
 * An operator's node with an ingress, a user entitled to Fast, and the user's endpoint with one
 * replica running and ready on that node.
 */
async function readyEndpoint(body: Record<string, unknown>) {
  const op = await signUp({ is_operator: true });
  const agent = await ingressNode(op);
  const user = await signUp({ fast_tier_enabled: true });
  const ep = await createEndpoint(user, { min_replicas: 1, ...body });
  const [placement] = await replicasOn(agent, ep.id);
  await reportReady(agent, [placement!]);
  return { op, agent, user, ep, placement: placement! };
}

/** The endpoint's leases the region's scheduler counts as requests in flight. */
const leasesInFlight = (endpointId: string) =>
  runInDurableObject(regionScheduler(env, REGION) as unknown as DurableObjectStub, (instance) =>
    (instance as unknown as { state: { traffic: Traffic } }).state.traffic.inFlight(endpointId),
  );

/** The endpoint's leases in flight once one is (or none after 2 s of waiting for one). */
async function leasesOnceTaken(endpointId: string): Promise<number> {
  let held = 0;
  for (let i = 0; i < 100 && held === 0; i++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    held = await leasesInFlight(endpointId);
  }
  return held;
}

/** The endpoint's leases in flight once none is (or what is left after 2 s of waiting for that). */
async function leasesOnceReturned(endpointId: string): Promise<number> {
  let held = await leasesInFlight(endpointId);
  for (let i = 0; i < 100 && held > 0; i++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    held = await leasesInFlight(endpointId);
  }
  return held;
}

/**
 * Holds back the scheduler's answers to routeEndpoint (the lease already taken) until the returned
 * function lets them go: a route call in flight for as long as a test needs. RPC calls the class's
 * method, not an instance's own property, so the prototype's is wrapped, and put back on release.
 */
async function holdRouteAnswers(): Promise<() => void> {
  // A flag the object polls, not a promise: one settled from the test's context would resume the
  // object's code there, and workerd refuses I/O on another object's behalf.
  const gate = { open: false };
  let restore!: () => void;
  await runInDurableObject(regionScheduler(env, REGION) as unknown as DurableObjectStub, (instance) => {
    const proto = Object.getPrototypeOf(instance) as { routeEndpoint: (...args: unknown[]) => Promise<unknown> };
    const route = proto.routeEndpoint;
    proto.routeEndpoint = async function (this: unknown, ...args: unknown[]) {
      const answer = await route.apply(this, args);
      while (!gate.open) await new Promise((resolve) => setTimeout(resolve, 10));
      return answer;
    };
    restore = () => {
      proto.routeEndpoint = route;
    };
  });
  return () => {
    gate.open = true;
    restore();
  };
}

async function invoke(
  credential: string,
  path: string,
  init: { method?: string; body?: string; headers?: Record<string, string>; signal?: AbortSignal } = {},
) {
  return SELF.fetch(`${BASE}${path}`, {
    method: init.method ?? "GET",
    headers: { authorization: `Bearer ${credential}`, ...init.headers },
    body: init.body,
    signal: init.signal,
  });
}

/** A WebSocket through the API, accepted half-open (this side answers a close itself), with what it receives. */
async function openSocket(user: TestUser, path: string) {
  const res = await invoke(user.token, path, { headers: { upgrade: "websocket" } });
  expect(res.status).toBe(101);
  const ws = res.webSocket!;
  const messages: string[] = [];
  ws.addEventListener("message", (event) => messages.push(String(event.data)));
  const closed = new Promise<CloseEvent>((resolve) => ws.addEventListener("close", resolve));
  ws.accept({ allowHalfOpen: true });
  return { ws, messages, closed };
}

describe("invoking an endpoint", () => {
  it("forwards to a ready replica through its node's ingress and streams the answer back", async () => {
    const { op, agent, user, ep, placement } = await readyEndpoint({ name: "echo" });
    expect(agent.ingressKey).toMatch(/^[0-9a-f]{64}$/);

    const res = await invoke(user.token, `/v1/endpoints/echo/invoke/v1/chat?stream=false&x=%2F`, {
      method: "POST",
      body: '{"prompt":"hi"}',
      headers: { "content-type": "application/json", "x-custom": "1", "scalar-wait": "5", cookie: "a=b" },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("scalar-replica")).toBe(`${ep.id}#0`);
    expect(res.headers.get("x-replica-said")).toBe("hello");
    const echo = (await res.json()) as {
      placement: string;
      method: string;
      path: string;
      headers: Record<string, string>;
      body: string;
    };
    expect(echo).toMatchObject({
      placement,
      method: "POST",
      path: "/v1/chat?stream=false&x=%2F",
      body: '{"prompt":"hi"}',
    });
    expect(echo.headers).toMatchObject({
      "content-type": "application/json",
      "x-custom": "1",
      "x-forwarded-proto": "http",
    });
    // Our credentials and controls stay with us; the node's key is checked by the ingress.
    for (const h of ["authorization", "cookie", "scalar-wait"]) expect(echo.headers[h]).toBeUndefined();

    // By id too, the bare route is the replica's "/", and its statuses and streams come back as they are.
    const root = await invoke(user.token, `/v1/endpoints/${ep.id}/invoke`);
    expect(((await root.json()) as { path: string }).path).toBe("/");
    const missing = await invoke(user.token, `/v1/endpoints/echo/invoke/status/404`);
    expect([missing.status, await missing.text()]).toEqual([404, "status 404"]);
    const stream = await invoke(user.token, `/v1/endpoints/echo/invoke/stream`);
    const reader = stream.body!.getReader();
    // The first chunk arrives while the replica is still writing (200 ms to go): not buffered.
    const first = new TextDecoder().decode((await reader.read()).value);
    expect(first).toMatch(/^chunk 0\n/);
    expect(first).not.toContain("chunk 2");
    let all = first;
    for (let r = await reader.read(); !r.done; r = await reader.read()) all += new TextDecoder().decode(r.value);
    expect(all).toBe("chunk 0\nchunk 1\nchunk 2\n");

    // Every lease came back: nothing is in flight.
    const state = await call("GET", `/v1/endpoints/${ep.id}`, user.token);
    expect(state.json).toMatchObject({ desired_replicas: 1, target_concurrency: 4 });
    await retire(op, agent);
  });

  it("starts a replica for a request at zero replicas and answers it once the replica is ready", async () => {
    const op = await signUp({ is_operator: true });
    const agent = await ingressNode(op);
    const user = await signUp({ fast_tier_enabled: true });
    const ep = await createEndpoint(user, { name: "cold", min_replicas: 0, max_replicas: 2 });
    expect(await replicasOn(agent, ep.id)).toEqual([]);

    // Not willing to wait: 503 with what the replicas are doing (the request has asked for one).
    const now = await invoke(user.token, `/v1/endpoints/cold/invoke/`, { headers: { "scalar-wait": "0" } });
    expect(now.status).toBe(503);
    const refused = (await now.json()) as { error: { code: string; details: { waiting_reason: string } } };
    expect(refused.error.code).toBe("no_ready_replica");
    expect(refused.error.details.waiting_reason).toMatch(/^replica 0: /);
    expect(now.headers.get("retry-after")).toBe("5");

    // A request that waits gets its answer when the agent reports the replica ready.
    const waiting = invoke(user.token, `/v1/endpoints/cold/invoke/hello`, { headers: { "scalar-wait": "20" } });
    const placements = await replicasOn(agent, ep.id);
    expect(placements).toHaveLength(1);
    await reportReady(agent, placements);
    const res = await waiting;
    expect(res.status).toBe(200);
    expect(((await res.json()) as { path: string }).path).toBe("/hello");
    await retire(op, agent);
  });

  it("leaves no lease behind for a request whose client left while it waited for a cold start", async () => {
    const op = await signUp({ is_operator: true });
    const agent = await ingressNode(op);
    const user = await signUp({ fast_tier_enabled: true });
    const ep = await createEndpoint(user, { name: "abandoned", min_replicas: 0, max_replicas: 1 });
    const client = new AbortController();
    const waiting = invoke(user.token, `/v1/endpoints/abandoned/invoke/`, {
      headers: { "scalar-wait": "30" },
      signal: client.signal,
    });
    // Placed: the request has reached the scheduler and waits there.
    let placed: string[] = [];
    for (let i = 0; i < 100 && placed.length === 0; i++) {
      placed = await replicasOn(agent, ep.id);
      if (placed.length === 0) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(placed).toHaveLength(1);
    client.abort();
    await expect(waiting).rejects.toThrow(/aborted/);
    // The replica turns ready: the scheduler's waiter takes a lease, finds its request gone and
    // returns it (the lease would otherwise count as a request in flight for 15 minutes).
    await reportReady(agent, placed);
    expect(await leasesOnceReturned(ep.id)).toBe(0);
    await retire(op, agent);
  });

  it("leaves no lease behind for a request whose client left while its replica computed the answer", async () => {
    const { op, agent, user, ep } = await readyEndpoint({ name: "patient" });
    const client = new AbortController();
    // The replica answers after 20 s, long after the client has gone.
    const waiting = invoke(user.token, `/v1/endpoints/patient/invoke/slow/20000`, { signal: client.signal });
    // Leased: the Worker has forwarded the request and waits for the replica's answer.
    expect(await leasesOnceTaken(ep.id)).toBe(1);
    client.abort();
    await expect(waiting).rejects.toThrow(/aborted/);
    // Returned at once, not when the lease expires 15 minutes later (nor when the replica answers).
    expect(await leasesOnceReturned(ep.id)).toBe(0);
    await retire(op, agent);
  });

  it("leaves no lease behind for a request whose client left while the scheduler's answer was on its way", async () => {
    const { op, agent, user, ep } = await readyEndpoint({ name: "hasty" });
    const release = await holdRouteAnswers();
    try {
      const client = new AbortController();
      // A replica is ready: the scheduler leases it at once, without waiting (nor asking still_waiting).
      const waiting = invoke(user.token, `/v1/endpoints/hasty/invoke/`, { signal: client.signal });
      // Leased: the scheduler has taken the lease, and its answer is held back.
      expect(await leasesOnceTaken(ep.id)).toBe(1);
      client.abort();
      await expect(waiting).rejects.toThrow(/aborted/);
    } finally {
      release();
    }
    // The lease arrives after the client left: returned at once, not when it expires 15 minutes later.
    expect(await leasesOnceReturned(ep.id)).toBe(0);
    await retire(op, agent);
  });

  it("answers 404 to a request whose endpoint was deleted while it waited, without handing it back to the scheduler", async () => {
    const op = await signUp({ is_operator: true });
    const agent = await ingressNode(op);
    const user = await signUp({ fast_tier_enabled: true });
    const ep = await createEndpoint(user, { name: "doomed", min_replicas: 0, max_replicas: 1 });
    // A request waits for the replica it has started (seen placed: it read the endpoint, active, and waits).
    const waiting = invoke(user.token, `/v1/endpoints/doomed/invoke/`, { headers: { "scalar-wait": "30" } });
    let placed: string[] = [];
    for (let i = 0; i < 100 && placed.length === 0; i++) {
      placed = await replicasOn(agent, ep.id);
      if (placed.length === 0) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(placed).toHaveLength(1);
    expect((await call("DELETE", `/v1/endpoints/${ep.id}`, user.token)).status).toBe(200);
    const scheduler = regionScheduler(env, REGION);
    expect(await scheduler.endpointState(ep.id)).toBeNull();
    // A heartbeat wakes the waiting request: the scheduler no longer knows the endpoint.
    await heartbeat(agent, {});
    const res = await waiting;
    expect([res.status, ((await res.json()) as { error: { code: string } }).error.code]).toEqual([404, "not_found"]);
    // Not brought back by the request's sync of the endpoint as it read it before it waited.
    expect(await scheduler.endpointState(ep.id)).toBeNull();
    expect(await replicasOn(agent, ep.id)).toEqual([]);
    await retire(op, agent);
  });

  it("goes to another replica when one cannot be reached, and says so when none can", async () => {
    const op = await signUp({ is_operator: true });
    // Replica 0 lands on a node whose ingress nobody listens on (one replica takes a whole node).
    const dead = await ingressNode(op, "http://127.0.0.1:9");
    const user = await signUp({ fast_tier_enabled: true });
    const ep = await createEndpoint(user, { name: "spread", min_replicas: 1, max_replicas: 2 });
    const [onDead] = await replicasOn(dead, ep.id);
    await reportReady(dead, [onDead!]);
    const live = await ingressNode(op);
    expect((await call("PATCH", `/v1/endpoints/${ep.id}`, user.token, { body: { min_replicas: 2 } })).status).toBe(200);
    const [onLive] = await replicasOn(live, ep.id);
    await reportReady(live, [onLive!]);

    // Lowest replica first on a tie: #0, unreachable, then #1.
    const res = await invoke(user.token, `/v1/endpoints/spread/invoke/x`);
    expect(res.status).toBe(200);
    expect(res.headers.get("scalar-replica")).toBe(`${ep.id}#1`);
    expect(((await res.json()) as { placement: string }).placement).toBe(onLive);

    // The ingress says the container refused: another replica is tried, then the request fails.
    const none = await invoke(user.token, `/v1/endpoints/spread/invoke/__refuse/replica_unreachable`);
    expect(none.status).toBe(502);
    expect(((await none.json()) as { error: { code: string } }).error.code).toBe("replica_unreachable");
    // The container had the request and failed it: a GET goes to the other replica too (both fail
    // here: 2 tried), a POST does not (it may have been acted on).
    const failedGet = await invoke(user.token, `/v1/endpoints/spread/invoke/__refuse/replica_failed`);
    expect([failedGet.status, await failedGet.json()]).toMatchObject([
      502,
      { error: { code: "replica_unreachable", details: { tried: 2 } } },
    ]);
    const failedPost = await invoke(user.token, `/v1/endpoints/spread/invoke/__refuse/replica_failed`, {
      method: "POST",
      body: "once",
    });
    expect([failedPost.status, await failedPost.json()]).toMatchObject([
      502,
      { error: { code: "replica_failed", details: { endpoint_id: ep.id } } },
    ]);
    // The ingress's other refusals are errors of ours, not the replica's answer.
    for (const [path, status, code] of [
      ["__refuse/replica_timeout", 504, "replica_timeout"],
      ["__refuse/unauthorized", 502, "ingress_refused"],
      ["__refuse/something_new", 502, "bad_replica_response"],
    ] as const) {
      const r = await invoke(user.token, `/v1/endpoints/spread/invoke/${path}`);
      expect([r.status, ((await r.json()) as { error: { code: string } }).error.code], path).toEqual([status, code]);
    }
    // A container cannot pass for the ingress: only the ingress sets the header (node-agent/ingress.ts strips it).
    expect(INGRESS.errorHeader).toBe("x-scalar-ingress-error");
    await retire(op, dead);
    await retire(op, live);
  });

  it("relays a WebSocket both ways, holding the replica's lease until it closes", async () => {
    const { op, agent, user, ep, placement } = await readyEndpoint({
      name: "socket",
      max_replicas: 2,
      target_concurrency: 1,
      scale_down_delay_s: 0,
    });

    const res = await invoke(user.token, `/v1/endpoints/socket/invoke/chat?room=1`, {
      headers: { upgrade: "websocket", "sec-websocket-protocol": "chat.v2, chat.v1", "x-custom": "1" },
    });
    expect(res.status).toBe(101);
    expect(res.headers.get("scalar-replica")).toBe(`${ep.id}#0`);
    expect(res.headers.get("sec-websocket-protocol")).toBe("chat.v2");
    const ws = res.webSocket!;
    const messages: (string | ArrayBuffer | Blob)[] = [];
    let arrived: () => void = () => {};
    ws.addEventListener("message", (event) => {
      messages.push(event.data);
      arrived();
    });
    const closed = new Promise<CloseEvent>((resolve) => ws.addEventListener("close", resolve));
    ws.accept();
    const next = async () => {
      if (messages.length === 0) await new Promise<void>((resolve) => (arrived = resolve));
      return messages.shift()!;
    };

    // The replica's greeting: where the request went, with the caller's headers but not our credentials.
    const hello = JSON.parse((await next()) as string) as {
      placement: string;
      path: string;
      headers: Record<string, string>;
      protocol: string;
    };
    expect(hello).toMatchObject({ placement, path: "/chat?room=1", protocol: "chat.v2" });
    expect(hello.headers).toMatchObject({ upgrade: "websocket", "x-custom": "1", "x-forwarded-proto": "http" });
    expect(hello.headers.authorization).toBeUndefined();
    ws.send("ping 1");
    expect(await next()).toBe("ping 1");
    ws.send(new Uint8Array([1, 2, 3]));
    const binary = await next();
    // Binary stays binary (this client hands it over as a Blob).
    expect(typeof binary, String(binary)).not.toBe("string");
    const bytes = binary instanceof Blob ? await binary.arrayBuffer() : (binary as ArrayBuffer);
    expect([...new Uint8Array(bytes)]).toEqual([1, 2, 3]);

    // While it is open it holds a lease: with a request streaming beside it, two are in flight and
    // the endpoint wants a second replica (target concurrency 1); without the socket's lease, one.
    const desired = async () =>
      ((await call("GET", `/v1/endpoints/${ep.id}`, user.token)).json as { desired_replicas: number }).desired_replicas;
    const stream = await invoke(user.token, `/v1/endpoints/socket/invoke/stream`);
    const reader = stream.body!.getReader();
    await reader.read();
    expect(await desired()).toBe(2);
    while (!(await reader.read()).done) {}

    // The replica closes with a code and a reason: both reach the caller, and the lease comes back,
    // so with no minimum the endpoint scales to zero.
    expect((await call("PATCH", `/v1/endpoints/${ep.id}`, user.token, { body: { min_replicas: 0 } })).status).toBe(200);
    ws.send("close 4001 done here");
    const close = await closed;
    expect([close.code, close.reason]).toEqual([4001, "done here"]);
    const scheduler = regionScheduler(env, REGION);
    let now = await desired();
    for (let i = 0; i < 50 && now !== 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      await runDurableObjectAlarm(scheduler);
      now = await desired();
    }
    expect(now).toBe(0);
    await retire(op, agent);
  });

  it("closed by the caller, still relays what the replica sent before it answered the close", async () => {
    const { op, agent, user } = await readyEndpoint({ name: "halfclose" });
    const { ws, messages, closed } = await openSocket(user, "/v1/endpoints/halfclose/invoke/late");
    // The last message and the close at once, as a client does at the end of its input; the
    // replica answers 300 ms later, its close after its answer.
    ws.send("last words");
    ws.close(1000, "done");
    const close = await closed;
    expect(messages).toEqual(["late"]);
    expect(close.code).toBe(1000);
    await retire(op, agent);
  });

  it("closes the caller's WebSocket with 1011 when the replica's connection is cut without a close", async () => {
    const { op, agent, user } = await readyEndpoint({ name: "dropper" });
    const { messages, closed } = await openSocket(user, "/v1/endpoints/dropper/invoke/drop");
    const close = await closed;
    expect(messages).toEqual(["bye"]);
    expect([close.code, close.reason]).toEqual([1011, "the other side's connection ended abnormally"]);
    await retire(op, agent);
  });

  it("answers a replica's refusal to upgrade as it is, and an unreachable replica as any request's", async () => {
    const { op, agent, user } = await readyEndpoint({ name: "plainonly" });
    const ws = { upgrade: "websocket" };

    const refused = await invoke(user.token, `/v1/endpoints/plainonly/invoke/no-upgrade`, { headers: ws });
    expect([refused.status, await refused.text()]).toEqual([400, "no upgrade"]);
    expect(refused.webSocket).toBeNull();
    const gone = await invoke(user.token, `/v1/endpoints/plainonly/invoke/__refuse/replica_unreachable`, {
      headers: ws,
    });
    expect([gone.status, ((await gone.json()) as { error: { code: string } }).error.code]).toEqual([
      502,
      "replica_unreachable",
    ]);
    await retire(op, agent);
  });

  it("refuses bad requests and callers without the scope, clearly", async () => {
    const user = await signUp({ fast_tier_enabled: true });
    const ep = await createEndpoint(user, { name: "guarded", min_replicas: 0 });
    const unknown = await invoke(user.token, `/v1/endpoints/nope/invoke/`);
    expect(unknown.status).toBe(404);
    for (const wait of ["-1", "601", "soon", ""]) {
      const r = await invoke(user.token, `/v1/endpoints/guarded/invoke/`, { headers: { "scalar-wait": wait } });
      expect(r.status, wait).toBe(400);
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe("invalid_header");
    }
    expect((await invoke("not-a-token", `/v1/endpoints/guarded/invoke/`)).status).toBe(401);
    // WebSocket upgrades only (this test client cannot send an upgrade with another method).
    const h2c = await invoke(user.token, `/v1/endpoints/guarded/invoke/ws`, { headers: { upgrade: "h2c" } });
    expect([h2c.status, ((await h2c.json()) as { error: { code: string } }).error.code]).toEqual([
      501,
      "upgrade_not_supported",
    ]);

    const readOnly = await createKey(user.token, ["endpoints:read"]);
    const denied = await invoke(readOnly.secret, `/v1/endpoints/guarded/invoke/`, { headers: { "scalar-wait": "0" } });
    expect(denied.status).toBe(403);
    // A key that may only invoke does that and nothing else.
    const invokeOnly = await createKey(user.token, ["endpoints:invoke"]);
    const allowed = await invoke(invokeOnly.secret, `/v1/endpoints/${ep.id}/invoke/`, {
      headers: { "scalar-wait": "0" },
    });
    expect(allowed.status).toBe(503);
    expect((await call("GET", "/v1/endpoints", invokeOnly.secret)).status).toBe(403);
    // Larger bodies than a replica's request may carry are refused before anything is routed.
    const big = await invoke(user.token, `/v1/endpoints/guarded/invoke/`, {
      method: "POST",
      body: "x".repeat(32 * 1024 * 1024 + 1),
    });
    expect(big.status).toBe(413);
    await runDurableObjectAlarm(regionScheduler(env, REGION));
  });

  it("limits an account's endpoint requests in a bucket apart from its API requests", async () => {
    const user = await signUp({ fast_tier_enabled: true });
    const me = async () => {
      const res = await call("GET", "/v1/me", user.token);
      return { limit: res.json.account.rate_limit, remaining: Number(res.headers.get("ratelimit-remaining")) };
    };
    // Without an override: the tier's plan; an override without its own invoke limit keeps the tier's rate.
    expect((await me()).limit).toMatchObject({ plan: "fast", invoke_limit: 60_000, window_s: 60 });
    await rateLimitOverride(user.accountId, 1000, 1000, 86_400);
    expect((await me()).limit).toMatchObject({ plan: "custom", invoke_limit: 86_400_000, window_s: 86_400 });
    await rateLimitOverride(user.accountId, 1000, 1000, 86_400, 3);
    await createEndpoint(user, { name: "limited", min_replicas: 0 });
    const before = await me();
    expect(before.limit).toMatchObject({ plan: "custom", invoke_limit: 3 });

    const wait0 = { headers: { "scalar-wait": "0" } };
    for (let i = 0; i < 3; i++) {
      const r = await invoke(user.token, `/v1/endpoints/limited/invoke/`, wait0);
      expect([r.status, ((await r.json()) as { error: { code: string } }).error.code]).toEqual([
        503,
        "no_ready_replica",
      ]);
    }
    const refused = await invoke(user.token, `/v1/endpoints/limited/invoke/`, wait0);
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(refused.headers.get("ratelimit-policy")).toBe("3;w=86400");
    const error = ((await refused.json()) as { error: { code: string; message: string; details: unknown } }).error;
    expect(error).toMatchObject({
      code: "rate_limited",
      details: { scope: "invoke", limit: 3, window_s: 86_400 },
    });
    expect(error.message).toMatch(/^rate limit of 3 endpoint requests per 86400 s reached for this account/);
    // The refusal comes before any other error, as on the API's routes.
    const unknown = await invoke(user.token, `/v1/endpoints/nope/invoke/`);
    expect([unknown.status, ((await unknown.json()) as { error: { code: string } }).error.code]).toEqual([
      429,
      "rate_limited",
    ]);

    // The API's own budget was not spent by the invokes: only this GET /v1/me took a token since.
    const after = await me();
    expect(after.remaining).toBe(before.remaining - 1);
    expect((await call("GET", "/v1/endpoints", user.token)).status).toBe(200);
  });
});
