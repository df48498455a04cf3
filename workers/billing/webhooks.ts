/**
 * Stripe's webhooks: what happens to an invoice after Scalar hands it over (invoices.ts). Stripe
 * collects and tells us by signed events at `POST /v1/stripe/webhooks`; the route checks the
 * signature with STRIPE_WEBHOOK_SECRET (`Stripe-Signature`, 5 minutes' tolerance), applies each
 * event once (`stripe_events` keeps the ids: Stripe delivers at least once), and answers 2xx for
 * anything it understood or deliberately ignores, so Stripe stops retrying; a 5xx (Postgres down)
 * makes Stripe deliver it again later.
 *
 * Events may arrive out of order, so each moves an invoice only forward: `paid` and `void` are
 * final; `uncollectible` may still be paid; a failed attempt never changes the status, it records
 * the attempt, its reason and when Stripe tries next. Then the account's payment hold is derived
 * again from its invoices as they now are (payment-hold.ts), in the same transaction.
 */
import { and, eq, inArray, sql } from "drizzle-orm";
import type { PgUpdateSetSource } from "drizzle-orm/pg-core";
import Stripe from "stripe";
import type { Db } from "../db/client";
import { invoices, stripeEvents } from "../db/schema";
import { ApiError } from "../http/errors";
import type { Logger } from "../http/log";
import { dunningGraceMs, ensurePaymentHold } from "./payment-hold";

declare global {
  namespace Cloudflare {
    interface Env {
      /** A Worker secret: the signing secret (`whsec_…`) of the Stripe webhook endpoint. */
      STRIPE_WEBHOOK_SECRET?: string;
    }
  }
}

export const SIGNATURE_HEADER = "stripe-signature";
/** Stripe's own default: a signature older than this is refused (replays). */
export const TOLERANCE_S = 300;

/** The invoice events Scalar acts on; any other type is acknowledged and ignored. */
export const HANDLED_EVENTS = [
  "invoice.finalized",
  "invoice.paid",
  "invoice.payment_succeeded",
  "invoice.payment_failed",
  "invoice.marked_uncollectible",
  "invoice.voided",
] as const;

export interface WebhookResult {
  event_id: string;
  type: string;
  outcome: string;
  duplicate: boolean;
}

const cryptoProvider = Stripe.createSubtleCryptoProvider();

/** Verify, de-duplicate and apply one delivery. Throws ApiError 400/503 for what Stripe must see. */
export async function handleStripeWebhook(
  env: { STRIPE_WEBHOOK_SECRET?: string; DUNNING_GRACE_DAYS?: string },
  db: Db,
  payload: string,
  signature: string | undefined,
  log: Logger,
  now: () => number = Date.now,
): Promise<WebhookResult> {
  const secret = env.STRIPE_WEBHOOK_SECRET?.trim();
  if (!secret) {
    // Stripe retries 5xx for days: the events wait until the secret is set.
    throw new ApiError(503, "webhooks_not_configured", "STRIPE_WEBHOOK_SECRET is not set; retry later");
  }
  if (!signature) throw new ApiError(400, "invalid_signature", `the ${SIGNATURE_HEADER} header is missing`);
  let event: Stripe.Event;
  try {
    event = await Stripe.webhooks.constructEventAsync(
      payload,
      signature,
      secret,
      TOLERANCE_S,
      cryptoProvider,
      now(), // milliseconds: the SDK divides by 1000
    );
  } catch (error) {
    throw new ApiError(400, "invalid_signature", `the signature does not match: ${(error as Error).message}`);
  }
  return db.transaction(async (tx) => {
    const [fresh] = await tx
      .insert(stripeEvents)
      .values({ id: event.id, type: event.type, outcome: "pending" })
      .onConflictDoNothing()
      .returning({ id: stripeEvents.id });
    if (!fresh) {
      const [seen] = await tx.select().from(stripeEvents).where(eq(stripeEvents.id, event.id));
      return { event_id: event.id, type: event.type, outcome: seen?.outcome ?? "applied", duplicate: true };
    }
    const { outcome, accountId } = (HANDLED_EVENTS as readonly string[]).includes(event.type)
      ? await applyInvoiceEvent(
          tx as unknown as Db,
          event.type as InvoiceEventType,
          event.data.object as Stripe.Invoice,
          event.created,
        )
      : { outcome: `ignored: ${event.type} is not acted on`, accountId: null };
    await tx.update(stripeEvents).set({ outcome }).where(eq(stripeEvents.id, event.id));
    // Whatever the event did (even nothing: it came late), the hold follows the invoices as they are.
    const hold = accountId
      ? await ensurePaymentHold(
          tx,
          accountId,
          { now: now(), graceMs: dunningGraceMs(env.DUNNING_GRACE_DAYS, log) },
          `stripe:${event.id}`,
        )
      : null;
    log.info("stripe.webhook", { event_id: event.id, type: event.type, outcome, payment_hold: hold });
    return { event_id: event.id, type: event.type, outcome, duplicate: false };
  });
}

/** An event's change to an invoice: what it writes, and the statuses it may move it from. */
type Move = { set: PgUpdateSetSource<typeof invoices>; from: string[] };

export type InvoiceEventType = (typeof HANDLED_EVENTS)[number];

/**
 * What an invoice event did (`applied`, or why not), and the account of the invoice it is about, if
 * ours. `object` is the invoice as the event carries it; `createdS` the event's time (Unix seconds).
 * Also used for what Stripe says of an invoice whose event never came (reconcile.ts).
 */
export async function applyInvoiceEvent(
  db: Db,
  type: InvoiceEventType,
  object: Stripe.Invoice,
  createdS: number,
): Promise<{ outcome: string; accountId: string | null }> {
  const [row] = await db
    .select({ id: invoices.id, status: invoices.status, accountId: invoices.accountId })
    .from(invoices)
    .where(eq(invoices.stripeInvoiceId, object.id ?? ""));
  if (!row) return { outcome: `ignored: no invoice of ours is Stripe's ${object.id}`, accountId: null };
  const at = (s: number | null | undefined) => (s ? new Date(s * 1000) : null);
  const attempt = object.attempt_count ?? 0;
  const nextAttempt = at(object.next_payment_attempt)?.toISOString() ?? null;
  // Each event: what it writes, and the statuses it may move the invoice from (only forward).
  const paid: Move = {
    set: {
      status: "paid",
      paidAt: at(object.status_transitions?.paid_at) ?? new Date(createdS * 1000),
      nextPaymentAttemptAt: null,
    },
    from: ["draft", "open", "uncollectible"],
  };
  const moves: Record<InvoiceEventType, Move> = {
    "invoice.finalized": {
      set: { status: "open", number: object.number ?? null, hostedInvoiceUrl: object.hosted_invoice_url ?? null },
      from: ["draft"],
    },
    "invoice.paid": paid,
    "invoice.payment_succeeded": paid,
    "invoice.payment_failed": {
      // Stripe's count is cumulative and deliveries come in any order: a late, older failure never
      // lowers the count nor overwrites the error and next attempt of a newer one (SET reads the
      // row as it was, so each expression compares with the stored count).
      set: {
        paymentAttempts: sql`greatest(${invoices.paymentAttempts}, ${attempt})`,
        paymentError: sql`case when ${attempt} >= ${invoices.paymentAttempts} then ${paymentError(object)} else ${invoices.paymentError} end`,
        nextPaymentAttemptAt: sql`case when ${attempt} >= ${invoices.paymentAttempts} then ${nextAttempt}::timestamptz else ${invoices.nextPaymentAttemptAt} end`,
      },
      from: ["draft", "open", "uncollectible"],
    },
    "invoice.marked_uncollectible": {
      set: { status: "uncollectible", nextPaymentAttemptAt: null },
      from: ["draft", "open"],
    },
    "invoice.voided": {
      set: { status: "void", nextPaymentAttemptAt: null },
      from: ["draft", "open", "uncollectible"],
    },
  };
  const move = moves[type];
  // The first finalization, whichever event tells it first: the payment hold's grace runs from it.
  const finalized =
    at(object.status_transitions?.finalized_at) ?? (type === "invoice.finalized" ? new Date(createdS * 1000) : null);
  const changed = await db
    .update(invoices)
    .set({
      ...move.set,
      ...(finalized
        ? { finalizedAt: sql`coalesce(${invoices.finalizedAt}, ${finalized.toISOString()}::timestamptz)` }
        : {}),
      updatedAt: new Date(),
    })
    .where(and(eq(invoices.id, row.id), inArray(invoices.status, move.from)))
    .returning({ id: invoices.id });
  return {
    outcome: changed.length > 0 ? "applied" : `ignored: invoice already ${row.status}`,
    accountId: row.accountId,
  };
}

/** Why the last collection attempt failed, as far as the invoice says. */
function paymentError(invoice: Stripe.Invoice): string {
  const finalization = invoice.last_finalization_error?.message;
  if (finalization) return finalization.slice(0, 500);
  return invoice.next_payment_attempt
    ? "the payment failed; Stripe will try again"
    : "the payment failed; Stripe will not try again";
}
