/**
 * The RegionScheduler's RPC contract: what the API, the agent routes and the capacity manager may
 * call on a region's object, and the plain (structured-clone) values they exchange. Times are epoch
 * milliseconds; CPU in millicores; memory in MiB. Results are tagged values, never thrown errors,
 * for outcomes a caller must handle ("not found", "not allowed in this state").
 */
import type {
  EngineStuck,
  GpuModel,
  Heartbeat,
  JobStatus,
  NodeInventory,
  PlacementEvent,
  PlacementSet,
  RegisterResponse,
  RunStatus,
  Tier,
} from "../../core/schemas";

/** A job as the scheduler needs it (the API has already validated and stored it in Postgres). */
export interface SchedulerJob {
  id: string;
  account_id: string;
  tier: Tier;
  priority: number;
  gpu_count: number;
  /** Empty = any model. */
  gpu_models: GpuModel[];
  cpu_milli: number;
  memory_mib: number;
  estimated_duration_s: number | null;
  max_runtime_s: number;
  max_attempts: number;
  submitted_at: number;
  image: string;
  command: string[];
  args: string[];
  /** Includes secret values: the agent needs them to start the container. Never returned to users. */
  env: { name: string; value: string }[];
}

export type SubmitResult =
  | {
      ok: true;
      status: JobStatus;
      duplicate: boolean;
      /** The job as the scheduler holds it once the call is done (its placement when it was placed at once). */
      state?: JobState | null;
    }
  | { ok: false; code: "invalid"; message: string };

/** One of a run's own GPUs at its node's latest heartbeat (nvidia-smi's figures; null: not reported). */
export interface GpuSample {
  index: number;
  utilisation_pct: number | null;
  memory_used_mib: number | null;
  memory_total_mib: number | null;
}

/**
 * A run's resource use as its node's latest heartbeat measured it: its container's (null: the agent
 * had no figure) and its own GPUs' (only those with figures: none on a host without nvidia-smi).
 * Kept in memory only, so none after the object restarts until the next heartbeat.
 */
export interface RunMetrics {
  /** When the heartbeat arrived. */
  at: number;
  /** Percent of one CPU (200: two CPUs busy), over the last heartbeat interval. */
  cpu_pct: number | null;
  memory_bytes: number | null;
  memory_limit_bytes: number | null;
  pids: number | null;
  gpus: GpuSample[];
}

export interface PlacementView {
  placement_id: string;
  node_id: string;
  zone: string;
  gpu_indices: number[];
  attempt: number;
  /** Its place in a multi-node job (0 on one node). */
  gang_index: number;
  status: RunStatus;
  placed_at: number;
  started_at: number | null;
  /** When it ended, and its container's exit code if it had one (a run of an earlier attempt). */
  finished_at: number | null;
  exit_code: number | null;
  kill_deadline: number | null;
  /** Its resource use at the last heartbeat; null before one measured it, and once it has ended. */
  metrics: RunMetrics | null;
}

export interface JobState {
  id: string;
  status: JobStatus;
  attempt: number;
  max_attempts: number;
  /** When queued: why the packer has not placed it, e.g. `0/12 nodes: 9 insufficient free GPUs, 3 GPU model not allowed`. */
  waiting_reason: string | null;
  /** When waiting to retry after a failure. */
  next_attempt_at: number | null;
  /** All placements of a gang job (k×8 GPUs spans k nodes). */
  placements: PlacementView[];
  exit_code: number | null;
  failure_reason: string | null;
  dead_lettered: boolean;
}

/** The capacity cycle's lease on a region: who holds it, until when (ms since the epoch). */
export interface CapacityLease {
  ok: boolean;
  holder: string;
  until: number;
}

export type CancelResult =
  | { ok: true; status: JobStatus }
  | { ok: false; code: "not_found" | "already_finished"; status?: JobStatus };

/** What an agent's registration carries once the agent route has authenticated its node token. */
export interface NodeRegistration extends NodeInventory {
  node_id: string;
  region: string;
  zone: string;
  /** End of the block the node belongs to (null: no end, e.g. a development node). */
  block_end_at: number | null;
  block_id: string | null;
}

/** An operator's cordon of a node: since when, why (their words, if they gave any) and who. */
export interface NodeCordon {
  since: number;
  reason: string | null;
  /** The operator as the audit log names them (`user:…`, `api_key:…`). */
  by: string;
}

/** What a node call answers: `ok` false for a node the object does not know, or one in a state the call refuses. */
export interface NodeResult {
  ok: boolean;
  state: NodeView["state"] | "unknown";
}

/**
 * What `drain` answers. `ok`: the node is drained (`draining`, or `lost` and it comes back
 * draining). A node the object does not know is `ok` false, `state` "unknown", with `pending` true:
 * the drain is kept and applies when a node of that id registers (until `removeNode` forgets it).
 */
export interface DrainResult extends NodeResult {
  pending?: boolean;
}

export interface NodeView {
  node_id: string;
  zone: string;
  gpu_model: GpuModel;
  gpu_indices: number[];
  unhealthy_gpus: number[];
  /** Healthy, not allocated, not held. */
  free_gpus: number[];
  /** Healthy, not allocated, held by a reservation (Fast headroom): only work of its tier lands there. */
  held_gpus: number[];
  cpu_milli: number;
  cpu_free_milli: number;
  memory_mib: number;
  memory_free_mib: number;
  /**
   * `cordoned`: a ready node that takes no new work (what runs runs on) while an operator's cordon
   * holds or its container engine does not answer.
   */
  state: "ready" | "cordoned" | "draining" | "lost";
  /** The agent's report of its hung container engine (why the node is cordoned); null when fine. */
  engine_stuck: EngineStuck | null;
  /** The operator's cordon, until they lift it; null when none. */
  cordon: NodeCordon | null;
  block_id: string | null;
  block_end_at: number | null;
  last_heartbeat_at: number | null;
  placements: string[];
}

export interface TierQueue {
  tier: Tier;
  queued_jobs: number;
  queued_gpus: number;
  oldest_wait_ms: number;
  /** Per queued job ready to place (not backing off before a retry): GPUs and wait, for the autoscaler. */
  waiting: {
    job_id: string;
    gpu_count: number;
    gpu_models: GpuModel[];
    waited_ms: number;
    /** The job's estimated duration (capped at its max runtime), ms; null for none. */
    estimate_ms: number | null;
  }[];
}

export interface CapacitySnapshot {
  region: string;
  at: number;
  by_model: {
    gpu_model: GpuModel;
    total_gpus: number;
    free_gpus: number;
    busy_gpus: number;
    reserved_gpus: number;
    nodes_ready: number;
    nodes_cordoned: number;
    nodes_draining: number;
  }[];
  queues: TierQueue[];
  /** Running work with its expected end (estimated duration, else the kill deadline). */
  running: {
    job_id: string;
    tier: Tier;
    gpu_count: number;
    gpu_model: GpuModel;
    node_id: string;
    expected_end_at: number | null;
  }[];
  nodes: NodeView[];
}

/** Capacity held back for the capacity manager (e.g. warm Fast headroom, or GPUs of a node about to drain). */
export interface ReservationRequest {
  reservation_id: string;
  gpu_model: GpuModel;
  gpu_count: number;
  tier: Tier | null;
  expires_at: number | null;
  reason: string;
  /**
   * A reservation this one takes over (the last minute's headroom): released in the same
   * transaction, so its GPUs can go into the new one and no packer pass hands them out in
   * between. Released even when the new one cannot be made in full (it is all or none); an id
   * that does not exist (already released or expired) is fine.
   */
  replaces?: string | null;
}
export type ReserveResult =
  | { ok: true; reservation_id: string; node_ids: string[] }
  | { ok: false; code: "insufficient_capacity"; message: string };

export interface DeadLetter {
  job_id: string;
  account_id: string;
  attempts: number;
  dead_lettered_at: number;
  /** Why each attempt failed, oldest first. */
  reasons: string[];
}

/**
 * A long-lived service: the scheduler keeps the replicas its traffic wants placed (at least
 * `min_replicas`, at most `max_replicas`: traffic.ts), restarting any that exit.
 */
export interface EndpointSpec {
  id: string;
  /**
   * The API's version of the endpoint (bumped on every change): the object applies a spec only if
   * it is newer than what it holds for the id, so syncs arriving out of order keep the newest.
   */
  version: number;
  account_id: string;
  tier: Tier;
  image: string;
  command: string[];
  args: string[];
  env: { name: string; value: string }[];
  gpu_count: number;
  gpu_models: GpuModel[];
  cpu_milli: number;
  memory_mib: number;
  min_replicas: number;
  max_replicas: number;
  port: number;
  health_path: string;
  /**
   * A replica not yet ready this long after its container started is restarted. Absent (a spec
   * from before this field): 600.
   */
  startup_timeout_s?: number;
  /**
   * Requests in flight one replica is meant to take: traffic keeps ceil(in flight / this) replicas
   * (within min..max). Absent (a spec from before traffic was routed): 4.
   */
  target_concurrency?: number;
  /** How long replicas traffic no longer needs are kept. Absent: 300. */
  scale_down_delay_s?: number;
}
export interface EndpointState {
  id: string;
  /** The version of the spec it runs (null: synced before the object kept versions). */
  version: number | null;
  desired_replicas: number;
  replicas: {
    replica_id: string;
    status: JobStatus;
    /** How many times it has been placed (a replica is placed again whenever its run ends). */
    starts: number;
    /** Why its last run ended (`exit code 1`, `OOM-killed`, …); null before any ended. */
    last_exit: string | null;
    placement: PlacementView | null;
    waiting_reason: string | null;
    /** Its readiness check answered 2xx/3xx at the last heartbeat; null: running, not reported yet; false otherwise. */
    ready: boolean | null;
  }[];
}

/**
 * A request routed to an endpoint: a lease on one ready replica, to be returned with
 * `endpointRequestDone` when the response has ended. `no_ready_replica`: none could take it within
 * the wait (`waiting_reason` says what the replicas are doing); `not_found`: this object has no
 * such endpoint (not synced yet, or removed).
 */
export type RouteResult =
  | { ok: true; lease_id: string; placement_id: string; replica_id: string; node_id: string; ingress_url: string }
  | { ok: false; code: "not_found" }
  | { ok: false; code: "no_ready_replica"; waiting_reason: string };

/**
 * How a request is routed: `wait_ms` for a ready replica when none is, replicas (placements) to
 * `exclude` (they failed this request). `still_waiting`: a function of the caller's (passed as an
 * RPC stub) that the object calls before it hands over a lease it waited for; once the caller's
 * request has ended (its client left) the call fails, and the lease is returned, not held; so
 * is it when the call does not settle within STILL_WAITING_TIMEOUT_MS (5 s, RegionScheduler.ts).
 */
export type RouteOptions = { wait_ms?: number; exclude?: string[]; still_waiting?: () => unknown };

export type EventResult = { ok: true; duplicate: boolean } | { ok: false; code: "unknown_placement" | "wrong_node" };

/** The methods other parts call. `RegionScheduler` implements this interface. */
export interface RegionSchedulerRpc {
  submit(job: SchedulerJob): Promise<SubmitResult>;
  cancel(jobId: string): Promise<CancelResult>;
  jobState(jobId: string): Promise<JobState | null>;
  registerNode(registration: NodeRegistration): Promise<RegisterResponse>;
  heartbeat(nodeId: string, heartbeat: Heartbeat): Promise<NodeResult>;
  pollPlacements(nodeId: string, sinceVersion: number, waitMs: number): Promise<PlacementSet>;
  /** The account and image of a placement active on `nodeId` (for its registry credentials); null if none. */
  placementImage(nodeId: string, placementId: string): Promise<{ account_id: string; image: string } | null>;
  reportEvent(nodeId: string, event: PlacementEvent): Promise<EventResult>;
  capacitySnapshot(): Promise<CapacitySnapshot>;
  takeCapacityLease(holder: string, ttlMs: number): Promise<CapacityLease>;
  releaseCapacityLease(holder: string): Promise<{ released: boolean }>;
  reserve(request: ReservationRequest): Promise<ReserveResult>;
  release(reservationId: string): Promise<{ released: boolean }>;
  /**
   * No new work lands on the node again, for good; what runs finishes. Holds across a loss (the node
   * comes back `draining`); on a lost node it is kept for its return; on a node not registered yet
   * it waits for the registration (see DrainResult).
   */
  drain(nodeId: string): Promise<DrainResult>;
  /**
   * An operator keeps new work off a ready node (what runs runs on) until `uncordon`. A draining or
   * lost node is refused (`ok` false, its state). Again on a node they cordoned: nothing changes,
   * the first cordon's time, reason and operator stay.
   */
  cordon(nodeId: string, cordon: Omit<NodeCordon, "since">): Promise<NodeResult>;
  /**
   * Lifts the operator's cordon (`by`: who, for the audit row); the node takes new work at once,
   * unless its container engine does not answer (that cordon lifts when it answers).
   */
  uncordon(nodeId: string, by?: string): Promise<NodeResult>;
  /** The node's block changed (an extension bought more time): the packer scores it by its new end. */
  setNodeBlock(nodeId: string, blockId: string | null, blockEndAt: number | null): Promise<{ ok: boolean }>;
  /**
   * The node left the fleet (its block ended, it was sold, it never came): forgotten, its GPUs no
   * longer counted; work still on it ends as lost and is retried elsewhere. Unknown: `removed` false.
   */
  removeNode(nodeId: string): Promise<{ removed: boolean }>;
  listNodes(): Promise<NodeView[]>;
  deadLetters(): Promise<DeadLetter[]>;
  /**
   * The accounts with usage (runs, usage events) overlapping [`startMs`, `endMs`) that this object
   * has not delivered to Postgres yet: their invoice for that month must wait for it.
   */
  undeliveredUsage(startMs: number, endMs: number): Promise<{ accounts: string[] }>;
  redrive(jobId: string): Promise<{ ok: boolean; status?: JobStatus }>;
  /**
   * Keep the endpoint at `spec`, unless the object holds a newer version of it, or its removal at
   * this version or later (a sync that arrived late): then nothing changes. Answers the endpoint as
   * the object holds it after the call (its `version` tells whether this spec is the one it runs);
   * null when it is removed.
   */
  ensureEndpoint(spec: EndpointSpec): Promise<EndpointState | null>;
  /**
   * Stop the endpoint's replicas and forget it, remembering the removal's `version` (for 30 days:
   * long after any late sync could arrive) so an older `ensureEndpoint` cannot bring it back. A
   * newer spec held is kept (a late removal). `version`: the removal's, or the newer spec's;
   * `removed`: whether this call removed it.
   */
  removeEndpoint(endpointId: string, version: number): Promise<{ removed: boolean; version: number }>;
  endpointState(endpointId: string): Promise<EndpointState | null>;
  /** Lease a ready replica for one request, waiting up to `wait_ms` for one (scaling up as needed). */
  routeEndpoint(endpointId: string, opts?: RouteOptions): Promise<RouteResult>;
  /** The request of a lease has ended (its answer was sent, or it failed). */
  endpointRequestDone(leaseId: string): Promise<{ ok: boolean }>;
  /**
   * A long request (a WebSocket) is still open: its lease lives another `lease_ttl_ms`. `holder`
   * (the lease's endpoint and replica placement) lets a lease the object forgot be taken again.
   */
  renewEndpointLease(leaseId: string, holder?: { endpoint_id: string; placement_id: string }): Promise<{ ok: boolean }>;
}
