/**
 * Endpoint traffic: which ready replica takes a request, and how many replicas the traffic needs.
 *
 * A request holds a lease on one replica from routing until its response has ended, so leases are
 * the endpoint's concurrency. Routing picks the least busy ready replica (running, its readiness
 * check passed, on a node with an ingress), the lowest replica number on a tie, so the highest
 * numbers are the likeliest to be idle when traffic drops. A scale-down stops replicas holding no
 * lease, those not ready first, then the highest numbers; only when every one holds some, those
 * holding the fewest.
 *
 * Scaling: an endpoint wants ceil(in flight / target_concurrency) replicas, within min..max. More
 * are asked for at once, by the request that needs them (it waits for one to be ready when none
 * is: a cold start from zero). Fewer only after `scale_down_delay_s`: the timer `endpoint_scale`
 * is set when the need first drops below the desired count, and when it fires the endpoint keeps
 * what the busiest moment since then needed. So a burst is not followed by a scale-down in the
 * middle of the next one, and replicas outlive their traffic by one to two delays.
 *
 * In memory only (a restart forgets them): leases, in-flight counts and peaks. A lease whose
 * request never reported its end (the Worker died) expires after `lease_ttl_ms`.
 */
import type { ObjectSql } from "../sqlite";
import { replicaIndex } from "./endpoints";
import type { Region } from "./region";
import type { JobRow } from "./rows";
import type { EndpointSpec, RouteResult } from "./rpc";
import type { SchedulerSettings } from "./settings";

/** When an endpoint's spec does not say (a spec from before traffic was routed). */
export const DEFAULT_TARGET_CONCURRENCY = 4;
export const DEFAULT_SCALE_DOWN_DELAY_S = 300;

interface Lease {
  endpoint_id: string;
  placement_id: string;
  expires_at: number;
}

type Candidate = { placement_id: string; replica_id: string; node_id: string; ingress_url: string };

export class Traffic {
  private readonly leases = new Map<string, Lease>();
  /** Leases held, by endpoint and by placement. */
  private readonly inflight = new Map<string, number>();
  private readonly perPlacement = new Map<string, number>();
  /** The most requests in flight since the endpoint's scale-down timer was set. */
  private readonly peak = new Map<string, number>();
  private nextLease = 0;
  /**
   * Part of every lease id: the counter starts again with each instance, and a lease taken again
   * after a restart (`renew`) keeps its old id, which a new lease must not take.
   */
  private readonly instance = crypto.randomUUID().slice(0, 8);
  /** The desired replicas changed since `takeScaled` was last asked: the packer should run. */
  private scaled = false;

  constructor(
    private readonly db: ObjectSql,
    private readonly region: Region,
    private readonly settings: () => SchedulerSettings,
    private readonly log: (event: string, fields: Record<string, unknown>) => void,
  ) {}

  /**
   * A lease on a ready replica for one request, after scaling up if this request needs another
   * replica. `exclude`: placements that already failed this request.
   */
  route(endpointId: string, exclude: readonly string[], now: number): RouteResult {
    const spec = this.region.endpoints.endpoint(endpointId);
    if (!spec) return { ok: false, code: "not_found" };
    const inflight = this.inflight.get(endpointId) ?? 0;
    this.need(spec, inflight + 1, now);
    // A replica just asked for is placed now, so the answer below says where it stands.
    if (this.takeScaled()) this.region.schedule(now);
    const candidates = this.ready(endpointId).filter((c) => !exclude.includes(c.placement_id));
    if (candidates.length === 0) {
      // This request may give up without ever taking a lease (a client that does not wait, or not
      // as long as the cold start): the scale-down timer is set as if it had ended, and its wait
      // counts in the busiest moment until the timer fires. So a replica started for nobody is
      // scaled away a delay or two later, not kept (and billed) until some later request ends.
      this.need(spec, inflight, now);
      const peak = this.peak.get(endpointId);
      if (peak !== undefined) this.peak.set(endpointId, Math.max(peak, inflight + 1));
      return { ok: false, code: "no_ready_replica", waiting_reason: this.whyNoneReady(endpointId, exclude) };
    }
    let best = candidates[0]!;
    for (const c of candidates.slice(1)) {
      const busy = this.perPlacement.get(c.placement_id) ?? 0;
      const bestBusy = this.perPlacement.get(best.placement_id) ?? 0;
      if (busy < bestBusy || (busy === bestBusy && replicaIndex(c.replica_id) < replicaIndex(best.replica_id))) {
        best = c;
      }
    }
    const leaseId = `${now.toString(36)}-${this.instance}-${(this.nextLease++).toString(36)}`;
    this.hold(leaseId, {
      endpoint_id: endpointId,
      placement_id: best.placement_id,
      expires_at: now + this.settings().lease_ttl_ms,
    });
    return { ok: true, lease_id: leaseId, ...best };
  }

  /** The request under `leaseId` has ended. False: no such lease (already returned, or expired). */
  done(leaseId: string, now: number): boolean {
    const lease = this.leases.get(leaseId);
    if (!lease) return false;
    this.release(leaseId, lease);
    const spec = this.region.endpoints.endpoint(lease.endpoint_id);
    if (spec) this.need(spec, this.inflight.get(lease.endpoint_id) ?? 0, now);
    return true;
  }

  /**
   * A request that outlives `lease_ttl_ms` (a WebSocket) keeps its lease: it expires `lease_ttl_ms`
   * from now. A lease this object no longer has (it restarted: leases live in memory; or the
   * renewals could not reach it until it expired) is taken again for the same replica when `holder`
   * names it and it still takes requests, so an open socket counts again within one renewal.
   * False: no such lease, and none taken again.
   */
  renew(leaseId: string, now: number, holder?: { endpoint_id: string; placement_id: string }): boolean {
    const expires_at = now + this.settings().lease_ttl_ms;
    const lease = this.leases.get(leaseId);
    if (lease) {
      lease.expires_at = expires_at;
      return true;
    }
    if (!holder || !this.ready(holder.endpoint_id).some((c) => c.placement_id === holder.placement_id)) return false;
    this.hold(leaseId, { ...holder, expires_at });
    const spec = this.region.endpoints.endpoint(holder.endpoint_id);
    if (spec) this.need(spec, this.inflight.get(holder.endpoint_id) ?? 0, now);
    this.log("traffic.lease_restored", { endpoint_id: holder.endpoint_id, placement_id: holder.placement_id });
    return true;
  }

  /** Whether a scaling decision since the last call changed replicas (then the caller runs the packer). */
  takeScaled(): boolean {
    const scaled = this.scaled;
    this.scaled = false;
    return scaled;
  }

  /** Requests in flight to an endpoint now. */
  inFlight(endpointId: string): number {
    return this.inflight.get(endpointId) ?? 0;
  }

  /** The scale-down timer fired: keep what the busiest moment since it was set needed. */
  timerFired(endpointId: string, now: number): void {
    const spec = this.region.endpoints.endpoint(endpointId);
    const peak = Math.max(this.peak.get(endpointId) ?? 0, this.inflight.get(endpointId) ?? 0);
    this.peak.delete(endpointId);
    if (!spec) return;
    const target = Math.ceil(peak / targetConcurrency(spec));
    if (target < this.region.endpoints.desiredOf(endpointId)) this.scaleTo(spec, target, now);
    // Still more than the traffic of this moment needs: look again after another delay.
    this.need(spec, this.inflight.get(endpointId) ?? 0, now);
  }

  /**
   * The `n` replicas a scale-down stops. Stopping a replica cuts the requests it holds, so those
   * holding none go first; among them those that cannot take a request now (queued, pulling, not
   * ready, on a node without an ingress), as keeping one of those over a ready one leaves the next
   * request a cold start; then the highest numbers (routing fills the lowest first). If all hold
   * some, those holding the fewest.
   */
  spare(replicas: readonly JobRow[], n: number): JobRow[] {
    const held = new Map(
      replicas.map((r) => [
        r.id,
        this.region.runsOf(r).reduce((sum, run) => sum + (this.perPlacement.get(run.id) ?? 0), 0),
      ]),
    );
    const endpointIds = new Set(replicas.map((r) => r.endpoint_id ?? ""));
    const serving = new Set([...endpointIds].flatMap((id) => this.ready(id).map((c) => c.replica_id)));
    const ready = (r: JobRow) => (serving.has(r.id) ? 1 : 0);
    return [...replicas]
      .sort(
        (a, b) =>
          (held.get(a.id) ?? 0) - (held.get(b.id) ?? 0) ||
          ready(a) - ready(b) ||
          replicaIndex(b.id) - replicaIndex(a.id),
      )
      .slice(0, Math.max(0, n));
  }

  /** Leases whose requests never said they ended (their Worker died) are returned. */
  expire(now: number): void {
    for (const [id, lease] of this.leases) {
      if (lease.expires_at > now) continue;
      this.release(id, lease);
      this.log("traffic.lease_expired", { endpoint_id: lease.endpoint_id, placement_id: lease.placement_id });
      const spec = this.region.endpoints.endpoint(lease.endpoint_id);
      if (spec) this.need(spec, this.inflight.get(lease.endpoint_id) ?? 0, now);
    }
  }

  /** The endpoint's spec changed (its minimum, its target): the need of the requests in flight now. */
  reconsider(spec: EndpointSpec, now: number): void {
    this.need(spec, this.inflight.get(spec.id) ?? 0, now);
  }

  /** The endpoint is gone: no scale-down is due for it. */
  forget(endpointId: string): void {
    this.region.clearTimer("endpoint_scale", endpointId);
    this.peak.delete(endpointId);
  }

  /** Up to what `inflight` requests need at once; below it, the scale-down timer (if not set). */
  private need(spec: EndpointSpec, inflight: number, now: number): void {
    const target = Math.ceil(inflight / targetConcurrency(spec));
    const desired = this.region.endpoints.desiredOf(spec.id);
    if (target > desired) {
      this.scaleTo(spec, target, now);
      this.region.clearTimer("endpoint_scale", spec.id);
      this.peak.delete(spec.id);
    } else if (target < desired && desired > spec.min_replicas && !this.region.hasTimer("endpoint_scale", spec.id)) {
      const delayS = spec.scale_down_delay_s ?? DEFAULT_SCALE_DOWN_DELAY_S;
      this.region.setTimer("endpoint_scale", spec.id, now + delayS * 1_000);
      this.peak.set(spec.id, inflight);
    }
  }

  private scaleTo(spec: EndpointSpec, n: number, now: number): void {
    if (this.region.endpoints.scaleTo(spec.id, n, now)) this.scaled = true;
  }

  private add(endpointId: string, placementId: string, n: number): void {
    const e = (this.inflight.get(endpointId) ?? 0) + n;
    const p = (this.perPlacement.get(placementId) ?? 0) + n;
    if (e > 0) this.inflight.set(endpointId, e);
    else this.inflight.delete(endpointId);
    if (p > 0) this.perPlacement.set(placementId, p);
    else this.perPlacement.delete(placementId);
  }

  /** A lease taken: counted in flight, for its replica and in the endpoint's peak. */
  private hold(leaseId: string, lease: Lease): void {
    this.leases.set(leaseId, lease);
    this.add(lease.endpoint_id, lease.placement_id, 1);
    const inflight = this.inflight.get(lease.endpoint_id) ?? 0;
    this.peak.set(lease.endpoint_id, Math.max(this.peak.get(lease.endpoint_id) ?? 0, inflight));
  }

  private release(leaseId: string, lease: Lease): void {
    this.leases.delete(leaseId);
    this.add(lease.endpoint_id, lease.placement_id, -1);
  }

  /** Replicas that can take a request now. */
  private ready(endpointId: string): Candidate[] {
    return this.db.all<Candidate>(
      `select r.id as placement_id, j.id as replica_id, r.node_id, n.ingress_url
         from jobs j
         join runs r on r.job_id = j.id and r.attempt = j.attempt
         join nodes n on n.id = r.node_id
        where j.endpoint_id = ? and j.status = 'running' and r.status = 'running' and r.desired = 'running'
          and r.ready = 1 and n.state != 'lost' and n.ingress_url is not null`,
      endpointId,
    );
  }

  /** What the replicas are doing instead of taking requests, for the error a caller gets. */
  private whyNoneReady(endpointId: string, exclude: readonly string[]): string {
    const replicas = this.region.endpoints.replicas(endpointId).filter((r) => r.status !== "cancelled");
    if (replicas.length === 0) return "no replicas (max_replicas is 0)";
    return replicas
      .map((job) => {
        const run = this.region.runsOf(job).find((r) => r.status === "running" || r.status === "pulling") ?? null;
        const node = run ? this.region.node(run.node_id) : undefined;
        let what: string;
        const waiting = this.region.waiting.get(job.id)?.reason;
        if (job.status === "queued") {
          what = `queued${waiting ? ` (${waiting})` : ""}`;
        } else if (run?.status !== "running") {
          what = run?.status === "pulling" ? "pulling its image" : "starting";
        } else if (run.ready !== 1) {
          what = run.ready === 0 ? "running, failing its health check" : "running, health check not passed yet";
        } else if (!node?.ingress_url) {
          what = "ready, but its node has no ingress";
        } else if (exclude.includes(run.id)) {
          what = "ready, but did not answer this request";
        } else {
          what = "ready";
        }
        return `replica ${replicaIndex(job.id)}: ${what}`;
      })
      .join("; ");
  }
}

function targetConcurrency(spec: EndpointSpec): number {
  return spec.target_concurrency ?? DEFAULT_TARGET_CONCURRENCY;
}
