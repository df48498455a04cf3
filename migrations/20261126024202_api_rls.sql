-- Hand-written: row-level security for the API gateway's tables, like the foundation's. The Worker
-- connects as the service role and scopes every query by account itself; these policies protect
-- the same rows when reached with a user's token (e.g. through Supabase's own APIs).
alter table public.endpoints enable row level security;
--> statement-breakpoint
alter table public.idempotency_keys enable row level security;
--> statement-breakpoint
alter table public.job_logs enable row level security;
--> statement-breakpoint
alter table public.job_submissions enable row level security;
--> statement-breakpoint
alter table public.rate_limit_overrides enable row level security;
--> statement-breakpoint
revoke all on public.endpoints, public.idempotency_keys, public.job_logs, public.job_submissions,
  public.rate_limit_overrides from anon, authenticated;
--> statement-breakpoint
revoke all on sequence public.job_logs_id_seq from anon, authenticated;
--> statement-breakpoint
-- Members read their endpoints, without the stored environment (it may hold secret values).
grant select (id, account_id, created_by, created_by_key, name, region, tier, status, image, command, args,
  gpu_count, gpu_models, cpu_milli, memory_mib, min_replicas, max_replicas, scale_down_delay_s, port,
  health_path, labels, created_at, updated_at, deleted_at) on public.endpoints to authenticated;
--> statement-breakpoint
create policy endpoints_member_read on public.endpoints for select to authenticated
  using (account_id in (select public.current_account_ids()));
--> statement-breakpoint
-- Members read the logs of their jobs' runs (placement → run → account, from the run's own node).
grant select on public.job_logs to authenticated;
--> statement-breakpoint
create policy job_logs_member_read on public.job_logs for select to authenticated
  using (exists (select 1 from public.job_runs r
                  where r.id = job_logs.placement_id and r.node_id = job_logs.node_id
                    and r.account_id in (select public.current_account_ids())));
--> statement-breakpoint
-- Secret environment values never reach a user connection: members read jobs without `env`.
revoke select on public.jobs from authenticated;
--> statement-breakpoint
grant select (id, account_id, created_by, created_by_key, region, tier, priority, status, image, command, args,
  gpu_count, gpu_models, cpu_milli, memory_mib, max_runtime_s, estimated_duration_s, max_attempts, attempts,
  labels, waiting_reason, exit_code, failure_reason, dead_lettered_at, created_at, updated_at, started_at,
  finished_at) on public.jobs to authenticated;
