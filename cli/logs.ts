/**
 * A job's logs: every page of `GET /v1/jobs/{id}/logs`, or its server-sent event stream
 * (`follow=true`) until the job ends, reconnecting from the last line's id when the stream is cut
 * or the server asks (`event: reconnect`, after 10 minutes) or failed (`event: error`, `stream_failed`),
 * or when the API is busy (429, 503: after its `Retry-After`), and waiting while the account already
 * follows as many streams as it may (`429 too_many_log_streams`). Ctrl-C (the signal) ends it quietly.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { Connection, LogLine } from "./api/client";
import { isTransient, ok } from "./api/client";
import { apiErrorFrom, apiErrorLine, CliError, networkError } from "./errors";
import { readSse } from "./sse";

/** GPUs on one node: a job asking for more runs on several, and its lines say which node wrote them. */
const GPUS_PER_NODE = 8;

/** A line as printed: prefixed with `[node N] ` (its SCALAR_NODE_RANK) for a job on several nodes. */
export function logText(line: Pick<LogLine, "line" | "node_rank">, gpuCount: number): string {
  return gpuCount > GPUS_PER_NODE ? `[node ${line.node_rank}] ${line.line}` : line.line;
}

/** A job's status as its followed stream reports it (`event: status`), first and on each change. */
export interface StreamStatus {
  status: string;
  attempts: number;
  max_attempts: number;
  exit_code: number | null;
  failure_reason: string | null;
}

export type LogItem =
  | { kind: "log"; id: string | null; line: LogLine }
  | { kind: "status"; status: StreamStatus }
  | { kind: "end"; status: string | null };

/**
 * What to tell someone watching a job when its stream reports a failed attempt waiting for its
 * retry (`queued` after an attempt, with the reason); null for any other status.
 */
export function retryNote(s: StreamStatus): string | null {
  if (s.status !== "queued" || s.attempts < 1 || !s.failure_reason) return null;
  return `attempt ${s.attempts} failed: ${s.failure_reason}; attempt ${s.attempts + 1} of ${s.max_attempts} waits for its retry`;
}

/** How many reconnects in a row without a line before giving up. */
const MAX_FAILURES = 5;

/** Whose logs: a job's (the default) or an endpoint's replicas' (lines then carry `replica`). */
export type LogOwner = "jobs" | "endpoints";

/** The same route for either owner (their lines differ only in `node_rank` / `replica`). */
const logsPath = (owner: LogOwner) => `/v1/${owner}/{id}/logs` as "/v1/jobs/{id}/logs";
const ownerName = (owner: LogOwner) => (owner === "jobs" ? "job" : "endpoint");

export async function* readLogs(conn: Connection, jobId: string, owner: LogOwner = "jobs"): AsyncGenerator<LogLine> {
  for await (const page of readLogPages(conn, jobId, owner)) yield* page.data;
}

/**
 * The pages of a job's logs from `cursor` on (from the first without one), each with the cursor
 * that read it: the last one's reads that page again and any after it (the API gives no cursor
 * past the last line), so a later read goes on from there instead of from the start.
 */
export async function* readLogPages(
  conn: Connection,
  jobId: string,
  owner: LogOwner = "jobs",
  from?: string,
): AsyncGenerator<{ data: LogLine[]; cursor: string | undefined }> {
  let cursor = from;
  for (;;) {
    const page = await ok(
      conn,
      conn.api.GET(logsPath(owner), {
        params: { path: { id: jobId }, query: { limit: 1000, ...(cursor ? { cursor } : {}) } },
      }),
    );
    // The spec allows an event stream here too (follow=true); without follow it is always JSON.
    if (typeof page === "string") {
      throw new CliError(`the API answered the logs of ${ownerName(owner)} ${jobId} with text, not JSON`);
    }
    yield { data: page.data, cursor };
    if (!page.next_cursor) return;
    cursor = page.next_cursor;
  }
}

/** Seconds from a `Retry-After` header, else `fallback`, in milliseconds. */
function retryAfterMs(headers: Headers, fallback: number): number {
  const after = Number(headers.get("retry-after") ?? fallback);
  return (Number.isFinite(after) && after > 0 ? after : fallback) * 1000;
}

export async function* followLogs(
  conn: Connection,
  jobId: string,
  opts: {
    signal?: AbortSignal;
    retryDelayMs?: number;
    owner?: LogOwner;
    /** Told once when the account already follows as many streams as it may: this one waits for a place. */
    onWait?: (message: string) => void;
  } = {},
): AsyncGenerator<LogItem> {
  const owner = opts.owner ?? "jobs";
  const stream = `the log stream of ${ownerName(owner)} ${jobId}`;
  let cursor: string | undefined;
  let failures = 0;
  let waiting = false;
  // Ctrl-C ends a wait, and then the stream, quietly: the caller says it stopped watching.
  const pause = async (ms: number): Promise<boolean> => {
    await sleep(ms, undefined, { signal: opts.signal }).catch(() => {});
    return !opts.signal?.aborted;
  };
  /** Waits before trying again (longer each time, at least `minMs`); false once Ctrl-C ended the wait. */
  const backOff = (why: unknown, minMs = 0): Promise<boolean> => {
    failures += 1;
    if (failures > MAX_FAILURES) throw why instanceof CliError ? why : networkError(conn.apiUrl, why);
    return pause(Math.max(minMs, (opts.retryDelayMs ?? 1000) * failures));
  };
  for (;;) {
    let response: Response;
    let body: ReadableStream<Uint8Array> | null | undefined;
    try {
      const r = await conn.api.GET(logsPath(owner), {
        params: { path: { id: jobId }, query: { follow: "true", ...(cursor ? { cursor } : {}) } },
        parseAs: "stream",
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
      response = r.response;
      body = r.data;
      if (!response.ok) {
        const refused = apiErrorFrom(response.status, r.error, response.headers.get("x-request-id"));
        if (refused.code === "too_many_log_streams") {
          // Nothing is lost by waiting: the stream resumes from the cursor once a place is free.
          if (!waiting) opts.onWait?.(`${refused.message}; waiting for a free log stream`);
          waiting = true;
          if (!(await pause(retryAfterMs(response.headers, 10)))) return;
          continue;
        }
        // Busy (429 rate_limited, 503): the stream resumes from the cursor, as after a cut.
        if (!isTransient(refused)) throw refused;
        if (!(await backOff(refused, retryAfterMs(response.headers, 0)))) return;
        continue;
      }
      waiting = false;
    } catch (error) {
      if (opts.signal?.aborted) return;
      if (error instanceof CliError) throw error;
      if (!(await backOff(error))) return;
      continue;
    }
    if (!body || !(response.headers.get("content-type") ?? "").includes("text/event-stream")) {
      throw new CliError(
        `the API did not answer ${conn.apiUrl}/v1/${owner}/${jobId}/logs?follow=true with an event stream`,
      );
    }
    let askedToReconnect = false;
    let cut: unknown = new Error(`${stream} closed before the ${ownerName(owner)} ended`);
    try {
      for await (const ev of readSse(body)) {
        if (ev.event === "log") {
          failures = 0;
          if (ev.id) cursor = ev.id;
          yield { kind: "log", id: ev.id, line: JSON.parse(ev.data) as LogLine };
        } else if (ev.event === "end") {
          const status = (JSON.parse(ev.data || "{}") as { status?: string }).status ?? null;
          yield { kind: "end", status };
          return;
        } else if (ev.event === "status") {
          yield { kind: "status", status: JSON.parse(ev.data) as StreamStatus };
        } else if (ev.event === "reconnect") {
          if (ev.id) cursor = ev.id;
          askedToReconnect = true;
          break;
        } else if (ev.event === "error") {
          const failed = streamError(ev.data);
          // The server's own failure: resumed like a cut; anything else (access_revoked) ends it.
          if (failed.code !== "stream_failed") throw new CliError(`${stream} ended: ${failed.line}`);
          cut = new CliError(`${stream} failed on the server (${failed.code})`);
          break;
        }
      }
      if (opts.signal?.aborted) return;
      if (!askedToReconnect && !(await backOff(cut))) return;
    } catch (error) {
      if (opts.signal?.aborted) return;
      if (error instanceof CliError) throw error;
      if (!(await backOff(error))) return;
    }
  }
}

/** An `event: error`'s code and its line (`code: message`), from its data (`{ code, message? }`). */
function streamError(data: string): { code: string; line: string } {
  let parsed: { code?: unknown; message?: unknown } = {};
  try {
    parsed = JSON.parse(data) as typeof parsed;
  } catch {}
  const code = typeof parsed.code === "string" ? parsed.code : "stream_failed";
  const message = typeof parsed.message === "string" ? parsed.message : "the server ended the stream";
  return { code, line: apiErrorLine(code, message, null) };
}
