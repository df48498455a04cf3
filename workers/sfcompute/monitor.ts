/**
 * Market monitoring, run every minute by cron:
 *
 * 1. Follows open orders in `market_orders` at SF Compute to their final status; a fill records
 *    `filled_at` (SF Compute's `executed_at`), so `fill_latency_ms` (placed → filled) is known, and
 *    emits it as a metric.
 * 2. Emits the time to expiry of every active block (`block_expiry_at`, from `blocks`) as a metric.
 * 3. Warns, once per block end, when a block with running work ends within the warning window and
 *    no later block carries on past its end: a `block.expiring_unextended` row in `audit_log`
 *    (deduplicated) and a warn log line.
 *
 * Metrics are structured log lines `{"event":"metric","metric":…,"value":…}` (Workers Logs).
 */

import { and, asc, sql as dsql, eq, inArray, isNotNull } from "drizzle-orm";
import { type CapacityKnobs, capacityClock } from "../capacity/config";
import { auditLog, marketOrders } from "../db/schema";
import type { Logger } from "../http/log";
import type { SfComputeClient } from "./client";
import type { MarketDb } from "./db";
import { isSfComputeError } from "./errors";
import { FINAL_ORDER_STATUSES } from "./schemas";

export const DEFAULT_EXPIRY_WARNING_MINUTES = 30;

export interface MarketMonitorOptions {
  now: Date;
  /** Warn about blocks with running work that end within this much time. */
  warningWindowMs: number;
  /** Null when no SF Compute token is configured: orders are then not followed. */
  client: SfComputeClient | null;
  log: Logger;
  /** Orders followed per run (the least recently checked first). */
  maxOrders?: number;
  /** A 404 this soon after placing is SF Compute's eventual consistency, not a lost order. */
  notFoundGraceMs?: number;
}

export interface BlockExpiry {
  block_id: string;
  region: string;
  zone: string;
  instance_type: string;
  node_count: number;
  end_at: Date;
  seconds_to_expiry: number;
  running_runs: number;
  extended: boolean;
}

export interface MarketMonitorReport {
  ordersChecked: number;
  fills: { id: string; sfOrderId: string; fillLatencyMs: number | null }[];
  blocks: BlockExpiry[];
  /** Warnings raised by this run (not those already raised for the same block end). */
  warnings: BlockExpiry[];
}

/**
 * The monitor's present is the capacity cycle's (`CAPACITY_CLOCK`, workers/capacity/config.ts): the
 * wall clock, or the cron trigger's `scheduledTime` where the local stack fires the crons on the
 * simulated market's time, so a block's time to expiry is counted on the clock its end was set by.
 */
export function monitorPresent(env: Pick<CapacityKnobs, "CAPACITY_CLOCK">, scheduledTime?: number): Date {
  return new Date(capacityClock(env, scheduledTime)());
}

export function metric(log: Logger, name: string, value: number, tags: Record<string, unknown> = {}): void {
  log.info("metric", { metric: name, value, ...tags });
}

export async function runMarketMonitor(db: MarketDb, opts: MarketMonitorOptions): Promise<MarketMonitorReport> {
  const report: MarketMonitorReport = { ordersChecked: 0, fills: [], blocks: [], warnings: [] };
  if (opts.client) await followOrders(db, opts.client, opts, report);

  const rows = await db.execute<Record<string, unknown>>(
    dsql`select block_id, region, zone, instance_type, node_count, end_at, seconds_to_expiry, running_runs, extended
           from public.block_expiry_at(${opts.now.toISOString()}::timestamptz) order by end_at`,
  );
  for (const r of rows) {
    const block: BlockExpiry = {
      block_id: String(r.block_id),
      region: String(r.region),
      zone: String(r.zone),
      instance_type: String(r.instance_type),
      node_count: Number(r.node_count),
      end_at: new Date(r.end_at as string | Date),
      // bigint arrives as a string from postgres.js
      seconds_to_expiry: Number(r.seconds_to_expiry),
      running_runs: Number(r.running_runs),
      extended: r.extended === true,
    };
    report.blocks.push(block);
    metric(opts.log, "sfcompute.block_seconds_to_expiry", block.seconds_to_expiry, {
      block_id: block.block_id,
      region: block.region,
      zone: block.zone,
      running_runs: block.running_runs,
      extended: block.extended,
    });
    const inWindow = block.seconds_to_expiry * 1000 <= opts.warningWindowMs;
    if (!inWindow || block.running_runs === 0 || block.extended) continue;
    const raised = await db
      .insert(auditLog)
      .values({
        actorType: "system",
        actorId: "sfcompute.market-monitor",
        action: "block.expiring_unextended",
        targetType: "block",
        targetId: block.block_id,
        data: {
          region: block.region,
          zone: block.zone,
          end_at: block.end_at.toISOString(),
          seconds_to_expiry: block.seconds_to_expiry,
          running_runs: block.running_runs,
        },
        dedupeKey: `block.expiring_unextended:${block.block_id}:${block.end_at.getTime()}`,
      })
      .onConflictDoNothing({ target: auditLog.dedupeKey })
      .returning({ id: auditLog.id });
    if (raised.length === 0) continue; // already warned about this end
    report.warnings.push(block);
    opts.log.warn("sfcompute.block_expiring_unextended", {
      block_id: block.block_id,
      region: block.region,
      zone: block.zone,
      end_at: block.end_at.toISOString(),
      seconds_to_expiry: block.seconds_to_expiry,
      running_runs: block.running_runs,
    });
  }
  return report;
}

async function followOrders(
  db: MarketDb,
  client: SfComputeClient,
  opts: MarketMonitorOptions,
  report: MarketMonitorReport,
): Promise<void> {
  const open = await db
    .select()
    .from(marketOrders)
    .where(and(inArray(marketOrders.status, ["pending", "open"]), isNotNull(marketOrders.sfOrderId)))
    .orderBy(asc(dsql`coalesce(${marketOrders.lastCheckedAt}, 'epoch'::timestamptz)`))
    .limit(opts.maxOrders ?? 50);
  metric(opts.log, "sfcompute.open_orders", open.length);
  for (const row of open) {
    report.ordersChecked++;
    try {
      const order = await client.getOrder(row.sfOrderId!);
      const [updated] = await db
        .update(marketOrders)
        .set({
          status: order.status,
          filledAt: order.executed_at ? new Date(order.executed_at) : null,
          executionPriceCents: order.execution_price ?? null,
          cancelledAt: order.cancelled_at ? new Date(order.cancelled_at) : null,
          rejectedReason: order.rejected_reason ?? null,
          zone: order.cluster ?? row.zone,
          lastCheckedAt: opts.now,
          lastError: null,
        })
        .where(eq(marketOrders.id, row.id))
        .returning({ fillLatencyMs: marketOrders.fillLatencyMs });
      if (order.status === "filled") {
        const fillLatencyMs = updated?.fillLatencyMs ?? null;
        report.fills.push({ id: row.id, sfOrderId: row.sfOrderId!, fillLatencyMs });
        if (fillLatencyMs !== null) {
          metric(opts.log, "sfcompute.order_fill_latency_ms", fillLatencyMs, {
            order_id: row.sfOrderId,
            region: row.region,
            instance_type: row.instanceType,
            side: row.side,
          });
        }
      } else if (FINAL_ORDER_STATUSES.has(order.status)) {
        opts.log.info("sfcompute.order_closed", { order_id: row.sfOrderId, status: order.status });
      }
    } catch (error) {
      const young = opts.now.getTime() - row.placedAt.getTime() < (opts.notFoundGraceMs ?? 60_000);
      if (isSfComputeError(error) && error.status === 404 && young) continue;
      await db
        .update(marketOrders)
        .set({ lastCheckedAt: opts.now, lastError: String(error instanceof Error ? error.message : error) })
        .where(eq(marketOrders.id, row.id));
      opts.log.warn("sfcompute.order_follow_failed", { order_id: row.sfOrderId, error: String(error) });
    }
  }
}
