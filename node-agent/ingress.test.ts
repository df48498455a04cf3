/**
 * The ingress against real HTTP servers on 127.0.0.1 standing in for replicas: routing, the key,
 * hop-by-hop headers, streaming both ways, its own refusals (401, 404, 501, 502, 504) and aborts;
 * WebSockets through it, between a `ws` client and a `ws` server.
 * Then the agent's side on a fake engine: the key from registration, lookups of running replicas
 * only, and the readiness watch that brings a heartbeat forward.
 */

import { createHash } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  request,
  type Server,
  ServerResponse,
} from "node:http";
import {
  type AddressInfo,
  connect as connectNet,
  createServer as createNetServer,
  type Server as NetServer,
  type Socket,
} from "node:net";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { WebSocket, WebSocketServer } from "ws";
import { INGRESS, type NodeInventory, type RegisterResponse } from "../core/schemas";
import { freePort, refusedPort } from "../tools/db/embedded";
import { inCi } from "../tools/test/parts";
import { ControlPlaneClient } from "./control-plane";
import type { ContainerDetails, ContainerSummary, StatsSample } from "./docker/engine";
import { Ingress, type IngressOptions, type IngressTarget, parseIngressPath } from "./ingress";
import { silentLogger } from "./logger";
import { TestControlPlane } from "./test/control-plane";
import { FakeEngine } from "./test/fake-engine";
import { startUnitAgent } from "./test/harness";

const KEY = "k".repeat(40);

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** A request to the ingress with node:http (so every header comes back as sent). */
function send(
  port: number,
  path: string,
  opts: { method?: string; headers?: OutgoingHttpHeaders; body?: string; key?: string | null } = {},
): Promise<Answer> {
  const key = opts.key === undefined ? KEY : opts.key;
  return new Promise((done, fail) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        path,
        method: opts.method ?? "GET",
        headers: { ...(key !== null ? { [INGRESS.keyHeader]: key } : {}), ...opts.headers },
        agent: false,
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          body += chunk;
        });
        res.on("end", () => done({ status: res.statusCode ?? 0, headers: res.headers, body }));
        res.on("error", fail);
      },
    );
    req.on("error", fail);
    req.end(opts.body);
  });
}

/** Resolves with `promise`, or fails the test after `ms` (a stand-in for "arrives before the end"). */
function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  return Promise.race([
    promise,
    new Promise<never>((_, fail) => setTimeout(() => fail(new Error(`not within ${ms} ms: ${what}`)), ms)),
  ]);
}

/** The open connections of the servers `listen` started: upgraded ones are beyond `closeAllConnections`. */
const serverSockets = new Set<Socket>();

async function listen(handler: (req: IncomingMessage, res: ServerResponse) => void, host = "127.0.0.1") {
  const server = createServer(handler);
  server.on("connection", (socket: Socket) => {
    serverSockets.add(socket);
    socket.once("close", () => serverSockets.delete(socket));
  });
  server.listen(0, host);
  await once(server, "listening");
  return server;
}

const echo = (req: IncomingMessage, res: ServerResponse) => {
  let body = "";
  req.setEncoding("utf8");
  req.on("data", (chunk: string) => {
    body += chunk;
  });
  req.on("end", () => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body }));
  });
};

/** True when this host has an IPv6 loopback to listen on. */
const hasIpv6Loopback = Object.values(networkInterfaces())
  .flat()
  .some((a) => a?.address === "::1");

describe("the node ingress", () => {
  const servers: Server[] = [];
  const rawServers: NetServer[] = [];
  const ingresses: Ingress[] = [];
  const clients: WebSocket[] = [];
  const rawClients: Socket[] = [];
  afterEach(async () => {
    for (const ws of clients.splice(0)) ws.terminate();
    for (const socket of rawClients.splice(0)) socket.destroy();
    for (const i of ingresses.splice(0)) await i.stop();
    for (const socket of serverSockets) socket.destroy();
    for (const s of servers.splice(0)) {
      s.closeAllConnections();
      await new Promise((done) => s.close(done));
    }
    for (const s of rawServers.splice(0)) await new Promise((done) => s.close(done));
  });

  /** A replica server, and an ingress routing `placements` (id → that server, or another target). */
  async function setup(
    handler: (req: IncomingMessage, res: ServerResponse) => void,
    opts: Partial<IngressOptions> & { targets?: Record<string, IngressTarget>; host?: string } = {},
  ) {
    const { targets: more, host: replicaHost = "127.0.0.1", ...options } = opts;
    const replica = await listen(handler, replicaHost);
    servers.push(replica);
    const replicaPort = (replica.address() as AddressInfo).port;
    const targets: Record<string, IngressTarget> = { "rep-1": { host: replicaHost, port: replicaPort }, ...more };
    const lookups: string[] = [];
    const ingress = new Ingress({
      port: 0,
      host: "127.0.0.1",
      log: silentLogger,
      key: () => KEY,
      lookup: (id) => {
        lookups.push(id);
        return targets[id] ?? null;
      },
      ...options,
    });
    ingresses.push(ingress);
    const { port } = await ingress.start();
    return { port, replicaPort, lookups, replica };
  }

  it("reads the placement id and the replica's path from the ingress path", () => {
    expect(parseIngressPath("/p/rep-1/v1/chat?x=1")).toEqual({ placementId: "rep-1", path: "/v1/chat?x=1" });
    expect(parseIngressPath("/p/rep-1")).toEqual({ placementId: "rep-1", path: "/" });
    expect(parseIngressPath("/p/rep-1?q=2")).toEqual({ placementId: "rep-1", path: "/?q=2" });
    expect(parseIngressPath("/p/rep-1/")).toEqual({ placementId: "rep-1", path: "/" });
    expect(parseIngressPath(INGRESS.path("a b/c", "/x"))).toEqual({ placementId: "a b/c", path: "/x" });
    expect(parseIngressPath("/p/")).toBeNull();
    expect(parseIngressPath("/p/%E0%A4%A/x")).toBeNull();
    expect(parseIngressPath("/other/rep-1")).toBeNull();
  });

  it("forwards method, path and query to the replica, with the forwarded headers and without the key", async () => {
    const { port, replicaPort, lookups } = await setup(echo);
    const cases: [string, string][] = [
      ["/p/rep-1/v1/chat?x=1&y=%20z", "/v1/chat?x=1&y=%20z"],
      ["/p/rep-1", "/"],
      ["/p/rep-1?q=1", "/?q=1"],
    ];
    for (const [path, upstream] of cases) {
      const a = await send(port, path, { method: "DELETE", headers: { "x-custom": "yes" } });
      expect(a.status).toBe(200);
      expect(a.headers[INGRESS.errorHeader]).toBeUndefined();
      const seen = JSON.parse(a.body);
      expect(seen).toMatchObject({ method: "DELETE", url: upstream });
      expect(seen.headers).toMatchObject({
        host: `127.0.0.1:${replicaPort}`,
        "x-custom": "yes",
        "x-forwarded-for": "127.0.0.1",
        "x-forwarded-proto": "http",
        "x-forwarded-host": `127.0.0.1:${port}`,
      });
      expect(seen.headers).not.toHaveProperty(INGRESS.keyHeader);
    }
    expect(lookups).toEqual(["rep-1", "rep-1", "rep-1"]);

    // A caller's own forwarded headers (a TLS terminator in front) are kept, the client appended.
    const a = await send(port, "/p/rep-1/", {
      headers: { "x-forwarded-for": "203.0.113.9", "x-forwarded-proto": "https", "x-forwarded-host": "api.example" },
    });
    expect(JSON.parse(a.body).headers).toMatchObject({
      "x-forwarded-for": "203.0.113.9, 127.0.0.1",
      "x-forwarded-proto": "https",
      "x-forwarded-host": "api.example",
    });
  });

  it("refuses a missing or wrong key with 401, and everything while it has no key", async () => {
    let hits = 0;
    const { port } = await setup((req, res) => {
      hits++;
      echo(req, res);
    });
    for (const key of [null, "", "k".repeat(39) + "x", "k".repeat(41), "k".repeat(39)]) {
      const a = await send(port, "/p/rep-1/", { key });
      expect(a.status).toBe(401);
      expect(a.headers[INGRESS.errorHeader]).toBe("unauthorized");
      expect(a.headers["content-type"]).toBe("application/json");
      expect(JSON.parse(a.body)).toEqual({ error: { code: "unauthorized", message: expect.any(String) } });
    }
    // Before the path: an unknown placement without the key is a 401 too.
    expect((await send(port, "/p/nope/", { key: "wrong" })).status).toBe(401);
    expect(hits).toBe(0);
    expect((await send(port, "/p/rep-1/")).status).toBe(200);
    expect(hits).toBe(1);

    let key: string | null = null;
    const { port: keyless } = await setup(echo, { key: () => key });
    const refused = await send(keyless, "/p/rep-1/");
    expect([refused.status, refused.headers[INGRESS.errorHeader]]).toEqual([401, "unauthorized"]);
    // A key given at (re-)registration applies at once.
    key = KEY;
    expect((await send(keyless, "/p/rep-1/")).status).toBe(200);
  });

  it("answers 404 unknown_placement for a placement it does not run and for paths outside the prefix", async () => {
    const { port, lookups } = await setup(echo);
    for (const path of ["/p/rep-2/x", "/p/", "/", "/rep-1/x", "/p/%zz/x"]) {
      const a = await send(port, path);
      expect(a.status, path).toBe(404);
      expect(a.headers[INGRESS.errorHeader]).toBe("unknown_placement");
      expect(JSON.parse(a.body).error.code).toBe("unknown_placement");
    }
    expect(lookups).toEqual(["rep-2"]);
  });

  it("drops hop-by-hop headers both ways, those named in Connection included", async () => {
    const { port } = await setup((req, res) => {
      res.writeHead(200, {
        connection: "x-resp-hop",
        "x-resp-hop": "1",
        "keep-alive": "timeout=999",
        "proxy-authenticate": "Basic",
        "x-kept": "yes",
        "set-cookie": ["a=1", "b=2"],
      });
      res.end(JSON.stringify(req.headers));
    });
    const a = await send(port, "/p/rep-1/", {
      headers: {
        connection: "keep-alive, x-req-hop",
        "x-req-hop": "1",
        "keep-alive": "timeout=5",
        te: "trailers",
        "proxy-authorization": "Basic eA==",
        "proxy-connection": "keep-alive",
        "x-end-to-end": "yes",
      },
    });
    const seen = JSON.parse(a.body);
    expect(seen["x-end-to-end"]).toBe("yes");
    for (const name of ["x-req-hop", "keep-alive", "te", "proxy-authorization", "proxy-connection"]) {
      expect(seen, name).not.toHaveProperty(name);
    }
    // Node's own connection handling may add `connection`; never the replica's values.
    expect(seen.connection).not.toMatch(/x-req-hop/);
    expect(a.headers["x-kept"]).toBe("yes");
    expect(a.headers["set-cookie"]).toEqual(["a=1", "b=2"]);
    expect(a.headers).not.toHaveProperty("x-resp-hop");
    expect(a.headers).not.toHaveProperty("proxy-authenticate");
    expect(a.headers["keep-alive"]).not.toBe("timeout=999");
    expect(a.headers.connection).not.toMatch(/x-resp-hop/);
  });

  it("strips an ingress error header a replica sets, passing its status and body on", async () => {
    const { port } = await setup((_req, res) => {
      res.writeHead(404, "Gone Fishing", { [INGRESS.errorHeader]: "unknown_placement", "content-type": "text/plain" });
      res.end("the replica's own 404");
    });
    const a = await send(port, "/p/rep-1/missing");
    expect(a).toMatchObject({ status: 404, body: "the replica's own 404" });
    expect(a.headers).not.toHaveProperty(INGRESS.errorHeader);
  });

  it("streams a chunked response chunk by chunk, before the replica ends it", async () => {
    let release!: () => void;
    const released = new Promise<void>((done) => {
      release = done;
    });
    const { port } = await setup((_req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write("first\n");
      void released.then(() => res.end("second\n"));
    });
    const res = await within(
      5_000,
      "the response headers while the replica holds the rest",
      new Promise<IncomingMessage>((done, fail) => {
        request({ host: "127.0.0.1", port, path: "/p/rep-1/stream", headers: { [INGRESS.keyHeader]: KEY } }, done)
          .on("error", fail)
          .end();
      }),
    );
    expect(res.statusCode).toBe(200);
    expect(res.headers["transfer-encoding"]).toBe("chunked");
    res.setEncoding("utf8");
    const [first] = (await within(5_000, "the first chunk while the replica holds the rest", once(res, "data"))) as [
      string,
    ];
    expect(first).toBe("first\n");
    release();
    let rest = "";
    res.on("data", (chunk: string) => {
      rest += chunk;
    });
    await once(res, "end");
    expect(rest).toBe("second\n");
  });

  it("streams a request body to the replica as it arrives, chunked or with a length", async () => {
    let gotFirst!: () => void;
    const firstArrived = new Promise<void>((done) => {
      gotFirst = done;
    });
    const { port } = await setup((req, res) => {
      let body = "";
      req.setEncoding("utf8");
      req.on("data", (chunk: string) => {
        if (!body) gotFirst();
        body += chunk;
      });
      req.on("end", () => {
        res.writeHead(200);
        res.end(JSON.stringify({ body, te: req.headers["transfer-encoding"], length: req.headers["content-length"] }));
      });
    });
    const answer = new Promise<Answer>((done, fail) => {
      const req = request(
        {
          host: "127.0.0.1",
          port,
          method: "POST",
          path: "/p/rep-1/upload",
          headers: { [INGRESS.keyHeader]: KEY, "transfer-encoding": "chunked" },
        },
        (res) => {
          let body = "";
          res.setEncoding("utf8");
          res.on("data", (c: string) => {
            body += c;
          });
          res.on("end", () => done({ status: res.statusCode ?? 0, headers: res.headers, body }));
        },
      );
      req.on("error", fail);
      req.write("part one;");
      // The second part only once the replica has the first: a buffering ingress never gets here.
      void within(5_000, "the first part at the replica before the client sends the rest", firstArrived).then(
        () => req.end("part two"),
        fail,
      );
    });
    const a = await answer;
    expect(a.status).toBe(200);
    expect(JSON.parse(a.body)).toEqual({ body: "part one;part two", te: "chunked" });

    const sized = await send(port, "/p/rep-1/upload", { method: "PUT", body: '{"prompt":"hi"}' });
    expect(JSON.parse(sized.body)).toEqual({ body: '{"prompt":"hi"}', length: "15" });
  });

  it("answers 502 replica_unreachable when the replica refuses the connection, replica_failed when it drops it", async () => {
    const closed = await refusedPort();
    const { port } = await setup(
      (req) => {
        req.socket.destroy();
      },
      { targets: { refused: { host: "127.0.0.1", port: closed } } },
    );
    // Refused: the request never reached it (the control plane may send it to another replica).
    // Dropped after it had the request: it may have acted on it.
    for (const [path, code] of [
      ["/p/refused/x", "replica_unreachable"],
      ["/p/rep-1/x", "replica_failed"],
    ]) {
      const a = await send(port, path!, { method: "POST", body: "payload" });
      expect(a.status, path).toBe(502);
      expect(a.headers[INGRESS.errorHeader], path).toBe(code);
      expect(JSON.parse(a.body).error.code).toBe(code);
      expect(a.body).not.toContain("127.0.0.1");
    }
  });

  it("sends a request without a body again on a fresh connection when a kept-alive one turns out closed", async () => {
    // A replica that answers the first request of each connection, keeps it open, and resets it
    // when a second request comes: what a server whose idle timeout just ran out looks like.
    const connections: number[] = [];
    const raw = createNetServer((socket) => {
      connections.push(connections.length);
      let answered = false;
      socket.on("data", () => {
        if (answered) {
          socket.resetAndDestroy();
          return;
        }
        answered = true;
        socket.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok");
      });
    });
    raw.listen(0, "127.0.0.1");
    await once(raw, "listening");
    const rawPort = (raw.address() as AddressInfo).port;
    try {
      const { port } = await setup(echo, { targets: { idle: { host: "127.0.0.1", port: rawPort } } });
      for (let i = 0; i < 3; i++) {
        const a = await send(port, "/p/idle/x");
        expect([a.status, a.body], `request ${i}`).toEqual([200, "ok"]);
      }
      // Each request after the first found its kept-alive connection reset and went on a new one.
      expect(connections).toHaveLength(3);
      // With a body it is not sent twice: the client gets the 502.
      const posted = await send(port, "/p/idle/x", { method: "POST", body: "once" });
      expect(posted.status).toBe(502);
      expect(posted.headers[INGRESS.errorHeader]).toBe("replica_failed");
    } finally {
      await new Promise((done) => raw.close(done));
    }
  });

  /** A replica on a raw TCP server (what node:http would not send): `answer` writes to each connection. */
  async function rawReplica(answer: (socket: Socket, request: string, connection: number) => void) {
    let connections = 0;
    const raw = createNetServer((socket) => {
      serverSockets.add(socket);
      socket.once("close", () => serverSockets.delete(socket));
      const connection = connections++;
      socket.on("data", (chunk: Buffer) => answer(socket, chunk.toString("latin1"), connection));
    });
    raw.listen(0, "127.0.0.1");
    await once(raw, "listening");
    rawServers.push(raw);
    return { host: "127.0.0.1", port: (raw.address() as AddressInfo).port };
  }

  it("answers 502 replica_failed to a status HTTP does not allow, and goes on serving", async () => {
    // Node's client takes any three digits; `writeHead` throws on them (ERR_HTTP_INVALID_STATUS_CODE),
    // which, inside the replica's socket event, would be an uncaught exception: the agent's end.
    const heads: Record<string, string> = {
      "/099": "HTTP/1.1 099 Weird\r\ncontent-length: 2\r\n\r\nhi",
      "/000": "HTTP/1.1 000 Zero\r\ncontent-length: 2\r\n\r\nhi",
      "/600": "HTTP/1.1 600 Beyond\r\ncontent-length: 2\r\n\r\nhi",
      // A 101 with a body is no upgrade: Node hands it over as a final answer.
      "/101": "HTTP/1.1 101 Switching Protocols\r\ncontent-length: 2\r\n\r\nhi",
    };
    const bad = await rawReplica((socket, request) => {
      socket.end(heads[request.split(" ")[1] ?? ""] ?? "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    });
    const { port } = await setup(echo, { targets: { bad } });
    for (const path of Object.keys(heads)) {
      const a = await within(5_000, `the answer to ${path}`, send(port, `/p/bad${path}`));
      expect([a.status, a.headers[INGRESS.errorHeader]], path).toEqual([502, "replica_failed"]);
      expect(JSON.parse(a.body).error.code).toBe("replica_failed");
      expect(a.body).not.toContain("127.0.0.1");
    }
    // The ingress (and the process) is still there for the next requests, this replica's and others'.
    expect((await send(port, "/p/bad/fine")).body).toBe("ok");
    expect((await send(port, "/p/rep-1/x")).status).toBe(200);
  });

  it("passes on a status whose reason phrase holds control characters, with the standard reason", async () => {
    // Node's client lets a reason phrase with control characters through; `writeHead` throws on them.
    const odd = await rawReplica((socket) => {
      socket.end(Buffer.from("HTTP/1.1 201 Cre\x01at\x7fed\r\ncontent-length: 4\r\nx-a: b\r\n\r\nmade", "latin1"));
    });
    const { port } = await setup(echo, { targets: { odd } });
    const answer = await within(
      5_000,
      "the answer",
      new Promise<{ status?: number; message?: string; body: string }>((done, fail) => {
        const req = request(
          { host: "127.0.0.1", port, path: "/p/odd/x", headers: { [INGRESS.keyHeader]: KEY }, agent: false },
          (res) => {
            let body = "";
            res.setEncoding("utf8");
            res.on("data", (chunk: string) => {
              body += chunk;
            });
            res.on("end", () => done({ status: res.statusCode, message: res.statusMessage, body }));
          },
        );
        req.on("error", fail);
        req.end();
      }),
    );
    expect(answer).toEqual({ status: 201, message: "Created", body: "made" });
    expect((await send(port, "/p/rep-1/x")).status).toBe(200);
  });

  it("answers 502 replica_failed when relaying the replica's head throws for any other reason", async () => {
    const replica = await rawReplica((socket) => socket.end("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"));
    const { port } = await setup(echo, { targets: { replica } });
    // The first head written in this process is the ingress's relay of the raw replica's answer.
    const writeHead = vi.spyOn(ServerResponse.prototype, "writeHead").mockImplementationOnce(() => {
      throw Object.assign(new TypeError("refused"), { code: "ERR_SOMETHING" });
    });
    try {
      const a = await within(5_000, "the answer", send(port, "/p/replica/x"));
      expect([a.status, a.headers[INGRESS.errorHeader]]).toEqual([502, "replica_failed"]);
      expect(JSON.parse(a.body).error.message).toContain("ERR_SOMETHING");
    } finally {
      writeHead.mockRestore();
    }
    expect((await send(port, "/p/replica/x")).body).toBe("ok");
  });

  it("sends again only a safe request that got no byte back from its kept-alive connection", async () => {
    // A replica that answers the first request of each connection and keeps it open; on a second it
    // resets the connection, or for `/partial` sends part of a head and closes: it has the request
    // either way, so a POST or DELETE without a body must not reach it twice.
    const seen: string[] = [];
    const idle = await rawReplica((socket, request, connection) => {
      const [method, path] = request.split(" ");
      seen.push(`${connection} ${method} ${path}`);
      if (seen.filter((s) => s.startsWith(`${connection} `)).length === 1) {
        socket.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok");
      } else if (path === "/partial") socket.end("HTTP/1.1 200 OK\r\ncontent-le");
      else socket.resetAndDestroy();
    });
    const { port } = await setup(echo, { targets: { idle } });
    const answers: [string, number, string | string[] | undefined][] = [];
    for (const [method, path] of [
      ["GET", "/a"], // connection 0, answered
      ["POST", "/b"], // reset on connection 0: not again
      ["GET", "/c"], // connection 1, answered
      ["DELETE", "/d"], // reset on connection 1: not again
      ["GET", "/e"], // connection 2, answered
      ["GET", "/f"], // reset on connection 2: again on connection 3
      ["GET", "/partial"], // began to answer on connection 3: not again
    ] as const) {
      const a = await within(5_000, `${method} ${path}`, send(port, `/p/idle${path}`, { method }));
      answers.push([`${method} ${path}`, a.status, a.headers[INGRESS.errorHeader]]);
    }
    expect(answers).toEqual([
      ["GET /a", 200, undefined],
      ["POST /b", 502, "replica_failed"],
      ["GET /c", 200, undefined],
      ["DELETE /d", 502, "replica_failed"],
      ["GET /e", 200, undefined],
      ["GET /f", 200, undefined],
      ["GET /partial", 502, "replica_failed"],
    ]);
    expect(seen).toEqual([
      "0 GET /a",
      "0 POST /b",
      "1 GET /c",
      "1 DELETE /d",
      "2 GET /e",
      "2 GET /f",
      "3 GET /f",
      "3 GET /partial",
    ]);
  });

  it("cuts the client's connection when the replica fails after its headers, not ending it cleanly", async () => {
    const { port } = await setup((_req, res) => {
      res.writeHead(200, { "content-type": "text/plain" });
      res.write("partial");
      setTimeout(() => res.socket?.destroy(), 50);
    });
    await expect(send(port, "/p/rep-1/x")).rejects.toThrow(/aborted|ECONNRESET|socket hang up/);
  });

  it("answers 504 replica_timeout when the replica sends no headers in time, and drops its request", async () => {
    let upstreamClosed!: () => void;
    const dropped = new Promise<void>((done) => {
      upstreamClosed = done;
    });
    const { port } = await setup(
      (_req, res) => {
        res.on("close", () => upstreamClosed());
      },
      { timeoutMs: 200 },
    );
    const started = Date.now();
    const a = await send(port, "/p/rep-1/slow");
    expect(a.status).toBe(504);
    expect(a.headers[INGRESS.errorHeader]).toBe("replica_timeout");
    expect(JSON.parse(a.body).error.code).toBe("replica_timeout");
    expect(Date.now() - started).toBeLessThan(5_000);
    await within(5_000, "the replica's request closed", dropped);
  });

  it("aborts the replica's request when the client goes away", async () => {
    let arrived!: () => void;
    const atReplica = new Promise<void>((done) => {
      arrived = done;
    });
    let upstreamClosed!: () => void;
    const dropped = new Promise<void>((done) => {
      upstreamClosed = done;
    });
    const { port } = await setup((_req, res) => {
      res.on("close", () => upstreamClosed());
      arrived();
    });
    const client = request({
      host: "127.0.0.1",
      port,
      path: "/p/rep-1/generate",
      headers: { [INGRESS.keyHeader]: KEY },
      agent: false,
    });
    client.on("error", () => {}); // we cut it ourselves
    client.end();
    await within(5_000, "the request at the replica", atReplica);
    client.destroy();
    await within(5_000, "the replica's request closed after the client left", dropped);
  });

  /**
   * `setup` with a WebSocket replica: it echoes every message (text as text, binary as binary) and
   * closes with `<code> <reason>` when sent `close <code> <reason>`. `intercept` takes an upgrade
   * first (true: handled, the echo server never sees it).
   */
  async function wsSetup(
    opts: Partial<IngressOptions> & {
      targets?: Record<string, IngressTarget>;
      protocol?: (offered: Set<string>) => string | false;
      perMessageDeflate?: boolean;
      intercept?: (req: IncomingMessage, socket: Socket) => boolean;
    } = {},
  ) {
    const { protocol, perMessageDeflate = false, intercept, ...rest } = opts;
    const s = await setup(echo, rest);
    const upgrades: IncomingMessage[] = [];
    const peers: WebSocket[] = [];
    const wss = new WebSocketServer({ noServer: true, perMessageDeflate, handleProtocols: protocol ?? (() => false) });
    // What a container might add to its 101: the ingress passes the one and drops the other.
    wss.on("headers", (headers) => headers.push("x-replica: yes", `${INGRESS.errorHeader}: unauthorized`));
    s.replica.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) => {
      upgrades.push(req);
      if (intercept?.(req, socket)) return;
      wss.handleUpgrade(req, socket, head, (ws) => {
        peers.push(ws);
        ws.on("message", (data: Buffer, binary) => {
          const close = binary ? null : /^close (\d+) (.*)$/.exec(data.toString());
          if (close) ws.close(Number(close[1]), close[2]);
          else ws.send(data, { binary });
        });
      });
    });
    return { ...s, upgrades, peers };
  }

  type WsOptions = { key?: string | null; protocols?: string[]; headers?: Record<string, string> };

  function client(port: number, path: string, opts: WsOptions): WebSocket {
    const key = opts.key === undefined ? KEY : opts.key;
    const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, opts.protocols ?? [], {
      headers: { ...(key !== null ? { [INGRESS.keyHeader]: key } : {}), ...opts.headers },
    });
    clients.push(ws);
    return ws;
  }

  /** A WebSocket through the ingress, once open, and the 101 it got. */
  async function openWs(port: number, path: string, opts: WsOptions = {}) {
    const ws = client(port, path, opts);
    let response: IncomingMessage | undefined;
    ws.once("upgrade", (res) => {
      response = res;
    });
    const next = inbox(ws);
    await within(5_000, "the WebSocket open", once(ws, "open"));
    return { ws, response: response!, next };
  }

  /** The answer to a WebSocket handshake through the ingress that does not upgrade. */
  function refusedWs(port: number, path: string, opts: WsOptions = {}): Promise<Answer> {
    const ws = client(port, path, opts);
    return within(
      5_000,
      "the answer to the handshake",
      new Promise<Answer>((done, fail) => {
        let answered = false;
        ws.on("error", (error) => {
          if (!answered) fail(error);
        });
        ws.once("open", () => fail(new Error("the WebSocket opened")));
        ws.once("unexpected-response", (_req, res) => {
          let body = "";
          res.setEncoding("utf8");
          res.on("data", (chunk: string) => {
            body += chunk;
          });
          res.on("error", fail);
          res.on("end", () => {
            answered = true;
            done({ status: res.statusCode ?? 0, headers: res.headers, body });
            ws.terminate();
          });
        });
      }),
    );
  }

  type Message = { binary: boolean; data: Buffer };

  /** What `ws` receives, in order: `next()` resolves with the next message (perhaps already in). */
  function inbox(ws: WebSocket): () => Promise<Message> {
    const queue: Message[] = [];
    const waiting: ((m: Message) => void)[] = [];
    ws.on("message", (data: Buffer, binary) => {
      const m = { binary, data };
      const waiter = waiting.shift();
      if (waiter) waiter(m);
      else queue.push(m);
    });
    return () => {
      const m = queue.shift();
      return within(5_000, "a message", m ? Promise.resolve(m) : new Promise<Message>((done) => waiting.push(done)));
    };
  }

  it("proxies a WebSocket: text and binary both ways, with the forwarded headers and without the key", async () => {
    const { port, replicaPort, upgrades, lookups } = await wsSetup();
    const { ws, response, next } = await openWs(port, "/p/rep-1/chat?room=a", {
      headers: {
        "x-custom": "yes",
        "keep-alive": "timeout=5",
        "proxy-authorization": "Basic eA==",
        [INGRESS.errorHeader]: "forged",
      },
    });
    expect(lookups).toEqual(["rep-1"]);
    expect(response.statusCode).toBe(101);
    expect(response.headers["x-replica"]).toBe("yes");
    expect(response.headers).not.toHaveProperty(INGRESS.errorHeader);

    expect(upgrades).toHaveLength(1);
    const seen = upgrades[0]!;
    expect([seen.method, seen.url]).toEqual(["GET", "/chat?room=a"]);
    expect(seen.headers).toMatchObject({
      host: `127.0.0.1:${replicaPort}`,
      connection: "Upgrade",
      upgrade: "websocket",
      "sec-websocket-version": "13",
      "sec-websocket-key": expect.any(String),
      "x-custom": "yes",
      "x-forwarded-for": "127.0.0.1",
      "x-forwarded-proto": "http",
      "x-forwarded-host": `127.0.0.1:${port}`,
    });
    for (const name of [INGRESS.keyHeader, INGRESS.errorHeader, "keep-alive", "proxy-authorization"]) {
      expect(seen.headers, name).not.toHaveProperty(name);
    }

    ws.send("hello");
    const text = await next();
    expect([text.binary, text.data.toString()]).toEqual([false, "hello"]);
    // Larger than a socket's buffers, and in a row: whole and in order.
    const big = Buffer.alloc(300_000, 0);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7919) % 256;
    ws.send(big);
    ws.send("after");
    const binary = await next();
    expect(binary.binary).toBe(true);
    expect(binary.data.equals(big)).toBe(true);
    const after = await next();
    expect([after.binary, after.data.toString()]).toEqual([false, "after"]);
  });

  it("negotiates the subprotocol and extensions end to end", async () => {
    const { port, upgrades } = await wsSetup({
      protocol: (offered) => (offered.has("chat.v1") ? "chat.v1" : false),
      perMessageDeflate: true,
    });
    const { ws, response, next } = await openWs(port, "/p/rep-1/", { protocols: ["chat.v2", "chat.v1"] });
    expect(upgrades[0]!.headers["sec-websocket-protocol"]).toBe("chat.v2,chat.v1");
    expect(ws.protocol).toBe("chat.v1");
    expect(response.headers["sec-websocket-protocol"]).toBe("chat.v1");
    expect(ws.extensions).toContain("permessage-deflate");
    const text = "compressible ".repeat(1_000);
    ws.send(text);
    expect((await next()).data.toString()).toBe(text);
  });

  it("passes close codes and reasons through each way", async () => {
    const { port, peers } = await wsSetup();
    // The client closes.
    const a = await openWs(port, "/p/rep-1/");
    const peer = peers[0]!;
    const peerClosed = once(peer, "close");
    const clientClosed = once(a.ws, "close");
    a.ws.close(4001, "client bye");
    const [peerCode, peerReason] = (await within(5_000, "the replica's close", peerClosed)) as [number, Buffer];
    expect([peerCode, peerReason.toString()]).toEqual([4001, "client bye"]);
    const [code, reason] = (await within(5_000, "the client's close", clientClosed)) as [number, Buffer];
    expect([code, reason.toString()]).toEqual([4001, "client bye"]);

    // The replica closes.
    const b = await openWs(port, "/p/rep-1/");
    const closedByReplica = once(b.ws, "close");
    b.ws.send("close 4002 server bye");
    const [code2, reason2] = (await within(5_000, "the client's close", closedByReplica)) as [number, Buffer];
    expect([code2, reason2.toString()]).toEqual([4002, "server bye"]);
  });

  it("after the client's close, still passes on what the replica sends before its own close", async () => {
    // A replica that answers late: once the client's message and close are in, it waits, then sends
    // one more message and its close (as a server busy with the last message does).
    const { port } = await wsSetup({
      intercept: (req, socket) => {
        const accept = createHash("sha1")
          .update(`${req.headers["sec-websocket-key"]}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
          .digest("base64");
        socket.write(
          `HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${accept}\r\n\r\n`,
        );
        let seen = 0;
        socket.on("data", (chunk: Buffer) => {
          seen += chunk.length;
          // "last" (6 + 4 bytes masked) and a close with a code (6 + 2): both in.
          if (seen < 18) return;
          setTimeout(() => {
            socket.write(Buffer.concat([Buffer.from([0x81, 4]), Buffer.from("late")]));
            socket.end(Buffer.from([0x88, 2, 0x03, 0xe8]));
          }, 200);
        });
        return true;
      },
    });
    const { ws, next } = await openWs(port, "/p/rep-1/");
    const closed = once(ws, "close");
    ws.send("last");
    ws.close(1000);
    // Its sending side done (as workerd's is once it sent its close): the replica's answer still comes.
    (ws as unknown as { _socket: Socket })._socket.end();
    expect((await next()).data.toString()).toBe("late");
    const [code] = (await within(5_000, "the client's close", closed)) as [number, Buffer];
    expect(code).toBe(1000);
  });

  it("refuses a WebSocket without the right key with 401 and one for an unknown placement with 404", async () => {
    const { port, upgrades, lookups } = await wsSetup();
    for (const key of [null, "wrong", "k".repeat(39)]) {
      const a = await refusedWs(port, "/p/rep-1/", { key });
      expect(a.status).toBe(401);
      expect(a.headers[INGRESS.errorHeader]).toBe("unauthorized");
      expect(a.headers["content-type"]).toBe("application/json");
      expect(a.headers.connection).toBe("close");
      expect(JSON.parse(a.body)).toEqual({ error: { code: "unauthorized", message: expect.any(String) } });
    }
    // The key before the path.
    expect((await refusedWs(port, "/p/nope/", { key: "wrong" })).status).toBe(401);
    expect(lookups).toEqual([]);
    for (const path of ["/p/nope/", "/elsewhere"]) {
      const a = await refusedWs(port, path);
      expect([a.status, a.headers[INGRESS.errorHeader]], path).toEqual([404, "unknown_placement"]);
      expect(JSON.parse(a.body).error.code).toBe("unknown_placement");
    }
    expect(upgrades).toHaveLength(0);
  });

  it("refuses other upgrades with 501 without calling the replica", async () => {
    const { port, upgrades } = await wsSetup();
    const ws = { connection: "Upgrade", upgrade: "websocket", "sec-websocket-version": "13" };
    const cases: { method?: string; headers: OutgoingHttpHeaders }[] = [
      {
        headers: {
          connection: "Upgrade, HTTP2-Settings",
          upgrade: "h2c",
          "http2-settings": "AAMAAABkAARAAAAAAAIAAAAA",
        },
      },
      { method: "POST", headers: ws },
      // `Upgrade` without `Connection: Upgrade`: not a handshake (a plain request for Node).
      { headers: { upgrade: "websocket" } },
    ];
    for (const c of cases) {
      const a = await send(port, "/p/rep-1/ws", c);
      expect(a.status, JSON.stringify(c)).toBe(501);
      expect(a.headers[INGRESS.errorHeader]).toBeUndefined();
      expect(JSON.parse(a.body).error.code).toBe("upgrade_not_supported");
    }
    // Without the key, still the 401 first.
    const a = await send(port, "/p/rep-1/ws", { key: null, headers: cases[0]!.headers });
    expect([a.status, a.headers[INGRESS.errorHeader]]).toEqual([401, "unauthorized"]);
    expect(upgrades).toHaveLength(0);
  });

  it("answers 502 replica_unreachable when the replica refuses a WebSocket's connection, replica_failed when it resets it", async () => {
    const closed = await refusedPort();
    const { port } = await wsSetup({
      targets: { refused: { host: "127.0.0.1", port: closed } },
      intercept: (_req, socket) => {
        socket.destroy();
        return true;
      },
    });
    for (const [path, code] of [
      ["/p/refused/", "replica_unreachable"],
      ["/p/rep-1/", "replica_failed"],
    ]) {
      const a = await refusedWs(port, path!);
      expect(a.status, path).toBe(502);
      expect(a.headers[INGRESS.errorHeader], path).toBe(code);
      expect(JSON.parse(a.body).error.code).toBe(code);
      expect(a.body).not.toContain("127.0.0.1");
    }
  });

  it("passes on a replica's answer that does not upgrade, without an ingress error header", async () => {
    const { port } = await wsSetup({
      intercept: (req, socket) => {
        socket.end(
          req.url === "/chunked"
            ? "HTTP/1.1 403 Forbidden\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n there\r\n0\r\n\r\n"
            : `HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\n${INGRESS.errorHeader}: unknown_placement\r\n` +
                "x-reason: no-ws\r\ncontent-length: 10\r\n\r\nno upgrade",
        );
        return true;
      },
    });
    const a = await refusedWs(port, "/p/rep-1/x");
    expect(a).toMatchObject({ status: 400, body: "no upgrade" });
    expect(a.headers).toMatchObject({ "content-type": "text/plain", "x-reason": "no-ws", "content-length": "10" });
    expect(a.headers).not.toHaveProperty(INGRESS.errorHeader);
    // A body of unknown length ends with the connection.
    const b = await refusedWs(port, "/p/rep-1/chunked");
    expect(b).toMatchObject({ status: 403, body: "hello there" });
  });

  it("answers a WebSocket's handshake 502 replica_failed when the replica's status is not HTTP's", async () => {
    const { port } = await wsSetup({
      intercept: (req, socket) => {
        socket.end(
          req.url === "/101"
            ? "HTTP/1.1 101 Switching Protocols\r\ncontent-length: 2\r\n\r\nhi"
            : "HTTP/1.1 099 Weird\r\ncontent-length: 2\r\n\r\nhi",
        );
        return true;
      },
    });
    for (const path of ["/p/rep-1/099", "/p/rep-1/101"]) {
      const a = await refusedWs(port, path);
      expect([a.status, a.headers[INGRESS.errorHeader]], path).toEqual([502, "replica_failed"]);
      expect(JSON.parse(a.body).error.code).toBe("replica_failed");
    }
    expect((await send(port, "/p/rep-1/x")).status).toBe(200);
  });

  it("answers 504 replica_timeout when the replica does not answer a WebSocket in time, and has no timeout once open", async () => {
    let replicaClosed!: () => void;
    const dropped = new Promise<void>((done) => {
      replicaClosed = done;
    });
    const { port } = await wsSetup({
      timeoutMs: 200,
      intercept: (req, socket) => {
        if (req.url !== "/slow") return false;
        socket.resume(); // reading: how it sees the ingress go
        socket.once("end", () => replicaClosed());
        return true;
      },
    });
    const a = await refusedWs(port, "/p/rep-1/slow");
    expect(a.status).toBe(504);
    expect(a.headers[INGRESS.errorHeader]).toBe("replica_timeout");
    expect(JSON.parse(a.body).error.code).toBe("replica_timeout");
    await within(5_000, "the replica's connection closed", dropped);

    const { ws, next } = await openWs(port, "/p/rep-1/fast");
    // Well past the timeout: nothing to wait for but time.
    await new Promise((r) => setTimeout(r, 500));
    ws.send("still here");
    expect((await next()).data.toString()).toBe("still here");
  });

  it("cuts the replica's connection when the client leaves before the replica answers", async () => {
    let arrived!: () => void;
    const atReplica = new Promise<void>((done) => {
      arrived = done;
    });
    let replicaClosed!: () => void;
    const dropped = new Promise<void>((done) => {
      replicaClosed = done;
    });
    const { port } = await wsSetup({
      intercept: (_req, socket) => {
        socket.resume(); // reading: how it sees the ingress go
        socket.once("end", () => replicaClosed());
        arrived();
        return true;
      },
    });
    const ws = client(port, "/p/rep-1/", {});
    ws.on("error", () => {}); // we cut it ourselves
    await within(5_000, "the handshake at the replica", atReplica);
    ws.terminate();
    await within(5_000, "the replica's connection closed after the client left", dropped);
  });

  it("passes on what either side sends right behind its handshake", async () => {
    /** A text frame of up to 125 bytes (masked with a zero key, as a client must mask). */
    const frame = (text: string, masked: boolean) =>
      Buffer.concat([
        Buffer.from([0x81, (masked ? 0x80 : 0) | text.length]),
        masked ? Buffer.alloc(4) : Buffer.alloc(0),
        Buffer.from(text),
      ]);
    const { port } = await wsSetup({
      intercept: (req, socket) => {
        if (req.url !== "/eager") return false;
        const accept = createHash("sha1")
          .update(`${req.headers["sec-websocket-key"]}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
          .digest("base64");
        socket.write(
          Buffer.concat([
            Buffer.from(
              `HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${accept}\r\n\r\n`,
            ),
            frame("right behind the 101", false),
          ]),
        );
        return true;
      },
    });
    // The replica's frame in the same write as its 101.
    const eager = await openWs(port, "/p/rep-1/eager");
    expect((await eager.next()).data.toString()).toBe("right behind the 101");

    // The client's frame in the same write as its handshake (a raw client: `ws` waits for the 101).
    const raw = connectNet(port, "127.0.0.1");
    raw.on("error", () => {});
    rawClients.push(raw);
    raw.write(
      Buffer.concat([
        Buffer.from(
          `GET /p/rep-1/ HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\n${INGRESS.keyHeader}: ${KEY}\r\nconnection: Upgrade\r\n` +
            "upgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        ),
        frame("right behind the handshake", true),
      ]),
    );
    let got = Buffer.alloc(0);
    const echoed = frame("right behind the handshake", false);
    await within(
      5_000,
      "the 101 and the echo",
      new Promise<void>((done) => {
        raw.on("data", (chunk: Buffer) => {
          got = Buffer.concat([got, chunk]);
          const end = got.indexOf("\r\n\r\n");
          if (end >= 0 && got.length >= end + 4 + echoed.length) done();
        });
      }),
    );
    const end = got.indexOf("\r\n\r\n");
    expect(got.subarray(0, end).toString()).toMatch(/^HTTP\/1\.1 101 /);
    expect(got.subarray(0, end).toString()).toContain("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    expect(got.subarray(end + 4).equals(echoed)).toBe(true);
  });

  it("closes open WebSockets on stop()", async () => {
    const { port, peers } = await wsSetup();
    const { ws } = await openWs(port, "/p/rep-1/");
    const clientClosed = once(ws, "close");
    const peerClosed = once(peers[0]!, "close");
    await within(5_000, "stop()", ingresses.pop()!.stop());
    const [code] = (await within(5_000, "the client's close", clientClosed)) as [number];
    expect(code).toBe(1006); // cut, not closed
    await within(5_000, "the replica's close", peerClosed);
  });

  // Outside CI a host without an IPv6 loopback (some containers) cannot run this; in CI it must.
  it.skipIf(!inCi() && !hasIpv6Loopback)("reaches a replica at an IPv6 address", async () => {
    const { port, replicaPort } = await setup(echo, { host: "::1" });
    const a = await send(port, "/p/rep-1/v6?x=1");
    expect(a.status).toBe(200);
    expect(JSON.parse(a.body)).toMatchObject({ url: "/v6?x=1", headers: { host: `[::1]:${replicaPort}` } });
  });

  it("stops listening on stop()", async () => {
    const { port } = await setup(echo);
    expect((await send(port, "/p/rep-1/")).status).toBe(200);
    await ingresses.pop()!.stop();
    await expect(send(port, "/p/rep-1/")).rejects.toThrow(/ECONNREFUSED/);
  });
});

/** The test control plane hands out no ingress key; this adds one to its answers, as the Worker does. */
class KeyedClient extends ControlPlaneClient {
  override async register(inventory: NodeInventory): Promise<RegisterResponse> {
    return { ...(await super.register(inventory)), ingress_key: KEY };
  }
}

/** The fake engine, but a started container runs until stopped, at 127.0.0.1 (where the test's replica listens). */
class ServingEngine extends FakeEngine {
  private readonly stopped = new Set<string>();
  private readonly exits = new Map<string, () => void>();

  private live(c: { id: string; state: string }): boolean {
    return c.state === "exited" && !this.stopped.has(c.id); // the fake's "exited" = started
  }

  override async list(labels: Record<string, string>): Promise<ContainerSummary[]> {
    return (await super.list(labels)).map((c) => (this.live(c) ? { ...c, state: "running" } : c));
  }

  override async inspect(id: string): Promise<ContainerDetails | null> {
    const d = await super.inspect(id);
    if (!d) return null;
    const live = this.live(d);
    return { ...d, state: live ? "running" : d.state, running: live, address: "127.0.0.1" };
  }

  override wait(id?: string, signal?: AbortSignal): Promise<void> {
    this.calls.push("wait");
    if (!id || this.stopped.has(id)) return Promise.resolve();
    return new Promise((done) => {
      this.exits.set(id, done);
      signal?.addEventListener("abort", () => done(), { once: true });
    });
  }

  override async stop(id?: string): Promise<void> {
    this.calls.push("stop");
    if (!id) return;
    this.stopped.add(id);
    this.exits.get(id)?.();
  }

  override async stats(): Promise<StatsSample | null> {
    return { cpuTotalNs: 0, systemCpuNs: 0, onlineCpus: 1 };
  }
}

describe("the agent's ingress and readiness watch (fake engine)", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  it("reports a starting replica ready at once, probes nothing once none is starting, and routes only running replicas", async () => {
    let serving = false;
    let probes = 0;
    const replica = await listen((req, res) => {
      if (req.url === "/ready") probes++;
      if (!serving) {
        res.writeHead(503);
        res.end();
        return;
      }
      echo(req, res);
    });
    cleanups.push(() => {
      replica.closeAllConnections();
      return new Promise((done) => replica.close(() => done()));
    });
    const replicaPort = (replica.address() as AddressInfo).port;
    // Heartbeats a minute apart: the registration's is the only one unless one is brought forward.
    const cp = await TestControlPlane.start({ heartbeatIntervalMs: 60_000, pollWaitMs: 1_000 });
    cleanups.push(() => cp.close());
    const engine = new ServingEngine();
    const dataDir = mkdtempSync(join(tmpdir(), "scalar-agent-ingress-"));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const port = await freePort();
    const agent = await startUnitAgent(cp, engine, {
      dataDir,
      config: {
        startingReadinessIntervalMs: 100,
        ingress: { port, host: "127.0.0.1", url: `http://127.0.0.1:${port}` },
      },
      deps: { api: new KeyedClient(cp.url, cp.token), log: silentLogger },
    });
    cleanups.push(() => agent.stop());
    await cp.waitFor("the first heartbeat", () => cp.heartbeats.length > 0);
    expect(cp.registrations[0]).toMatchObject({ ingress_url: `http://127.0.0.1:${port}` });
    const readyIn = (id: string) =>
      cp.heartbeats.find((h) => h.containers.some((c) => c.placement_id === id && c.ready === true));
    const inspects = () => engine.calls.filter((c) => c === "inspect").length;

    // Nothing starting: ticks of the watch cost no engine call.
    await new Promise((r) => setTimeout(r, 300));
    expect(inspects()).toBe(0);

    const p = {
      placement_id: "rep-1",
      job_id: "job-rep-1",
      attempt: 1,
      image: "r/app:1",
      gpu_indices: [],
      cpu_milli: 100,
      memory_mib: 64,
      kill_deadline: null,
      desired: "running" as const,
      health_check: { port: replicaPort, path: "/ready" },
    };
    cp.setPlacements([p]);
    await cp.waitFor("running", () => cp.eventsFor("rep-1").find((e) => e.type === "running"));
    await within(
      5_000,
      "the watch probing the starting replica",
      until(() => probes >= 2),
    );
    expect(readyIn("rep-1")).toBeUndefined();
    // Not ready: the ingress still routes to it (the control plane decides where traffic goes).
    expect(agent.ingressTarget("rep-1")).toEqual({ host: "127.0.0.1", port: replicaPort });

    serving = true;
    const servingSince = Date.now();
    await cp.waitFor("a heartbeat reporting the replica ready", () => readyIn("rep-1"), 5_000);
    expect(Date.now() - servingSince).toBeLessThan(1_500);

    // Reported ready: no more probes and no engine call until the next heartbeat.
    const [probesThen, inspectsThen] = [probes, inspects()];
    await new Promise((r) => setTimeout(r, 400));
    expect([probes, inspects()]).toEqual([probesThen, inspectsThen]);

    const a = await send(port, "/p/rep-1/v1/generate?n=2", { method: "POST", body: "{}" });
    expect(a.status).toBe(200);
    expect(JSON.parse(a.body)).toMatchObject({ method: "POST", url: "/v1/generate?n=2", body: "{}" });
    expect((await send(port, "/p/rep-1/", { key: "nope" })).status).toBe(401);

    cp.setPlacements([{ ...p, desired: "stopped" }]);
    await cp.outcome("rep-1");
    expect(agent.ingressTarget("rep-1")).toBeNull();
    const gone = await send(port, "/p/rep-1/");
    expect([gone.status, gone.headers[INGRESS.errorHeader]]).toEqual([404, "unknown_placement"]);
  });
});

/** Resolves once `check` holds (polled every 20 ms); gives up after 10 s. */
async function until(check: () => boolean): Promise<void> {
  const giveUp = Date.now() + 10_000;
  while (!check() && Date.now() < giveUp) await new Promise((r) => setTimeout(r, 20));
}
