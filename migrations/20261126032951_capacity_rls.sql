-- Hand-written: capacity_samples is the Worker's and the operator's; no API role reads it (Supabase's
-- default privileges would grant a new table to them).
revoke all on public.capacity_samples from anon, authenticated;
