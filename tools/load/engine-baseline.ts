/**
 * The container engine's own cost, measured in the same run as the load: N containers like the
 * load's jobs (the agent's container spec: 1 GPU, the test image, `true`) created and started at
 * once on the engine the node agents use, as N users' jobs would arrive together; then removed.
 * Submit → running can never beat this, whatever the control plane does.
 */
import { containerSpec } from "../../node-agent/container-spec";
import { DockerodeEngine } from "../../node-agent/docker/dockerode-engine";
import type { ContainerSpec } from "../../node-agent/docker/engine";
import { type Percentiles, percentiles } from "./stats";

export interface EngineBaseline {
  containers: number;
  /** Create + start of one container while the others start too. */
  create_start_ms: Percentiles;
  /** From the first create to the last start: the batch's wall time. */
  batch_ms: number;
}

/**
 * The container the node agent makes for one of the load's jobs (1 GPU, 0.2 CPU, 256 MiB, `image`,
 * `true`): the `i`-th of a `batch`, whose name is also the owning agent's, so it can be found.
 */
export function loadJobSpec(batch: string, i: number, image: string): ContainerSpec {
  const placementId = `${batch}-${i}`;
  return containerSpec(
    {
      placement_id: placementId,
      job_id: placementId,
      attempt: 1,
      gang_index: 0,
      gang_size: 1,
      gang_master_address: null,
      health_check: null,
      image,
      command: ["true"],
      args: [],
      env: [],
      gpu_indices: [i % 8],
      cpu_milli: 200,
      memory_mib: 256,
      kill_deadline: null,
      desired: "running",
      grace_period_ms: 1_000,
    },
    { agentName: batch, nodeId: batch, pidsLimit: 32_768 },
  );
}

export async function measureEngine(opts: {
  socketPath: string;
  image: string;
  containers: number;
}): Promise<EngineBaseline> {
  const engine = new DockerodeEngine({ socketPath: opts.socketPath });
  const batch = `load-baseline-${Date.now().toString(36)}`;
  const ids: string[] = [];
  const started = performance.now();
  try {
    const times = await Promise.all(
      Array.from({ length: opts.containers }, async (_, i) => {
        const spec = loadJobSpec(batch, i, opts.image);
        const t = performance.now();
        const id = await engine.create(spec);
        ids.push(id);
        await engine.start(id);
        return performance.now() - t;
      }),
    );
    return {
      containers: opts.containers,
      create_start_ms: percentiles(times),
      batch_ms: Math.round(performance.now() - started),
    };
  } finally {
    await Promise.all(ids.map((id) => engine.remove(id).catch(() => {})));
  }
}
