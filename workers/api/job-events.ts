/**
 * `GET /v1/jobs/{id}/events`: the job's scheduling history (queued, placed, running, exited,
 * retries, dead letter…), oldest first, from `job_events`, which the region scheduler's outbox writes.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { and, asc, eq, gt, inArray, type SQL } from "drizzle-orm";
import { requireAccount } from "../auth/caller";
import { JOB_EVENT_TYPES, jobEvents } from "../db/schema";
import { decodeSeqCursor, encodeSeqCursor, MAX_INT4, page } from "../http/pagination";
import { loadJob } from "./job-rows";
import { BEARER, createRouter, errors, guard, respond } from "./router";
import { IdParam, pageOf, Timestamp } from "./schemas";

const JobEvent = z
  .object({
    seq: z.number().int(),
    type: z.enum(JOB_EVENT_TYPES),
    at: Timestamp,
    attempt: z.number().int().nullable(),
    placement_id: z.string().nullable(),
    node_id: z.string().nullable(),
    gpu_indices: z.array(z.number().int()).nullable(),
    exit_code: z.number().int().nullable(),
    reason: z.string().nullable(),
    data: z.record(z.string(), z.unknown()),
  })
  .openapi("JobEvent");
const JobEventPage = pageOf(JobEvent, "JobEventPage");

export const jobEventsRouter = createRouter();

jobEventsRouter.openapi(
  createRoute({
    method: "get",
    path: "/v1/jobs/{id}/events",
    tags: ["Jobs"],
    summary: "Get a job's events",
    description:
      "What the scheduler did with the job, oldest first: queued, placed (node and GPU indices), pulling, running, exited, retries with their backoff, dead letter, re-drive, cancel.",
    security: BEARER,
    middleware: guard({ scope: "jobs:read" }),
    request: {
      params: IdParam,
      query: z.strictObject({
        limit: z.coerce.number().int().min(1).max(500).default(100),
        cursor: z.string().max(512).optional(),
        type: z
          .string()
          .max(300)
          .refine((s) => s.split(",").every((t) => (JOB_EVENT_TYPES as readonly string[]).includes(t)), {
            message: `comma-separated event types: ${JOB_EVENT_TYPES.join(", ")}`,
          })
          .optional(),
      }),
    },
    responses: {
      200: { description: "A page of events.", content: { "application/json": { schema: JobEventPage } } },
      ...errors(404),
    },
  }),
  async (c) => {
    const account = requireAccount(c.get("caller"));
    const { id } = c.req.valid("param");
    const q = c.req.valid("query");
    const db = c.get("pg").db;
    await loadJob(db, account.id, id);
    const after = decodeSeqCursor(q.cursor, MAX_INT4) ?? 0; // `job_events.seq` is an integer
    const where: SQL[] = [eq(jobEvents.jobId, id), eq(jobEvents.accountId, account.id), gt(jobEvents.seq, after)];
    if (q.type) where.push(inArray(jobEvents.type, q.type.split(",")));
    const rows = await db
      .select()
      .from(jobEvents)
      .where(and(...where))
      .orderBy(asc(jobEvents.seq))
      .limit(q.limit + 1);
    const p = page(rows, q.limit, (r) => encodeSeqCursor(r.seq));
    return respond(
      c,
      JobEventPage,
      {
        data: p.data.map((e) => ({
          seq: e.seq,
          type: e.type as (typeof JOB_EVENT_TYPES)[number],
          at: e.at.toISOString(),
          attempt: e.attempt,
          placement_id: e.placementId,
          node_id: e.nodeId,
          gpu_indices: e.gpuIndices,
          exit_code: e.exitCode,
          reason: e.reason,
          data: (e.data ?? {}) as Record<string, unknown>,
        })),
        next_cursor: p.next_cursor,
      },
      200,
    );
  },
);
