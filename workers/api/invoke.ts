/**
 * Endpoint traffic: `ANY /v1/endpoints/{id or name}/invoke/<path>` reaches one ready replica.
 *
 * The region's scheduler leases a replica (the least busy ready one, scaling up or starting one
 * from zero as the traffic needs; durable-objects/region-scheduler/traffic.ts); the Worker forwards
 * the request to that node's ingress at `<ingress_url>/p/<placement>/<path>` with the node's key,
 * streams the answer back, and returns the lease when the answer's body has ended (or at once when
 * the client leaves before the answer: `holdLease`). A replica that could not be reached (refused,
 * gone from its node) is skipped and the request goes to another one: the request is buffered (at
 * most MAX_INVOKE_BODY_BYTES) so it can be sent again. A WebSocket (`GET` with `Upgrade: websocket`)
 * is routed the same way, then relayed message by message while it holds its lease (`bridge`).
 *
 * Not in the OpenAPI document: the method, path, body and answer are the replica's own.
 * docs/api.md "Traffic" describes the route, its headers and its errors.
 */

import { and, eq } from "drizzle-orm";
import { type Context, Hono } from "hono";
import type { UnofficialStatusCode } from "hono/utils/http-status";
import { HOP_BY_HOP_HEADERS, INGRESS, RESENDABLE_METHODS } from "../../core/schemas";
import type { RouteResult } from "../../durable-objects/region-scheduler/rpc";
import { requireAccount, requireScope } from "../auth/caller";
import type { Db } from "../db/client";
import { endpoints } from "../db/schema";
import type { ApiEnv } from "../http/api-env";
import { authenticate } from "../http/authenticate";
import { ApiError } from "../http/errors";
import { errorFields } from "../http/log";
import { invokeVerdict } from "../http/rate-limit";
import { ingressKey } from "../nodes/ingress-key";
import { loadEndpoint, syncEndpoint } from "./endpoints";
import { schedulerOf } from "./scheduler";
import type { EndpointRow } from "./views";

/** Bodies are buffered so a request can go to another replica; larger ones are refused (413). */
export const MAX_INVOKE_BODY_BYTES = 32 * 1024 * 1024;
export const WAIT_HEADER = "scalar-wait";
export const REPLICA_HEADER = "scalar-replica";
/** How long a request waits for a ready replica unless `Scalar-Wait` says otherwise, and the most it may ask. */
export const DEFAULT_WAIT_S = 120;
export const MAX_WAIT_S = 600;
/** A WebSocket side that closed is answered with the other side's close, or after this long without one. */
const CLOSE_WAIT_MS = 30_000;
/** An open WebSocket renews its replica's lease this often (the lease lives 15 min unless renewed). */
const WEBSOCKET_LEASE_RENEW_MS = 60_000;
/** The handshake's own headers, made afresh for the replica by the runtime. */
const WEBSOCKET_HANDSHAKE = new Set([
  "sec-websocket-key",
  "sec-websocket-version",
  "sec-websocket-extensions",
  "sec-websocket-accept",
]);

/** Logged for a request whose client left before its answer (nginx's code: nobody receives it). */
const CLIENT_CLOSED_REQUEST = 499 as UnofficialStatusCode;
const clientClosed = () => new ApiError(CLIENT_CLOSED_REQUEST, "client_closed_request", "the client left");

/** Replicas tried for one request before it fails with 502 replica_unreachable. */
const MAX_TRIES = 3;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Not forwarded either way: one hop's headers, and those the Worker's fetch sets itself. */
const HOP_BY_HOP = new Set([...HOP_BY_HOP_HEADERS, "host", "content-length"]);
const NOT_FORWARDED = new Set(["authorization", "cookie", WAIT_HEADER, "scalar-account", INGRESS.keyHeader]);

export const invokeRouter = new Hono<ApiEnv>();

const INVOKE_PATH = /^\/v1\/endpoints\/[^/]+\/invoke(\/|$)/;
export const isInvokePath = (path: string) => INVOKE_PATH.test(path);

const invoke = async (c: Context<ApiEnv>) => {
  const caller = c.get("caller");
  const account = requireAccount(caller);
  const db = c.get("pg").db;
  // The limiter's call and the endpoint's lookup run side by side; a refusal (429) is the answer
  // before any other error, as on the API's routes.
  const found = findEndpoint(db, account.id, c.req.param("ref") ?? "");
  found.catch(() => {});
  await invokeVerdict(c, account);
  requireScope(caller, "endpoints:invoke");
  const waitMs = waitOf(c.req.header(WAIT_HEADER));
  let row = await found;

  const upgrade = c.req.header("upgrade");
  const webSocket = upgrade !== undefined;
  if (webSocket && (upgrade.trim().toLowerCase() !== "websocket" || c.req.method !== "GET")) {
    throw new ApiError(
      501,
      "upgrade_not_supported",
      "endpoints take WebSocket upgrades only (GET with Upgrade: websocket), no other upgraded connections",
    );
  }
  const body = await requestBody(c);
  const url = new URL(c.req.url);
  const marker = `/invoke`;
  const rest = url.pathname.slice(url.pathname.indexOf(marker, "/v1/endpoints/".length) + marker.length) || "/";
  const target = `${rest}${url.search}`;
  const headers = forwardHeaders(c.req.raw.headers, url);
  // The runtime makes the replica's handshake itself (its own key, version and extensions); the
  // subprotocols the caller offers go on.
  if (webSocket) {
    for (const name of Object.keys(headers)) if (WEBSOCKET_HANDSHAKE.has(name)) delete headers[name];
    headers.upgrade = "websocket";
  }

  const scheduler = schedulerOf(c.env, row.region);
  const exclude: string[] = [];
  let synced = false;
  for (let attempt = 0; attempt < MAX_TRIES; ) {
    // Held from before the scheduler is asked, so a lease that arrives after the client left is
    // returned then (holdLease).
    const lease = holdLease(c, (leaseId) =>
      scheduler
        .endpointRequestDone(leaseId)
        .catch((error: unknown) =>
          c.get("log").warn("invoke.lease_not_returned", { endpoint_id: row.id, ...errorFields(error) }),
        ),
    );
    try {
      let route: RouteResult;
      try {
        // A retry takes a replica that is ready now, or none: the caller's wait was for the first one.
        // `still_waiting` fails once this invocation has ended (the runtime ends it 30 s after its
        // client left, whatever waitUntil holds), so a lease the scheduler waited longer for is not
        // handed to nobody; one handed over before then is returned by holdLease.
        route = await lease.route(() =>
          scheduler.routeEndpoint(row.id, {
            wait_ms: exclude.length > 0 ? 0 : waitMs,
            exclude,
            still_waiting: () => true,
          }),
        );
      } catch (error) {
        // Not asked: the client left during an earlier try.
        if (lease.signal.aborted) throw clientClosed();
        c.get("log").warn("invoke.route_failed", { endpoint_id: row.id, ...errorFields(error) });
        throw new ApiError(
          503,
          "routing_unavailable",
          `the ${row.region} scheduler did not answer; retry shortly`,
          undefined,
          {
            "Retry-After": "2",
          },
        );
      }
      // The client left while the scheduler answered: nobody waits for a replica's answer.
      if (lease.signal.aborted) throw clientClosed();
      if (!route.ok) {
        if (route.code === "not_found") {
          // The scheduler does not have the endpoint yet (its sync failed): hand it over once, here.
          // Or no longer: deleted while this request waited. So the row is read again first, and the
          // endpoint handed over only while it is still active; deleted during the hand-over, it is
          // taken back (its own removal may have reached the scheduler before this sync did).
          if (!synced) {
            synced = true;
            const gone = new ApiError(404, "not_found", `no active endpoint ${c.req.param("ref")} in this account`);
            const fresh = await loadEndpoint(db, account.id, row.id);
            if (fresh.status !== "active") throw gone;
            await syncEndpoint(c.env, db, fresh, c.get("log"));
            row = await loadEndpoint(db, account.id, row.id);
            if (row.status !== "active") {
              await syncEndpoint(c.env, db, row, c.get("log"));
              throw gone;
            }
            continue;
          }
          throw new ApiError(
            409,
            "endpoint_not_synced",
            "the region's scheduler does not have this endpoint yet; retry shortly",
            {
              endpoint_id: row.id,
            },
            { "Retry-After": "5" },
          );
        }
        if (exclude.length > 0) break;
        throw new ApiError(
          503,
          "no_ready_replica",
          `no replica of ${row.name} was ready within ${waitMs / 1000} s: ${route.waiting_reason}`,
          { endpoint_id: row.id, waiting_reason: route.waiting_reason, waited_s: waitMs / 1000 },
          { "Retry-After": "5" },
        );
      }
      attempt++;
      const key = await ingressKey(c.env, route.node_id);
      if (!key) {
        throw new ApiError(
          503,
          "routing_unavailable",
          "this deployment has no INGRESS_SECRET: endpoint traffic is off",
        );
      }
      let answer: Response;
      try {
        answer = await fetch(`${route.ingress_url.replace(/\/+$/, "")}${INGRESS.path(route.placement_id, target)}`, {
          method: c.req.method,
          headers: { ...headers, [INGRESS.keyHeader]: key },
          body,
          redirect: "manual",
          signal: lease.signal,
        });
      } catch (error) {
        // Cancelled because the client left: nobody is waiting for another replica's answer.
        if (lease.signal.aborted) throw clientClosed();
        c.get("log").warn("invoke.ingress_unreachable", {
          endpoint_id: row.id,
          node_id: route.node_id,
          placement_id: route.placement_id,
          ...errorFields(error),
        });
        exclude.push(route.placement_id);
        continue;
      }
      const refusal = answer.headers.get(INGRESS.errorHeader);
      if (refusal) {
        await answer.body?.cancel();
        const where = { endpoint_id: row.id, replica: route.replica_id, node_id: route.node_id };
        if (refusal === "unknown_placement" || refusal === "replica_unreachable") {
          // The request never reached a container: another replica may take it.
          exclude.push(route.placement_id);
          continue;
        }
        if (refusal === "replica_failed") {
          // The container had the request and failed it (dropped the connection, or answered with
          // what is not HTTP): it may have acted on it. Only a safe request goes to another replica.
          if (RESENDABLE_METHODS.has(c.req.method)) {
            exclude.push(route.placement_id);
            continue;
          }
          throw new ApiError(
            502,
            "replica_failed",
            `replica ${route.replica_id} failed the request without answering it; it may have acted on it, so it was not sent to another replica`,
            where,
          );
        }
        if (refusal === "replica_timeout") {
          throw new ApiError(504, "replica_timeout", `replica ${route.replica_id} did not answer in time`, where);
        }
        if (refusal === "unauthorized") {
          c.get("log").error("invoke.ingress_refused_key", where);
          throw new ApiError(
            502,
            "ingress_refused",
            "the replica's node refused the control plane's key; retry shortly",
            where,
          );
        }
        throw new ApiError(
          502,
          "bad_replica_response",
          `the replica's node answered with an unknown refusal: ${refusal}`,
          where,
        );
      }
      if (webSocket && answer.webSocket) {
        const holder = { endpoint_id: row.id, placement_id: route.placement_id };
        return bridge(c, answer, route.replica_id, lease.handOver(), () =>
          scheduler.renewEndpointLease(route.lease_id, holder),
        );
      }
      return relay(c, answer, route.replica_id, lease.handOver());
    } finally {
      // Every way out but a hand-over (no replica, refused, unreachable, an error) returns the lease here.
      await lease.end();
    }
  }
  throw new ApiError(
    502,
    "replica_unreachable",
    `no replica of ${row.name} could be reached (tried ${exclude.length})`,
    { endpoint_id: row.id, tried: exclude.length },
    { "Retry-After": "2" },
  );
};

invokeRouter.all("/v1/endpoints/:ref/invoke", authenticate, invoke);
invokeRouter.all("/v1/endpoints/:ref/invoke/*", authenticate, invoke);

/**
 * A replica's lease while the invoke handler holds it: from before the scheduler is asked for it
 * (`route`) until `relay` or `bridge` takes it over (`handOver`) or it is returned (`end`, once). A
 * client that leaves ends the request, and with no waitUntil pending the runtime drops the handler's
 * awaits (the replica's answer, or the scheduler's, whose lease then reaches no code). So a
 * waitUntil, registered before the route call, keeps the invocation alive until the lease is back,
 * and the client's leaving itself (Request.signal, which the enable_request_signal flag in
 * wrangler.toml turns on) returns the lease, as soon as it arrives if the route call is still in
 * flight, and cancels the replica's request (`signal`).
 */
function holdLease(c: Context<ApiEnv>, giveBack: (leaseId: string) => Promise<unknown>) {
  const client = c.req.raw.signal;
  const replica = new AbortController();
  let letGo!: () => void;
  c.executionCtx.waitUntil(
    new Promise<void>((resolve) => {
      letGo = resolve;
    }),
  );
  let leaseId: string | undefined;
  let routed: Promise<unknown> = Promise.resolve();
  let handedOver = false;
  let returned: Promise<unknown> | undefined;
  const stopHolding = () => {
    client.removeEventListener("abort", clientLeft);
    letGo();
  };
  const end = () => {
    // After the route call's answer, whenever it comes: the lease it brings is returned then.
    returned ??= routed
      .then(() => (leaseId === undefined || handedOver ? undefined : giveBack(leaseId)))
      .finally(stopHolding);
    return returned;
  };
  const clientLeft = () => {
    replica.abort();
    void end();
  };
  if (client.aborted) clientLeft();
  else client.addEventListener("abort", clientLeft, { once: true });
  return {
    signal: replica.signal,
    /** The scheduler's route call, whose lease this holds; not made once the client has left. */
    route: (call: () => Promise<RouteResult>): Promise<RouteResult> => {
      if (replica.signal.aborted) return Promise.reject(new Error("the client left"));
      const routing = call().then((route) => {
        if (route.ok) leaseId = route.lease_id;
        return route;
      });
      routed = routing.catch(() => {});
      return routing;
    },
    end,
    /** From now on the lease is the caller's to return, under its own waitUntil. */
    handOver: () => {
      handedOver = true;
      stopHolding();
      const id = leaseId as string;
      return () => giveBack(id);
    },
  };
}

/** Stream the replica's answer back; its lease is returned when the body has been sent (or dropped). */
function relay(c: Context<ApiEnv>, answer: Response, replicaId: string, leaseDone: () => Promise<unknown>): Response {
  const headers = new Headers();
  for (const [name, value] of answer.headers) if (!HOP_BY_HOP_HEADERS.has(name)) headers.append(name, value);
  headers.set(REPLICA_HEADER, replicaId);
  headers.set("x-request-id", c.get("requestId"));
  if (!answer.body) {
    c.executionCtx.waitUntil(leaseDone());
    return new Response(null, { status: answer.status, headers });
  }
  const { readable, writable } = new TransformStream();
  c.executionCtx.waitUntil(
    answer.body
      .pipeTo(writable)
      .catch(() => {})
      .finally(leaseDone),
  );
  return new Response(readable, { status: answer.status, headers });
}

/**
 * A WebSocket, relayed message by message between the caller and the replica. Its lease is kept
 * while it is open (renewed every WEBSOCKET_LEASE_RENEW_MS: the scheduler counts it against the
 * replica's target concurrency and scales by it) and returned when either side closes; a close
 * code and reason pass through, and messages the other side sent before it answered the close
 * still arrive.
 */
function bridge(
  c: Context<ApiEnv>,
  answer: Response,
  replicaId: string,
  leaseDone: () => Promise<unknown>,
  renew: () => Promise<unknown>,
): Response {
  const upstream = answer.webSocket!;
  const [caller, ours] = Object.values(new WebSocketPair()) as [WebSocket, WebSocket];
  // Binary messages as ArrayBuffers (the standard's default is Blob, which send() does not take).
  // Half-open: a side's close is not answered at once but passed on, and answered with the other
  // side's close, so what the other side sent meanwhile (the answer to a last message) still arrives.
  for (const socket of [upstream, ours]) {
    socket.accept({ allowHalfOpen: true });
    socket.binaryType = "arraybuffer";
  }
  let ended = false;
  let closed!: () => void;
  const ending = new Promise<void>((resolve) => {
    closed = resolve;
  });
  const renewing = setInterval(() => void renew().catch(() => {}), WEBSOCKET_LEASE_RENEW_MS);
  const end = () => {
    if (ended) return;
    ended = true;
    clearInterval(renewing);
    closed();
  };
  let closes = 0;
  let answering: ReturnType<typeof setTimeout> | undefined;
  const pipe = (from: WebSocket, to: WebSocket) => {
    from.addEventListener("message", (event) => {
      try {
        to.send(event.data);
      } catch {
        // The other side is closing: its close event ends both.
      }
    });
    from.addEventListener("close", (event) => {
      closeQuietly(to, event.code, event.reason);
      // `from` is answered when `to`'s close comes back (the other pipe), or after CLOSE_WAIT_MS;
      // a connection that ended without a close (1006, 1015) is gone: there is nothing to answer,
      // and a close sent on it would fail later, out of reach of any catch.
      if (++closes === 2) clearTimeout(answering);
      else if (!GONE.has(event.code)) {
        answering = setTimeout(() => closeQuietly(from, event.code, event.reason), CLOSE_WAIT_MS);
      }
      end();
    });
    from.addEventListener("error", () => {
      closeQuietly(to, 1011, "the other side of the connection failed");
      end();
    });
  };
  pipe(upstream, ours);
  pipe(ours, upstream);
  c.executionCtx.waitUntil(ending.then(leaseDone));

  const headers = new Headers({ [REPLICA_HEADER]: replicaId, "x-request-id": c.get("requestId") });
  const protocol = answer.headers.get("sec-websocket-protocol");
  if (protocol) headers.set("sec-websocket-protocol", protocol);
  return new Response(null, { status: 101, webSocket: caller, headers });
}

/** Close codes seen when a connection ended without a close frame. */
const GONE = new Set([1006, 1015]);

/** Closes with the other side's code where one may be sent (1005 and 1006 are never sent, only seen). */
function closeQuietly(socket: WebSocket, code: number, reason: string): void {
  try {
    if (code === 1005) socket.close();
    else if (GONE.has(code)) socket.close(1011, "the other side's connection ended abnormally");
    else socket.close(code, reason);
  } catch {
    // Closed already.
  }
}

function waitOf(header: string | undefined): number {
  if (header === undefined) return DEFAULT_WAIT_S * 1000;
  const s = Number(header.trim());
  if (header.trim() === "" || !Number.isFinite(s) || s < 0 || s > MAX_WAIT_S) {
    throw new ApiError(400, "invalid_header", `Scalar-Wait: seconds from 0 to ${MAX_WAIT_S}`, {
      location: "header",
      fields: [{ field: "Scalar-Wait", message: `seconds from 0 to ${MAX_WAIT_S}`, code: "invalid_header" }],
    });
  }
  return Math.round(s * 1000);
}

/** The account's active endpoint by id or by name. */
async function findEndpoint(db: Db, accountId: string, ref: string): Promise<EndpointRow> {
  // No name holds a NUL (Postgres could not even compare one): the path is passed on as it is, so
  // only the reference is checked here.
  if (ref.includes("\0")) throw new ApiError(404, "not_found", "no active endpoint with a NUL in its name");
  const [row] = await db
    .select()
    .from(endpoints)
    .where(
      and(
        eq(endpoints.accountId, accountId),
        eq(endpoints.status, "active"),
        UUID.test(ref) ? eq(endpoints.id, ref) : eq(endpoints.name, ref),
      ),
    )
    .limit(1);
  if (!row) throw new ApiError(404, "not_found", `no active endpoint ${ref} in this account`);
  return row;
}

async function requestBody(c: Context<ApiEnv>): Promise<ArrayBuffer | null> {
  if (c.req.method === "GET" || c.req.method === "HEAD") return null;
  const declared = Number(c.req.header("content-length") ?? "0");
  const tooLarge = () =>
    new ApiError(413, "payload_too_large", `request body exceeds ${MAX_INVOKE_BODY_BYTES} bytes`, {
      max_bytes: MAX_INVOKE_BODY_BYTES,
    });
  if (declared > MAX_INVOKE_BODY_BYTES) throw tooLarge();
  if (!c.req.raw.body) return null;
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = c.req.raw.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > MAX_INVOKE_BODY_BYTES) {
      await reader.cancel();
      throw tooLarge();
    }
    chunks.push(value);
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.byteLength;
  }
  return out.buffer;
}

/** The caller's headers the replica sees: not ours, not one hop's; where the request came from. */
function forwardHeaders(incoming: Headers, url: URL): Record<string, string> {
  const out: Record<string, string> = {};
  const listed = new Set(
    (incoming.get("connection") ?? "")
      .split(",")
      .map((h) => h.trim().toLowerCase())
      .filter(Boolean),
  );
  for (const [name, value] of incoming) {
    if (HOP_BY_HOP.has(name) || NOT_FORWARDED.has(name) || listed.has(name) || name.startsWith("cf-")) continue;
    out[name] = value;
  }
  const client = incoming.get("cf-connecting-ip");
  if (client) out["x-forwarded-for"] = client;
  out["x-forwarded-proto"] = url.protocol.replace(":", "");
  out["x-forwarded-host"] = url.host;
  return out;
}
