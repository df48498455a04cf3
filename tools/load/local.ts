/**
 * The load test's own platform: the local stack (tools/stack) in a state folder of its own, with
 * enough warm Fast capacity for N concurrent 1-GPU jobs (whole 8-GPU nodes, bought from the
 * simulator by the autoscaler, their agents on the local Docker engine).
 */
import { resolve } from "node:path";
import { startStack } from "../stack/index";

export type LocalTarget =
  | {
      kind: "ready";
      apiUrl: string;
      apiKey: string;
      image: string;
      /** The engine the node agents run containers on. */
      dockerSocket: string;
      stop: () => Promise<void>;
    }
  | { kind: "unavailable"; reason: string };

const GPUS_PER_NODE = 8;
const NODES_TIMEOUT_MS = 240_000;

export async function startLocalTarget(opts: {
  users: number;
  image?: string | undefined;
  say: (line: string) => void;
  stateDir?: string;
}): Promise<LocalTarget> {
  const nodes = Math.ceil(opts.users / GPUS_PER_NODE);
  opts.say(`Starting the local platform with ${nodes * GPUS_PER_NODE} GPUs of Fast headroom…`);
  const stack = await startStack({
    stateDir: opts.stateDir ?? resolve(import.meta.dirname, "../../.scalar/load"),
    apiPort: 0,
    docker: "auto",
    fastHeadroomGpus: nodes * GPUS_PER_NODE,
    credentialsFile: null,
  });
  if (!stack.docker.available) {
    await stack.stop();
    return {
      kind: "unavailable",
      reason: `No Docker engine answers (${stack.docker.detail}): the load test runs real containers. Start one with \`npm run docker:up\`.`,
    };
  }
  try {
    const started = performance.now();
    // The autoscaler buys on its cron; fire it now rather than wait for the next minute.
    await stack.tickCron();
    await stack.waitForNodes(nodes, NODES_TIMEOUT_MS);
    opts.say(`  ${nodes} node(s) ready in ${((performance.now() - started) / 1000).toFixed(1)} s at ${stack.apiUrl}`);
  } catch (error) {
    await stack.stop();
    throw error;
  }
  const image = opts.image ?? stack.image;
  if (!image) {
    await stack.stop();
    return { kind: "unavailable", reason: "The local registry's image is missing; pass --image." };
  }
  return {
    kind: "ready",
    apiUrl: stack.apiUrl,
    apiKey: stack.apiKey,
    image,
    dockerSocket: stack.docker.host.replace(/^unix:\/\//, ""),
    stop: () => stack.stop(),
  };
}
