/**
 * Reservations: GPUs the capacity manager holds back (warm Fast headroom, a node about to drain).
 * A reservation names specific GPUs; those held for a tier are still usable by that tier's jobs,
 * and a job that takes one takes it out of the reservation. Releasing is safe twice.
 */
import type { ObjectSql } from "../sqlite";
import { toHolds } from "./packer-input";
import type { Records } from "./records";
import type { Region } from "./region";
import { cordoned, type JobRow, json, type ReservationRow } from "./rows";
import type { ReservationRequest, ReserveResult } from "./rpc";

export class Reservations {
  constructor(
    private readonly db: ObjectSql,
    private readonly records: Records,
    private readonly state: Region,
    private readonly region: () => string,
  ) {}

  all(): ReservationRow[] {
    return this.db.all<ReservationRow>("select * from reservations order by id");
  }

  reserve(req: ReservationRequest, now: number): ReserveResult {
    const existing = this.db.one<ReservationRow>("select * from reservations where id = ?", req.reservation_id);
    if (existing) {
      const nodeIds = (JSON.parse(existing.gpus) as { node_id: string }[]).map((h) => h.node_id);
      return { ok: true, reservation_id: existing.id, node_ids: nodeIds };
    }
    if (!Number.isInteger(req.gpu_count) || req.gpu_count < 1) {
      return { ok: false, code: "insufficient_capacity", message: "gpu_count must be a positive integer" };
    }
    const free = this.freeGpus(req.gpu_model);
    // Whole free nodes first, then the nodes with the most free GPUs: headroom in big groups.
    free.sort((a, b) => b.free.length - a.free.length || (a.node_id < b.node_id ? -1 : 1));
    const taken: { node_id: string; gpu_indices: number[] }[] = [];
    let need = req.gpu_count;
    for (const f of free) {
      if (need === 0) break;
      const take = f.free.slice(0, need);
      taken.push({ node_id: f.node_id, gpu_indices: take });
      need -= take.length;
    }
    if (need > 0) {
      const have = req.gpu_count - need;
      return {
        ok: false,
        code: "insufficient_capacity",
        message: `${have} of ${req.gpu_count} ${req.gpu_model} GPUs free and unreserved in ${this.region()}`,
      };
    }
    this.db.run(
      "insert into reservations (id, gpu_model, tier, reason, expires_at, created_at, gpus) values (?, ?, ?, ?, ?, ?, ?)",
      req.reservation_id,
      req.gpu_model,
      req.tier,
      req.reason,
      req.expires_at,
      now,
      JSON.stringify(taken),
    );
    if (req.expires_at !== null) this.state.setTimer("reservation", req.reservation_id, req.expires_at);
    this.records.audit(
      `reservation:${req.reservation_id}`,
      null,
      "reservation.created",
      { type: "reservation", id: req.reservation_id },
      { gpu_model: req.gpu_model, gpu_count: req.gpu_count, tier: req.tier, reason: req.reason },
      `reservation.created:${req.reservation_id}`,
      now,
    );
    return { ok: true, reservation_id: req.reservation_id, node_ids: taken.map((t) => t.node_id) };
  }

  release(reservationId: string, now: number): { released: boolean } {
    const n = this.db.run("delete from reservations where id = ?", reservationId);
    this.state.clearTimer("reservation", reservationId);
    if (n > 0) {
      this.records.audit(
        `reservation:${reservationId}`,
        null,
        "reservation.released",
        { type: "reservation", id: reservationId },
        {},
        `reservation.released:${reservationId}`,
        now,
      );
    }
    return { released: n > 0 };
  }

  /** Per ready node of a model: healthy GPUs neither running work nor held. */
  private freeGpus(model: string): { node_id: string; free: number[] }[] {
    const held = new Set<string>();
    for (const r of this.all()) {
      for (const h of toHolds(r)) for (const g of h.gpu_indices) held.add(`${h.node_id}/${g}`);
    }
    const busy = new Set<string>();
    for (const run of this.state.activeRuns())
      for (const g of json.numbers(run.gpu_indices)) busy.add(`${run.node_id}/${g}`);
    return this.state
      .nodes()
      .filter((n) => n.state === "ready" && !cordoned(n) && n.gpu_model === model)
      .map((n) => {
        const unhealthy = json.numbers(n.unhealthy_gpus);
        const free = json
          .numbers(n.gpus)
          .filter((g) => !unhealthy.includes(g) && !busy.has(`${n.id}/${g}`) && !held.has(`${n.id}/${g}`));
        return { node_id: n.id, free };
      })
      .filter((f) => f.free.length > 0);
  }

  /** GPUs a reservation held for this job's tier now belong to the job: the reservation shrinks. */
  consumeHeld(reservations: ReservationRow[], job: JobRow, nodeId: string, gpus: number[]): void {
    for (const r of reservations) {
      if (r.tier !== job.tier) continue;
      const held = JSON.parse(r.gpus) as { node_id: string; gpu_indices: number[] }[];
      let changed = false;
      for (const h of held) {
        if (h.node_id !== nodeId) continue;
        const left = h.gpu_indices.filter((g) => !gpus.includes(g));
        if (left.length !== h.gpu_indices.length) {
          h.gpu_indices = left;
          changed = true;
        }
      }
      if (changed) {
        r.gpus = JSON.stringify(held.filter((h) => h.gpu_indices.length > 0));
        this.db.run("update reservations set gpus = ? where id = ?", r.gpus, r.id);
      }
    }
  }
}
