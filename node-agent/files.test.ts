import * as fs from "node:fs";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { DataFile } from "./files";
import type { Logger } from "./logger";

// writeSync as the real one unless a test says otherwise.
vi.mock("node:fs", async (importOriginal) => {
  const real = await importOriginal<typeof import("node:fs")>();
  return { ...real, writeSync: vi.fn(real.writeSync) };
});
const realWrite = (await vi.importActual<typeof import("node:fs")>("node:fs")).writeSync;
const writeSync = vi.mocked(fs.writeSync);

/** Writes only the first half of what it is given, and says so, as a write on a filling disk does. */
function halfWrite(fd: number, data: string | NodeJS.ArrayBufferView, offset?: unknown, length?: unknown): number {
  const from = typeof offset === "number" ? offset : 0;
  const bytes =
    typeof data === "string"
      ? Buffer.from(data)
      : Buffer.from(data.buffer, data.byteOffset + from, typeof length === "number" ? length : data.byteLength - from);
  return realWrite(fd, bytes, 0, Math.floor(bytes.length / 2));
}
const diskFull = (): number => {
  throw Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" });
};

const dirs: string[] = [];
afterEach(() => {
  writeSync.mockReset();
  writeSync.mockImplementation(realWrite);
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function dataFile() {
  const dir = mkdtempSync(join(tmpdir(), "files-"));
  dirs.push(dir);
  const logged: string[] = [];
  const log: Logger = (level, msg) => logged.push(`${level}: ${msg}`);
  return { dir, logged, file: new DataFile(join(dir, "state.json"), log) };
}

const big = { placements: Object.fromEntries(Array.from({ length: 2_000 }, (_, i) => [`p${i}`, { n: i }])) };

describe("a data file write", () => {
  it("that the disk cuts short fails, and leaves the old file whole", () => {
    const f = dataFile();
    expect(f.file.write({ version: 1 })).toBe(true);
    writeSync.mockImplementationOnce(halfWrite).mockImplementation(diskFull);
    expect(f.file.write(big)).toBe(false);
    expect(readFileSync(f.file.path, "utf8")).toBe('{"version":1}');
    expect(readdirSync(f.dir)).toEqual(["state.json"]); // no partial temp file left on a full disk
    expect(f.logged).toEqual([
      "error: could not write state.json; going on from memory, writing it again at the next change",
    ]);
  });

  it("that the kernel takes in parts is written whole", () => {
    const f = dataFile();
    writeSync.mockImplementationOnce(halfWrite);
    expect(f.file.write(big)).toBe(true);
    expect(JSON.parse(readFileSync(f.file.path, "utf8"))).toEqual(big);
  });
});

describe("a data file read", () => {
  it("sets aside a file that does not parse and reads as no file", () => {
    const f = dataFile();
    fs.writeFileSync(f.file.path, '{"version":1,"placements":{"p1":{"fin');
    expect(f.file.read((raw) => raw)).toBeUndefined();
    expect(existsSync(f.file.path)).toBe(false);
    const aside = f.file.setAside as string;
    expect(aside).toMatch(/state\.json\.corrupt-\d{8}T\d{6}Z$/);
    expect(readFileSync(aside, "utf8")).toBe('{"version":1,"placements":{"p1":{"fin');
    expect(f.logged).toEqual(["error: state.json cannot be read; set aside, starting without it"]);
  });

  it("sets aside a file its parser refuses", () => {
    const f = dataFile();
    fs.writeFileSync(f.file.path, '{"version":2}');
    const parse = (raw: unknown) => {
      if ((raw as { version: number }).version !== 1) throw new Error("unknown version");
      return raw;
    };
    expect(f.file.read(parse)).toBeUndefined();
    expect(f.file.setAside).not.toBeNull();
  });

  it("reads a whole file, and no file as none", () => {
    const f = dataFile();
    expect(f.file.read((raw) => raw)).toBeUndefined();
    f.file.write({ version: 1 });
    expect(f.file.read((raw) => raw)).toEqual({ version: 1 });
    expect(f.file.setAside).toBeNull();
  });
});
