ALTER TABLE "api_keys" DROP CONSTRAINT "api_keys_scopes";--> statement-breakpoint
ALTER TABLE "endpoints" ADD COLUMN "target_concurrency" integer DEFAULT 4 NOT NULL;--> statement-breakpoint
ALTER TABLE "endpoints" ADD CONSTRAINT "endpoints_target_concurrency" CHECK ("endpoints"."target_concurrency" between 1 and 1000);--> statement-breakpoint
ALTER TABLE "api_keys" ADD CONSTRAINT "api_keys_scopes" CHECK ("api_keys"."scopes" <@ array['jobs:read', 'jobs:write', 'endpoints:read', 'endpoints:write', 'endpoints:invoke', 'billing:read', 'admin']::text[]);