/**
 * The first key of the two-key, transaction-scoped advisory locks that keep a job's (or an
 * endpoint's) log lines visible in id order; the second is `hashtext(<job or endpoint id>)`. Taken
 * by the API's log inserts (workers/api/job-logs.ts) and by the scheduler outbox's first write of a
 * run row (durable-objects/region-scheduler/outbox-postgres.ts), which renumbers lines that arrived
 * before it. Apart from the migration runner's one-key lock.
 */
export const LOG_LOCK_SPACE = 0x4a4c4f47; // "JLOG"
