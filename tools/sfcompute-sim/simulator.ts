/**
 * The simulator: the engine behind SF Compute's HTTP API, with bearer auth, rate limiting, fault
 * injection and the `/_sim/` admin routes. `sim.fetch` is the whole API as a fetch handler, so a
 * client can use it in-process (no sockets, e.g. for a fast trace replay, or inside workerd);
 * `startSimulatorServer` (./server) puts the same handler behind a Node HTTP server.
 */
import { createAdminApp } from "./admin";
import { createApiApp, errorResponse } from "./api";
import { type EngineOptions, SimEngine } from "./engine";
import { SimError } from "./errors";
import { FaultInjector, LostResponseError } from "./faults";
import { type RateLimitConfig, RateLimiter } from "./rate-limit";

export interface SimulatorOptions extends EngineOptions {
  /** Bearer token of the default account (default "sim-token"). */
  token?: string;
  /** Its starting credit, cents (default $1,000,000). */
  balanceCents?: number;
  /** Fixes the VM boot delay (and caps the node start delay), seconds. */
  bootSeconds?: number;
  rateLimit?: RateLimitConfig | null;
}

export interface RequestLogEntry {
  seq: number;
  wall_at: number;
  sim_at: number;
  method: string;
  path: string;
  status: number | null;
  fault: string | null;
}

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

export class Simulator {
  readonly engine: SimEngine;
  readonly faults = new FaultInjector();
  readonly rateLimiter: RateLimiter;
  readonly requests: RequestLogEntry[] = [];
  readonly token: string;
  private readonly api;
  private readonly admin;
  private requestSeq = 0;
  private wake: ReturnType<typeof setTimeout> | undefined;
  private readonly hanging = new Set<() => void>();
  private closed = false;

  constructor(options: SimulatorOptions = {}) {
    const boot = options.bootSeconds;
    const settings =
      boot === undefined
        ? options.settings
        : {
            ...options.settings,
            nodes: { ...options.settings?.nodes, bootDelayMs: [boot * 1000, boot * 1000] as [number, number] },
          };
    this.engine = new SimEngine({ ...options, settings });
    this.token = options.token ?? "sim-token";
    this.engine.createAccount({ token: this.token, balanceCents: options.balanceCents ?? 100_000_000 });
    this.rateLimiter = new RateLimiter(options.rateLimit ?? null);
    this.api = createApiApp(this.engine);
    this.admin = createAdminApp(this);
    this.arm();
  }

  /** The whole API as a fetch handler. */
  fetch = async (request: Request): Promise<Response> => {
    const url = new URL(request.url);
    const path = url.pathname;
    this.engine.sync();
    if (path.startsWith("/_sim/")) {
      const response = await this.admin.fetch(request);
      this.arm();
      return response;
    }
    if (path === "/v1/_healthz") return new Response("ok", { headers: { "content-type": "text/plain" } });
    const entry: RequestLogEntry = {
      seq: ++this.requestSeq,
      wall_at: Date.now(),
      sim_at: this.engine.now(),
      method: request.method,
      path,
      status: null,
      fault: null,
    };
    this.requests.push(entry);
    // Keep the last 10 000, trimming in batches so a long replay does not shift the array per request.
    if (this.requests.length > 12_000) this.requests.splice(0, this.requests.length - 10_000);
    try {
      const fired = this.faults.take(request.method, path);
      for (const f of fired) {
        if (f.action !== "latency") continue;
        entry.fault = "latency";
        await sleep(f.latencyMs ?? 0);
      }
      const error = fired.find((f) => f.action === "error");
      if (error) {
        entry.fault = "error";
        const status = error.status ?? 503;
        const type = status === 503 ? "service_unavailable" : "api_error";
        entry.status = status;
        return errorResponse(this.engine, new SimError(status, type, "Injected failure (sfcompute-sim)"));
      }
      if (fired.some((f) => f.action === "timeout")) {
        entry.fault = "timeout";
        await this.hang(request.signal);
        throw this.gaveUp(request.signal, "request timed out without an answer");
      }
      const response = await this.handle(request, path);
      entry.status = response.status;
      const lost = fired.find((f) => f.action === "lose_response");
      if (lost) {
        entry.fault = "lose_response";
        if (lost.lose === "hang") await this.hang(request.signal);
        throw this.gaveUp(request.signal, "the response was lost after the request was processed");
      }
      return response;
    } finally {
      this.arm();
    }
  };

  private async handle(request: Request, path: string): Promise<Response> {
    const auth = request.headers.get("authorization") ?? "";
    const match = /^Bearer\s+(\S+)$/i.exec(auth);
    const account = match ? this.engine.accountByToken(match[1]!) : undefined;
    if (!account) {
      return errorResponse(
        this.engine,
        new SimError(401, "authentication_error", match ? "Invalid or expired token" : "Missing bearer token"),
      );
    }
    const limit = this.rateLimiter.check(match![1]!, path);
    if (limit?.limited) return new Response(null, { status: 429, headers: limit.headers });
    const response = await this.api.fetch(request, { account });
    if (limit) for (const [k, v] of Object.entries(limit.headers)) response.headers.set(k, v);
    return response;
  }

  /** In-process, the caller sees its own abort (e.g. its timeout); otherwise a failed fetch. */
  private gaveUp(signal: AbortSignal, why: string): unknown {
    return signal.aborted && signal.reason !== undefined ? signal.reason : new LostResponseError(why);
  }

  /** Waits until the client gives up (its signal aborts) or the simulator closes. */
  private hang(signal: AbortSignal): Promise<void> {
    return new Promise((done) => {
      if (this.closed || signal.aborted) return done();
      const finish = () => {
        this.hanging.delete(finish);
        done();
      };
      this.hanging.add(finish);
      signal.addEventListener("abort", finish, { once: true });
    });
  }

  /** Real clock: wake when the next timer or hour boundary is due, so orders match without requests. */
  private arm(): void {
    if (this.engine.clock.mode !== "real" || this.closed) return;
    if (this.wake !== undefined) clearTimeout(this.wake);
    const delay = Math.min(60_000, Math.max(0, this.engine.nextWakeAt() - Date.now()));
    this.wake = setTimeout(() => {
      this.engine.sync();
      this.arm();
    }, delay);
    // Node: do not keep the process alive for it (workerd's timers are plain numbers).
    (this.wake as { unref?: () => void }).unref?.();
  }

  close(): void {
    this.closed = true;
    if (this.wake !== undefined) clearTimeout(this.wake);
    for (const finish of [...this.hanging]) finish();
  }
}
