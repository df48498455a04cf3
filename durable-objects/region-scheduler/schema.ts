/** The object's SQLite schema, one entry per version. Append; never edit an applied entry. */
export const SCHEMA: readonly string[] = [
  `create table meta (key text primary key, value text not null);
   create table nodes (id text primary key, data text not null);`,
  // v2: the scheduler proper (see README.md beside this file).
  `drop table nodes;
   create table nodes (
     id text primary key,
     zone text not null,
     gpu_model text not null,
     gpus text not null,
     unhealthy_gpus text not null default '[]',
     cpu_milli integer not null,
     memory_mib integer not null,
     state text not null,
     block_id text,
     block_end_at integer,
     hostname text,
     agent_version text,
     registered_at integer not null,
     last_heartbeat_at integer,
     placement_version integer not null default 0,
     lost_at integer,
     synced_heartbeat_at integer
   );
   create table jobs (
     id text primary key,
     kind text not null,
     endpoint_id text,
     account_id text not null,
     tier text not null,
     priority integer not null,
     gpu_count integer not null,
     gpu_models text not null,
     cpu_milli integer not null,
     memory_mib integer not null,
     estimated_duration_s integer,
     max_runtime_s integer,
     max_attempts integer not null,
     submitted_at integer not null,
     spec text not null,
     status text not null,
     attempt integer not null default 0,
     attempt_base integer not null default 0,
     waiting_reason text,
     next_attempt_at integer,
     exit_code integer,
     failure_reason text,
     reasons text not null default '[]',
     dead_lettered_at integer,
     started_at integer,
     finished_at integer,
     event_seq integer not null default 0,
     updated_at integer not null
   );
   create index jobs_status on jobs (status, next_attempt_at);
   create index jobs_endpoint on jobs (endpoint_id) where endpoint_id is not null;
   create table runs (
     id text primary key,
     job_id text not null,
     attempt integer not null,
     gang_index integer not null,
     node_id text not null,
     gpu_indices text not null,
     cpu_milli integer not null,
     memory_mib integer not null,
     status text not null,
     desired text not null,
     stop_reason text,
     placed_at integer not null,
     started_at integer,
     finished_at integer,
     kill_deadline integer,
     exit_code integer,
     oom_killed integer not null default 0,
     failure_reason text
   );
   create index runs_active on runs (node_id) where status in ('placed', 'pulling', 'running');
   create index runs_job on runs (job_id, attempt);
   create table reservations (
     id text primary key,
     gpu_model text not null,
     tier text,
     reason text not null,
     expires_at integer,
     created_at integer not null,
     gpus text not null
   );
   create table endpoints (
     id text primary key,
     spec text not null,
     spec_hash text not null,
     created_at integer not null,
     updated_at integer not null
   );
   create table seen_events (
     node_id text not null,
     event_id text not null,
     at integer not null,
     primary key (node_id, event_id)
   );
   create index seen_events_at on seen_events (at);
   create table timers (
     kind text not null,
     key text not null,
     due_at integer not null,
     primary key (kind, key)
   );
   create index timers_due on timers (due_at);
   create table outbox (
     seq integer primary key autoincrement,
     kind text not null,
     key text not null,
     payload text not null,
     created_at integer not null,
     attempts integer not null default 0,
     next_try_at integer not null default 0,
     last_error text,
     parked integer not null default 0
   );
   create index outbox_key on outbox (key, seq);`,
  // v3: when a run was asked to stop, so a heartbeat that no longer lists it ends it only after the
  // agent has had a heartbeat cycle to act on the stop.
  `alter table runs add column stop_requested_at integer;`,
  // v4: where a node's peers reach it (the agent's report), for multi-node jobs' rank 0.
  `alter table nodes add column address text;`,
  // v5: an endpoint replica's readiness as its agent last reported it (null: not reported yet).
  `alter table runs add column ready integer;`,
  // v6: when that readiness last changed and when the replica was first ready, so a replica that
  // never becomes ready, or stops answering, is restarted.
  `alter table runs add column ready_changed_at integer;
   alter table runs add column first_ready_at integer;`,
  // v7: endpoint traffic: where the scheduler sends a node's replicas' requests (its agent's
  // ingress), and how many replicas traffic wants of an endpoint now (min..max; null: min).
  `alter table nodes add column ingress_url text;
   alter table endpoints add column desired integer;`,
  // v8: the node's container engine leaves a call unanswered (its agent's report, JSON of
  // EngineStuck; null: fine): the node is cordoned, it takes no new work.
  `alter table nodes add column engine_stuck text;`,
  // v9: an operator's cordon (JSON of NodeCordon: since, reason, by; null: none): the node takes no
  // new work until the operator lifts it, whatever its engine says.
  `alter table nodes add column cordon text;`,
  // v10: the tier a run was placed at, so its usage is billed at it even after an endpoint's tier
  // changes while the run stops (null: placed before v10, billed at its job's tier).
  `alter table runs add column tier text;`,
  // v11: when the node was drained (null: never). A drain is for good: it holds across a loss (a
  // lost node comes back draining, never ready). A drain of a node not registered yet waits in
  // `pending_drains` and applies when it registers. Nodes draining before v11 keep their drain (when
  // unknown: their registration).
  `alter table nodes add column drained_at integer;
   update nodes set drained_at = registered_at where state = 'draining';
   create table pending_drains (node_id text primary key, at integer not null);`,
  // v12: since when a queued job has waited for capacity in its current attempt (a retry: from the
  // end of its backoff; a re-drive: from then; null: since submitted_at). Aging, the autoscaler's
  // Flex deadline and the wait shown count from it, not from the first submission.
  `alter table jobs add column queued_at integer;`,
  // v13: the API's version of the spec an endpoint runs (null: synced before v13, older than any),
  // and removed endpoints with the version of their removal: a sync that arrives after a newer one
  // (an older version) is ignored instead of undoing it, e.g. re-creating a deleted endpoint.
  `alter table endpoints add column version integer;
   create table removed_endpoints (id text primary key, version integer not null, removed_at integer not null);
   create index removed_endpoints_at on removed_endpoints (removed_at);`,
];
