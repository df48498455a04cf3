/**
 * The "VM host": plays the machines the simulator sells. When a VM becomes Running it reads the
 * node's cloud-init user data (what a real VM gets from its metadata service; here the simulator's
 * own record), decodes the Scalar boot script (core/schemas/node-boot.ts) and starts a node agent
 * process on the local Docker engine with the node's token, zone and GPU model, declaring the CPU
 * and memory of an 8-GPU H100 VM, and an ingress on a free loopback port (the boot script carries no
 * ingress settings; the Worker reaches the agents on this machine). When the VM is Destroyed or the
 * node ends (terminated, released, deleted, failed) it stops the agent and removes its containers, as
 * the machine going away would.
 */
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { decodeUserData, type NodeBootConfig, parseNodeBootScript } from "../../core/schemas/node-boot";
import { ownLabels } from "../../node-agent/container-spec";
import { DockerodeEngine } from "../../node-agent/docker/dockerode-engine";
import { freePort } from "../db/embedded";
import { ROOT } from "../db/local";
import { type ManagedProcess, startProcess } from "../launcher/processes";
import type { SimEngine } from "../sfcompute-sim/engine";
import type { SimEvent } from "../sfcompute-sim/events";

/** What an 8-GPU H100 VM reports (workers/capacity/cron.ts H100_NODE_SHAPE): 208 cores, ~1.9 TB. */
export const VM_SHAPE = { gpus: 8, cpus: 208, memoryMib: 1_900_000 };

export interface AgentInfo {
  /** Scalar's node id (the simulator node's name). */
  nodeId: string;
  /** The simulator's node id. */
  sfNodeId: string;
  agentName: string;
  pid: number;
  logFile: string;
  /** Where the control plane reaches the agent's ingress (loopback). */
  ingressUrl: string;
}

/** The agent's command line for a booted VM (after the script's path). */
export function agentArgs(opts: {
  boot: NodeBootConfig;
  tokenFile: string;
  dataDir: string;
  dockerSocket: string;
  agentName: string;
  ingressPort: number;
}): string[] {
  return [
    "--api-url",
    opts.boot.api_url,
    "--token-file",
    opts.tokenFile,
    "--data-dir",
    opts.dataDir,
    "--docker-socket",
    opts.dockerSocket,
    "--gpus",
    String(VM_SHAPE.gpus),
    "--gpu-model",
    opts.boot.gpu_model,
    "--cpus",
    String(VM_SHAPE.cpus),
    "--memory-mib",
    String(VM_SHAPE.memoryMib),
    "--zone",
    opts.boot.zone,
    "--agent-name",
    opts.agentName,
    "--retry-max-ms",
    "2000",
    // The local engine is the developer's (or docker:up's) own: the agents do not collect its
    // images (node-agent image GC, on by default on real nodes). SCALAR_IMAGE_GC_HIGH_PERCENT overrides.
    "--image-gc-high-percent",
    process.env.SCALAR_IMAGE_GC_HIGH_PERCENT ?? "100",
    // Loopback only: the local Worker is on this machine, and nothing else should reach the replicas.
    "--ingress-host",
    "127.0.0.1",
    "--ingress-port",
    String(opts.ingressPort),
    "--ingress-url",
    ingressUrl(opts.ingressPort),
  ];
}

const ingressUrl = (port: number) => `http://127.0.0.1:${port}`;

export interface VmHost {
  agents(): AgentInfo[];
  /** Stops every agent and removes its containers. */
  stop(): Promise<void>;
}

const NODE_GONE = new Set(["terminated", "released", "deleted", "failed"]);

export function startVmHost(opts: {
  engine: SimEngine;
  apiUrl: string;
  stateDir: string;
  /** Docker engine socket path for the agents; null: no engine, agents are not started (said once per VM). */
  dockerSocket: string | null;
  /** Distinguishes this stack's agents from another stack's on a shared engine. */
  instanceId: string;
  log: (line: string) => void;
}): VmHost {
  const running = new Map<string, { info: AgentInfo; proc: ManagedProcess }>();
  const queues = new Map<string, Promise<void>>();
  const restarts = new Map<string, number>();
  const MAX_RESTARTS = 5;
  let stopping = false;
  const docker = opts.dockerSocket ? new DockerodeEngine({ socketPath: opts.dockerSocket }) : null;

  /** One operation at a time per node, in event order. */
  const enqueue = (sfNodeId: string, op: () => Promise<void>) => {
    const next = (queues.get(sfNodeId) ?? Promise.resolve()).then(op).catch((error: unknown) => {
      opts.log(`VM host: ${sfNodeId}: ${error instanceof Error ? error.message : String(error)}`);
    });
    queues.set(sfNodeId, next);
  };

  const start = async (sfNodeId: string) => {
    if (stopping || running.has(sfNodeId)) return;
    const record = opts.engine.nodes.nodes.get(sfNodeId);
    if (!record) return;
    const script = record.cloudInitUserData ? decodeUserData(record.cloudInitUserData) : "";
    const boot = parseNodeBootScript(script);
    if (!boot) {
      opts.log(`VM ${record.name} (${sfNodeId}) booted without a Scalar boot script: no agent`);
      return;
    }
    if (!opts.dockerSocket) {
      opts.log(`VM ${boot.node_id} booted, but no Docker engine is reachable: its agent is not started`);
      return;
    }
    const dir = resolve(opts.stateDir, "agents", boot.node_id);
    mkdirSync(join(dir, "data"), { recursive: true });
    const tokenFile = join(dir, "node-token");
    writeFileSync(tokenFile, boot.node_token, { mode: 0o600 });
    chmodSync(tokenFile, 0o600);
    const agentName = `${boot.node_id}.${opts.instanceId}`;
    const logFile = join(dir, "agent.log");
    // A new port at each start (a restarted agent registers its new URL): the old one may be taken.
    const ingressPort = await freePort();
    const args = [
      resolve(ROOT, "node-agent/bin/scalar-agent.mjs"),
      ...agentArgs({
        boot,
        tokenFile,
        dataDir: join(dir, "data"),
        dockerSocket: opts.dockerSocket,
        agentName,
        ingressPort,
      }),
    ];
    const proc = startProcess(`agent ${boot.node_id}`, process.execPath, args, { cwd: ROOT, logFile });
    const info: AgentInfo = {
      nodeId: boot.node_id,
      sfNodeId,
      agentName,
      pid: proc.child.pid ?? 0,
      logFile,
      ingressUrl: ingressUrl(ingressPort),
    };
    running.set(sfNodeId, { info, proc });
    opts.log(
      `agent started for node ${boot.node_id} (${boot.zone}, pid ${info.pid}, ingress ${info.ingressUrl}, log ${logFile})`,
    );
    proc.exited.then((code) => {
      if (running.get(sfNodeId)?.proc !== proc) return;
      running.delete(sfNodeId);
      if (stopping) return;
      const n = (restarts.get(sfNodeId) ?? 0) + 1;
      restarts.set(sfNodeId, n);
      if (n > MAX_RESTARTS) {
        opts.log(`agent of node ${boot.node_id} exited (code ${code}) ${n} times; not restarted; see ${logFile}`);
        return;
      }
      // As systemd would on the VM: start it again while the VM runs, a few seconds later.
      opts.log(`agent of node ${boot.node_id} exited (code ${code}); restarting in 3 s; see ${logFile}`);
      setTimeout(() => {
        const vmRunning = opts.engine.nodes.nodes
          .get(sfNodeId)
          ?.vms.some((vm) => vm.status.toLowerCase() === "running");
        if (vmRunning) enqueue(sfNodeId, () => start(sfNodeId));
      }, 3_000).unref();
    });
  };

  const stopAgent = async (sfNodeId: string, why: string) => {
    const entry = running.get(sfNodeId);
    if (!entry) return;
    running.delete(sfNodeId);
    await entry.proc.stop(5_000);
    const removed = await removeContainers(entry.info.agentName);
    if (!stopping) {
      opts.log(
        `agent of node ${entry.info.nodeId} stopped (${why})${removed > 0 ? `; ${removed} container(s) removed` : ""}`,
      );
    }
  };

  const removeContainers = async (agentName: string): Promise<number> => {
    if (!docker) return 0;
    const found = await docker.list(ownLabels(agentName)).catch(() => []);
    for (const c of found) await docker.remove(c.id).catch(() => {});
    return found.length;
  };

  const onEvent = (event: SimEvent) => {
    const sfNodeId = String(event.data.node_id ?? "");
    if (!sfNodeId) return;
    if (event.type === "vm.status") {
      const status = String(event.data.status ?? "").toLowerCase();
      if (status === "running") enqueue(sfNodeId, () => start(sfNodeId));
      else if (status === "destroyed") enqueue(sfNodeId, () => stopAgent(sfNodeId, "its VM was destroyed"));
    } else if (event.type === "node.status" && NODE_GONE.has(String(event.data.status))) {
      enqueue(sfNodeId, () => stopAgent(sfNodeId, `node ${String(event.data.status)}`));
    }
  };
  const unsubscribe = opts.engine.subscribe(onEvent);

  return {
    agents: () => [...running.values()].map((r) => r.info),
    async stop() {
      stopping = true;
      unsubscribe();
      await Promise.all([...queues.values()]);
      await Promise.all([...running.keys()].map((id) => stopAgent(id, "the stack is stopping")));
    },
  };
}
