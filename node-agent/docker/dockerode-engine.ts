/** ContainerEngine over dockerode (Docker Engine API ≥ 1.41, the Debian 12 engine). */
import { Writable } from "node:stream";
import Docker from "dockerode";
import type {
  ContainerDetails,
  ContainerEngine,
  ContainerSpec,
  ContainerState,
  ContainerSummary,
  ImageSummary,
  LogEnd,
  LogEntry,
  LogFollow,
  RegistryCredentials,
  StatsSample,
} from "./engine";
import { EngineError, type EngineErrorCode } from "./engine";

interface DockerodeError {
  statusCode?: number;
  message?: string;
  json?: { message?: string } | null;
}

/** `(HTTP code 404) unexpected - manifest … not found` → `manifest … not found`. */
export function engineMessage(error: unknown): string {
  const e = error as DockerodeError;
  const raw = e?.json?.message ?? e?.message ?? String(error);
  return raw.replace(/^\(HTTP code \d+\) [^-]*- /, "").trim();
}

const status = (error: unknown): number | undefined => (error as DockerodeError)?.statusCode;

/** Sorts a failed pull (the HTTP answer, or an error in the progress stream) by its cause. */
export function pullErrorCode(statusCode: number | undefined, message: string): EngineErrorCode {
  if (statusCode === 400 || /invalid reference format|repository name must/i.test(message)) return "invalid_reference";
  if (statusCode === 404 || /not found|manifest unknown|does not exist/i.test(message)) return "image_not_found";
  // The registry wants credentials the node does not send (docker: "no basic auth credentials").
  if (
    statusCode === 401 ||
    statusCode === 403 ||
    /no basic auth credentials|authentication required|unauthorized|denied|forbidden/i.test(message)
  ) {
    return "image_unauthorized";
  }
  if (/connection refused|no such host|i\/o timeout|dial tcp|tls|timeout|network is unreachable|EOF/i.test(message)) {
    return "registry_unreachable";
  }
  return "engine";
}

const ZERO_TIME = /^0001-01-01/;
const epoch = (t: string | undefined): number | null => (t && !ZERO_TIME.test(t) ? Date.parse(t) : null);

/** `2026-11-26T01:36:34.123456789Z` → `1795656994.123456789`, the form the logs `since` filter takes. */
export function logTimestampToSince(ts: string): string {
  const m = ts.match(/^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?Z$/);
  if (!m) throw new Error(`not a log timestamp: ${ts}`);
  const seconds = Math.floor(Date.parse(`${m[1]}Z`) / 1000);
  return `${seconds}.${(m[2] ?? "").padEnd(9, "0").slice(0, 9)}`;
}

/**
 * Splits one demuxed stream into entries: each engine message starts with `<timestamp> `. A line the
 * engine stored in 16 KiB parts comes back as parts each with its own timestamp, joined into one
 * entry with the later timestamps inside the text (rare; the text is kept, not repaired).
 */
class LogLineSplitter {
  private partial = "";
  constructor(
    private readonly stream: LogEntry["stream"],
    private readonly sink: (entry: LogEntry) => void,
  ) {}

  write(chunk: Buffer): void {
    this.partial += chunk.toString("utf8");
    let nl = this.partial.indexOf("\n");
    while (nl >= 0) {
      this.emit(this.partial.slice(0, nl));
      this.partial = this.partial.slice(nl + 1);
      nl = this.partial.indexOf("\n");
    }
  }

  flush(): void {
    if (this.partial) this.emit(this.partial);
    this.partial = "";
  }

  private emit(raw: string): void {
    const space = raw.indexOf(" ");
    const ts = space > 0 ? raw.slice(0, space) : raw;
    if (!/^\d{4}-\d\d-\d\dT/.test(ts)) return; // not an engine message (cannot happen with timestamps on)
    this.sink({ stream: this.stream, ts, text: space > 0 ? raw.slice(space + 1).replace(/\r$/, "") : "" });
  }
}

export class DockerodeEngine implements ContainerEngine {
  readonly docker: Docker;

  constructor(opts: { socketPath: string }) {
    this.docker = new Docker({ socketPath: opts.socketPath });
  }

  async ping(): Promise<void> {
    await this.docker.ping();
  }

  async list(labels: Record<string, string>): Promise<ContainerSummary[]> {
    const found = await this.docker.listContainers({
      all: true,
      filters: { label: Object.entries(labels).map(([k, v]) => `${k}=${v}`) },
    });
    return found.map((c) => ({
      id: c.Id,
      name: (c.Names[0] ?? "").replace(/^\//, ""),
      state: c.State as ContainerState,
      labels: c.Labels ?? {},
    }));
  }

  async inspect(id: string): Promise<ContainerDetails | null> {
    let info: Docker.ContainerInspectInfo;
    try {
      info = await this.docker.getContainer(id).inspect();
    } catch (error) {
      if (status(error) === 404) return null;
      throw new EngineError("engine", engineMessage(error), status(error));
    }
    const host = info.HostConfig;
    const gpuIds = (host.DeviceRequests ?? []).flatMap((r) => r.DeviceIDs ?? []);
    return {
      id: info.Id,
      name: info.Name.replace(/^\//, ""),
      state: info.State.Status as ContainerState,
      labels: info.Config.Labels ?? {},
      running: info.State.Running,
      exitCode: info.State.ExitCode,
      oomKilled: info.State.OOMKilled,
      error: info.State.Error ?? "",
      startedAt: epoch(info.State.StartedAt),
      finishedAt: epoch(info.State.FinishedAt),
      env: info.Config.Env ?? [],
      memoryBytes: host.Memory ?? 0,
      memorySwapBytes: host.MemorySwap ?? 0,
      nanoCpus: host.NanoCpus ?? 0,
      pidsLimit: host.PidsLimit ?? 0,
      init: Boolean(host.Init),
      privileged: Boolean(host.Privileged),
      gpuDeviceIds: gpuIds,
      networkMode: host.NetworkMode ?? "default",
      address: containerAddress(host.NetworkMode, info.NetworkSettings),
    };
  }

  async hasImage(ref: string): Promise<boolean> {
    return (await this.imageId(ref)) !== null;
  }

  async imageId(ref: string): Promise<string | null> {
    try {
      return (await this.docker.getImage(ref).inspect()).Id;
    } catch (error) {
      if (status(error) === 404) return null;
      throw new EngineError("engine", engineMessage(error), status(error));
    }
  }

  async pull(ref: string, onProgress: (progress: string) => void, credentials?: RegistryCredentials): Promise<void> {
    let stream: NodeJS.ReadableStream;
    try {
      // dockerode sends `authconfig` as the X-Registry-Auth header, never in the URL.
      stream = await this.docker.pull(ref, credentials ? { authconfig: { ...credentials } } : {});
    } catch (error) {
      const message = engineMessage(error);
      throw new EngineError(pullErrorCode(status(error), message), message, status(error));
    }
    const layers = new Map<string, { current: number; total: number }>();
    // An error after the pull began comes as an event in the stream, which followProgress does not treat as one.
    let streamError: string | null = null;
    await new Promise<void>((done, fail) => {
      this.docker.modem.followProgress(
        stream,
        (error: unknown) => {
          if (!error && streamError === null) return done();
          const message = error ? engineMessage(error) : streamError!;
          fail(new EngineError(pullErrorCode(undefined, message), message));
        },
        (event: {
          status?: string;
          id?: string;
          progressDetail?: { current?: number; total?: number };
          error?: string;
          errorDetail?: { message?: string };
        }) => {
          if (event.error || event.errorDetail?.message) {
            streamError ??= (event.errorDetail?.message ?? event.error ?? "").trim() || "pull failed";
            return;
          }
          if (event.id && event.progressDetail?.total) {
            layers.set(event.id, { current: event.progressDetail.current ?? 0, total: event.progressDetail.total });
          }
          onProgress(describePull(event.status ?? "", event.id, layers));
        },
      );
    });
  }

  async dataRoot(): Promise<string | null> {
    try {
      return (await this.docker.info()).DockerRootDir || null;
    } catch (error) {
      throw new EngineError("engine", engineMessage(error), status(error));
    }
  }

  async listImages(): Promise<ImageSummary[]> {
    let found: Docker.ImageInfo[];
    try {
      found = await this.docker.listImages();
    } catch (error) {
      throw new EngineError("engine", engineMessage(error), status(error));
    }
    return found.map((i) => ({
      id: i.Id,
      // Older engines list `<none>:<none>` / `<none>@<none>` for an image without names.
      tags: (i.RepoTags ?? []).filter((t) => !t.startsWith("<none>")),
      digests: (i.RepoDigests ?? []).filter((d) => !d.startsWith("<none>")),
      created: i.Created * 1000,
      sizeBytes: i.Size,
      labels: i.Labels ?? {},
    }));
  }

  async containerImageIds(): Promise<Set<string>> {
    try {
      const all = await this.docker.listContainers({ all: true });
      return new Set(all.map((c) => c.ImageID).filter(Boolean));
    } catch (error) {
      throw new EngineError("engine", engineMessage(error), status(error));
    }
  }

  async removeImage(ref: string): Promise<void> {
    try {
      await this.docker.getImage(ref).remove({ force: false, noprune: false });
    } catch (error) {
      const code = status(error);
      throw new EngineError(
        code === 404 ? "not_found" : code === 409 ? "conflict" : "engine",
        engineMessage(error),
        code,
      );
    }
  }

  async create(spec: ContainerSpec): Promise<string> {
    try {
      const container = await this.docker.createContainer({
        name: spec.name,
        Image: spec.image,
        ...(spec.entrypoint ? { Entrypoint: spec.entrypoint } : {}),
        ...(spec.cmd ? { Cmd: spec.cmd } : {}),
        Env: spec.env,
        Labels: spec.labels,
        Tty: false,
        HostConfig: {
          Memory: spec.memoryBytes,
          // Memory + swap = memory: no swap, so the memory limit is a hard limit (default is 2×).
          MemorySwap: spec.memoryBytes,
          NanoCpus: spec.nanoCpus,
          PidsLimit: spec.pidsLimit,
          // An init as PID 1 forwards SIGTERM and reaps zombies: stops take the grace period, not a SIGKILL.
          Init: true,
          Privileged: false,
          SecurityOpt: ["no-new-privileges"],
          RestartPolicy: { Name: "no" },
          LogConfig: { Type: "json-file", Config: { "max-size": "50m", "max-file": "4" } },
          ...(spec.hostNetwork ? { NetworkMode: "host" } : {}),
          ...(spec.gpuDeviceIds.length > 0
            ? {
                DeviceRequests: [
                  { Driver: "nvidia", DeviceIDs: spec.gpuDeviceIds, Capabilities: [["gpu", "compute", "utility"]] },
                ],
              }
            : {}),
        },
      });
      return container.id;
    } catch (error) {
      const code = status(error);
      const message = engineMessage(error);
      if (code === 409) throw new EngineError("conflict", message, code);
      if (code === 404 && /no such image/i.test(message)) throw new EngineError("image_not_found", message, code);
      throw new EngineError("engine", message, code);
    }
  }

  async start(id: string): Promise<void> {
    try {
      await this.docker.getContainer(id).start();
    } catch (error) {
      const code = status(error);
      if (code === 304) return; // already started
      const message = engineMessage(error);
      if (/could not select device driver/i.test(message)) throw new EngineError("gpu_unavailable", message, code);
      throw new EngineError(code === 404 ? "not_found" : "engine", message, code);
    }
  }

  async wait(id: string, signal?: AbortSignal): Promise<void> {
    try {
      await this.docker.getContainer(id).wait({ condition: "not-running", ...(signal ? { abortSignal: signal } : {}) });
    } catch (error) {
      if (status(error) === 404 || signal?.aborted) return;
      throw new EngineError("engine", engineMessage(error), status(error));
    }
  }

  async stop(id: string, graceMs: number): Promise<void> {
    try {
      await this.docker.getContainer(id).stop({ t: Math.ceil(graceMs / 1000) });
    } catch (error) {
      const code = status(error);
      if (code === 304 || code === 404) return;
      throw new EngineError("engine", engineMessage(error), code);
    }
  }

  async remove(id: string): Promise<void> {
    try {
      await this.docker.getContainer(id).remove({ force: true, v: true });
    } catch (error) {
      const code = status(error);
      const message = engineMessage(error);
      if (code === 404 || (code === 409 && /already in progress/i.test(message))) return;
      throw new EngineError("engine", message, code);
    }
  }

  async followLogs(id: string, since: string | null, sink: (entry: LogEntry) => void): Promise<LogFollow> {
    let stream: NodeJS.ReadableStream & { destroy?: () => void };
    try {
      stream = await this.docker.getContainer(id).logs({
        follow: true,
        stdout: true,
        stderr: true,
        timestamps: true,
        ...(since ? { since: logTimestampToSince(since) } : {}),
      });
    } catch (error) {
      throw new EngineError(status(error) === 404 ? "not_found" : "engine", engineMessage(error), status(error));
    }
    const out = new LogLineSplitter("stdout", sink);
    const err = new LogLineSplitter("stderr", sink);
    // demuxStream calls write() synchronously per frame, so entries keep the engine's order across streams.
    const writer = (splitter: LogLineSplitter) =>
      new Writable({
        write(chunk: Buffer, _enc, callback) {
          splitter.write(chunk);
          callback();
        },
      });
    this.docker.modem.demuxStream(stream, writer(out), writer(err));
    // The engine ends the response when the container has stopped and its log is read ("end");
    // a connection that closes or fails before that was cut.
    const ended = new Promise<LogEnd>((done) => {
      const finish = (how: LogEnd) => () => {
        out.flush();
        err.flush();
        done(how);
      };
      stream.once("end", finish("complete"));
      stream.once("close", finish("cut"));
      stream.once("error", finish("cut"));
    });
    let finished = false;
    void ended.then(() => {
      finished = true;
    });
    return {
      pause: () => stream.pause(),
      resume: () => stream.resume(),
      stop: () => {
        if (!finished) stream.destroy?.();
      },
      ended,
    };
  }

  async stats(id: string): Promise<StatsSample | null> {
    let s: Docker.ContainerStats;
    try {
      // one-shot: 6 ms instead of ~1 s; the CPU share is computed between two of our own samples.
      s = await this.docker.getContainer(id).stats({ stream: false, "one-shot": true });
    } catch (error) {
      if (status(error) === 404 || status(error) === 409) return null;
      throw new EngineError("engine", engineMessage(error), status(error));
    }
    if (!s.cpu_stats?.system_cpu_usage) return null; // not running: the engine answers with zeros
    const memory = s.memory_stats ?? {};
    const inactive = memory.stats?.total_inactive_file ?? memory.stats?.inactive_file ?? 0;
    return {
      cpuTotalNs: s.cpu_stats?.cpu_usage?.total_usage ?? 0,
      systemCpuNs: s.cpu_stats?.system_cpu_usage ?? 0,
      onlineCpus: s.cpu_stats?.online_cpus ?? 0,
      // A sample taken after the exit has an empty memory_stats.
      ...(memory.usage !== undefined ? { memoryBytes: Math.max(0, memory.usage - inactive) } : {}),
      ...(memory.limit !== undefined ? { memoryLimitBytes: memory.limit } : {}),
      ...(s.pids_stats?.current !== undefined ? { pids: s.pids_stats.current } : {}),
    };
  }
}

function describePull(status: string, id: string | undefined, layers: Map<string, { current: number; total: number }>) {
  let current = 0;
  let total = 0;
  for (const l of layers.values()) {
    current += l.current;
    total += l.total;
  }
  const mb = (n: number) => (n / 1e6).toFixed(1);
  const bytes = total > 0 ? ` (${mb(current)} of ${mb(total)} MB in ${layers.size} layers)` : "";
  return `${status}${id ? ` ${id}` : ""}${bytes}`.slice(0, 512);
}

/** The container's address as this host reaches it (see ContainerDetails.address). */
function containerAddress(
  mode: string | undefined,
  net: Docker.ContainerInspectInfo["NetworkSettings"],
): string | null {
  if (mode === "host") return "127.0.0.1";
  for (const n of Object.values(net?.Networks ?? {})) if (n.IPAddress) return n.IPAddress;
  return null;
}
