/**
 * The node's ingress: a small reverse proxy from the control plane to this node's endpoint replicas
 * (contract: INGRESS in core/schemas/agent.ts). `<prefix><placement id><path>?<query>` goes to
 * `http://<container address>:<health_check.port><path>?<query>`, bodies streamed both ways, after
 * a constant-time check of the node's ingress key. Refusals of its own carry INGRESS.errorHeader,
 * which it strips from replicas' answers so a container cannot forge one. Upgrades (WebSockets)
 * are refused with 501: the control plane forwards plain HTTP requests only.
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
} from "node:http";
import type { AddressInfo } from "node:net";
import { pipeline } from "node:stream";
import { HOP_BY_HOP_HEADERS, INGRESS, INGRESS_ERROR_STATUS, type IngressError } from "../core/schemas";
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
  /** How long a replica may take to send its response headers (default 300 s, for slow inference). */
  timeoutMs?: number;
}

export const DEFAULT_INGRESS_TIMEOUT_MS = 300_000;

const STATUS = INGRESS_ERROR_STATUS;
const HOP_BY_HOP = HOP_BY_HOP_HEADERS;

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

/** Constant time for keys of the same length; a different length is a mismatch. */
function keyMatches(given: string | string[] | undefined, expected: string | null): boolean {
  if (expected === null || typeof given !== "string") return false;
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
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

  constructor(private readonly opts: IngressOptions) {
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_INGRESS_TIMEOUT_MS;
    this.server = createServer((req, res) => this.handle(req, res));
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

  /** Stops listening and cuts the requests in flight (replicas keep running; the control plane retries elsewhere). */
  stop(): Promise<void> {
    return new Promise((done) => {
      if (!this.server.listening) {
        this.upstreamAgent.destroy();
        return done();
      }
      this.server.close(() => done());
      this.server.closeAllConnections();
      this.upstreamAgent.destroy();
    });
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    // The key first: a caller without it learns nothing, not even which placements exist.
    if (!keyMatches(req.headers[INGRESS.keyHeader], this.opts.key())) {
      this.refuse(res, "unauthorized", "missing or wrong ingress key");
      return;
    }
    if (req.headers.upgrade !== undefined) {
      res.writeHead(501, { "content-type": "application/json", connection: "close" });
      res.end(
        JSON.stringify({
          error: { code: "upgrade_not_supported", message: "the ingress does not support upgrades (WebSockets)" },
        }),
      );
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

  private forward(
    req: IncomingMessage,
    res: ServerResponse,
    placementId: string,
    path: string,
    target: IngressTarget,
    retried = false,
  ): void {
    const hostHeader = `${target.host.includes(":") ? `[${target.host}]` : target.host}:${target.port}`;
    // `expect`: Node answered `100 Continue` to the client already.
    const headers = endToEnd(req.headers, [INGRESS.keyHeader, INGRESS.errorHeader, "host", "expect"]);
    const forwardedFor = req.headers["x-forwarded-for"];
    const client = req.socket.remoteAddress;
    if (client) headers["x-forwarded-for"] = forwardedFor ? `${forwardedFor}, ${client}` : client;
    // The caller holds the key, so its forwarded headers (set by a TLS terminator in front) are kept.
    headers["x-forwarded-proto"] ??= "http";
    if (req.headers.host) headers["x-forwarded-host"] ??= req.headers.host;
    headers.host = hostHeader;
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

    upstream.on("response", (answer) => {
      clearTimeout(timer);
      res.writeHead(
        answer.statusCode ?? 502,
        answer.statusMessage || undefined,
        endToEnd(answer.headers, [INGRESS.errorHeader, INGRESS.keyHeader]),
      );
      // Streams as it comes; if either side goes away the other is cut too.
      pipeline(answer, res, (error) => {
        if (error)
          this.opts.log("debug", "ingress: response cut", { placement_id: placementId, error: errorText(error) });
      });
    });
    upstream.on("error", (error) => {
      clearTimeout(timer);
      if (timedOut || clientGone) return;
      // A kept-alive connection the replica had closed meanwhile (its idle timeout): the request
      // never reached it, so one without a body goes again on a fresh connection.
      if (upstream.reusedSocket && !retried && !bodied && !res.headersSent) {
        this.forward(req, res, placementId, path, target, true);
        return;
      }
      if (res.headersSent) {
        res.destroy(error); // mid-body: the client sees the cut, not a clean end
        return;
      }
      this.opts.log("debug", "ingress: replica unreachable", { placement_id: placementId, error: errorText(error) });
      // The error's code only: its text names the container's private address.
      const code = (error as NodeJS.ErrnoException).code ?? "error";
      fail("replica_unreachable", `the replica refused or dropped the connection (${code})`);
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

  private refuse(res: ServerResponse, code: IngressError, message: string): void {
    if (res.headersSent) return;
    const body = JSON.stringify({ error: { code, message } });
    res.writeHead(STATUS[code], {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(body),
      [INGRESS.errorHeader]: code,
    });
    res.end(body);
  }
}
