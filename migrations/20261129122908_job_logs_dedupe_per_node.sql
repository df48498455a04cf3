DROP INDEX "job_logs_placement_seq_key";--> statement-breakpoint
CREATE UNIQUE INDEX "job_logs_placement_node_seq_key" ON "job_logs" USING btree ("placement_id","node_id","seq");