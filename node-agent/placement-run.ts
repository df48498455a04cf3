/**
 * One placement on this node, from image pull to reported exit: `ensureContainer` (pull, create
 * under the placement's own name, start; a name already taken is this placement's container, found
 * by label), then follow its log, enforce the kill deadline and cancels (grace
 * period, then kill), and report the exit. Also adopts a container a previous agent process
 * started. Every outcome goes to the outbox with an id derived from the placement, so a re-report
 * after a restart is a duplicate the control plane ignores, never a second fact.
 */
import { constants } from "node:os";
import type { Placement, PlacementEvent } from "../core/schemas";
import { Backoff, type BackoffPolicy } from "./backoff";
import type { Clock } from "./clock";
import { containerSpec, LABELS, ownLabels } from "./container-spec";
import { type ContainerDetails, type ContainerEngine, EngineError, type LogFollow } from "./docker/engine";
import { followContainerLog } from "./log-follower";
import type { LogShipper } from "./log-shipper";
import { errorText, type Logger } from "./logger";
import type { EventOutbox } from "./outbox";
import { effectivePolicy, type PullPolicy } from "./pull-policy";
import type { AgentState } from "./state";

export interface RunContext {
  engine: ContainerEngine;
  clock: Clock;
  state: AgentState;
  outbox: EventOutbox;
  shipper: LogShipper;
  log: Logger;
  agentName: string;
  nodeId: () => string;
  pidsLimit: number;
  maxCpuMilli?: number;
  pullProgressIntervalMs: number;
  pullPolicy: PullPolicy;
  /** Tells this process's pull-progress event ids from a previous process's. */
  incarnation: string;
  backoff: BackoffPolicy;
  random: () => number;
  /** Something changed that the reconcile loop should look at. */
  onSettled: () => void;
}

type StopReason = "cancel" | "deadline";

const SIGNAL_NAMES = new Map(Object.entries(constants.signals).map(([name, n]) => [n, name]));

/** 137 → SIGKILL: a process killed by a signal exits with 128 + its number. */
export function signalOf(exitCode: number): string | undefined {
  return exitCode > 128 && exitCode < 160 ? SIGNAL_NAMES.get(exitCode - 128) : undefined;
}

export function pullFailureReason(image: string, error: unknown): string {
  const message = errorText(error);
  switch (error instanceof EngineError ? error.code : "engine") {
    case "invalid_reference":
      return `image pull failed: invalid image name "${image}" (${message})`;
    case "image_not_found":
      return `image pull failed: ${image} not found (${message})`;
    case "image_unauthorized":
      return `image pull failed: ${image} needs registry credentials (${message}); nodes pull without any, so use a public image or one in a registry they may read`;
    case "registry_unreachable":
      return `image pull failed: registry unreachable for ${image} (${message})`;
    default:
      return `image pull failed for ${image}: ${message}`;
  }
}

/**
 * A pull another attempt would fail the same way, on any node: the registry says the image does not
 * exist or may not be read without credentials (docker says "not found", "denied", "no basic auth
 * credentials"), or the name is malformed.
 * An unreachable registry, a full disk or anything else may pass on the next try.
 */
export function pullRetryable(error: unknown): boolean {
  const code = error instanceof EngineError ? error.code : "engine";
  return code !== "image_not_found" && code !== "image_unauthorized" && code !== "invalid_reference";
}

export function startFailureReason(error: unknown, gpuIds: string[]): string {
  const message = errorText(error);
  if (error instanceof EngineError && error.code === "gpu_unavailable") {
    return `GPU request failed: no NVIDIA container runtime on this node for GPUs ${gpuIds.join(",")} (${message})`;
  }
  return `container start failed: ${message}`;
}

export class PlacementRun {
  status: "active" | "retiring" = "active";
  containerId: string | null = null;
  private phase: "starting" | "running" | "finished" = "starting";
  private stopReason: StopReason | null;
  private stopping: Promise<void> | null = null;
  private deadlineTimer: AbortController | null = null;
  private follow: LogFollow | null = null;
  private readonly closing = new AbortController();
  private abandoned = false;
  private reportedRunning = false;
  private silent = false;
  private progressCount = 0;
  private lastProgressAt = Number.NEGATIVE_INFINITY;
  readonly done: Promise<void>;

  constructor(
    private readonly ctx: RunContext,
    public placement: Placement,
    adoptContainerId: string | null = null,
  ) {
    this.stopReason = ctx.state.placement(placement.placement_id).stop_reason ?? null;
    this.done = this.lifecycle(adoptContainerId).catch((error) => {
      if (this.closing.signal.aborted) return;
      ctx.log("error", "placement run failed unexpectedly", { placement_id: this.id, error: errorText(error) });
      this.fail(`agent error: ${errorText(error)}`);
    });
  }

  get id(): string {
    return this.placement.placement_id;
  }

  get running(): boolean {
    return this.phase === "running";
  }

  get finished(): boolean {
    return this.phase === "finished";
  }

  /** A new version of the placement: a cancel, or a moved deadline. */
  update(placement: Placement): void {
    const deadlineMoved = placement.kill_deadline !== this.placement.kill_deadline;
    this.placement = placement;
    if (placement.desired === "stopped") this.requestStop("cancel");
    // Also retries a stop that failed when the deadline timer fired.
    const deadline = placement.kill_deadline;
    if (deadline !== null && this.ctx.clock.now() >= deadline) this.requestStop("deadline");
    if (deadlineMoved && this.phase === "running") this.armDeadline();
  }

  /** The placement left the desired set before a container existed: create nothing. */
  abandon(): void {
    this.abandoned = true;
    this.silent = true;
  }

  /**
   * The placement left the desired set: stop the container if it still runs (orphan), then, once
   * its log is shipped, remove it. Resolves when the container is stopped; `removed` when it is gone.
   */
  retire(): { stopped: Promise<void>; removed: Promise<void> } {
    this.status = "retiring";
    this.silent = true;
    const stopped = (async () => {
      if (this.containerId && this.phase !== "finished") {
        await this.ctx.engine.stop(this.containerId, this.placement.grace_period_ms);
      }
    })();
    const removed = (async () => {
      await stopped.catch(() => {});
      await this.done;
      await this.ctx.shipper.whenDrained(this.id);
      if (this.closing.signal.aborted) return;
      if (this.containerId) await this.ctx.engine.remove(this.containerId);
      this.ctx.state.forgetPlacement(this.id);
    })();
    return { stopped, removed };
  }

  /** The agent is shutting down: let go of the container (it keeps running) without reporting anything. */
  close(): void {
    this.closing.abort();
    this.deadlineTimer?.abort();
    this.follow?.stop();
  }

  private async lifecycle(adoptContainerId: string | null): Promise<void> {
    const id = adoptContainerId ?? (await this.ensureContainer());
    if (!id) {
      this.phase = "finished";
      return;
    }
    this.containerId = id;
    await this.supervise(id);
  }

  /**
   * Idempotent: the container of this placement if one exists, else a new one, started. Null if none
   * runs. The name is unique per placement, so creating is the check: no engine round trip to look
   * first (a conflict finds and follows the container that has the name).
   */
  private async ensureContainer(): Promise<string | null> {
    if (this.notToStart()) return null;
    if (!(await this.pullImage())) return null;
    if (this.notToStart()) return null;
    const spec = containerSpec(this.placement, {
      agentName: this.ctx.agentName,
      nodeId: this.ctx.nodeId(),
      pidsLimit: this.ctx.pidsLimit,
      ...(this.ctx.maxCpuMilli !== undefined ? { maxCpuMilli: this.ctx.maxCpuMilli } : {}),
    });
    let id: string;
    try {
      id = await this.ctx.engine.create(spec);
    } catch (error) {
      if (error instanceof EngineError && error.code === "conflict") {
        const again = await this.findContainer();
        if (again) return again;
      }
      this.fail(`container create failed: ${errorText(error)}`);
      return null;
    }
    if (this.notToStart()) {
      await this.ctx.engine.remove(id);
      return null;
    }
    if (!(await this.startContainer(id, spec.gpuDeviceIds))) return null;
    return id;
  }

  private async findContainer(): Promise<string | null> {
    const found = await this.ctx.engine.list({
      ...ownLabels(this.ctx.agentName),
      [LABELS.placement]: this.id,
    });
    return found[0]?.id ?? null;
  }

  /** Starts a created container; on failure removes it, so a failed placement leaves nothing behind. */
  private async startContainer(id: string, gpuIds: string[]): Promise<boolean> {
    try {
      await this.ctx.engine.start(id);
    } catch (error) {
      // The engine keeps a container whose start failed (state Created): remove it.
      await this.ctx.engine.remove(id).catch((e) =>
        this.ctx.log("warn", "could not remove a container that failed to start", {
          placement_id: this.id,
          error: errorText(e),
        }),
      );
      this.fail(startFailureReason(error, gpuIds));
      return false;
    }
    this.report({ type: "running", container_id: id }, "running");
    this.reportedRunning = true;
    return true;
  }

  /** Reports why nothing will start when the placement was cancelled or ran out of time before a container existed. */
  private notToStart(): boolean {
    if (this.abandoned || this.closing.signal.aborted) return true;
    if (this.placement.desired === "stopped") this.stopReason = "cancel";
    const deadline = this.placement.kill_deadline;
    if (!this.stopReason && deadline !== null && this.ctx.clock.now() >= deadline) this.stopReason = "deadline";
    if (!this.stopReason) return false;
    this.report({ type: "exited", exit_code: -1, oom_killed: false, stopped_by: this.stopReason }, "exited");
    this.ctx.state.updatePlacement(this.id, { finished: "exited", stop_reason: this.stopReason });
    return true;
  }

  private async pullImage(): Promise<boolean> {
    const image = this.placement.image;
    // No registry call and no `pulling` event for an image the policy takes as fixed and the engine has.
    if (effectivePolicy(image, this.ctx.pullPolicy) === "if-not-present") {
      if (await this.ctx.engine.hasImage(image).catch(() => false)) return true;
    }
    this.progress(`pulling ${image}`, true);
    try {
      await this.ctx.engine.pull(image, (p) => this.progress(p, false));
    } catch (error) {
      const unreachable = error instanceof EngineError && error.code === "registry_unreachable";
      if (unreachable && (await this.ctx.engine.hasImage(image).catch(() => false))) {
        this.progress(`registry unreachable (${errorText(error)}); using the local copy of ${image}`, true);
        return true;
      }
      this.fail(pullFailureReason(image, error), pullRetryable(error));
      return false;
    }
    this.progress(`pulled ${image}`, true);
    return true;
  }

  private progress(text: string, always: boolean): void {
    const now = this.ctx.clock.now();
    if (!always && now - this.lastProgressAt < this.ctx.pullProgressIntervalMs) return;
    this.lastProgressAt = now;
    const n = this.progressCount++;
    this.report({ type: "pulling", progress: text.slice(0, 512) }, `pulling/${this.ctx.incarnation}/${n}`);
  }

  private async supervise(id: string): Promise<void> {
    let details = await this.ctx.engine.inspect(id);
    if (!details) {
      this.containerId = null;
      this.fail("the container disappeared before the agent could follow it");
      return;
    }
    if (details.state === "created") {
      // Created but never started: the previous agent process stopped between create and start.
      if (details.error || this.notToStart()) {
        await this.ctx.engine.remove(id);
        this.containerId = null;
        if (details.error)
          this.fail(startFailureReason(new EngineError("engine", details.error), details.gpuDeviceIds));
        return;
      }
      if (!(await this.startContainer(id, details.gpuDeviceIds))) {
        this.containerId = null;
        return;
      }
      details = (await this.ctx.engine.inspect(id)) ?? details;
    }
    // A container this process did not start (adopted, or found by label) may never have been reported
    // as running if the previous process died right after starting it; the same id makes it harmless.
    if (!this.reportedRunning && details.startedAt !== null) {
      this.report({ type: "running", container_id: id }, "running", details.startedAt);
    }
    // An adopted container may have exited already: then only its log and its exit are left to report.
    const alive = details.state !== "exited" && details.state !== "dead";
    if (alive) {
      this.phase = "running";
      this.armDeadline();
      if (this.stopReason) void this.stopContainer(this.stopReason);
    }
    this.follow = await followContainerLog(this.ctx.engine, this.ctx.shipper, this.ctx.state, this.id, id).catch(
      (error) => {
        this.ctx.log("warn", "could not follow the container log", { placement_id: this.id, error: errorText(error) });
        return null;
      },
    );
    if (alive) await this.waitForExit(id);
    await this.follow?.ended;
    this.deadlineTimer?.abort();
    if (this.closing.signal.aborted) return;
    details = await this.ctx.engine.inspect(id);
    this.phase = "finished";
    if (!details) {
      this.containerId = null;
      this.fail("the container was removed outside the agent");
      return;
    }
    this.reportExit(details);
  }

  private async waitForExit(id: string): Promise<void> {
    const backoff = new Backoff(this.ctx.backoff, this.ctx.random);
    while (!this.closing.signal.aborted) {
      try {
        await this.ctx.engine.wait(id, this.closing.signal);
        const details = await this.ctx.engine.inspect(id);
        if (!details?.running) return;
      } catch (error) {
        const delay = backoff.next();
        this.ctx.log("warn", "lost the engine while waiting for a container; retrying", {
          placement_id: this.id,
          retry_in_ms: delay,
          error: errorText(error),
        });
        await this.ctx.clock.sleep(delay, this.closing.signal);
      }
    }
  }

  private reportExit(details: ContainerDetails): void {
    const signal = signalOf(details.exitCode);
    const stoppedBy = this.stopReason ?? this.ctx.state.placement(this.id).stop_reason;
    this.report(
      {
        type: "exited",
        exit_code: details.exitCode,
        oom_killed: details.oomKilled,
        ...(signal ? { signal } : {}),
        ...(stoppedBy ? { stopped_by: stoppedBy } : {}),
      },
      "exited",
      details.finishedAt ?? undefined,
    );
    this.ctx.state.updatePlacement(this.id, { finished: "exited" });
    this.ctx.onSettled();
  }

  private fail(reason: string, retryable = true): void {
    this.phase = "finished";
    this.report({ type: "failed", reason: reason.slice(0, 2048), ...(retryable ? {} : { retryable }) }, "failed");
    this.ctx.state.updatePlacement(this.id, { finished: "failed" });
    this.ctx.log("warn", "placement failed", { placement_id: this.id, reason, retryable });
    this.ctx.onSettled();
  }

  private requestStop(reason: StopReason): void {
    if (this.phase === "finished") return;
    if (!this.stopReason) {
      this.stopReason = reason;
      // Remembered, so that an agent restarted before the exit still says why the container stopped.
      this.ctx.state.updatePlacement(this.id, { stop_reason: reason });
    }
    if (this.phase === "running") void this.stopContainer(this.stopReason);
  }

  private stopContainer(reason: StopReason): Promise<void> {
    if (!this.stopping && this.containerId) {
      const id = this.containerId;
      this.ctx.log("info", "stopping container", {
        placement_id: this.id,
        reason,
        grace_ms: this.placement.grace_period_ms,
      });
      this.stopping = this.ctx.engine.stop(id, this.placement.grace_period_ms).catch((error) => {
        this.stopping = null; // try again at the next reconcile
        this.ctx.log("warn", "stop failed", { placement_id: this.id, error: errorText(error) });
      });
    }
    return this.stopping ?? Promise.resolve();
  }

  private armDeadline(): void {
    this.deadlineTimer?.abort();
    const deadline = this.placement.kill_deadline;
    if (deadline === null) return;
    const timer = new AbortController();
    this.deadlineTimer = timer;
    void this.ctx.clock.sleep(deadline - this.ctx.clock.now(), timer.signal).then(() => {
      if (!timer.signal.aborted) this.requestStop("deadline");
    });
  }

  private report(
    event: DistributiveOmit<PlacementEvent, "event_id" | "placement_id" | "at">,
    key: string,
    at = this.ctx.clock.now(),
  ): void {
    if (this.silent) return;
    this.ctx.outbox.add({ ...event, event_id: `${this.id}/${key}`, placement_id: this.id, at } as PlacementEvent);
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
