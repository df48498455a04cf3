/**
 * Image garbage collection, after the kubelet's: nodes live for days or weeks and run many accounts'
 * images, and a full disk fails every pull ("no space left on device"). Every `intervalMs`, and
 * right after a pull or create fails for lack of space, the agent measures the file system holding
 * the engine's images (`docker info`'s DockerRootDir; the agent's data folder when it cannot read
 * that path, e.g. a remote engine, said once in the log). At `highPercent` or more it removes images
 * until usage is at `lowPercent` or below, or nothing more may go.
 *
 * What may go: an image no container uses (any container in the engine, running or stopped, ours or
 * not), that no placement of the node's desired set (or a run in progress) names, that this agent
 * has not pulled or started a placement from within `minAgeMs`, and, for an image that appeared in
 * the engine since the agent last listed it (someone else pulled it), that was first listed at
 * least `minAgeMs` ago. Nothing goes before the node has a desired set. Least recently used first:
 * images the agent has no record of (pulled before it, or by others) go first, oldest `Created`
 * first, then the agent's by last use. Usage is measured again after each removal. Each image is
 * checked again just before its removal (desired set, last use); a placement that resolves the image
 * in the instant the engine deletes it fails its create, retryably, as with the kubelet.
 *
 * Removal is `docker rmi` by id, never forced: the engine refuses (409) an image a container uses,
 * and the pass skips it, as an image already gone (404). An image with several names cannot be
 * removed by id without force (409 "referenced in multiple repositories"), and force would also
 * untag an image a stopped container uses: such an image is removed name by name instead, each
 * without force, after checking again that no container uses it; the engine deletes the image with
 * its last name, and refuses that one while a container uses the image.
 */
import type { Clock } from "./clock";
import { type ContainerEngine, EngineError, type ImageSummary } from "./docker/engine";
import { type DiskUsage, type DiskUsageReader, diskUsage, usedPercent } from "./host";
import { errorText, type Logger } from "./logger";
import type { PrivateImages } from "./private-images";
import type { AgentState } from "./state";

export interface ImageGcConfig {
  /** Time between passes. */
  intervalMs: number;
  /** Collect at this usage (percent of the file system) or above; 100 disables collection. */
  highPercent: number;
  /** Collect down to this usage. */
  lowPercent: number;
  /** An image pulled or started from by this agent within this time is kept. */
  minAgeMs: number;
}

export const DEFAULT_IMAGE_GC: ImageGcConfig = {
  intervalMs: 5 * 60_000,
  highPercent: 85,
  lowPercent: 80,
  minAgeMs: 2 * 60_000,
};

/** Images whose last use the agent remembers (the least recently used record goes beyond this). */
export const MAX_IMAGE_USE_RECORDS = 500;
/** A use is written to the state file at most this often per image; the memory has the exact time. */
export const IMAGE_USE_PERSIST_MS = 60_000;
/** Images named in the pass's log line. */
const MAX_LOGGED_IMAGES = 20;

/** Did an engine call fail for lack of disk space? */
export function isNoSpace(error: unknown): boolean {
  return /no space left on device|ENOSPC|disk quota exceeded/i.test(errorText(error));
}

/**
 * When this agent last pulled each image or started a placement from it, by engine image id: in
 * memory, and in the state file (`image_use`) so that the order survives a restart. The file is
 * written at most every IMAGE_USE_PERSIST_MS per image, so a busy image costs no write per start.
 */
export class ImageUse {
  private readonly lastUse: Map<string, number>;
  /** What the state file holds. */
  private readonly persisted: Map<string, number>;

  constructor(
    private readonly state: AgentState,
    private readonly clock: Clock,
    private readonly maxRecords = MAX_IMAGE_USE_RECORDS,
  ) {
    this.persisted = new Map(Object.entries(state.imageUse()));
    this.lastUse = new Map(this.persisted);
  }

  /** A placement starts from this image now, or the agent has just pulled it. */
  touch(imageId: string): void {
    const now = this.clock.now();
    const changes: Record<string, number | undefined> = {};
    if (!this.lastUse.has(imageId) && this.lastUse.size >= this.maxRecords) {
      const oldest = this.oldest();
      if (oldest !== undefined) {
        this.lastUse.delete(oldest);
        if (this.persisted.delete(oldest)) changes[oldest] = undefined;
      }
    }
    this.lastUse.set(imageId, now);
    const written = this.persisted.get(imageId);
    if (written === undefined || now - written >= IMAGE_USE_PERSIST_MS) {
      this.persisted.set(imageId, now);
      changes[imageId] = now;
    }
    if (Object.keys(changes).length > 0) this.state.updateImageUse(changes);
  }

  lastUsed(imageId: string): number | undefined {
    return this.lastUse.get(imageId);
  }

  /** Forgets images the engine no longer has. */
  forget(imageIds: Iterable<string>): void {
    const changes: Record<string, number | undefined> = {};
    for (const id of imageIds) {
      this.lastUse.delete(id);
      if (this.persisted.delete(id)) changes[id] = undefined;
    }
    if (Object.keys(changes).length > 0) this.state.updateImageUse(changes);
  }

  /** Keeps only the records of these images (the engine's, just listed). */
  retain(imageIds: ReadonlySet<string>): void {
    this.forget([...this.lastUse.keys()].filter((id) => !imageIds.has(id)));
  }

  private oldest(): string | undefined {
    let oldest: string | undefined;
    let at = Number.POSITIVE_INFINITY;
    for (const [id, t] of this.lastUse) {
      if (t < at) {
        at = t;
        oldest = id;
      }
    }
    return oldest;
  }
}

export type GcTrigger = "interval" | "no_space";
type KeepReason = "in_use" | "desired" | "recent";
type Outcome = "removed" | "gone" | "in_use" | "failed";

export interface GcPassResult {
  trigger: GcTrigger;
  /** What was measured: the engine's data root, or the agent's data folder; null when nothing could be. */
  measured: { path: string; engineDisk: boolean } | null;
  usageBefore: number | null;
  usageAfter: number | null;
  /** Images removed by this pass, in order. */
  removed: ImageSummary[];
  /** Images kept, by reason (`failed`: the engine refused for another reason, or the call failed). */
  kept: Record<KeepReason | "failed", number>;
}

export interface ImageGcDeps {
  engine: Pick<ContainerEngine, "dataRoot" | "listImages" | "containerImageIds" | "removeImage" | "imageId">;
  use: ImageUse;
  /** Its records of removed images are dropped after a pass (its own rules: `prune`). */
  privateImages: Pick<PrivateImages, "prune">;
  clock: Clock;
  log: Logger;
  /** The agent's data folder: measured instead when the engine's data root cannot be read. */
  dataDir: string;
  /** References to keep: the desired set's images and those of runs in progress; null before any desired set. */
  protectedRefs: () => string[] | null;
  readDisk?: DiskUsageReader;
  /** Only images this accepts are ever removed (tests: their own images only). */
  mayCollect?: (image: ImageSummary) => boolean;
  signal?: AbortSignal;
}

export class ImageGc {
  private readonly readDisk: DiskUsageReader;
  /**
   * When (`Clock.monotonic`) each image was first listed by this process (-∞: in the first listing,
   * so there before). This process's own: a step of the wall clock must not end a min age early.
   */
  private readonly firstSeen = new Map<string, number>();
  private listedBefore = false;
  private saidFallback = false;
  private saidUnreadable = false;
  private running: Promise<void> | null = null;
  private again: GcTrigger | null = null;

  constructor(
    private readonly config: ImageGcConfig,
    private readonly deps: ImageGcDeps,
  ) {
    this.readDisk = deps.readDisk ?? diskUsage;
  }

  get enabled(): boolean {
    return this.config.highPercent < 100;
  }

  /** Runs a pass now, or right after the one in progress (requests in between coalesce). */
  request(trigger: GcTrigger): Promise<void> {
    if (!this.enabled || this.deps.signal?.aborted) return Promise.resolve();
    if (this.running) {
      this.again = this.again === "no_space" ? "no_space" : trigger;
      return this.running;
    }
    this.running = (async () => {
      let next: GcTrigger | null = trigger;
      while (next && !this.deps.signal?.aborted) {
        this.again = null;
        try {
          await this.pass(next);
        } catch (error) {
          this.deps.log("warn", "image gc pass failed", { trigger: next, error: errorText(error) });
        }
        next = this.again;
      }
      this.running = null;
    })();
    return this.running;
  }

  /** Resolves once no pass runs. */
  idle(): Promise<void> {
    return this.running ?? Promise.resolve();
  }

  /** One pass (request() serialises them; tests call this directly). */
  async pass(trigger: GcTrigger): Promise<GcPassResult> {
    const high = this.config.highPercent;
    const low = this.config.lowPercent;
    const result: GcPassResult = {
      trigger,
      measured: null,
      usageBefore: null,
      usageAfter: null,
      removed: [],
      kept: { in_use: 0, desired: 0, recent: 0, failed: 0 },
    };
    if (this.deps.protectedRefs() === null) {
      this.deps.log("debug", "image gc waits for the node's first desired set", { trigger });
      return result;
    }
    const where = await this.measure();
    if (!where) return result;
    result.measured = { path: where.path, engineDisk: where.engineDisk };
    const before = where.usage;
    result.usageBefore = usedPercent(before);
    result.usageAfter = result.usageBefore;
    if (result.usageBefore < high) {
      this.deps.log("debug", "image gc: usage below the high threshold", {
        trigger,
        path: where.path,
        usage_pct: round(result.usageBefore),
        high_pct: high,
      });
      return result;
    }

    const [images, inUse] = await Promise.all([this.deps.engine.listImages(), this.deps.engine.containerImageIds()]);
    this.noteListing(images);
    const resolved = new Map<string, string | null>();
    const candidates: ImageSummary[] = [];
    let keep = await this.protectedSet(resolved);
    const now = this.deps.clock.now();
    for (const image of images) {
      if (this.deps.mayCollect && !this.deps.mayCollect(image)) continue;
      const why = this.keepReason(image, inUse, keep, now);
      if (why) result.kept[why]++;
      else candidates.push(image);
    }
    candidates.sort((a, b) => this.lruOrder(a, b));

    let usage = before;
    const toFree = before.totalBytes - before.availableBytes - (low / 100) * before.totalBytes;
    let imageBytes = 0;
    let exhausted = true;
    const gone: string[] = [];
    for (const image of candidates) {
      if (this.deps.signal?.aborted || usedPercent(usage) <= low) {
        exhausted = false;
        break;
      }
      // Measuring a folder that may not share the engine's disk: stop once the images' sizes cover it.
      if (!where.engineDisk && imageBytes >= toFree) {
        exhausted = false;
        break;
      }
      // Again just before: a placement may have started from it, or the desired set changed, meanwhile.
      keep = await this.protectedSet(resolved);
      const why = this.keepReason(image, inUse, keep, this.deps.clock.now());
      if (why) {
        result.kept[why]++;
        continue;
      }
      const outcome = await this.remove(image);
      if (outcome === "removed") {
        result.removed.push(image);
        gone.push(image.id);
        imageBytes += image.sizeBytes;
        usage = (await this.readDisk(where.path)) ?? usage;
      } else if (outcome === "gone") gone.push(image.id);
      else result.kept[outcome]++;
    }
    result.usageAfter = usedPercent(usage);
    if (!where.engineDisk && imageBytes >= toFree) exhausted = false;

    if (gone.length > 0) {
      this.deps.use.forget(gone);
      for (const id of gone) this.firstSeen.delete(id);
      // Records of private images must not outlive them (private-images.ts decides which go).
      await this.deps.privateImages
        .prune()
        .catch((error) =>
          this.deps.log("warn", "could not prune the private image records", { error: errorText(error) }),
        );
    }
    const fields = {
      trigger,
      path: where.path,
      ...(where.engineDisk ? {} : { measured: "data folder" }),
      usage_before_pct: round(result.usageBefore),
      usage_after_pct: round(result.usageAfter),
      high_pct: high,
      low_pct: low,
    };
    if (result.removed.length > 0) {
      this.deps.log("info", "image gc removed images", {
        ...fields,
        images_removed: result.removed.length,
        bytes_freed: Math.max(0, usage.availableBytes - before.availableBytes),
        image_bytes: imageBytes,
        images: result.removed.slice(0, MAX_LOGGED_IMAGES).map(imageFields),
      });
    }
    if (exhausted && result.usageAfter >= high) {
      this.deps.log("warn", "image gc: disk still above the high threshold; no more images may go", {
        ...fields,
        images_removed: result.removed.length,
        kept_in_use: result.kept.in_use,
        kept_desired: result.kept.desired,
        kept_recent: result.kept.recent,
        kept_failed: result.kept.failed,
      });
    }
    return result;
  }

  /** The engine's data root and its usage; the agent's data folder's when that cannot be read (said once). */
  private async measure(): Promise<{ path: string; engineDisk: boolean; usage: DiskUsage } | null> {
    const root = await this.deps.engine.dataRoot();
    if (root) {
      const usage = await this.readDisk(root);
      if (usage) return { path: root, engineDisk: true, usage };
    }
    if (!this.saidFallback) {
      this.saidFallback = true;
      this.deps.log("warn", "image gc cannot read the engine's data root; measuring the agent's data folder instead", {
        docker_root_dir: root,
        data_dir: this.deps.dataDir,
      });
    }
    const usage = await this.readDisk(this.deps.dataDir);
    if (usage) return { path: this.deps.dataDir, engineDisk: false, usage };
    if (!this.saidUnreadable) {
      this.saidUnreadable = true;
      this.deps.log("warn", "image gc cannot read the disk usage of the data folder either; not collecting", {
        data_dir: this.deps.dataDir,
      });
    }
    return null;
  }

  private noteListing(images: ImageSummary[]): void {
    const ids = new Set(images.map((i) => i.id));
    const at = this.listedBefore ? this.deps.clock.monotonic() : Number.NEGATIVE_INFINITY;
    for (const id of ids) if (!this.firstSeen.has(id)) this.firstSeen.set(id, at);
    for (const id of [...this.firstSeen.keys()]) if (!ids.has(id)) this.firstSeen.delete(id);
    this.listedBefore = true;
    this.deps.use.retain(ids);
  }

  /** The protected references and the image ids they name now (resolved once per pass). */
  private async protectedSet(resolved: Map<string, string | null>): Promise<{ refs: Set<string>; ids: Set<string> }> {
    const refs = new Set(this.deps.protectedRefs() ?? []);
    for (const ref of refs) {
      if (!resolved.has(ref)) resolved.set(ref, await this.deps.engine.imageId(ref).catch(() => null));
    }
    const ids = new Set<string>();
    for (const ref of refs) {
      const id = resolved.get(ref);
      if (id) ids.add(id);
    }
    return { refs, ids };
  }

  private keepReason(
    image: ImageSummary,
    inUse: ReadonlySet<string>,
    keep: { refs: Set<string>; ids: Set<string> },
    now: number,
  ): KeepReason | null {
    if (inUse.has(image.id)) return "in_use";
    if (keep.ids.has(image.id) || [...image.tags, ...image.digests].some((name) => keep.refs.has(name))) {
      return "desired";
    }
    // Use records are wall-clock times (the state file's, from earlier processes too): `now` is one.
    const used = this.deps.use.lastUsed(image.id);
    if (used !== undefined && now - used < this.config.minAgeMs) return "recent";
    const seen = this.firstSeen.get(image.id);
    if (seen !== undefined && this.deps.clock.monotonic() - seen < this.config.minAgeMs) return "recent";
    return null;
  }

  /** Images without a use record first, oldest build first; then by last use. */
  private lruOrder(a: ImageSummary, b: ImageSummary): number {
    const ua = this.deps.use.lastUsed(a.id);
    const ub = this.deps.use.lastUsed(b.id);
    if ((ua === undefined) !== (ub === undefined)) return ua === undefined ? -1 : 1;
    return (ua ?? a.created) - (ub ?? b.created) || a.created - b.created || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  }

  private async remove(image: ImageSummary): Promise<Outcome> {
    try {
      await this.deps.engine.removeImage(image.id);
      return "removed";
    } catch (error) {
      if (codeOf(error) === "conflict" && /multiple repositories/i.test(errorText(error))) {
        return this.removeByName(image);
      }
      return this.refused(image, error, "gone");
    }
  }

  /**
   * An image with several names: each name without force; the engine deletes the image with the
   * last one, and refuses that one while a container uses the image. Checked first, since removing
   * the other names does not ask whether a container uses the image.
   */
  private async removeByName(image: ImageSummary): Promise<Outcome> {
    let inUse: Set<string>;
    try {
      inUse = await this.deps.engine.containerImageIds();
    } catch (error) {
      return this.refused(image, error, "failed");
    }
    if (inUse.has(image.id)) return "in_use";
    for (const name of [...image.tags, ...image.digests]) {
      try {
        await this.deps.engine.removeImage(name);
      } catch (error) {
        if (codeOf(error) === "not_found") continue; // went with a name before it
        return this.refused(image, error, "gone");
      }
    }
    try {
      await this.deps.engine.removeImage(image.id); // a name added meanwhile, or none left
    } catch (error) {
      // Gone with its last name: removed.
      return this.refused(image, error, "removed");
    }
    return "removed";
  }

  private refused(image: ImageSummary, error: unknown, notFound: Outcome): Outcome {
    const code = codeOf(error);
    if (code === "not_found") return notFound;
    if (code === "conflict") {
      // In use (a container made since the listing), or the parent of another image.
      this.deps.log("debug", "image gc: the engine refused to remove an image (409); kept", {
        image: image.id,
        error: errorText(error),
      });
      return "in_use";
    }
    this.deps.log("warn", "image gc could not remove an image", { ...imageFields(image), error: errorText(error) });
    return "failed";
  }
}

const codeOf = (error: unknown) => (error instanceof EngineError ? error.code : undefined);
const round = (pct: number) => Math.round(pct * 10) / 10;
const imageFields = (image: ImageSummary) => ({
  id: image.id,
  ...(image.tags.length > 0 ? { tags: image.tags } : {}),
  size_bytes: image.sizeBytes,
});
