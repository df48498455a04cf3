CREATE TABLE "replica_runs" (
	"id" text PRIMARY KEY NOT NULL,
	"endpoint_id" uuid NOT NULL,
	"account_id" uuid NOT NULL,
	"replica" integer NOT NULL,
	"attempt" integer NOT NULL,
	"node_id" text NOT NULL,
	"status" text NOT NULL,
	"placed_at" timestamp with time zone NOT NULL,
	"started_at" timestamp with time zone,
	"finished_at" timestamp with time zone,
	"exit_code" integer,
	CONSTRAINT "replica_runs_status" CHECK ("replica_runs"."status" in ('placed', 'pulling', 'running', 'succeeded', 'failed', 'cancelled', 'lost')),
	CONSTRAINT "replica_runs_replica" CHECK ("replica_runs"."replica" >= 0),
	CONSTRAINT "replica_runs_attempt" CHECK ("replica_runs"."attempt" >= 1)
);
--> statement-breakpoint
ALTER TABLE "replica_runs" ADD CONSTRAINT "replica_runs_endpoint_id_endpoints_id_fk" FOREIGN KEY ("endpoint_id") REFERENCES "public"."endpoints"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "replica_runs" ADD CONSTRAINT "replica_runs_account_id_accounts_id_fk" FOREIGN KEY ("account_id") REFERENCES "public"."accounts"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "replica_runs" ADD CONSTRAINT "replica_runs_node_id_nodes_id_fk" FOREIGN KEY ("node_id") REFERENCES "public"."nodes"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "replica_runs_endpoint_idx" ON "replica_runs" USING btree ("endpoint_id","placed_at");