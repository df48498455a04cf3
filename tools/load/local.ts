/**
 * The load test's own platform: the local stack (tools/stack) in a fresh state folder, with enough
 * warm Fast capacity for N concurrent 1-GPU jobs (whole 8-GPU nodes, bought from the simulator by
 * the autoscaler, their agents on the local Docker engine).
 *
 * The crons run only while capacity warms up, then the fleet stays as it is: every simulated node
 * is an agent process on this same machine, so a node the autoscaler bought during the load (its
 * first version here bought 15–20, sizing Fast headroom from arrivals alone before it counted short
 * jobs by the time they held their GPUs) would take CPU from the control plane mid-run, which real
 * nodes, being other machines, never do.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startStack } from "../stack/index";

export type LocalTarget =
  | {
      kind: "ready";
      apiUrl: string;
      apiKey: string;
      image: string;
      /** The engine the node agents run containers on. */
      dockerSocket: string;
      stop: (keep?: boolean) => Promise<void>;
    }
  | { kind: "unavailable"; reason: string };

const GPUS_PER_NODE = 8;
const NODES_TIMEOUT_MS = 240_000;
/** While warming up, the crons (the autoscaler) are fired this often; afterwards never. */
const WARM_UP_TICK_MS = 5_000;
const NO_CRON_MS = 7 * 24 * 3_600_000;

export async function startLocalTarget(opts: {
  users: number;
  image?: string | undefined;
  say: (line: string) => void;
  stateDir?: string;
}): Promise<LocalTarget> {
  const nodes = Math.ceil(opts.users / GPUS_PER_NODE);
  opts.say(`Starting the local platform with ${nodes * GPUS_PER_NODE} GPUs of Fast headroom…`);
  // A fresh folder each run: no scheduler state (nodes, jobs) left from an earlier run.
  const ownDir = opts.stateDir === undefined;
  const stateDir = opts.stateDir ?? mkdtempSync(join(tmpdir(), "scalar-load-"));
  const stack = await startStack({
    stateDir,
    apiPort: 0,
    docker: "auto",
    fastHeadroomGpus: nodes * GPUS_PER_NODE,
    cronIntervalMs: NO_CRON_MS,
    credentialsFile: null,
  });
  let failed = false;
  /** `keep`: leave the state folder (logs of wrangler and the agents) for a look after a failure. */
  const stop = async (keep = false) => {
    await stack.stop();
    if (keep || failed) opts.say(`The platform's logs: ${stateDir}`);
    else if (ownDir) rmSync(stateDir, { recursive: true, force: true });
  };
  if (!stack.docker.available) {
    await stop();
    return {
      kind: "unavailable",
      reason: `No Docker engine answers (${stack.docker.detail}): the load test runs real containers. Start one with \`npm run docker:up\`.`,
    };
  }
  try {
    const started = performance.now();
    for (;;) {
      await stack.tickCron();
      try {
        await stack.waitForNodes(nodes, WARM_UP_TICK_MS);
        break;
      } catch (error) {
        if (performance.now() - started > NODES_TIMEOUT_MS) throw error;
      }
    }
    opts.say(`  ${nodes} node(s) ready in ${((performance.now() - started) / 1000).toFixed(1)} s at ${stack.apiUrl}`);
  } catch (error) {
    failed = true;
    await stop();
    throw error;
  }
  const image = opts.image ?? stack.image;
  if (!image) {
    await stop();
    return { kind: "unavailable", reason: "The local registry's image is missing; pass --image." };
  }
  return {
    kind: "ready",
    apiUrl: stack.apiUrl,
    apiKey: stack.apiKey,
    image,
    dockerSocket: stack.docker.host.replace(/^unix:\/\//, ""),
    stop,
  };
}
