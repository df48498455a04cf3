/**
 * The SF Compute market as Scalar sees it. `market_orders` journals every order we send: the row is
 * written with its Idempotency-Key before the POST (so a crash between the two can be retried with
 * the same key), then follows the order to its final status. Fill latency (placed → filled) is a
 * generated column. Time to expiry of the active blocks is the `block_expiry` view (hand-written
 * migration), read from `blocks`.
 */
import { sql } from "drizzle-orm";
import { bigint, check, index, integer, pgTable, text, timestamp, uniqueIndex, uuid } from "drizzle-orm/pg-core";
import { ORDER_STATUSES } from "../../sfcompute/schemas";
import { blocks, inList } from "./core";

const tz = (name: string) => timestamp(name, { withTimezone: true, mode: "date" });
const cents = (name: string) => bigint(name, { mode: "number" });

export const MARKET_ORDER_SIDES = ["buy", "sell"] as const;
/** `placing` until SF Compute has acknowledged it, `failed` if it refused; otherwise SF Compute's statuses (§6.1). */
export const MARKET_ORDER_STATUSES = ["placing", ...ORDER_STATUSES, "failed"] as const;
export const OPEN_MARKET_ORDER_STATUSES = ["placing", "pending", "open"] as const;

export const marketOrders = pgTable(
  "market_orders",
  {
    id: uuid("id").primaryKey().defaultRandom(),
    /** Sent as the Idempotency-Key header: a retry after any failure reuses it. */
    idempotencyKey: text("idempotency_key").notNull(),
    /** SF Compute's `ordr_…`, once acknowledged. */
    sfOrderId: text("sf_order_id"),
    region: text("region").notNull(),
    side: text("side").notNull(),
    instanceType: text("instance_type").notNull(),
    /** The zone asked for (`cluster`), or the one it filled in. */
    zone: text("zone"),
    /** Nodes of 8 GPUs. */
    quantity: integer("quantity").notNull(),
    startAt: tz("start_at").notNull(),
    endAt: tz("end_at").notNull(),
    /** The limit, cents for the whole block (SF Compute's v0 `price`). */
    limitPriceCents: cents("limit_price_cents").notNull(),
    status: text("status").notNull().default("placing"),
    /** What it filled at, cents for the whole block. */
    executionPriceCents: cents("execution_price_cents"),
    /** Why it is here: e.g. capacity, extension, resale. */
    purpose: text("purpose"),
    /** The block it bought (or sold from). */
    blockId: uuid("block_id").references(() => blocks.id, { onDelete: "set null" }),
    contractId: text("contract_id"),
    /** When we sent it. */
    placedAt: tz("placed_at").notNull().defaultNow(),
    /** SF Compute's `executed_at`. */
    filledAt: tz("filled_at"),
    cancelledAt: tz("cancelled_at"),
    /** Placed → filled, ms. */
    fillLatencyMs: bigint("fill_latency_ms", { mode: "number" }).generatedAlwaysAs(
      sql`(extract(epoch from (filled_at - placed_at)) * 1000)::bigint`,
    ),
    rejectedReason: text("rejected_reason"),
    /** The last error met placing or following it. */
    lastError: text("last_error"),
    lastCheckedAt: tz("last_checked_at"),
    createdAt: tz("created_at").notNull().defaultNow(),
    updatedAt: tz("updated_at").notNull().defaultNow(),
  },
  (t) => [
    uniqueIndex("market_orders_idempotency_key").on(t.idempotencyKey),
    uniqueIndex("market_orders_sf_order_key").on(t.sfOrderId),
    index("market_orders_open_idx")
      .on(t.status, t.placedAt)
      .where(sql`${t.status} in (${inList(OPEN_MARKET_ORDER_STATUSES)})`),
    index("market_orders_region_placed_idx").on(t.region, t.placedAt.desc()),
    check("market_orders_side", sql`${t.side} in (${inList(MARKET_ORDER_SIDES)})`),
    check("market_orders_status", sql`${t.status} in (${inList(MARKET_ORDER_STATUSES)})`),
    check("market_orders_quantity", sql`${t.quantity} between 1 and 1024`),
    check(
      "market_orders_prices",
      sql`${t.limitPriceCents} >= 0 and (${t.executionPriceCents} is null or ${t.executionPriceCents} >= 0)`,
    ),
    check("market_orders_window", sql`${t.endAt} > ${t.startAt}`),
  ],
).enableRLS();
