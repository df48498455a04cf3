import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { hungStarts } from "./wedge";

const EXEC = "/work/x/.scalar/docker/exec";
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A /proc with `uptime` and the given processes (start time in seconds since boot). */
function fakeProc(uptimeS: number, procs: { pid: number; argv: string[]; startS: number; comm?: string }[]) {
  const root = mkdtempSync(join(tmpdir(), "proc-"));
  dirs.push(root);
  writeFileSync(join(root, "uptime"), `${uptimeS.toFixed(2)} 1234.00\n`);
  for (const p of procs) {
    mkdirSync(join(root, String(p.pid)));
    writeFileSync(join(root, String(p.pid), "cmdline"), `${p.argv.join("\0")}\0`);
    // After "(comm) S" come fields 4…: the start time, field 22, is the 19th of them.
    const fields = Array.from({ length: 50 }, () => "0");
    fields[18] = String(Math.round(p.startS * 100));
    writeFileSync(join(root, String(p.pid), "stat"), `${p.pid} (${p.comm ?? "runc"}) S ${fields.join(" ")}\n`);
  }
  return root;
}

const create = (id: string, execRoot = EXEC) => [
  "runc",
  "--root",
  `${execRoot}/runtime-runc/moby`,
  "--log",
  `${execRoot}/containerd/daemon/io.containerd.runtime.v2.task/moby/${id}/log.json`,
  "create",
  "--bundle",
  `${execRoot}/containerd/daemon/io.containerd.runtime.v2.task/moby/${id}`,
  id,
];

describe("hungStarts", () => {
  it("finds the engine's runc create that has run for a minute or more, oldest first", () => {
    const proc = fakeProc(5_000, [
      { pid: 10, argv: create("aaa"), startS: 4_900 },
      { pid: 11, argv: create("bbb"), startS: 2_300 },
      { pid: 12, argv: create("fresh"), startS: 4_990 },
    ]);
    expect(hungStarts(EXEC, { procRoot: proc })).toEqual([
      { pid: 11, containerId: "bbb", ageS: 2_700 },
      { pid: 10, containerId: "aaa", ageS: 100 },
    ]);
  });

  it("ignores another engine's runc, other runc commands, other programs and a command name with spaces", () => {
    const proc = fakeProc(5_000, [
      { pid: 20, argv: create("other", "/elsewhere/exec"), startS: 1_000 },
      { pid: 21, argv: ["runc", "init"], startS: 1_000 },
      {
        pid: 22,
        argv: ["/usr/bin/containerd-shim-runc-v2", "-namespace", "moby", "create", `${EXEC}/x`],
        startS: 1_000,
      },
      { pid: 23, argv: create("spaced"), startS: 1_000, comm: "runc (x) y" },
    ]);
    expect(hungStarts(EXEC, { procRoot: proc })).toEqual([{ pid: 23, containerId: "spaced", ageS: 4_000 }]);
  });

  it("finds nothing where there is no /proc", () => {
    expect(hungStarts(EXEC, { procRoot: "/nonexistent" })).toEqual([]);
  });
});
