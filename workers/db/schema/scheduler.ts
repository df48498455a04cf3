/**
 * The scheduler's own history in Postgres: one row per scheduling event of a job, written by the
 * RegionScheduler's outbox and served as `GET /v1/jobs/{id}/events`. The other tables it writes
 * (jobs, job_runs, gpu_assignments, usage_events, audit_log, nodes) are in core.ts.
 */
import { sql } from "drizzle-orm";
import { check, index, integer, jsonb, pgTable, primaryKey, text, timestamp, uuid } from "drizzle-orm/pg-core";
import { accounts, inList, jobs } from "./core";

export const JOB_EVENT_TYPES = [
  "queued",
  "placed",
  "pulling",
  "running",
  "exited",
  "failed",
  "lost",
  "stop_requested",
  "retry_scheduled",
  "dead_lettered",
  "redriven",
  "succeeded",
  "cancelled",
] as const;

export const jobEvents = pgTable(
  "job_events",
  {
    jobId: uuid("job_id")
      .notNull()
      .references(() => jobs.id, { onDelete: "cascade" }),
    /** Per job, from 1, in the order the scheduler decided: re-deliveries of the outbox collide on it. */
    seq: integer("seq").notNull(),
    accountId: uuid("account_id")
      .notNull()
      .references(() => accounts.id, { onDelete: "cascade" }),
    type: text("type").notNull(),
    at: timestamp("at", { withTimezone: true, mode: "date" }).notNull(),
    attempt: integer("attempt"),
    placementId: text("placement_id"),
    /** No foreign key: history outlives nodes. */
    nodeId: text("node_id"),
    gpuIndices: integer("gpu_indices").array(),
    exitCode: integer("exit_code"),
    reason: text("reason"),
    /** e.g. `{ "backoff_ms": 20000, "next_attempt_at": "…" }`, `{ "oom_killed": true }`. */
    data: jsonb("data").notNull().default(sql`'{}'::jsonb`),
    createdAt: timestamp("created_at", { withTimezone: true, mode: "date" }).notNull().defaultNow(),
  },
  (t) => [
    primaryKey({ columns: [t.jobId, t.seq] }),
    index("job_events_account_idx").on(t.accountId, t.at.desc()),
    check("job_events_type", sql`${t.type} in (${inList(JOB_EVENT_TYPES)})`),
    check("job_events_seq", sql`${t.seq} >= 1`),
  ],
);
