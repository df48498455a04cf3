/**
 * Endpoints: a long-lived service kept at its desired replicas (`min_replicas` until traffic asks
 * for more, never above `max_replicas`; traffic.ts decides). A replica is a job with no kill
 * deadline (`kind = 'replica'`, id `<endpoint>#<n>`) that is put back in the queue whenever its run
 * ends, with backoff that starts over after a long enough run. A changed spec replaces running
 * replicas; fewer replicas cancel the extra ones; removal stops them all.
 *
 * Syncs from the API may arrive out of order (two requests racing, the reconciler holding an older
 * row): each carries the endpoint's version, and one older than what the object holds for the id
 * (its spec, or its removal) changes nothing.
 */
import { hashString } from "../../core/scheduler";
import { TERMINAL_JOB_STATUSES } from "../../core/schemas";
import type { ObjectSql } from "../sqlite";
import type { Region, RunOutcome } from "./region";
import { type EndpointRow, isActiveRun, type JobRow, type RunRow, specOf } from "./rows";
import type { EndpointSpec } from "./rpc";
import { backoff, type SchedulerSettings } from "./settings";
import { isVersion, validateEndpoint } from "./validate";

/**
 * How long a removal is remembered. A late sync was read from Postgres by a Worker invocation still
 * running (a request: seconds; the reconciler's batch: at most its 15 minutes), and a removed id is
 * never active again in the API, so a month is far past any that can still arrive.
 */
export const REMOVAL_KEPT_MS = 30 * 86_400_000;

export class Endpoints {
  constructor(
    private readonly db: ObjectSql,
    private readonly state: Region,
    private readonly settings: () => SchedulerSettings,
    private readonly log: (event: string, fields: Record<string, unknown>) => void,
  ) {}

  /** Nothing changes when the object holds a newer version of the endpoint, or its removal. */
  ensure(spec: EndpointSpec, now: number): void {
    const problem = validateEndpoint(spec);
    if (problem) throw new TypeError(`invalid endpoint ${spec.id}: ${problem}`);
    const existing = this.db.one<EndpointRow>("select * from endpoints where id = ?", spec.id);
    // The same version again (a retry) applies again: it is the same spec. A removal wins a tie.
    const held = existing ? (existing.version ?? 0) : (this.removal(spec.id) ?? 0);
    if (existing ? held > spec.version : held >= spec.version) {
      this.log("endpoint.sync_superseded", { endpoint_id: spec.id, version: spec.version, held, removed: !existing });
      return;
    }
    const hash = String(hashString(JSON.stringify(replicaShape(spec))));
    if (existing) {
      // A lower minimum is a lower need, not an order: the replicas it kept go after the
      // scale-down delay, as when traffic drops (a lower maximum applies at once).
      const kept = this.desiredOf(spec.id);
      this.db.run(
        "update endpoints set spec = ?, spec_hash = ?, version = ?, updated_at = ?, desired = ? where id = ?",
        JSON.stringify(spec),
        hash,
        spec.version,
        now,
        clamp(kept, spec.min_replicas, spec.max_replicas),
        spec.id,
      );
    } else {
      // A spec newer than the endpoint's removal: Postgres's order is the one kept.
      this.db.run("delete from removed_endpoints where id = ?", spec.id);
      this.db.run(
        "insert into endpoints (id, spec, spec_hash, version, created_at, updated_at) values (?, ?, ?, ?, ?, ?)",
        spec.id,
        JSON.stringify(spec),
        hash,
        spec.version,
        now,
        now,
      );
    }
    const changed = existing !== undefined && existing.spec_hash !== hash;
    this.apply(spec, this.desiredOf(spec.id), changed, now);
    this.state.traffic.reconsider(spec, now);
  }

  /**
   * How many replicas the endpoint wants now: what traffic last asked for (see traffic.ts), within
   * min..max; `min_replicas` before any traffic. 0 for an endpoint this object does not have.
   */
  desiredOf(endpointId: string): number {
    const row = this.db.one<EndpointRow>("select * from endpoints where id = ?", endpointId);
    if (!row) return 0;
    const spec = JSON.parse(row.spec) as EndpointSpec;
    return clamp(row.desired ?? spec.min_replicas, spec.min_replicas, spec.max_replicas);
  }

  /** Traffic's word: keep `n` replicas (held within min..max). True when that changed anything. */
  scaleTo(endpointId: string, n: number, now: number): boolean {
    const spec = this.endpoint(endpointId);
    if (!spec) return false;
    const before = this.desiredOf(endpointId);
    const target = clamp(n, spec.min_replicas, spec.max_replicas);
    this.db.run("update endpoints set desired = ? where id = ?", target, endpointId);
    if (target === before) return false;
    this.apply(spec, target, false, now);
    this.log("endpoint.scaled", { endpoint_id: endpointId, from: before, to: target });
    return true;
  }

  /**
   * `desired` replicas kept (a changed spec replaces running ones). More: the lowest free numbers
   * are placed. Fewer: traffic says which replicas go (those serving no request, see `spare`).
   */
  private apply(spec: EndpointSpec, desired: number, changed: boolean, now: number): void {
    const shape = {
      tier: spec.tier,
      gpu_count: spec.gpu_count,
      gpu_models: JSON.stringify(spec.gpu_models),
      cpu_milli: spec.cpu_milli,
      memory_mib: spec.memory_mib,
      spec: JSON.stringify(specOf(spec)),
    };
    let kept = this.live(spec.id);
    const going = new Set(this.state.traffic.spare(kept, kept.length - desired).map((r) => r.id));
    for (const replica of kept) if (going.has(replica.id)) this.state.stopJob(replica, "scale_down", now);
    kept = kept.filter((r) => !going.has(r.id));
    for (const replica of kept) {
      // A new spec is a fresh start: a replica waiting out a crash loop's backoff is placed now.
      const fresh =
        changed && replica.status === "queued" && replica.next_attempt_at !== null
          ? { next_attempt_at: null, attempt_base: replica.attempt }
          : {};
      this.state.patchJob(replica, { ...shape, ...fresh }, now);
      if (changed)
        for (const run of this.state.runsOf(replica))
          if (isActiveRun(run)) this.state.stopRun(run, replica, "spec_changed", now);
    }
    const taken = new Set(kept.map((r) => replicaIndex(r.id)));
    for (let n = 0, added = kept.length; added < desired; n++) {
      if (taken.has(n)) continue;
      added++;
      const id = replicaId(spec.id, n);
      const replica = this.state.job(id);
      if (!replica) {
        this.state.insertJob(
          {
            id,
            kind: "replica",
            endpoint_id: spec.id,
            account_id: spec.account_id,
            priority: 0,
            estimated_duration_s: null,
            max_runtime_s: null,
            max_attempts: 1,
            submitted_at: now,
            ...shape,
          },
          now,
        );
        continue;
      }
      this.state.patchJob(
        replica,
        {
          ...shape,
          status: "queued",
          attempt_base: replica.attempt,
          finished_at: null,
          next_attempt_at: null,
          submitted_at: now,
          // Only a scale-down or the endpoint's removal cancels a replica.
          failure_reason: replica.status === "cancelled" ? "scaled down" : replica.failure_reason,
        },
        now,
      );
    }
  }

  /** Removal at `version`; a newer spec held, or a removal as new, is kept (`version` says which). */
  remove(endpointId: string, version: number, now: number): { removed: boolean; version: number } {
    if (!isVersion(version)) {
      throw new TypeError(`invalid removal of endpoint ${endpointId}: version must be a positive integer`);
    }
    const removal = this.removal(endpointId);
    const held = removal ?? this.versionOf(endpointId) ?? 0;
    if (held > version) {
      this.log("endpoint.sync_superseded", { endpoint_id: endpointId, version, held, removed: removal !== null });
      return { removed: false, version: held };
    }
    const n = this.db.run("delete from endpoints where id = ?", endpointId);
    this.state.traffic.forget(endpointId);
    for (const replica of this.replicas(endpointId)) {
      if (!TERMINAL_JOB_STATUSES.includes(replica.status)) this.state.stopJob(replica, "scale_down", now);
    }
    this.db.run(
      `insert into removed_endpoints (id, version, removed_at) values (?, ?, ?)
       on conflict (id) do update set version = excluded.version, removed_at = excluded.removed_at`,
      endpointId,
      version,
      now,
    );
    this.db.run("delete from removed_endpoints where removed_at < ?", now - REMOVAL_KEPT_MS);
    return { removed: n > 0, version };
  }

  /** The version an endpoint was removed at; null when it was not (or long enough ago to be forgotten). */
  private removal(endpointId: string): number | null {
    return (
      this.db.one<{ version: number }>("select version from removed_endpoints where id = ?", endpointId)?.version ??
      null
    );
  }

  /** The version of the spec the endpoint runs; null for one the object does not have, or synced before versions. */
  versionOf(endpointId: string): number | null {
    return (
      this.db.one<{ version: number | null }>("select version from endpoints where id = ?", endpointId)?.version ?? null
    );
  }

  /** The replicas kept now (not cancelled), by number. */
  private live(endpointId: string): JobRow[] {
    return this.replicas(endpointId).filter((r) => !TERMINAL_JOB_STATUSES.includes(r.status));
  }

  replicas(endpointId: string): JobRow[] {
    return this.db
      .all<JobRow>("select * from jobs where endpoint_id = ?", endpointId)
      .sort((a, b) => replicaIndex(a.id) - replicaIndex(b.id));
  }

  endpoint(endpointId: string): EndpointSpec | null {
    const row = this.db.one<EndpointRow>("select * from endpoints where id = ?", endpointId);
    return row ? (JSON.parse(row.spec) as EndpointSpec) : null;
  }

  /** A replica restarts whenever its run ends, with backoff that resets after a long enough run. */
  restart(job: JobRow, run: RunRow, outcome: RunOutcome, now: number): void {
    const spec = this.endpoint(job.endpoint_id ?? "");
    // More kept than wanted (never after `apply`): this one, between runs, serves no request.
    if (!spec || this.live(spec.id).length > this.desiredOf(spec.id)) {
      this.state.patchJob(job, { status: "cancelled", finished_at: now }, now);
      return;
    }
    const s = this.settings();
    const ran = run.started_at != null ? (run.finished_at ?? now) - run.started_at : 0;
    const base = ran >= s.replica_backoff_reset_ms ? job.attempt - 1 : job.attempt_base;
    const immediate = outcome.status === "cancelled";
    const failures = job.attempt - base;
    const delay = immediate
      ? 0
      : backoff(s.retry_base_ms, s.retry_cap_ms, failures, hashString(`${job.id}:${job.attempt}`));
    const reason = outcome.status === "succeeded" ? "exited with code 0" : outcome.reason;
    this.state.requeue(job, { attempt_base: base, failure_reason: reason }, now + delay, now);
    this.log("replica.restarting", { replica_id: job.id, placement_id: run.id, reason, backoff_ms: delay });
  }
}

/** What a replica is made of: a change means running replicas are replaced. */
function replicaShape(spec: EndpointSpec) {
  const {
    id: _id,
    version: _version,
    account_id: _account,
    min_replicas: _min,
    max_replicas: _max,
    startup_timeout_s: _startup,
    target_concurrency: _target,
    scale_down_delay_s: _delay,
    ...shape
  } = spec;
  return shape;
}

function clamp(n: number, min: number, max: number): number {
  return Math.max(min, Math.min(max, n));
}

export function replicaId(endpointId: string, n: number): string {
  return `${endpointId}#${n}`;
}

export function replicaIndex(id: string): number {
  return Number(id.slice(id.lastIndexOf("#") + 1));
}
