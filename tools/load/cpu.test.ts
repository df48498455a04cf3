import { describe, expect, it } from "vitest";
import { type CpuSnapshot, cpuGroup, cpuReport, cpuSnapshot, parseProcStat, parseStat } from "./cpu";

// A line as Linux writes it (a name with a space and a parenthesis), fields after the name:
// state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime …
const STAT = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 30 12 5 3 20 0 1 0 100 0 0";

describe("parseStat", () => {
  it("reads the name and utime + stime + cutime + cstime", () => {
    expect(parseStat(STAT)).toEqual({ comm: "my (odd) name", ticks: 30 + 12 + 5 + 3 });
  });
  it("refuses a line without a name", () => {
    expect(parseStat("garbage")).toBeNull();
  });
});

describe("parseProcStat", () => {
  it("counts user, nice, system, irq and softirq as busy; everything as all", () => {
    // user nice system idle iowait irq softirq steal
    expect(parseProcStat("cpu  100 5 50 800 20 3 2 10\ncpu0 1 2 3\n")).toEqual({
      busy: 100 + 5 + 50 + 3 + 2,
      all: 990,
    });
    expect(parseProcStat("intr 1 2 3")).toBeNull();
  });
});

describe("cpuGroup", () => {
  it("sorts the platform's processes into its parts", () => {
    expect(cpuGroup("workerd", "", false)).toBe("workerd");
    expect(cpuGroup("postgres", "", false)).toBe("postgres");
    for (const comm of ["dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2", "runc", "docker-init"])
      expect(cpuGroup(comm, "", false)).toBe("engine");
    expect(cpuGroup("node", "/usr/bin/node /x/node-agent/bin/scalar-agent.mjs --api-url u", false)).toBe("agents");
    expect(cpuGroup("node", "/usr/bin/node /x/node_modules/wrangler/wrangler-dist/cli.js dev", false)).toBe("wrangler");
    expect(cpuGroup("node", "anything", true)).toBe("generator");
    expect(cpuGroup("bash", "bash", false)).toBeNull();
  });
});

function snapshot(busy: number, all: number, processes: [number, number, ReturnType<typeof cpuGroup>][]): CpuSnapshot {
  return { busy, all, processes: new Map(processes.map(([pid, ticks, group]) => [pid, { pid, ticks, group }])) };
}

describe("cpuReport", () => {
  it("splits the machine's busy time per job among the parts, the rest as other", () => {
    const before = snapshot(1_000, 2_000, [
      [1, 500, null],
      [10, 100, "workerd"],
      [11, 40, "postgres"],
      [12, 7, "engine"],
    ]);
    const after = snapshot(3_000, 4_200, [
      [1, 900, null],
      [10, 700, "workerd"],
      [11, 340, "postgres"],
      [12, 407, "engine"],
      // Started during the window: all of its time counts.
      [13, 200, "engine"],
      [14, 50, "generator"],
    ]);
    // 2,000 busy ticks = 20 core-seconds over 10 jobs: 2,000 core-ms each.
    const report = cpuReport(before, after, 11.04, 10);
    expect(report).toEqual({
      window_s: 11,
      busy_share: 0.91,
      core_ms_per_job: {
        total: 2_000,
        engine: 600,
        workerd: 600,
        postgres: 300,
        wrangler: 0,
        agents: 0,
        generator: 50,
        other: 450,
      },
    });
  });

  it("gives zeros, not infinities, when no job ran", () => {
    const s = snapshot(1, 2, []);
    expect(cpuReport(s, s, 1, 0).core_ms_per_job.total).toBe(0);
  });
});

describe("cpuSnapshot", () => {
  it.runIf(process.platform === "linux")("reads this machine, this process among the generator's", () => {
    const s = cpuSnapshot()!;
    expect(s.all).toBeGreaterThan(s.busy);
    expect(s.processes.get(process.pid)?.group).toBe("generator");
  });
});
