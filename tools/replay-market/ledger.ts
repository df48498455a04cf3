/**
 * What one policy's replay measured: job waits, GPU-seconds used and held, money spent and earned,
 * orders. Everything is counted within the window: a block that runs past the window's end is
 * charged for the share of its hours inside it (the rest would serve what comes after).
 */
import { quantile } from "../../core/autoscaler/demand";
import { GPUS_PER_NODE, type Tier } from "../../core/schemas/common";

export interface PolicyMetrics {
  fast_start_p50_s: number;
  fast_start_p99_s: number;
  flex_wait_p50_s: number;
  flex_wait_p99_s: number;
  utilisation: number;
  spend_usd: number;
  spend_per_used_gpu_hour_usd: number;
  revenue_usd: number;
  orders_placed: number;
  orders_failed: number;
  sold_back_node_hours: number;
}

export interface ReplayResult {
  scalar: PolicyMetrics;
  static: PolicyMetrics;
  reactive: PolicyMetrics;
  lower_bound_spend_usd: number;
}

/** Customer prices, cents per GPU-second by tier. */
export type TierPrices = Record<Tier, number>;

const round = (x: number, digits: number) => Math.round(x * 10 ** digits) / 10 ** digits;

export class Ledger {
  private readonly submitted = new Map<string, { tier: Tier; at: number }>();
  private readonly waits: Record<Tier, number[]> = { fast: [], flex: [] };
  private readonly usedGpuMs: Record<Tier, number> = { fast: 0, flex: 0 };
  private heldNodeMs = 0;
  private soldNodeMs = 0;
  private spendCents = 0;
  private firstNodeReadyAt: number | null = null;
  ordersPlaced = 0;
  ordersFailed = 0;

  constructor(
    private readonly windowStart: number,
    private readonly windowEnd: number,
  ) {}

  submit(jobId: string, tier: Tier, at: number): void {
    this.submitted.set(jobId, { tier, at });
  }

  /** The first node of the replay became ready: waits before it are the cold start, not the policy. */
  nodeReady(at: number): void {
    if (this.firstNodeReadyAt === null) this.firstNodeReadyAt = at;
  }

  started(jobId: string, at: number): void {
    const job = this.submitted.get(jobId);
    if (!job) return;
    this.submitted.delete(jobId);
    const wait = at - this.measuredFrom(job.at);
    this.waits[job.tier].push(wait);
    if (job.tier === "fast" && wait > 60_000) this.slowFast.push({ jobId, at: job.at, waitMs: wait });
  }

  /** Fast jobs that waited over a minute, for diagnostics. */
  readonly slowFast: { jobId: string; at: number; waitMs: number }[] = [];

  /** GPU time a job used, [from, to) cut to the window. */
  used(tier: Tier, gpus: number, from: number, to: number): void {
    this.usedGpuMs[tier] += gpus * this.overlap(from, to);
  }

  /** Spend in the window by what was bought, for diagnostics: e.g. `buy:1h`, `extend:336h`, `sold`. */
  readonly spendBy: Record<string, number> = {};

  /** A filled buy or extension: `nodes` nodes over [start, end) for `priceCents`. */
  bought(priceCents: number, nodes: number, start: number, end: number, kind = "buy"): void {
    const share = this.overlap(start, end) / (end - start);
    this.spendCents += priceCents * share;
    const key = `${kind}:${Math.round((end - start) / 3_600_000)}h`;
    this.spendBy[key] = Math.round((this.spendBy[key] ?? 0) + (priceCents * share) / 100);
    this.heldNodeMs += nodes * this.overlap(start, end);
  }

  /** A filled sell-back: `proceedsCents` after the resale fee, for `nodes` over [start, end). */
  soldBack(proceedsCents: number, nodes: number, start: number, end: number): void {
    const share = this.overlap(start, end) / (end - start);
    this.spendCents -= proceedsCents * share;
    this.spendBy.sold = Math.round((this.spendBy.sold ?? 0) - (proceedsCents * share) / 100);
    this.heldNodeMs -= nodes * this.overlap(start, end);
    this.soldNodeMs += nodes * this.overlap(start, end);
  }

  /** Jobs submitted that have not started. */
  waitingCount(): number {
    return this.submitted.size;
  }

  /** Of the jobs not started, those that had waited longer than `promiseMs(tier)` at the window's end. */
  overdueCount(promiseMs: (tier: Tier) => number): number {
    let n = 0;
    for (const job of this.submitted.values()) if (this.waitAtEnd(job.at) > promiseMs(job.tier)) n++;
    return n;
  }

  metrics(prices: TierPrices): PolicyMetrics {
    // Jobs still waiting at the window's end count with the wait they have had so far.
    const waits = { fast: [...this.waits.fast], flex: [...this.waits.flex] };
    for (const job of this.submitted.values()) waits[job.tier].push(this.waitAtEnd(job.at));
    const usedGpuMs = this.usedGpuMs.fast + this.usedGpuMs.flex;
    const usedGpuHours = usedGpuMs / 3_600_000;
    const revenueCents = (this.usedGpuMs.fast * prices.fast + this.usedGpuMs.flex * prices.flex) / 1000;
    const s = (ms: number) => round(ms / 1000, 1);
    return {
      fast_start_p50_s: s(quantile(waits.fast, 0.5)),
      fast_start_p99_s: s(quantile(waits.fast, 0.99)),
      flex_wait_p50_s: s(quantile(waits.flex, 0.5)),
      flex_wait_p99_s: s(quantile(waits.flex, 0.99)),
      utilisation: round(this.heldNodeMs > 0 ? usedGpuMs / (this.heldNodeMs * GPUS_PER_NODE) : 0, 4),
      spend_usd: round(this.spendCents / 100, 2),
      spend_per_used_gpu_hour_usd: round(usedGpuHours > 0 ? this.spendCents / 100 / usedGpuHours : 0, 4),
      revenue_usd: round(revenueCents / 100, 2),
      orders_placed: this.ordersPlaced,
      orders_failed: this.ordersFailed,
      sold_back_node_hours: round(this.soldNodeMs / 3_600_000, 1),
    };
  }

  /** How long a job submitted at `submittedAt` and not started has waited at the window's end. */
  private waitAtEnd(submittedAt: number): number {
    return this.windowEnd - this.measuredFrom(submittedAt);
  }

  private measuredFrom(submittedAt: number): number {
    return Math.max(submittedAt, this.firstNodeReadyAt ?? submittedAt);
  }

  private overlap(from: number, to: number): number {
    return Math.max(0, Math.min(to, this.windowEnd) - Math.max(from, this.windowStart));
  }
}
