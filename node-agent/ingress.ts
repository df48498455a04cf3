/**
 * The node's ingress: a small reverse proxy from the control plane to this node's endpoint replicas
 * (contract: INGRESS in core/schemas/agent.ts). `<prefix><placement id><path>?<query>` goes to
 * `http://<container address>:<health_check.port><path>?<query>`, bodies streamed both ways, after
 * a constant-time check of the node's ingress key. Refusals of its own carry INGRESS.errorHeader,
 * which it strips from replicas' answers so a container cannot forge one.
 *
 * WebSockets: a `GET` with `Connection: Upgrade` and `Upgrade: websocket` (the server's 'upgrade'
 * event) goes to the replica over a connection of its own with the same headers as a plain request
 * plus the upgrade's; the replica's 101 goes back and bytes are then piped both ways, without a
 * timeout, until either side closes (then both are). A replica that answers otherwise has its answer
 * passed back and the connection closed. Refusals on an upgrade are the same, written on the socket
 * with `Connection: close`. Any other upgrade (h2c, a non-GET) is refused with 501
 * `upgrade_not_supported`.
 *
 * A replica's answer is never trusted to be valid HTTP: Node's client takes any three-digit status
 * (`099`, `000`, `600`) and reason phrases with control characters, which `writeHead` would throw on
 * inside a socket's event (an uncaught exception: the agent's end). A status outside 200–599 is
 * answered 502 `replica_failed` (as for an answer Node cannot parse at all), a reason phrase
 * HTTP does not allow is replaced by the standard one, and anything else `writeHead` refuses cuts
 * the request instead of the process.
 */
import { timingSafeEqual } from "node:crypto";
import {
  createServer,
  Agent as HttpAgent,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  request,
  type Server,
  type ServerResponse,
  STATUS_CODES,
} from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { pipeline } from "node:stream";
import {
  CONNECT_ERRORS,
  HOP_BY_HOP_HEADERS,
  INGRESS,
  INGRESS_ERROR_STATUS,
  type IngressError,
  RESENDABLE_METHODS,
} from "../core/schemas";
import { errorText, type Logger } from "./logger";

/** Where a replica's container answers, as this host reaches it. */
export interface IngressTarget {
  host: string;
  port: number;
}

export interface IngressOptions {
  port: number;
  host: string;
  log: Logger;
  /** The running replica with this placement id, or null when this node runs none. */
  lookup: (placementId: string) => IngressTarget | null;
  /** The key the control plane sends (from registration); null: refuse every request. */
  key: () => string | null;
  /**
   * How long a replica may take to send its response headers (default 300 s, for slow inference);
   * for a WebSocket, its answer to the handshake (none once upgraded).
   */
  timeoutMs?: number;
}

export const DEFAULT_INGRESS_TIMEOUT_MS = 300_000;

/** Once one side of a WebSocket has closed, how long the other gets to take what is queued for it. */
const TUNNEL_CLOSE_GRACE_MS = 10_000;
/** What a client may send before the replica's 101 that the ingress reads and keeps for it. */
const EARLY_DATA_LIMIT = 64 * 1024;

const STATUS = INGRESS_ERROR_STATUS;
const HOP_BY_HOP = HOP_BY_HOP_HEADERS;

const UPGRADE_NOT_SUPPORTED = JSON.stringify({
  error: { code: "upgrade_not_supported", message: "the ingress supports WebSocket upgrades (GET) only" },
});

/** The headers minus hop-by-hop ones (those named in Connection too) and `drop`. */
function endToEnd(headers: IncomingHttpHeaders, drop: readonly string[]): OutgoingHttpHeaders {
  const named = new Set(
    String(headers.connection ?? "")
      .split(",")
      .map((token) => token.trim().toLowerCase())
      .filter(Boolean),
  );
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || named.has(name) || drop.includes(name)) continue;
    out[name] = value;
  }
  return out;
}

/**
 * A status a replica's final answer may carry: RFC 9110 §15 allows 100–599, and a 1xx is an interim
 * answer, never the last (Node hands over all but a 101 as 'information' events).
 */
function isFinalStatus(status: number | undefined): status is number {
  return status !== undefined && Number.isInteger(status) && status >= 200 && status <= 599;
}

/** Characters a reason phrase may not hold (RFC 9110 §4: HTAB, SP, VCHAR, obs-text only); writeHead throws on them. */
const INVALID_REASON = /[^\t\x20-\x7e\x80-\xff]/;

/** The replica's reason phrase when HTTP allows it, else none (the status's standard one is sent). */
function reasonPhrase(message: string | undefined): string | undefined {
  return message && !INVALID_REASON.test(message) ? message : undefined;
}

/** Constant time for keys of the same length; a different length is a mismatch. */
function keyMatches(given: string | string[] | undefined, expected: string | null): boolean {
  if (expected === null || typeof given !== "string") return false;
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * A response head for a raw socket (latin1, as header values come from Node's parser). Values are
 * the parser's or our own, so they hold no CR or LF; a reason phrase with other control characters
 * (which the parser lets through) is replaced by the standard one.
 */
function responseHead(status: number, message: string | undefined, headers: OutgoingHttpHeaders): Buffer {
  let head = `HTTP/1.1 ${status} ${reasonPhrase(message) || STATUS_CODES[status] || "Unknown"}\r\n`;
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    for (const one of Array.isArray(value) ? value : [value]) head += `${name}: ${one}\r\n`;
  }
  return Buffer.from(`${head}\r\n`, "latin1");
}

/** Ends `socket` once what is queued for it is written (at the latest after the grace), then destroys it. */
function release(socket: Socket): void {
  if (socket.destroyed) return;
  const timer = setTimeout(() => socket.destroy(), TUNNEL_CLOSE_GRACE_MS);
  timer.unref();
  socket.end(() => {
    clearTimeout(timer);
    socket.destroy();
  });
}

/** `/p/<id>[/rest][?query]` → the decoded id and the upstream path (`/` when there is no rest). */
export function parseIngressPath(url: string): { placementId: string; path: string } | null {
  if (!url.startsWith(INGRESS.prefix)) return null;
  const rest = url.slice(INGRESS.prefix.length);
  const end = rest.search(/[/?]/);
  const encoded = end < 0 ? rest : rest.slice(0, end);
  const tail = end < 0 ? "" : rest.slice(end);
  let placementId: string;
  try {
    placementId = decodeURIComponent(encoded);
  } catch {
    return null; // malformed percent-encoding: no placement has that id
  }
  if (!placementId) return null;
  return { placementId, path: tail.startsWith("/") ? tail : `/${tail}` };
}

export class Ingress {
  private readonly server: Server;
  /** Keeps connections to replicas open between requests. */
  private readonly upstreamAgent = new HttpAgent({ keepAlive: true, scheduling: "lifo" });
  private readonly timeoutMs: number;
  /** The sockets and requests of upgrades (WebSockets), both sides, until they close: `stop()` cuts them. */
  private readonly upgrades = new Set<{ destroy(): unknown }>();

  constructor(private readonly opts: IngressOptions) {
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_INGRESS_TIMEOUT_MS;
    this.server = createServer((req, res) => this.handle(req, res));
    // Node emits this instead of 'request' for a request with `Connection: Upgrade` and `Upgrade`.
    this.server.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) =>
      this.handleUpgrade(req, socket, head),
    );
  }

  /** Listens; rejects when the address cannot be had (in use, not on this host). */
  start(): Promise<{ port: number }> {
    return new Promise((done, fail) => {
      this.server.once("error", fail);
      this.server.listen(this.opts.port, this.opts.host, () => {
        this.server.off("error", fail);
        done({ port: (this.server.address() as AddressInfo).port });
      });
    });
  }

  /**
   * Stops listening and cuts the requests and WebSockets in flight (replicas keep running; the
   * control plane retries elsewhere).
   */
  stop(): Promise<void> {
    return new Promise((done) => {
      const cut = () => {
        for (const one of [...this.upgrades]) one.destroy();
        this.upgrades.clear();
        this.upstreamAgent.destroy();
      };
      if (!this.server.listening) {
        cut();
        return done();
      }
      this.server.close(() => done());
      this.server.closeAllConnections();
      cut();
    });
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    // The key first: a caller without it learns nothing, not even which placements exist.
    if (!keyMatches(req.headers[INGRESS.keyHeader], this.opts.key())) {
      this.refuse(res, "unauthorized", "missing or wrong ingress key");
      return;
    }
    // An `Upgrade` without `Connection: Upgrade` (else it would be an 'upgrade' event): no handshake.
    if (req.headers.upgrade !== undefined) {
      res.writeHead(501, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(UPGRADE_NOT_SUPPORTED),
        connection: "close",
      });
      res.end(UPGRADE_NOT_SUPPORTED);
      return;
    }
    const route = parseIngressPath(req.url ?? "");
    const target = route ? this.opts.lookup(route.placementId) : null;
    if (!route || !target) {
      this.refuse(res, "unknown_placement", "no running replica with that placement id on this node");
      return;
    }
    this.forward(req, res, route.placementId, route.path, target);
  }

  /** The client's headers as the replica gets them: end to end only, without the key, with x-forwarded-*. */
  private upstreamHeaders(req: IncomingMessage, target: IngressTarget): OutgoingHttpHeaders {
    // `expect`: Node answered `100 Continue` to the client already.
    const headers = endToEnd(req.headers, [INGRESS.keyHeader, INGRESS.errorHeader, "host", "expect"]);
    const forwardedFor = req.headers["x-forwarded-for"];
    const client = req.socket.remoteAddress;
    if (client) headers["x-forwarded-for"] = forwardedFor ? `${forwardedFor}, ${client}` : client;
    // The caller holds the key, so its forwarded headers (set by a TLS terminator in front) are kept.
    headers["x-forwarded-proto"] ??= "http";
    if (req.headers.host) headers["x-forwarded-host"] ??= req.headers.host;
    headers.host = `${target.host.includes(":") ? `[${target.host}]` : target.host}:${target.port}`;
    return headers;
  }

  private forward(
    req: IncomingMessage,
    res: ServerResponse,
    placementId: string,
    path: string,
    target: IngressTarget,
    retried = false,
  ): void {
    const headers = this.upstreamHeaders(req, target);
    // A body of unknown length stays chunked (Node would not frame it for e.g. a DELETE).
    if (req.headers["transfer-encoding"] !== undefined && req.headers["content-length"] === undefined) {
      headers["transfer-encoding"] = "chunked";
    }

    const bodied =
      (req.headers["content-length"] !== undefined && req.headers["content-length"] !== "0") ||
      req.headers["transfer-encoding"] !== undefined;
    const upstream = request({
      host: target.host,
      port: target.port,
      method: req.method,
      path,
      headers,
      agent: this.upstreamAgent,
    });
    let timedOut = false;
    let clientGone = false;
    /** The replica's answer was refused (an invalid head): its connection is cut, its errors are ours. */
    let badAnswer = false;
    /** The connection's bytes read before this request: more at an error means the replica began to answer. */
    let connection: Socket | undefined;
    let readBefore = 0;
    upstream.once("socket", (socket: Socket) => {
      connection = socket;
      readBefore = socket.bytesRead;
    });
    /** Answers with a refusal, reading (and dropping) what is left of the client's body. */
    const fail = (code: IngressError, message: string) => {
      req.unpipe(upstream);
      req.resume();
      this.refuse(res, code, message);
    };
    const timer = setTimeout(() => {
      timedOut = true;
      upstream.destroy();
      fail("replica_timeout", `the replica sent no response within ${this.timeoutMs} ms`);
    }, this.timeoutMs);

    /** A head that cannot be relayed: the replica's connection is cut and the client gets a 502 (or a cut). */
    const refuseAnswer = (why: string) => {
      badAnswer = true;
      upstream.destroy();
      this.opts.log("debug", "ingress: replica's answer refused", { placement_id: placementId, reason: why });
      if (!res.headersSent) {
        try {
          fail("replica_failed", `the replica answered with ${why}`);
          return;
        } catch {
          // Our own head refused too (a response left half set by the failed one): cut it.
        }
      }
      res.destroy();
    };

    upstream.on("response", (answer) => {
      clearTimeout(timer);
      const status = answer.statusCode;
      if (!isFinalStatus(status)) {
        refuseAnswer(`an invalid status (${status})`);
        return;
      }
      try {
        res.writeHead(
          status,
          reasonPhrase(answer.statusMessage),
          endToEnd(answer.headers, [INGRESS.errorHeader, INGRESS.keyHeader]),
        );
      } catch (error) {
        // Whatever else in the replica's head Node will not send: this request's end, not the agent's.
        refuseAnswer(`a head that cannot be relayed (${(error as NodeJS.ErrnoException).code ?? "error"})`);
        return;
      }
      // Streams as it comes; if either side goes away the other is cut too.
      pipeline(answer, res, (error) => {
        if (error)
          this.opts.log("debug", "ingress: response cut", { placement_id: placementId, error: errorText(error) });
      });
    });
    upstream.on("error", (error) => {
      clearTimeout(timer);
      if (timedOut || clientGone || badAnswer) return;
      // A kept-alive connection the replica had closed meanwhile (its idle timeout), as Node's docs
      // tell it (`reusedSocket`): reset or closed before the replica sent a byte. The request most
      // likely never reached it, but may have (the replica died while handling it), so only a safe
      // method without a body goes again, once, on a fresh connection.
      const errorCode = (error as NodeJS.ErrnoException).code;
      if (
        upstream.reusedSocket &&
        !retried &&
        !bodied &&
        RESENDABLE_METHODS.has(req.method ?? "") &&
        (errorCode === "ECONNRESET" || errorCode === "EPIPE") &&
        connection !== undefined &&
        connection.bytesRead === readBefore &&
        !res.headersSent
      ) {
        this.forward(req, res, placementId, path, target, true);
        return;
      }
      if (res.headersSent) {
        res.destroy(error); // mid-body: the client sees the cut, not a clean end
        return;
      }
      this.opts.log("debug", "ingress: replica unreachable", { placement_id: placementId, error: errorText(error) });
      // The error's code only: its text names the container's private address.
      // Refused (nothing listening): it never had the request. Dropped: it may have acted on it.
      if (errorCode !== undefined && CONNECT_ERRORS.has(errorCode))
        fail("replica_unreachable", `the replica refused the connection (${errorCode})`);
      else fail("replica_failed", `the replica dropped the connection before answering (${errorCode ?? "error"})`);
    });
    // The client went away before the whole answer: stop the replica's work too.
    res.on("close", () => {
      clearTimeout(timer);
      if (res.writableFinished) return;
      clientGone = true;
      upstream.destroy();
    });
    // Not `pipeline`: a failed upstream must not destroy the client's socket before the 502 is sent.
    if (bodied) req.pipe(upstream);
    else {
      req.resume();
      upstream.end();
    }
  }

  private handleUpgrade(req: IncomingMessage, client: Socket, head: Buffer): void {
    this.track(client);
    client.on("error", (error) => {
      this.opts.log("debug", "ingress: upgrade client socket error", { error: errorText(error) });
      client.destroy();
    });
    if (!keyMatches(req.headers[INGRESS.keyHeader], this.opts.key())) {
      this.refuseUpgrade(client, "unauthorized", "missing or wrong ingress key");
      return;
    }
    if (req.method !== "GET" || String(req.headers.upgrade).trim().toLowerCase() !== "websocket") {
      this.answerRaw(
        client,
        responseHead(501, undefined, {
          "content-type": "application/json",
          "content-length": Buffer.byteLength(UPGRADE_NOT_SUPPORTED),
          connection: "close",
        }),
        UPGRADE_NOT_SUPPORTED,
      );
      return;
    }
    const route = parseIngressPath(req.url ?? "");
    const target = route ? this.opts.lookup(route.placementId) : null;
    if (!route || !target) {
      this.refuseUpgrade(client, "unknown_placement", "no running replica with that placement id on this node");
      return;
    }
    this.tunnel(req, client, head, route.placementId, route.path, target);
  }

  /** Until it closes, `stop()` destroys it. */
  private track(one: { destroy(): unknown; once(event: "close", listener: () => void): unknown }): void {
    this.upgrades.add(one);
    one.once("close", () => this.upgrades.delete(one));
  }

  /**
   * A WebSocket handshake to the replica, over a connection of its own (an upgraded connection
   * never goes back to the pool); on its 101, the two sockets are piped into each other.
   */
  private tunnel(
    req: IncomingMessage,
    client: Socket,
    head: Buffer,
    placementId: string,
    path: string,
    target: IngressTarget,
  ): void {
    const headers = this.upstreamHeaders(req, target);
    headers.connection = "Upgrade";
    headers.upgrade = "websocket";
    const upstream = request({ host: target.host, port: target.port, method: "GET", path, headers, agent: false });
    this.track(upstream);
    // Until the answer the client's bytes are read and kept (a client may send frames before it has
    // the 101; they go to the replica after it): reading is how a client that leaves is noticed.
    const early: Buffer[] = head.length > 0 ? [head] : [];
    let earlyBytes = head.length;
    const keep = (chunk: Buffer) => {
      early.push(chunk);
      earlyBytes += chunk.length;
      if (earlyBytes >= EARLY_DATA_LIMIT) client.pause(); // enough: the rest waits in the socket
    };
    const left = () => client.destroy();
    client.on("data", keep);
    client.once("end", left);
    /** The replica answered, the ingress refused, or the client left: no other outcome applies. */
    let settled = false;
    const settle = () => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      client.pause();
      client.off("data", keep);
      client.off("end", left);
      return true;
    };
    const timer = setTimeout(() => {
      if (!settle()) return;
      upstream.destroy();
      this.refuseUpgrade(client, "replica_timeout", `the replica sent no response within ${this.timeoutMs} ms`);
    }, this.timeoutMs);
    client.once("close", () => {
      if (settle()) upstream.destroy(); // the client left before the answer
    });

    upstream.on("upgrade", (answer: IncomingMessage, replica: Socket, replicaHead: Buffer) => {
      this.track(replica);
      if (!settle()) {
        replica.destroy();
        return;
      }
      replica.on("error", (error) => {
        this.opts.log("debug", "ingress: websocket cut by the replica", {
          placement_id: placementId,
          error: errorText(error),
        });
        replica.destroy();
        client.destroy();
      });
      client.on("error", () => replica.destroy());
      // One side gone: the other gets what is queued for it, then goes too.
      client.once("close", () => release(replica));
      replica.once("close", () => release(client));
      if (client.destroyed) return;
      client.setNoDelay(true);
      replica.setNoDelay(true);
      client.write(
        responseHead(101, answer.statusMessage, {
          connection: "Upgrade",
          upgrade: answer.headers.upgrade ?? "websocket",
          ...endToEnd(answer.headers, [INGRESS.errorHeader, INGRESS.keyHeader]),
        }),
      );
      // What each side sent after its head, before the other could read it.
      if (replicaHead.length > 0) client.write(replicaHead);
      for (const chunk of early) replica.write(chunk);
      early.length = 0;
      replica.pipe(client);
      client.pipe(replica);
    });
    upstream.on("response", (answer) => {
      if (!settle()) {
        upstream.destroy();
        return;
      }
      // A status HTTP does not allow (a 101 with a body included) would reach the client as it is.
      if (!isFinalStatus(answer.statusCode)) {
        upstream.destroy();
        this.opts.log("debug", "ingress: replica's answer refused", {
          placement_id: placementId,
          reason: `an invalid status (${answer.statusCode})`,
        });
        this.refuseUpgrade(
          client,
          "replica_failed",
          `the replica answered with an invalid status (${answer.statusCode})`,
        );
        return;
      }
      // Not upgraded: the replica's answer as it is (minus hop-by-hop headers), then the connection closes.
      const headers = endToEnd(answer.headers, [INGRESS.errorHeader, INGRESS.keyHeader]);
      headers.connection = "close";
      if (client.destroyed) {
        upstream.destroy();
        return;
      }
      client.write(responseHead(answer.statusCode, answer.statusMessage, headers));
      // Without a content-length the body ends with the connection.
      pipeline(answer, client, (error) => {
        if (error)
          this.opts.log("debug", "ingress: refused upgrade's answer cut", {
            placement_id: placementId,
            error: errorText(error),
          });
        client.destroy();
        upstream.destroy();
      });
    });
    upstream.on("error", (error) => {
      if (!settle()) return; // after the answer, or our own destroy
      this.opts.log("debug", "ingress: replica unreachable", { placement_id: placementId, error: errorText(error) });
      // The error's code only: its text names the container's private address.
      const code = (error as NodeJS.ErrnoException).code ?? "error";
      if (CONNECT_ERRORS.has(code))
        this.refuseUpgrade(client, "replica_unreachable", `the replica refused the connection (${code})`);
      else
        this.refuseUpgrade(client, "replica_failed", `the replica dropped the connection before answering (${code})`);
    });
    upstream.end();
  }

  /** An ingress refusal on an upgrade's socket: as `refuse`, then the connection closes. */
  private refuseUpgrade(client: Socket, code: IngressError, message: string): void {
    const body = JSON.stringify({ error: { code, message } });
    this.answerRaw(
      client,
      responseHead(STATUS[code], undefined, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(body),
        [INGRESS.errorHeader]: code,
        connection: "close",
      }),
      body,
    );
  }

  /** Writes a whole response on a socket Node handed over, then closes it. */
  private answerRaw(client: Socket, head: Buffer, body: string): void {
    if (client.destroyed || client.writableEnded) return;
    client.end(Buffer.concat([head, Buffer.from(body)]), () => client.destroy());
  }

  private refuse(res: ServerResponse, code: IngressError, message: string): void {
    if (res.headersSent) return;
    const body = JSON.stringify({ error: { code, message } });
    // The reason given: a failed writeHead of the replica's may have left its own on `res`.
    res.writeHead(STATUS[code], STATUS_CODES[STATUS[code]], {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(body),
      [INGRESS.errorHeader]: code,
    });
    res.end(body);
  }
}
