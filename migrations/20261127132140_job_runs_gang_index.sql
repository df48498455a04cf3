ALTER TABLE "job_runs" ADD COLUMN "gang_index" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "job_runs" ADD CONSTRAINT "job_runs_gang_index" CHECK ("job_runs"."gang_index" >= 0);