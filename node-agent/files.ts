/** Small-file persistence for the data folder: whole-file JSON written atomically (temp, fsync, rename). */
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { basename, dirname } from "node:path";
import { errorText, type Logger } from "./logger";

export function readJson(file: string): unknown {
  if (!existsSync(file)) return undefined;
  return JSON.parse(readFileSync(file, "utf8"));
}

/** A crash leaves either the old file or the new one, never half of one. */
export function writeJsonAtomic(file: string, value: unknown): void {
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.tmp`;
  const fd = openSync(tmp, "w");
  try {
    writeSync(fd, JSON.stringify(value));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
}

/**
 * A data-folder file that is written whole at every change. A write that fails (a full disk, one
 * remounted read-only) is logged, once until a write succeeds again, and never thrown: the agent
 * goes on from memory, supervising its containers, and the next change writes the whole file again.
 */
export class DataFile {
  private failing = false;

  constructor(
    readonly path: string,
    private readonly log: Logger,
  ) {}

  /** True when the value is on disk. */
  write(value: unknown): boolean {
    try {
      writeJsonAtomic(this.path, value);
    } catch (error) {
      if (!this.failing) {
        this.log(
          "error",
          `could not write ${basename(this.path)}; going on from memory, writing it again at the next change`,
          {
            file: this.path,
            error: errorText(error),
          },
        );
      }
      this.failing = true;
      return false;
    }
    if (this.failing) this.log("info", `${basename(this.path)} written again`, { file: this.path });
    this.failing = false;
    return true;
  }
}
