/**
 * TEST DOUBLE: an in-memory ContainerEngine for the agent's unit tests. Images are a map from
 * reference to id, and a pull asks `registry` (the test's stand-in for the registry) what the
 * reference is now, with the credentials sent; containers exit with code 0 as soon as they start
 * and stay (stopped) until removed. Image removal follows the engine's rules without force (see
 * `removeImage`), and `imageMeta` gives images a build time, a size and labels for image GC.
 * `hung` makes calls of some methods wait, unanswered, until `release` (a hung engine); `pingError`
 * makes the engine unreachable.
 */
import {
  type ContainerDetails,
  type ContainerEngine,
  type ContainerSpec,
  type ContainerSummary,
  EngineError,
  type ImageSummary,
  type LogEntry,
  type LogFollow,
  type RegistryCredentials,
  type StatsSample,
} from "../docker/engine";

interface FakeContainer {
  id: string;
  spec: ContainerSpec;
  /** The image id it was created from. */
  imageId: string;
  state: "created" | "running" | "exited";
  startedAt: number | null;
  finishedAt: number | null;
}

export class FakeEngine implements ContainerEngine {
  /** What the engine has: reference → image id. */
  readonly images = new Map<string, string>();
  /** Every pull asked for, with the credentials it sent. */
  readonly pulls: { ref: string; credentials?: RegistryCredentials }[] = [];
  /** Every call by method name, in order. */
  readonly calls: string[] = [];
  /**
   * The registry: the image id the reference names, for these credentials; throw an EngineError
   * (e.g. image_unauthorized, registry_unreachable) to refuse. Default: anyone may read anything.
   */
  registry: (ref: string, credentials?: RegistryCredentials) => string = (ref) => `sha256:${ref}`;
  /** Per image id: build time (ms), size and labels as `listImages` reports them (default 0, 0, none). */
  readonly imageMeta = new Map<string, { created?: number; sizeBytes?: number; labels?: Record<string, string> }>();
  /** Image ids without any name (untagged). */
  readonly danglingImages = new Set<string>();
  /** Every `removeImage` asked for, in order. */
  readonly imageRemovals: string[] = [];
  /** Answers a `removeImage` call with this error instead (e.g. a 409 race, a 500), when it returns one. */
  removeImageError: (ref: string) => EngineError | undefined = () => undefined;
  /** `docker info`'s DockerRootDir. */
  dataRootDir: string | null = "/var/lib/docker";
  /**
   * How containers of an image exit (default: code 0). `oomAfterInspects`: the exited container's
   * first N inspections say `oomKilled: false`, later ones true (the engine recording an OOM kill late).
   */
  readonly exitsAs = new Map<string, { exitCode: number; oomAfterInspects?: number }>();
  /** Inspections of each exited container so far, by container id. */
  private readonly exitedInspects = new Map<string, number>();
  /** Methods whose calls wait, unanswered, until `release` (e.g. `start`: a deadlocked engine). */
  readonly hung = new Set<keyof ContainerEngine>();
  private held: { method: string; go: () => void; fail: (error: Error) => void }[] = [];
  private readonly containers = new Map<string, FakeContainer>();
  private next = 0;

  /** Calls waiting in `hung` methods now, by method name. */
  heldCalls(): string[] {
    return this.held.map((h) => h.method);
  }

  /**
   * Answers the held calls of `method` (all: every method; still hung for new calls unless taken out
   * of `hung`): they go on as usual, or fail with `error` (as calls to a restarted engine do).
   */
  release(method?: keyof ContainerEngine, error?: Error): void {
    const go = this.held.filter((h) => method === undefined || h.method === method);
    this.held = this.held.filter((h) => !go.includes(h));
    for (const h of go) {
      if (error) h.fail(error);
      else h.go();
    }
  }

  /** Waits for `release` when the method is hung. */
  private gate(method: keyof ContainerEngine): Promise<void> {
    if (!this.hung.has(method)) return Promise.resolve();
    return new Promise((go, fail) => this.held.push({ method, go, fail }));
  }

  /** While set, `ping` fails at once with it (an engine that is not running: its socket refuses). */
  pingError: Error | null = null;

  async ping(): Promise<void> {
    this.calls.push("ping");
    if (this.pingError) throw this.pingError;
    await this.gate("ping");
  }

  async list(labels: Record<string, string>): Promise<ContainerSummary[]> {
    this.calls.push("list");
    await this.gate("list");
    return [...this.containers.values()]
      .filter((c) => Object.entries(labels).every(([k, v]) => c.spec.labels[k] === v))
      .map((c) => ({ id: c.id, name: c.spec.name, state: c.state, labels: c.spec.labels }));
  }

  async inspect(id: string): Promise<ContainerDetails | null> {
    this.calls.push("inspect");
    await this.gate("inspect");
    const c = this.containers.get(id);
    if (!c) return null;
    const exit = this.exitsAs.get(c.spec.image);
    let oomKilled = false;
    if (exit?.oomAfterInspects !== undefined && c.state === "exited") {
      const n = this.exitedInspects.get(id) ?? 0;
      this.exitedInspects.set(id, n + 1);
      oomKilled = n >= exit.oomAfterInspects;
    }
    return {
      id: c.id,
      name: c.spec.name,
      state: c.state,
      labels: c.spec.labels,
      running: false,
      exitCode: c.state === "exited" ? (exit?.exitCode ?? 0) : 0,
      oomKilled,
      error: "",
      startedAt: c.startedAt,
      finishedAt: c.finishedAt,
      env: c.spec.env,
      memoryBytes: c.spec.memoryBytes,
      memorySwapBytes: c.spec.memoryBytes,
      nanoCpus: c.spec.nanoCpus,
      pidsLimit: c.spec.pidsLimit,
      init: true,
      privileged: false,
      gpuDeviceIds: c.spec.gpuDeviceIds,
      networkMode: "default",
      address: null,
    };
  }

  async hasImage(ref: string): Promise<boolean> {
    return (await this.imageId(ref)) !== null;
  }

  async imageId(ref: string): Promise<string | null> {
    this.calls.push("imageId");
    return this.images.get(ref) ?? (this.imageIds().has(ref) ? ref : null);
  }

  /** Adds an image under these names (none: untagged), with its metadata. */
  addImage(
    id: string,
    names: string[],
    meta: { created?: number; sizeBytes?: number; labels?: Record<string, string> } = {},
  ): void {
    for (const name of names) this.images.set(name, id);
    if (names.length === 0) this.danglingImages.add(id);
    this.imageMeta.set(id, meta);
  }

  /** A container someone else made from this image id (no labels of ours), running or stopped. */
  addForeignContainer(imageId: string, state: "running" | "exited" = "exited"): string {
    const id = `c${this.next++}`;
    const spec: ContainerSpec = {
      name: `foreign-${id}`,
      image: imageId,
      env: [],
      labels: {},
      memoryBytes: 0,
      nanoCpus: 0,
      pidsLimit: 0,
      gpuDeviceIds: [],
    };
    this.containers.set(id, { id, spec, imageId, state, startedAt: null, finishedAt: null });
    return id;
  }

  async dataRoot(): Promise<string | null> {
    this.calls.push("dataRoot");
    return this.dataRootDir;
  }

  async listImages(): Promise<ImageSummary[]> {
    this.calls.push("listImages");
    return [...this.imageIds()].map((id) => {
      const names = this.namesOf(id);
      const meta = this.imageMeta.get(id) ?? {};
      return {
        id,
        tags: names.filter((n) => !n.includes("@")),
        digests: names.filter((n) => n.includes("@")),
        created: meta.created ?? 0,
        sizeBytes: meta.sizeBytes ?? 0,
        labels: meta.labels ?? {},
      };
    });
  }

  async containerImageIds(): Promise<Set<string>> {
    this.calls.push("containerImageIds");
    return new Set([...this.containers.values()].map((c) => c.imageId));
  }

  /**
   * The engine's rules without force: by id, an image with names in more than one repository (or
   * several tags) is refused (409 "referenced in multiple repositories"), as one a container uses
   * (409); by name, a name of an image with other names is removed (untagged) without looking at
   * containers, and the last name is refused while a container uses the image, else it takes the
   * image with it.
   */
  async removeImage(ref: string): Promise<void> {
    this.calls.push("removeImage");
    this.imageRemovals.push(ref);
    const injected = this.removeImageError(ref);
    if (injected) throw injected;
    const byName = this.images.has(ref);
    const id = byName ? this.images.get(ref)! : this.imageIds().has(ref) ? ref : null;
    if (id === null) throw new EngineError("not_found", `No such image: ${ref}`, 404);
    const names = this.namesOf(id);
    const user = [...this.containers.values()].find((c) => c.imageId === id);
    if (byName && names.length > 1) {
      this.images.delete(ref);
      return;
    }
    if (!byName && names.length > 1 && !singleReference(names)) {
      throw new EngineError(
        "conflict",
        `conflict: unable to delete ${id.slice(7, 19)} (must be forced) - image is referenced in multiple repositories`,
        409,
      );
    }
    if (user) {
      throw new EngineError(
        "conflict",
        `conflict: unable to delete ${id.slice(7, 19)} (must be forced) - image is being used by stopped container ${user.id}`,
        409,
      );
    }
    for (const name of names) this.images.delete(name);
    this.danglingImages.delete(id);
  }

  private imageIds(): Set<string> {
    return new Set([...this.images.values(), ...this.danglingImages]);
  }

  private namesOf(id: string): string[] {
    return [...this.images].filter(([, v]) => v === id).map(([k]) => k);
  }

  async pull(ref: string, onProgress: (progress: string) => void, credentials?: RegistryCredentials): Promise<void> {
    this.calls.push("pull");
    await this.gate("pull");
    this.pulls.push({ ref, ...(credentials ? { credentials } : {}) });
    const id = this.registry(ref, credentials);
    onProgress(`Pulling from ${ref}`);
    this.images.set(ref, id);
  }

  async create(spec: ContainerSpec): Promise<string> {
    this.calls.push("create");
    await this.gate("create");
    if (![...this.images.keys()].includes(spec.image)) throw new EngineError("image_not_found", "No such image");
    if ([...this.containers.values()].some((c) => c.spec.name === spec.name)) {
      throw new EngineError("conflict", `name ${spec.name} taken`);
    }
    const id = `c${this.next++}`;
    const imageId = this.images.get(spec.image)!;
    this.containers.set(id, { id, spec, imageId, state: "created", startedAt: null, finishedAt: null });
    return id;
  }

  async start(id: string): Promise<void> {
    this.calls.push("start");
    await this.gate("start");
    const c = this.containers.get(id);
    if (!c) throw new EngineError("not_found", "no such container");
    c.state = "exited";
    c.startedAt = Date.now();
    c.finishedAt = Date.now();
  }

  async wait(): Promise<void> {
    this.calls.push("wait");
    await this.gate("wait");
  }

  async stop(): Promise<void> {
    this.calls.push("stop");
    await this.gate("stop");
  }

  async remove(id: string): Promise<void> {
    this.calls.push("remove");
    await this.gate("remove");
    this.containers.delete(id);
  }

  async followLogs(_id: string, _since: string | null, _sink: (entry: LogEntry) => void): Promise<LogFollow> {
    this.calls.push("followLogs");
    await this.gate("followLogs");
    return { pause() {}, resume() {}, stop() {}, ended: Promise.resolve("complete" as const) };
  }

  async stats(): Promise<StatsSample | null> {
    await this.gate("stats");
    return null;
  }

  /** Containers the engine has now (any state). */
  get containerCount(): number {
    return this.containers.size;
  }
}

/** The engine's test: at most one tag, and every name (digests too) in that one repository. */
function singleReference(names: string[]): boolean {
  if (names.filter((n) => !n.includes("@")).length > 1) return false;
  const repository = (n: string) => {
    if (n.includes("@")) return n.slice(0, n.indexOf("@"));
    const colon = n.lastIndexOf(":");
    return colon > n.lastIndexOf("/") ? n.slice(0, colon) : n;
  };
  return new Set(names.map(repository)).size === 1;
}
