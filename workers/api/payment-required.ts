/**
 * The refusal of new work while the account is on payment hold (workers/billing/payment-hold.ts):
 * `402 payment_required`, naming the unpaid invoice. The hold is read where the account is locked
 * anyway, so it costs no round trip: a job submission checks it inside the statement that inserts
 * the job (`check_payment_hold`, migration payment_hold_check, which raises SQ002), an endpoint's
 * write from the row its lock returns (`lockAccount`).
 */
import { type SQL, sql } from "drizzle-orm";
import type { Caller } from "../auth/caller";
import type { Db } from "../db/client";
import { pgError } from "../db/pg-error";
import { literal } from "../db/round-trips";
import type { PaymentHold } from "../db/schema";
import { ApiError } from "../http/errors";

/** The hold as the driver hands over a jsonb value: parsed, or its text. */
export function parseHold(value: unknown): PaymentHold | null {
  if (value === null || value === undefined) return null;
  return (typeof value === "string" ? JSON.parse(value) : value) as PaymentHold;
}

/**
 * The unpaid invoice, as the 402's details and `GET /v1/me` show it. Its amount and Stripe's page
 * (a link that shows the whole invoice and takes payment) only to callers who may read billing
 * (`billing:read`: owners, admins, keys with the scope); others learn which invoice and month.
 */
export function heldInvoice(hold: PaymentHold, billing: boolean) {
  return {
    invoice_id: hold.invoice_id,
    month: hold.month,
    amount_due_cents: billing ? hold.amount_due_cents : null,
    currency: billing ? hold.currency : null,
    hosted_invoice_url: billing ? hold.hosted_invoice_url : null,
  };
}

export function paymentRequired(hold: PaymentHold, billing: boolean): ApiError {
  const invoice = `invoice ${hold.number ?? hold.invoice_id}`;
  const what = billing
    ? `${invoice} (${hold.month}, ${(hold.amount_due_cents / 100).toFixed(2)} ${hold.currency.toUpperCase()})`
    : `${invoice} (${hold.month})`;
  const next = !billing
    ? "; an owner or admin of the account can see and pay it"
    : hold.hosted_invoice_url
      ? `; pay it at ${hold.hosted_invoice_url}`
      : "";
  return new ApiError(
    402,
    "payment_required",
    `${what} is unpaid: the account starts no new jobs or endpoints until it is paid${next}`,
    heldInvoice(hold, billing),
  );
}

/** Throws `402 payment_required` while the account is held (`billing`: the caller may read billing). */
export function refuseHeld(hold: PaymentHold | null, billing: boolean): void {
  if (hold) throw paymentRequired(hold, billing);
}

/** Whether the caller sees billing figures (`billing:read`). */
export const readsBilling = (caller: Caller): boolean => caller.scopes.includes("billing:read");

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
 * throws it, or as its `cause` when drizzle ran the statement: `pgError`); null for any other.
 */
export function paymentHoldError(error: unknown, billing: boolean): ApiError | null {
  const e = pgError(error);
  if (e?.code !== "SQ002" || typeof e.detail !== "string") return null;
  return paymentRequired(JSON.parse(e.detail) as PaymentHold, billing);
}

/** The account's payment hold now (no parameters: one round trip on a new connection). */
export async function accountHold(db: Db, accountId: string): Promise<PaymentHold | null> {
  const [row] = await db.execute<{ payment_hold: unknown }>(
    sql.raw(`select payment_hold from accounts where id = ${literal(accountId)}`),
  );
  return parseHold(row?.payment_hold);
}
