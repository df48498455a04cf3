/**
 * Every market order Scalar sends goes through the journal (`market_orders`): the row and its
 * Idempotency-Key are written first, then the order is sent with that key, then the row records
 * SF Compute's id. A crash or a lost answer anywhere leaves a `placing` row whose key makes the
 * re-send safe; `placeJournaledOrder` on the same intent key resumes it.
 */
import { eq } from "drizzle-orm";
import { marketOrders } from "../db/schema";
import type { SfComputeClient } from "./client";
import type { MarketDb } from "./db";
import { isSfComputeError } from "./errors";
import type { OrderFlags } from "./schemas";
import { type BlockCents, marketNow } from "./units";

export type MarketOrderRow = typeof marketOrders.$inferSelect;

export interface OrderIntent {
  region: string;
  side: "buy" | "sell";
  instanceType: string;
  /** Buy: the zone to buy in (SF Compute's `cluster`); sell: the contract's zone. */
  zone?: string;
  /** Sell: the contract the time comes from. */
  contractId?: string;
  /** Nodes of 8 GPUs. */
  quantity: number;
  startAt: Date | "NOW";
  endAt: Date;
  /** Cents for the whole block. */
  limitPrice: BlockCents;
  flags?: OrderFlags;
  purpose?: string;
  blockId?: string;
  /** Give the same key to resume an intent after a crash; a fresh one otherwise. */
  idempotencyKey?: string;
}

/** Journals the intent (once per key) and sends it; returns the row as it stands after the attempt. */
export async function placeJournaledOrder(
  db: MarketDb,
  client: SfComputeClient,
  intent: OrderIntent,
  now: Date,
): Promise<MarketOrderRow> {
  const key = intent.idempotencyKey ?? crypto.randomUUID();
  const startAt = intent.startAt === "NOW" ? new Date(marketNow(now.getTime())) : intent.startAt;
  await db
    .insert(marketOrders)
    .values({
      idempotencyKey: key,
      region: intent.region,
      side: intent.side,
      instanceType: intent.instanceType,
      zone: intent.zone ?? null,
      contractId: intent.contractId ?? null,
      quantity: intent.quantity,
      startAt,
      endAt: intent.endAt,
      limitPriceCents: intent.limitPrice,
      purpose: intent.purpose ?? null,
      blockId: intent.blockId ?? null,
      placedAt: now,
    })
    .onConflictDoNothing({ target: marketOrders.idempotencyKey });
  const [row] = await db.select().from(marketOrders).where(eq(marketOrders.idempotencyKey, key));
  if (!row) throw new Error(`market order ${key} vanished`);
  if (row.status !== "placing") return row; // already acknowledged by an earlier attempt

  try {
    const block = {
      quantity: intent.quantity,
      start_at: intent.startAt,
      end_at: intent.endAt,
      price: intent.limitPrice,
      flags: intent.flags,
    };
    const created =
      intent.side === "buy"
        ? await client.placeBuyOrder(
            { ...(intent.zone ? { cluster: intent.zone } : { instance_type: intent.instanceType }), ...block },
            { idempotencyKey: key },
          )
        : await client.placeSellOrder({ contract_id: intent.contractId ?? "", ...block }, { idempotencyKey: key });
    const [updated] = await db
      .update(marketOrders)
      .set({ sfOrderId: created.id, status: created.status, lastError: null })
      .where(eq(marketOrders.idempotencyKey, key))
      .returning();
    return updated!;
  } catch (error) {
    // A refusal (4xx) is final; anything else leaves the row `placing`, to resume with the same key.
    // A 409 is not a refusal: it may be this key's earlier attempt still in progress at SF Compute.
    const refused =
      isSfComputeError(error) && error.status >= 400 && error.status < 500 && error.status !== 409 && !error.transient;
    const [updated] = await db
      .update(marketOrders)
      .set({
        status: refused ? "failed" : "placing",
        lastError: String(error instanceof Error ? error.message : error),
      })
      .where(eq(marketOrders.idempotencyKey, key))
      .returning();
    if (!refused) throw error;
    return updated!;
  }
}
