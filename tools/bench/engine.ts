/**
 * `npm run bench:engine [-- --containers N --rounds R]`
 *
 * What one job's container costs the local Docker engine, with no control plane: N containers
 * (default 10, as the load test's users) created, started, waited for and removed together, R
 * rounds (default 3) of each variant, interleaved. CPU from /proc (tools/load/cpu.ts): the whole
 * machine's busy time per container, and the engine's processes' share (`engine`: dockerd,
 * containerd, and the shims and runc they start, unless PID 1 reaped them: then they are in `other`). Variants: `agent` (the node agent's own container spec and engine client: limits,
 * `--init`, a GPU request through the hook, the default bridge), the baseline; `agent_calls` (the
 * same, with every other engine call the agent makes for a job: image check, inspects, the log
 * followed, the reconcile's listing); `plain` (the engine's defaults, `docker run IMG true`);
 * `plain_no_network` (`--network none`). It says how
 * much of `load:fast`'s CPU per job the engine alone takes. Prints JSON; needs `npm run docker:up`.
 */

import { parseArgs } from "node:util";
import Docker from "dockerode";
import { ownLabels } from "../../node-agent/container-spec";
import { DockerodeEngine } from "../../node-agent/docker/dockerode-engine";
import { findEngine, TEST_IMAGE } from "../docker/stack";
import { cpuReport, cpuSnapshot } from "../load/cpu";
import { loadJobSpec } from "../load/engine-baseline";
import { percentile } from "../load/stats";

const { values } = parseArgs({
  options: {
    containers: { type: "string", default: "10" },
    rounds: { type: "string", default: "3" },
  },
});
const containers = Number(values.containers);
const rounds = Number(values.rounds);
if (!Number.isInteger(containers) || containers < 1 || !Number.isInteger(rounds) || rounds < 1) {
  console.error("usage: npm run bench:engine -- [--containers N] [--rounds R]");
  process.exit(2);
}

const found = await findEngine("gpu");
if (!found) {
  console.error("No Docker engine: start one with `npm run docker:up`.");
  process.exit(2);
}
const docker = new Docker({ socketPath: found.socket });
const engine = new DockerodeEngine({ socketPath: found.socket });
try {
  await docker.getImage(TEST_IMAGE).inspect();
} catch {
  // `docker:up` pushes the image to the local registry and removes it from the engine, so a
  // first run pulls it (the containers measured below then start from a cached image, as in load:fast).
  try {
    await engine.pull(TEST_IMAGE, () => {});
  } catch (err) {
    console.error(`${TEST_IMAGE} could not be pulled (${(err as Error).message}): run \`npm run docker:up\`.`);
    process.exit(2);
  }
}

interface Variant {
  /** Creates the `i`-th container of a batch; the round starts it, waits for it and removes it. */
  create: (i: number, batch: string) => Promise<string>;
  /**
   * Instead of the round's start and wait: the engine calls a node agent makes around them. Returns
   * when the container was started (`performance.now()`).
   */
  run?: (id: string, batch: string) => Promise<number>;
}

const agentCreate = (i: number, batch: string) => engine.create(loadJobSpec(batch, i, TEST_IMAGE));

const VARIANTS: Record<string, Variant> = {
  agent: { create: agentCreate },
  // The node agent's whole conversation with the engine for one short job (node-agent/placement-run.ts
  // and reconcile.ts): the image check before create, start, inspect, the log followed to its end,
  // wait, two inspects after the exit, and the reconcile's listing of its containers.
  agent_calls: {
    create: async (i, batch) => {
      await engine.hasImage(TEST_IMAGE);
      return agentCreate(i, batch);
    },
    run: async (id, batch) => {
      await engine.start(id);
      const started = performance.now();
      await engine.inspect(id);
      const follow = await engine.followLogs(id, null, () => {});
      await engine.wait(id);
      await engine.inspect(id);
      await follow.ended;
      await engine.inspect(id);
      await engine.list(ownLabels(batch));
      return started;
    },
  },
  plain: { create: async () => (await docker.createContainer({ Image: TEST_IMAGE, Entrypoint: ["true"] })).id },
  plain_no_network: {
    create: async () =>
      (await docker.createContainer({ Image: TEST_IMAGE, Entrypoint: ["true"], HostConfig: { NetworkMode: "none" } }))
        .id,
  },
};

interface Round {
  create_start_p50_ms: number;
  core_ms_per_container: number;
  engine_core_ms: number;
  other_core_ms: number;
}

async function round(name: string, variant: Variant): Promise<Round> {
  const batch = `bench-engine-${name}-${Date.now().toString(36)}`;
  const before = cpuSnapshot();
  const started = performance.now();
  const ids: string[] = [];
  const times = await Promise.all(
    Array.from({ length: containers }, async (_, i) => {
      const t = performance.now();
      const id = await variant.create(i, batch);
      ids.push(id);
      if (variant.run) return (await variant.run(id, batch)) - t;
      await docker.getContainer(id).start();
      return performance.now() - t;
    }),
  );
  if (!variant.run) {
    await Promise.all(ids.map((id) => docker.getContainer(id).wait()));
  }
  await Promise.all(ids.map((id) => docker.getContainer(id).remove({ force: true })));
  const after = cpuSnapshot();
  const cpu = before && after ? cpuReport(before, after, (performance.now() - started) / 1000, containers) : null;
  return {
    create_start_p50_ms: Math.round(percentile(times, 50) ?? Number.NaN),
    core_ms_per_container: cpu?.core_ms_per_job.total ?? Number.NaN,
    engine_core_ms: cpu?.core_ms_per_job.engine ?? Number.NaN,
    other_core_ms: cpu?.core_ms_per_job.other ?? Number.NaN,
  };
}

const results: Record<string, Round[]> = Object.fromEntries(Object.keys(VARIANTS).map((k) => [k, []]));
for (let r = 0; r < rounds; r++) {
  for (const [name, variant] of Object.entries(VARIANTS)) {
    const result = await round(name, variant);
    results[name]!.push(result);
    console.error(
      `[round ${r + 1}/${rounds}] ${name.padEnd(16)} create+start p50 ${result.create_start_p50_ms} ms, ${result.core_ms_per_container} core-ms per container`,
    );
  }
}

const median = (xs: number[]) => percentile(xs, 50) ?? Number.NaN;
const summary = Object.fromEntries(
  Object.entries(results).map(([name, rs]) => [
    name,
    {
      create_start_p50_ms: median(rs.map((r) => r.create_start_p50_ms)),
      core_ms_per_container: median(rs.map((r) => r.core_ms_per_container)),
      engine_core_ms: median(rs.map((r) => r.engine_core_ms)),
      other_core_ms: median(rs.map((r) => r.other_core_ms)),
    },
  ]),
);
const base = summary.agent!.core_ms_per_container;
console.log(
  JSON.stringify(
    {
      engine: found.version,
      containers,
      rounds,
      baseline: "agent",
      variants: Object.fromEntries(
        Object.entries(summary).map(([name, s]) => [
          name,
          { ...s, cpu_vs_agent: Math.round((s.core_ms_per_container / base) * 100) / 100 },
        ]),
      ),
    },
    null,
    2,
  ),
);
