/**
 * A deadline on the container engine's calls that should answer quickly. A hung engine (seen:
 * Debian's docker.io 20.10.24, `docker start` blocked forever on libnetwork's lock while `docker ps`
 * and `_ping` still answered) otherwise leaves the agent awaiting a call forever: the placement
 * neither runs nor fails. Past its deadline a call rejects with EngineError `engine_timeout`; the
 * call itself cannot be cancelled, so it stays tracked, and the engine counts as stuck until every
 * call that passed its deadline has settled (a restarted engine fails them with connection errors).
 *
 * No deadline on what is long by nature: `wait` (until the container exits) and `followLogs` (the
 * call resolves once the stream opens; a stream opened after a deadline would be left following
 * with no one to stop it; once the container has exited, shipContainerLog bounds the open itself and
 * stops a late one: LOG_OPEN_AFTER_EXIT_MS). A `pull` takes as long as its download, so it has no
 * deadline either, but it reports progress all along (the engine sends events while it downloads
 * or extracts): one silent for `pullStallMs` rejects with PullStalled (`pull_stalled`). That is
 * usually the registry or the network, not the engine: it does not make the engine stuck. The
 * engine's pull cannot be cancelled and goes on; PullStalled.outcome says how it ends (a pull that
 * finishes later leaves the image cached), and its progress goes nowhere from the stall on.
 */
import type { EngineStuck } from "../core/schemas";
import type { Clock } from "./clock";
import {
  type ContainerDetails,
  type ContainerEngine,
  type ContainerSpec,
  type ContainerSummary,
  EngineError,
  type ImageSummary,
  type LogEntry,
  type LogFollow,
  type RegistryCredentials,
  type StatsSample,
} from "./docker/engine";

export const DEFAULT_ENGINE_TIMEOUT_MS = 60_000;
export const DEFAULT_PULL_STALL_MS = 300_000;

export interface EngineWatchdogOptions {
  /** How long a call may go unanswered (a stop: its grace period plus this). */
  timeoutMs: number;
  /** How long a pull may go without reporting progress before it fails (default DEFAULT_PULL_STALL_MS). */
  pullStallMs?: number;
  clock: Clock;
  /** The engine became stuck (the oldest late call), or answers again (undefined). */
  onChange?: (stuck: EngineStuck | undefined) => void;
}

/** `60 s`, `0.2 s`. */
export function formatSeconds(ms: number): string {
  return `${Math.round(ms / 100) / 10} s`;
}

const shortId = (id: string) => id.slice(0, 12);

/** How the engine's own pull ended after the watchdog gave up on it. */
export type LatePullOutcome = { pulled: true } | { pulled: false; error: unknown };

/**
 * A pull silent for the stall limit. The engine's pull itself goes on (it cannot be cancelled):
 * `outcome` resolves (never rejects) when it ends, so whoever tracks the pull can settle it then.
 */
export class PullStalled extends EngineError {
  constructor(
    readonly ref: string,
    readonly stallMs: number,
    readonly outcome: Promise<LatePullOutcome>,
  ) {
    super("pull_stalled", `image pull made no progress for ${formatSeconds(stallMs)}`);
  }
}

export class EngineWatchdog implements ContainerEngine {
  /** Calls past their deadline that have not settled yet. */
  private readonly late = new Set<EngineStuck>();

  constructor(
    readonly engine: ContainerEngine,
    private readonly opts: EngineWatchdogOptions,
  ) {}

  get timeoutMs(): number {
    return this.opts.timeoutMs;
  }

  /** The oldest call that passed its deadline and has not settled; undefined when there is none. */
  stuck(): EngineStuck | undefined {
    let oldest: EngineStuck | undefined;
    for (const call of this.late) if (!oldest || call.since < oldest.since) oldest = call;
    return oldest ? { ...oldest } : undefined;
  }

  ping(): Promise<void> {
    return this.guard("ping", "", () => this.engine.ping());
  }

  list(labels: Record<string, string>): Promise<ContainerSummary[]> {
    const detail = Object.entries(labels)
      .map(([k, v]) => `${k}=${v}`)
      .join(",");
    return this.guard("list", detail, () => this.engine.list(labels));
  }

  inspect(id: string): Promise<ContainerDetails | null> {
    return this.guard("inspect", shortId(id), () => this.engine.inspect(id));
  }

  hasImage(ref: string): Promise<boolean> {
    return this.guard("hasImage", ref, () => this.engine.hasImage(ref));
  }

  imageId(ref: string): Promise<string | null> {
    return this.guard("imageId", ref, () => this.engine.imageId(ref));
  }

  get pullStallMs(): number {
    return this.opts.pullStallMs ?? DEFAULT_PULL_STALL_MS;
  }

  /**
   * No deadline (a pull takes as long as its download), but a stall limit: PullStalled once it has
   * reported no progress for `pullStallMs`, every progress event starting that time again. A stall
   * does not make the engine stuck. One timer at a time, not one per event: a pull reports often.
   */
  pull(ref: string, onProgress: (progress: string) => void, credentials?: RegistryCredentials): Promise<void> {
    const { clock } = this.opts;
    const stallMs = this.pullStallMs;
    // Silence is a duration: timed on the monotonic clock, so a wall clock stepped meanwhile (NTP,
    // a resumed VM) neither fails a moving pull nor keeps a stalled one waiting by the step's size.
    let lastProgress = clock.monotonic();
    let stalled = false;
    let pending: Promise<void>;
    try {
      pending = this.engine.pull(
        ref,
        (progress) => {
          // Given up on: the caller has moved on, and hears no more of this pull.
          if (stalled) return;
          lastProgress = clock.monotonic();
          onProgress(progress);
        },
        credentials,
      );
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise<void>((resolve, reject) => {
      const timer = new AbortController();
      pending.then(
        () => {
          timer.abort();
          resolve();
        },
        (error) => {
          timer.abort();
          reject(error);
        },
      );
      void (async () => {
        for (;;) {
          const left = lastProgress + stallMs - clock.monotonic();
          if (left <= 0) break;
          await clock.sleep(left, timer.signal);
          if (timer.signal.aborted) return;
        }
        stalled = true;
        const outcome = pending.then(
          (): LatePullOutcome => ({ pulled: true }),
          (error: unknown): LatePullOutcome => ({ pulled: false, error }),
        );
        reject(new PullStalled(ref, stallMs, outcome));
      })();
    });
  }

  dataRoot(): Promise<string | null> {
    return this.guard("dataRoot", "", () => this.engine.dataRoot());
  }

  listImages(): Promise<ImageSummary[]> {
    return this.guard("listImages", "", () => this.engine.listImages());
  }

  containerImageIds(): Promise<Set<string>> {
    return this.guard("containerImageIds", "", () => this.engine.containerImageIds());
  }

  removeImage(ref: string): Promise<void> {
    return this.guard("removeImage", ref, () => this.engine.removeImage(ref));
  }

  create(spec: ContainerSpec): Promise<string> {
    return this.guard("create", spec.name, () => this.engine.create(spec));
  }

  start(id: string): Promise<void> {
    return this.guard("start", shortId(id), () => this.engine.start(id));
  }

  /** No deadline: resolves when the container stops running, however long it runs. */
  wait(id: string, signal?: AbortSignal): Promise<void> {
    return this.engine.wait(id, signal);
  }

  /** The engine waits out the grace period before it kills: the deadline is that plus the timeout. */
  stop(id: string, graceMs: number): Promise<void> {
    return this.guard("stop", shortId(id), () => this.engine.stop(id, graceMs), graceMs + this.opts.timeoutMs);
  }

  remove(id: string): Promise<void> {
    return this.guard("remove", shortId(id), () => this.engine.remove(id));
  }

  /** No deadline (see the file's comment). */
  followLogs(id: string, since: string | null, sink: (entry: LogEntry) => void): Promise<LogFollow> {
    return this.engine.followLogs(id, since, sink);
  }

  /** One sample (one-shot, not a stream): answers in milliseconds on a healthy engine. */
  stats(id: string): Promise<StatsSample | null> {
    return this.guard("stats", shortId(id), () => this.engine.stats(id));
  }

  private guard<T>(operation: string, detail: string, call: () => Promise<T>, timeoutMs = this.opts.timeoutMs) {
    const since = this.opts.clock.now();
    let pending: Promise<T>;
    try {
      pending = call();
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise<T>((resolve, reject) => {
      const timer = new AbortController();
      pending.then(
        (value) => {
          timer.abort();
          resolve(value);
        },
        (error) => {
          timer.abort();
          reject(error);
        },
      );
      void this.opts.clock.sleep(timeoutMs, timer.signal).then(() => {
        if (timer.signal.aborted) return;
        const entry: EngineStuck = { since, operation, detail: detail.slice(0, 512) };
        this.late.add(entry);
        if (this.late.size === 1) this.opts.onChange?.(this.stuck());
        reject(
          new EngineError(
            "engine_timeout",
            `the container engine did not answer "${operation}" within ${formatSeconds(timeoutMs)}`,
          ),
        );
        // The late answer, whatever it is, settles the call: the engine is answering again.
        const settled = () => {
          this.late.delete(entry);
          if (this.late.size === 0) this.opts.onChange?.(undefined);
        };
        pending.then(settled, settled);
      });
    });
  }
}
