/**
 * The agent's view of a container engine: the few operations it needs, in its own terms. The
 * dockerode implementation is in dockerode-engine.ts; nothing else in the agent imports dockerode.
 * "Not found" and "already stopped" are done, not errors, where that is what the caller wants.
 */
export type ContainerState = "created" | "running" | "paused" | "restarting" | "removing" | "exited" | "dead";

export interface ContainerSummary {
  id: string;
  name: string;
  state: ContainerState;
  labels: Record<string, string>;
}

export interface ContainerDetails extends ContainerSummary {
  running: boolean;
  exitCode: number;
  /** From the engine's own record (inspect), the only reliable OOM signal (platform-facts a.6). */
  oomKilled: boolean;
  /** Why the engine could not start it, e.g. `could not select device driver "nvidia" …`. */
  error: string;
  startedAt: number | null;
  finishedAt: number | null;
  env: string[];
  memoryBytes: number;
  memorySwapBytes: number;
  nanoCpus: number;
  pidsLimit: number;
  init: boolean;
  privileged: boolean;
  gpuDeviceIds: string[];
  /** `host`, or the engine's default network (`default` / `bridge`). */
  networkMode: string;
  /** Where this host reaches the container: its bridge address, 127.0.0.1 on the host's network; null if none. */
  address: string | null;
}

export interface ContainerSpec {
  name: string;
  image: string;
  /** Replaces the image's ENTRYPOINT when set (the placement's `command`). */
  entrypoint?: string[];
  /** Replaces the image's CMD when set (the placement's `args`). */
  cmd?: string[];
  env: string[];
  labels: Record<string, string>;
  memoryBytes: number;
  nanoCpus: number;
  pidsLimit: number;
  /** GPU indices as the NVIDIA device driver takes them; empty = no device request. */
  gpuDeviceIds: string[];
  /** Share the host's network (a multi-node job's ranks reach each other at the nodes' addresses). */
  hostNetwork?: boolean;
}

/** An image the engine has (`docker images`; intermediate layers not listed). */
export interface ImageSummary {
  /** The engine's id, `sha256:…`. */
  id: string;
  /** `repo:tag` names; empty for an untagged image. */
  tags: string[];
  /** `repo@sha256:…` names. */
  digests: string[];
  /** When the image was built (ms), from its config: not when this engine got it. */
  created: number;
  /** Bytes on disk, layers shared with other images included. */
  sizeBytes: number;
  labels: Record<string, string>;
}

export interface LogEntry {
  stream: "stdout" | "stderr";
  /** The engine's RFC 3339 timestamp with nanoseconds, fixed width: orders and resumes the log. */
  ts: string;
  text: string;
}

/** A followed log: entries arrive in order through the sink; `pause` holds them back (backpressure). */
/**
 * How a log follow ended: `complete`, the engine closed the log (the container stopped and all of
 * it was read); `cut`, the connection broke first (the engine restarted) or the follow was stopped.
 */
export type LogEnd = "complete" | "cut";

export interface LogFollow {
  pause(): void;
  resume(): void;
  stop(): void;
  /** Resolves when the follow ends, saying how. */
  ended: Promise<LogEnd>;
}

export interface StatsSample {
  cpuTotalNs: number;
  systemCpuNs: number;
  onlineCpus: number;
  memoryBytes?: number;
  memoryLimitBytes?: number;
  pids?: number;
}

export type EngineErrorCode =
  | "not_found"
  | "conflict"
  | "invalid_reference"
  | "image_not_found"
  | "image_unauthorized"
  | "registry_unreachable"
  | "gpu_unavailable"
  /** The engine left the call unanswered past the agent's deadline (engine-watchdog.ts); it may still answer. */
  | "engine_timeout"
  /**
   * A pull reported no progress for the agent's stall limit (engine-watchdog.ts): usually the
   * registry or the network, not the engine, which is not marked stuck. The engine's pull may go on.
   */
  | "pull_stalled"
  | "engine";

export class EngineError extends Error {
  constructor(
    readonly code: EngineErrorCode,
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = "EngineError";
  }
}

/** What a pull from a registry that wants credentials sends (the account's, for the image's registry). */
export interface RegistryCredentials {
  username: string;
  password: string;
  /** The registry as `docker login` names it (`serverAddressOf` in core/schemas/registry.ts). */
  serveraddress: string;
}

export interface ContainerEngine {
  ping(): Promise<void>;
  /** Containers in any state carrying all these labels. */
  list(labels: Record<string, string>): Promise<ContainerSummary[]>;
  /** Null when there is no such container. */
  inspect(id: string): Promise<ContainerDetails | null>;
  hasImage(ref: string): Promise<boolean>;
  /** The engine's id (`sha256:…`) of the image a reference, or an id, names here; null when it has none. */
  imageId(ref: string): Promise<string | null>;
  /**
   * Anonymous without `credentials`. Throws EngineError invalid_reference | image_not_found |
   * image_unauthorized | registry_unreachable | engine.
   */
  pull(ref: string, onProgress: (progress: string) => void, credentials?: RegistryCredentials): Promise<void>;
  /** Where the engine keeps images and containers (`docker info`'s DockerRootDir), as the engine sees it; null if it does not say. */
  dataRoot(): Promise<string | null>;
  listImages(): Promise<ImageSummary[]>;
  /** The image ids of every container the engine has, in any state, whoever made it. */
  containerImageIds(): Promise<Set<string>>;
  /**
   * `docker rmi` without force, by id or by name: a name of an image with other names only loses
   * that name; the image itself goes with its last name (or by id), unless a container uses it.
   * EngineError not_found (404) | conflict (409: in use, several names, child images) | engine.
   */
  removeImage(ref: string): Promise<void>;
  /** Returns the new id; EngineError conflict when the name is taken. */
  create(spec: ContainerSpec): Promise<string>;
  /** EngineError gpu_unavailable when the NVIDIA device request cannot be served. */
  start(id: string): Promise<void>;
  /** Resolves once the container is not running (or `signal` aborts). */
  wait(id: string, signal?: AbortSignal): Promise<void>;
  /** SIGTERM, then SIGKILL after the grace period. Stopped or missing already: done. */
  stop(id: string, graceMs: number): Promise<void>;
  /** Force-removes. Missing already: done. */
  remove(id: string): Promise<void>;
  /** Follows stdout and stderr from `since` (an entry timestamp, inclusive) or the beginning. */
  followLogs(id: string, since: string | null, sink: (entry: LogEntry) => void): Promise<LogFollow>;
  /** One sample, or null when the container is gone or not running. */
  stats(id: string): Promise<StatsSample | null>;
}
