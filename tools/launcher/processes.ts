/**
 * Child processes of the local stack: each in its own process group (wrangler dev runs workerd
 * children that must not outlive it), output to a log file, stopped with SIGTERM then SIGKILL.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream, mkdirSync, readFileSync } from "node:fs";
import { dirname } from "node:path";

export interface ManagedProcess {
  name: string;
  child: ChildProcess;
  logFile: string;
  exited: Promise<number | null>;
  stop(timeoutMs?: number): Promise<void>;
}

export function startProcess(
  name: string,
  command: string,
  args: string[],
  opts: { cwd: string; env?: NodeJS.ProcessEnv; logFile: string; onLine?: (line: string) => void },
): ManagedProcess {
  mkdirSync(dirname(opts.logFile), { recursive: true });
  const out = createWriteStream(opts.logFile, { flags: "a" });
  const child = spawn(command, args, {
    cwd: opts.cwd,
    env: { ...process.env, ...opts.env },
    detached: true, // its own process group: we stop the whole group
    stdio: ["ignore", "pipe", "pipe"],
  });
  let partial = "";
  const onData = (chunk: Buffer) => {
    out.write(chunk);
    if (!opts.onLine) return;
    partial += chunk.toString("utf8");
    const lines = partial.split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) opts.onLine(line);
  };
  child.stdout?.on("data", onData);
  child.stderr?.on("data", onData);
  const exited = new Promise<number | null>((done) => child.once("exit", (code) => done(code)));
  exited.then(() => out.end());
  const signalGroup = (signal: NodeJS.Signals) => {
    if (child.pid === undefined) return;
    try {
      process.kill(-child.pid, signal);
    } catch {
      // already gone
    }
  };
  return {
    name,
    child,
    logFile: opts.logFile,
    exited,
    async stop(timeoutMs = 5_000) {
      if (child.exitCode !== null || child.signalCode !== null) {
        signalGroup("SIGKILL"); // the leader is gone; make sure its group is too
        return;
      }
      signalGroup("SIGTERM");
      const timer = setTimeout(() => signalGroup("SIGKILL"), timeoutMs);
      await exited;
      clearTimeout(timer);
      signalGroup("SIGKILL");
    },
  };
}

/** Poll `probe` until it returns true, the process dies, or the deadline passes. */
export async function waitUntil(
  what: string,
  probe: () => Promise<boolean>,
  opts: { timeoutMs: number; intervalMs?: number; process?: ManagedProcess },
): Promise<void> {
  const deadline = Date.now() + opts.timeoutMs;
  let dead = false;
  opts.process?.exited.then(() => {
    dead = true;
  });
  while (Date.now() < deadline) {
    if (dead) {
      const log = opts.process ? logTail(opts.process.logFile, 20) : "";
      throw new Error(`${what}: the process exited; see ${opts.process?.logFile}${log ? `; it printed:\n${log}` : ""}`);
    }
    if (await probe().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 200));
  }
  throw new Error(
    `${what}: not ready after ${Math.round(opts.timeoutMs / 1000)} s${opts.process ? `; see ${opts.process.logFile}` : ""}`,
  );
}

/** The last `lines` lines of a log file, without terminal colours; "" when there is none. */
export function logTail(file: string, lines: number): string {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return "";
  }
  // biome-ignore lint/suspicious/noControlCharactersInRegex: terminal colour codes
  const plain = text.replace(/\x1b\[[0-9;]*m/g, "").trimEnd();
  return plain.split("\n").slice(-lines).join("\n");
}

/** Whether a process of that id exists (signal 0 checks without signalling). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
