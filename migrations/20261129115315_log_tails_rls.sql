-- Hand-written: open log tails are written and read only by the Worker (service role).
alter table public.log_tails enable row level security;
--> statement-breakpoint
revoke all on public.log_tails from anon, authenticated;
