/**
 * TEST PEER, not the product: a small stand-in for the control plane's agent routes, for the node
 * agent's tests until they run against the real Worker. It serves exactly `AGENT_ROUTES` with the
 * `core/schemas/agent.ts` types (zod-validated both ways, the error envelope on bad input), keeps
 * what agents send, lets a test set the desired placements and the registry credentials it hands
 * out, and can go down (refusing connections) and come back on the same port.
 */
import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { z } from "zod";
import {
  AGENT_ROUTES,
  EventBatch,
  type EventBatchResponse,
  Heartbeat,
  type HeartbeatResponse,
  LogBatch,
  type LogBatchResponse,
  type LogLine,
  NodeInventory,
  Placement,
  type PlacementEvent,
  type PlacementSet,
  RegisterResponse,
  RegistryAuth,
  registryOf,
} from "../../core/schemas";

type Credentials = NonNullable<RegistryAuth["credentials"]>;

const REGISTRY_AUTH_PATH = new RegExp(`^${AGENT_ROUTES.registryAuth.replace("{placement_id}", "([^/]+)")}$`);

export interface TestControlPlaneOptions {
  token?: string;
  heartbeatIntervalMs?: number;
  pollWaitMs?: number;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
  }
}

export class TestControlPlane {
  readonly token: string;
  readonly nodeId = `node-${randomBytes(4).toString("hex")}`;
  readonly registrations: NodeInventory[] = [];
  readonly heartbeats: Heartbeat[] = [];
  /** `GET placements` requests so far. */
  placementPolls = 0;
  /** When set, `GET placements` answers 503 (the route down while the rest answers). */
  placementsDown = false;
  /** Accepted events, first arrival of each id, in arrival order. */
  readonly events: PlacementEvent[] = [];
  /** Events that arrived again with an id already accepted. */
  duplicates = 0;
  /** Log lines by placement, deduplicated by seq, in seq order. */
  private readonly lines = new Map<string, Map<number, LogLine>>();
  private placements: Placement[] = [];
  private version = 0;
  /** Answer `state: unknown` to heartbeats (as after losing state) until the next registration. */
  forgetNode = false;
  /** The state heartbeats are answered with otherwise (the scheduler's live state: `cordoned`, `draining`…). */
  nodeState = "ready";
  /** The account's credentials by registry host, for every placement (none: null, pull anonymously). */
  readonly registryCredentials = new Map<string, Credentials>();
  /** Per placement, instead of the map: another account's credentials, or null for none. */
  readonly placementCredentials = new Map<string, Credentials | null>();
  /** Placement ids the registry-auth route was asked for, in order. */
  readonly registryAuthRequests: string[] = [];
  /** When set, the registry-auth route answers this error (status, code, message) instead. */
  registryAuthError: { status: number; code: string; message: string } | null = null;
  private server: Server;
  private port = 0;
  private readonly changeWaiters = new Set<() => void>();

  private constructor(private readonly opts: Required<TestControlPlaneOptions>) {
    this.token = opts.token;
    this.server = this.newServer();
  }

  static async start(options: TestControlPlaneOptions = {}): Promise<TestControlPlane> {
    const cp = new TestControlPlane({
      token: options.token ?? `node-token-${randomBytes(8).toString("hex")}`,
      heartbeatIntervalMs: options.heartbeatIntervalMs ?? 500,
      pollWaitMs: options.pollWaitMs ?? 2_000,
    });
    await cp.listen(0);
    return cp;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get desiredVersion(): number {
    return this.version;
  }

  /** Replaces the node's whole desired set (parsed with the schema, so defaults apply) and wakes its long-poll. */
  setPlacements(placements: z.input<typeof Placement>[]): void {
    this.placements = placements.map((p) => Placement.parse(p));
    this.version++;
    this.changed();
  }

  upsertPlacement(placement: z.input<typeof Placement>): void {
    const parsed = Placement.parse(placement);
    this.setPlacements([...this.placements.filter((p) => p.placement_id !== parsed.placement_id), parsed]);
  }

  removePlacement(placementId: string): void {
    this.setPlacements(this.placements.filter((p) => p.placement_id !== placementId));
  }

  placement(placementId: string): Placement | undefined {
    return this.placements.find((p) => p.placement_id === placementId);
  }

  eventsFor(placementId: string): PlacementEvent[] {
    return this.events.filter((e) => e.placement_id === placementId);
  }

  linesFor(placementId: string, stream?: LogLine["stream"]): LogLine[] {
    const all = [...(this.lines.get(placementId)?.values() ?? [])].sort((a, b) => a.seq - b.seq);
    return stream ? all.filter((l) => l.stream === stream) : all;
  }

  /**
   * Resolves with the predicate's first truthy value, checked now and after every request the
   * peer handles. The timeout only keeps a broken test from hanging; it asserts nothing about speed.
   */
  waitFor<T>(what: string, predicate: () => T | undefined | null | false, timeoutMs = 25_000): Promise<T> {
    return new Promise((done, fail) => {
      const check = () => {
        const value = predicate();
        if (!value) return false;
        cleanup();
        done(value);
        return true;
      };
      const timer = setTimeout(() => {
        cleanup();
        fail(new Error(`test control plane: gave up waiting for ${what}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.changeWaiters.delete(listener);
      };
      const listener = () => {
        check();
      };
      if (check()) return;
      this.changeWaiters.add(listener);
    });
  }

  /** The outcome event (exited or failed) of a placement, once it arrives. */
  outcome(placementId: string, timeoutMs?: number): Promise<PlacementEvent> {
    return this.waitFor(
      `the outcome of ${placementId}`,
      () => this.eventsFor(placementId).find((e) => e.type === "exited" || e.type === "failed"),
      timeoutMs,
    );
  }

  /** Outage: stop listening and drop every open connection (agents then see connection refused). */
  async goDown(): Promise<void> {
    const server = this.server;
    await new Promise<void>((done) => {
      server.close(() => done());
      server.closeAllConnections();
    });
    this.wakeLongPolls(); // nothing is listening for them any more
  }

  /** Back after an outage, on the same port. */
  async comeBack(): Promise<void> {
    this.server = this.newServer();
    await this.listen(this.port);
  }

  async close(): Promise<void> {
    if (!this.server.listening) return;
    await this.goDown();
  }

  private listen(port: number): Promise<void> {
    return new Promise((done, fail) => {
      this.server.once("error", fail);
      this.server.listen(port, "127.0.0.1", () => {
        this.server.off("error", fail);
        this.port = (this.server.address() as AddressInfo).port;
        done();
      });
    });
  }

  private newServer(): Server {
    return createServer((req, res) => {
      this.handle(req, res)
        .catch((error: unknown) => {
          const e =
            error instanceof HttpError ? error : new HttpError(500, "internal", String((error as Error)?.message));
          send(res, e.status, {
            error: {
              code: e.code,
              message: e.message,
              ...(e.details ? { details: e.details } : {}),
              request_id: "test",
            },
          });
        })
        .finally(() => this.changed());
    });
  }

  private changed(): void {
    for (const listener of [...this.changeWaiters]) listener();
  }

  private pollWaiters = new Set<() => void>();
  private wakeLongPolls(): void {
    for (const wake of [...this.pollWaiters]) wake();
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://peer");
    if (req.headers.authorization !== `Bearer ${this.token}`) {
      throw new HttpError(401, "unauthorized", "missing or wrong node token");
    }
    const route = `${req.method} ${url.pathname}`;
    const authFor = req.method === "GET" ? REGISTRY_AUTH_PATH.exec(url.pathname) : null;
    if (authFor) return send(res, 200, this.registryAuth(decodeURIComponent(authFor[1]!)));
    switch (route) {
      case `POST ${AGENT_ROUTES.register}`: {
        const inventory = parse(NodeInventory, await body(req));
        this.registrations.push(inventory);
        this.forgetNode = false;
        const answer: RegisterResponse = {
          node_id: this.nodeId,
          region: "test-1",
          heartbeat_interval_ms: this.opts.heartbeatIntervalMs,
          poll_wait_ms: this.opts.pollWaitMs,
        };
        return send(res, 200, RegisterResponse.parse(answer));
      }
      case `GET ${AGENT_ROUTES.placements}`: {
        this.placementPolls += 1;
        if (this.placementsDown) throw new HttpError(503, "unavailable", "placements are down (test)");
        const since = Number(url.searchParams.get("since") ?? "0");
        const waitMs = Math.min(Number(url.searchParams.get("wait_ms") ?? "0"), 60_000);
        if (!Number.isInteger(since) || since < 0 || !Number.isFinite(waitMs) || waitMs < 0) {
          throw new HttpError(400, "invalid_request", "since and wait_ms must be non-negative integers");
        }
        if (this.version <= since && waitMs > 0) await this.waitForChange(req, waitMs);
        const set: PlacementSet = { version: this.version, placements: this.placements };
        return send(res, 200, set);
      }
      case `POST ${AGENT_ROUTES.events}`: {
        const batch = parse(EventBatch, await body(req));
        let accepted = 0;
        let duplicates = 0;
        for (const event of batch.events) {
          if (this.events.some((e) => e.event_id === event.event_id)) duplicates++;
          else {
            this.events.push(event);
            accepted++;
          }
        }
        this.duplicates += duplicates;
        const answer: EventBatchResponse = { accepted, duplicates };
        return send(res, 200, answer);
      }
      case `POST ${AGENT_ROUTES.logs}`: {
        const batch = parse(LogBatch, await body(req));
        let accepted = 0;
        for (const line of batch.lines) {
          let byPlacement = this.lines.get(line.placement_id);
          if (!byPlacement) {
            byPlacement = new Map();
            this.lines.set(line.placement_id, byPlacement);
          }
          if (!byPlacement.has(line.seq)) {
            byPlacement.set(line.seq, line);
            accepted++;
          }
        }
        const answer: LogBatchResponse = { accepted };
        return send(res, 200, answer);
      }
      case `POST ${AGENT_ROUTES.heartbeat}`: {
        this.heartbeats.push(parse(Heartbeat, await body(req)));
        const answer: HeartbeatResponse = { state: this.forgetNode ? "unknown" : this.nodeState };
        return send(res, 200, answer);
      }
      default:
        throw new HttpError(404, "not_found", `no route ${route}`);
    }
  }

  /** As the Worker: only for a placement active on the node (in its set and not stopped). */
  private registryAuth(placementId: string): RegistryAuth {
    this.registryAuthRequests.push(placementId);
    if (this.registryAuthError) {
      const e = this.registryAuthError;
      throw new HttpError(e.status, e.code, e.message);
    }
    const placement = this.placement(placementId);
    if (!placement || placement.desired === "stopped") {
      throw new HttpError(404, "unknown_placement", `placement ${placementId} is not active on this node`);
    }
    const registry = registryOf(placement.image);
    const credentials = this.placementCredentials.has(placementId)
      ? this.placementCredentials.get(placementId)!
      : (this.registryCredentials.get(registry) ?? null);
    return RegistryAuth.parse({ registry, credentials });
  }

  private waitForChange(req: IncomingMessage, waitMs: number): Promise<void> {
    return new Promise((done) => {
      const finish = () => {
        clearTimeout(timer);
        this.pollWaiters.delete(finish);
        this.changeWaiters.delete(onChange);
        req.socket.off("close", finish);
        done();
      };
      const version = this.version;
      const onChange = () => {
        if (this.version !== version) finish();
      };
      const timer = setTimeout(finish, waitMs);
      this.pollWaiters.add(finish);
      this.changeWaiters.add(onChange);
      req.socket.once("close", finish);
    });
  }
}

function parse<T extends z.ZodType>(schema: T, value: unknown): z.infer<T> {
  const result = schema.safeParse(value);
  if (!result.success)
    throw new HttpError(400, "invalid_request", "the body does not match the schema", result.error.issues);
  return result.data;
}

async function body(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw new HttpError(400, "invalid_json", "the body is not JSON");
  }
}

function send(res: ServerResponse, status: number, value: unknown): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(value));
}
