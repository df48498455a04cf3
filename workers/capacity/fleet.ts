/**
 * The region's fleet as the policy sees it, put together from three sources each right about one
 * thing: our rows (which nodes and blocks are Scalar's capacity), SF Compute (when each node's time
 * ends, whether it was bought), and the region's scheduler (what runs where, what is free, what
 * waits). Nodes of the capacity manager have ids starting `cap-`; operator-made nodes are not ours
 * to buy, extend or sell.
 */
import { and, eq, gt, inArray, like, ne, sql } from "drizzle-orm";
import type { FleetNode, InflightOrder, QueuedJob, RunningWork } from "../../core/autoscaler";
import type { GpuModel } from "../../core/schemas";
import type { CapacitySnapshot } from "../../durable-objects/region-scheduler/rpc";
import type { Db } from "../db/client";
import { blocks, jobRuns, jobs, marketOrders, nodes } from "../db/schema";
import type { Node as SfNode } from "../sfcompute/schemas";
import { policyFreeGpus } from "./free-gpus";
import { nodeSaleGroup } from "./market";

export const CAPACITY_NODE_PREFIX = "cap-";
export const OPEN_STATUSES = ["placing", "pending", "open"] as const;

export type NodeRow = typeof nodes.$inferSelect;
export type BlockRow = typeof blocks.$inferSelect;
export type OrderRow = typeof marketOrders.$inferSelect;

export interface Fleet {
  rows: NodeRow[];
  blocks: Map<string, BlockRow>;
  /** SF Compute's nodes, by name (our node id). */
  market: Map<string, SfNode>;
  policyNodes: FleetNode[];
  queue: QueuedJob[];
  inflight: InflightOrder[];
  openOrders: OrderRow[];
}

export async function ourNodes(db: Db, region: string): Promise<NodeRow[]> {
  return db
    .select()
    .from(nodes)
    .where(and(eq(nodes.region, region), ne(nodes.state, "released"), like(nodes.id, `${CAPACITY_NODE_PREFIX}%`)));
}

export async function openCapacityOrders(db: Db, region: string): Promise<OrderRow[]> {
  return db
    .select()
    .from(marketOrders)
    .where(
      and(
        eq(marketOrders.region, region),
        like(marketOrders.purpose, "capacity:%"),
        inArray(marketOrders.status, [...OPEN_STATUSES]),
      ),
    );
}

/** The node an order acts on: order keys are `<node id>|<what>|<when>`. */
export function nodeOfOrder(order: Pick<OrderRow, "idempotencyKey">): string {
  return order.idempotencyKey.split("|")[0] ?? "";
}

export async function loadFleet(
  db: Db,
  region: string,
  gpuModel: GpuModel,
  market: SfNode[],
  snapshot: CapacitySnapshot,
  now: number,
): Promise<Fleet> {
  const rows = await ourNodes(db, region);
  const blockIds = [...new Set(rows.map((n) => n.blockId).filter((b): b is string => b !== null))];
  const blockRows = blockIds.length > 0 ? await db.select().from(blocks).where(inArray(blocks.id, blockIds)) : [];
  const byBlock = new Map(blockRows.map((b) => [b.id, b]));
  const byName = new Map(market.map((n) => [n.name, n]));
  const views = new Map(snapshot.nodes.map((v) => [v.node_id, v]));
  const started = await runStarts(
    db,
    snapshot.running.map((r) => r.job_id),
  );

  const policyNodes: FleetNode[] = [];
  for (const row of rows) {
    const sf = byName.get(row.id);
    const block = row.blockId ? byBlock.get(row.blockId) : undefined;
    const view = views.get(row.id);
    const endAt = sf?.end_at != null ? sf.end_at * 1000 : (block?.endAt.getTime() ?? now);
    const work: RunningWork[] = snapshot.running
      .filter((r) => r.node_id === row.id)
      .map((r) => {
        const s = started.get(r.job_id);
        const startedAt = s?.startedAt ?? null;
        return {
          tier: r.tier,
          gpus: r.gpu_count,
          startedAt,
          expectedEndAt: s?.estimateMs != null && startedAt !== null ? startedAt + s.estimateMs : null,
        };
      });
    const registered = view && view.state !== "lost";
    const busy = work.reduce((a, w) => a + w.gpus, 0);
    policyNodes.push({
      id: row.id,
      blockId: row.blockId ?? "",
      gpuModel: row.gpuModel as GpuModel,
      zone: sf?.zone ?? row.zone,
      gpus: row.gpuCount,
      freeGpus: registered ? policyFreeGpus(view, busy) : row.gpuCount,
      // Drained by us (e.g. written off before it ever registered) or by the region: draining.
      state:
        row.state === "draining"
          ? "draining"
          : !registered
            ? "booting"
            : view.state === "draining"
              ? "draining"
              : "ready",
      endAt,
      work,
      // Only a hung engine's cordon is timed (and drained when long): an operator's is theirs to lift.
      ...(registered && view.state === "cordoned"
        ? { cordoned: true, ...(view.engine_stuck ? { cordonedSince: view.engine_stuck.since } : {}) }
        : {}),
      ...(registered ? {} : { bootingSince: Math.max(bootableSince(block, sf, now), view?.last_heartbeat_at ?? 0) }),
      ...(sf ? { sellGroup: nodeSaleGroup(sf) } : {}),
    });
  }

  const queue: QueuedJob[] = snapshot.queues.flatMap((q) =>
    q.waiting.map((w) => ({
      id: w.job_id,
      tier: q.tier,
      gpus: w.gpu_count,
      gpuModels: w.gpu_models,
      waitedMs: w.waited_ms,
      estimateMs: w.estimate_ms ?? null,
    })),
  );
  const openOrders = await openCapacityOrders(db, region);
  const inflight: InflightOrder[] = openOrders
    .filter((o) => o.purpose === "capacity:extend" || o.purpose === "capacity:sell_back")
    .map((o) => ({
      kind: o.purpose === "capacity:extend" ? "extend" : "sell_back",
      gpuModel,
      nodes: o.quantity,
      startAt: o.startAt.getTime(),
      endAt: o.endAt.getTime(),
      nodeIds: [nodeOfOrder(o)],
    }));
  return {
    rows,
    blocks: byBlock,
    market: byName,
    policyNodes: policyNodes.filter((n) => n.gpuModel === gpuModel),
    queue,
    inflight,
    openOrders,
  };
}

/** When each running job started and its estimated duration, from Postgres (the scheduler's outbox writes them). */
async function runStarts(
  db: Db,
  jobIds: string[],
): Promise<Map<string, { startedAt: number | null; estimateMs: number | null }>> {
  const out = new Map<string, { startedAt: number | null; estimateMs: number | null }>();
  const ids = [...new Set(jobIds)].filter((id) => /^[0-9a-f-]{36}$/i.test(id));
  if (ids.length === 0) return out;
  const rows = await db
    .select({
      jobId: jobRuns.jobId,
      startedAt: jobRuns.startedAt,
      placedAt: jobRuns.placedAt,
      estimatedDurationS: jobs.estimatedDurationS,
    })
    .from(jobRuns)
    .innerJoin(jobs, eq(jobs.id, jobRuns.jobId))
    .where(and(inArray(jobRuns.jobId, ids), inArray(jobRuns.status, ["placed", "pulling", "running"])));
  for (const r of rows) {
    out.set(r.jobId, {
      startedAt: (r.startedAt ?? r.placedAt).getTime(),
      estimateMs: r.estimatedDurationS != null ? r.estimatedDurationS * 1000 : null,
    });
  }
  return out;
}

/**
 * When an unregistered node could have booted: its block started and the market's node started
 * (both on the market's clock, as the policy's `now`); without either, now.
 */
function bootableSince(block: BlockRow | undefined, sf: SfNode | undefined, now: number): number {
  const since = Math.max(block?.startAt.getTime() ?? 0, (sf?.start_at ?? 0) * 1000);
  return since > 0 ? since : now;
}

/** Fast and Flex submissions of the last `lookbackMs`, for the demand estimate. */
export async function recentArrivals(db: Db, region: string, now: number, lookbackMs: number) {
  // A job that has ended: how long its GPUs were taken, from each placement to its end, summed over
  // its attempts (0 when it never ran). core/autoscaler/demand.ts `occupancy` weighs it by that.
  // (Columns written out: drizzle leaves a select's columns unqualified, and inside the subquery
  // a bare "id" would be the run's.)
  const held = sql<number | null>`case when "jobs"."finished_at" <= ${new Date(now).toISOString()}::timestamptz then (
      select coalesce(sum(extract(epoch from (r.finished_at - r.placed_at))), 0) * 1000
        from ${jobRuns} r where r.job_id = "jobs"."id" and r.finished_at is not null
    )::float8 end`;
  const rows = await db
    .select({ at: jobs.createdAt, tier: jobs.tier, gpus: jobs.gpuCount, heldMs: held })
    .from(jobs)
    .where(and(eq(jobs.region, region), gt(jobs.createdAt, new Date(now - lookbackMs))));
  return rows.map((r) => ({
    at: r.at.getTime(),
    tier: r.tier as "fast" | "flex",
    gpus: r.gpus,
    ...(r.heldMs !== null ? { heldMs: Math.max(0, Number(r.heldMs)) } : {}),
  }));
}
