/**
 * Exponential backoff with a cap and jitter, for every retry against the control plane or the
 * engine: attempt n waits about initial × factor^n, at most `max`, less a random share (`jitter`)
 * so that a fleet of agents coming back after an outage does not retry in lockstep.
 */
export interface BackoffPolicy {
  initialMs: number;
  maxMs: number;
  factor: number;
  /** 0 = no jitter; 0.5 = wait between 50 % and 100 % of the step. */
  jitter: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { initialMs: 500, maxMs: 30_000, factor: 2, jitter: 0.5 };

export function backoffDelay(attempt: number, policy: BackoffPolicy, random: () => number): number {
  const step = Math.min(policy.maxMs, policy.initialMs * policy.factor ** Math.max(0, attempt));
  return Math.round(step * (1 - policy.jitter * random()));
}

/** Counts consecutive failures; `reset()` after a success. */
export class Backoff {
  private attempt = 0;
  constructor(
    private readonly policy: BackoffPolicy = DEFAULT_BACKOFF,
    private readonly random: () => number = Math.random,
  ) {}

  /** The delay before the next try, advancing the failure count. */
  next(): number {
    return backoffDelay(this.attempt++, this.policy, this.random);
  }

  reset(): void {
    this.attempt = 0;
  }

  get failures(): number {
    return this.attempt;
  }
}
