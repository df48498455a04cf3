import { describe, expect, it } from "vitest";
import { replicaLines } from "./endpoints";

describe("endpoints get: a replica", () => {
  const replica = {
    replica_id: "e1#0",
    status: "running",
    node_id: "n1",
    waiting_reason: null,
    restarts: 0,
    last_exit: null,
    ready: true,
    metrics: null,
  };
  const now = Date.parse("2026-11-26T12:00:07Z");

  it("shows a running replica's resource use on a second line, once a heartbeat has measured it", () => {
    expect(replicaLines(replica, now)).toBe("replica e1#0  running, ready on n1\n");
    const metrics = {
      at: "2026-11-26T12:00:05.000Z",
      cpu_pct: 12,
      memory_bytes: 2 * 1024 ** 3,
      memory_limit_bytes: 16 * 1024 ** 3,
      pids: 4,
      gpus: [{ index: 5, utilisation_pct: 31, memory_used_mib: 20_480, memory_total_mib: 81_559 }],
    };
    expect(replicaLines({ ...replica, metrics }, now)).toBe(
      "replica e1#0  running, ready on n1\n  metrics  GPU 5: 31 % · 20/79.6 GiB   CPU 12 %   mem 2/16 GiB   (2s ago)\n",
    );
  });
});
