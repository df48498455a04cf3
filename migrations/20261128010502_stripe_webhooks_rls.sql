-- Hand-written: Stripe's webhook events are written and read only by the Worker (service role).
alter table public.stripe_events enable row level security;
--> statement-breakpoint
revoke all on public.stripe_events from anon, authenticated;
