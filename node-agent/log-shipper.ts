/**
 * Container log lines on their way to the control plane: a bounded in-memory queue shipped in
 * batches, each kept under the control plane's request body cap by its serialized size. When the
 * queue is full the followers pause their engine streams; the engine keeps the log on disk
 * meanwhile, but only within its json-file rotation (50 MB × 4 files per container), so a
 * container that writes more than that while shipping is paused loses the rotated part.
 *
 * A batch the control plane finds too large (413) is sent again in halves, down to single lines.
 * What it still refuses is dropped with an error log line: a single line refused as too large, or a
 * batch whose content it refuses (400, 422: sending it again would not help). Any other answer (a 401
 * while the node token is replaced, …) keeps the batch, sent again with backoff, as while the control
 * plane is unreachable (control-plane.ts, refusesBatch). Each acknowledged or dropped batch advances
 * the placement's log cursor, from which a restarted agent resumes with the same `seq` numbers.
 */
import type { LogLine } from "../core/schemas";
import { AGENT_BATCH_BYTES, batchSender, jsonBytes } from "./control-plane";
import { type DeliveryOptions, type DeliveryQueue, deliver, Wakeup } from "./delivery";
import { errorText, type Logger } from "./logger";
import type { LogCursor } from "./state";

/** What `{"lines":[]}` weighs: the part of a batch's body that is not its lines. */
const BATCH_ENVELOPE_BYTES = jsonBytes({ lines: [] });

interface QueuedLine {
  line: LogLine;
  /** The line's share of a batch's body: its JSON and a comma. */
  bytes: number;
  /** Set on the last line of an engine entry: the position to resume after once acknowledged. */
  cursor: LogCursor | null;
}

export interface LogShipperOptions {
  maxLines: number;
  maxBytes: number;
  batchLines: number;
  /** A batch's most serialized bytes (its request body, `{"lines":[…]}`); one line always goes. */
  batchBytes: number;
  /** How long to gather lines before a batch leaves (a batch also leaves when full). */
  flushDelayMs: number;
}

export const DEFAULT_LOG_SHIPPER: LogShipperOptions = {
  maxLines: 20_000,
  maxBytes: 16 << 20,
  batchLines: 1_000, // LogBatch allows up to 2,000
  batchBytes: AGENT_BATCH_BYTES, // under the control plane's body cap, MAX_REQUEST_BODY_BYTES
  flushDelayMs: 250,
};

export class LogShipper {
  private queue: QueuedLine[] = [];
  private bytes = 0;
  private readonly wakeup = new Wakeup();
  private spaceWaiters: (() => void)[] = [];
  private drainWaiters: { placementId: string; done: () => void }[] = [];
  /**
   * After a 413: the sizes, in lines from the head of the queue, of the pieces a refused batch was
   * cut into, sent one by one before batches are taken whole again.
   */
  private pieces: number[] = [];

  constructor(
    private readonly onAcked: (placementId: string, cursor: LogCursor) => void,
    private readonly log: Logger,
    private readonly opts: LogShipperOptions = DEFAULT_LOG_SHIPPER,
  ) {}

  push(line: LogLine, cursor: LogCursor | null): void {
    const bytes = jsonBytes(line) + 1;
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

  deliver(sendLines: (lines: LogLine[]) => Promise<unknown>, opts: DeliveryOptions): Promise<void> {
    const send = batchSender(sendLines);
    const queue: DeliveryQueue<QueuedLine[]> = {
      what: "logs",
      nextBatch: async () => {
        if (this.queue.length === 0) return null;
        // Gather a little before sending, unless a full batch (or a piece of a refused one) is waiting.
        if (this.pieces.length === 0 && this.queue.length < this.opts.batchLines) {
          await opts.clock.sleep(this.opts.flushDelayMs, opts.signal);
        }
        return this.takeBatch();
      },
      send: (batch) => send(batch.map((q) => q.line)),
      acknowledge: (batch) => this.acknowledge(batch),
      refused: async (batch, error) => {
        if (error.status === 413 && batch.length > 1) {
          // Too large after all (a control plane whose cap is lower than ours): send it again in halves.
          const half = Math.ceil(batch.length / 2);
          this.skipPieces(batch.length);
          this.pieces.unshift(half, batch.length - half);
          this.log("warn", "control plane refused a log batch as too large; sending it in halves", {
            lines: batch.length,
            error: errorText(error),
          });
          return;
        }
        const one = batch.length === 1 ? batch[0]?.line : undefined;
        this.log(
          "error",
          error.status === 413
            ? "control plane refused a log line as too large; dropped"
            : "control plane refused a log batch; dropped",
          {
            lines: batch.length,
            ...(one ? { placement_id: one.placement_id, seq: one.seq, chars: one.line.length } : {}),
            error: errorText(error),
          },
        );
        this.acknowledge(batch);
      },
      waiting: () => this.queue.length,
    };
    return deliver(queue, this.wakeup, opts);
  }

  private takeBatch(): QueuedLine[] {
    const most = this.pieces[0] ?? this.opts.batchLines;
    const batch: QueuedLine[] = [];
    let bytes = BATCH_ENVELOPE_BYTES;
    for (const q of this.queue) {
      if (batch.length >= most || (batch.length > 0 && bytes + q.bytes > this.opts.batchBytes)) break;
      batch.push(q);
      bytes += q.bytes;
    }
    return batch;
  }

  /** The first `lines` of the queue are done with: so are the pieces (after a 413) they made up. */
  private skipPieces(lines: number): void {
    while (lines > 0 && this.pieces.length > 0) {
      const head = this.pieces[0] as number;
      const taken = Math.min(lines, head);
      lines -= taken;
      if (taken === head) this.pieces.shift();
      else this.pieces[0] = head - taken;
    }
  }

  /** The batch is the head of the queue (one sender): drop it and move the cursors forward. */
  private acknowledge(batch: QueuedLine[]): void {
    this.queue.splice(0, batch.length);
    this.skipPieces(batch.length);
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
