/** The object's tunables. Defaults suit production; tests and operators change them with `configure`. */
import type { PackerConfig } from "../../core/scheduler";

export interface SchedulerSettings {
  /** What the agent is told at registration. */
  heartbeat_interval_ms: number;
  poll_wait_ms: number;
  /** No heartbeat for this long: the node is lost and its runs are retried elsewhere. */
  heartbeat_timeout_ms: number;
  /** How often the alarm sweeps liveness and writes heartbeats, waiting reasons and node rows. */
  housekeeping_ms: number;
  /** Node rows (state, last heartbeat) go to Postgres at most this often per node. */
  node_sync_ms: number;
  /** A queued job's waiting reason goes to Postgres when it changes, at most this often per job. */
  waiting_reason_sync_ms: number;
  /** Retry backoff: base × 2^(failures − 1), capped; ±20 % jitter seeded by job id and attempt. */
  retry_base_ms: number;
  retry_cap_ms: number;
  /** An endpoint replica that ran this long restarts its backoff from the base. */
  replica_backoff_reset_ms: number;
  /** A replica that was ready and has failed its health check for this long is restarted. */
  replica_unhealthy_after_ms: number;
  /**
   * A run (placed, pulling or running) its node's heartbeats have not listed for this long, with no
   * outcome reported, is over: its outcome was lost on the node (an agent crash before its outbox
   * reached the disk, a refused event), or it never reached the node. It ends `lost` (retried) as of
   * when it was first missed.
   */
  unlisted_run_grace_ms: number;
  /** Stop a run this long after its kill deadline if the agent has not. */
  deadline_slack_ms: number;
  /** Outbox: first flush this long after a change (batches writes), rows per flush, and retries. */
  flush_delay_ms: number;
  flush_batch: number;
  outbox_retry_base_ms: number;
  outbox_retry_cap_ms: number;
  /** After this many failed deliveries a row is parked (kept, logged) and its key stops flushing. */
  outbox_max_attempts: number;
  /** Agent event ids are remembered this long for de-duplication. */
  seen_event_ttl_ms: number;
  grace_period_ms: number;
  /** An endpoint request's lease on its replica ends by itself this long after routing (its Worker died). */
  lease_ttl_ms: number;
  packer: Partial<PackerConfig>;
}

export const DEFAULT_SETTINGS: SchedulerSettings = {
  heartbeat_interval_ms: 10_000,
  poll_wait_ms: 25_000,
  heartbeat_timeout_ms: 90_000,
  housekeeping_ms: 15_000,
  node_sync_ms: 60_000,
  waiting_reason_sync_ms: 300_000,
  retry_base_ms: 10_000,
  retry_cap_ms: 600_000,
  replica_backoff_reset_ms: 600_000,
  replica_unhealthy_after_ms: 30_000,
  unlisted_run_grace_ms: 180_000,
  deadline_slack_ms: 30_000,
  flush_delay_ms: 1_000,
  flush_batch: 200,
  outbox_retry_base_ms: 2_000,
  outbox_retry_cap_ms: 300_000,
  outbox_max_attempts: 200,
  seen_event_ttl_ms: 24 * 3_600_000,
  grace_period_ms: 10_000,
  lease_ttl_ms: 15 * 60_000,
  packer: {},
};

/** Exponential backoff with a cap and jitter drawn from a seed (no randomness: replays agree). */
export function backoff(base: number, cap: number, failures: number, seed: number): number {
  const raw = Math.min(cap, base * 2 ** Math.max(0, failures - 1));
  const jitter = ((seed % 1000) / 1000) * 0.4 - 0.2;
  return Math.max(0, Math.round(raw * (1 + jitter)));
}
