/**
 * The Docker stack our tests and the local platform use on a machine without GPUs or internet:
 *
 * - the **gpu engine** (`.scalar/docker/docker.sock`): dockerd with the stand-in
 *   `nvidia-container-runtime-hook` (tools/docker/fake-gpu) on its PATH, so NVIDIA device requests
 *   work end to end without GPUs (platform-facts a.7);
 * - the **plain engine** (`.scalar/docker/plain/docker.sock`): a minimal dockerd (vfs, no bridge, no
 *   iptables) without that hook, i.e. a node whose NVIDIA runtime is missing;
 * - a local registry on 127.0.0.1:5000 holding `test/busybox:1`, built from the host's busybox.
 *
 * Engines and registry run detached and outlive the command that started them; `npm run docker:down`
 * stops them. A stack already running from another checkout on this machine is found and reused,
 * since two default-bridge engines or two registries on port 5000 would clash.
 */
import { type SpawnOptions, spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { dirname, join, resolve } from "node:path";
import { ROOT, STATE_DIR } from "../db/local";
import { processAlive } from "../launcher/processes";
import { hungStarts } from "./wedge";

export const DOCKER_DIR = resolve(STATE_DIR, "docker");
export const FAKE_GPU_DIR = resolve(ROOT, "tools/docker/fake-gpu");
export const LOCAL_REGISTRY = process.env.SCALAR_REGISTRY ?? "127.0.0.1:5000";
export const TEST_IMAGE_REPO = "test/busybox";
export const TEST_IMAGE_TAG = "1";
export const TEST_IMAGE = `${LOCAL_REGISTRY}/${TEST_IMAGE_REPO}:${TEST_IMAGE_TAG}`;

export type EngineKind = "gpu" | "plain";
const PLAIN_BRIDGE = "scalar-plain0";

interface EngineSpec {
  kind: EngineKind;
  dir: string;
  socket: string;
  /** Socket paths of this kind end so, whichever checkout started the engine. */
  socketSuffix: string;
  args: string[];
}

export function engineSpec(kind: EngineKind, base = DOCKER_DIR): EngineSpec {
  const dir = kind === "gpu" ? base : join(base, "plain");
  const socket = join(dir, "docker.sock");
  const args = [
    `--host=unix://${socket}`,
    `--data-root=${join(dir, "data")}`,
    `--exec-root=${join(dir, "exec")}`,
    `--pidfile=${join(dir, "dockerd.pid")}`,
  ];
  // Minimal mode (platform-facts a.2) on a bridge of its own: `--bridge=none` would make dockerd
  // delete docker0, the gpu engine's bridge, at start-up.
  if (kind === "plain") {
    args.push("--storage-driver=vfs", "--iptables=false", "--ip-forward=false", `--bridge=${PLAIN_BRIDGE}`);
  }
  return {
    kind,
    dir,
    socket,
    socketSuffix: kind === "gpu" ? "/.scalar/docker/docker.sock" : "/.scalar/docker/plain/docker.sock",
    args,
  };
}

/** `Version (API x)` of the engine at a unix socket, or null when nothing answers there. */
export function pingEngine(socketPath: string, timeoutMs = 2_000): Promise<string | null> {
  return new Promise((done) => {
    const req = request({ socketPath, path: "/version", timeout: timeoutMs }, (res) => {
      let body = "";
      res.on("data", (c) => {
        body += c;
      });
      res.on("end", () => {
        try {
          const v = JSON.parse(body) as { Version?: string; ApiVersion?: string };
          done(res.statusCode === 200 ? `${v.Version} (API ${v.ApiVersion})` : null);
        } catch {
          done(null);
        }
      });
    });
    req.on("error", () => done(null));
    req.on("timeout", () => {
      req.destroy();
      done(null);
    });
    req.end();
  });
}

export async function registryUp(registry = LOCAL_REGISTRY): Promise<boolean> {
  try {
    const res = await fetch(`http://${registry}/v2/`, { signal: AbortSignal.timeout(2_000) });
    return res.status === 200;
  } catch {
    return false;
  }
}

/** Unix sockets of the dockerd processes running on this machine (from their command lines). */
export function runningEngineSockets(): string[] {
  const sockets: string[] = [];
  let pids: string[];
  try {
    pids = readdirSync("/proc").filter((p) => /^\d+$/.test(p));
  } catch {
    return sockets;
  }
  for (const pid of pids) {
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    } catch {
      continue;
    }
    if (!argv[0]?.endsWith("dockerd")) continue;
    for (let i = 1; i < argv.length; i++) {
      const a = argv[i] ?? "";
      const host = a.startsWith("--host=") ? a.slice(7) : a === "--host" || a === "-H" ? argv[i + 1] : undefined;
      if (host?.startsWith("unix://")) sockets.push(host.slice(7));
    }
  }
  return sockets;
}

/** The socket of a running engine of this kind: this checkout's own, else one another checkout started. */
export async function findEngine(kind: EngineKind): Promise<{ socket: string; version: string } | null> {
  const spec = engineSpec(kind);
  const candidates = [spec.socket, ...runningEngineSockets().filter((s) => s.endsWith(spec.socketSuffix))];
  for (const socket of new Set(candidates)) {
    if (!existsSync(socket)) continue;
    const version = await pingEngine(socket);
    if (version) return { socket, version };
  }
  return null;
}

function which(binary: string): string | null {
  const r = spawnSync("sh", ["-c", `command -v ${binary}`], { encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() : null;
}

const REQUIRED = [
  { binary: "dockerd", pkg: "docker.io" },
  { binary: "docker", pkg: "docker.io" },
  { binary: "docker-registry", pkg: "docker-registry" },
  { binary: "busybox", pkg: "busybox-static" },
];

export function missingPackages(): string[] {
  const missing = REQUIRED.filter((r) => !which(r.binary)).map((r) => r.pkg);
  // The test image is built from the host's busybox, so it must be the static one.
  const busybox = which("busybox");
  if (busybox && !missing.includes("busybox-static")) {
    const ldd = spawnSync("ldd", [busybox], { encoding: "utf8" });
    if (!`${ldd.stdout}${ldd.stderr}`.includes("not a dynamic executable")) missing.push("busybox-static");
  }
  return [...new Set(missing)];
}

/** apt-get install of what is missing. Package scripts must not start services (no systemd here). */
export function installPackages(log: (line: string) => void): void {
  const missing = missingPackages();
  if (missing.length === 0) {
    log("packages already installed (docker.io, docker-registry, busybox-static)");
    return;
  }
  if (process.getuid?.() !== 0) throw new Error(`installing ${missing.join(" ")} needs root`);
  if (!existsSync("/usr/sbin/policy-rc.d")) {
    writeFileSync("/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n");
    chmodSync("/usr/sbin/policy-rc.d", 0o755);
  }
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  log(`apt-get install ${missing.join(" ")}`);
  for (const args of [
    ["update", "-qq"],
    ["install", "-y", "-qq", ...missing],
  ]) {
    const r = spawnSync("apt-get", args, { encoding: "utf8", env, maxBuffer: 64 << 20 });
    if (r.status !== 0) {
      throw new Error(`apt-get ${args[0]} failed (exit ${r.status}):\n${`${r.stdout}${r.stderr}`.slice(-4_000)}`);
    }
  }
}

interface Detached {
  pid: number;
  exited(): boolean;
}

function spawnDetached(command: string, args: string[], logFile: string, env?: NodeJS.ProcessEnv): Detached {
  const out = openSync(logFile, "a");
  const options: SpawnOptions = { detached: true, stdio: ["ignore", out, out], env: env ?? process.env };
  const child = spawn(command, args, options);
  child.unref();
  if (child.pid === undefined) throw new Error(`could not start ${command}`);
  return { pid: child.pid, exited: () => child.exitCode !== null || child.signalCode !== null };
}

async function waitFor(what: string, check: () => Promise<boolean>, proc: Detached, logFile: string) {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (await check()) return;
    if (proc.exited()) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const tail = existsSync(logFile) ? readFileSync(logFile, "utf8").split("\n").slice(-15).join("\n") : "";
  throw new Error(`${what} did not come up (${proc.exited() ? "it exited" : "timed out"}); ${logFile}:\n${tail}`);
}

export async function ensureRegistry(log: (line: string) => void): Promise<void> {
  if (await registryUp()) return;
  mkdirSync(join(DOCKER_DIR, "registry"), { recursive: true });
  mkdirSync(join(DOCKER_DIR, "logs"), { recursive: true });
  const config = join(DOCKER_DIR, "registry.yml");
  // The packaged config enables htpasswd auth and listens on every interface: write our own.
  writeFileSync(
    config,
    [
      "version: 0.1",
      `storage: { filesystem: { rootdirectory: ${join(DOCKER_DIR, "registry")} }, delete: { enabled: true } }`,
      `http: { addr: ${LOCAL_REGISTRY} }`,
      "log: { level: warn }",
      "",
    ].join("\n"),
  );
  const logFile = join(DOCKER_DIR, "logs/registry.log");
  const proc = spawnDetached("docker-registry", ["serve", config], logFile);
  writeFileSync(join(DOCKER_DIR, "registry.pid"), `${proc.pid}\n`);
  await waitFor(`the registry on ${LOCAL_REGISTRY}`, () => registryUp(), proc, logFile);
  log(`registry started on ${LOCAL_REGISTRY} (pid ${proc.pid})`);
}

export async function ensureEngine(kind: EngineKind, log: (line: string) => void): Promise<string> {
  const spec = engineSpec(kind);
  const running = await findEngine(kind);
  if (running) {
    // A wedged engine answers pings but starts nothing (wedge.ts): restart this checkout's own.
    const hung = hungStarts(join(dirname(running.socket), "exec"));
    if (hung.length === 0) return running.socket;
    const what = `the ${kind} engine at ${running.socket} is wedged: container ${hung[0]!.containerId.slice(0, 12)} has been starting for ${hung[0]!.ageS} s (${hung.length} start(s) hung; a known deadlock of Debian's docker.io 20.10 libnetwork, docs/performance.md)`;
    if (running.socket !== spec.socket) {
      throw new Error(
        `${what}; restart it from the checkout that started it (npm run docker:down && npm run docker:up)`,
      );
    }
    log(`${what}; restarting it`);
    await stopEngine(kind, log);
    // A hung `runc create` may outlive its engine; the new engine would find it and restart again.
    for (const h of hung) {
      if (processAlive(h.pid)) process.kill(h.pid, "SIGKILL");
    }
  }
  mkdirSync(join(spec.dir, "logs"), { recursive: true });
  const logFile = join(spec.dir, "logs/dockerd.log");
  const path = kind === "gpu" ? `${FAKE_GPU_DIR}:${process.env.PATH}` : (process.env.PATH ?? "");
  chmodSync(join(FAKE_GPU_DIR, "nvidia-container-runtime-hook"), 0o755);
  if (kind === "plain" && !existsSync(`/sys/class/net/${PLAIN_BRIDGE}`)) {
    const r = spawnSync("ip", ["link", "add", "name", PLAIN_BRIDGE, "type", "bridge"], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`ip link add ${PLAIN_BRIDGE}: ${r.stderr.trim()}`);
  }
  const proc = spawnDetached("dockerd", spec.args, logFile, { ...process.env, PATH: path });
  await waitFor(`the ${kind} Docker engine`, async () => (await pingEngine(spec.socket)) !== null, proc, logFile);
  log(`${kind} engine started at ${spec.socket} (pid ${proc.pid}, log ${logFile})`);
  return spec.socket;
}

async function imageInRegistry(): Promise<boolean> {
  try {
    const res = await fetch(`http://${LOCAL_REGISTRY}/v2/${TEST_IMAGE_REPO}/manifests/${TEST_IMAGE_TAG}`, {
      method: "HEAD",
      headers: { accept: "application/vnd.docker.distribution.manifest.v2+json" },
      signal: AbortSignal.timeout(5_000),
    });
    return res.status === 200;
  } catch {
    return false;
  }
}

/** `test/busybox:1` in the registry: the host's static busybox plus one symlink per applet (~2 MB). */
export async function ensureTestImage(socket: string, log: (line: string) => void): Promise<void> {
  if (await imageInRegistry()) return;
  const rootfs = join(DOCKER_DIR, "rootfs");
  rmSync(rootfs, { recursive: true, force: true });
  for (const d of ["bin", "etc", "tmp", "proc", "sys", "dev"]) mkdirSync(join(rootfs, d), { recursive: true });
  const busybox = which("busybox");
  if (!busybox) throw new Error("busybox is not installed");
  const script = [
    `cp ${busybox} ${rootfs}/bin/busybox`,
    `for a in $(${rootfs}/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox ${rootfs}/bin/$a; done`,
    `tar -C ${rootfs} -c . | docker import -c 'CMD ["sh"]' -c 'ENV PATH=/bin' - ${TEST_IMAGE} >/dev/null`,
    `docker push -q ${TEST_IMAGE} >/dev/null`,
    // Tests then really pull it.
    `docker rmi -f ${TEST_IMAGE} >/dev/null`,
  ].join(" && ");
  const r = spawnSync("sh", ["-ec", script], {
    encoding: "utf8",
    env: { ...process.env, DOCKER_HOST: `unix://${socket}` },
  });
  if (r.status !== 0) throw new Error(`building ${TEST_IMAGE} failed: ${r.stderr.trim()}`);
  log(`${TEST_IMAGE} pushed to the registry`);
}

export interface DockerStack {
  gpuSocket: string;
  plainSocket: string;
  registry: string;
  image: string;
}

/** Starts whatever of the stack is not running yet (installing packages first when `install`). */
export async function ensureDockerStack(opts: { install: boolean; log: (line: string) => void }): Promise<DockerStack> {
  if (opts.install) installPackages(opts.log);
  const missing = missingPackages();
  if (missing.length > 0) throw new Error(`not installed: ${missing.join(", ")} (npm run docker:up installs them)`);
  if (process.getuid?.() !== 0) throw new Error("starting dockerd needs root");
  await ensureRegistry(opts.log);
  const gpuSocket = await ensureEngine("gpu", opts.log);
  const plainSocket = await ensureEngine("plain", opts.log);
  await ensureTestImage(gpuSocket, opts.log);
  return { gpuSocket, plainSocket, registry: LOCAL_REGISTRY, image: TEST_IMAGE };
}

interface Stoppable {
  what: string;
  pidFile: string;
  netns: string | null;
}

function engineTarget(kind: EngineKind): Stoppable {
  return {
    what: `${kind} engine`,
    pidFile: join(engineSpec(kind).dir, "dockerd.pid"),
    netns: join(engineSpec(kind).dir, "exec/netns/default"),
  };
}

async function stopEngine(kind: EngineKind, log: (line: string) => void): Promise<void> {
  await stopTargets([engineTarget(kind)], log);
}

/** Stops the engines and the registry that this checkout started (their pid files are under .scalar/docker). */
export async function stopDockerStack(log: (line: string) => void): Promise<void> {
  await stopTargets(
    [
      engineTarget("plain"),
      engineTarget("gpu"),
      { what: "registry", pidFile: join(DOCKER_DIR, "registry.pid"), netns: null },
    ],
    log,
  );
}

async function stopTargets(targets: Stoppable[], log: (line: string) => void): Promise<void> {
  for (const t of targets) {
    if (!existsSync(t.pidFile)) continue;
    const pid = Number.parseInt(readFileSync(t.pidFile, "utf8"), 10);
    if (Number.isFinite(pid) && processAlive(pid)) {
      process.kill(pid, "SIGTERM");
      const deadline = Date.now() + 20_000;
      while (processAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      if (processAlive(pid)) process.kill(pid, "SIGKILL");
      log(`${t.what} stopped (pid ${pid})`);
    }
    rmSync(t.pidFile, { force: true });
    // dockerd leaves its default network namespace mounted (platform-facts a.2).
    if (t.netns && existsSync(t.netns)) spawnSync("umount", [t.netns]);
  }
}
