/**
 * Placement events waiting for the control plane, kept on disk (`<data>/outbox.json`) until it
 * acknowledges them, so neither an outage nor an agent restart loses one. Events carry ids chosen by
 * the agent; a re-sent event is recognised by its id on the other side. The queue is bounded: when
 * full, pull-progress events (informative only) go first, then the oldest events. A write that fails
 * (a full or read-only disk) is logged and the queue goes on in memory (files.ts, DataFile); a file
 * that cannot be read at start is set aside and the queue starts empty.
 */
import { join } from "node:path";
import { z } from "zod";
import { PlacementEvent } from "../core/schemas";
import { AGENT_BATCH_BYTES, batchSender, ControlPlaneError, jsonBytes } from "./control-plane";
import { type DeliveryOptions, type DeliveryQueue, deliver, Wakeup } from "./delivery";
import { DataFile } from "./files";
import { errorText, type Logger } from "./logger";

const MAX_BATCH = 500; // EventBatch allows up to 500
/** What `{"events":[]}` weighs: the part of a batch's body that is not its events. */
const ENVELOPE_BYTES = jsonBytes({ events: [] });

/**
 * The head of the queue as one request body can carry it: up to MAX_BATCH events and
 * AGENT_BATCH_BYTES serialized (500 events with long failure reasons or pull progress would pass
 * the control plane's body cap, and a refused batch goes one event at a time); one always goes.
 */
export function eventBatch(events: readonly PlacementEvent[]): PlacementEvent[] {
  const batch: PlacementEvent[] = [];
  let bytes = ENVELOPE_BYTES;
  for (const e of events) {
    const size = jsonBytes(e) + 1;
    if (batch.length >= MAX_BATCH || (batch.length > 0 && bytes + size > AGENT_BATCH_BYTES)) break;
    batch.push(e);
    bytes += size;
  }
  return batch;
}

export class EventOutbox {
  private events: PlacementEvent[];
  private readonly wakeup = new Wakeup();
  private idle: (() => void)[] = [];
  private readonly file: DataFile;
  dropped = 0;

  private constructor(
    path: string,
    private readonly maxEvents: number,
    private readonly log: Logger,
  ) {
    this.file = new DataFile(path, log);
    this.events = this.file.read((raw) => z.array(PlacementEvent).parse(raw)) ?? [];
  }

  static open(dataDir: string, opts: { maxEvents?: number; log: Logger }): EventOutbox {
    return new EventOutbox(join(dataDir, "outbox.json"), opts.maxEvents ?? 5_000, opts.log);
  }

  get size(): number {
    return this.events.length;
  }

  has(eventId: string): boolean {
    return this.events.some((e) => e.event_id === eventId);
  }

  /**
   * Persists the event before returning (if the disk takes it: else it waits in memory only, until a
   * later write succeeds). An id already waiting is not queued twice.
   */
  add(event: PlacementEvent): void {
    if (this.has(event.event_id)) return;
    this.events.push(event);
    while (this.events.length > this.maxEvents) {
      const progress = this.events.findIndex((e) => e.type === "pulling");
      const [gone] = this.events.splice(Math.max(progress, 0), 1);
      this.dropped++;
      this.log("warn", "event outbox full: dropped an event", { event_id: gone?.event_id, type: gone?.type });
    }
    this.save();
    this.wakeup.wake();
  }

  /** Resolves once nothing is waiting (tests, and a clean shutdown). */
  whenEmpty(): Promise<void> {
    if (this.events.length === 0) return Promise.resolve();
    return new Promise((done) => this.idle.push(done));
  }

  /**
   * Sends until `signal` aborts: batches in order, backing off while the control plane is unreachable
   * or answers anything but a refusal of the events themselves (a 401 while the node token is
   * replaced: control-plane.ts, refusesBatch), which drops only the event it refuses.
   */
  deliver(sendEvents: (events: PlacementEvent[]) => Promise<unknown>, opts: DeliveryOptions): Promise<void> {
    const send = batchSender(sendEvents);
    const queue: DeliveryQueue<PlacementEvent[]> = {
      what: "events",
      nextBatch: async () => {
        if (this.events.length > 0) return eventBatch(this.events);
        for (const done of this.idle.splice(0)) done();
        return null;
      },
      send,
      acknowledge: (batch) => this.remove(batch),
      // Find the event the control plane refuses and drop only that one.
      refused: async (batch) => {
        for (const event of batch) {
          try {
            await send([event]);
            this.remove([event]);
          } catch (error) {
            if (!(error instanceof ControlPlaneError && error.kind === "rejected")) return;
            this.log("error", "control plane refused an event; dropped", { event, error: errorText(error) });
            this.remove([event]);
          }
        }
      },
      waiting: () => this.events.length,
    };
    return deliver(queue, this.wakeup, opts);
  }

  private remove(sent: PlacementEvent[]): void {
    const ids = new Set(sent.map((e) => e.event_id));
    this.events = this.events.filter((e) => !ids.has(e.event_id));
    this.save();
  }

  private save(): void {
    this.file.write(this.events);
  }
}
