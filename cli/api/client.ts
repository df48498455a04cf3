/**
 * The typed API client: openapi-fetch over the types generated from docs/openapi.json
 * (cli/api/schema.ts), so every path, parameter and body is checked against the spec at compile time.
 */
import { setTimeout as sleep } from "node:timers/promises";
import createClient, { type Client } from "openapi-fetch";
import WebSocket from "ws";
import { ApiError, apiErrorFrom, NetworkError, networkError } from "../errors";
import type { components, paths } from "./schema";

export type Schemas = components["schemas"];
export type Job = Schemas["Job"];
export type JobCreate = Schemas["JobCreate"];
export type JobEvent = Schemas["JobEvent"];
export type LogLine = Schemas["LogLine"];
export type Endpoint = Schemas["Endpoint"];
export type EndpointCreate = Schemas["EndpointCreate"];
export type EndpointPatch = Schemas["EndpointPatch"];
export type EndpointLogLine = Schemas["EndpointLogLine"];
export type ApiKey = Schemas["ApiKey"];
export type RegistryCredential = Schemas["RegistryCredential"];
export type Usage = Schemas["Usage"];
export type Invoice = Schemas["Invoice"];
export type Scope = Schemas["Scope"];
export type Region = Schemas["Region"];
export type Me = Schemas["Me"];
export type OperatorNode = Schemas["OperatorNode"];
export type NodeState = NonNullable<NonNullable<paths["/v1/operator/nodes"]["get"]["parameters"]["query"]>["state"]>;
export type DeadLetter = Schemas["DeadLetter"];
/** A running placement's resource use (the schema's is nullable: placements before or after running have none). */
export type PlacementMetrics = NonNullable<Schemas["PlacementMetrics"]>;

export type Api = Client<paths>;

export interface Connection {
  api: Api;
  apiUrl: string;
  /** A request outside the typed client (an endpoint's own routes), with the same credentials. */
  fetch(path: string, init?: RequestInit): Promise<Response>;
  /** A WebSocket to a path of the API (an endpoint's), with the same credentials; `headers` add to them. */
  websocket(path: string, opts?: { headers?: Headers; protocols?: string[] }): WebSocket;
}

export function connect(apiUrl: string, apiKey: string, userAgent: string): Connection {
  const headers = { authorization: `Bearer ${apiKey}`, "user-agent": userAgent };
  const api = createClient<paths>({ baseUrl: apiUrl, headers });
  return {
    api,
    apiUrl,
    async fetch(path, init = {}) {
      const merged = new Headers(init.headers);
      for (const [name, value] of Object.entries(headers)) if (!merged.has(name)) merged.set(name, value);
      try {
        return await fetch(`${apiUrl.replace(/\/+$/, "")}${path}`, { ...init, headers: merged });
      } catch (error) {
        throw networkError(apiUrl, error);
      }
    },
    websocket(path, opts = {}) {
      const url = `${apiUrl.replace(/\/+$/, "").replace(/^http/, "ws")}${path}`;
      const extra: Record<string, string> = {};
      opts.headers?.forEach((value, name) => {
        extra[name] = value;
      });
      return new WebSocket(url, opts.protocols ?? [], { headers: { ...extra, ...headers } });
    },
  };
}

/** Awaits one call: its data on 2xx, else the API's error (or which URL could not be reached) thrown. */
export async function ok<T>(
  conn: Connection,
  request: Promise<{ data?: T; error?: unknown; response: Response }>,
): Promise<T> {
  let result: { data?: T; error?: unknown; response: Response };
  try {
    result = await request;
  } catch (error) {
    throw networkError(conn.apiUrl, error);
  }
  if (!result.response.ok || result.error !== undefined) {
    throw apiErrorFrom(result.response.status, result.error, result.response.headers.get("x-request-id"));
  }
  return result.data as T;
}

/** Worth another try: the API was not reached, was busy (429, 503), or still runs the same idempotent request. */
export function isTransient(error: unknown): boolean {
  return (
    error instanceof NetworkError ||
    (error instanceof ApiError &&
      (error.status === 429 || error.status === 503 || error.code === "idempotency_key_in_progress"))
  );
}

/** Runs `call` again after a transient failure, backing off (0.5, 1, 2, 4 s); other errors at once. */
export async function retrying<T>(call: () => Promise<T>, attempts = 5): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      if (!isTransient(error) || attempt >= attempts) throw error;
      await sleep(Math.min(250 * 2 ** attempt, 4000));
    }
  }
}
