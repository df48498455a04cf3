/**
 * The send loop shared by the event outbox and the log shipper: take the head of a queue, send it,
 * drop it once acknowledged; while the control plane is unreachable, back off and try the same
 * batch again; when it refuses a batch, let the queue decide what to drop.
 */
import { Backoff, type BackoffPolicy } from "./backoff";
import type { Clock } from "./clock";
import { ControlPlaneError } from "./control-plane";
import { errorText, type Logger } from "./logger";

/** A wake-up that is not lost when it comes before anyone waits. */
export class Wakeup {
  private waiter: (() => void) | null = null;
  private pending = false;

  wake(): void {
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w();
    } else {
      this.pending = true;
    }
  }

  wait(): Promise<void> {
    if (this.pending) {
      this.pending = false;
      return Promise.resolve();
    }
    return new Promise((done) => {
      this.waiter = done;
    });
  }
}

export interface DeliveryQueue<B> {
  /** What is delivered, for log lines ("events", "logs"). */
  what: string;
  /** The next batch from the head of the queue, or null when nothing waits. */
  nextBatch(): Promise<B | null>;
  send(batch: B): Promise<unknown>;
  /** The control plane took it: drop it from the queue. */
  acknowledge(batch: B): void;
  /** The control plane refused it (4xx): retrying as is would not help. */
  refused(batch: B, error: ControlPlaneError): Promise<void>;
  waiting(): number;
}

export interface DeliveryOptions {
  clock: Clock;
  signal: AbortSignal;
  log: Logger;
  policy?: BackoffPolicy;
  random?: () => number;
}

export async function deliver<B>(queue: DeliveryQueue<B>, wakeup: Wakeup, opts: DeliveryOptions): Promise<void> {
  const backoff = new Backoff(opts.policy, opts.random);
  opts.signal.addEventListener("abort", () => wakeup.wake(), { once: true });
  while (!opts.signal.aborted) {
    const batch = await queue.nextBatch();
    if (batch === null) {
      await wakeup.wait();
      continue;
    }
    try {
      await queue.send(batch);
      queue.acknowledge(batch);
      backoff.reset();
    } catch (error) {
      if (error instanceof ControlPlaneError && error.kind === "rejected") {
        await queue.refused(batch, error);
        continue;
      }
      const delay = backoff.next();
      opts.log(backoff.failures > 3 ? "warn" : "debug", `${queue.what} not delivered; retrying`, {
        waiting: queue.waiting(),
        retry_in_ms: delay,
        error: errorText(error),
      });
      await opts.clock.sleep(delay, opts.signal);
    }
  }
}
