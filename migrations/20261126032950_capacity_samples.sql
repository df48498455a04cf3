CREATE TABLE "capacity_samples" (
	"region" text NOT NULL,
	"at" timestamp with time zone NOT NULL,
	"demand_gpus" integer NOT NULL,
	"busy_gpus" integer NOT NULL,
	"queued_fast_gpus" integer NOT NULL,
	"queued_flex_gpus" integer NOT NULL,
	"total_gpus" integer NOT NULL,
	"free_gpus" integer NOT NULL,
	CONSTRAINT "capacity_samples_region_at_pk" PRIMARY KEY("region","at"),
	CONSTRAINT "capacity_samples_counts" CHECK ("capacity_samples"."demand_gpus" >= 0 and "capacity_samples"."busy_gpus" >= 0 and "capacity_samples"."queued_fast_gpus" >= 0 and "capacity_samples"."queued_flex_gpus" >= 0 and "capacity_samples"."total_gpus" >= 0 and "capacity_samples"."free_gpus" >= 0)
);
--> statement-breakpoint
ALTER TABLE "capacity_samples" ENABLE ROW LEVEL SECURITY;