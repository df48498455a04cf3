/** Builders for the packer's tests: an 8-GPU ready node and a 1-GPU Fast job, overridable. */
import type { PackerAllocation, PackerJob, PackerNode } from "./model";

export function node(id: string, over: Partial<PackerNode> = {}): PackerNode {
  return {
    id,
    zone: "z1",
    gpu_model: "H100",
    gpus: [0, 1, 2, 3, 4, 5, 6, 7],
    unhealthy_gpus: [],
    cpu_milli: 64_000,
    memory_mib: 512_000,
    state: "ready",
    block_end_at: null,
    ...over,
  };
}

export function job(id: string, over: Partial<PackerJob> = {}): PackerJob {
  return {
    id,
    account_id: "acct-a",
    tier: "fast",
    priority: 0,
    gpu_count: 1,
    gpu_models: [],
    cpu_milli: 4_000,
    memory_mib: 16_384,
    estimated_duration_s: null,
    max_runtime_s: 3_600,
    submitted_at: 0,
    attempt: 0,
    ...over,
  };
}

/** GPUs `indices` of `nodeId` held by a job expected to end at `end`. */
export function busy(nodeId: string, indices: number[], end: number | null = null, cpu = 0, mem = 0): PackerAllocation {
  return { node_id: nodeId, gpu_indices: indices, cpu_milli: cpu, memory_mib: mem, expected_end_at: end };
}
