/** What the capacity policy counts as free on a node the region scheduler knows (pure). */
import type { NodeView } from "../../durable-objects/region-scheduler/rpc";

/**
 * A registered node's free GPUs for the policy: healthy GPUs no work runs on, GPUs held for Fast
 * included (the region's own view leaves them out). A cordoned node (its container engine hung)
 * takes no new work, so none of its GPUs is free: the headroom is bought elsewhere (and the policy
 * drains a node cordoned for long, rule `engine_stuck`).
 */
export function policyFreeGpus(
  view: Pick<NodeView, "state" | "gpu_indices" | "unhealthy_gpus">,
  busyGpus: number,
): number {
  return view.state === "cordoned" ? 0 : view.gpu_indices.length - view.unhealthy_gpus.length - busyGpus;
}
