/**
 * A wedged engine: a container start that never finishes. Seen here with Debian's docker.io
 * 20.10.24 under many short containers started and exiting at once: a deadlock in its libnetwork
 * (docs/performance.md, sixteenth session) left `runc create` waiting on the `libnetwork-setkey`
 * hook for good, while `docker ps` and `_ping` still answered. Such an engine starts nothing more
 * until it is restarted, and everything on it (tests, the local platform, a load run) waits.
 *
 * Its sign, read from /proc without asking the engine: a `runc … create` of the engine (its command
 * line names the engine's exec root) older than a minute. A healthy create lasts milliseconds.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

export interface HungStart {
  pid: number;
  /** The container being created (runc's last argument). */
  containerId: string;
  ageS: number;
}

/** Linux's USER_HZ, the unit of /proc/<pid>/stat's start time, is 100 on every architecture we run. */
const TICKS_PER_S = 100;

/** `runc create` processes of the engine with this exec root that have run for `minAgeS` or longer. */
export function hungStarts(execRoot: string, opts: { minAgeS?: number; procRoot?: string } = {}): HungStart[] {
  const proc = opts.procRoot ?? "/proc";
  const minAgeS = opts.minAgeS ?? 60;
  let uptimeS: number;
  let pids: string[];
  try {
    uptimeS = Number.parseFloat(readFileSync(join(proc, "uptime"), "utf8"));
    pids = readdirSync(proc).filter((p) => /^\d+$/.test(p));
  } catch {
    return [];
  }
  const out: HungStart[] = [];
  for (const pid of pids) {
    try {
      const argv = readFileSync(join(proc, pid, "cmdline"), "utf8")
        .split("\0")
        .filter(Boolean);
      if (!argv[0]?.endsWith("runc") || !argv.includes("create")) continue;
      if (!argv.some((a) => a.startsWith(`${execRoot}/`))) continue;
      const stat = readFileSync(join(proc, pid, "stat"), "utf8");
      // Fields after the command name (which may hold spaces) start at field 3; start time is field 22.
      const startTicks = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]);
      const ageS = uptimeS - startTicks / TICKS_PER_S;
      if (Number.isFinite(ageS) && ageS >= minAgeS) {
        out.push({ pid: Number(pid), containerId: argv[argv.length - 1] ?? "", ageS: Math.round(ageS) });
      }
    } catch {
      // The process ended while we looked.
    }
  }
  return out.sort((a, b) => b.ageS - a.ageS);
}
