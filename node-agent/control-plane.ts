/**
 * The agent's client of the control plane's agent routes (`AGENT_ROUTES`), typed and validated with
 * the shared zod schemas. Failures are sorted in two: `unreachable` (network, 5xx, 408, 429: try
 * again later) and `rejected` (any other 4xx: retrying the same request will not help). An error
 * answer in Scalar's envelope also gives its `code` (e.g. `unknown_placement`). A body over the
 * control plane's size cap (MAX_REQUEST_BODY_BYTES, shared with the Worker) is `rejected` with
 * status 413 and code `payload_too_large`: batches are sized under AGENT_BATCH_BYTES to stay clear.
 * For batches of events and log lines, only a refusal of the batch itself may drop it (`refusesBatch`).
 */
import type { z } from "zod";
import {
  AGENT_ROUTES,
  type EventBatch,
  EventBatchResponse,
  type Heartbeat,
  HeartbeatResponse,
  type LogBatch,
  LogBatchResponse,
  MAX_REQUEST_BODY_BYTES,
  type NodeInventory,
  PlacementSet,
  RegisterResponse,
  RegistryAuth,
} from "../core/schemas";

/**
 * The most a batch of events or log lines should weigh serialized: the control plane's body cap
 * (MAX_REQUEST_BODY_BYTES) less a quarter, a margin for what the measure of a batch may leave out.
 */
export const AGENT_BATCH_BYTES = Math.floor((MAX_REQUEST_BODY_BYTES * 3) / 4);

/** The size of a value as a request body carries it: its JSON, in UTF-8 bytes. */
export function jsonBytes(value: unknown): number {
  return Buffer.byteLength(JSON.stringify(value));
}

export class ControlPlaneError extends Error {
  constructor(
    readonly kind: "unreachable" | "rejected",
    message: string,
    readonly status?: number,
    /** The error envelope's `code`, when the answer had one. */
    readonly code?: string,
  ) {
    super(message);
    this.name = "ControlPlaneError";
  }
}

/**
 * Whether a failed send of a batch (events, log lines) was a refusal of the batch itself, which the
 * same batch would meet again: its content (400, 422), its size (413), or an answer this agent cannot
 * read to a batch the control plane took (2xx: a version mismatch). Any other answer says nothing
 * about the batch (401 or 403 while a node token is replaced, 404 from a control plane without the
 * route, 409, …): the batch waits and is sent again later, as while the control plane is unreachable.
 */
export function refusesBatch(error: ControlPlaneError): boolean {
  if (error.kind !== "rejected") return false;
  const status = error.status;
  return status === undefined || status === 400 || status === 413 || status === 422 || (status >= 200 && status < 300);
}

/**
 * `send` with the answers that do not refuse the batch itself (`refusesBatch`) thrown as
 * `unreachable`, so the delivery loop keeps the batch and backs off instead of dropping it.
 */
export function batchSender<B>(send: (batch: B) => Promise<unknown>): (batch: B) => Promise<unknown> {
  return async (batch) => {
    try {
      return await send(batch);
    } catch (error) {
      if (!(error instanceof ControlPlaneError) || refusesBatch(error)) throw error;
      throw new ControlPlaneError("unreachable", error.message, error.status, error.code);
    }
  };
}

export interface ControlPlaneApi {
  register(inventory: NodeInventory): Promise<RegisterResponse>;
  placements(since: number, waitMs: number, signal?: AbortSignal): Promise<PlacementSet>;
  events(batch: EventBatch): Promise<EventBatchResponse>;
  logs(batch: LogBatch): Promise<LogBatchResponse>;
  heartbeat(heartbeat: Heartbeat): Promise<HeartbeatResponse>;
  /**
   * The registry of a placement's image and the account's credentials for it. 404 `unknown_placement`
   * (ControlPlaneError, `code`) when the placement is not, or no longer, active on this node.
   */
  registryAuth(placementId: string): Promise<RegistryAuth>;
}

export class ControlPlaneClient implements ControlPlaneApi {
  private readonly base: string;

  constructor(
    baseUrl: string,
    private readonly token: string,
    private readonly timeoutMs = 30_000,
  ) {
    this.base = baseUrl.replace(/\/+$/, "");
  }

  register(inventory: NodeInventory) {
    return this.call(RegisterResponse, "POST", AGENT_ROUTES.register, inventory);
  }

  placements(since: number, waitMs: number, signal?: AbortSignal) {
    const path = `${AGENT_ROUTES.placements}?since=${since}&wait_ms=${waitMs}`;
    // The answer may take the whole wait: allow for it on top of the usual timeout.
    return this.call(PlacementSet, "GET", path, undefined, waitMs + this.timeoutMs, signal);
  }

  events(batch: EventBatch) {
    return this.call(EventBatchResponse, "POST", AGENT_ROUTES.events, batch);
  }

  logs(batch: LogBatch) {
    return this.call(LogBatchResponse, "POST", AGENT_ROUTES.logs, batch);
  }

  heartbeat(heartbeat: Heartbeat) {
    return this.call(HeartbeatResponse, "POST", AGENT_ROUTES.heartbeat, heartbeat);
  }

  registryAuth(placementId: string) {
    const path = AGENT_ROUTES.registryAuth.replace("{placement_id}", encodeURIComponent(placementId));
    return this.call(RegistryAuth, "GET", path);
  }

  private async call<T extends z.ZodType>(
    schema: T,
    method: "GET" | "POST",
    path: string,
    body?: unknown,
    timeoutMs = this.timeoutMs,
    signal?: AbortSignal,
  ): Promise<z.infer<T>> {
    const timeout = AbortSignal.timeout(timeoutMs);
    let res: Response;
    try {
      res = await fetch(`${this.base}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${this.token}`,
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      });
    } catch (error) {
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      const why = cause?.code ?? cause?.message ?? (error instanceof Error ? error.message : String(error));
      throw new ControlPlaneError("unreachable", `${method} ${path}: ${why}`);
    }
    const text = await res.text().catch(() => "");
    if (!res.ok) {
      const retry = res.status >= 500 || res.status === 408 || res.status === 429;
      const envelope = errorEnvelope(text);
      const message = envelope.message ?? res.statusText;
      throw new ControlPlaneError(
        retry ? "unreachable" : "rejected",
        `${method} ${path}: ${res.status} ${message}`,
        res.status,
        envelope.code,
      );
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new ControlPlaneError("unreachable", `${method} ${path}: answer is not JSON`, res.status);
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) {
      throw new ControlPlaneError(
        "rejected",
        `${method} ${path}: unexpected answer: ${parsed.error.message}`,
        res.status,
      );
    }
    return parsed.data;
  }
}

/** The code and message of Scalar's error envelope when the body is one; else the body's start as the message. */
function errorEnvelope(text: string): { code?: string; message?: string } {
  try {
    const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
    const code = typeof body.error?.code === "string" ? body.error.code : undefined;
    if (typeof body.error?.message === "string" && body.error.message) {
      return { ...(code ? { code } : {}), message: `${code ?? "error"}: ${body.error.message}` };
    }
    if (code) return { code, ...(text ? { message: text.slice(0, 200) } : {}) };
  } catch {
    // not an envelope
  }
  return text ? { message: text.slice(0, 200) } : {};
}
