/**
 * Delivering outbox rows to Postgres, each as an idempotent upsert: applying a row twice, or an
 * older row after a newer one of another key, leaves the same result. A job update that finds no
 * `jobs` row fails (the API writes the row before it submits; until it is visible, we retry).
 */
import type postgres from "postgres";
import { LOG_LOCK_SPACE } from "../../core/schemas/log-lock";
import type {
  AuditRecord,
  GpuAssignmentRecord,
  JobEventRecord,
  JobRunRecord,
  JobUpdate,
  NodeRecord,
  OutboxPayload,
  ReplicaRunRecord,
  UsageRecord,
} from "./outbox";

type Sql = postgres.Sql;

const ts = (ms: number | null): Date | null => (ms == null ? null : new Date(ms));
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const intArray = (xs: number[]) => `{${xs.map((x) => Math.trunc(x)).join(",")}}`;

export async function deliver(sql: Sql, entry: OutboxPayload): Promise<void> {
  switch (entry.kind) {
    case "job":
      return updateJob(sql, entry.row);
    case "job_run":
      return upsertJobRun(sql, entry.row);
    case "replica_run":
      return upsertReplicaRun(sql, entry.row);
    case "gpu_assignments":
      return upsertGpuAssignments(sql, entry.row);
    case "usage_event":
      return insertUsage(sql, entry.row);
    case "audit":
      return insertAudit(sql, entry.row);
    case "job_event":
      return insertJobEvent(sql, entry.row);
    case "node":
      return upsertNode(sql, entry.row);
  }
}

/**
 * A cancel is final: the API marks the row `cancelled` as soon as the scheduler has it, so a row of
 * this job still on its way (a waiting reason written by the alarm just before the cancel) is older
 * than what Postgres holds and must not bring the job back to `queued`. The scheduler never moves a
 * cancelled job anywhere else, so no later row is lost by this.
 */
async function updateJob(sql: Sql, j: JobUpdate): Promise<void> {
  const rows = await sql`
    update jobs set status = ${j.status}, attempts = ${j.attempts}, waiting_reason = ${j.waiting_reason},
      exit_code = ${j.exit_code}, failure_reason = ${j.failure_reason}, dead_lettered_at = ${ts(j.dead_lettered_at)},
      started_at = ${ts(j.started_at)}, finished_at = ${ts(j.finished_at)}
    where id = ${j.id}::uuid and (status <> 'cancelled' or ${j.status} = 'cancelled') returning id`;
  if (rows.length > 0) return;
  const [row] = await sql`select status from jobs where id = ${j.id}::uuid`;
  if (!row) throw new MissingRow(`jobs row ${j.id} not found`);
}

/**
 * The node row, inserted from registration data if the control plane has not written it yet.
 * `released` is the control plane's final word (the market took the node back, its token is
 * revoked): a later write from the scheduler (e.g. the drain that follows a release) never undoes it.
 * A drained node is `draining` until it is released, lost or not (the scheduler's live state says
 * which): the capacity manager reads `draining` as out of supply for good, so a loss and a return
 * never make it `ready` (or `lost`, then counted as a node still booting) again.
 */
async function upsertNode(sql: Sql, n: NodeRecord): Promise<void> {
  const blockId = n.block_id && UUID.test(n.block_id) ? n.block_id : null;
  const state = n.drained ? "draining" : n.state;
  await sql`
    insert into nodes (id, block_id, region, zone, gpu_model, gpu_count, cpu_milli, memory_mib, state, hostname,
                       registered_at, last_heartbeat_at)
    values (${n.id}, (select id from blocks where id = ${blockId}::uuid), ${n.region}, ${n.zone}, ${n.gpu_model},
            ${n.gpu_count}, ${n.cpu_milli}, ${n.memory_mib}, ${state}, ${n.hostname}, ${ts(n.registered_at)},
            ${ts(n.last_heartbeat_at)})
    on conflict (id) do update set
      block_id = coalesce(excluded.block_id, nodes.block_id), region = excluded.region, zone = excluded.zone,
      gpu_model = excluded.gpu_model, gpu_count = excluded.gpu_count, cpu_milli = excluded.cpu_milli,
      memory_mib = excluded.memory_mib,
      state = case when nodes.state = 'released' then nodes.state else excluded.state end, hostname = coalesce(excluded.hostname, nodes.hostname),
      registered_at = excluded.registered_at,
      last_heartbeat_at = greatest(nodes.last_heartbeat_at, excluded.last_heartbeat_at)`;
}

async function ensureNode(sql: Sql, n: NodeRecord): Promise<void> {
  const [row] = await sql`select 1 from nodes where id = ${n.id}`;
  if (!row) await upsertNode(sql, n);
}

async function upsertJobRun(sql: Sql, r: JobRunRecord): Promise<void> {
  await ensureNode(sql, r.node);
  const upsert = (tx: Sql) => tx<{ inserted: boolean }[]>`
    insert into job_runs (id, job_id, account_id, attempt, gang_index, node_id, status, gpu_count, placed_at,
                          started_at, finished_at, exit_code, oom_killed, failure_reason)
    values (${r.id}, ${r.job_id}::uuid, ${r.account_id}::uuid, ${r.attempt}, ${r.gang_index ?? 0}, ${r.node.id},
            ${r.status}, ${r.gpu_count},
            ${ts(r.placed_at)}, ${ts(r.started_at)}, ${ts(r.finished_at)}, ${r.exit_code}, ${r.oom_killed},
            ${r.failure_reason})
    on conflict (id) do update set status = excluded.status, started_at = excluded.started_at,
      finished_at = excluded.finished_at, exit_code = excluded.exit_code, oom_killed = excluded.oom_killed,
      failure_reason = excluded.failure_reason
    returning (xmax = 0) as inserted`;
  await withEarlyLines(sql, "job_runs", r.job_id, r.id, upsert);
}

/**
 * Writes a run row; the first time, also gives the lines its placement shipped before it (stored,
 * but invisible to readers, who join the run) new ids after every id taken so far, so a reader whose
 * cursor passed theirs with the job's other lines still gets them. Done under the log lock of the
 * job or endpoint (`scope`), taken first: lines stored meanwhile wait for the commit, and the
 * statements after the lock see every line stored before it. A later write (the row exists) is the
 * plain upsert, no transaction.
 */
async function withEarlyLines(
  sql: Sql,
  table: "job_runs" | "replica_runs",
  scope: string,
  placementId: string,
  upsert: (tx: Sql) => Promise<{ inserted: boolean }[]>,
): Promise<void> {
  const [known] = await sql`select 1 from ${sql(table)} where id = ${placementId}`;
  if (known) {
    await upsert(sql);
    return;
  }
  await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(${LOG_LOCK_SPACE}, hashtext(${scope}))`;
    const [row] = await upsert(tx as unknown as Sql);
    if (row?.inserted) await renumberEarlyLines(tx as unknown as Sql, placementId);
  });
}

/** New ids, in their old order, for the lines of a placement stored before its run row. */
async function renumberEarlyLines(tx: Sql, placementId: string): Promise<void> {
  await tx`
    update job_logs l set id = m.new_id
      from (select id, nextval(pg_get_serial_sequence('job_logs', 'id')) as new_id
              from (select id from job_logs where placement_id = ${placementId} order by id) early) m
     where l.id = m.id`;
}

/**
 * An endpoint replica's run. The API writes the endpoint's row before the scheduler hears of it and
 * never deletes one, so a run of an endpoint Postgres does not have (only made up in tests) is skipped.
 */
async function upsertReplicaRun(sql: Sql, r: ReplicaRunRecord): Promise<void> {
  if (!UUID.test(r.endpoint_id)) return;
  await ensureNode(sql, r.node);
  const upsert = (tx: Sql) => tx<{ inserted: boolean }[]>`
    insert into replica_runs (id, endpoint_id, account_id, replica, attempt, node_id, status, placed_at, started_at,
                              finished_at, exit_code, tier, gpu_count)
    select ${r.id}, e.id, e.account_id, ${r.replica}, ${r.attempt}, ${r.node.id}, ${r.status}, ${ts(r.placed_at)},
           ${ts(r.started_at)}, ${ts(r.finished_at)}, ${r.exit_code}, ${r.tier ?? null}, ${r.gpu_count ?? null}
      from endpoints e where e.id = ${r.endpoint_id}::uuid
    on conflict (id) do update set status = excluded.status, started_at = excluded.started_at,
      finished_at = excluded.finished_at, exit_code = excluded.exit_code,
      tier = coalesce(replica_runs.tier, excluded.tier), gpu_count = coalesce(replica_runs.gpu_count, excluded.gpu_count)
    returning (xmax = 0) as inserted`;
  await withEarlyLines(sql, "replica_runs", r.endpoint_id, r.id, upsert);
}

async function upsertGpuAssignments(sql: Sql, a: GpuAssignmentRecord): Promise<void> {
  await sql`
    insert into gpu_assignments (job_run_id, node_id, gpu_index, assigned_at, released_at)
    select ${a.job_run_id}, ${a.node_id}, g, ${ts(a.assigned_at)}, ${ts(a.released_at)}
      from unnest(${intArray(a.gpu_indices)}::int[]) as g
    on conflict (job_run_id, node_id, gpu_index) do update
      set released_at = coalesce(gpu_assignments.released_at, excluded.released_at)`;
}

async function insertUsage(sql: Sql, u: UsageRecord): Promise<void> {
  await sql`
    insert into usage_events (account_id, job_id, job_run_id, tier, gpu_model, gpu_count, gpu_seconds, period_start,
                              period_end)
    values (${u.account_id}::uuid, ${u.job_id}::uuid, ${u.job_run_id}, ${u.tier}, ${u.gpu_model}, ${u.gpu_count},
            ${u.gpu_seconds}, ${ts(u.period_start)}, ${ts(u.period_end)})
    on conflict (job_run_id) do nothing`;
}

async function insertAudit(sql: Sql, a: AuditRecord): Promise<void> {
  await sql`
    insert into audit_log (account_id, actor_type, actor_id, action, target_type, target_id, data, dedupe_key)
    values (${a.account_id}::uuid, 'system', ${a.actor_id}, ${a.action}, ${a.target_type}, ${a.target_id},
            ${sql.json(a.data as postgres.JSONValue)}, ${a.dedupe_key})
    on conflict (dedupe_key) do nothing`;
}

async function insertJobEvent(sql: Sql, e: JobEventRecord): Promise<void> {
  await sql`
    insert into job_events (job_id, seq, account_id, type, at, attempt, placement_id, node_id, gpu_indices, exit_code,
                            reason, data)
    values (${e.job_id}::uuid, ${e.seq}, ${e.account_id}::uuid, ${e.type}, ${ts(e.at)}, ${e.attempt}, ${e.placement_id},
            ${e.node_id}, ${e.gpu_indices ? intArray(e.gpu_indices) : null}::int[], ${e.exit_code}, ${e.reason},
            ${sql.json(e.data as postgres.JSONValue)})
    on conflict (job_id, seq) do nothing`;
}

export class MissingRow extends Error {
  override name = "MissingRow";
}

/**
 * A server's answer about this row (constraint, missing row: SQLSTATE or MissingRow) lets other
 * rows go on; anything else (no connection, timeout) means Postgres is unreachable: stop the flush.
 */
export function isRowError(error: unknown): boolean {
  if (error instanceof MissingRow) return true;
  const code = (error as { code?: unknown })?.code;
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code);
}

export type { AuditRecord, GpuAssignmentRecord, JobEventRecord, JobRunRecord, NodeRecord, UsageRecord };
