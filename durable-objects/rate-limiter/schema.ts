/** The RateLimiter's SQLite schema, one entry per version. Append; never edit an applied entry. */
export const SCHEMA: readonly string[] = [
  `create table buckets (
     name text primary key,
     tokens real not null,
     updated_ms integer not null,
     window_s integer not null
   );`,
];
