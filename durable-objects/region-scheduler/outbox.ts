/**
 * The outbox: every decision the object makes that Postgres must learn, as a row in its own SQLite,
 * written in the same transaction as the decision. The alarm delivers rows in order with
 * idempotent upserts (outbox-postgres.ts); a row leaves the table only once Postgres has it, so
 * nothing is lost while Postgres is down, and a re-delivered row changes nothing.
 *
 * Rows are keyed (a job id, or `node:<id>`): when one fails, later rows of its key wait, so a job's
 * history never arrives out of order; other keys go on.
 */
import type { ObjectSql } from "../sqlite";

export type OutboxPayload =
  | { kind: "job"; row: JobUpdate }
  | { kind: "job_run"; row: JobRunRecord }
  | { kind: "replica_run"; row: ReplicaRunRecord }
  | { kind: "gpu_assignments"; row: GpuAssignmentRecord }
  | { kind: "usage_event"; row: UsageRecord }
  | { kind: "audit"; row: AuditRecord }
  | { kind: "job_event"; row: JobEventRecord }
  | { kind: "node"; row: NodeRecord };

export interface JobUpdate {
  id: string;
  status: string;
  attempts: number;
  waiting_reason: string | null;
  exit_code: number | null;
  failure_reason: string | null;
  dead_lettered_at: number | null;
  started_at: number | null;
  finished_at: number | null;
}

export interface NodeRecord {
  id: string;
  region: string;
  zone: string;
  gpu_model: string;
  gpu_count: number;
  cpu_milli: number;
  memory_mib: number;
  state: string;
  /** Drained (for good), lost or not; absent in rows written before the scheduler kept drains. */
  drained?: boolean;
  hostname: string | null;
  block_id: string | null;
  registered_at: number;
  last_heartbeat_at: number | null;
}

export interface JobRunRecord {
  id: string;
  job_id: string;
  account_id: string;
  attempt: number;
  /** Its place in a multi-node job; absent in records queued before it was sent (0 then). */
  gang_index?: number;
  node: NodeRecord;
  status: string;
  gpu_count: number;
  placed_at: number;
  started_at: number | null;
  finished_at: number | null;
  exit_code: number | null;
  oom_killed: boolean;
  failure_reason: string | null;
}

/**
 * A run of an endpoint replica: where its log lines come from (`GET /v1/endpoints/{id}/logs`), and
 * what a running one costs so far (its own tier and GPUs: the endpoint's may have changed since).
 */
export interface ReplicaRunRecord {
  id: string;
  endpoint_id: string;
  account_id: string;
  /** The replica's number within the endpoint (`<endpoint>#<replica>`). */
  replica: number;
  attempt: number;
  node: NodeRecord;
  status: string;
  placed_at: number;
  started_at: number | null;
  finished_at: number | null;
  exit_code: number | null;
  /** Absent in records queued before they were sent (Postgres then takes the endpoint's). */
  tier?: string;
  gpu_count?: number;
}

export interface GpuAssignmentRecord {
  job_run_id: string;
  node_id: string;
  gpu_indices: number[];
  assigned_at: number;
  released_at: number | null;
}

export interface UsageRecord {
  account_id: string;
  job_id: string | null;
  job_run_id: string;
  tier: string;
  gpu_model: string;
  gpu_count: number;
  gpu_seconds: number;
  period_start: number;
  period_end: number;
}

export interface AuditRecord {
  account_id: string | null;
  actor_id: string;
  action: string;
  target_type: string;
  target_id: string;
  data: Record<string, unknown>;
  dedupe_key: string;
}

export interface JobEventRecord {
  job_id: string;
  seq: number;
  account_id: string;
  type: string;
  at: number;
  attempt: number | null;
  placement_id: string | null;
  node_id: string | null;
  gpu_indices: number[] | null;
  exit_code: number | null;
  reason: string | null;
  data: Record<string, unknown>;
}

export type OutboxRow = {
  seq: number;
  kind: OutboxPayload["kind"];
  key: string;
  payload: string;
  created_at: number;
  attempts: number;
  next_try_at: number;
  last_error: string | null;
  parked: number;
};

export class Outbox {
  constructor(private readonly db: ObjectSql) {}

  add(key: string, entry: OutboxPayload, now: number): void {
    this.db.run(
      "insert into outbox (kind, key, payload, created_at) values (?, ?, ?, ?)",
      entry.kind,
      key,
      JSON.stringify(entry.row),
      now,
    );
  }

  /**
   * Rows due now, in order, leaving out keys that wait on an earlier failed or parked row. They are
   * left out before the limit: otherwise `limit` rows of waiting keys at the head would stop every
   * other key's delivery.
   */
  due(now: number, limit: number): OutboxRow[] {
    return this.db.all<OutboxRow>(
      `select * from outbox
        where parked = 0 and next_try_at <= ?
          and key not in (select key from outbox where parked = 1 or next_try_at > ?)
        order by seq limit ?`,
      now,
      now,
      limit,
    );
  }

  delivered(seq: number): void {
    this.db.run("delete from outbox where seq = ?", seq);
  }

  failed(row: OutboxRow, error: string, retryAt: number, park: boolean): void {
    this.db.run(
      "update outbox set attempts = attempts + 1, last_error = ?, next_try_at = ?, parked = ? where seq = ?",
      error.slice(0, 2000),
      retryAt,
      park ? 1 : 0,
      row.seq,
    );
  }

  /**
   * Earliest instant a row can be delivered (null when nothing can): only each key's first row
   * counts, as the rows behind it wait for it (a parked first row waits for an operator). Counting
   * those rows made the alarm fire every second while a key waited out its backoff.
   */
  nextDue(): number | null {
    return (
      this.db.one<{ at: number | null }>(
        `select min(o.next_try_at) as at from outbox o
          where o.parked = 0 and o.seq = (select min(p.seq) from outbox p where p.key = o.key)`,
      )?.at ?? null
    );
  }

  /**
   * Accounts with run or usage rows still here (parked ones too) whose time overlaps
   * [`startMs`, `endMs`): a usage event's period, a run from its start (or placement) to its end.
   * A run's row written before it ended (placed, running) ends where a later row of the same run
   * here says it did, and runs on if none does (rows of a key leave in order, so while this one is
   * here, so are the later ones). By the time the rows cover, not by when they were written: a run
   * of October that ends at 00:30 on 1 November is written then, and October's invoice must wait
   * for it; an October row parked for an operator holds up no later month it does not touch.
   */
  usageAccountsIn(startMs: number, endMs: number): string[] {
    return this.db
      .all<{ account_id: string | null }>(
        `select distinct json_extract(o.payload, '$.account_id') as account_id from outbox o
          where o.kind in ('usage_event', 'job_run', 'replica_run')
            and coalesce(json_extract(o.payload, '$.period_start'), json_extract(o.payload, '$.started_at'),
                         json_extract(o.payload, '$.placed_at'), o.created_at) < ?
            and coalesce(
                  json_extract(o.payload, '$.period_end'),
                  json_extract(o.payload, '$.finished_at'),
                  (select max(coalesce(json_extract(p.payload, '$.finished_at'), json_extract(p.payload, '$.period_end')))
                     from outbox p
                    where p.key = o.key and p.seq > o.seq
                      and json_extract(o.payload, '$.id') in (json_extract(p.payload, '$.id'),
                                                             json_extract(p.payload, '$.job_run_id'))),
                  ?) >= ?`,
        endMs,
        startMs,
        startMs,
      )
      .flatMap((r) => (r.account_id ? [r.account_id] : []));
  }

  counts(): { pending: number; parked: number } {
    const row = this.db.one<{ pending: number; parked: number }>(
      "select coalesce(sum(parked = 0), 0) as pending, coalesce(sum(parked = 1), 0) as parked from outbox",
    );
    return { pending: row?.pending ?? 0, parked: row?.parked ?? 0 };
  }
}
