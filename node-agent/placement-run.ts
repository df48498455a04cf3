/**
 * One placement on this node, from image pull to reported exit: `ensureContainer` (pull, create
 * under the placement's own name, start; a name already taken is this placement's container, found
 * by label), then follow its log (again, from the acknowledged line, should the engine cut the
 * stream), enforce the kill deadline and cancels (grace period, then kill), and report the exit.
 * Also adopts a container a previous agent process started. Every outcome goes to the outbox with
 * an id derived from the placement, so a re-report after a restart is a duplicate the control
 * plane ignores, never a second fact.
 */
import { constants } from "node:os";
import { type Placement, type PlacementEvent, type RegistryAuth, registryOf, serverAddressOf } from "../core/schemas";
import { Backoff, type BackoffPolicy } from "./backoff";
import type { Clock } from "./clock";
import { containerSpec, LABELS, ownLabels } from "./container-spec";
import { type ControlPlaneApi, ControlPlaneError } from "./control-plane";
import { type ContainerDetails, type ContainerEngine, EngineError, type LogEnd, type LogFollow } from "./docker/engine";
import { formatSeconds, PullStalled } from "./engine-watchdog";
import { isNoSpace } from "./image-gc";
import { type ContainerLogFollow, followContainerLog } from "./log-follower";
import type { LogShipper } from "./log-shipper";
import { errorText, type Logger } from "./logger";
import type { EventOutbox } from "./outbox";
import type { PrivateImages, PullTicket } from "./private-images";
import { effectivePolicy, type PullPolicy } from "./pull-policy";
import type { AgentState } from "./state";

/** How often, and how far apart, an unexplained SIGKILL is looked at again for a late OOM record. */
const OOM_SETTLE_TRIES = 4;
const OOM_SETTLE_MS = 250;

/**
 * The engine ends a log follow when the container stops, often a moment before `wait` says so: a
 * follow that ends is the end of the log if the exit is seen within this time.
 */
const LOG_END_GRACE_MS = 1_000;
/** Tries to open a stopped container's log (to read what is left of it) before giving up on it. */
const LOG_DRAIN_TRIES = 3;
/**
 * How long the log stream of a container seen exited may give nothing before the agent stops
 * following it and reports the exit. A healthy engine ends that stream within a second of the exit
 * (LOG_END_GRACE_MS counts on it), a loaded one within a few; one still open and silent after 15 s
 * will not end by itself (a stuck engine, some log drivers), and the exit it holds back keeps the
 * run counted as running and its GPUs taken. Silence only: a stream still giving the rest of a
 * long log, or held while the shipper has no room, is followed to its end. Counted once the stream
 * has given an entry; until then, for a follow opened from a cursor, LOG_FIRST_ENTRY_AFTER_EXIT_MS.
 */
export const LOG_SILENCE_AFTER_EXIT_MS = 15_000;
/**
 * How long a follow opened from a cursor may give no entry at all, from its opening, before the
 * agent stops it once the container is seen exited. The engine reads a json-file log from its start up to `since` before it
 * sends the first entry: dockerd 20.10 got through 490 MB in 6.3 s on our test engine (page cache
 * warm), so a log of a few GB keeps a healthy stream silent for longer than LOG_SILENCE_AFTER_EXIT_MS.
 * Five minutes covers some 20 GB at that pace; a stream that never gives anything holds the exit
 * no longer than that.
 */
export const LOG_FIRST_ENTRY_AFTER_EXIT_MS = 300_000;
/**
 * How long the engine may take to open a follow (answer the log request) once the container is seen
 * exited, from the request, before the agent gives up the rest of the log. The engine answers
 * before it reads any of the log (0.5 ms with `since` at the end of a 490 MB log on our test
 * engine): the open is a quick call, like the inspect the exit report waits on next, and gets the
 * 60 s the engine watchdog gives those (DEFAULT_ENGINE_TIMEOUT_MS). Past that the engine is stuck,
 * and reading a long log is no excuse. Before the exit an open has no limit (engine-watchdog.ts).
 */
export const LOG_OPEN_AFTER_EXIT_MS = 60_000;

export interface RunContext {
  engine: ContainerEngine;
  /** Asked for a placement's registry credentials before any pull. */
  api: Pick<ControlPlaneApi, "registryAuth">;
  /** Which cached images were pulled with which credentials. */
  images: PrivateImages;
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
  /** See LOG_SILENCE_AFTER_EXIT_MS. */
  logSilenceAfterExitMs: number;
  /** See LOG_FIRST_ENTRY_AFTER_EXIT_MS (the default). */
  logFirstEntryAfterExitMs?: number;
  /** See LOG_OPEN_AFTER_EXIT_MS (the default). */
  logOpenAfterExitMs?: number;
  backoff: BackoffPolicy;
  random: () => number;
  /** Something changed that the reconcile loop should look at. */
  onSettled: () => void;
  /** The placement starts from this image (engine id), just pulled or cached: image GC keeps it for a while. */
  imageUsed?: (imageId: string) => void;
  /** A pull or create failed for lack of disk space: collect unused images now. */
  diskFull?: () => void;
}

type StopReason = "cancel" | "deadline";

/** How often a kill deadline is looked at again on the wall clock (see `armDeadline`). */
export const DEADLINE_RECHECK_MS = 5_000;

const SIGNAL_NAMES = new Map(Object.entries(constants.signals).map(([name, n]) => [n, name]));

/** 137 → SIGKILL: a process killed by a signal exits with 128 + its number. */
export function signalOf(exitCode: number): string | undefined {
  return exitCode > 128 && exitCode < 160 ? SIGNAL_NAMES.get(exitCode - 128) : undefined;
}

/** Tries of the registry-auth call while the control plane is unreachable, before the attempt fails. */
export const REGISTRY_AUTH_TRIES = 3;

/**
 * Why a pull failed. `credentials`: the account's user name for the image's registry when the pull
 * sent credentials (the password never reaches a reason).
 */
export function pullFailureReason(image: string, error: unknown, credentials?: { username: string } | null): string {
  const message = errorText(error);
  switch (error instanceof EngineError ? error.code : "engine") {
    case "invalid_reference":
      return `image pull failed: invalid image name "${image}" (${message})`;
    case "image_not_found":
      return `image pull failed: ${image} not found (${message})`;
    case "image_unauthorized": {
      const registry = registryOf(image);
      if (credentials) {
        return `image pull failed: the registry refused the account's credentials for ${registry} (user ${credentials.username}) for ${image} (${message}); update them with \`scalar registries add ${registry}\``;
      }
      return `image pull failed: ${image} needs registry credentials (${message}); the account can add them with \`scalar registries add ${registry}\``;
    }
    case "registry_unreachable":
      return `image pull failed: registry unreachable for ${image} (${message})`;
    case "pull_stalled": {
      const silence = error instanceof PullStalled ? `no progress for ${formatSeconds(error.stallMs)}` : message;
      return `image pull failed for ${image}: ${silence} (registry or network stalled)`;
    }
    default:
      return `image pull failed for ${image}: ${message}`;
  }
}

/**
 * A pull another attempt would fail the same way, on any node: the registry says the image does not
 * exist or may not be read with the credentials sent, or without any (docker says "not found",
 * "denied", "no basic auth credentials", "unauthorized"), or the name is malformed.
 * An unreachable registry, a pull that stalled (`pull_stalled`: another node, or the next try, may
 * reach the registry), a full disk or anything else may pass on the next try.
 */
export function pullRetryable(error: unknown): boolean {
  const code = error instanceof EngineError ? error.code : "engine";
  return code !== "image_not_found" && code !== "image_unauthorized" && code !== "invalid_reference";
}

/** A call the engine left unanswered past the agent's deadline (engine-watchdog.ts); it may still answer. */
export function isEngineTimeout(error: unknown): boolean {
  return error instanceof EngineError && error.code === "engine_timeout";
}

/** Why a create or start the engine did not answer in time failed the placement (retryable: another node). */
export function engineTimeoutReason(step: "create" | "start", error: unknown): string {
  return `container ${step} timed out: ${errorText(error)}; the node is cordoned until its engine answers`;
}

export function startFailureReason(error: unknown, gpuIds: string[]): string {
  const message = errorText(error);
  if (isEngineTimeout(error)) return engineTimeoutReason("start", error);
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
  /** Set once a container nobody wants any more (its placement left the node) is being stopped. */
  private stoppingUnwanted = false;
  private reportedRunning = false;
  private silent = false;
  private progressCount = 0;
  /** When (`Clock.monotonic`) the last `pulling` event was reported. */
  private lastProgressAt = Number.NEGATIVE_INFINITY;
  readonly done: Promise<void>;

  constructor(
    private readonly ctx: RunContext,
    public placement: Placement,
    adoptContainerId: string | null = null,
  ) {
    this.stopReason = ctx.state.placement(placement.placement_id).stop_reason ?? null;
    // Never rejects: the agent only chains on it (an unhandled rejection would end the process).
    this.done = this.lifecycle(adoptContainerId).catch((error) => {
      if (this.closing.signal.aborted) return;
      ctx.log("error", "placement run failed unexpectedly", { placement_id: this.id, error: errorText(error) });
      try {
        this.fail(`agent error: ${errorText(error)}`);
      } catch (failure) {
        ctx.log("error", "could not report a placement run's failure", {
          placement_id: this.id,
          error: errorText(failure),
        });
      }
    });
  }

  get id(): string {
    return this.placement.placement_id;
  }

  get running(): boolean {
    return this.phase === "running";
  }

  /** Pulling, creating or starting its container: not running yet, but it may hold its GPUs at any moment. */
  get starting(): boolean {
    return this.phase === "starting" && !this.abandoned;
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

  /**
   * The placement left the desired set before the reconcile saw a container: create nothing. A
   * container whose start was already on its way is stopped as soon as it runs (here, or in
   * `supervise` if the start has not returned yet), not after the orphan grace.
   */
  abandon(): void {
    this.abandoned = true;
    this.silent = true;
    if (this.phase === "running" && this.containerId) void this.stopUnwanted(this.containerId);
  }

  /**
   * The placement left the desired set: stop the container if it still runs (orphan), then, once
   * its log is shipped, remove it. Resolves when the container is stopped; `removed` when it is gone.
   * A stop that fails is tried again, with backoff, until the container has exited. A run still
   * creating or starting its container starts nothing more, and stops what a start on its way
   * leaves running (`supervise`): nobody would stop it otherwise, as the reconcile leaves retiring
   * placements alone.
   */
  retire(): { stopped: Promise<void>; removed: Promise<void> } {
    this.status = "retiring";
    this.silent = true;
    if (this.phase === "starting") this.abandoned = true;
    const id = this.containerId;
    const stopped =
      id && this.phase !== "finished" ? this.ctx.engine.stop(id, this.placement.grace_period_ms) : Promise.resolve();
    const removed = (async () => {
      if (id) await stopped.catch(() => this.stopAgain(id));
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
      if (isNoSpace(error)) this.ctx.diskFull?.();
      // A create answered late leaves a container the reconcile removes once the placement is gone.
      this.fail(
        isEngineTimeout(error) ? engineTimeoutReason("create", error) : `container create failed: ${errorText(error)}`,
      );
      return null;
    }
    if (this.notToStart()) {
      // Its outcome is reported already (exit -1, or nothing when abandoned): a remove that fails
      // must not report a second one. The run keeps the container and removes it on retirement.
      await this.ctx.engine.remove(id).catch((error) => {
        this.containerId = id;
        this.ctx.log("warn", "could not remove a container that was not to start; it goes with its placement", {
          placement_id: this.id,
          error: errorText(error),
        });
      });
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

  /**
   * Starts a created container; on failure removes it, so a failed placement leaves nothing behind.
   * `containerId` stays set only for a container whose start timed out and that could not be removed:
   * the run keeps it, so that retiring the run removes it.
   */
  private async startContainer(id: string, gpuIds: string[]): Promise<boolean> {
    try {
      await this.ctx.engine.start(id);
    } catch (error) {
      if (isEngineTimeout(error)) {
        // Reported first, so the scheduler retries elsewhere now: the hung engine may not answer the
        // remove either. The start may still happen: the remove (the engine runs it after the start),
        // or else this run's retirement once the placement has left the desired set, takes it away.
        this.fail(startFailureReason(error, gpuIds));
        this.containerId = id;
        try {
          await this.ctx.engine.remove(id);
          this.containerId = null;
        } catch (e) {
          this.ctx.log("warn", "could not remove a container whose start timed out; it goes with its placement", {
            placement_id: this.id,
            error: errorText(e),
          });
        }
        return false;
      }
      // The engine keeps a container whose start failed (state Created): remove it.
      await this.ctx.engine.remove(id).catch((e) =>
        this.ctx.log("warn", "could not remove a container that failed to start", {
          placement_id: this.id,
          error: errorText(e),
        }),
      );
      this.containerId = null;
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

  /**
   * Makes sure the engine has the image this placement may use; false when the run is over (failed,
   * or not to start). Rules (private-images.ts): a cached image the pull policy takes as fixed and
   * that no pull with credentials put here starts at once, without asking anyone (the hot path).
   * Anything else first asks the control plane for the placement's registry credentials; a cached
   * private image starts only with the credentials it was pulled with, else it is pulled again
   * with this placement's credentials, or none, and the registry decides.
   */
  private async pullImage(): Promise<boolean> {
    const image = this.placement.image;
    const images = this.ctx.images;
    const fixed = effectivePolicy(image, this.ctx.pullPolicy) === "if-not-present";
    let cached: string | null = null;
    if (fixed) {
      cached = await this.imageId(image);
      // No control-plane call, no registry call and no `pulling` event for a public image the engine has.
      if (cached && images.isPublic(cached)) return this.using(cached);
    }
    const auth = await this.registryAuth();
    if (!auth) return false;
    await images.settle();
    const fingerprint = images.fingerprint(auth);
    const credentials = auth.credentials;
    const redact = redactor(credentials?.password);
    if (cached && images.mayStart(cached, fingerprint)) return this.using(cached);

    this.progress(
      credentials
        ? `pulling ${image} with the account's credentials for ${auth.registry} (user ${credentials.username})`
        : `pulling ${image}`,
      true,
      redact,
    );
    const pull = images.startPull(image, fingerprint);
    try {
      await this.ctx.engine.pull(
        image,
        (p) => this.progress(p, false, redact),
        credentials
          ? {
              username: credentials.username,
              password: credentials.password,
              serveraddress: serverAddressOf(auth.registry),
            }
          : undefined,
      );
    } catch (error) {
      if (error instanceof PullStalled) this.settleLate(error, pull, redact);
      else pull.failed();
      if (isNoSpace(error)) this.ctx.diskFull?.();
      const unreachable = error instanceof EngineError && error.code === "registry_unreachable";
      const local = unreachable ? await this.imageId(image) : null;
      if (local && images.mayStart(local, fingerprint)) {
        this.progress(`registry unreachable (${errorText(error)}); using the local copy of ${image}`, true, redact);
        return this.using(local);
      }
      const notLocal = local
        ? "; the local copy was pulled with other credentials, so it is used only once the registry lets this account read it"
        : "";
      this.fail(redact(pullFailureReason(image, error, credentials) + notLocal), pullRetryable(error));
      return false;
    }
    const pulled = await this.imageId(image);
    pull.succeeded(pulled);
    if (pulled) this.using(pulled);
    this.progress(`pulled ${image}`, true);
    return true;
  }

  /**
   * A stalled pull fails the placement, but the engine's pull goes on and may still put the image
   * here: its ticket stays open (a pull with credentials stays marked, so that a cached image
   * without a record is not taken for public meanwhile) and is settled when the engine's pull ends,
   * as a pull that ended then would have been.
   */
  private settleLate(stalled: PullStalled, pull: PullTicket, redact: (text: string) => string): void {
    const image = this.placement.image;
    const settled = stalled.outcome.then(async (late) => {
      if (late.pulled) {
        pull.succeeded(await this.imageId(image));
        this.ctx.log("info", "a stalled image pull finished after all; the image is cached", {
          placement_id: this.id,
          image,
        });
      } else {
        pull.failed();
        if (isNoSpace(late.error)) this.ctx.diskFull?.();
        this.ctx.log("info", "a stalled image pull ended with an error", {
          placement_id: this.id,
          image,
          error: redact(errorText(late.error)),
        });
      }
    });
    settled.catch((error) =>
      this.ctx.log("warn", "could not record the end of a stalled image pull", {
        placement_id: this.id,
        image,
        error: errorText(error),
      }),
    );
  }

  /** Notes the image this placement starts from (image GC keeps recently used images); true. */
  private using(imageId: string): true {
    this.ctx.imageUsed?.(imageId);
    return true;
  }

  /** The engine's id of the image, or null when it has none (or cannot say). */
  private imageId(image: string): Promise<string | null> {
    return this.ctx.engine.imageId(image).catch(() => null);
  }

  /**
   * The placement's registry credentials from the control plane; null when the run ends here: the
   * attempt failed (reported), or the control plane says the placement is not active on this node
   * (`unknown_placement`): then nothing starts and nothing is reported, as for a placement that
   * left the desired set before its container existed, unless its latest version is cancelled or
   * past its deadline, which is reported as such (exit -1). If the desired set still holds it, the
   * next reconcile launches it again and the control plane is asked again.
   */
  private async registryAuth(): Promise<RegistryAuth | null> {
    const backoff = new Backoff(this.ctx.backoff, this.ctx.random);
    for (let attempt = 1; ; attempt++) {
      if (this.abandoned || this.closing.signal.aborted) return null;
      let auth: RegistryAuth;
      try {
        auth = await this.ctx.api.registryAuth(this.id);
      } catch (error) {
        if (error instanceof ControlPlaneError && error.status === 404 && error.code === "unknown_placement") {
          if (!this.notToStart()) {
            this.ctx.log("info", "placement not active on this node any more; not starting it", {
              placement_id: this.id,
              error: errorText(error),
            });
            this.abandon();
          }
          return null;
        }
        const unreachable = error instanceof ControlPlaneError && error.kind === "unreachable";
        if (unreachable && attempt < REGISTRY_AUTH_TRIES) {
          await this.ctx.clock.sleep(backoff.next(), this.closing.signal);
          continue;
        }
        if (this.closing.signal.aborted) return null;
        this.fail(`could not fetch registry credentials: ${errorText(error)}`);
        return null;
      }
      // Credentials go only to the registry the image is on, never to another one.
      const registry = registryOf(this.placement.image);
      if (auth.credentials && auth.registry !== registry) {
        this.fail(
          `could not fetch registry credentials: the control plane answered credentials for ${auth.registry}, but ${this.placement.image} is on ${registry}`,
        );
        return null;
      }
      return auth;
    }
  }

  private progress(text: string, always: boolean, redact: (text: string) => string = (t) => t): void {
    // On the monotonic clock: a wall clock stepped back must not hold the next events back by the step.
    const now = this.ctx.clock.monotonic();
    if (!always && now - this.lastProgressAt < this.ctx.pullProgressIntervalMs) return;
    this.lastProgressAt = now;
    const n = this.progressCount++;
    this.report({ type: "pulling", progress: redact(text).slice(0, 512) }, `pulling/${this.ctx.incarnation}/${n}`);
  }

  private async supervise(id: string): Promise<void> {
    let details = await this.inspectUntilAnswered(id);
    if (details === undefined) return; // the agent is stopping
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
      if (!(await this.startContainer(id, details.gpuDeviceIds))) return;
      details = (await this.inspectUntilAnswered(id)) ?? details;
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
      // Retired or abandoned while its create or start was on its way: nobody wants it any more.
      if (this.abandoned) void this.stopUnwanted(id);
      else if (this.stopReason) void this.stopContainer(this.stopReason);
    }
    const exited = alive ? this.waitForExit(id) : Promise.resolve();
    await Promise.all([
      exited,
      shipContainerLog(this.ctx, this.id, id, {
        signal: this.closing.signal,
        exited,
        onFollow: (follow) => {
          this.follow = follow;
        },
      }),
    ]);
    this.deadlineTimer?.abort();
    if (this.closing.signal.aborted) return;
    details = await this.inspectUntilAnswered(id);
    if (details === undefined) return;
    this.phase = "finished";
    if (!details) {
      this.containerId = null;
      this.fail("the container was removed outside the agent");
      return;
    }
    this.reportExit(await this.oomSettled(id, details));
  }

  /**
   * The kernel's OOM kill is a SIGKILL (exit 137), and the engine records it (`OOMKilled`) from a
   * separate event that can come after the exit is seen (found on a loaded machine: reported as a
   * plain SIGKILL). A 137 nobody here asked for is looked at again, up to OOM_SETTLE_TRIES times
   * OOM_SETTLE_MS apart, so an OOM kill is reported as one; any other exit is reported at once.
   */
  private async oomSettled(id: string, details: ContainerDetails): Promise<ContainerDetails> {
    const stoppedBy = this.stopReason ?? this.ctx.state.placement(this.id).stop_reason;
    let seen = details;
    for (let i = 0; i < OOM_SETTLE_TRIES && seen.exitCode === 137 && !seen.oomKilled && !stoppedBy; i++) {
      await this.ctx.clock.sleep(OOM_SETTLE_MS, this.closing.signal);
      if (this.closing.signal.aborted) break;
      seen = (await this.ctx.engine.inspect(id).catch(() => null)) ?? seen;
    }
    return seen;
  }

  /**
   * The engine's view of the container; asked again with backoff while the engine fails, as
   * `waitForExit` does, so that one hiccup does not turn an exit into "agent error". Undefined once
   * the agent stops.
   */
  private async inspectUntilAnswered(id: string): Promise<ContainerDetails | null | undefined> {
    const backoff = new Backoff(this.ctx.backoff, this.ctx.random);
    while (!this.closing.signal.aborted) {
      try {
        return await this.ctx.engine.inspect(id);
      } catch (error) {
        const delay = backoff.next();
        this.ctx.log("warn", "could not inspect a container; retrying", {
          placement_id: this.id,
          retry_in_ms: delay,
          error: errorText(error),
        });
        await this.ctx.clock.sleep(delay, this.closing.signal);
      }
    }
    return undefined;
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

  /** Stops a container whose placement left the node (no report), trying again until it has exited. */
  private async stopUnwanted(id: string): Promise<void> {
    if (this.stoppingUnwanted) return;
    this.stoppingUnwanted = true;
    this.ctx.log("info", "stopping a container whose placement left the node", {
      placement_id: this.id,
      grace_ms: this.placement.grace_period_ms,
    });
    try {
      await this.ctx.engine.stop(id, this.placement.grace_period_ms);
    } catch (error) {
      this.ctx.log("warn", "stop failed", { placement_id: this.id, error: errorText(error) });
      await this.stopAgain(id);
    }
  }

  /**
   * After a stop that failed (an engine restarting, a timeout, a process in uninterruptible sleep):
   * tries again, with backoff, until a stop succeeds, the container has exited or the agent stops.
   */
  private async stopAgain(id: string): Promise<void> {
    const backoff = new Backoff(this.ctx.backoff, this.ctx.random);
    for (;;) {
      const delay = backoff.next();
      await this.ctx.clock.sleep(delay, this.closing.signal);
      if (this.closing.signal.aborted || this.phase === "finished") return;
      try {
        await this.ctx.engine.stop(id, this.placement.grace_period_ms);
        return;
      } catch (error) {
        this.ctx.log("warn", "stop failed again; retrying", { placement_id: this.id, error: errorText(error) });
      }
    }
  }

  private armDeadline(): void {
    this.deadlineTimer?.abort();
    const deadline = this.placement.kill_deadline;
    if (deadline === null) return;
    const timer = new AbortController();
    this.deadlineTimer = timer;
    const { clock } = this.ctx;
    // The deadline is a wall-clock instant and sleeps are monotonic: looked at again on the wall
    // clock at least every DEADLINE_RECHECK_MS, so a clock stepped meanwhile (NTP after a boot)
    // moves the stop with it, either way.
    void (async () => {
      for (let left = deadline - clock.now(); left > 0 && !timer.signal.aborted; left = deadline - clock.now()) {
        await clock.sleep(Math.min(left, DEADLINE_RECHECK_MS), timer.signal);
      }
      if (!timer.signal.aborted) this.requestStop("deadline");
    })().catch((error) =>
      this.ctx.log("error", "could not stop a container at its deadline", {
        placement_id: this.id,
        error: errorText(error),
      }),
    );
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

/**
 * Ships a container's log until the engine has given all of it. The engine ends a follow when the
 * container stops; one that ends while it still runs (a restart of the engine cuts the connection,
 * live-restore or not) or that cannot be opened is opened again, with backoff, until `signal`
 * aborts. A new follow resumes from the acknowledged cursor (state.json) and numbers lines on from
 * it, so it waits until the lines the last one queued are acknowledged: then the numbering goes on
 * where it stopped. `exited` resolves once the container is seen stopped; a follow that cannot be
 * opened after that is tried LOG_DRAIN_TRIES times in all. A follow cut (not closed by the engine)
 * just before the exit is followed once more, from the cursor, for the lines written after the cut.
 * One that goes silent for `logSilenceAfterExitMs` after the exit without ending (or, before its
 * first entry, for `logFirstEntryAfterExitMs` from its opening) is stopped, and the rest of the log
 * given up on: the exit waits for this. So is a follow the engine has not opened within
 * `logOpenAfterExitMs` of asking (or the silence limit after the exit, if that ends later); should
 * it open after all, it is stopped and ships nothing.
 */
export async function shipContainerLog(
  ctx: Pick<
    RunContext,
    | "engine"
    | "shipper"
    | "state"
    | "clock"
    | "backoff"
    | "random"
    | "log"
    | "logSilenceAfterExitMs"
    | "logFirstEntryAfterExitMs"
    | "logOpenAfterExitMs"
  >,
  placementId: string,
  containerId: string,
  opts: { signal: AbortSignal; exited: Promise<void>; onFollow?: (follow: LogFollow | null) => void },
): Promise<void> {
  const { signal } = opts;
  let exitSeen = false;
  void opts.exited.then(() => {
    exitSeen = true;
  });
  const backoff = new Backoff(ctx.backoff, ctx.random);
  const silence: SilenceLimits = {
    silenceMs: ctx.logSilenceAfterExitMs,
    firstEntryMs: ctx.logFirstEntryAfterExitMs ?? LOG_FIRST_ENTRY_AFTER_EXIT_MS,
    openMs: ctx.logOpenAfterExitMs ?? LOG_OPEN_AFTER_EXIT_MS,
  };
  let failedAfterExit = 0;
  while (!signal.aborted) {
    let follow: ContainerLogFollow | null = null;
    const abandon = new AbortController();
    const askedAt = ctx.clock.monotonic();
    try {
      const opening = followContainerLog(
        ctx.engine,
        ctx.shipper,
        ctx.state,
        ctx.clock,
        placementId,
        containerId,
        abandon.signal,
      );
      follow = await openedInTime(opening, opts.exited, ctx.clock, askedAt, silence, signal);
      if (!follow) {
        // Nothing was read from this follow, so the cursor stays where the shipped lines left it.
        abandon.abort();
        if (signal.aborted) return;
        ctx.log("warn", "the engine did not open the stopped container's log stream; giving up on the rest", {
          placement_id: placementId,
          waited_ms: Math.round(ctx.clock.monotonic() - askedAt),
        });
        return;
      }
    } catch (error) {
      // Gone, and its log with it.
      if (error instanceof EngineError && error.code === "not_found") return;
      if (exitSeen && ++failedAfterExit >= LOG_DRAIN_TRIES) {
        ctx.log("warn", "could not read the rest of the container log; giving up", {
          placement_id: placementId,
          error: errorText(error),
        });
        return;
      }
      ctx.log("warn", "could not follow the container log; retrying", {
        placement_id: placementId,
        error: errorText(error),
      });
    }
    if (follow) {
      opts.onFollow?.(follow);
      const how = await endedOrSilent(follow, opts.exited, ctx.clock, silence, signal);
      if (typeof how === "object") follow.stop();
      opts.onFollow?.(null);
      if (signal.aborted) return;
      if (typeof how === "object") {
        // The lines read so far are queued and ship as usual; the engine's stream is left behind.
        ctx.log("warn", "the stopped container's log stream went silent without ending; giving up on the rest", {
          placement_id: placementId,
          silence_ms: how.silentMs,
        });
        return;
      }
      if (!exitSeen) {
        const grace = new AbortController();
        await Promise.race([opts.exited, ctx.clock.sleep(LOG_END_GRACE_MS, AbortSignal.any([signal, grace.signal]))]);
        grace.abort();
      }
      if (signal.aborted) return;
      // The engine closed the log of a stopped container: all of it was read.
      if (exitSeen && how === "complete") return;
      if (exitSeen && ++failedAfterExit >= LOG_DRAIN_TRIES) {
        ctx.log("warn", "the stopped container's log stream was cut again and again; giving up on the rest", {
          placement_id: placementId,
        });
        return;
      }
      ctx.log(
        "warn",
        exitSeen
          ? "the container's log stream was cut as it stopped; reading the rest"
          : "the container's log stream ended while it runs; following it again",
        { placement_id: placementId },
      );
    }
    await untilAborted(ctx.shipper.whenDrained(placementId), signal);
    await ctx.clock.sleep(backoff.next(), signal);
  }
}

/** LOG_SILENCE_AFTER_EXIT_MS, LOG_FIRST_ENTRY_AFTER_EXIT_MS and LOG_OPEN_AFTER_EXIT_MS, or what the agent was given. */
interface SilenceLimits {
  silenceMs: number;
  firstEntryMs: number;
  openMs: number;
}

/**
 * The follow once the engine has opened it (or the open's error), or null once the container has
 * exited and the open has taken `openMs` since `askedAt`, or `silenceMs` since the exit if that
 * ends later (an open asked long before the exit, as endedOrSilent does), or once `signal` aborts.
 * Timed on the monotonic clock.
 */
async function openedInTime(
  opening: Promise<ContainerLogFollow>,
  exited: Promise<void>,
  clock: Clock,
  askedAt: number,
  limits: SilenceLimits,
  signal: AbortSignal,
): Promise<ContainerLogFollow | null> {
  const settled = new AbortController();
  opening.then(
    () => settled.abort(),
    () => settled.abort(),
  );
  const watch = AbortSignal.any([signal, settled.signal]);
  await untilAborted(exited, watch);
  if (!watch.aborted) {
    const deadline = Math.max(askedAt + limits.openMs, clock.monotonic() + limits.silenceMs);
    for (let left = deadline - clock.monotonic(); left > 0 && !watch.aborted; left = deadline - clock.monotonic()) {
      await clock.sleep(left, watch);
    }
  }
  // An open that came as the time ran out is still followed.
  return settled.signal.aborted ? opening : null;
}

/**
 * How the follow ends, or the limit that ran out once the container has exited: the engine gave
 * nothing for `silenceMs` since the exit or its last entry, or no entry at all for `firstEntryMs`
 * since the follow opened (time held for the shipper's room does not count). Timed on the
 * monotonic clock.
 */
async function endedOrSilent(
  follow: ContainerLogFollow,
  exited: Promise<void>,
  clock: Clock,
  limits: SilenceLimits,
  signal: AbortSignal,
): Promise<LogEnd | { silentMs: number }> {
  const end = new AbortController();
  void follow.ended.then(() => end.abort());
  const watch = AbortSignal.any([signal, end.signal]);
  await untilAborted(exited, watch);
  const exitSeenAt = clock.monotonic();
  while (!watch.aborted) {
    // Before its first entry a follow opened from a cursor may still have the engine reading the log
    // up to `since`: that wait runs from the follow's opening for the longer limit, unless the
    // exit's ends later (an old follow). One opened from the start (a container's first follow) has
    // nothing to read first: its silence is the engine's, and the exit waits the silence limit only.
    const firstEntry =
      follow.fromCursor &&
      !follow.delivered &&
      follow.lastActivity + limits.firstEntryMs > exitSeenAt + limits.silenceMs;
    const limitMs = firstEntry ? limits.firstEntryMs : limits.silenceMs;
    const quietSince = firstEntry ? follow.lastActivity : Math.max(exitSeenAt, follow.lastActivity);
    const left = follow.held ? limitMs : quietSince + limitMs - clock.monotonic();
    if (left <= 0) return { silentMs: limitMs };
    // Looked at again within the silence limit: a first entry brings the end of the wait closer.
    await clock.sleep(Math.min(left, limits.silenceMs), watch);
  }
  return follow.ended;
}

/** Resolves with `promise`, or at once when `signal` aborts (never rejects). */
function untilAborted(promise: Promise<unknown>, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((done) => {
    const finish = () => {
      signal.removeEventListener("abort", finish);
      done();
    };
    signal.addEventListener("abort", finish, { once: true });
    promise.then(finish, finish);
  });
}

/**
 * Masks a password wherever text from elsewhere (the engine's messages) could carry it. Shorter
 * than 4 characters it is left alone: masking would mangle the text and hide nothing.
 */
export function redactor(password: string | undefined): (text: string) => string {
  if (!password || password.length < 4) return (text) => text;
  return (text) => text.split(password).join("***");
}
