/** Child processes of the local stack: a start-up wait that fails says what the process printed. */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { startProcess, waitUntil } from "./processes";

const dir = mkdtempSync(join(tmpdir(), "scalar-processes-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("waitUntil", () => {
  it("names the log and quotes its last lines, without colours, when the process exits first", async () => {
    const script = [
      "for (let i = 1; i <= 30; i++) console.log('line ' + i);",
      "console.error('\\x1b[31mAddress already in use (127.0.0.1:8787).\\x1b[0m');",
      "process.exit(1);",
    ].join("\n");
    const proc = startProcess("exits", process.execPath, ["-e", script], { cwd: dir, logFile: join(dir, "exits.log") });
    const error = await waitUntil("the server", async () => false, { timeoutMs: 20_000, intervalMs: 50, process: proc })
      .then(() => null)
      .catch((e: Error) => e);
    await proc.exited;
    expect(error?.message).toMatch(/^the server: the process exited; see .*exits\.log; it printed:\n/);
    expect(error?.message).toContain("line 30\nAddress already in use (127.0.0.1:8787).");
    expect(error?.message).not.toContain("line 10\n"); // the tail only
    expect(error?.message).not.toContain("\x1b[");
  });

  it("says only that it is not ready when the process lives on past the deadline", async () => {
    const proc = startProcess("lives", process.execPath, ["-e", "setTimeout(() => {}, 60000)"], {
      cwd: dir,
      logFile: join(dir, "lives.log"),
    });
    try {
      await expect(
        waitUntil("the server", async () => false, { timeoutMs: 300, intervalMs: 50, process: proc }),
      ).rejects.toThrow(/^the server: not ready after 0 s; see .*lives\.log$/);
    } finally {
      await proc.stop();
    }
  });
});
