/** The simulator over HTTP: auth, envelopes, admin routes, the event stream, faults, rate limits, the CLI. */
import { spawn } from "node:child_process";
import { resolve } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../db/embedded";
import { HOUR_MS, MINUTE_MS } from "./clock";
import type { SimEvent } from "./events";
import { startSimulatorServer } from "./server";
import { startTestSimulator, TEST_START, type TestSimulator } from "./testing";

let sim: TestSimulator;
beforeAll(async () => {
  sim = await startTestSimulator();
});
afterAll(async () => {
  await sim?.close();
});
afterEach(() => {
  sim.sim.faults.clear();
  sim.sim.rateLimiter.config = null;
  sim.sim.engine.configure({ errorStyle: "current" });
});

const api = (path: string, init: RequestInit = {}, token = sim.token) =>
  fetch(`${sim.url}${path}`, {
    ...init,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json", ...init.headers },
  });

describe("the API surface", () => {
  it("answers 401 with authentication_error for a missing or wrong token", async () => {
    const none = await fetch(`${sim.url}/v1/balances`);
    expect(none.status).toBe(401);
    expect(await none.json()).toEqual({
      error: { type: "authentication_error", message: "Missing bearer token", details: [] },
    });
    const wrong = await api("/v1/balances", {}, "not-the-token");
    expect(wrong.status).toBe(401);
    expect(((await wrong.json()) as { error: { type: string } }).error.type).toBe("authentication_error");
  });

  it("serves the health check as text, and unknown routes as a 404 envelope", async () => {
    const health = await fetch(`${sim.url}/v1/_healthz`);
    expect(health.headers.get("content-type")).toMatch(/^text\/plain/);
    expect(await health.text()).toBe("ok");
    const missing = await api("/v0/nothing");
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: { type: string } }).error.type).toBe("not_found");
  });

  it("renders errors in the configured shape: current, flat or legacy", async () => {
    const badOrder = () =>
      api("/v0/orders", {
        method: "POST",
        body: JSON.stringify({
          side: "buy",
          quantity: 0,
          price: 1,
          start_at: "NOW",
          end_at: "2030-01-01T00:00:00Z",
          instance_type: "h100v",
        }),
      });
    const current = await badOrder();
    expect(current.status).toBe(400);
    expect(await current.json()).toEqual({
      error: {
        type: "invalid_request_error",
        message: "quantity must be an integer between 1 and 1024 (nodes)",
        details: [
          {
            field: "quantity",
            code: "invalid_quantity",
            message: "quantity must be an integer between 1 and 1024 (nodes)",
          },
        ],
      },
    });
    sim.sim.engine.configure({ errorStyle: "flat" });
    expect(await (await badOrder()).json()).toMatchObject({
      type: "invalid_request_error",
      message: expect.any(String),
    });
    sim.sim.engine.configure({ errorStyle: "legacy" });
    expect(await (await api("/v0/orders/ordr_missing")).json()).toEqual({
      object: "error",
      code: "order.not_found",
      message: "Order not found: ordr_missing",
      details: {},
    });
  });

  it("refuses a body that is not JSON with a 400, never a 5xx", async () => {
    const res = await api("/v0/orders", { method: "POST", body: "{not json" });
    expect(res.status).toBe(400);
    const typeErr = await api("/v1/nodes", {
      method: "POST",
      body: JSON.stringify({ desired_count: "two", max_price_per_node_hour: 1 }),
    });
    expect(typeErr.status).toBe(400);
  });
});

describe("admin routes", () => {
  it("advances the virtual clock by seconds or to an instant", async () => {
    const before = sim.now();
    const res = await fetch(`${sim.url}/_sim/clock/advance`, { method: "POST", body: JSON.stringify({ seconds: 90 }) });
    expect(await res.json()).toMatchObject({ mode: "virtual", now: before + 90_000 });
    const to = new Date(before + HOUR_MS).toISOString();
    await fetch(`${sim.url}/_sim/clock/advance`, { method: "POST", body: JSON.stringify({ to }) });
    expect(sim.now()).toBe(before + HOUR_MS);
    const back = await fetch(`${sim.url}/_sim/clock/advance`, { method: "POST", body: JSON.stringify({ ms: -5 }) });
    expect(back.status).toBe(400);
  });

  it("on a real clock, matches orders and boots nodes by itself, with no request to wake it", async () => {
    const real = await startSimulatorServer({
      clock: "real",
      token: "real-token",
      bootSeconds: 0.05,
      settings: { market: { matchDelayMs: [10, 10] }, nodes: { nodeStartDelayMs: 20 } },
    });
    try {
      const events: string[] = [];
      real.sim.engine.subscribe((e) => events.push(`${e.type}:${String(e.data.status)}`));
      const end = new Date(Math.ceil(Date.now() / HOUR_MS) * HOUR_MS + 2 * HOUR_MS).toISOString();
      const res = await fetch(`${real.url}/v0/orders`, {
        method: "POST",
        headers: { Authorization: "Bearer real-token" },
        body: JSON.stringify({
          side: "buy",
          instance_type: "h100v",
          quantity: 1,
          start_at: "NOW",
          end_at: end,
          price: 1_000_000,
        }),
      });
      expect(res.status).toBe(201);
      // The wake timer fires at the match time; wait for the event rather than for a duration.
      await new Promise<void>((done) => {
        const check = () => (events.includes("order.status:filled") ? done() : setTimeout(check, 10));
        check();
      });
      expect(events).toEqual(["order.status:pending", "contract.updated:undefined", "order.status:filled"]);
    } finally {
      await real.close();
    }
  });

  it("refuses to advance a real clock", async () => {
    const real = await startSimulatorServer({ clock: "real" });
    try {
      const res = await fetch(`${real.url}/_sim/clock/advance`, {
        method: "POST",
        body: JSON.stringify({ seconds: 1 }),
      });
      expect(res.status).toBe(400);
    } finally {
      await real.close();
    }
  });

  it("creates extra accounts with their own token and balance", async () => {
    const res = await fetch(`${sim.url}/_sim/accounts`, {
      method: "POST",
      body: JSON.stringify({ token: "second-account", balance_cents: 1234 }),
    });
    expect(res.status).toBe(201);
    const balance = await (await api("/v1/balances", {}, "second-account")).json();
    expect(balance).toMatchObject({ object: "balances", available_balance_cents: 1234, current_balance_cents: 1234 });
  });

  it("streams events as server-sent events, so a launcher learns when a node's VM is running", async () => {
    const abort = new AbortController();
    const stream = await fetch(`${sim.url}/_sim/events?types=node.status,vm.status`, { signal: abort.signal });
    expect(stream.headers.get("content-type")).toBe("text/event-stream");
    const end = Math.ceil(sim.now() / HOUR_MS) * HOUR_MS + 2 * HOUR_MS;
    const created = await api("/v1/nodes", {
      method: "POST",
      body: JSON.stringify({
        desired_count: 1,
        max_price_per_node_hour: 5_000,
        zone: "hayesvalley",
        end_at: end / 1000,
        names: ["sse-node"],
      }),
    });
    expect(created.status).toBe(201);
    sim.advance(10 * MINUTE_MS);
    const events: SimEvent[] = [];
    const reader = stream.body!.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    while (!events.some((e) => e.type === "vm.status" && e.data.status === "Running")) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const frames = buffer.split("\n\n");
      buffer = frames.pop()!;
      for (const frame of frames) {
        const data = frame.split("\n").find((l) => l.startsWith("data: "));
        if (data) events.push(JSON.parse(data.slice(6)) as SimEvent);
      }
    }
    abort.abort();
    const mine = events.filter((e) => e.data.node_id === events[0]!.data.node_id);
    expect(mine.map((e) => `${e.type}:${e.data.status}`)).toEqual([
      "node.status:pending",
      "vm.status:Pending",
      "node.status:running",
      "vm.status:Running",
    ]);
    expect(mine[0]!.data.name).toBe("sse-node");
  });
});

describe("faults and limits", () => {
  it("answers an injected 5xx without doing the work, for as many requests as asked", async () => {
    await fetch(`${sim.url}/_sim/faults`, {
      method: "POST",
      body: JSON.stringify({ action: "error", status: 503, method: "GET", path: "/v1/balances", times: 2 }),
    });
    expect((await api("/v1/balances")).status).toBe(503);
    expect((await api("/v1/balances")).status).toBe(503);
    expect((await api("/v1/balances")).status).toBe(200);
  });

  it("adds latency to the requests a rule matches, and answers them normally", async () => {
    sim.sim.faults.add({ action: "latency", latencyMs: 30, path: "/v0/zones*", times: 2 });
    expect((await api("/v0/zones")).status).toBe(200);
    expect((await api("/v0/zones/hayesvalley")).status).toBe(200);
    expect((await api("/v0/zones")).status).toBe(200);
    expect(sim.sim.requests.slice(-3).map((r) => r.fault)).toEqual(["latency", "latency", null]);
  });

  it("loses the answer after committing: the order exists though the client saw a reset connection", async () => {
    sim.sim.faults.add({ action: "lose_response", method: "POST", path: "/v0/orders" });
    const before = sim.sim.engine.market.orders.size;
    const end = new Date(Math.ceil(sim.now() / HOUR_MS) * HOUR_MS + 2 * HOUR_MS).toISOString();
    await expect(
      api("/v0/orders", {
        method: "POST",
        headers: { "Idempotency-Key": "lost-1" },
        body: JSON.stringify({
          side: "buy",
          instance_type: "h100v",
          quantity: 1,
          start_at: "NOW",
          end_at: end,
          price: 1_000_000,
        }),
      }),
    ).rejects.toThrow();
    expect(sim.sim.engine.market.orders.size).toBe(before + 1);
    expect(sim.sim.requests.at(-1)).toMatchObject({ path: "/v0/orders", status: 201, fault: "lose_response" });
  });

  it("never answers a timed-out request and does nothing for it", async () => {
    sim.sim.faults.add({ action: "timeout", path: "/v1/nodes" });
    const before = sim.sim.engine.nodes.nodes.size;
    await expect(
      api("/v1/nodes", {
        method: "POST",
        body: JSON.stringify({
          desired_count: 1,
          max_price_per_node_hour: 5_000,
          zone: "hayesvalley",
          any_zone: false,
        }),
        signal: AbortSignal.timeout(300),
      }),
    ).rejects.toThrow();
    expect(sim.sim.engine.nodes.nodes.size).toBe(before);
  });

  it("answers 429 with RateLimit headers and no body above the configured rate", async () => {
    sim.sim.rateLimiter.config = { limit: 2, windowMs: 60_000, paths: ["/v0/quote"] };
    const quote = () => api("/v0/quote?side=buy&quantity=1&instance_type=h100v&duration=3600");
    const first = await quote();
    expect(first.status).toBe(200);
    expect(first.headers.get("ratelimit-limit")).toBe("2");
    expect(first.headers.get("ratelimit-remaining")).toBe("1");
    expect((await quote()).status).toBe(200);
    const limited = await quote();
    expect(limited.status).toBe(429);
    expect(await limited.text()).toBe("");
    expect(limited.headers.get("ratelimit-remaining")).toBe("0");
    expect(Number(limited.headers.get("ratelimit-reset"))).toBeGreaterThan(Date.now() / 1000);
    expect((await api("/v1/balances")).status).toBe(200); // other paths are not limited
  });
});

describe("npm run sim", () => {
  it("starts from the command line with a port, token, seed, boot delay and virtual clock", async () => {
    const port = await freePort();
    const root = resolve(import.meta.dirname, "../..");
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        "tools/sfcompute-sim/cli.ts",
        "--port",
        String(port),
        "--token",
        "cli-token",
        "--seed",
        "9",
        "--boot-seconds",
        "5",
        "--clock",
        "virtual",
        "--start",
        new Date(TEST_START).toISOString(),
      ],
      { cwd: root, stdio: ["ignore", "pipe", "pipe"] },
    );
    try {
      let output = "";
      await new Promise<void>((done, fail) => {
        child.stdout.on("data", (chunk: Buffer) => {
          output += chunk.toString();
          if (output.includes("listening")) done();
        });
        child.stderr.on("data", (chunk: Buffer) => {
          output += chunk.toString();
        });
        child.once("exit", (code) => fail(new Error(`sim exited ${code}: ${output}`)));
      });
      expect(output).toContain(`http://127.0.0.1:${port}`);
      const clock = await (await fetch(`http://127.0.0.1:${port}/_sim/clock`)).json();
      expect(clock).toMatchObject({ mode: "virtual", now: TEST_START });
      const res = await fetch(`http://127.0.0.1:${port}/v1/balances`, {
        headers: { Authorization: "Bearer cli-token" },
      });
      expect(res.status).toBe(200);
      const config = (await (await fetch(`http://127.0.0.1:${port}/_sim/config`)).json()) as {
        settings: { seed: number; nodes: { bootDelayMs: number[] } };
      };
      expect(config.settings.seed).toBe(9);
      expect(config.settings.nodes.bootDelayMs).toEqual([5000, 5000]);
    } finally {
      child.kill("SIGTERM");
    }
  });
});
