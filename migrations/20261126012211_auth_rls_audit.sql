-- Hand-written: what drizzle has no words for. Users from Supabase Auth, row-level security by
-- account, the audit trigger on job status, and the per-account activity view.

-- 1. A public.users row (and a personal account the user owns) for every auth.users row.
--    Deleting the auth.users row removes public.users through the foreign key's cascade.
create or replace function public.handle_new_user() returns trigger
  language plpgsql security definer set search_path = '' as $$
declare
  new_account uuid;
begin
  insert into public.users (id, email, display_name)
    values (new.id, new.email, coalesce(new.raw_user_meta_data ->> 'display_name', new.email))
    on conflict (id) do nothing;
  if not exists (select 1 from public.memberships m where m.user_id = new.id) then
    insert into public.accounts (name)
      values (coalesce(nullif(new.email, ''), 'account ' || new.id::text))
      returning id into new_account;
    insert into public.memberships (account_id, user_id, role) values (new_account, new.id, 'owner');
  end if;
  return new;
end $$;
--> statement-breakpoint
drop trigger if exists on_auth_user_created on auth.users;
--> statement-breakpoint
create trigger on_auth_user_created after insert on auth.users
  for each row execute function public.handle_new_user();
--> statement-breakpoint

-- 2. Row-level security: a connection acting as `authenticated` sees only its accounts' rows.
--    The accounts of the caller, read with definer rights so policies on memberships don't recurse.
create or replace function public.current_account_ids() returns setof uuid
  language sql stable security definer set search_path = '' as $$
    select m.account_id from public.memberships m where m.user_id = (select auth.uid())
  $$;
--> statement-breakpoint
revoke all on all tables in schema public from anon, authenticated;
--> statement-breakpoint
revoke all on all sequences in schema public from anon, authenticated;
--> statement-breakpoint
revoke execute on function public.handle_new_user() from anon, authenticated, public;
--> statement-breakpoint
grant execute on function public.current_account_ids() to authenticated;
--> statement-breakpoint
alter table public.accounts enable row level security;
--> statement-breakpoint
alter table public.users enable row level security;
--> statement-breakpoint
alter table public.memberships enable row level security;
--> statement-breakpoint
alter table public.api_keys enable row level security;
--> statement-breakpoint
alter table public.jobs enable row level security;
--> statement-breakpoint
alter table public.job_runs enable row level security;
--> statement-breakpoint
alter table public.gpu_assignments enable row level security;
--> statement-breakpoint
alter table public.usage_events enable row level security;
--> statement-breakpoint
alter table public.invoices enable row level security;
--> statement-breakpoint
alter table public.audit_log enable row level security;
--> statement-breakpoint
alter table public.nodes enable row level security;
--> statement-breakpoint
alter table public.blocks enable row level security;
--> statement-breakpoint
grant select on public.accounts, public.users, public.memberships, public.jobs, public.job_runs,
  public.usage_events, public.invoices, public.audit_log to authenticated;
--> statement-breakpoint
grant select (id, account_id, name, prefix, scopes, last_used_at, expires_at, revoked_at, created_at)
  on public.api_keys to authenticated;
--> statement-breakpoint
create policy accounts_member_read on public.accounts for select to authenticated
  using (id in (select public.current_account_ids()));
--> statement-breakpoint
create policy users_self_read on public.users for select to authenticated
  using (id = (select auth.uid()));
--> statement-breakpoint
create policy memberships_member_read on public.memberships for select to authenticated
  using (account_id in (select public.current_account_ids()));
--> statement-breakpoint
create policy api_keys_member_read on public.api_keys for select to authenticated
  using (account_id in (select public.current_account_ids()));
--> statement-breakpoint
create policy jobs_member_read on public.jobs for select to authenticated
  using (account_id in (select public.current_account_ids()));
--> statement-breakpoint
create policy job_runs_member_read on public.job_runs for select to authenticated
  using (account_id in (select public.current_account_ids()));
--> statement-breakpoint
create policy usage_events_member_read on public.usage_events for select to authenticated
  using (account_id in (select public.current_account_ids()));
--> statement-breakpoint
create policy invoices_member_read on public.invoices for select to authenticated
  using (account_id in (select public.current_account_ids()));
--> statement-breakpoint
create policy audit_log_member_read on public.audit_log for select to authenticated
  using (account_id in (select public.current_account_ids()));
--> statement-breakpoint

-- 3. An audit row for every change of a job's status (and its creation), written by Postgres
--    itself so no code path can skip it. updated_at follows every update.
create or replace function public.audit_job_status() returns trigger
  language plpgsql security definer set search_path = '' as $$
begin
  if tg_op = 'INSERT' then
    insert into public.audit_log (account_id, actor_type, actor_id, action, target_type, target_id, data)
      values (new.account_id, 'system', null, 'job.created', 'job', new.id::text,
              jsonb_build_object('status', new.status, 'tier', new.tier, 'gpu_count', new.gpu_count));
  elsif new.status is distinct from old.status then
    insert into public.audit_log (account_id, actor_type, actor_id, action, target_type, target_id, data)
      values (new.account_id, 'system', null, 'job.status_changed', 'job', new.id::text,
              jsonb_build_object('from', old.status, 'to', new.status, 'attempts', new.attempts));
  end if;
  return new;
end $$;
--> statement-breakpoint
create or replace function public.touch_updated_at() returns trigger
  language plpgsql set search_path = '' as $$
begin
  new.updated_at := now();
  return new;
end $$;
--> statement-breakpoint
revoke execute on function public.audit_job_status(), public.touch_updated_at() from anon, authenticated, public;
--> statement-breakpoint
create trigger jobs_audit_status after insert or update of status on public.jobs
  for each row execute function public.audit_job_status();
--> statement-breakpoint
create trigger jobs_touch_updated_at before update on public.jobs
  for each row execute function public.touch_updated_at();
--> statement-breakpoint

-- 4. Job activity per account and UTC day: counts and GPU-seconds by status. security_invoker so
--    RLS of the caller applies.
create view public.job_activity_daily with (security_invoker = true) as
  select j.account_id,
         (date_trunc('day', j.created_at at time zone 'UTC'))::date as day,
         j.status,
         count(*)::bigint as job_count,
         coalesce(sum(r.gpu_seconds), 0)::bigint as gpu_seconds
    from public.jobs j
    left join lateral (
      select sum(jr.gpu_count * extract(epoch from (coalesce(jr.finished_at, now()) - jr.started_at)))::bigint
               as gpu_seconds
        from public.job_runs jr
       where jr.job_id = j.id and jr.started_at is not null
    ) r on true
   group by j.account_id, 2, j.status;
--> statement-breakpoint
revoke all on public.job_activity_daily from anon, authenticated;
--> statement-breakpoint
grant select on public.job_activity_daily to authenticated;
