-- Hand-written: the market monitoring's SQL that drizzle has no words for.

-- 1. market_orders is the Worker's and the operator's: no API role reads it (Supabase's default
--    privileges would grant a new table to them). updated_at follows every update.
revoke all on public.market_orders from anon, authenticated;
--> statement-breakpoint
create trigger market_orders_touch_updated_at before update on public.market_orders
  for each row execute function public.touch_updated_at();
--> statement-breakpoint

-- 2. Time to expiry of every block active at `at`, with the work running on it (runs placed on its
--    nodes) and whether another block of the same zone and instance type carries on past its end
--    (an extension bought as a new block). The monitor calls it with its own clock; the view is now().
create or replace function public.block_expiry_at(at timestamptz)
  returns table (block_id uuid, region text, zone text, instance_type text, node_count integer, status text,
                 start_at timestamptz, end_at timestamptz, seconds_to_expiry bigint, running_runs integer,
                 extended boolean)
  language sql stable set search_path = '' as $$
    select b.id, b.region, b.zone, b.instance_type, b.node_count, b.status, b.start_at, b.end_at,
           floor(extract(epoch from (b.end_at - at)))::bigint,
           (select count(*) from public.job_runs r join public.nodes n on n.id = r.node_id
             where n.block_id = b.id and r.status in ('placed', 'pulling', 'running'))::integer,
           exists (select 1 from public.blocks x
                    where x.id <> b.id and x.region = b.region and x.zone = b.zone
                      and x.instance_type = b.instance_type and x.status in ('pending', 'active')
                      and x.start_at <= b.end_at and x.end_at > b.end_at)
      from public.blocks b
     where b.status in ('pending', 'active') and b.start_at <= at and b.end_at > at
  $$;
--> statement-breakpoint
revoke execute on function public.block_expiry_at(timestamptz) from anon, authenticated, public;
--> statement-breakpoint
create view public.block_expiry with (security_invoker = true) as
  select * from public.block_expiry_at(now());
--> statement-breakpoint
revoke all on public.block_expiry from anon, authenticated;
