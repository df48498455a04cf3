-- Hand-written: job events are readable by members of the job's account, like jobs and job_runs.
revoke all on public.job_events from anon, authenticated;
--> statement-breakpoint
alter table public.job_events enable row level security;
--> statement-breakpoint
grant select on public.job_events to authenticated;
--> statement-breakpoint
create policy job_events_member_read on public.job_events for select to authenticated
  using (account_id in (select public.current_account_ids()));
