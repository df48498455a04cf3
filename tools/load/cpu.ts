/**
 * Where the machine's CPU went during the load, per job: the whole machine's busy time from
 * `/proc/stat`, and each process's own (`/proc/<pid>/stat`, children it reaped included) sorted into
 * the platform's parts. The load is a closed loop (each user submits again once its job runs), so
 * on a saturated machine a user's cycle is about users × (CPU per job) ÷ cores: this says which
 * part's CPU a job costs. Linux only; elsewhere `cpuSnapshot` returns null.
 */
import { readdirSync, readFileSync } from "node:fs";

export const CPU_GROUPS = ["engine", "workerd", "postgres", "wrangler", "agents", "generator"] as const;
export type CpuGroup = (typeof CPU_GROUPS)[number];

export interface ProcessCpu {
  pid: number;
  /** utime + stime + cutime + cstime, in clock ticks. */
  ticks: number;
  group: CpuGroup | null;
}

export interface CpuSnapshot {
  /** The machine's busy and total ticks, all cores (from the first line of /proc/stat). */
  busy: number;
  all: number;
  processes: Map<number, ProcessCpu>;
}

export interface CpuReport {
  window_s: number;
  /** Busy share of all cores during the window (1 = every core busy all the time). */
  busy_share: number;
  /** Core-milliseconds per running job: the machine's total, and each part's. */
  core_ms_per_job: Record<"total" | CpuGroup | "other", number>;
}

/** The part of the platform a process belongs to, from its name and command line. */
export function cpuGroup(comm: string, cmdline: string, ownPid: boolean): CpuGroup | null {
  if (ownPid) return "generator";
  if (comm === "workerd") return "workerd";
  if (comm === "postgres") return "postgres";
  if (/^(dockerd|containerd|containerd-shim.*|runc|docker-init|docker-proxy)$/.test(comm)) return "engine";
  if (cmdline.includes("scalar-agent")) return "agents";
  if (cmdline.includes("wrangler")) return "wrangler";
  return null;
}

/** Clock ticks and fields of one `/proc/<pid>/stat` line (the name may hold spaces and parentheses). */
export function parseStat(line: string): { comm: string; ticks: number } | null {
  const open = line.indexOf("(");
  const close = line.lastIndexOf(")");
  if (open < 0 || close < open) return null;
  const fields = line.slice(close + 2).split(" ");
  // After the name: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
  const ticks = [11, 12, 13, 14].reduce((sum, i) => sum + Number(fields[i] ?? 0), 0);
  return Number.isFinite(ticks) ? { comm: line.slice(open + 1, close), ticks } : null;
}

/** Busy and total ticks from the `cpu` line of /proc/stat (busy: user, nice, system, irq, softirq). */
export function parseProcStat(text: string): { busy: number; all: number } | null {
  const first = text.split("\n")[0] ?? "";
  if (!first.startsWith("cpu ")) return null;
  const v = first.trim().split(/\s+/).slice(1).map(Number);
  const at = (i: number) => v[i] ?? 0;
  return { busy: at(0) + at(1) + at(2) + at(5) + at(6), all: v.reduce((a, b) => a + b, 0) };
}

export function cpuSnapshot(): CpuSnapshot | null {
  let machine: { busy: number; all: number } | null;
  try {
    machine = parseProcStat(readFileSync("/proc/stat", "utf8"));
  } catch {
    return null;
  }
  if (!machine) return null;
  const processes = new Map<number, ProcessCpu>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    try {
      const stat = parseStat(readFileSync(`/proc/${entry}/stat`, "utf8"));
      if (!stat) continue;
      const cmdline = stat.comm === "node" || stat.comm === "MainThread" ? readCmdline(entry) : "";
      processes.set(pid, { pid, ticks: stat.ticks, group: cpuGroup(stat.comm, cmdline, pid === process.pid) });
    } catch {
      // Gone between the listing and the read.
    }
  }
  return { ...machine, processes };
}

function readCmdline(pid: string): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
  } catch {
    return "";
  }
}

/**
 * Each part's share between two snapshots, per job. A process that ended in between is missed
 * unless its parent reaped it (then its time is in the parent's); what no part claims, the
 * container shims reaped by PID 1 and the kernel's threads among it, is `other`.
 */
export function cpuReport(
  before: CpuSnapshot,
  after: CpuSnapshot,
  seconds: number,
  jobs: number,
  ticksPerSecond = 100,
): CpuReport {
  const perJob = (ticks: number) => (jobs > 0 ? Math.round((ticks * 1000) / ticksPerSecond / jobs) : 0);
  const byGroup = Object.fromEntries(CPU_GROUPS.map((g) => [g, 0])) as Record<CpuGroup, number>;
  for (const [pid, now] of after.processes) {
    if (!now.group) continue;
    const then = before.processes.get(pid);
    byGroup[now.group] += Math.max(0, now.ticks - (then?.ticks ?? 0));
  }
  const busy = after.busy - before.busy;
  const named = CPU_GROUPS.reduce((sum, g) => sum + byGroup[g], 0);
  const all = after.all - before.all;
  return {
    window_s: Math.round(seconds * 10) / 10,
    busy_share: all > 0 ? Math.round((busy / all) * 100) / 100 : 0,
    core_ms_per_job: {
      total: perJob(busy),
      ...(Object.fromEntries(CPU_GROUPS.map((g) => [g, perJob(byGroup[g])])) as Record<CpuGroup, number>),
      other: perJob(Math.max(0, busy - named)),
    },
  };
}
