/**
 * The node agent: registers the node, long-polls its desired placements, reconciles them with the
 * containers it runs, and reports events, logs and heartbeats. Containers never depend on the agent
 * or the control plane being up: an outage only delays reports (kept on disk), and a restarted
 * agent adopts its containers by label.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { type EngineStuck, Heartbeat, type NodeInventory, type Placement, type PlacementSet } from "../core/schemas";
import { Backoff, type BackoffPolicy, DEFAULT_BACKOFF } from "./backoff";
import type { Clock } from "./clock";
import { LABELS, ownLabels } from "./container-spec";
import { type ControlPlaneApi, ControlPlaneError } from "./control-plane";
import type { ContainerEngine, ContainerSummary, LogFollow, StatsSample } from "./docker/engine";
import { DEFAULT_ENGINE_TIMEOUT_MS, DEFAULT_PULL_STALL_MS, EngineWatchdog, formatSeconds } from "./engine-watchdog";
import type { GpuInventoryResult, GpuSource } from "./gpu";
import { probeReady } from "./health-check";
import { type DiskUsageReader, diskFreeBytes, type HostFacts } from "./host";
import { DEFAULT_IMAGE_GC, ImageGc, type ImageGcConfig, ImageUse } from "./image-gc";
import { Ingress, type IngressTarget } from "./ingress";
import { DEFAULT_LOG_SHIPPER, LogShipper, type LogShipperOptions } from "./log-shipper";
import { errorText, type Logger } from "./logger";
import { containerMetrics } from "./metrics";
import { EventOutbox } from "./outbox";
import { LOG_SILENCE_AFTER_EXIT_MS, PlacementRun, type RunContext, shipContainerLog } from "./placement-run";
import { PrivateImages } from "./private-images";
import type { PullPolicy } from "./pull-policy";
import { holdsResources, planReconcile, type RemoveStep } from "./reconcile";
import { AgentState } from "./state";

export const AGENT_VERSION = "0.1.0";

/** How long a heartbeat waits for the engine's list of containers before it goes with the last one. */
const HEARTBEAT_LISTING_WAIT_MS = 2_000;

export interface AgentConfig {
  /** Labels the containers this agent owns; the host name unless set. */
  agentName: string;
  dataDir: string;
  zone?: string;
  pidsLimit: number;
  /** A container's CPU limit never exceeds this (the host's real cores when it declares more). */
  maxContainerCpuMilli?: number;
  /** How long a running container without a placement is left alone before it is stopped and removed. */
  orphanGraceMs: number;
  /** Grace period when stopping an orphan (its placement, and so its own grace period, is unknown). */
  orphanStopGraceMs: number;
  reconcileIntervalMs: number;
  pullProgressIntervalMs: number;
  /** When to ask the registry for an image before a start (see pull-policy.ts). */
  pullPolicy: PullPolicy;
  maxOutboxEvents: number;
  backoff: BackoffPolicy;
  logShipping: LogShipperOptions;
  /** Removing unused images before the disk fills (image-gc.ts). */
  imageGc: ImageGcConfig;
  /**
   * How often a replica that runs but was not in the last heartbeat as ready is probed: its first
   * ready answer sends a heartbeat at once, so the control plane does not wait for the interval.
   */
  startingReadinessIntervalMs: number;
  /** The node's ingress to its endpoint replicas (ingress.ts); absent: none, the node serves no traffic. */
  ingress?: IngressConfig;
  /**
   * How long the container engine may leave a quick call (create, start, inspect, …; a stop: its
   * grace period plus this) unanswered before the agent gives up on it and reports the engine stuck
   * (engine-watchdog.ts).
   */
  engineTimeoutMs: number;
  /**
   * How long an image pull may report no progress before the agent gives up on it and fails the
   * placement, retryable (engine-watchdog.ts); the engine is not marked stuck.
   */
  pullStallMs: number;
  /**
   * How long the log stream of a container seen exited may give nothing before the agent stops
   * following it and reports the exit (placement-run.ts, LOG_SILENCE_AFTER_EXIT_MS).
   */
  logSilenceAfterExitMs: number;
}

export interface IngressConfig {
  port: number;
  host: string;
  /** Registered as the inventory's `ingress_url`: where the control plane reaches the ingress. */
  url: string;
  /** How long a replica may take to answer (default: the ingress's). */
  timeoutMs?: number;
}

export const DEFAULT_AGENT_CONFIG: Omit<AgentConfig, "agentName" | "dataDir"> = {
  pidsLimit: 32_768,
  orphanGraceMs: 60_000,
  orphanStopGraceMs: 10_000,
  reconcileIntervalMs: 10_000,
  pullProgressIntervalMs: 2_000,
  pullPolicy: "auto",
  maxOutboxEvents: 5_000,
  backoff: DEFAULT_BACKOFF,
  logShipping: DEFAULT_LOG_SHIPPER,
  imageGc: DEFAULT_IMAGE_GC,
  // A cold start waits for this probe: 250 ms costs a local HTTP GET per starting replica, 4 a second.
  startingReadinessIntervalMs: 250,
  engineTimeoutMs: DEFAULT_ENGINE_TIMEOUT_MS,
  pullStallMs: DEFAULT_PULL_STALL_MS,
  logSilenceAfterExitMs: LOG_SILENCE_AFTER_EXIT_MS,
};

export interface AgentDeps {
  /** The engine as it is: the agent puts its deadlines on it (EngineWatchdog). */
  engine: ContainerEngine;
  api: ControlPlaneApi;
  gpus: GpuSource;
  host: HostFacts;
  clock: Clock;
  random: () => number;
  log: Logger;
  /** Reads a file system's usage for image GC (default: statfs). */
  diskUsage?: DiskUsageReader;
}

export class Agent {
  readonly state: AgentState;
  readonly outbox: EventOutbox;
  readonly shipper: LogShipper;
  readonly images: PrivateImages;
  readonly imageUse: ImageUse;
  readonly imageGc: ImageGc;
  /** The engine every part of the agent uses: deadlines on its quick calls, and whether it is stuck. */
  readonly engine: EngineWatchdog;
  private readonly runs = new Map<string, PlacementRun>();
  /** Containers being retired without a run (found after a restart, placement gone). */
  private readonly retiring = new Map<string, Promise<void>>();
  private readonly follows = new Set<LogFollow>();
  private readonly stopping = new AbortController();
  private readonly loops: Promise<unknown>[] = [];
  private readonly ctx: RunContext;
  private desired: Placement[] | null;
  private orphanSince = new Map<string, number>();
  /**
   * Placements whose containers (ours, with a run or not) the engine last listed as running: the
   * heartbeat's `running` while the engine cannot be asked.
   */
  private listedRunning = new Set<string>();
  /** When (`Clock.monotonic`) the engine last listed our containers (a reconcile's or a heartbeat's listing). */
  private listedAt = Number.NEGATIVE_INFINITY;
  private previousStats = new Map<string, StatsSample>();
  private heartbeatIntervalMs = 10_000;
  /** Running containers' addresses as this host reaches them (for readiness checks), by container id. */
  private readonly addresses = new Map<string, string>();
  private pollWaitMs = 25_000;
  /** Placements the last heartbeat reported ready; a checked replica not in it is still starting (or unready). */
  private reportedReady = new Set<string>();
  /** Set while a heartbeat is being built and sent. */
  private beating = false;
  /** A heartbeat is wanted before the interval is over; `heartbeatWake` cuts the wait short. */
  private heartbeatWanted = false;
  private heartbeatWake: AbortController | null = null;
  private ingress: Ingress | null = null;
  /** The key the control plane sends to the ingress (RegisterResponse); memory only, renewed at each registration. */
  private ingressKey: string | null = null;
  private reregister = false;
  private reconciling: Promise<void> | null = null;
  private reconcileAgain = false;
  /** Set once a reconcile has compared the desired set with the engine's containers in this process. */
  private reconciledOnce = false;
  /**
   * Whether this process has had the control plane's placement set. Until then it adopts the
   * containers it finds and enforces their deadlines, but starts nothing from the set saved before a
   * restart: that set may be stale (the node lost meanwhile, its work placed elsewhere).
   */
  private polled = false;
  private inventory: GpuInventoryResult | null = null;
  /** When (`Clock.monotonic`) the engine last became stuck (for the recovery's log line). */
  private engineStuckAt: number | null = null;
  /** The node's state in the control plane's last heartbeat answer (`ready`, `cordoned`, `draining`…). */
  private nodeState: string | null = null;
  /** Set while the engine has not answered since the process began (see waitForEngine). */
  private engineDown: EngineStuck | null = null;
  /** When (`Clock.monotonic`) engineDown was set: its `since` is a wall-clock time, for the control plane. */
  private engineDownAt = 0;
  /** The registration made while the engine did not answer, if any (connect waits for it). */
  private registeredEarly: Promise<boolean> | null = null;

  private constructor(
    private readonly config: AgentConfig,
    private readonly deps: AgentDeps,
  ) {
    mkdirSync(config.dataDir, { recursive: true });
    this.engine = new EngineWatchdog(deps.engine, {
      timeoutMs: config.engineTimeoutMs,
      pullStallMs: config.pullStallMs,
      clock: deps.clock,
      onChange: (stuck) => this.engineStuckChanged(stuck),
    });
    this.state = AgentState.open(config.dataDir, deps.log);
    this.outbox = EventOutbox.open(config.dataDir, { maxEvents: config.maxOutboxEvents, log: deps.log });
    this.shipper = new LogShipper(
      (placementId, cursor) => this.state.updatePlacement(placementId, { log: cursor }),
      deps.log,
      config.logShipping,
    );
    this.desired = this.state.placementSet?.placements ?? null;
    this.images = new PrivateImages(this.state, this.engine, deps.clock, deps.log);
    this.imageUse = new ImageUse(this.state, deps.clock);
    this.imageGc = new ImageGc(config.imageGc, {
      engine: this.engine,
      use: this.imageUse,
      privateImages: this.images,
      clock: deps.clock,
      log: deps.log,
      dataDir: config.dataDir,
      protectedRefs: () => this.protectedImages(),
      ...(deps.diskUsage ? { readDisk: deps.diskUsage } : {}),
      signal: this.stopping.signal,
    });
    this.ctx = {
      engine: this.engine,
      api: deps.api,
      images: this.images,
      clock: deps.clock,
      state: this.state,
      outbox: this.outbox,
      shipper: this.shipper,
      log: deps.log,
      agentName: config.agentName,
      nodeId: () => this.state.nodeId ?? "unregistered",
      pidsLimit: config.pidsLimit,
      ...(config.maxContainerCpuMilli !== undefined ? { maxCpuMilli: config.maxContainerCpuMilli } : {}),
      pullProgressIntervalMs: config.pullProgressIntervalMs,
      pullPolicy: config.pullPolicy,
      incarnation: randomBytes(4).toString("hex"),
      logSilenceAfterExitMs: config.logSilenceAfterExitMs,
      backoff: config.backoff,
      random: deps.random,
      onSettled: () => this.requestReconcile(),
      imageUsed: (imageId) => this.imageUse.touch(imageId),
      diskFull: () => void this.imageGc.request("no_space"),
    };
  }

  /** Starts the agent's loops. Throws only for what no retry can fix (e.g. unsupported GPUs). */
  static async start(config: AgentConfig, deps: AgentDeps): Promise<Agent> {
    const agent = new Agent(config, deps);
    await agent.begin();
    return agent;
  }

  /** Stops the agent, not its containers: they keep running and the next agent process adopts them. */
  async stop(): Promise<void> {
    this.stopping.abort();
    for (const run of this.runs.values()) run.close();
    for (const follow of this.follows) follow.stop();
    await Promise.allSettled([...this.loops, this.imageGc.idle(), this.ingress?.stop()]);
  }

  /** Images image GC must keep: the desired set's and those of runs in progress; null before any desired set. */
  private protectedImages(): string[] | null {
    if (this.desired === null) return null;
    return [...new Set([...this.desired, ...[...this.runs.values()].map((r) => r.placement)].map((p) => p.image))];
  }

  /** Placements whose containers run now. */
  runningPlacements(): string[] {
    return [...this.runs.values()].filter((r) => r.running).map((r) => r.id);
  }

  /**
   * Where the ingress sends a placement's requests: a replica (it has a readiness check, so an
   * endpoint port) this agent runs now and has not been asked to stop, at its container's address.
   */
  ingressTarget(placementId: string): IngressTarget | null {
    const run = this.runs.get(placementId);
    const check = run?.placement.health_check;
    if (!run || !check || run.status !== "active" || !run.running || run.placement.desired !== "running") return null;
    const host = run.containerId ? this.addresses.get(run.containerId) : undefined;
    return host ? { host, port: check.port } : null;
  }

  private get signal(): AbortSignal {
    return this.stopping.signal;
  }

  private async begin(): Promise<void> {
    this.inventory = await this.deps.gpus.inventory();
    // Before registering: the URL the control plane learns answers from then on.
    if (this.config.ingress) await this.startIngress(this.config.ingress);
    await this.waitForEngine();
    if (this.signal.aborted) return;
    // Before any run: images a pull with credentials left unrecorded, and records of images gone.
    await this.images.start();
    const delivery = {
      clock: this.deps.clock,
      signal: this.signal,
      log: this.deps.log,
      policy: this.config.backoff,
      random: this.deps.random,
    };
    this.loop(
      "event delivery",
      this.outbox.deliver((events) => this.deps.api.events({ events }), delivery),
    );
    this.loop(
      "log delivery",
      this.shipper.deliver((lines) => this.deps.api.logs({ lines }), delivery),
    );
    this.loop(
      "reconcile timer",
      this.every(
        () => this.config.reconcileIntervalMs,
        () => this.requestReconcile(),
      ),
    );
    this.loop("placement poll", this.connect());
    if (this.imageGc.enabled) {
      this.loop(
        "image gc timer",
        this.every(
          () => this.config.imageGc.intervalMs,
          () => void this.imageGc.request("interval"),
        ),
      );
    }
    // With an identity and a desired set from before a restart, carry on at once: adopt, enforce deadlines.
    if (this.state.nodeId && this.desired) this.requestReconcile();
  }

  private async startIngress(config: IngressConfig): Promise<void> {
    const ingress = new Ingress({
      port: config.port,
      host: config.host,
      log: this.deps.log,
      lookup: (id) => this.ingressTarget(id),
      key: () => this.ingressKey,
      ...(config.timeoutMs !== undefined ? { timeoutMs: config.timeoutMs } : {}),
    });
    try {
      await ingress.start();
    } catch (error) {
      throw new Error(`the ingress cannot listen on ${config.host}:${config.port}: ${errorText(error)}`);
    }
    this.ingress = ingress;
    this.deps.log("info", "ingress listening", { host: config.host, port: config.port, url: config.url });
  }

  /**
   * Until the engine answers a ping. An agent with no placements to adopt registers meanwhile and
   * heartbeats with `engine_stuck` (operation `ping`), so the node shows up cordoned, with the
   * reason, instead of not at all; it polls for placements only once the engine answers. One with
   * placements to adopt (a restart) stays silent until then, as its heartbeats could not say what
   * runs.
   */
  private async waitForEngine(): Promise<void> {
    const backoff = new Backoff(this.config.backoff, this.deps.random);
    while (!this.signal.aborted) {
      try {
        await this.engine.ping();
        if (this.engineDown) {
          this.deps.log("info", "container engine answers", {
            down_ms: this.deps.clock.monotonic() - this.engineDownAt,
          });
          this.engineDown = null;
          this.heartbeatSoon();
        }
        return;
      } catch (error) {
        const delay = backoff.next();
        this.deps.log("warn", "container engine not reachable; retrying", {
          retry_in_ms: delay,
          error: errorText(error),
        });
        if (!this.engineDown && !this.desired?.length) {
          this.engineDownAt = this.deps.clock.monotonic();
          this.engineDown = {
            since: this.deps.clock.now(),
            operation: "ping",
            detail: `the container engine is not reachable: ${errorText(error)}`.slice(0, 512),
          };
          this.registeredEarly = this.registerAndBeat();
        }
        await this.deps.clock.sleep(delay, this.signal);
      }
    }
  }

  /** Registers and starts the heartbeats; false if stopped first. Once per process. */
  private async registerAndBeat(): Promise<boolean> {
    if (!(await this.register())) return false;
    this.loop("heartbeats", this.heartbeats());
    return true;
  }

  /**
   * Keeps a loop for `stop` to wait on. A loop that throws (a bug: writes to the data folder do not
   * throw, see files.ts) is logged, never left as an unhandled rejection, which would end the process.
   */
  private loop(what: string, running: Promise<unknown>): void {
    this.loops.push(
      running.catch((error) => this.deps.log("error", `${what} failed and stopped`, { error: errorText(error) })),
    );
  }

  /** What registrations and heartbeats say of the engine: a call left unanswered, or no answer since start. */
  private engineReport(): EngineStuck | undefined {
    return this.engine.stuck() ?? this.engineDown ?? undefined;
  }

  private nodeInventory(): NodeInventory {
    const inv = this.inventory!;
    const stuck = this.engineReport();
    return {
      hostname: this.deps.host.hostname,
      agent_version: AGENT_VERSION,
      gpu_model: inv.model,
      gpus: inv.gpus,
      cpu_milli: this.deps.host.cpuMilli,
      memory_mib: this.deps.host.memoryMib,
      ...(this.config.zone ? { zone: this.config.zone } : {}),
      ...(this.deps.host.address ? { address: this.deps.host.address } : {}),
      ...(this.config.ingress ? { ingress_url: this.config.ingress.url } : {}),
      ...(stuck ? { engine_stuck: stuck } : {}),
    };
  }

  private async register(): Promise<boolean> {
    const backoff = new Backoff(this.config.backoff, this.deps.random);
    while (!this.signal.aborted) {
      try {
        const res = await this.deps.api.register(this.nodeInventory());
        this.state.setIdentity(res.node_id, res.region);
        this.heartbeatIntervalMs = res.heartbeat_interval_ms;
        this.pollWaitMs = res.poll_wait_ms;
        this.ingressKey = res.ingress_key ?? null;
        this.deps.log("info", "registered", { node_id: res.node_id, region: res.region });
        if (this.ingress && this.ingressKey === null) {
          this.deps.log("warn", "the control plane gave no ingress key: the ingress refuses every request");
        }
        return true;
      } catch (error) {
        const delay = backoff.next();
        const level = error instanceof ControlPlaneError && error.kind === "rejected" ? "error" : "warn";
        this.deps.log(level, "registration failed; retrying", { retry_in_ms: delay, error: errorText(error) });
        await this.deps.clock.sleep(delay, this.signal);
      }
    }
    return false;
  }

  /** Registers, then long-polls the desired set and sends heartbeats until stopped. */
  private async connect(): Promise<void> {
    if (!(await (this.registeredEarly ?? this.registerAndBeat()))) return;
    const watch = this.watchStartingReplicas();
    await this.pollPlacements();
    await watch;
  }

  private async pollPlacements(): Promise<void> {
    const backoff = new Backoff(this.config.backoff, this.deps.random);
    // 0 answers at once with the current set: a new process starts from the control plane's view.
    let since = 0;
    while (!this.signal.aborted) {
      if (this.reregister) {
        this.reregister = false;
        if (!(await this.register())) return;
      }
      let set: PlacementSet;
      try {
        set = await this.deps.api.placements(since, this.pollWaitMs, this.signal);
        backoff.reset();
      } catch (error) {
        if (this.signal.aborted) return;
        if (error instanceof ControlPlaneError && (error.status === 401 || error.status === 404))
          this.reregister = true;
        const delay = backoff.next();
        this.deps.log(backoff.failures > 3 ? "warn" : "debug", "placement poll failed; retrying", {
          retry_in_ms: delay,
          error: errorText(error),
        });
        await this.deps.clock.sleep(delay, this.signal);
        continue;
      }
      if (set.version !== since || this.desired === null || !this.polled) {
        this.polled = true;
        this.desired = set.placements;
        // First, so the new containers' first engine calls are on their way during the disk write.
        this.launchNew();
        this.state.setPlacementSet(set);
      }
      since = set.version;
      this.requestReconcile();
    }
  }

  private async heartbeats(): Promise<void> {
    while (!this.signal.aborted) {
      this.heartbeatWanted = false;
      this.beating = true;
      try {
        const res = await this.deps.api.heartbeat(await this.heartbeat());
        if (res.state === "unknown") {
          this.deps.log("warn", "control plane does not know this node; registering again");
          // The placement poll registers again; before it runs (the engine not up yet), this loop does.
          if (this.engineDown) await this.register();
          else this.reregister = true;
        } else if (res.state !== this.nodeState) {
          // Once per change: cordoned (by an operator, or for a hung engine), draining, ready again.
          if (this.nodeState !== null || res.state !== "ready") {
            this.deps.log(res.state === "ready" ? "info" : "warn", `control plane: this node is now ${res.state}`, {
              was: this.nodeState,
            });
          }
          this.nodeState = res.state;
        }
      } catch (error) {
        this.deps.log("debug", "heartbeat failed", { error: errorText(error) });
      } finally {
        this.beating = false;
      }
      if (this.heartbeatWanted) continue;
      const wake = new AbortController();
      this.heartbeatWake = wake;
      await this.deps.clock.sleep(this.heartbeatIntervalMs, AbortSignal.any([this.signal, wake.signal]));
      this.heartbeatWake = null;
    }
  }

  /** The watchdog's news: logged once each way, and the control plane told at once (it cordons the node). */
  private engineStuckChanged(stuck: EngineStuck | undefined): void {
    const now = this.deps.clock.monotonic();
    if (stuck) {
      this.engineStuckAt = now;
      // Heartbeats carry engine_stuck (the control plane cordons the node) until every late call settled.
      this.deps.log("warn", "container engine stuck: a call went unanswered past the engine timeout", {
        operation: stuck.operation,
        detail: stuck.detail,
        since: new Date(stuck.since).toISOString(),
        engine_timeout: formatSeconds(this.config.engineTimeoutMs),
      });
    } else {
      this.deps.log("info", "container engine answers again", {
        stuck_ms: this.engineStuckAt === null ? undefined : now - this.engineStuckAt,
      });
      this.engineStuckAt = null;
    }
    if (!this.signal.aborted) this.heartbeatSoon();
  }

  /** Sends the next heartbeat now rather than at the end of the interval. */
  private heartbeatSoon(): void {
    this.heartbeatWanted = true;
    this.heartbeatWake?.abort();
  }

  /**
   * Heartbeats probe readiness only every interval (10 s by default). Meanwhile this probes the
   * replicas that run but were not reported ready, every `startingReadinessIntervalMs`, and brings
   * the heartbeat forward at the first ready answer. Without such replicas a tick only looks at
   * the runs in memory: no engine call, no probe.
   */
  private async watchStartingReplicas(): Promise<void> {
    while (!this.signal.aborted) {
      await this.deps.clock.sleep(this.config.startingReadinessIntervalMs, this.signal);
      // A heartbeat on its way probes them itself.
      if (this.signal.aborted || this.beating || this.heartbeatWanted) continue;
      const starting = this.checkedReplicas().filter((run) => !this.reportedReady.has(run.id));
      if (starting.length === 0) continue;
      const answers = await Promise.all(starting.map((run) => this.probe(run)));
      if (answers.some(Boolean) && !this.signal.aborted) this.heartbeatSoon();
    }
  }

  /** Running containers with a readiness check (endpoint replicas). */
  private checkedReplicas(): PlacementRun[] {
    return [...this.runs.values()].filter((r) => r.running && r.containerId && r.placement.health_check);
  }

  private async heartbeat(): Promise<Heartbeat> {
    const running = [...this.runs.values()].filter((r) => r.running && r.containerId);
    // Every container of ours that runs, with a run or not (an orphan after a restart, one being
    // retired): the control plane takes a lost node back only once no container outside its runs
    // is listed, and the orphans still hold their GPUs.
    // Runs still starting too: a container may come to hold their GPUs at any moment, so the control
    // plane must not hand those to new work yet (it ends a run asked to stop once no heartbeat lists it).
    const starting = [...this.runs.values()].filter((r) => r.starting).map((r) => r.id);
    const listed = await this.runningContainers();
    // Until this process has listed the engine's containers once (a restart, with the listing slow or
    // failing), the placements started before and not seen to finish may still run: listed too, so the
    // control plane does not end a run asked to stop and hand its GPUs on while its container holds them.
    const unseen =
      this.listedAt === Number.NEGATIVE_INFINITY
        ? [...(this.desired ?? []).map((p) => p.placement_id), ...this.state.knownPlacements()].filter(
            (id) => !this.state.placement(id).finished,
          )
        : [];
    const runningIds = [...new Set([...running.map((r) => r.id), ...starting, ...listed, ...unseen])];
    const stats = new Map<string, StatsSample>();
    const containers = [];
    const ready = await this.readiness(running);
    for (const run of running.slice(0, 64)) {
      const r = ready.get(run.id);
      // A stuck engine may leave samples unanswered too (each up to the timeout): the heartbeat goes
      // now, with the replicas' readiness but without metrics.
      if (this.engine.stuck()) {
        if (r !== undefined) containers.push({ placement_id: run.id, ready: r });
        continue;
      }
      const sample = await this.engine.stats(run.containerId!).catch(() => null);
      if (!sample) continue;
      containers.push({
        ...containerMetrics(run.id, this.previousStats.get(run.id), sample),
        ...(r !== undefined ? { ready: r } : {}),
      });
      stats.set(run.id, sample);
    }
    this.previousStats = stats;
    const disk = await diskFreeBytes(this.config.dataDir);
    const engineStuck = this.engineReport();
    return Heartbeat.parse({
      at: this.deps.clock.now(),
      gpus: await this.deps.gpus.health(),
      ...(disk !== undefined ? { disk_free_bytes: disk } : {}),
      containers,
      running: runningIds.slice(0, 64),
      ...(engineStuck ? { engine_stuck: engineStuck } : {}),
    });
  }

  /**
   * Placements whose containers the engine lists as running now; those of its last listing while it
   * is stuck or down, or when it fails or is slow to answer: the heartbeat does not wait on it. A
   * listing under half a heartbeat interval old (a reconcile's, every 10 s too) is not asked again.
   */
  private async runningContainers(): Promise<Set<string>> {
    if (this.engineReport()) return this.listedRunning;
    if (this.deps.clock.monotonic() - this.listedAt < this.heartbeatIntervalMs / 2) return this.listedRunning;
    const listing = this.engine.list(ownLabels(this.config.agentName)).then(
      (listed) => this.noteListing(listed),
      (error) => this.deps.log("debug", "could not list containers for the heartbeat", { error: errorText(error) }),
    );
    const waited = new AbortController();
    await Promise.race([
      listing,
      this.deps.clock.sleep(HEARTBEAT_LISTING_WAIT_MS, AbortSignal.any([this.signal, waited.signal])),
    ]);
    waited.abort();
    return this.listedRunning;
  }

  private noteListing(listed: ContainerSummary[]): void {
    this.listedAt = this.deps.clock.monotonic();
    this.listedRunning = new Set(
      listed.flatMap((c) => {
        const placementId = c.labels[LABELS.placement];
        return placementId && holdsResources(c.state) ? [placementId] : [];
      }),
    );
  }

  /** Endpoint replicas' readiness checks, all at once (each up to 2 s); by placement id. */
  private async readiness(running: PlacementRun[]): Promise<Map<string, boolean>> {
    const checked = running.filter((r) => r.placement.health_check);
    const live = new Set(checked.map((r) => r.containerId!));
    for (const id of this.addresses.keys()) if (!live.has(id)) this.addresses.delete(id);
    const answers = await Promise.all(checked.map(async (run) => [run.id, await this.probe(run)] as const));
    this.reportedReady = new Set(answers.filter(([, ready]) => ready).map(([id]) => id));
    return new Map(answers);
  }

  /**
   * One replica's readiness check; its container's address is asked of the engine once, then kept
   * (not while the engine is stuck: the check would wait for the engine's timeout).
   */
  private async probe(run: PlacementRun): Promise<boolean> {
    const id = run.containerId!;
    if (!this.addresses.has(id) && !this.engine.stuck()) {
      const details = await this.engine.inspect(id).catch(() => null);
      if (details?.address) this.addresses.set(id, details.address);
    }
    const address = this.addresses.get(id);
    return address ? probeReady(address, run.placement.health_check!) : false;
  }

  private async every(intervalMs: () => number, task: () => void): Promise<void> {
    while (!this.signal.aborted) {
      await this.deps.clock.sleep(intervalMs(), this.signal);
      if (!this.signal.aborted) task();
    }
  }

  /** Runs a reconcile now, or right after the one in progress (requests in between coalesce). */
  requestReconcile(): void {
    if (this.signal.aborted) return;
    if (this.reconciling) {
      this.reconcileAgain = true;
      return;
    }
    this.reconciling = (async () => {
      do {
        this.reconcileAgain = false;
        try {
          await this.reconcile();
        } catch (error) {
          this.deps.log("warn", "reconcile failed; will retry", { error: errorText(error) });
        }
      } while (this.reconcileAgain && !this.signal.aborted);
      this.reconciling = null;
    })();
  }

  /**
   * Starts the placements that are new to this process at once, not after the reconcile in progress
   * and a listing of the engine's containers (on a busy engine the two took 100–350 ms). Safe
   * without the listing: a new placement's container is named after it, so one that exists already
   * is found and followed, never made twice. Until the first reconcile of this process has looked
   * (after a restart: containers to adopt), everything waits for the reconcile.
   */
  private launchNew(): void {
    if (!this.reconciledOnce || !this.polled || this.desired === null || this.signal.aborted) return;
    const known = new Set(this.state.knownPlacements());
    for (const placement of this.desired) {
      const id = placement.placement_id;
      if (this.runs.has(id) || this.retiring.has(id) || known.has(id)) continue;
      this.launch(placement);
    }
  }

  private launch(placement: Placement): void {
    this.deps.log("info", "starting placement", { placement_id: placement.placement_id });
    this.track(new PlacementRun(this.ctx, placement));
  }

  private async reconcile(): Promise<void> {
    const listed = await this.engine.list(ownLabels(this.config.agentName));
    this.noteListing(listed);
    const containers = listed
      .filter((c) => c.labels[LABELS.placement])
      .map((c) => ({ id: c.id, placementId: c.labels[LABELS.placement]!, state: c.state }));
    const runs = new Map<string, "active" | "retiring">([...this.runs].map(([id, run]) => [id, run.status]));
    for (const id of this.retiring.keys()) runs.set(id, "retiring");
    const known = this.state.knownPlacements();
    const plan = planReconcile({
      desired: this.desired,
      containers,
      runs,
      known,
      finished: new Set(known.filter((id) => this.state.placement(id).finished)),
      failed: new Set(known.filter((id) => this.state.placement(id).finished === "failed")),
      orphanSince: this.orphanSince,
      now: this.deps.clock.monotonic(),
      orphanGraceMs: this.config.orphanGraceMs,
    });
    this.orphanSince = plan.orphanSince;
    // Stops take up to a container's grace period (more on a hung engine); updates (a cancel, a moved
    // deadline, an adoption) free or need nothing, so they are not held up behind them. New
    // placements wait for the stops: the GPUs they were given may be the stopped containers'.
    const removing = Promise.all(plan.removes.map((step) => this.remove(step)));
    for (const step of this.signal.aborted ? [] : plan.updates) {
      if (step.kind === "update") this.runs.get(step.placement.placement_id)?.update(step.placement);
      else {
        this.deps.log("info", "adopting container", { placement_id: step.placement.placement_id });
        this.track(new PlacementRun(this.ctx, step.placement, step.containerId));
      }
    }
    await removing;
    if (this.signal.aborted) return;
    for (const step of plan.adds) {
      // Started meanwhile by `launchNew`, while this reconcile waited for the engine; or, before
      // this process's first placement set, from the saved one: not yet.
      if (this.runs.has(step.placement.placement_id) || !this.polled) continue;
      this.launch(step.placement);
    }
    for (const id of plan.forget) this.state.forgetPlacement(id);
    this.reconciledOnce = true;
  }

  private track(run: PlacementRun): void {
    this.runs.set(run.id, run);
    void run.done.then(() => {
      // A run that left no container (failed, never started) is over; one with a container waits to be retired.
      if (!run.containerId && this.runs.get(run.id) === run) this.runs.delete(run.id);
    });
  }

  /** Resolves when the container is stopped; removal follows once its log is shipped. */
  private async remove(step: RemoveStep): Promise<void> {
    const run = this.runs.get(step.placementId);
    if (step.kind === "abandon") {
      run?.abandon();
      // Finished, and its container gone (e.g. removed late, after an engine timeout): nothing left to do.
      if (run?.finished) this.runs.delete(run.id);
      return;
    }
    this.deps.log("info", "retiring container", { placement_id: step.placementId, why: step.why });
    if (run) {
      const { stopped, removed } = run.retire();
      void removed
        .catch((error) => this.deps.log("warn", "container removal failed", { error: errorText(error) }))
        .finally(() => {
          if (this.runs.get(run.id) === run) this.runs.delete(run.id);
        });
      await stopped.catch((error) => this.deps.log("warn", "stop failed", { error: errorText(error) }));
      return;
    }
    // Also for a container that is not running: it may have been started since it was listed.
    const stopped = this.engine.stop(step.containerId, this.config.orphanStopGraceMs);
    const removed = (async () => {
      // Stopped before its log is followed (a follow of a running container waits for its exit);
      // a stop that fails is tried again until one succeeds: nothing else would stop it.
      await stopped.catch(() => this.stopAgain(step.containerId));
      if (this.signal.aborted) return;
      // Ship what its log still holds past the cursor before the container, and its log, go.
      let current: LogFollow | null = null;
      await shipContainerLog(this.ctx, step.placementId, step.containerId, {
        signal: this.signal,
        exited: Promise.resolve(),
        onFollow: (follow) => {
          if (current) this.follows.delete(current);
          current = follow;
          if (follow) this.follows.add(follow);
        },
      });
      if (this.signal.aborted) return;
      await this.shipper.whenDrained(step.placementId);
      if (this.signal.aborted) return;
      await this.engine.remove(step.containerId);
      this.state.forgetPlacement(step.placementId);
    })()
      .catch((error) => this.deps.log("warn", "container removal failed", { error: errorText(error) }))
      .finally(() => this.retiring.delete(step.placementId));
    this.retiring.set(step.placementId, removed);
    await stopped.catch((error) => this.deps.log("warn", "stop failed", { error: errorText(error) }));
  }

  /** Stops a container without a run again, with backoff, until a stop succeeds or the agent stops. */
  private async stopAgain(containerId: string): Promise<void> {
    const backoff = new Backoff(this.config.backoff, this.deps.random);
    while (!this.signal.aborted) {
      await this.deps.clock.sleep(backoff.next(), this.signal);
      if (this.signal.aborted) return;
      try {
        await this.engine.stop(containerId, this.config.orphanStopGraceMs);
        return;
      } catch (error) {
        this.deps.log("warn", "stop failed again; retrying", { container_id: containerId, error: errorText(error) });
      }
    }
  }
}
