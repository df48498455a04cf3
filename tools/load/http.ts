/**
 * A small HTTP client for the load generator: node:http with one keep-alive agent, so every virtual
 * user reuses its connection as a real client library would and connection set-up is not measured.
 * Never throws for an HTTP status; a network failure or timeout is status 0 with the error text.
 *
 * A kept-alive connection the server closes just as a request goes out on it fails with
 * `socket hang up` / `ECONNRESET` before any answer. As Node's documentation advises
 * (`request.reusedSocket`) and as browsers and undici do, such a request is sent again, on another
 * connection, when it is safe to repeat: a GET or HEAD, or a request with an `Idempotency-Key`.
 * Each such resend is counted (`staleSocketRetries`), and its time is part of the request's.
 */
import { Agent as HttpAgent, request as httpRequest } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";

export interface HttpResult {
  /** 0: no HTTP answer (connection refused, reset, timeout). */
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  /** Wall-clock time from sending to the last byte of the body, in ms (high resolution). */
  ms: number;
  error?: string;
}

export interface HttpClient {
  request(
    method: string,
    path: string,
    opts?: { body?: unknown; headers?: Record<string, string> },
  ): Promise<HttpResult>;
  close(): void;
  /** Requests sent again because a reused keep-alive connection was closed under them. */
  readonly staleSocketRetries: number;
}

/** At most this many resends of one request (each needs a reused connection to have failed). */
const MAX_STALE_RETRIES = 2;

/** A reused connection closed before any answer: the request never reached the application. */
export function staleSocketError(error: NodeJS.ErrnoException, reusedSocket: boolean): boolean {
  return reusedSocket && (error.code === "ECONNRESET" || error.message === "socket hang up");
}

export function safeToResend(method: string, headers: Record<string, string>): boolean {
  if (method === "GET" || method === "HEAD") return true;
  return Object.keys(headers).some((h) => h.toLowerCase() === "idempotency-key");
}

export function httpClient(baseUrl: string, opts: { maxSockets: number; timeoutMs?: number }): HttpClient {
  const base = new URL(baseUrl);
  const tls = base.protocol === "https:";
  const agent = tls
    ? new HttpsAgent({ keepAlive: true, maxSockets: opts.maxSockets })
    : new HttpAgent({ keepAlive: true, maxSockets: opts.maxSockets });
  const send = tls ? httpsRequest : httpRequest;
  const timeoutMs = opts.timeoutMs ?? 30_000;

  let staleSocketRetries = 0;

  return {
    request(method, path, { body, headers = {} } = {}) {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const url = new URL(path, base);
      const started = performance.now();
      return new Promise((resolve) => {
        const finish = (r: Omit<HttpResult, "ms">) => resolve({ ...r, ms: performance.now() - started });
        const attempt = (retries: number) => {
          const req = send(
            url,
            {
              method,
              agent,
              headers: {
                accept: "application/json",
                ...(payload !== undefined
                  ? { "content-type": "application/json", "content-length": String(Buffer.byteLength(payload)) }
                  : {}),
                ...headers,
              },
            },
            (res) => {
              const chunks: Buffer[] = [];
              res.on("data", (c: Buffer) => chunks.push(c));
              res.on("end", () =>
                finish({
                  status: res.statusCode ?? 0,
                  headers: res.headers,
                  text: Buffer.concat(chunks).toString("utf8"),
                }),
              );
              res.on("error", (e) => finish({ status: 0, headers: {}, text: "", error: e.message }));
            },
          );
          req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
          req.on("error", (e: NodeJS.ErrnoException) => {
            if (retries < MAX_STALE_RETRIES && staleSocketError(e, req.reusedSocket) && safeToResend(method, headers)) {
              staleSocketRetries += 1;
              attempt(retries + 1);
              return;
            }
            finish({ status: 0, headers: {}, text: "", error: e.message });
          });
          req.end(payload);
        };
        attempt(0);
      });
    },
    get staleSocketRetries() {
      return staleSocketRetries;
    },
    close() {
      agent.destroy();
    },
  };
}

/** The body as JSON, or undefined when it is not JSON. */
export function jsonOf<T>(r: HttpResult): T | undefined {
  try {
    return JSON.parse(r.text) as T;
  } catch {
    return undefined;
  }
}

/** `error.code` of the API's error envelope, when there is one. */
export function errorCode(r: HttpResult): string | undefined {
  return jsonOf<{ error?: { code?: string } }>(r)?.error?.code;
}
