/**
 * Small-file persistence for the data folder: whole-file JSON written atomically (temp, every byte,
 * fsync, rename, fsync of the folder), and read back so that a damaged file never keeps the agent
 * from starting.
 */
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { basename, dirname } from "node:path";
import { errorText, type Logger } from "./logger";

export function readJson(file: string): unknown {
  if (!existsSync(file)) return undefined;
  return JSON.parse(readFileSync(file, "utf8"));
}

/**
 * Writes every byte or throws: a write may take only part of what it is given (a disk that fills
 * mid-write, a file size limit) without failing, and the next one then reports the error.
 */
function writeAll(fd: number, text: string): void {
  const bytes = Buffer.from(text, "utf8");
  for (let done = 0; done < bytes.length; ) {
    const written = writeSync(fd, bytes, done, bytes.length - done);
    if (written <= 0) throw new Error(`short write: ${done} of ${bytes.length} bytes written`);
    done += written;
  }
}

function fsyncPath(path: string): void {
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * A crash leaves either the old file or the new one, never half of one; a write that fails (part
 * written, then a full disk) throws and leaves the old file as it was.
 */
export function writeJsonAtomic(file: string, value: unknown): void {
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.tmp`;
  try {
    const fd = openSync(tmp, "w");
    try {
      writeAll(fd, JSON.stringify(value));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  } catch (error) {
    // A partial temp file would only hold space on a disk that is likely full.
    try {
      unlinkSync(tmp);
    } catch {
      // none, or not a file
    }
    throw error;
  }
  // The rename is durable once the folder's entry is.
  fsyncPath(dirname(file));
}

/** `<file>.corrupt-<UTC time>`, e.g. `state.json.corrupt-20260101T120000Z`. */
function asidePath(file: string): string {
  return `${file}.corrupt-${new Date().toISOString().replace(/[-:]|\.\d+/g, "")}`;
}

/**
 * A data-folder file that is written whole at every change. A write that fails (a full disk, one
 * remounted read-only) is logged, once until a write succeeds again, and never thrown: the agent
 * goes on from memory, supervising its containers, and the next change writes the whole file again.
 */
export class DataFile {
  private failing = false;
  /** Where `read` put a file it could not parse, if it did. */
  setAside: string | null = null;

  constructor(
    readonly path: string,
    private readonly log: Logger,
  ) {}

  /**
   * The file's content as `parse` takes it, or undefined when there is no file. A file that is not
   * JSON or that `parse` refuses (cut short, damaged) is set aside as `<name>.corrupt-<time>`, with an
   * error logged, and read as no file: the agent starts without it rather than not at all. Errors
   * reading the file (permissions, I/O) are thrown.
   */
  read<T>(parse: (raw: unknown) => T): T | undefined {
    let text: string;
    try {
      text = readFileSync(this.path, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw error;
    }
    try {
      return parse(JSON.parse(text));
    } catch (error) {
      const aside = asidePath(this.path);
      let moved: string | null = aside;
      try {
        renameSync(this.path, aside);
      } catch {
        moved = null; // a read-only folder: the next write that succeeds replaces it
      }
      this.setAside = moved;
      this.log("error", `${basename(this.path)} cannot be read; set aside, starting without it`, {
        file: this.path,
        set_aside: moved,
        bytes: Buffer.byteLength(text),
        error: errorText(error).slice(0, 500),
      });
      return undefined;
    }
  }

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
