-- Hand-written: replica runs are readable by members of the endpoint's account, like job_runs.
revoke all on public.replica_runs from anon, authenticated;
--> statement-breakpoint
alter table public.replica_runs enable row level security;
--> statement-breakpoint
grant select on public.replica_runs to authenticated;
--> statement-breakpoint
create policy replica_runs_member_read on public.replica_runs for select to authenticated
  using (account_id in (select public.current_account_ids()));
