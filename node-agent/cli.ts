/** Command line and environment → the agent's configuration. Pure, so every option is testable. */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { GPU_MODELS, type GpuModel, IngressUrl, NodeAddress } from "../core/schemas";
import { type AgentConfig, DEFAULT_AGENT_CONFIG, type IngressConfig } from "./agent";
import { DEFAULT_BACKOFF } from "./backoff";
import { DEFAULT_IMAGE_GC, type ImageGcConfig } from "./image-gc";
import type { Level } from "./logger";
import { PULL_POLICIES, type PullPolicy } from "./pull-policy";

export const USAGE = `scalar-agent: runs Scalar placements as Docker containers on this GPU node.

Usage: scalar-agent [options]

  --api-url URL          control plane base URL                     (env SCALAR_API_URL)
  --token-file FILE      file holding this node's token             (env SCALAR_NODE_TOKEN_FILE)
  --token TOKEN          the token itself (visible in ps; prefer a file) (env SCALAR_NODE_TOKEN)
  --docker-socket PATH   Docker engine socket        (env DOCKER_HOST=unix://…; default /var/run/docker.sock)
  --data-dir DIR         state and event outbox       (env SCALAR_AGENT_DATA; default /var/lib/scalar-agent)
  --gpus N               declare N GPUs instead of asking nvidia-smi (hosts without GPUs); needs --gpu-model
  --gpu-model MODEL      ${GPU_MODELS.join(" | ")}
  --nvidia-smi PATH      nvidia-smi binary            (default nvidia-smi)
  --cpus N               declare N CPU cores at registration instead of the host's (a stand-in for a
                         bigger machine); containers stay capped at the host's real cores
  --memory-mib N         declare N MiB of memory at registration instead of the host's
  --zone ZONE            zone reported at registration (informational) (env SCALAR_ZONE)
  --address ADDR         where this node's peers reach it (IP or DNS name): a multi-node job's ranks
                         meet at rank 0's (env SCALAR_NODE_ADDRESS; default: the first non-loopback
                         IPv4 address, Docker's bridges skipped)
  --agent-name NAME      label value marking this agent's containers (env SCALAR_AGENT_NAME; default: host name)
  --ingress-port N       serve endpoint traffic: listen on port N for the control plane's requests to
                         this node's replicas (the ingress)  (env SCALAR_INGRESS_PORT; default: no ingress)
  --ingress-host HOST    the address the ingress listens on      (env SCALAR_INGRESS_HOST; default 0.0.0.0)
  --ingress-url URL      where the control plane reaches the ingress, registered with the node; in
                         production a DNS name with TLS in front (env SCALAR_INGRESS_URL; default
                         http://<--address, else the detected address>:<port>)
  --pids-limit N         process limit per container  (default ${DEFAULT_AGENT_CONFIG.pidsLimit})
  --pull-policy POLICY   always | if-not-present | auto: when to ask the registry for the image before
                         a start; auto pulls :latest and untagged images every time, a digest or
                         another tag only when missing              (env SCALAR_PULL_POLICY; default auto)
  --orphan-grace-ms MS   how long a container without a placement may run (default ${DEFAULT_AGENT_CONFIG.orphanGraceMs})
  --image-gc-high-percent N  remove unused images once the engine's disk is N % full; 100 turns
                         image GC off         (env SCALAR_IMAGE_GC_HIGH_PERCENT; default ${DEFAULT_IMAGE_GC.highPercent})
  --image-gc-low-percent N   ... down to N % full, below the high mark
                                              (env SCALAR_IMAGE_GC_LOW_PERCENT; default ${DEFAULT_IMAGE_GC.lowPercent})
  --image-gc-interval DURATION  how often to look (e.g. 90s, 5m), and after a pull fails for lack
                         of space             (env SCALAR_IMAGE_GC_INTERVAL; default ${formatDuration(DEFAULT_IMAGE_GC.intervalMs)})
  --image-min-age DURATION  keep images this agent pulled or started from within this time
                                              (env SCALAR_IMAGE_MIN_AGE; default ${formatDuration(DEFAULT_IMAGE_GC.minAgeMs)})
  --engine-timeout S     how many seconds the container engine may leave a call unanswered (create,
                         start, inspect, …; a stop: past its grace period); then the placement fails
                         (retryable) and heartbeats report the engine stuck, which cordons the node
                         until it answers again (env SCALAR_ENGINE_TIMEOUT_S; default ${DEFAULT_AGENT_CONFIG.engineTimeoutMs / 1000})
  --pull-stall-timeout S  how many seconds an image pull may go without progress before the agent
                         gives up on it and fails the placement (retryable; the node stays in service)
                                              (env SCALAR_PULL_STALL_TIMEOUT_S; default ${DEFAULT_AGENT_CONFIG.pullStallMs / 1000})
  --retry-max-ms MS      longest wait between retries to the control plane (default ${DEFAULT_BACKOFF.maxMs})
  --log-level LEVEL      debug | info | warn | error  (default info)
  --help, --version
`;

export class UsageError extends Error {}

export type GpuSourceOption =
  | { kind: "nvidia-smi"; binary: string }
  | { kind: "declared"; count: number; model: GpuModel };

export interface CliOptions {
  help: boolean;
  version: boolean;
  apiUrl: string;
  token: string;
  dockerSocket: string;
  gpus: GpuSourceOption;
  logLevel: Level;
  /** CPU, memory and address to declare instead of the host's own (--cpus, --memory-mib, --address). */
  declared: { cpuMilli?: number; memoryMib?: number; address?: string };
  agent: AgentConfig;
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

/** `90s`, `5m`, `1.5h`, `250ms` → milliseconds. */
export function parseDuration(name: string, raw: string | undefined, minMs: number): number | undefined {
  if (raw === undefined) return undefined;
  const m = raw.trim().match(/^(\d+(?:\.\d+)?)(ms|s|m|h)$/);
  const ms = m ? Math.round(Number(m[1]) * UNIT_MS[m[2]!]!) : Number.NaN;
  if (!(ms >= minMs)) {
    throw new UsageError(
      `--${name} takes a duration of at least ${formatDuration(minMs)} with a unit (ms, s, m, h), e.g. 90s or 5m, not "${raw}"`,
    );
  }
  return ms;
}

function formatDuration(ms: number): string {
  if (ms === 0) return "0s";
  for (const [unit, size] of [
    ["h", 3_600_000],
    ["m", 60_000],
    ["s", 1_000],
  ] as const) {
    if (ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

function percent(name: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (raw.trim() === "" || !Number.isInteger(n) || n < 1 || n > 100) {
    throw new UsageError(`--${name} takes a whole number from 1 to 100, not "${raw}"`);
  }
  return n;
}

/** The image GC options (flags, else environment), checked together. */
function imageGcOptions(str: (name: string) => string | undefined, env: NodeJS.ProcessEnv): ImageGcConfig {
  const high =
    percent("image-gc-high-percent", str("image-gc-high-percent") ?? env.SCALAR_IMAGE_GC_HIGH_PERCENT) ??
    DEFAULT_IMAGE_GC.highPercent;
  const low =
    percent("image-gc-low-percent", str("image-gc-low-percent") ?? env.SCALAR_IMAGE_GC_LOW_PERCENT) ??
    DEFAULT_IMAGE_GC.lowPercent;
  if (low >= high) {
    throw new UsageError(
      `--image-gc-low-percent (${low}) must be below --image-gc-high-percent (${high}): image GC removes images from the high mark down to the low one`,
    );
  }
  return {
    highPercent: high,
    lowPercent: low,
    intervalMs:
      parseDuration("image-gc-interval", str("image-gc-interval") ?? env.SCALAR_IMAGE_GC_INTERVAL, 1_000) ??
      DEFAULT_IMAGE_GC.intervalMs,
    minAgeMs:
      parseDuration("image-min-age", str("image-min-age") ?? env.SCALAR_IMAGE_MIN_AGE, 0) ?? DEFAULT_IMAGE_GC.minAgeMs,
  };
}

/** IngressUrl's refinement throws on a string that is no URL at all (zod runs it after `.url()` fails). */
function validIngressUrl(raw: string): boolean {
  try {
    return IngressUrl.safeParse(raw).success;
  } catch {
    return false;
  }
}

/** The ingress's default URL: plain HTTP on the node's address (IPv6 in brackets). */
export function defaultIngressUrl(address: string, port: number): string {
  return `http://${address.includes(":") ? `[${address}]` : address}:${port}`;
}

/**
 * The ingress options (flags, else environment; an empty variable counts as unset). Without a port
 * there is no ingress; the URL defaults to the node's address, declared or else detected.
 */
function ingressOptions(
  str: (name: string) => string | undefined,
  env: NodeJS.ProcessEnv,
  address: string | undefined,
): IngressConfig | undefined {
  const rawPort = str("ingress-port") ?? (env.SCALAR_INGRESS_PORT || undefined);
  const host = str("ingress-host") ?? (env.SCALAR_INGRESS_HOST || undefined);
  const rawUrl = str("ingress-url") ?? (env.SCALAR_INGRESS_URL || undefined);
  if (rawPort === undefined) {
    if (host !== undefined || rawUrl !== undefined) {
      throw new UsageError("--ingress-host and --ingress-url go with --ingress-port (SCALAR_INGRESS_PORT)");
    }
    return undefined;
  }
  const port = Number(rawPort);
  if (rawPort.trim() === "" || !Number.isInteger(port) || port < 1 || port > 65_535) {
    throw new UsageError(`--ingress-port takes a port number from 1 to 65535, not "${rawPort}"`);
  }
  if (host !== undefined && !NodeAddress.safeParse(host).success) {
    throw new UsageError(`--ingress-host takes an IP address or a host name to listen on, not "${host}"`);
  }
  let url: string;
  if (rawUrl !== undefined) {
    if (!validIngressUrl(rawUrl)) {
      throw new UsageError(
        `--ingress-url takes an http:// or https:// URL without query, fragment or credentials, not "${rawUrl}"`,
      );
    }
    // The control plane appends `/p/<placement id>…`.
    url = rawUrl.replace(/\/+$/, "");
  } else if (address !== undefined) {
    url = defaultIngressUrl(address, port);
  } else {
    throw new UsageError(
      "--ingress-port needs --ingress-url or --address: this host has no address to build the ingress URL from",
    );
  }
  return { port, host: host ?? "0.0.0.0", url };
}

/** `--engine-timeout`, `--pull-stall-timeout` (whole seconds, at least 1) → milliseconds; `fallbackMs` when unset. */
function seconds(flag: string, envName: string, raw: string | undefined, fallbackMs: number): number {
  if (raw === undefined) return fallbackMs;
  const n = Number(raw);
  if (raw.trim() === "" || !Number.isInteger(n) || n < 1) {
    throw new UsageError(`--${flag} (${envName}) takes a whole number of seconds, at least 1, not "${raw}"`);
  }
  return n * 1000;
}

function integer(name: string, raw: string | undefined, min: number): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} takes a whole number ≥ ${min}, not "${raw}"`);
  return n;
}

/** `detectedAddress`: the host's own (host.ts), for the ingress URL when --address is not given. */
export function parseCli(
  argv: string[],
  env: NodeJS.ProcessEnv,
  hostname: string,
  detectedAddress?: string,
): CliOptions {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      options: {
        "api-url": { type: "string" },
        token: { type: "string" },
        "token-file": { type: "string" },
        "docker-socket": { type: "string" },
        "data-dir": { type: "string" },
        gpus: { type: "string" },
        "gpu-model": { type: "string" },
        "nvidia-smi": { type: "string" },
        cpus: { type: "string" },
        "memory-mib": { type: "string" },
        zone: { type: "string" },
        address: { type: "string" },
        "agent-name": { type: "string" },
        "ingress-port": { type: "string" },
        "ingress-host": { type: "string" },
        "ingress-url": { type: "string" },
        "pids-limit": { type: "string" },
        "orphan-grace-ms": { type: "string" },
        "pull-policy": { type: "string" },
        "image-gc-high-percent": { type: "string" },
        "image-gc-low-percent": { type: "string" },
        "image-gc-interval": { type: "string" },
        "image-min-age": { type: "string" },
        "retry-max-ms": { type: "string" },
        "engine-timeout": { type: "string" },
        "pull-stall-timeout": { type: "string" },
        "log-level": { type: "string" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean" },
      },
    }));
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
  const str = (name: string) => values[name] as string | undefined;
  const help = Boolean(values.help);
  const version = Boolean(values.version);

  const apiUrl = str("api-url") ?? env.SCALAR_API_URL ?? "";
  const readToken = (file: string) => {
    try {
      return readFileSync(file, "utf8").trim();
    } catch (error) {
      throw new UsageError(`cannot read the token file ${file}: ${(error as Error).message}`);
    }
  };
  // Flags before the environment: --token, --token-file, SCALAR_NODE_TOKEN, SCALAR_NODE_TOKEN_FILE.
  const tokenFlagFile = str("token-file");
  let token = str("token") ?? (tokenFlagFile ? readToken(tokenFlagFile) : undefined) ?? env.SCALAR_NODE_TOKEN ?? "";
  if (!token && env.SCALAR_NODE_TOKEN_FILE) token = readToken(env.SCALAR_NODE_TOKEN_FILE);
  const dockerHost = env.DOCKER_HOST?.startsWith("unix://") ? env.DOCKER_HOST.slice(7) : undefined;
  const dockerSocket = str("docker-socket") ?? dockerHost ?? "/var/run/docker.sock";

  const count = integer("gpus", str("gpus"), 0);
  const model = str("gpu-model");
  let gpus: GpuSourceOption;
  if (count !== undefined) {
    if (!model || !(GPU_MODELS as readonly string[]).includes(model)) {
      throw new UsageError(`--gpus needs --gpu-model, one of ${GPU_MODELS.join(", ")}`);
    }
    if (count > 16) throw new UsageError("--gpus takes at most 16");
    gpus = { kind: "declared", count, model: model as GpuModel };
  } else {
    if (model) throw new UsageError("--gpu-model goes with --gpus (nvidia-smi reports the model otherwise)");
    gpus = { kind: "nvidia-smi", binary: str("nvidia-smi") ?? "nvidia-smi" };
  }

  const logLevel = (str("log-level") ?? "info") as Level;
  if (!["debug", "info", "warn", "error"].includes(logLevel)) throw new UsageError(`unknown --log-level ${logLevel}`);

  if (!help && !version) {
    if (!apiUrl) throw new UsageError("the control plane URL is missing: --api-url or SCALAR_API_URL");
    try {
      new URL(apiUrl);
    } catch {
      throw new UsageError(`--api-url is not a URL: ${apiUrl}`);
    }
    if (!token) throw new UsageError("the node token is missing: --token-file, --token or SCALAR_NODE_TOKEN");
  }

  const pullPolicy = (str("pull-policy") ?? env.SCALAR_PULL_POLICY ?? DEFAULT_AGENT_CONFIG.pullPolicy) as PullPolicy;
  if (!PULL_POLICIES.includes(pullPolicy)) {
    throw new UsageError(`--pull-policy takes ${PULL_POLICIES.join(", ")}, not "${pullPolicy}"`);
  }

  const imageGc = imageGcOptions(str, env);
  const engineTimeoutMs = seconds(
    "engine-timeout",
    "SCALAR_ENGINE_TIMEOUT_S",
    str("engine-timeout") ?? (env.SCALAR_ENGINE_TIMEOUT_S || undefined),
    DEFAULT_AGENT_CONFIG.engineTimeoutMs,
  );
  const pullStallMs = seconds(
    "pull-stall-timeout",
    "SCALAR_PULL_STALL_TIMEOUT_S",
    str("pull-stall-timeout") ?? (env.SCALAR_PULL_STALL_TIMEOUT_S || undefined),
    DEFAULT_AGENT_CONFIG.pullStallMs,
  );
  const retryMax = integer("retry-max-ms", str("retry-max-ms"), 100);
  const cpus = integer("cpus", str("cpus"), 1);
  const memoryMib = integer("memory-mib", str("memory-mib"), 64);
  const address = str("address") ?? env.SCALAR_NODE_ADDRESS;
  if (address !== undefined && !NodeAddress.safeParse(address).success) {
    throw new UsageError(`--address takes an IP address or a DNS name, not "${address}"`);
  }
  const ingress = ingressOptions(str, env, address ?? detectedAddress);
  return {
    help,
    version,
    apiUrl,
    token,
    dockerSocket,
    gpus,
    logLevel,
    declared: {
      ...(cpus !== undefined ? { cpuMilli: cpus * 1000 } : {}),
      ...(memoryMib !== undefined ? { memoryMib } : {}),
      ...(address !== undefined ? { address } : {}),
    },
    agent: {
      ...DEFAULT_AGENT_CONFIG,
      agentName: str("agent-name") ?? env.SCALAR_AGENT_NAME ?? hostname,
      dataDir: str("data-dir") ?? env.SCALAR_AGENT_DATA ?? "/var/lib/scalar-agent",
      ...((str("zone") ?? env.SCALAR_ZONE) ? { zone: str("zone") ?? env.SCALAR_ZONE } : {}),
      pidsLimit: integer("pids-limit", str("pids-limit"), 1) ?? DEFAULT_AGENT_CONFIG.pidsLimit,
      pullPolicy,
      orphanGraceMs: integer("orphan-grace-ms", str("orphan-grace-ms"), 0) ?? DEFAULT_AGENT_CONFIG.orphanGraceMs,
      backoff: { ...DEFAULT_BACKOFF, ...(retryMax !== undefined ? { maxMs: retryMax } : {}) },
      imageGc,
      engineTimeoutMs,
      pullStallMs,
      ...(ingress ? { ingress } : {}),
    },
  };
}
