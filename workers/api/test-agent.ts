/**
 * A node agent as the workerd tests of the API play it: an operator creates the node, its "agent"
 * registers through the agent routes with the node token, polls its placements, reports events and
 * heartbeats. Shared by scheduler-flow.workerd.test.ts and invoke.workerd.test.ts.
 */
import { expect } from "vitest";
import { AGENT_ROUTES, type NodeInventory, type PlacementSet } from "../../core/schemas";
import { call, type TestUser } from "./test-support";

export const REGION = "us-west-1";

export interface Agent {
  nodeId: string;
  token: string;
  eventSeq: number;
  /** What the control plane handed the agent at registration. */
  ingressKey?: string;
}

/**
 * A node created by an operator and registered by its agent with `gpus` GPUs of `model`; `extra`
 * adds to the inventory (e.g. its ingress URL, which may name the node).
 */
export async function startNode(
  op: TestUser,
  model = "H100",
  gpus = 8,
  extra: (nodeId: string) => Partial<NodeInventory> = () => ({}),
): Promise<Agent> {
  const created = await call("POST", "/v1/operator/nodes", op.token, {
    body: { gpu_model: model, gpu_count: gpus, cpu_milli: 64_000, memory_mib: 512_000 },
  });
  expect(created.status).toBe(201);
  const { node, token } = created.json;
  const registered = await call("POST", AGENT_ROUTES.register, token, {
    body: {
      hostname: `${node.id}.local`,
      agent_version: "test",
      gpu_model: model,
      gpus: Array.from({ length: gpus }, (_, index) => ({ index })),
      cpu_milli: 64_000,
      memory_mib: 512_000,
      ...extra(node.id),
    },
  });
  expect(registered.status).toBe(200);
  expect(registered.json).toMatchObject({ node_id: node.id, region: REGION });
  return { nodeId: node.id, token, eventSeq: 0, ingressKey: registered.json.ingress_key };
}

/** Tests share the file's region: a test's node is drained when it is done, so later work goes elsewhere. */
export async function retire(op: TestUser, agent: Agent) {
  expect((await call("POST", `/v1/operator/nodes/${agent.nodeId}/drain`, op.token)).status).toBe(200);
}

export async function poll(agent: Agent, since = 0): Promise<PlacementSet> {
  const res = await call("GET", `${AGENT_ROUTES.placements}?since=${since}&wait_ms=0`, agent.token);
  expect(res.status).toBe(200);
  return res.json;
}

export async function report(agent: Agent, placementId: string, type: string, extra: Record<string, unknown> = {}) {
  agent.eventSeq += 1;
  const res = await call("POST", AGENT_ROUTES.events, agent.token, {
    body: {
      events: [
        { event_id: `${agent.nodeId}-${agent.eventSeq}`, placement_id: placementId, at: Date.now(), type, ...extra },
      ],
    },
  });
  expect(res.status).toBe(200);
  return res.json as { accepted: number; duplicates: number; rejected: { event_id: string; code: string }[] };
}

/** A heartbeat with these placements running and their readiness checks' answers. */
export async function heartbeat(agent: Agent, ready: Record<string, boolean>) {
  const res = await call("POST", AGENT_ROUTES.heartbeat, agent.token, {
    body: {
      at: Date.now(),
      gpus: [],
      containers: Object.entries(ready).map(([placement_id, r]) => ({ placement_id, ready: r })),
      running: Object.keys(ready),
    },
  });
  expect(res.status).toBe(200);
}

/** GPU `index` at heartbeat `beat`, as a placement shows it; its figures differ per GPU and per beat. */
export function gpuUse(index: number, beat: number) {
  return { index, utilisation_pct: 10 * index + beat, memory_used_mib: 1_000 * index + beat, memory_total_mib: 81_559 };
}

/**
 * A heartbeat with every GPU measured (as nvidia-smi does) and these placements running, each with
 * its CPU use and the same memory (3 GB of 16 GiB) and process count (7).
 */
export async function measuredHeartbeat(agent: Agent, beat: number, cpuPct: Record<string, number>) {
  const res = await call("POST", AGENT_ROUTES.heartbeat, agent.token, {
    body: {
      at: Date.now(),
      gpus: Array.from({ length: 8 }, (_, i) => ({ ...gpuUse(i, beat), healthy: true, temperature_c: 41 })),
      containers: Object.entries(cpuPct).map(([placement_id, cpu_pct]) => ({
        placement_id,
        cpu_pct,
        memory_bytes: 3e9,
        memory_limit_bytes: 16 * 1024 ** 3,
        pids: 7,
      })),
      running: Object.keys(cpuPct),
    },
  });
  expect(res.status).toBe(200);
}

/** The node's replicas of an endpoint reported running and ready, as an agent whose containers answer. */
export async function reportReady(agent: Agent, placementIds: string[]) {
  for (const id of placementIds) await report(agent, id, "running");
  await heartbeat(agent, Object.fromEntries(placementIds.map((id) => [id, true])));
}
