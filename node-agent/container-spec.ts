/** How a placement becomes a container: its name, labels, limits, environment and GPU request. */
import type { Placement } from "../core/schemas";
import type { ContainerSpec } from "./docker/engine";

/** Every container the agent manages carries these; it never touches a container without them. */
export const LABELS = {
  managed: "io.scalar.managed",
  /** Which agent owns it (its name, the host name by default): one engine may serve several in tests. */
  agent: "io.scalar.agent",
  node: "io.scalar.node_id",
  placement: "io.scalar.placement_id",
  job: "io.scalar.job_id",
  attempt: "io.scalar.attempt",
} as const;

const MIB = 1024 * 1024;

/** The rendezvous port on a gang's rank-0 node: PyTorch's default for MASTER_PORT. */
export const MASTER_PORT = 29500;

/** Names Docker accepts: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`. */
export function containerName(placementId: string): string {
  return `scalar-${placementId.replace(/[^a-zA-Z0-9_.-]/g, "-")}`;
}

export function ownLabels(agentName: string): Record<string, string> {
  return { [LABELS.managed]: "true", [LABELS.agent]: agentName };
}

export function containerSpec(
  placement: Placement,
  opts: { agentName: string; nodeId: string; pidsLimit: number; maxCpuMilli?: number },
): ContainerSpec {
  const env = placement.env
    // The GPUs a container sees are the placement's, set by the device request below, never by the job.
    .filter((e) => e.name !== "NVIDIA_VISIBLE_DEVICES")
    .map((e) => `${e.name}=${e.value}`);
  env.push(
    `SCALAR_PLACEMENT_ID=${placement.placement_id}`,
    `SCALAR_JOB_ID=${placement.job_id}`,
    `SCALAR_ATTEMPT=${placement.attempt}`,
    // A multi-node job's place in its gang (torchrun's --node-rank and --nnodes); 0 of 1 on one node.
    `SCALAR_NODE_RANK=${placement.gang_index}`,
    `SCALAR_NUM_NODES=${placement.gang_size}`,
  );
  // A gang's ranks meet at rank 0's node (torchrun's --master-addr, PyTorch's MASTER_ADDR/PORT for
  // env:// init); the job's own values win. Its containers share their hosts' network, so a port
  // rank 0 listens on is at that address: a gang holds its nodes whole, so no other job's ports clash.
  const gang = placement.gang_size > 1;
  if (gang && placement.gang_master_address) {
    const own = new Set(placement.env.map((e) => e.name));
    const rendezvous = [
      ["SCALAR_MASTER_ADDR", placement.gang_master_address],
      ["SCALAR_MASTER_PORT", String(MASTER_PORT)],
      ["MASTER_ADDR", placement.gang_master_address],
      ["MASTER_PORT", String(MASTER_PORT)],
    ];
    for (const [name, value] of rendezvous) if (!own.has(name!)) env.push(`${name}=${value}`);
  }
  // CUDA images set NVIDIA_VISIBLE_DEVICES=all; on a host whose default runtime is nvidia that would
  // expose every GPU to a placement that has none.
  if (placement.gpu_indices.length === 0) env.push("NVIDIA_VISIBLE_DEVICES=void");
  return {
    name: containerName(placement.placement_id),
    image: placement.image,
    ...(placement.command.length > 0 ? { entrypoint: placement.command } : {}),
    ...(placement.args.length > 0 ? { cmd: placement.args } : {}),
    env,
    labels: {
      ...ownLabels(opts.agentName),
      [LABELS.node]: opts.nodeId,
      [LABELS.placement]: placement.placement_id,
      [LABELS.job]: placement.job_id,
      [LABELS.attempt]: String(placement.attempt),
    },
    memoryBytes: placement.memory_mib * MIB,
    // Docker refuses a limit above the host's cores; a node that declares more (--cpus) caps it there.
    nanoCpus: Math.min(placement.cpu_milli, opts.maxCpuMilli ?? Number.POSITIVE_INFINITY) * 1_000_000,
    pidsLimit: opts.pidsLimit,
    gpuDeviceIds: [...placement.gpu_indices].sort((a, b) => a - b).map(String),
    ...(gang ? { hostNetwork: true } : {}),
  };
}
