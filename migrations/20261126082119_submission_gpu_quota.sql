-- Hand-written: the GPU quota check of a job submission, inside its insert statement.
--
-- A submission by an account without a spend cap sends BEGIN, the account lock, the insert and
-- COMMIT in one round trip (workers/db/round-trips.ts, pipelinedWrite): there is no moment for the
-- Worker to look at the quota and decide between COMMIT and ROLLBACK. The insert's RETURNING calls
-- this with the account's GPUs in use (read after the lock, without the new job); over the limit it
-- raises SQLSTATE SQ001 with the figures as JSON in DETAIL, the statement fails, and Postgres turns
-- the COMMIT of the failed transaction into a ROLLBACK. The Worker answers with the same
-- gpu_quota_exceeded error the spend-capped path's checkQuota gives (workers/api/quota.ts).
create or replace function public.check_gpu_quota(in_use numeric, requested integer, max_gpus integer)
  returns boolean language plpgsql volatile set search_path = '' as $$
begin
  if in_use + requested > max_gpus then
    raise exception using
      errcode = 'SQ001',
      message = 'gpu_quota_exceeded',
      detail = json_build_object('in_use', in_use, 'requested', requested, 'limit', max_gpus)::text;
  end if;
  return true;
end $$;
--> statement-breakpoint
revoke all on function public.check_gpu_quota(numeric, integer, integer) from public, anon, authenticated;
