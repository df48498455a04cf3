CREATE TABLE "registry_credentials" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"account_id" uuid NOT NULL,
	"registry" text NOT NULL,
	"username" text NOT NULL,
	"sealed_password" text NOT NULL,
	"created_by" uuid,
	"created_by_key" uuid,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "registry_credentials_registry_len" CHECK (char_length("registry_credentials"."registry") between 1 and 253),
	CONSTRAINT "registry_credentials_username_len" CHECK (char_length("registry_credentials"."username") between 1 and 256)
);
--> statement-breakpoint
ALTER TABLE "registry_credentials" ADD CONSTRAINT "registry_credentials_account_id_accounts_id_fk" FOREIGN KEY ("account_id") REFERENCES "public"."accounts"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "registry_credentials" ADD CONSTRAINT "registry_credentials_created_by_users_id_fk" FOREIGN KEY ("created_by") REFERENCES "public"."users"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "registry_credentials" ADD CONSTRAINT "registry_credentials_created_by_key_api_keys_id_fk" FOREIGN KEY ("created_by_key") REFERENCES "public"."api_keys"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "registry_credentials_account_registry_key" ON "registry_credentials" USING btree ("account_id","registry");--> statement-breakpoint
CREATE INDEX "registry_credentials_account_list_idx" ON "registry_credentials" USING btree ("account_id","created_at" DESC NULLS LAST,"id");