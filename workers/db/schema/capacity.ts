/**
 * The capacity manager's own record. `capacity_samples` is the region's concurrent demand once a
 * minute (what the autoscaler's demand estimate and, later, a forecaster read). Blocks, nodes,
 * market orders and audit rows live in the shared tables (core.ts, market.ts).
 */
import { sql } from "drizzle-orm";
import { check, integer, pgTable, primaryKey, text, timestamp } from "drizzle-orm/pg-core";

export const capacitySamples = pgTable(
  "capacity_samples",
  {
    region: text("region").notNull(),
    at: timestamp("at", { withTimezone: true, mode: "date" }).notNull(),
    /** GPUs running plus GPUs waiting. */
    demandGpus: integer("demand_gpus").notNull(),
    busyGpus: integer("busy_gpus").notNull(),
    queuedFastGpus: integer("queued_fast_gpus").notNull(),
    queuedFlexGpus: integer("queued_flex_gpus").notNull(),
    /** GPUs of ready nodes, and of those the free ones. */
    totalGpus: integer("total_gpus").notNull(),
    freeGpus: integer("free_gpus").notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.region, t.at] }),
    check(
      "capacity_samples_counts",
      sql`${t.demandGpus} >= 0 and ${t.busyGpus} >= 0 and ${t.queuedFastGpus} >= 0 and ${t.queuedFlexGpus} >= 0 and ${t.totalGpus} >= 0 and ${t.freeGpus} >= 0`,
    ),
  ],
).enableRLS();
