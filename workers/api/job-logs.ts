/**
 * `GET /v1/jobs/{id}/logs` and `GET /v1/endpoints/{id}/logs`: container output, oldest first, from
 * `job_logs` (shipped by the agents). Lines count only when they came from the node the run was
 * placed on. With `follow=true` the answer is a server-sent event stream that tails new lines until
 * the job ends (the endpoint is deleted).
 */
import { createRoute, z } from "@hono/zod-openapi";
import { eq, sql } from "drizzle-orm";
import type { Context } from "hono";
import { streamSSE } from "hono/streaming";
import { type JobStatus, type LogLine, TERMINAL_JOB_STATUSES } from "../../core/schemas";
import { LOG_LOCK_SPACE } from "../../core/schemas/log-lock";
import { requireAccount } from "../auth/caller";
import { type Db, openDb } from "../db/client";
import { endpoints, jobs } from "../db/schema";
import type { ApiEnv } from "../http/api-env";
import { errorFields } from "../http/log";
import { decodeSeqCursor, encodeSeqCursor, page } from "../http/pagination";
import { loadEndpoint } from "./endpoints";
import { loadJob } from "./job-rows";
import { closeTail, openTail, renewTail, TAIL_CHECK_MS } from "./log-tails";
import { BEARER, createRouter, errors, guard, respond } from "./router";
import { IdParam, pageOf, Timestamp } from "./schemas";

const LogLineView = z
  .object({
    placement_id: z.string(),
    attempt: z.number().int(),
    node_rank: z.number().int().openapi({
      description: "Which node of a multi-node job wrote it (`SCALAR_NODE_RANK`); 0 on one node.",
    }),
    seq: z.number().int(),
    stream: z.enum(["stdout", "stderr"]),
    at: Timestamp,
    line: z.string(),
  })
  .openapi("LogLine");
const LogPage = pageOf(LogLineView, "LogPage");

const LogsQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(1000).default(200),
  cursor: z.string().max(512).optional(),
  stream: z.enum(["stdout", "stderr"]).optional(),
  follow: z.enum(["true", "false"]).default("false").openapi({
    description: "`true`: a `text/event-stream` of `log` events (id = cursor) until the job ends, then an `end` event.",
  }),
});

/** Tail polling interval, and how long one stream lasts before asking the client to reconnect. */
const POLL_MS = 1_000;
const MAX_STREAM_MS = 10 * 60_000;

interface LogRow extends Record<string, unknown> {
  id: string | number;
  placement_id: string;
  attempt: number;
  node_rank: number;
  replica: number;
  seq: string | number;
  stream: "stdout" | "stderr";
  at: Date | string;
  line: string;
}

/**
 * Stores an agent's batch (`POST /v1/agent/logs`), dropping lines whose `(placement_id, node, seq)` is
 * stored already; returns how many were new.
 *
 * Readers page by `job_logs.id` (a sequence: ids are taken as rows are inserted, but become visible
 * when their transaction commits). Two batches of one job (two nodes of a multi-node job) or of one
 * endpoint (replicas on different nodes) stored at once could commit out of id order: a reader would
 * see the later ids, move its cursor past them, and never be given the lines with the earlier ids
 * that commit afterwards. So each batch first takes a transaction-scoped advisory lock per job or
 * endpoint it has lines of, and only then takes its ids: a second batch of the same job waits for the
 * first to commit (the lock is let go after the commit is visible), so its ids are higher and become
 * visible later. For any job or endpoint, ids then become visible in increasing order, and a line
 * with an id below the cursor is never committed after the cursor passed it.
 *
 * It is one statement, as the insert was before (its own transaction; a transaction-scoped lock is
 * safe under Hyperdrive's transaction pooling, a session lock would not be): no extra round trip,
 * and the lock is held only while Postgres stores the batch and commits, never across the network.
 * The `locked` CTE has to finish (all locks taken, in key order so two batches that share several
 * cannot deadlock) before the cross join yields a row to insert, and ids are drawn (the column's
 * default) only for rows coming out of it.
 *
 * The lock key is what a reader's scope is: the job or endpoint of the placement's run. Its run row
 * may not be in Postgres yet (the scheduler's outbox writes it shortly after placing); the placement
 * id then still names it, `<job id>-a<attempt>-g<rank>` or `<endpoint id>#<replica>-a<attempt>-g0`
 * (durable-objects/region-scheduler/region.ts), so the leading UUID is the same key. Other keys
 * (a placement no one knows) only serialize that placement's own batches. Batches of different jobs
 * do not wait for each other (a hash collision in the 32-bit key only makes two of them wait).
 *
 * Lines stored before their run row are invisible to readers (they join the run), who may meanwhile
 * pass their ids with the job's other lines; so the outbox's first write of the run row, under the
 * same lock, gives them new ids after every id taken so far (outbox-postgres.ts `renumberEarlyLines`).
 */
export async function insertLogLines(db: Db, nodeId: string, lines: LogLine[]): Promise<number> {
  const batch = lines.map((l, n) => ({
    n,
    placement_id: l.placement_id,
    seq: l.seq,
    stream: l.stream,
    at: new Date(l.at).toISOString(),
    // Postgres text cannot hold NUL (containers can print it), nor jsonb a lone UTF-16 surrogate
    // (which a UTF-8 encoding of the string would have turned into U+FFFD anyway).
    line: l.line.replaceAll("\u0000", "\uFFFD").toWellFormed(),
  }));
  const inserted = await db.execute(sql`
    with batch as (
      select * from jsonb_to_recordset(${JSON.stringify(batch)}::jsonb)
        as b(n int, placement_id text, seq bigint, stream text, at timestamptz, line text)
    ),
    locked as (
      select count(*) as locks from (
        select pg_advisory_xact_lock(${LOG_LOCK_SPACE}, k) from (
          select distinct hashtext(coalesce(
                   (select job_id::text from job_runs where id = p.placement_id),
                   (select endpoint_id::text from replica_runs where id = p.placement_id),
                   substring(lower(p.placement_id) from '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'),
                   p.placement_id)) as k
            from (select distinct placement_id from batch) p
        ) keys
        order by k
      ) taken
    )
    insert into job_logs (placement_id, node_id, seq, stream, at, line)
    select b.placement_id, ${nodeId}, b.seq, b.stream, b.at, b.line
      from batch b cross join locked
     order by b.n
    on conflict (placement_id, node_id, seq) do nothing
    returning id`);
  return inserted.length;
}

/** Whose lines: a job's (through `job_runs`) or an endpoint's replicas' (through `replica_runs`). */
type LogSource = { kind: "job"; id: string } | { kind: "endpoint"; id: string };

/** Lines after the cursor `after`, oldest first; only those from the node the run was placed on. */
async function readLines(db: Db, source: LogSource, accountId: string, after: number, limit: number, stream?: string) {
  const runs =
    source.kind === "job"
      ? sql`select id, node_id, attempt, gang_index as node_rank, 0 as replica from job_runs
             where job_id = ${source.id} and account_id = ${accountId}`
      : sql`select id, node_id, attempt, 0 as node_rank, replica from replica_runs
             where endpoint_id = ${source.id} and account_id = ${accountId}`;
  const rows = await db.execute<LogRow>(sql`
    select l.id, l.placement_id, r.attempt, r.node_rank, r.replica, l.seq, l.stream, l.at, l.line
      from job_logs l
      join (${runs}) r on r.id = l.placement_id and r.node_id = l.node_id
     where l.id > ${after}
       ${stream ? sql`and l.stream = ${stream}` : sql``}
     order by l.id
     limit ${limit}`);
  return rows.map((r) => {
    const common = {
      placement_id: r.placement_id,
      attempt: r.attempt,
      seq: Number(r.seq),
      stream: r.stream,
      at: new Date(r.at).toISOString(),
      line: r.line,
    };
    return {
      id: Number(r.id),
      view: source.kind === "job" ? { ...common, node_rank: r.node_rank } : { ...common, replica: r.replica },
    };
  });
}

/** What a followed stream learns of its source at each poll. */
interface SourceState {
  /** The final status once the source has ended, else null. */
  ended: string | null;
  /** Sent as `event: status` whenever it changes (a job's status and attempts); none for endpoints. */
  status?: Record<string, unknown>;
}

/**
 * A page of lines, or with `follow=true` a server-sent event stream that tails new lines until
 * `watch` says the source has ended (one more poll after that, for late lines) or 10 minutes pass.
 */
async function serveLogs(
  c: Context<ApiEnv>,
  source: LogSource,
  accountId: string,
  q: z.infer<typeof LogsQuery>,
  watch: (db: Db) => Promise<SourceState>,
  pageSchema: typeof LogPage | typeof EndpointLogPage,
) {
  const lastEventId = c.req.header("last-event-id");
  const after = decodeSeqCursor(q.cursor ?? (lastEventId && q.follow === "true" ? lastEventId : undefined)) ?? 0;
  if (q.follow === "false") {
    return readLines(c.get("pg").db, source, accountId, after, q.limit + 1, q.stream).then((rows) => {
      const p = page(rows, q.limit, (r) => encodeSeqCursor(r.id));
      return respond(c, pageSchema, { data: p.data.map((r) => r.view) as never, next_cursor: p.next_cursor }, 200);
    });
  }
  const log = c.get("log");
  const caller = c.get("caller");
  const tailId = await openTail(c.get("pg").sql, accountId);
  return streamSSE(c, async (stream) => {
    // The request's own connection closes when this handler returns; the stream keeps its own.
    const { db: tail, sql: tailSql, close } = openDb(c.env);
    const started = Date.now();
    let checked = started;
    let cursor = after;
    // Agents may ship the last lines just after the end: one more poll once it has ended.
    let endedPolls = 0;
    let statusSent = "";
    try {
      for (;;) {
        if (Date.now() - checked >= TAIL_CHECK_MS) {
          checked = Date.now();
          const check = await renewTail(tailSql, tailId, caller, accountId);
          if (check === "revoked") {
            const message = "the credentials that opened this stream were revoked, expired or left the account";
            await stream.writeSSE({ event: "error", data: JSON.stringify({ code: "access_revoked", message }) });
            return;
          }
          if (check === "crowded") {
            // Stalled long enough to lose its place, which others took: the client reconnects from
            // its cursor and waits for a place (429) like any other follow beyond the limit.
            await stream.writeSSE({ event: "reconnect", id: encodeSeqCursor(cursor), data: "{}" });
            return;
          }
        }
        const state = await watch(tail);
        // Drain everything there is; after the end this also picks up the last lines.
        for (;;) {
          const rows = await readLines(tail, source, accountId, cursor, 500, q.stream);
          for (const r of rows) {
            await stream.writeSSE({ event: "log", id: encodeSeqCursor(r.id), data: JSON.stringify(r.view) });
            cursor = r.id;
          }
          if (rows.length < 500) break;
        }
        // After the lines read with it: an attempt's failure follows the lines it had shipped.
        const status = state.status ? JSON.stringify(state.status) : "";
        if (status !== statusSent) {
          await stream.writeSSE({ event: "status", data: status });
          statusSent = status;
        }
        if (state.ended !== null && endedPolls++ >= 1) {
          await stream.writeSSE({ event: "end", data: JSON.stringify({ status: state.ended }) });
          return;
        }
        if (stream.aborted || Date.now() - started > MAX_STREAM_MS) {
          await stream.writeSSE({ event: "reconnect", id: encodeSeqCursor(cursor), data: "{}" });
          return;
        }
        await stream.sleep(POLL_MS);
      }
    } catch (error) {
      log.warn("logs.follow_failed", { [`${source.kind}_id`]: source.id, ...errorFields(error) });
      await stream.writeSSE({ event: "error", data: JSON.stringify({ code: "stream_failed" }) }).catch(() => {});
    } finally {
      await closeTail(tailSql, tailId).catch(() => {});
      await close().catch(() => {});
    }
  });
}

export const jobLogsRouter = createRouter();

jobLogsRouter.openapi(
  createRoute({
    method: "get",
    path: "/v1/jobs/{id}/logs",
    tags: ["Jobs"],
    summary: "Get a job's logs",
    description:
      "Oldest first across all attempts. `follow=true` streams server-sent events (`event: log`, `id` usable as `cursor` or `Last-Event-ID`) until the job ends (`event: end`), with `event: status` (`status`, `attempts`, `max_attempts`, `exit_code`, `failure_reason`) first and whenever they change (a failed attempt waiting for its retry is `queued` with its `failure_reason`); a stream longer than 10 minutes ends with `event: reconnect`, one whose credentials are revoked with `event: error` (`access_revoked`); an account follows at most 50 streams at once (`429 too_many_log_streams`). Lines are kept for the deployment's log retention period after they arrive (`LOG_RETENTION_DAYS`, 30 days by default), then deleted.",
    security: BEARER,
    middleware: guard({ scope: "jobs:read" }),
    request: { params: IdParam, query: LogsQuery },
    responses: {
      200: {
        description: "A page of lines, or an event stream when following.",
        content: {
          "application/json": { schema: LogPage },
          "text/event-stream": { schema: z.string().openapi({ description: "Server-sent events." }) },
        },
      },
      ...errors(404),
    },
  }),
  async (c) => {
    const account = requireAccount(c.get("caller"));
    const { id } = c.req.valid("param");
    const db = c.get("pg").db;
    await loadJob(db, account.id, id);
    const watch = async (tail: Db): Promise<SourceState> => {
      const [current] = await tail
        .select({
          status: jobs.status,
          attempts: jobs.attempts,
          max_attempts: jobs.maxAttempts,
          exit_code: jobs.exitCode,
          failure_reason: jobs.failureReason,
        })
        .from(jobs)
        .where(eq(jobs.id, id));
      if (!current) return { ended: null };
      const ended = TERMINAL_JOB_STATUSES.includes(current.status as JobStatus) ? current.status : null;
      return { ended, status: current };
    };
    return serveLogs(c, { kind: "job", id }, account.id, c.req.valid("query"), watch, LogPage) as never;
  },
);

const EndpointLogLineView = z
  .object({
    placement_id: z.string(),
    replica: z.number().int().openapi({ description: "The replica's number within the endpoint (0, 1, …)." }),
    attempt: z
      .number()
      .int()
      .openapi({ description: "Which start of that replica (a replica restarts when it exits)." }),
    seq: z.number().int(),
    stream: z.enum(["stdout", "stderr"]),
    at: Timestamp,
    line: z.string(),
  })
  .openapi("EndpointLogLine");
const EndpointLogPage = pageOf(EndpointLogLineView, "EndpointLogPage");

jobLogsRouter.openapi(
  createRoute({
    method: "get",
    path: "/v1/endpoints/{id}/logs",
    tags: ["Endpoints"],
    summary: "Get an endpoint's logs",
    description:
      "Its replicas' container output, oldest first across replicas and restarts. `follow=true` streams server-sent events as for a job (without `event: status`), ending (`event: end`) once the endpoint is deleted; a stream longer than 10 minutes ends with `event: reconnect`; revoked credentials and the limit of 50 open streams as for a job's. Kept for `LOG_RETENTION_DAYS` like a job's.",
    security: BEARER,
    middleware: guard({ scope: "endpoints:read" }),
    request: { params: IdParam, query: LogsQuery },
    responses: {
      200: {
        description: "A page of lines, or an event stream when following.",
        content: {
          "application/json": { schema: EndpointLogPage },
          "text/event-stream": { schema: z.string().openapi({ description: "Server-sent events." }) },
        },
      },
      ...errors(404),
    },
  }),
  async (c) => {
    const account = requireAccount(c.get("caller"));
    const { id } = c.req.valid("param");
    await loadEndpoint(c.get("pg").db, account.id, id);
    const watch = async (tail: Db): Promise<SourceState> => {
      const [current] = await tail.select({ status: endpoints.status }).from(endpoints).where(eq(endpoints.id, id));
      return { ended: current?.status === "deleted" ? "deleted" : null };
    };
    return serveLogs(c, { kind: "endpoint", id }, account.id, c.req.valid("query"), watch, EndpointLogPage) as never;
  },
);
