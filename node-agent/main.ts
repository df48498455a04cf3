/** `scalar-agent` (node-agent/bin/scalar-agent.mjs runs this): wires the real parts and runs until SIGTERM. */
import { hostname } from "node:os";
import { AGENT_VERSION, Agent } from "./agent";
import { parseCli, USAGE, UsageError } from "./cli";
import { systemClock } from "./clock";
import { ControlPlaneClient } from "./control-plane";
import { DockerodeEngine } from "./docker/dockerode-engine";
import { DeclaredGpus, NvidiaSmi } from "./gpu";
import { discoverHost } from "./host";
import { errorText, jsonLogger } from "./logger";

const host = discoverHost();
let options: ReturnType<typeof parseCli>;
try {
  // The detected address is the ingress URL's default host when --address is not given.
  options = parseCli(process.argv.slice(2), process.env, hostname(), host.address);
} catch (error) {
  if (!(error instanceof UsageError)) throw error;
  console.error(`scalar-agent: ${error.message}\n\n${USAGE}`);
  process.exit(2);
}
if (options.help) {
  console.log(USAGE);
  process.exit(0);
}
if (options.version) {
  console.log(AGENT_VERSION);
  process.exit(0);
}

const log = jsonLogger(options.logLevel);
const gpus =
  options.gpus.kind === "declared"
    ? new DeclaredGpus(options.gpus.count, options.gpus.model)
    : new NvidiaSmi(options.gpus.binary);

let agent: Agent;
try {
  // Declared CPU/memory (--cpus, --memory-mib) go to registration; containers stay within the real cores.
  agent = await Agent.start(
    { ...options.agent, maxContainerCpuMilli: host.cpuMilli },
    {
      // The agent puts its deadlines on it (engine-watchdog.ts, --engine-timeout, --pull-stall-timeout).
      engine: new DockerodeEngine({ socketPath: options.dockerSocket }),
      api: new ControlPlaneClient(options.apiUrl, options.token),
      gpus,
      host: { ...host, ...options.declared },
      clock: systemClock,
      random: Math.random,
      log,
    },
  );
} catch (error) {
  log("error", "agent cannot start", { error: errorText(error) });
  process.exit(1);
}
log("info", "agent started", {
  version: AGENT_VERSION,
  agent_name: options.agent.agentName,
  api_url: options.apiUrl,
  docker_socket: options.dockerSocket,
  data_dir: options.agent.dataDir,
  engine_timeout_s: options.agent.engineTimeoutMs / 1000,
  pull_stall_timeout_s: options.agent.pullStallMs / 1000,
  ...(options.agent.ingress ? { ingress_url: options.agent.ingress.url } : {}),
});

let stopping = false;
const shutdown = (signal: string) => {
  if (stopping) return;
  stopping = true;
  log("info", "stopping; containers keep running", { signal });
  void agent.stop().then(() => process.exit(0));
};
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
