/**
 * One per region: the region's nodes, GPU allocations and job queue, changed one call at a time so
 * a GPU is never handed out twice. Every call runs in one storage transaction (the change, the
 * packer pass it triggers, and the outbox rows that record both); long-polls wait in memory; one
 * alarm drives timers, liveness and the outbox flush to Postgres. See README.md beside this file.
 */
import { DurableObject } from "cloudflare:workers";
import postgres from "postgres";
import type { Heartbeat, JobStatus, PlacementEvent, PlacementSet, RegisterResponse } from "../../core/schemas";
import { ObjectSql } from "../sqlite";
import { type Clock, wallClock } from "./clock";
import { Outbox, type OutboxPayload } from "./outbox";
import { deliver, isRowError } from "./outbox-postgres";
import { Records } from "./records";
import { Region } from "./region";
import { liveState } from "./rows";
import type {
  CancelResult,
  CapacityLease,
  CapacitySnapshot,
  DeadLetter,
  DrainResult,
  EndpointSpec,
  EndpointState,
  EventResult,
  JobState,
  NodeCordon,
  NodeRegistration,
  NodeResult,
  NodeView,
  RegionSchedulerRpc,
  ReservationRequest,
  ReserveResult,
  RouteOptions,
  RouteResult,
  SchedulerJob,
  SubmitResult,
} from "./rpc";
import { SCHEMA } from "./schema";
import { backoff, DEFAULT_SETTINGS, type SchedulerSettings } from "./settings";
import { Views } from "./views";

export interface RegionSchedulerEnv {
  HYPERDRIVE: Hyperdrive;
  LOG_LEVEL?: string;
}

/** Longest a long-poll is held, whatever the agent asks. */
const MAX_POLL_MS = 60_000;
/** Longest an endpoint request waits for a ready replica, whatever the caller asks. */
const MAX_ROUTE_WAIT_MS = 600_000;
/**
 * Longest the object waits for a waiting request's `still_waiting` to answer. A caller whose request
 * is alive answers in one round trip; one that does not answer in this long is taken as gone, since
 * that is the safer mistake: handing the lease to a caller that is gone holds the replica's slot
 * until `lease_ttl_ms` (15 minutes), while taking a slow one as gone costs it a 503 it may retry,
 * the replica ready by then. Without a bound, a callback that never settles would hold this call,
 * and the lease it took, for good.
 */
const STILL_WAITING_TIMEOUT_MS = 5_000;

export class RegionScheduler extends DurableObject<RegionSchedulerEnv> implements RegionSchedulerRpc {
  /** Tests replace this with a clock they advance; nothing else reads the time. */
  clock: Clock = wallClock;
  private readonly db: ObjectSql;
  readonly schemaVersion: number;
  private readonly outbox: Outbox;
  private readonly state: Region;
  private readonly views: Views;
  private settings: SchedulerSettings;
  private readonly waiters = new Map<string, Set<() => void>>();
  /** Endpoint requests waiting for a ready replica: woken by whatever may have made one ready. */
  private readonly routeWaiters = new Set<() => void>();
  private flushing: Promise<{ delivered: number; failed: number }> | null = null;

  constructor(ctx: DurableObjectState, env: RegionSchedulerEnv) {
    super(ctx, env);
    this.db = new ObjectSql(ctx.storage);
    this.schemaVersion = this.db.ensureSchema(SCHEMA);
    const stored = this.meta("settings");
    this.settings = { ...DEFAULT_SETTINGS, ...(stored ? (JSON.parse(stored) as Partial<SchedulerSettings>) : {}) };
    this.outbox = new Outbox(this.db);
    const records = new Records(this.db, this.outbox, () => this.regionName());
    this.state = new Region(
      this.db,
      records,
      () => this.settings,
      () => this.regionName(),
      (e, f) => this.log("info", e, f),
    );
    this.views = new Views(this.db, this.state);
  }

  /** Liveness of the object and its storage: the region it serves and its schema version. */
  async ping(region: string): Promise<{ region: string; schema_version: number; nodes: number }> {
    this.db.run("insert into meta (key, value) values ('region', ?) on conflict (key) do nothing", region);
    const nodes = this.db.one<{ n: number }>("select count(*) as n from nodes")?.n ?? 0;
    return { region: this.regionName(), schema_version: this.schemaVersion, nodes };
  }

  /** Change tunables (persisted). Additive to the agreed contract: for operators and tests. */
  async configure(changes: Partial<SchedulerSettings>): Promise<SchedulerSettings> {
    this.settings = { ...this.settings, ...changes, packer: { ...this.settings.packer, ...changes.packer } };
    this.db.run(
      "insert into meta (key, value) values ('settings', ?) on conflict (key) do update set value = excluded.value",
      JSON.stringify(this.settings),
    );
    return this.settings;
  }

  // ---- jobs -------------------------------------------------------------------------------

  async submit(job: SchedulerJob): Promise<SubmitResult> {
    return this.change((now) => {
      const result = this.state.submit(job, now);
      if (!result.ok) return result;
      if (!result.duplicate) this.state.schedule(now);
      const state = this.views.jobState(job.id);
      return { ...result, status: state?.status ?? result.status, state };
    });
  }

  async cancel(jobId: string): Promise<CancelResult> {
    return this.change((now) => {
      const result = this.state.cancel(jobId, now);
      // The cancelled job may have held the head's reservation that kept others from backfilling.
      if (result.ok) this.state.schedule(now);
      return result;
    });
  }

  async jobState(jobId: string): Promise<JobState | null> {
    return this.views.jobState(jobId);
  }

  async deadLetters(): Promise<DeadLetter[]> {
    return this.views.deadLetters();
  }

  async undeliveredUsage(startMs: number, endMs: number): Promise<{ accounts: string[] }> {
    return { accounts: this.outbox.usageAccountsIn(startMs, endMs) };
  }

  async redrive(jobId: string): Promise<{ ok: boolean; status?: JobStatus }> {
    return this.change((now) => {
      const result = this.state.redrive(jobId, now);
      if (result.ok) this.state.schedule(now);
      return result.ok ? { ok: true, status: this.state.job(jobId)!.status } : result;
    });
  }

  // ---- nodes and agents -------------------------------------------------------------------

  async registerNode(registration: NodeRegistration): Promise<RegisterResponse> {
    return this.change((now) => {
      this.db.run(
        "insert into meta (key, value) values ('region', ?) on conflict (key) do nothing",
        registration.region,
      );
      this.state.register(registration, now);
      this.state.schedule(now);
      return {
        node_id: registration.node_id,
        region: this.regionName(),
        heartbeat_interval_ms: this.settings.heartbeat_interval_ms,
        poll_wait_ms: this.settings.poll_wait_ms,
      };
    }, true);
  }

  async heartbeat(nodeId: string, heartbeat: Heartbeat): Promise<NodeResult> {
    return this.change((now) => {
      const r = this.state.heartbeat(nodeId, heartbeat, now);
      if (!r.known) return { ok: false, state: "unknown" as const };
      if (r.changed) this.state.schedule(now);
      // As cordon and uncordon answer: a cordoned node's agent hears `cordoned`, not `ready`.
      return { ok: true, state: liveState(this.state.node(nodeId)!) };
    }, true);
  }

  /**
   * The node's whole desired set and its version. Answers at once when the version differs from
   * `sinceVersion`, else when the set changes, else empty-handed (same set) at the deadline.
   */
  async pollPlacements(nodeId: string, sinceVersion: number, waitMs: number): Promise<PlacementSet> {
    const current = this.state.placementSet(nodeId);
    if (current.version !== sinceVersion || waitMs <= 0 || !this.state.node(nodeId)) return current;
    await new Promise<void>((resolve) => {
      const set = this.waiters.get(nodeId) ?? new Set<() => void>();
      const done = () => {
        clearTimeout(timer);
        set.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.min(waitMs, MAX_POLL_MS));
      set.add(done);
      this.waiters.set(nodeId, set);
    });
    return this.state.placementSet(nodeId);
  }

  /** The account and image of a placement active on `nodeId`; null when it is not (or no longer). */
  async placementImage(nodeId: string, placementId: string): Promise<{ account_id: string; image: string } | null> {
    return this.state.placementImage(nodeId, placementId);
  }

  async reportEvent(nodeId: string, event: PlacementEvent): Promise<EventResult> {
    return this.change((now) => {
      const { changed, ...result } = this.state.report(nodeId, event, now);
      if (changed) this.state.schedule(now);
      return result;
    }, true);
  }

  async drain(nodeId: string): Promise<DrainResult> {
    return this.change((now) => this.state.drain(nodeId, now));
  }

  async cordon(nodeId: string, cordon: Omit<NodeCordon, "since">): Promise<NodeResult> {
    return this.change((now) => this.state.cordon(nodeId, cordon, now));
  }

  async uncordon(nodeId: string, by?: string): Promise<NodeResult> {
    return this.change((now) => {
      const { changed, ...result } = this.state.uncordon(nodeId, by ?? null, now);
      // Its GPUs are free for the queue again: place what waits at once, not at the next alarm.
      if (changed) this.state.schedule(now);
      return result;
    });
  }

  async setNodeBlock(nodeId: string, blockId: string | null, blockEndAt: number | null): Promise<{ ok: boolean }> {
    return this.change((now) => {
      const ok = this.state.setNodeBlock(nodeId, blockId, blockEndAt, now);
      if (ok) this.state.schedule(now);
      return { ok };
    });
  }

  async removeNode(nodeId: string): Promise<{ removed: boolean }> {
    return this.change((now) => {
      const removed = this.state.removeNode(nodeId, now);
      if (removed) this.state.schedule(now);
      return { removed };
    });
  }

  /**
   * The capacity cycle's lease on this region: one cycle at a time. A cycle slowed by the market can
   * outlast its minute; two at once would plan the same buy twice, and one could send again an
   * order the other has just sent (a new node token each time). Taken if free, expired or already
   * this holder's; a cycle that dies without releasing it holds it until `ttlMs` has passed.
   */
  async takeCapacityLease(holder: string, ttlMs: number): Promise<CapacityLease> {
    const now = this.clock.now();
    const stored = this.meta("capacity_lease");
    const current = stored ? (JSON.parse(stored) as { holder: string; until: number }) : null;
    if (current && current.holder !== holder && current.until > now) return { ok: false, ...current };
    const lease = { holder, until: now + ttlMs };
    this.db.run(
      "insert into meta (key, value) values ('capacity_lease', ?) on conflict (key) do update set value = excluded.value",
      JSON.stringify(lease),
    );
    return { ok: true, ...lease };
  }

  async releaseCapacityLease(holder: string): Promise<{ released: boolean }> {
    const stored = this.meta("capacity_lease");
    if (!stored || (JSON.parse(stored) as { holder: string }).holder !== holder) return { released: false };
    this.db.run("delete from meta where key = 'capacity_lease'");
    return { released: true };
  }

  async listNodes(): Promise<NodeView[]> {
    return this.views.nodes();
  }

  async capacitySnapshot(): Promise<CapacitySnapshot> {
    return this.views.capacity(this.regionName(), this.clock.now());
  }

  // ---- reservations -----------------------------------------------------------------------

  async reserve(request: ReservationRequest): Promise<ReserveResult> {
    return this.change((now) => {
      // The replaced reservation goes first, in this transaction: its GPUs are free for the new
      // one, and the packer runs once after both, on what the new one did not take.
      const old = request.replaces && request.replaces !== request.reservation_id ? request.replaces : null;
      const replaced = old ? this.state.reservations.release(old, now) : { released: false };
      const result = this.state.reservations.reserve(request, now);
      if (replaced.released) this.state.schedule(now);
      return result;
    });
  }

  async release(reservationId: string): Promise<{ released: boolean }> {
    return this.change((now) => {
      const result = this.state.reservations.release(reservationId, now);
      if (result.released) this.state.schedule(now);
      return result;
    });
  }

  // ---- endpoints --------------------------------------------------------------------------

  async ensureEndpoint(spec: EndpointSpec): Promise<EndpointState | null> {
    return this.change((now) => {
      this.state.endpoints.ensure(spec, now);
      this.state.schedule(now);
      return this.views.endpointState(spec.id);
    }, true);
  }

  async removeEndpoint(endpointId: string, version: number): Promise<{ removed: boolean; version: number }> {
    return this.change((now) => {
      const result = this.state.endpoints.remove(endpointId, version, now);
      this.state.schedule(now);
      return result;
    });
  }

  async endpointState(endpointId: string): Promise<EndpointState | null> {
    return this.views.endpointState(endpointId);
  }

  /**
   * Lease a ready replica for one request (traffic.ts). None ready: wait, woken by heartbeats,
   * events and registrations (a replica turning ready comes in a heartbeat), up to `wait_ms`.
   */
  async routeEndpoint(endpointId: string, opts: RouteOptions = {}): Promise<RouteResult> {
    const waitMs = Math.max(0, Math.min(opts.wait_ms ?? 0, MAX_ROUTE_WAIT_MS));
    // Waiting is real time, whatever clock the scheduler's decisions read.
    const deadline = Date.now() + waitMs;
    for (let waited = false; ; waited = true) {
      const result = await this.change((now) => this.state.traffic.route(endpointId, opts.exclude ?? [], now));
      const gone = result.ok && waited ? await callerGone(opts) : null;
      if (result.ok && gone) {
        // Its client left during the wait (the Worker's request ended with it), or its side does
        // not answer: nobody would return this lease, which would hold the replica's slot until
        // `lease_ttl_ms`.
        await this.endpointRequestDone(result.lease_id);
        this.log("info", "traffic.waiter_gone", {
          endpoint_id: endpointId,
          placement_id: result.placement_id,
          reason: gone,
        });
        return { ok: false, code: "no_ready_replica", waiting_reason: gone };
      }
      const left = deadline - Date.now();
      if (result.ok || result.code === "not_found" || left <= 0) return result;
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.routeWaiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, left);
        this.routeWaiters.add(done);
      });
    }
  }

  async endpointRequestDone(leaseId: string): Promise<{ ok: boolean }> {
    return this.change((now) => {
      const ok = this.state.traffic.done(leaseId, now);
      if (this.state.traffic.takeScaled()) this.state.schedule(now);
      return { ok };
    });
  }

  async renewEndpointLease(
    leaseId: string,
    holder?: { endpoint_id: string; placement_id: string },
  ): Promise<{ ok: boolean }> {
    return this.change((now) => {
      const ok = this.state.traffic.renew(leaseId, now, holder);
      // A lease taken again may have asked for a replica more.
      if (this.state.traffic.takeScaled()) this.state.schedule(now);
      return { ok };
    });
  }

  // ---- the alarm --------------------------------------------------------------------------

  /** Due timers, liveness, the packer pass, then the outbox to Postgres. Re-armed whatever happens. */
  override async alarm(): Promise<void> {
    try {
      const now = this.clock.now();
      this.ctx.storage.transactionSync(() => {
        this.state.tick(now);
        this.state.traffic.takeScaled();
        this.state.schedule(now);
      });
      this.wake();
      this.wakeRoutes();
      await this.flush();
    } catch (error) {
      this.log("error", "alarm.failed", { error: error instanceof Error ? error.message : String(error) });
    } finally {
      await this.arm(true);
    }
  }

  /** Deliver due outbox rows in order; a row stays until Postgres has it. One flush at a time. */
  private flush(): Promise<{ delivered: number; failed: number }> {
    if (!this.flushing) this.flushing = this.deliverDue().finally(() => (this.flushing = null));
    return this.flushing;
  }

  private async deliverDue(): Promise<{ delivered: number; failed: number }> {
    const now = this.clock.now();
    const paused = Number(this.meta("outbox_paused_until") ?? 0);
    if (paused > now) return { delivered: 0, failed: 0 };
    const rows = this.outbox.due(now, this.settings.flush_batch);
    if (rows.length === 0) return { delivered: 0, failed: 0 };
    // Keys whose row fails in this batch: their later rows wait for it.
    const blocked = new Set<string>();
    const sql = postgres(this.env.HYPERDRIVE.connectionString, {
      max: 1,
      fetch_types: false,
      connect_timeout: 10,
      idle_timeout: 5,
      onnotice: () => {},
    });
    let delivered = 0;
    let failed = 0;
    try {
      for (const row of rows) {
        if (blocked.has(row.key)) continue;
        try {
          await deliver(sql, { kind: row.kind, row: JSON.parse(row.payload) } as OutboxPayload);
          this.outbox.delivered(row.seq);
          delivered++;
        } catch (error) {
          failed++;
          const message = error instanceof Error ? error.message : String(error);
          const at = this.clock.now();
          if (!isRowError(error)) {
            // Postgres unreachable: pause the whole outbox, not just this row, and keep its attempts.
            const streak = Number(this.meta("outbox_failures") ?? 0) + 1;
            this.setMeta("outbox_failures", String(streak));
            const delay = backoff(
              this.settings.outbox_retry_base_ms,
              this.settings.outbox_retry_cap_ms,
              streak,
              streak,
            );
            this.setMeta("outbox_paused_until", String(at + delay));
            this.log("warn", "outbox.unreachable", { error: message, retry_in_ms: delay });
            break;
          }
          blocked.add(row.key);
          const attempts = row.attempts + 1;
          const park = attempts >= this.settings.outbox_max_attempts;
          const delay = backoff(
            this.settings.outbox_retry_base_ms,
            this.settings.outbox_retry_cap_ms,
            attempts,
            row.seq,
          );
          this.outbox.failed(row, message, at + delay, park);
          this.log(park ? "error" : "warn", park ? "outbox.parked" : "outbox.row_failed", {
            kind: row.kind,
            key: row.key,
            attempts,
            error: message,
          });
        }
      }
      if (delivered > 0) this.setMeta("outbox_failures", "0");
    } finally {
      await sql.end({ timeout: 2 }).catch(() => {});
    }
    return { delivered, failed };
  }

  // ---- plumbing ---------------------------------------------------------------------------

  /**
   * One change: in a storage transaction, then wake the long-polls it concerns and arm the alarm.
   * `readies`: the change may have made an endpoint replica ready, so waiting requests look again.
   */
  private async change<T>(fn: (now: number) => T, readies = false): Promise<T> {
    const now = this.clock.now();
    let result: T;
    try {
      result = this.ctx.storage.transactionSync(() => fn(now));
    } catch (error) {
      this.state.touched.clear();
      throw error;
    }
    this.wake();
    if (readies) this.wakeRoutes();
    await this.arm(false);
    return result;
  }

  /** Endpoint requests waiting for a replica look again (after a change that may have readied one). */
  private wakeRoutes(): void {
    for (const done of [...this.routeWaiters]) done();
  }

  private wake(): void {
    for (const nodeId of this.state.touched) {
      for (const done of [...(this.waiters.get(nodeId) ?? [])]) done();
    }
    this.state.touched.clear();
  }

  /**
   * Set the one alarm to the earliest due work: a timer, the periodic sweep, or the outbox (a
   * moment after a change, so a burst of changes is flushed together). Never moves it later,
   * except from inside the alarm itself, where the old one has just fired.
   */
  private async arm(fromAlarm: boolean): Promise<void> {
    const now = this.clock.now();
    let next = this.state.nextDue(now);
    const pending = this.outbox.nextDue();
    if (pending !== null) {
      const paused = Number(this.meta("outbox_paused_until") ?? 0);
      const at = Math.max(pending, paused, now + this.settings.flush_delay_ms);
      next = next === null ? at : Math.min(next, at);
    }
    if (next === null) return;
    const current = await this.ctx.storage.getAlarm();
    if (fromAlarm || current === null || next < current) await this.ctx.storage.setAlarm(next);
  }

  private regionName(): string {
    return this.ctx.id.name ?? this.meta("region") ?? "unknown";
  }

  private meta(key: string): string | undefined {
    return this.db.one<{ value: string }>("select value from meta where key = ?", key)?.value;
  }

  private setMeta(key: string, value: string): void {
    this.db.run(
      "insert into meta (key, value) values (?, ?) on conflict (key) do update set value = excluded.value",
      key,
      value,
    );
  }

  private log(level: "info" | "warn" | "error", event: string, fields: Record<string, unknown>): void {
    if (level === "info" && this.env.LOG_LEVEL !== "info" && this.env.LOG_LEVEL !== "debug") return;
    const line = JSON.stringify({ ts: new Date().toISOString(), level, event, region: this.regionName(), ...fields });
    if (level === "error") console.error(line);
    else if (level === "warn") console.warn(line);
    else console.log(line);
  }
}

/**
 * Why a routed request's caller is taken as gone, or null while it still waits: its `still_waiting`
 * fails once its request has ended, or does not answer within STILL_WAITING_TIMEOUT_MS.
 */
async function callerGone(opts: RouteOptions): Promise<string | null> {
  const stillWaiting = opts.still_waiting;
  if (!stillWaiting) return null;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const silent = new Promise<string>((resolve) => {
    timer = setTimeout(
      () => resolve(`the request did not say within ${STILL_WAITING_TIMEOUT_MS / 1000} s whether it still waited`),
      STILL_WAITING_TIMEOUT_MS,
    );
  });
  const answered = (async () => {
    try {
      await stillWaiting();
      return null;
    } catch {
      return "the request ended while it waited";
    }
  })();
  try {
    return await Promise.race([answered, silent]);
  } finally {
    clearTimeout(timer);
  }
}
