/**
 * What the agent's Docker tests share: the engines and image `npm test` found, a fresh image tag per
 * test (so every test really pulls from the local registry), agents in this process or as real
 * `scalar-agent` processes, and cleanup of everything a test's agent labelled.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { z } from "zod";
import type { Placement } from "../../core/schemas";
import { requirePart } from "../../tools/test/parts";
import { Agent, type AgentConfig, type AgentDeps, DEFAULT_AGENT_CONFIG } from "../agent";
import { systemClock } from "../clock";
import { ownLabels } from "../container-spec";
import { ControlPlaneClient } from "../control-plane";
import { DockerodeEngine } from "../docker/dockerode-engine";
import type { ContainerEngine } from "../docker/engine";
import { DeclaredGpus } from "../gpu";
import { jsonLogger } from "../logger";
import type { TestControlPlane } from "./control-plane";

const ROOT = resolve(import.meta.dirname, "../..");

/** The engine with the stand-in NVIDIA hook (tools/docker/stack.ts), or whatever DOCKER_HOST `npm test` chose. */
export function gpuEngineSocket(): string {
  requirePart("docker", process.env.SCALAR_TEST_DOCKER === "1", "start one with `npm run docker:up`");
  requirePart("registry", process.env.SCALAR_TEST_REGISTRY === "1", "start it with `npm run docker:up`");
  return (process.env.DOCKER_HOST ?? "").replace(/^unix:\/\//, "");
}

/** The engine without an NVIDIA runtime. */
export function plainEngineSocket(): string {
  const host = process.env.SCALAR_TEST_DOCKER_PLAIN;
  requirePart("docker", host, "the plain engine (no NVIDIA runtime) is started by `npm run docker:up`");
  return host!.replace(/^unix:\/\//, "");
}

export function testImage(): string {
  const image = process.env.SCALAR_TEST_IMAGE;
  requirePart("registry", image, "SCALAR_TEST_IMAGE is set by `npm test` when the local registry answers");
  return image!;
}

/** A new tag of the test image in the registry (a manifest copy), absent from every engine until pulled. */
export async function freshImage(): Promise<string> {
  const base = testImage();
  const slash = base.indexOf("/");
  const colon = base.lastIndexOf(":");
  const registry = base.slice(0, slash);
  const repo = base.slice(slash + 1, colon);
  const tag = base.slice(colon + 1);
  const accept = "application/vnd.docker.distribution.manifest.v2+json";
  const got = await fetch(`http://${registry}/v2/${repo}/manifests/${tag}`, { headers: { accept } });
  if (!got.ok) throw new Error(`registry: GET manifest ${base}: ${got.status}`);
  const manifest = await got.text();
  const newTag = `t-${randomBytes(6).toString("hex")}`;
  const put = await fetch(`http://${registry}/v2/${repo}/manifests/${newTag}`, {
    method: "PUT",
    headers: { "content-type": got.headers.get("content-type") ?? accept },
    body: manifest,
  });
  if (!put.ok) throw new Error(`registry: PUT manifest ${newTag}: ${put.status} ${await put.text()}`);
  return `${registry}/${repo}:${newTag}`;
}

/**
 * Removes a fresh tag from the engines again, so runs do not pile up tags there. (The registry keeps
 * the tag: it deletes by digest only, which would also delete the base tag.)
 */
export async function untagImage(ref: string): Promise<void> {
  const sockets = [process.env.DOCKER_HOST, process.env.SCALAR_TEST_DOCKER_PLAIN]
    .filter((h): h is string => Boolean(h?.startsWith("unix://")))
    .map((h) => h.slice(7));
  for (const socketPath of sockets) {
    await new DockerodeEngine({ socketPath }).docker
      .getImage(ref)
      .remove()
      .catch(() => {}); // not pulled there, or still used by a container
  }
}

let counter = 0;
export function placement(
  overrides: Partial<z.input<typeof Placement>> & { image: string },
): z.input<typeof Placement> {
  const id = `p-${randomBytes(4).toString("hex")}-${counter++}`;
  return {
    placement_id: id,
    job_id: `job-${id}`,
    attempt: 1,
    command: [],
    args: [],
    env: [],
    gpu_indices: [],
    cpu_milli: 500,
    memory_mib: 64,
    kill_deadline: null,
    desired: "running",
    grace_period_ms: 2_000,
    ...overrides,
  };
}

/** `sh -c script` as the placement's command. */
export const shell = (script: string) => ({ command: ["sh", "-c", script] });

export interface TestAgent {
  agent: Agent;
  engine: DockerodeEngine;
  config: AgentConfig;
  stop(): Promise<void>;
}

/**
 * Image GC is off for test agents (high mark 100 %): they share engines with other tests, and the
 * shared test image must not be collected when the machine's disk happens to be full. The image GC
 * tests turn it on with their own candidates.
 */
export function testAgentConfig(overrides: Partial<AgentConfig> = {}): AgentConfig {
  return {
    ...DEFAULT_AGENT_CONFIG,
    agentName: `test-${randomBytes(4).toString("hex")}`,
    dataDir: mkdtempSync(join(tmpdir(), "scalar-agent-")),
    reconcileIntervalMs: 500,
    pullProgressIntervalMs: 200,
    backoff: { initialMs: 100, maxMs: 1_000, factor: 2, jitter: 0.5 },
    logShipping: { ...DEFAULT_AGENT_CONFIG.logShipping, flushDelayMs: 50 },
    imageGc: { ...DEFAULT_AGENT_CONFIG.imageGc, highPercent: 100 },
    ...overrides,
  };
}

/** An agent in this process, with 8 declared H100s, against the test control plane. */
export async function startTestAgent(
  cp: TestControlPlane,
  opts: { socket?: string; config?: Partial<AgentConfig>; engine?: DockerodeEngine } = {},
): Promise<TestAgent> {
  const config = testAgentConfig(opts.config);
  const engine = opts.engine ?? new DockerodeEngine({ socketPath: opts.socket ?? gpuEngineSocket() });
  const agent = await Agent.start(config, {
    engine,
    api: new ControlPlaneClient(cp.url, cp.token),
    gpus: new DeclaredGpus(8, "H100"),
    host: { hostname: "test-host", cpuMilli: 2_000, memoryMib: 4_096, address: "10.9.8.7" },
    clock: systemClock,
    random: Math.random,
    log: process.env.SCALAR_TEST_AGENT_LOG ? jsonLogger("debug") : () => {},
  });
  return {
    agent,
    engine,
    config,
    async stop() {
      await agent.stop();
      await removeLabelled(engine, config.agentName);
      rmSync(config.dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * An agent in this process on a fake engine, for unit tests: named `unit`, reconciling every 100 ms,
 * quick backoff, 8 declared H100s, silent. `config` and `deps` override any of it.
 */
export function startUnitAgent(
  cp: TestControlPlane,
  engine: ContainerEngine,
  opts: { dataDir: string; config?: Partial<AgentConfig>; deps?: Partial<AgentDeps> },
): Promise<Agent> {
  return Agent.start(
    {
      ...DEFAULT_AGENT_CONFIG,
      agentName: "unit",
      dataDir: opts.dataDir,
      reconcileIntervalMs: 100,
      backoff: { initialMs: 10, maxMs: 100, factor: 2, jitter: 0 },
      ...opts.config,
    },
    {
      engine,
      api: new ControlPlaneClient(cp.url, cp.token),
      gpus: new DeclaredGpus(8, "H100"),
      host: { hostname: "unit-host", cpuMilli: 2_000, memoryMib: 4_096 },
      clock: systemClock,
      random: () => 0.5,
      log: () => {},
      ...opts.deps,
    },
  );
}

/** Containers carrying this agent's labels, in any state. */
export function labelled(engine: DockerodeEngine, agentName: string) {
  return engine.list(ownLabels(agentName));
}

export async function removeLabelled(engine: DockerodeEngine, agentName: string): Promise<void> {
  for (const c of await labelled(engine, agentName)) await engine.remove(c.id);
}

/** A real `scalar-agent` process (node-agent/bin/scalar-agent.mjs), output in `<dataDir>.log`. */
export class AgentProcess {
  private child: ChildProcess | null = null;
  readonly logFile: string;

  constructor(
    readonly args: { apiUrl: string; token: string; socket: string; dataDir: string; agentName: string },
    private readonly extra: string[] = [],
  ) {
    this.logFile = `${args.dataDir}.log`;
  }

  start(): void {
    const out = createWriteStream(this.logFile, { flags: "a" });
    const child = spawn(
      process.execPath,
      [
        resolve(ROOT, "node-agent/bin/scalar-agent.mjs"),
        "--api-url",
        this.args.apiUrl,
        "--token",
        this.args.token,
        "--docker-socket",
        this.args.socket,
        "--data-dir",
        this.args.dataDir,
        "--agent-name",
        this.args.agentName,
        "--gpus",
        "8",
        "--gpu-model",
        "H100",
        "--retry-max-ms",
        "1000",
        "--log-level",
        "debug",
        // Off: the engine is shared with other tests and their image (see testAgentConfig).
        "--image-gc-high-percent",
        "100",
        ...this.extra,
      ],
      { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] },
    );
    child.stdout?.pipe(out);
    child.stderr?.pipe(out);
    this.child = child;
  }

  /** SIGKILL: no chance to clean up or flush, as in a crash. */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((done) => child.once("exit", done));
    child.kill("SIGKILL");
    await exited;
  }

  log(): string {
    try {
      return readFileSync(this.logFile, "utf8");
    } catch {
      return "";
    }
  }
}

/** Polls `check` until it returns a truthy value (for state outside the control plane, e.g. files). */
export async function eventually<T>(
  what: string,
  check: () => T | null | undefined | false | Promise<T | null | undefined | false>,
  timeoutMs = 25_000,
): Promise<T> {
  const giveUp = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > giveUp) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
