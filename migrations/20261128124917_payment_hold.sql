ALTER TABLE "accounts" ADD COLUMN "payment_hold" jsonb;--> statement-breakpoint
ALTER TABLE "invoices" ADD COLUMN "finalized_at" timestamp with time zone;--> statement-breakpoint
CREATE INDEX "invoices_unpaid_idx" ON "invoices" USING btree ("account_id","finalized_at") WHERE "invoices"."status" in ('open', 'uncollectible');--> statement-breakpoint
ALTER TABLE "accounts" ADD CONSTRAINT "accounts_payment_hold" CHECK ("accounts"."payment_hold" is null or (jsonb_typeof("accounts"."payment_hold" -> 'invoice_id') = 'string' and jsonb_typeof("accounts"."payment_hold" -> 'since') = 'string'));