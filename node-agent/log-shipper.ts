/**
 * Container log lines on their way to the control plane: a bounded in-memory queue shipped in
 * batches. When the queue is full the followers pause their engine streams (the engine keeps the
 * log on disk meanwhile), so nothing is dropped. Each acknowledged batch advances the placement's
 * log cursor, from which a restarted agent resumes with the same `seq` numbers.
 */
import type { LogLine } from "../core/schemas";
import { Backoff, type BackoffPolicy } from "./backoff";
import type { Clock } from "./clock";
import { ControlPlaneError } from "./control-plane";
import { errorText, type Logger } from "./logger";
import type { LogCursor } from "./state";

interface QueuedLine {
  line: LogLine;
  bytes: number;
  /** Set on the last line of an engine entry: the position to resume after once acknowledged. */
  cursor: LogCursor | null;
}

export interface LogShipperOptions {
  maxLines: number;
  maxBytes: number;
  batchLines: number;
  batchBytes: number;
  /** How long to gather lines before a batch leaves (a batch also leaves when full). */
  flushDelayMs: number;
}

export const DEFAULT_LOG_SHIPPER: LogShipperOptions = {
  maxLines: 20_000,
  maxBytes: 16 << 20,
  batchLines: 1_000, // LogBatch allows up to 2,000
  batchBytes: 1 << 20,
  flushDelayMs: 250,
};

export class LogShipper {
  private queue: QueuedLine[] = [];
  private bytes = 0;
  private wake: (() => void) | null = null;
  private spaceWaiters: (() => void)[] = [];
  private drainWaiters: { placementId: string; done: () => void }[] = [];

  constructor(
    private readonly onAcked: (placementId: string, cursor: LogCursor) => void,
    private readonly log: Logger,
    private readonly opts: LogShipperOptions = DEFAULT_LOG_SHIPPER,
  ) {}

  push(line: LogLine, cursor: LogCursor | null): void {
    const bytes = Buffer.byteLength(line.line) + 64;
    this.queue.push({ line, bytes, cursor });
    this.bytes += bytes;
    this.wake?.();
  }

  get full(): boolean {
    return this.queue.length >= this.opts.maxLines || this.bytes >= this.opts.maxBytes;
  }

  /** Resolves when the queue has room again. */
  whenSpace(): Promise<void> {
    if (!this.full) return Promise.resolve();
    return new Promise((done) => this.spaceWaiters.push(done));
  }

  pending(placementId: string): number {
    return this.queue.filter((q) => q.line.placement_id === placementId).length;
  }

  /** Resolves once every queued line of the placement has been acknowledged. */
  whenDrained(placementId: string): Promise<void> {
    if (this.pending(placementId) === 0) return Promise.resolve();
    return new Promise((done) => this.drainWaiters.push({ placementId, done }));
  }

  async deliver(
    send: (lines: LogLine[]) => Promise<unknown>,
    clock: Clock,
    signal: AbortSignal,
    policy?: BackoffPolicy,
    random?: () => number,
  ): Promise<void> {
    const backoff = new Backoff(policy, random);
    signal.addEventListener("abort", () => this.wake?.(), { once: true });
    while (!signal.aborted) {
      if (this.queue.length === 0) {
        await new Promise<void>((done) => {
          this.wake = done;
        });
        this.wake = null;
        continue;
      }
      if (this.queue.length < this.opts.batchLines) await clock.sleep(this.opts.flushDelayMs, signal);
      const batch = this.takeBatch();
      try {
        await send(batch.map((q) => q.line));
        this.acknowledge(batch);
        backoff.reset();
      } catch (error) {
        if (error instanceof ControlPlaneError && error.kind === "rejected") {
          this.log("error", "control plane refused a log batch; dropped", {
            lines: batch.length,
            error: errorText(error),
          });
          this.acknowledge(batch);
          continue;
        }
        const delay = backoff.next();
        this.log(backoff.failures > 3 ? "warn" : "debug", "logs not delivered; retrying", {
          queued: this.queue.length,
          retry_in_ms: delay,
          error: errorText(error),
        });
        await clock.sleep(delay, signal);
      }
    }
  }

  private takeBatch(): QueuedLine[] {
    const batch: QueuedLine[] = [];
    let bytes = 0;
    for (const q of this.queue) {
      if (batch.length >= this.opts.batchLines || (batch.length > 0 && bytes + q.bytes > this.opts.batchBytes)) break;
      batch.push(q);
      bytes += q.bytes;
    }
    return batch;
  }

  /** The batch is the head of the queue (one sender): drop it and move the cursors forward. */
  private acknowledge(batch: QueuedLine[]): void {
    this.queue.splice(0, batch.length);
    const cursors = new Map<string, LogCursor>();
    for (const q of batch) {
      this.bytes -= q.bytes;
      if (q.cursor) cursors.set(q.line.placement_id, q.cursor);
    }
    for (const [placementId, cursor] of cursors) this.onAcked(placementId, cursor);
    if (!this.full) for (const done of this.spaceWaiters.splice(0)) done();
    this.drainWaiters = this.drainWaiters.filter((w) => {
      if (this.pending(w.placementId) > 0) return true;
      w.done();
      return false;
    });
  }
}
