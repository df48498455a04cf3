/** Read-only answers built from the rows: job state, nodes, the capacity snapshot, dead letters, endpoints. */

import { estimateMs } from "../../core/scheduler";
import { type EngineStuck, TERMINAL_JOB_STATUSES, TIERS } from "../../core/schemas";
import type { ObjectSql } from "../sqlite";
import type { Region } from "./region";
import {
  isActiveRun,
  type JobRow,
  json,
  liveState,
  type NodeRow,
  type ReservationRow,
  type RunRow,
  waitingSince,
} from "./rows";
import type {
  CapacitySnapshot,
  DeadLetter,
  EndpointState,
  JobState,
  NodeCordon,
  NodeView,
  PlacementView,
  RunMetrics,
  TierQueue,
} from "./rpc";

export function placementView(run: RunRow, zone: string, metrics: RunMetrics | null): PlacementView {
  return {
    placement_id: run.id,
    node_id: run.node_id,
    zone,
    gpu_indices: json.numbers(run.gpu_indices),
    attempt: run.attempt,
    gang_index: run.gang_index,
    status: run.status,
    placed_at: run.placed_at,
    started_at: run.started_at,
    finished_at: run.finished_at,
    exit_code: run.exit_code,
    kill_deadline: run.kill_deadline,
    metrics,
  };
}

export class Views {
  constructor(
    private readonly db: ObjectSql,
    private readonly region: Region,
  ) {}

  private zoneOf(nodeId: string): string {
    return this.region.node(nodeId)?.zone ?? "unknown";
  }

  private placement(run: RunRow): PlacementView {
    return placementView(run, this.zoneOf(run.node_id), this.region.metrics.get(run.id) ?? null);
  }

  private waitingReason(job: JobRow): string | null {
    if (job.status !== "queued") return null;
    return this.region.waiting.get(job.id)?.reason ?? job.waiting_reason;
  }

  jobState(jobId: string): JobState | null {
    const job = this.region.job(jobId);
    if (!job) return null;
    return {
      id: job.id,
      status: job.status,
      attempt: job.attempt,
      max_attempts: job.max_attempts,
      waiting_reason: this.waitingReason(job),
      next_attempt_at: job.status === "queued" ? job.next_attempt_at : null,
      placements: this.region.runsOf(job).map((r) => this.placement(r)),
      exit_code: job.exit_code,
      failure_reason: job.failure_reason,
      dead_lettered: job.dead_lettered_at !== null,
    };
  }

  nodes(): NodeView[] {
    const held = this.heldByNode();
    const runs = this.region.activeRuns();
    return this.region.nodes().map((n) =>
      nodeView(
        n,
        runs.filter((r) => r.node_id === n.id),
        held.get(n.id) ?? [],
        this.region.liveness.get(n.id),
      ),
    );
  }

  private heldByNode(): Map<string, { gpus: number[]; tier: string | null }[]> {
    const out = new Map<string, { gpus: number[]; tier: string | null }[]>();
    for (const r of this.db.all<ReservationRow>("select * from reservations")) {
      for (const h of JSON.parse(r.gpus) as { node_id: string; gpu_indices: number[] }[]) {
        const list = out.get(h.node_id) ?? [];
        list.push({ gpus: h.gpu_indices, tier: r.tier });
        out.set(h.node_id, list);
      }
    }
    return out;
  }

  capacity(regionName: string, now: number): CapacitySnapshot {
    const nodes = this.nodes();
    const models = [...new Set(nodes.map((n) => n.gpu_model))].sort();
    const held = this.heldByNode();
    const by_model = models.map((gpu_model) => {
      const of = nodes.filter((n) => n.gpu_model === gpu_model && n.state !== "lost");
      const total = of.reduce((s, n) => s + n.gpu_indices.length - n.unhealthy_gpus.length, 0);
      const free = of.filter((n) => n.state === "ready").reduce((s, n) => s + n.free_gpus.length, 0);
      const reserved = of.reduce((s, n) => s + (held.get(n.node_id) ?? []).reduce((t, h) => t + h.gpus.length, 0), 0);
      const busy =
        of.reduce((s, n) => s + n.gpu_indices.length - n.unhealthy_gpus.length - n.free_gpus.length, 0) - reserved;
      return {
        gpu_model,
        total_gpus: total,
        free_gpus: free,
        busy_gpus: busy,
        reserved_gpus: reserved,
        nodes_ready: of.filter((n) => n.state === "ready").length,
        nodes_cordoned: of.filter((n) => n.state === "cordoned").length,
        nodes_draining: of.filter((n) => n.state === "draining").length,
      } as CapacitySnapshot["by_model"][number];
    });
    const queued = this.db.all<JobRow>("select * from jobs where status = 'queued' order by submitted_at, id");
    const stopping = this.region.stillStopping();
    const queues: TierQueue[] = TIERS.map((tier) => {
      const of = queued.filter((j) => j.tier === tier);
      return {
        tier,
        queued_jobs: of.length,
        queued_gpus: of.reduce((s, j) => s + j.gpu_count, 0),
        oldest_wait_ms: of.reduce((m, j) => Math.max(m, now - waitingSince(j)), 0),
        // Jobs backing off before a retry, or waiting for an earlier attempt's runs to stop, are not
        // waiting for capacity: the autoscaler must not buy for them.
        waiting: of
          .filter((j) => (j.next_attempt_at === null || j.next_attempt_at <= now) && !stopping.has(j.id))
          .map((j) => ({
            job_id: j.id,
            gpu_count: j.gpu_count,
            gpu_models: json.strings(j.gpu_models) as TierQueue["waiting"][number]["gpu_models"],
            waited_ms: Math.max(0, now - waitingSince(j)),
            estimate_ms: estimateMs(j),
          })),
      };
    });
    const nodeModel = new Map(nodes.map((n) => [n.node_id, n.gpu_model]));
    const running = this.region.activeRuns().map((r) => {
      const job = this.region.job(r.job_id)!;
      const estimate = estimateMs(job);
      return {
        job_id: r.job_id,
        tier: job.tier,
        gpu_count: json.numbers(r.gpu_indices).length,
        gpu_model: nodeModel.get(r.node_id) ?? "H100",
        node_id: r.node_id,
        expected_end_at: estimate != null ? (r.started_at ?? r.placed_at) + estimate : r.kill_deadline,
      } as CapacitySnapshot["running"][number];
    });
    return { region: regionName, at: now, by_model, queues, running, nodes };
  }

  deadLetters(): DeadLetter[] {
    return this.db
      .all<JobRow>("select * from jobs where dead_lettered_at is not null order by dead_lettered_at, id")
      .map((j) => ({
        job_id: j.id,
        account_id: j.account_id,
        attempts: j.attempt - j.attempt_base,
        dead_lettered_at: j.dead_lettered_at!,
        reasons: json.strings(j.reasons),
      }));
  }

  endpointState(endpointId: string): EndpointState | null {
    const spec = this.region.endpoints.endpoint(endpointId);
    if (!spec) return null;
    const replicas = this.region.endpoints
      .replicas(endpointId)
      .filter((r) => !TERMINAL_JOB_STATUSES.includes(r.status));
    return {
      id: endpointId,
      version: this.region.endpoints.versionOf(endpointId),
      desired_replicas: this.region.endpoints.desiredOf(endpointId),
      replicas: replicas.map((r) => {
        const run = this.region.runsOf(r).find(isActiveRun) ?? null;
        return {
          replica_id: r.id,
          status: r.status,
          starts: r.attempt,
          last_exit: r.failure_reason,
          placement: run ? this.placement(run) : null,
          waiting_reason: this.waitingReason(r),
          // Ready only while running and answering its check; null until the agent has said.
          ready: run?.status !== "running" ? false : run.ready === null ? null : run.ready === 1,
        };
      }),
    };
  }
}

function nodeView(
  n: NodeRow,
  runs: RunRow[],
  held: { gpus: number[]; tier: string | null }[],
  lastSeen: number | undefined,
): NodeView {
  const gpus = json.numbers(n.gpus);
  const unhealthy = json.numbers(n.unhealthy_gpus);
  const busy = new Set(runs.flatMap((r) => json.numbers(r.gpu_indices)));
  const reserved = new Set(held.flatMap((h) => h.gpus));
  return {
    node_id: n.id,
    zone: n.zone,
    gpu_model: n.gpu_model as NodeView["gpu_model"],
    gpu_indices: gpus,
    unhealthy_gpus: unhealthy,
    free_gpus: gpus.filter((g) => !unhealthy.includes(g) && !busy.has(g) && !reserved.has(g)),
    held_gpus: gpus.filter((g) => !unhealthy.includes(g) && !busy.has(g) && reserved.has(g)),
    cpu_milli: n.cpu_milli,
    cpu_free_milli: n.cpu_milli - runs.reduce((s, r) => s + r.cpu_milli, 0),
    memory_mib: n.memory_mib,
    memory_free_mib: n.memory_mib - runs.reduce((s, r) => s + r.memory_mib, 0),
    state: liveState(n),
    engine_stuck: n.engine_stuck === null ? null : (JSON.parse(n.engine_stuck) as EngineStuck),
    cordon: n.cordon === null ? null : (JSON.parse(n.cordon) as NodeCordon),
    block_id: n.block_id,
    block_end_at: n.block_end_at,
    last_heartbeat_at: Math.max(lastSeen ?? 0, n.last_heartbeat_at ?? 0) || null,
    placements: runs.map((r) => r.id).sort(),
  };
}
