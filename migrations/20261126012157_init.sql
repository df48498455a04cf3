CREATE TABLE "accounts" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"name" text NOT NULL,
	"fast_tier_enabled" boolean DEFAULT false NOT NULL,
	"max_concurrent_gpus" integer DEFAULT 16 NOT NULL,
	"monthly_spend_cap_cents" bigint,
	"is_operator" boolean DEFAULT false NOT NULL,
	"stripe_customer_id" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "accounts_stripe_customer_id_unique" UNIQUE("stripe_customer_id"),
	CONSTRAINT "accounts_name_len" CHECK (char_length("accounts"."name") between 1 and 200),
	CONSTRAINT "accounts_max_concurrent_gpus" CHECK ("accounts"."max_concurrent_gpus" >= 0),
	CONSTRAINT "accounts_monthly_spend_cap" CHECK ("accounts"."monthly_spend_cap_cents" is null or "accounts"."monthly_spend_cap_cents" >= 0)
);
--> statement-breakpoint
CREATE TABLE "api_keys" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"account_id" uuid NOT NULL,
	"created_by" uuid,
	"name" text NOT NULL,
	"prefix" text NOT NULL,
	"secret_hash" text NOT NULL,
	"scopes" text[] NOT NULL,
	"last_used_at" timestamp with time zone,
	"expires_at" timestamp with time zone,
	"revoked_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "api_keys_name_len" CHECK (char_length("api_keys"."name") between 1 and 200),
	CONSTRAINT "api_keys_scopes" CHECK ("api_keys"."scopes" <@ array['jobs:read', 'jobs:write', 'endpoints:read', 'endpoints:write', 'billing:read', 'admin']::text[])
);
--> statement-breakpoint
CREATE TABLE "audit_log" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"account_id" uuid,
	"actor_type" text NOT NULL,
	"actor_id" text,
	"action" text NOT NULL,
	"target_type" text,
	"target_id" text,
	"data" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"dedupe_key" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "audit_log_actor_type" CHECK ("audit_log"."actor_type" in ('user', 'api_key', 'system', 'agent', 'operator'))
);
--> statement-breakpoint
CREATE TABLE "blocks" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"region" text NOT NULL,
	"zone" text NOT NULL,
	"instance_type" text NOT NULL,
	"gpu_model" text NOT NULL,
	"node_count" integer NOT NULL,
	"start_at" timestamp with time zone NOT NULL,
	"end_at" timestamp with time zone NOT NULL,
	"price_cents" bigint NOT NULL,
	"status" text DEFAULT 'pending' NOT NULL,
	"sf_order_id" text,
	"sf_contract_id" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "blocks_status" CHECK ("blocks"."status" in ('pending', 'active', 'expired', 'sold', 'cancelled')),
	CONSTRAINT "blocks_gpu_model" CHECK ("blocks"."gpu_model" in ('H100', 'H200')),
	CONSTRAINT "blocks_node_count" CHECK ("blocks"."node_count" between 1 and 1024),
	CONSTRAINT "blocks_price" CHECK ("blocks"."price_cents" >= 0),
	CONSTRAINT "blocks_window" CHECK ("blocks"."end_at" > "blocks"."start_at")
);
--> statement-breakpoint
CREATE TABLE "gpu_assignments" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"job_run_id" text NOT NULL,
	"node_id" text NOT NULL,
	"gpu_index" integer NOT NULL,
	"assigned_at" timestamp with time zone NOT NULL,
	"released_at" timestamp with time zone,
	CONSTRAINT "gpu_assignments_gpu_index" CHECK ("gpu_assignments"."gpu_index" between 0 and 15),
	CONSTRAINT "gpu_assignments_window" CHECK ("gpu_assignments"."released_at" is null or "gpu_assignments"."released_at" >= "gpu_assignments"."assigned_at")
);
--> statement-breakpoint
CREATE TABLE "invoices" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"account_id" uuid NOT NULL,
	"period_start" timestamp with time zone NOT NULL,
	"period_end" timestamp with time zone NOT NULL,
	"status" text DEFAULT 'draft' NOT NULL,
	"currency" text DEFAULT 'usd' NOT NULL,
	"subtotal_cents" bigint DEFAULT 0 NOT NULL,
	"total_cents" bigint DEFAULT 0 NOT NULL,
	"stripe_invoice_id" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "invoices_stripe_invoice_id_unique" UNIQUE("stripe_invoice_id"),
	CONSTRAINT "invoices_status" CHECK ("invoices"."status" in ('draft', 'open', 'paid', 'void', 'uncollectible')),
	CONSTRAINT "invoices_amounts" CHECK ("invoices"."subtotal_cents" >= 0 and "invoices"."total_cents" >= 0),
	CONSTRAINT "invoices_currency" CHECK ("invoices"."currency" ~ '^[a-z]{3}$'),
	CONSTRAINT "invoices_window" CHECK ("invoices"."period_end" > "invoices"."period_start")
);
--> statement-breakpoint
CREATE TABLE "job_runs" (
	"id" text PRIMARY KEY NOT NULL,
	"job_id" uuid NOT NULL,
	"account_id" uuid NOT NULL,
	"attempt" integer NOT NULL,
	"node_id" text NOT NULL,
	"status" text NOT NULL,
	"gpu_count" integer NOT NULL,
	"placed_at" timestamp with time zone NOT NULL,
	"started_at" timestamp with time zone,
	"finished_at" timestamp with time zone,
	"exit_code" integer,
	"oom_killed" boolean DEFAULT false NOT NULL,
	"failure_reason" text,
	CONSTRAINT "job_runs_status" CHECK ("job_runs"."status" in ('placed', 'pulling', 'running', 'succeeded', 'failed', 'cancelled', 'lost')),
	CONSTRAINT "job_runs_attempt" CHECK ("job_runs"."attempt" >= 1),
	CONSTRAINT "job_runs_gpu_count" CHECK ("job_runs"."gpu_count" between 0 and 8),
	CONSTRAINT "job_runs_window" CHECK ("job_runs"."finished_at" is null or "job_runs"."finished_at" >= "job_runs"."placed_at")
);
--> statement-breakpoint
CREATE TABLE "jobs" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"account_id" uuid NOT NULL,
	"created_by" uuid,
	"created_by_key" uuid,
	"region" text NOT NULL,
	"tier" text NOT NULL,
	"priority" integer DEFAULT 0 NOT NULL,
	"status" text DEFAULT 'queued' NOT NULL,
	"image" text NOT NULL,
	"command" text[] DEFAULT '{}'::text[] NOT NULL,
	"args" text[] DEFAULT '{}'::text[] NOT NULL,
	"env" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"gpu_count" integer NOT NULL,
	"gpu_models" text[] DEFAULT '{}'::text[] NOT NULL,
	"cpu_milli" integer NOT NULL,
	"memory_mib" integer NOT NULL,
	"max_runtime_s" integer NOT NULL,
	"estimated_duration_s" integer,
	"max_attempts" integer DEFAULT 3 NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"labels" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"waiting_reason" text,
	"exit_code" integer,
	"failure_reason" text,
	"dead_lettered_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	"started_at" timestamp with time zone,
	"finished_at" timestamp with time zone,
	CONSTRAINT "jobs_status" CHECK ("jobs"."status" in ('queued', 'placed', 'running', 'succeeded', 'failed', 'cancelled')),
	CONSTRAINT "jobs_tier" CHECK ("jobs"."tier" in ('fast', 'flex')),
	CONSTRAINT "jobs_gpu_count" CHECK ("jobs"."gpu_count" between 1 and 64 and ("jobs"."gpu_count" <= 8 or "jobs"."gpu_count" % 8 = 0)),
	CONSTRAINT "jobs_gpu_models" CHECK ("jobs"."gpu_models" <@ array['H100', 'H200']::text[]),
	CONSTRAINT "jobs_resources" CHECK ("jobs"."cpu_milli" > 0 and "jobs"."memory_mib" > 0),
	CONSTRAINT "jobs_priority" CHECK ("jobs"."priority" between -1000 and 1000),
	CONSTRAINT "jobs_max_runtime" CHECK ("jobs"."max_runtime_s" between 1 and 2592000),
	CONSTRAINT "jobs_attempts" CHECK ("jobs"."attempts" >= 0 and "jobs"."max_attempts" between 1 and 20)
);
--> statement-breakpoint
CREATE TABLE "memberships" (
	"account_id" uuid NOT NULL,
	"user_id" uuid NOT NULL,
	"role" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "memberships_account_id_user_id_pk" PRIMARY KEY("account_id","user_id"),
	CONSTRAINT "memberships_role" CHECK ("memberships"."role" in ('owner', 'admin', 'member', 'viewer'))
);
--> statement-breakpoint
CREATE TABLE "nodes" (
	"id" text PRIMARY KEY NOT NULL,
	"block_id" uuid,
	"region" text NOT NULL,
	"zone" text NOT NULL,
	"gpu_model" text NOT NULL,
	"gpu_count" integer NOT NULL,
	"cpu_milli" integer NOT NULL,
	"memory_mib" integer NOT NULL,
	"state" text DEFAULT 'provisioning' NOT NULL,
	"sf_node_id" text,
	"hostname" text,
	"agent_token_hash" text,
	"registered_at" timestamp with time zone,
	"last_heartbeat_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "nodes_state" CHECK ("nodes"."state" in ('provisioning', 'ready', 'draining', 'lost', 'released')),
	CONSTRAINT "nodes_gpu_model" CHECK ("nodes"."gpu_model" in ('H100', 'H200')),
	CONSTRAINT "nodes_gpu_count" CHECK ("nodes"."gpu_count" between 0 and 16),
	CONSTRAINT "nodes_cpu_memory" CHECK ("nodes"."cpu_milli" > 0 and "nodes"."memory_mib" > 0)
);
--> statement-breakpoint
CREATE TABLE "usage_events" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"account_id" uuid NOT NULL,
	"job_id" uuid,
	"job_run_id" text NOT NULL,
	"tier" text NOT NULL,
	"gpu_model" text NOT NULL,
	"gpu_count" integer NOT NULL,
	"gpu_seconds" bigint NOT NULL,
	"period_start" timestamp with time zone NOT NULL,
	"period_end" timestamp with time zone NOT NULL,
	"invoice_id" uuid,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "usage_events_tier" CHECK ("usage_events"."tier" in ('fast', 'flex')),
	CONSTRAINT "usage_events_gpu_model" CHECK ("usage_events"."gpu_model" in ('H100', 'H200')),
	CONSTRAINT "usage_events_gpu_seconds" CHECK ("usage_events"."gpu_seconds" >= 0 and "usage_events"."gpu_count" >= 0),
	CONSTRAINT "usage_events_window" CHECK ("usage_events"."period_end" >= "usage_events"."period_start")
);
--> statement-breakpoint
CREATE TABLE "users" (
	"id" uuid PRIMARY KEY NOT NULL,
	"email" text,
	"display_name" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "api_keys" ADD CONSTRAINT "api_keys_account_id_accounts_id_fk" FOREIGN KEY ("account_id") REFERENCES "public"."accounts"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "api_keys" ADD CONSTRAINT "api_keys_created_by_users_id_fk" FOREIGN KEY ("created_by") REFERENCES "public"."users"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "audit_log" ADD CONSTRAINT "audit_log_account_id_accounts_id_fk" FOREIGN KEY ("account_id") REFERENCES "public"."accounts"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "gpu_assignments" ADD CONSTRAINT "gpu_assignments_job_run_id_job_runs_id_fk" FOREIGN KEY ("job_run_id") REFERENCES "public"."job_runs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "gpu_assignments" ADD CONSTRAINT "gpu_assignments_node_id_nodes_id_fk" FOREIGN KEY ("node_id") REFERENCES "public"."nodes"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "invoices" ADD CONSTRAINT "invoices_account_id_accounts_id_fk" FOREIGN KEY ("account_id") REFERENCES "public"."accounts"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "job_runs" ADD CONSTRAINT "job_runs_job_id_jobs_id_fk" FOREIGN KEY ("job_id") REFERENCES "public"."jobs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "job_runs" ADD CONSTRAINT "job_runs_account_id_accounts_id_fk" FOREIGN KEY ("account_id") REFERENCES "public"."accounts"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "job_runs" ADD CONSTRAINT "job_runs_node_id_nodes_id_fk" FOREIGN KEY ("node_id") REFERENCES "public"."nodes"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "jobs" ADD CONSTRAINT "jobs_account_id_accounts_id_fk" FOREIGN KEY ("account_id") REFERENCES "public"."accounts"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "jobs" ADD CONSTRAINT "jobs_created_by_users_id_fk" FOREIGN KEY ("created_by") REFERENCES "public"."users"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "jobs" ADD CONSTRAINT "jobs_created_by_key_api_keys_id_fk" FOREIGN KEY ("created_by_key") REFERENCES "public"."api_keys"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "memberships" ADD CONSTRAINT "memberships_account_id_accounts_id_fk" FOREIGN KEY ("account_id") REFERENCES "public"."accounts"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "memberships" ADD CONSTRAINT "memberships_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "nodes" ADD CONSTRAINT "nodes_block_id_blocks_id_fk" FOREIGN KEY ("block_id") REFERENCES "public"."blocks"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "usage_events" ADD CONSTRAINT "usage_events_account_id_accounts_id_fk" FOREIGN KEY ("account_id") REFERENCES "public"."accounts"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "usage_events" ADD CONSTRAINT "usage_events_job_id_jobs_id_fk" FOREIGN KEY ("job_id") REFERENCES "public"."jobs"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "usage_events" ADD CONSTRAINT "usage_events_invoice_id_invoices_id_fk" FOREIGN KEY ("invoice_id") REFERENCES "public"."invoices"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "users" ADD CONSTRAINT "users_id_users_id_fk" FOREIGN KEY ("id") REFERENCES "auth"."users"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "api_keys_prefix_key" ON "api_keys" USING btree ("prefix");--> statement-breakpoint
CREATE UNIQUE INDEX "api_keys_secret_hash_key" ON "api_keys" USING btree ("secret_hash");--> statement-breakpoint
CREATE INDEX "api_keys_account_list_idx" ON "api_keys" USING btree ("account_id","created_at" DESC NULLS LAST,"id");--> statement-breakpoint
CREATE INDEX "audit_log_account_idx" ON "audit_log" USING btree ("account_id","created_at" DESC NULLS LAST);--> statement-breakpoint
CREATE INDEX "audit_log_target_idx" ON "audit_log" USING btree ("target_type","target_id");--> statement-breakpoint
CREATE UNIQUE INDEX "audit_log_dedupe_key" ON "audit_log" USING btree ("dedupe_key");--> statement-breakpoint
CREATE INDEX "blocks_region_status_idx" ON "blocks" USING btree ("region","status","end_at");--> statement-breakpoint
CREATE UNIQUE INDEX "blocks_sf_order_key" ON "blocks" USING btree ("sf_order_id");--> statement-breakpoint
CREATE UNIQUE INDEX "gpu_assignments_active_key" ON "gpu_assignments" USING btree ("node_id","gpu_index") WHERE "gpu_assignments"."released_at" is null;--> statement-breakpoint
CREATE UNIQUE INDEX "gpu_assignments_run_gpu_key" ON "gpu_assignments" USING btree ("job_run_id","node_id","gpu_index");--> statement-breakpoint
CREATE UNIQUE INDEX "invoices_account_period_key" ON "invoices" USING btree ("account_id","period_start");--> statement-breakpoint
CREATE UNIQUE INDEX "job_runs_job_attempt_key" ON "job_runs" USING btree ("job_id","attempt","node_id");--> statement-breakpoint
CREATE INDEX "job_runs_account_idx" ON "job_runs" USING btree ("account_id","placed_at" DESC NULLS LAST);--> statement-breakpoint
CREATE INDEX "job_runs_node_idx" ON "job_runs" USING btree ("node_id");--> statement-breakpoint
CREATE INDEX "jobs_account_list_idx" ON "jobs" USING btree ("account_id","created_at" DESC NULLS LAST,"id");--> statement-breakpoint
CREATE INDEX "jobs_account_status_idx" ON "jobs" USING btree ("account_id","status","created_at" DESC NULLS LAST);--> statement-breakpoint
CREATE INDEX "jobs_region_status_idx" ON "jobs" USING btree ("region","status");--> statement-breakpoint
CREATE INDEX "jobs_labels_idx" ON "jobs" USING gin ("labels");--> statement-breakpoint
CREATE INDEX "jobs_dead_letter_idx" ON "jobs" USING btree ("dead_lettered_at") WHERE "jobs"."dead_lettered_at" is not null;--> statement-breakpoint
CREATE INDEX "memberships_user_idx" ON "memberships" USING btree ("user_id");--> statement-breakpoint
CREATE INDEX "nodes_region_state_idx" ON "nodes" USING btree ("region","state");--> statement-breakpoint
CREATE UNIQUE INDEX "nodes_agent_token_hash_key" ON "nodes" USING btree ("agent_token_hash");--> statement-breakpoint
CREATE UNIQUE INDEX "nodes_sf_node_key" ON "nodes" USING btree ("sf_node_id");--> statement-breakpoint
CREATE UNIQUE INDEX "usage_events_run_key" ON "usage_events" USING btree ("job_run_id");--> statement-breakpoint
CREATE INDEX "usage_events_account_period_idx" ON "usage_events" USING btree ("account_id","period_start");