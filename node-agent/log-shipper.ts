/**
 * Container log lines on their way to the control plane: a bounded in-memory queue shipped in
 * batches. When the queue is full the followers pause their engine streams (the engine keeps the
 * log on disk meanwhile), so nothing is dropped. Each acknowledged batch advances the placement's
 * log cursor, from which a restarted agent resumes with the same `seq` numbers.
 */
import type { LogLine } from "../core/schemas";
import { type DeliveryOptions, type DeliveryQueue, deliver, Wakeup } from "./delivery";
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
  private readonly wakeup = new Wakeup();
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
    this.wakeup.wake();
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

  deliver(send: (lines: LogLine[]) => Promise<unknown>, opts: DeliveryOptions): Promise<void> {
    const queue: DeliveryQueue<QueuedLine[]> = {
      what: "logs",
      nextBatch: async () => {
        if (this.queue.length === 0) return null;
        // Gather a little before sending, unless a full batch is already waiting.
        if (this.queue.length < this.opts.batchLines) await opts.clock.sleep(this.opts.flushDelayMs, opts.signal);
        return this.takeBatch();
      },
      send: (batch) => send(batch.map((q) => q.line)),
      acknowledge: (batch) => this.acknowledge(batch),
      refused: async (batch, error) => {
        this.log("error", "control plane refused a log batch; dropped", {
          lines: batch.length,
          error: errorText(error),
        });
        this.acknowledge(batch);
      },
      waiting: () => this.queue.length,
    };
    return deliver(queue, this.wakeup, opts);
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
