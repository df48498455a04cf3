-- Hand-written: the payment hold's check inside a job submission's insert statement, and the
-- finalization time of the invoices already sent.
--
-- A submission sends BEGIN, the account lock, the insert and COMMIT in one round trip
-- (workers/db/round-trips.ts, pipelinedWrite), so the Worker cannot look at the hold before the
-- insert: the insert's RETURNING calls this with the account's `payment_hold` (read after the lock).
-- While the account is held it raises SQLSTATE SQ002 with the hold as JSON in DETAIL, the statement
-- fails and Postgres turns the COMMIT into a ROLLBACK; the Worker answers 402 payment_required with
-- the invoice from DETAIL (workers/api/payment-required.ts).
create or replace function public.check_payment_hold(hold jsonb)
  returns boolean language plpgsql volatile set search_path = '' as $$
begin
  if hold is not null then
    raise exception using
      errcode = 'SQ002',
      message = 'payment_required',
      detail = hold::text;
  end if;
  return true;
end $$;
--> statement-breakpoint
revoke all on function public.check_payment_hold(jsonb) from public, anon, authenticated;
--> statement-breakpoint
-- Invoices sent before finalized_at existed: Scalar sends an invoice in the billing run that makes
-- it, so its creation is the nearest known time to its finalization.
update public.invoices set finalized_at = created_at
 where finalized_at is null and status in ('open', 'paid', 'uncollectible', 'void') and stripe_invoice_id is not null;
