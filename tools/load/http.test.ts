import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { httpClient, safeToResend, staleSocketError } from "./http";

/**
 * A server that answers the first request on each connection and closes the connection, without a
 * word, when a second one arrives on it: what a kept-alive connection closed by the server at the
 * moment a client reuses it looks like from the client.
 */
async function oneRequestPerConnection(): Promise<{ server: Server; url: string; seen: string[] }> {
  const seen: string[] = [];
  const perSocket = new WeakMap<object, number>();
  const server = createServer((req, res) => {
    const n = (perSocket.get(req.socket) ?? 0) + 1;
    perSocket.set(req.socket, n);
    seen.push(`${req.method} ${n}`);
    if (n > 1) {
      req.socket.destroy();
      return;
    }
    req.resume();
    req.on("end", () => res.end(JSON.stringify({ ok: true })));
  });
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen };
}

let server: Server | null = null;
afterEach(() => {
  server?.close();
  server = null;
});

describe("httpClient on a reused connection the server closed", () => {
  it("sends a GET, or a POST with an Idempotency-Key, again on a new connection, and counts it", async () => {
    const s = await oneRequestPerConnection();
    server = s.server;
    const client = httpClient(s.url, { maxSockets: 1 });
    expect((await client.request("GET", "/a")).status).toBe(200);
    const again = await client.request("GET", "/b");
    expect(again.status).toBe(200);
    const post = await client.request("POST", "/c", { body: {}, headers: { "Idempotency-Key": "k1" } });
    expect(post.status).toBe(200);
    expect(client.staleSocketRetries).toBe(2);
    expect(s.seen).toEqual(["GET 1", "GET 2", "GET 1", "POST 2", "POST 1"]);
    client.close();
  });

  it("does not repeat a POST without an Idempotency-Key: it is a failed request", async () => {
    const s = await oneRequestPerConnection();
    server = s.server;
    const client = httpClient(s.url, { maxSockets: 1 });
    expect((await client.request("GET", "/a")).status).toBe(200);
    const post = await client.request("POST", "/c", { body: {} });
    expect(post.status).toBe(0);
    expect(post.error).toMatch(/socket hang up|ECONNRESET/);
    expect(client.staleSocketRetries).toBe(0);
    client.close();
  });

  it("does not repeat a request that failed on a new connection", async () => {
    const client = httpClient("http://127.0.0.1:1", { maxSockets: 1 });
    const r = await client.request("GET", "/");
    expect(r.status).toBe(0);
    expect(client.staleSocketRetries).toBe(0);
    client.close();
  });
});

describe("the resend rule", () => {
  it("needs a reused connection and a reset before any answer", () => {
    const reset = Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" });
    const hangUp = new Error("socket hang up");
    expect(staleSocketError(reset, true)).toBe(true);
    expect(staleSocketError(hangUp, true)).toBe(true);
    expect(staleSocketError(reset, false)).toBe(false);
    expect(staleSocketError(Object.assign(new Error("refused"), { code: "ECONNREFUSED" }), true)).toBe(false);
  });
  it("repeats only what is safe to repeat", () => {
    expect(safeToResend("GET", {})).toBe(true);
    expect(safeToResend("HEAD", {})).toBe(true);
    expect(safeToResend("POST", {})).toBe(false);
    expect(safeToResend("POST", { "idempotency-key": "x" })).toBe(true);
    expect(safeToResend("DELETE", {})).toBe(false);
  });
});
