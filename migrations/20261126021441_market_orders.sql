CREATE TABLE "market_orders" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"idempotency_key" text NOT NULL,
	"sf_order_id" text,
	"region" text NOT NULL,
	"side" text NOT NULL,
	"instance_type" text NOT NULL,
	"zone" text,
	"quantity" integer NOT NULL,
	"start_at" timestamp with time zone NOT NULL,
	"end_at" timestamp with time zone NOT NULL,
	"limit_price_cents" bigint NOT NULL,
	"status" text DEFAULT 'placing' NOT NULL,
	"execution_price_cents" bigint,
	"purpose" text,
	"block_id" uuid,
	"contract_id" text,
	"placed_at" timestamp with time zone DEFAULT now() NOT NULL,
	"filled_at" timestamp with time zone,
	"cancelled_at" timestamp with time zone,
	"fill_latency_ms" bigint GENERATED ALWAYS AS ((extract(epoch from (filled_at - placed_at)) * 1000)::bigint) STORED,
	"rejected_reason" text,
	"last_error" text,
	"last_checked_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "market_orders_side" CHECK ("market_orders"."side" in ('buy', 'sell')),
	CONSTRAINT "market_orders_status" CHECK ("market_orders"."status" in ('placing', 'pending', 'open', 'filled', 'cancelled', 'rejected', 'expired', 'partially_filled', 'failed')),
	CONSTRAINT "market_orders_quantity" CHECK ("market_orders"."quantity" between 1 and 1024),
	CONSTRAINT "market_orders_prices" CHECK ("market_orders"."limit_price_cents" >= 0 and ("market_orders"."execution_price_cents" is null or "market_orders"."execution_price_cents" >= 0)),
	CONSTRAINT "market_orders_window" CHECK ("market_orders"."end_at" > "market_orders"."start_at")
);
--> statement-breakpoint
ALTER TABLE "market_orders" ENABLE ROW LEVEL SECURITY;--> statement-breakpoint
ALTER TABLE "market_orders" ADD CONSTRAINT "market_orders_block_id_blocks_id_fk" FOREIGN KEY ("block_id") REFERENCES "public"."blocks"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "market_orders_idempotency_key" ON "market_orders" USING btree ("idempotency_key");--> statement-breakpoint
CREATE UNIQUE INDEX "market_orders_sf_order_key" ON "market_orders" USING btree ("sf_order_id");--> statement-breakpoint
CREATE INDEX "market_orders_open_idx" ON "market_orders" USING btree ("status","placed_at") WHERE "market_orders"."status" in ('placing', 'pending', 'open');--> statement-breakpoint
CREATE INDEX "market_orders_region_placed_idx" ON "market_orders" USING btree ("region","placed_at" DESC NULLS LAST);