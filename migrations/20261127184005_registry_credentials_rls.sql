-- Hand-written: registry credentials are read only by the Worker (service role), which opens the
-- sealed password to hand it to a node's agent; a user's token reaches none of it (the API lists
-- registries and usernames).
alter table public.registry_credentials enable row level security;
--> statement-breakpoint
revoke all on public.registry_credentials from anon, authenticated;
