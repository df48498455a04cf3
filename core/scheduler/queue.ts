/**
 * Queue order. Fast before Flex, then priority, then age, with two corrections:
 *  - aging: a waiting Flex job gains a priority level per `aging_step_ms` it has waited in this
 *    attempt (`queued_at`, else since submission; up to `aging_cap`), and
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
  const waited = Math.max(0, now - (job.queued_at ?? job.submitted_at));
  if (waited >= cfg.flex_promote_after_ms) return { cls: 0, priority: job.priority, tierRank: 1 };
  const bonus = Math.min(cfg.aging_cap, Math.floor(waited / cfg.aging_step_ms));
  return { cls: 1, priority: job.priority + bonus, tierRank: 1 };
}

/**
 * The order is computed in three stable passes, each linear when the queue arrives in age order
 * (the object stores it so): by age, then by standing (class, priority high first, tier) as a
 * small integer, then each run of equal standing by account rank; the last two are counting sorts.
 */
export function orderQueue(queue: readonly PackerJob[], now: number, cfg: AgingConfig): PackerJob[] {
  const n = queue.length;
  const standings = queue.map((job) => standing(job, now, cfg));
  let lo = 0;
  let hi = 0;
  for (const s of standings) {
    lo = Math.min(lo, s.priority);
    hi = Math.max(hi, s.priority);
  }
  const span = hi - lo + 1;
  const key = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const s = standings[i]!;
    key[i] = s.cls * span * 2 + (hi - s.priority) * 2 + s.tierRank;
  }
  let order: Int32Array = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  if (!inAgeOrder(queue)) {
    const byAge = [...order].sort(
      (a, b) => queue[a]!.submitted_at - queue[b]!.submitted_at || compareIds(queue[a]!.id, queue[b]!.id),
    );
    order = Int32Array.from(byAge);
  }
  order = countingSort(order, key, span * 4);
  // Accounts as small integers, then rank = earlier jobs of the same account in the same run.
  const accountOf = new Int32Array(n);
  const accounts = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const a = queue[i]!.account_id;
    let id = accounts.get(a);
    if (id === undefined) {
      id = accounts.size;
      accounts.set(a, id);
    }
    accountOf[i] = id;
  }
  const seen = new Int32Array(accounts.size);
  const rank = new Int32Array(n);
  let start = 0;
  while (start < n) {
    let end = start + 1;
    while (end < n && key[order[end]!] === key[order[start]!]) end++;
    if (end - start > 1) {
      let interleave = false;
      for (let k = start; k < end; k++) {
        const i = order[k]!;
        const r = seen[accountOf[i]!]!++;
        rank[i] = r;
        if (r > 0) interleave = true;
      }
      for (let k = start; k < end; k++) seen[accountOf[order[k]!]!] = 0;
      if (interleave) order.set(countingSort(order.subarray(start, end), rank, end - start), start);
    }
    start = end;
  }
  const out = new Array<PackerJob>(n);
  for (let k = 0; k < n; k++) out[k] = queue[order[k]!]!;
  return out;
}

function inAgeOrder(queue: readonly PackerJob[]): boolean {
  for (let i = 1; i < queue.length; i++) {
    const a = queue[i - 1]!;
    const b = queue[i]!;
    if (a.submitted_at > b.submitted_at || (a.submitted_at === b.submitted_at && a.id > b.id)) return false;
  }
  return true;
}

/** `order` stably reordered by `key[i]`, an integer in [0, range). */
function countingSort(order: Int32Array, key: Int32Array, range: number): Int32Array {
  const offset = new Int32Array(range + 1);
  for (let k = 0; k < order.length; k++) offset[key[order[k]!]! + 1]!++;
  for (let s = 1; s <= range; s++) offset[s]! += offset[s - 1]!;
  const out = new Int32Array(order.length);
  for (let k = 0; k < order.length; k++) {
    const i = order[k]!;
    out[offset[key[i]!]!++] = i;
  }
  return out;
}

function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
