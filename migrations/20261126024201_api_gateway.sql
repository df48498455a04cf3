CREATE TABLE "endpoints" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"account_id" uuid NOT NULL,
	"created_by" uuid,
	"created_by_key" uuid,
	"name" text NOT NULL,
	"region" text NOT NULL,
	"tier" text NOT NULL,
	"status" text DEFAULT 'active' NOT NULL,
	"image" text NOT NULL,
	"command" text[] DEFAULT '{}'::text[] NOT NULL,
	"args" text[] DEFAULT '{}'::text[] NOT NULL,
	"env" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"gpu_count" integer NOT NULL,
	"gpu_models" text[] DEFAULT '{}'::text[] NOT NULL,
	"cpu_milli" integer NOT NULL,
	"memory_mib" integer NOT NULL,
	"min_replicas" integer NOT NULL,
	"max_replicas" integer NOT NULL,
	"scale_down_delay_s" integer NOT NULL,
	"port" integer NOT NULL,
	"health_path" text NOT NULL,
	"labels" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"version" integer DEFAULT 1 NOT NULL,
	"synced_version" integer DEFAULT 0 NOT NULL,
	"sync_error" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	"deleted_at" timestamp with time zone,
	CONSTRAINT "endpoints_status" CHECK ("endpoints"."status" in ('active', 'deleted')),
	CONSTRAINT "endpoints_tier" CHECK ("endpoints"."tier" in ('fast', 'flex')),
	CONSTRAINT "endpoints_name" CHECK ("endpoints"."name" ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
	CONSTRAINT "endpoints_gpu_count" CHECK ("endpoints"."gpu_count" between 1 and 8),
	CONSTRAINT "endpoints_gpu_models" CHECK ("endpoints"."gpu_models" <@ array['H100', 'H200']::text[]),
	CONSTRAINT "endpoints_resources" CHECK ("endpoints"."cpu_milli" > 0 and "endpoints"."memory_mib" > 0),
	CONSTRAINT "endpoints_replicas" CHECK ("endpoints"."min_replicas" between 0 and 64 and "endpoints"."max_replicas" between 1 and 64 and "endpoints"."min_replicas" <= "endpoints"."max_replicas"),
	CONSTRAINT "endpoints_scale_down_delay" CHECK ("endpoints"."scale_down_delay_s" between 0 and 86400),
	CONSTRAINT "endpoints_port" CHECK ("endpoints"."port" between 1 and 65535),
	CONSTRAINT "endpoints_versions" CHECK ("endpoints"."synced_version" <= "endpoints"."version")
);
--> statement-breakpoint
CREATE TABLE "idempotency_keys" (
	"account_id" uuid NOT NULL,
	"key" text NOT NULL,
	"method" text NOT NULL,
	"path" text NOT NULL,
	"request_hash" text NOT NULL,
	"state" text DEFAULT 'in_progress' NOT NULL,
	"response_status" integer,
	"response_body" jsonb,
	"locked_until" timestamp with time zone NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	CONSTRAINT "idempotency_keys_account_id_key_pk" PRIMARY KEY("account_id","key"),
	CONSTRAINT "idempotency_keys_state" CHECK ("idempotency_keys"."state" in ('in_progress', 'completed')),
	CONSTRAINT "idempotency_keys_key_len" CHECK (char_length("idempotency_keys"."key") between 1 and 255),
	CONSTRAINT "idempotency_keys_completed" CHECK ("idempotency_keys"."state" = 'in_progress' or "idempotency_keys"."response_status" is not null)
);
--> statement-breakpoint
CREATE TABLE "job_logs" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"placement_id" text NOT NULL,
	"node_id" text NOT NULL,
	"seq" bigint NOT NULL,
	"stream" text NOT NULL,
	"at" timestamp with time zone NOT NULL,
	"line" text NOT NULL,
	"received_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "job_logs_stream" CHECK ("job_logs"."stream" in ('stdout', 'stderr')),
	CONSTRAINT "job_logs_seq" CHECK ("job_logs"."seq" >= 0)
);
--> statement-breakpoint
CREATE TABLE "job_submissions" (
	"job_id" uuid PRIMARY KEY NOT NULL,
	"region" text NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"acked_at" timestamp with time zone,
	"last_attempt_at" timestamp with time zone,
	"last_error" text
);
--> statement-breakpoint
CREATE TABLE "rate_limit_overrides" (
	"account_id" uuid PRIMARY KEY NOT NULL,
	"account_limit" integer NOT NULL,
	"key_limit" integer NOT NULL,
	"window_s" integer NOT NULL,
	"reason" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "rate_limit_overrides_limits" CHECK ("rate_limit_overrides"."account_limit" >= 1 and "rate_limit_overrides"."key_limit" >= 1),
	CONSTRAINT "rate_limit_overrides_window" CHECK ("rate_limit_overrides"."window_s" between 1 and 86400)
);
--> statement-breakpoint
ALTER TABLE "endpoints" ADD CONSTRAINT "endpoints_account_id_accounts_id_fk" FOREIGN KEY ("account_id") REFERENCES "public"."accounts"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "endpoints" ADD CONSTRAINT "endpoints_created_by_users_id_fk" FOREIGN KEY ("created_by") REFERENCES "public"."users"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "endpoints" ADD CONSTRAINT "endpoints_created_by_key_api_keys_id_fk" FOREIGN KEY ("created_by_key") REFERENCES "public"."api_keys"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "idempotency_keys" ADD CONSTRAINT "idempotency_keys_account_id_accounts_id_fk" FOREIGN KEY ("account_id") REFERENCES "public"."accounts"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "job_submissions" ADD CONSTRAINT "job_submissions_job_id_jobs_id_fk" FOREIGN KEY ("job_id") REFERENCES "public"."jobs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "rate_limit_overrides" ADD CONSTRAINT "rate_limit_overrides_account_id_accounts_id_fk" FOREIGN KEY ("account_id") REFERENCES "public"."accounts"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "endpoints_account_list_idx" ON "endpoints" USING btree ("account_id","created_at" DESC NULLS LAST,"id");--> statement-breakpoint
CREATE UNIQUE INDEX "endpoints_account_name_key" ON "endpoints" USING btree ("account_id","name") WHERE "endpoints"."status" = 'active';--> statement-breakpoint
CREATE INDEX "endpoints_unsynced_idx" ON "endpoints" USING btree ("region") WHERE "endpoints"."synced_version" < "endpoints"."version";--> statement-breakpoint
CREATE INDEX "endpoints_labels_idx" ON "endpoints" USING gin ("labels");--> statement-breakpoint
CREATE INDEX "idempotency_keys_expires_idx" ON "idempotency_keys" USING btree ("expires_at");--> statement-breakpoint
CREATE UNIQUE INDEX "job_logs_placement_seq_key" ON "job_logs" USING btree ("placement_id","seq");--> statement-breakpoint
CREATE INDEX "job_logs_placement_id_idx" ON "job_logs" USING btree ("placement_id","id");--> statement-breakpoint
CREATE INDEX "job_submissions_unacked_idx" ON "job_submissions" USING btree ("region") WHERE "job_submissions"."acked_at" is null;