ALTER TABLE "replica_runs" ADD COLUMN "tier" text;--> statement-breakpoint
ALTER TABLE "replica_runs" ADD COLUMN "gpu_count" integer;--> statement-breakpoint
ALTER TABLE "replica_runs" ADD CONSTRAINT "replica_runs_tier" CHECK ("replica_runs"."tier" is null or "replica_runs"."tier" in ('fast', 'flex'));--> statement-breakpoint
ALTER TABLE "replica_runs" ADD CONSTRAINT "replica_runs_gpu_count" CHECK ("replica_runs"."gpu_count" is null or "replica_runs"."gpu_count" >= 1);