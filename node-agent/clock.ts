/** Time, injected everywhere the agent waits or stamps, so tests can drive it. */
export interface Clock {
  /** The wall clock (ms since the epoch): timestamps, and absolute times such as kill deadlines. */
  now(): number;
  /**
   * Milliseconds on the monotonic clock, from an arbitrary origin: for how long something has
   * lasted (a pull's silence), which a step of the wall clock must not lengthen or cut short.
   */
  monotonic(): number;
  /**
   * Resolves after `ms` on the monotonic clock, whatever the wall clock does meanwhile (NTP stepping
   * it back must not hold up heartbeats, backoffs or timeouts), or at once when `signal` aborts
   * (never rejects).
   */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

// setTimeout fires at once for delays above 2^31-1 ms (~24.8 days); kill deadlines can be further away.
const MAX_TIMER_MS = 2 ** 31 - 1;

export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
  sleep(ms, signal) {
    return new Promise((done) => {
      if (signal?.aborted) return done();
      let timer: NodeJS.Timeout;
      const until = performance.now() + Math.max(0, ms);
      const finish = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", finish);
        done();
      };
      const arm = () => {
        const left = until - performance.now();
        if (left <= 0) return finish();
        timer = setTimeout(arm, Math.min(left, MAX_TIMER_MS));
      };
      signal?.addEventListener("abort", finish, { once: true });
      arm();
    });
  },
};
