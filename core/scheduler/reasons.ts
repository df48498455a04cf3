/**
 * Why a node was rejected for a job, as a code, and the one-line summary a waiting job carries:
 * `0/12 nodes: 9 insufficient free GPUs, 3 GPU model not allowed`.
 */
export const REASON_CODES = [
  "node_lost",
  "node_cordoned",
  "node_draining",
  "gpu_model_not_allowed",
  "insufficient_free_gpus",
  "reserved_for_fast",
  "reserved_for_flex",
  "reserved",
  "insufficient_cpu",
  "insufficient_memory",
  "block_ends_too_soon",
  "would_delay_reserved_job",
] as const;
export type ReasonCode = (typeof REASON_CODES)[number];

export const REASON_TEXT: Record<ReasonCode, string> = {
  node_lost: "node lost",
  node_cordoned: "node cordoned",
  node_draining: "node draining",
  gpu_model_not_allowed: "GPU model not allowed",
  insufficient_free_gpus: "insufficient free GPUs",
  reserved_for_fast: "free GPUs reserved for Fast",
  reserved_for_flex: "free GPUs reserved for Flex",
  reserved: "free GPUs held by a reservation",
  insufficient_cpu: "insufficient CPU",
  insufficient_memory: "insufficient memory",
  block_ends_too_soon: "block ends before the job's estimated end",
  would_delay_reserved_job: "would delay a reserved job",
};

export type ReasonCounts = Partial<Record<ReasonCode, number>>;

export function addReason(counts: ReasonCounts, code: ReasonCode, n = 1): void {
  if (n > 0) counts[code] = (counts[code] ?? 0) + n;
}

/** `feasible/total nodes: n reason, …`, most common reason first (ties in filter order). */
export function summarise(feasible: number, total: number, counts: ReasonCounts, extra?: string): string {
  if (total === 0) return "0/0 nodes: no nodes in the region";
  const parts = REASON_CODES.filter((c) => (counts[c] ?? 0) > 0)
    .map((c, order) => ({ c, n: counts[c]!, order }))
    .sort((a, b) => b.n - a.n || a.order - b.order)
    .map(({ c, n }) => `${n} ${REASON_TEXT[c]}`);
  const head = `${feasible}/${total} nodes`;
  const body = parts.length ? `${head}: ${parts.join(", ")}` : head;
  return extra ? `${body}; ${extra}` : body;
}
