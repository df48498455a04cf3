/**
 * Queue order. Fast before Flex, then priority, then age, with two corrections:
 *  - aging: a waiting Flex job gains a priority level per `aging_step_ms` (up to `aging_cap`), and
 *    after `flex_promote_after_ms` it is ordered with Fast work — after Fast jobs of equal or
 *    higher priority, before those of lower priority — so Flex work cannot starve forever while a
 *    Fast job never waits behind a Flex job of its own priority;
 *  - fairness: among jobs of equal standing (same class, priority and tier), each account's n-th
 *    job comes after every account's (n−1)-th, so one account's burst does not hold the head.
 * Ties end at submit time, then id: the order is a pure function of the queue and `now`.
 */
import type { PackerConfig, PackerJob } from "./model";

export interface Standing {
  /** 0: Fast (and promoted Flex); 1: Flex. */
  cls: 0 | 1;
  /** Priority with the Flex aging bonus (no bonus once promoted: priority alone then). */
  priority: number;
  tierRank: 0 | 1;
}

type AgingConfig = Pick<PackerConfig, "aging_step_ms" | "aging_cap" | "flex_promote_after_ms">;

export function standing(job: PackerJob, now: number, cfg: AgingConfig): Standing {
  if (job.tier === "fast") return { cls: 0, priority: job.priority, tierRank: 0 };
  const waited = Math.max(0, now - job.submitted_at);
  if (waited >= cfg.flex_promote_after_ms) return { cls: 0, priority: job.priority, tierRank: 1 };
  const bonus = Math.min(cfg.aging_cap, Math.floor(waited / cfg.aging_step_ms));
  return { cls: 1, priority: job.priority + bonus, tierRank: 1 };
}

export function orderQueue(queue: readonly PackerJob[], now: number, cfg: AgingConfig): PackerJob[] {
  const keyed = queue.map((job) => ({ job, s: standing(job, now, cfg), rank: 0 }));
  const sameStanding = (a: Standing, b: Standing) =>
    a.cls === b.cls && a.priority === b.priority && a.tierRank === b.tierRank;
  keyed.sort(
    (a, b) =>
      a.s.cls - b.s.cls ||
      b.s.priority - a.s.priority ||
      a.s.tierRank - b.s.tierRank ||
      a.job.submitted_at - b.job.submitted_at ||
      compareIds(a.job.id, b.job.id),
  );
  // Within each run of equal standing: rank = how many earlier jobs of the same account precede it.
  let start = 0;
  while (start < keyed.length) {
    let end = start + 1;
    while (end < keyed.length && sameStanding(keyed[end]!.s, keyed[start]!.s)) end++;
    if (end - start > 1) {
      const seen = new Map<string, number>();
      for (let i = start; i < end; i++) {
        const item = keyed[i]!;
        const n = seen.get(item.job.account_id) ?? 0;
        item.rank = n;
        seen.set(item.job.account_id, n + 1);
      }
      const run = keyed.slice(start, end).sort((a, b) => a.rank - b.rank);
      for (let i = start; i < end; i++) keyed[i] = run[i - start]!;
    }
    start = end;
  }
  return keyed.map((k) => k.job);
}

function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
