/**
 * Two kinds of events. Timers are the engine's own future work (match this order in 200 ms, boot
 * this VM at 10:05), kept in a heap and run in time order as the clock passes them. SimEvents are
 * what the engine tells the outside world (a node became running, an order filled): the launcher
 * subscribes in-process or over server-sent events, a replay records them.
 */

export interface Timer {
  at: number;
  seq: number;
  label: string;
  run: (at: number) => void;
}

/** A binary min-heap of timers by (at, seq): equal times run in the order they were scheduled. */
export class TimerQueue {
  private readonly heap: Timer[] = [];
  private seq = 0;

  get size(): number {
    return this.heap.length;
  }

  schedule(at: number, label: string, run: (at: number) => void): void {
    const timer = { at, seq: this.seq++, label, run };
    this.heap.push(timer);
    let i = this.heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(this.heap[i]!, this.heap[parent]!)) break;
      [this.heap[i], this.heap[parent]] = [this.heap[parent]!, this.heap[i]!];
      i = parent;
    }
  }

  peekAt(): number | undefined {
    return this.heap[0]?.at;
  }

  /** Removes and returns the earliest timer if it is due at or before `t`. */
  popDue(t: number): Timer | undefined {
    const top = this.heap[0];
    if (!top || top.at > t) return undefined;
    const last = this.heap.pop()!;
    if (this.heap.length > 0) {
      this.heap[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < this.heap.length && before(this.heap[l]!, this.heap[m]!)) m = l;
        if (r < this.heap.length && before(this.heap[r]!, this.heap[m]!)) m = r;
        if (m === i) break;
        [this.heap[i], this.heap[m]] = [this.heap[m]!, this.heap[i]!];
        i = m;
      }
    }
    return top;
  }
}

const before = (a: Timer, b: Timer) => a.at < b.at || (a.at === b.at && a.seq < b.seq);

export type SimEventType =
  | "order.status"
  | "contract.updated"
  | "node.status"
  | "vm.status"
  | "balance.updated"
  | "clock.advanced";

export interface SimEvent {
  /** Increases by one per event: resume a stream with `?since=<seq>` or `Last-Event-ID`. */
  seq: number;
  /** Simulated time of the event, epoch ms. */
  at: number;
  type: SimEventType;
  data: Record<string, unknown>;
}

export type SimEventListener = (event: SimEvent) => void;

/** The outward event stream, with a bounded backlog for subscribers that reconnect. */
export class EventLog {
  private readonly backlog: SimEvent[] = [];
  private readonly listeners = new Set<SimEventListener>();
  private seq = 0;

  constructor(private readonly capacity = 10_000) {}

  emit(at: number, type: SimEventType, data: Record<string, unknown>): SimEvent {
    const event = { seq: ++this.seq, at, type, data };
    this.backlog.push(event);
    if (this.backlog.length > this.capacity * 1.2) this.backlog.splice(0, this.backlog.length - this.capacity);
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (error) {
        console.error(`[sfcompute-sim] event listener failed: ${String(error)}`);
      }
    }
    return event;
  }

  /** Events after `seq` still in the backlog. */
  since(seq: number): SimEvent[] {
    return this.backlog.filter((e) => e.seq > seq);
  }

  get lastSeq(): number {
    return this.seq;
  }

  subscribe(listener: SimEventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
