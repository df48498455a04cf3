CREATE TABLE "job_events" (
	"job_id" uuid NOT NULL,
	"seq" integer NOT NULL,
	"account_id" uuid NOT NULL,
	"type" text NOT NULL,
	"at" timestamp with time zone NOT NULL,
	"attempt" integer,
	"placement_id" text,
	"node_id" text,
	"gpu_indices" integer[],
	"exit_code" integer,
	"reason" text,
	"data" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "job_events_job_id_seq_pk" PRIMARY KEY("job_id","seq"),
	CONSTRAINT "job_events_type" CHECK ("job_events"."type" in ('queued', 'placed', 'pulling', 'running', 'exited', 'failed', 'lost', 'stop_requested', 'retry_scheduled', 'dead_lettered', 'redriven', 'succeeded', 'cancelled')),
	CONSTRAINT "job_events_seq" CHECK ("job_events"."seq" >= 1)
);
--> statement-breakpoint
ALTER TABLE "job_events" ADD CONSTRAINT "job_events_job_id_jobs_id_fk" FOREIGN KEY ("job_id") REFERENCES "public"."jobs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "job_events" ADD CONSTRAINT "job_events_account_id_accounts_id_fk" FOREIGN KEY ("account_id") REFERENCES "public"."accounts"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "job_events_account_idx" ON "job_events" USING btree ("account_id","at" DESC NULLS LAST);