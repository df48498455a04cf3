/**
 * The refusal of new work while the account is on payment hold (workers/billing/payment-hold.ts):
 * `402 payment_required`, naming the unpaid invoice. The hold is read where the account is locked
 * anyway, so it costs no round trip: a job submission checks it inside the statement that inserts
 * the job (`check_payment_hold`, migration payment_hold_check, which raises SQ002), an endpoint's
 * write from the row its lock returns (`lockAccount`).
 */
import { type SQL, sql } from "drizzle-orm";
import type { Db } from "../db/client";
import { literal } from "../db/round-trips";
import type { PaymentHold } from "../db/schema";
import { ApiError } from "../http/errors";

/** The hold as the driver hands over a jsonb value: parsed, or its text. */
export function parseHold(value: unknown): PaymentHold | null {
  if (value === null || value === undefined) return null;
  return (typeof value === "string" ? JSON.parse(value) : value) as PaymentHold;
}

/** The unpaid invoice, as the 402's details and `GET /v1/me` show it. */
export function heldInvoice(hold: PaymentHold) {
  return {
    invoice_id: hold.invoice_id,
    month: hold.month,
    amount_due_cents: hold.amount_due_cents,
    currency: hold.currency,
    hosted_invoice_url: hold.hosted_invoice_url,
  };
}

export function paymentRequired(hold: PaymentHold): ApiError {
  const amount = `${(hold.amount_due_cents / 100).toFixed(2)} ${hold.currency.toUpperCase()}`;
  const pay = hold.hosted_invoice_url ? `; pay it at ${hold.hosted_invoice_url}` : "";
  return new ApiError(
    402,
    "payment_required",
    `invoice ${hold.number ?? hold.invoice_id} (${hold.month}, ${amount}) is unpaid: the account starts no new jobs or endpoints until it is paid${pay}`,
    heldInvoice(hold),
  );
}

/** Throws `402 payment_required` while the account is held. */
export function refuseHeld(hold: PaymentHold | null): void {
  if (hold) throw paymentRequired(hold);
}

/**
 * An expression for a statement that writes new work: true when the account is not held, and
 * otherwise makes the statement fail with SQLSTATE SQ002 (`check_payment_hold`). It reads the
 * account's row in the statement's own snapshot, taken after the account's lock. No parameters:
 * it goes in statements sent without a describe round trip (round-trips.ts).
 */
export function paymentHoldCheck(accountId: string): SQL {
  return sql<boolean>`public.check_payment_hold((select payment_hold from accounts where id = ${sql.raw(literal(accountId))}))`;
}

/**
 * The API's payment_required error for the database error `paymentHoldCheck` raises (as postgres.js
 * throws it, or as its `cause` when drizzle ran the statement); null for any other.
 */
export function paymentHoldError(error: unknown): ApiError | null {
  type PgError = { code?: unknown; detail?: unknown; cause?: unknown } | null;
  const outer = error as PgError;
  const e = outer?.code === undefined ? (outer?.cause as PgError) : outer;
  if (e?.code !== "SQ002" || typeof e.detail !== "string") return null;
  return paymentRequired(JSON.parse(e.detail) as PaymentHold);
}

/** The account's payment hold now (no parameters: one round trip on a new connection). */
export async function accountHold(db: Db, accountId: string): Promise<PaymentHold | null> {
  const [row] = await db.execute<{ payment_hold: unknown }>(
    sql.raw(`select payment_hold from accounts where id = ${literal(accountId)}`),
  );
  return parseHold(row?.payment_hold);
}
