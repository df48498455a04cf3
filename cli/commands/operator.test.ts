import { describe, expect, it } from "vitest";
import type { OperatorNode } from "../api/client";
import { nodesTable } from "./operator";

const NOW = Date.parse("2026-11-29T05:00:00Z");

function node(live: Partial<NonNullable<OperatorNode["live"]>> | null): OperatorNode {
  return {
    id: "cap-1",
    region: "us-west-1",
    zone: "hayesvalley",
    gpu_model: "H100",
    gpu_count: 8,
    cpu_milli: 208000,
    memory_mib: 1900000,
    state: "ready",
    hostname: "vm",
    block_id: null,
    has_token: true,
    registered_at: "2026-11-29T04:58:00Z",
    created_at: "2026-11-29T04:57:00Z",
    live:
      live === null
        ? null
        : {
            state: "ready",
            free_gpus: [],
            held_gpus: [],
            unhealthy_gpus: [],
            engine_stuck: null,
            cordon: null,
            placements: [],
            last_heartbeat_at: "2026-11-29T04:59:58Z",
            ...live,
          },
  };
}

/** The FREE/GPUS cell of the table's one row. */
function gpusCell(n: OperatorNode): string {
  const [header, row] = nodesTable([n], NOW).split("\n");
  const at = header!.indexOf("FREE/GPUS");
  return row!.slice(at, header!.indexOf("STATE")).trim();
}

describe("nodes ls", () => {
  it("counts the GPUs held as Fast headroom beside the free ones, so an idle node's missing GPUs are explained", () => {
    expect(gpusCell(node({ free_gpus: [0], held_gpus: [1, 2, 3, 4, 5, 6, 7] }))).toBe("1/8 (7 held)");
    expect(gpusCell(node({ free_gpus: [0, 1, 2, 3, 4, 5, 6, 7] }))).toBe("8/8");
    expect(gpusCell(node({ free_gpus: [0], held_gpus: [1, 2], unhealthy_gpus: [3] }))).toBe(
      "1/8 (2 held, 1 unhealthy)",
    );
    expect(gpusCell(node(null))).toBe("-/8");
  });

  it("reads an API from before held_gpus", () => {
    const old = node({ free_gpus: [0, 1], unhealthy_gpus: [7] });
    delete (old.live as Partial<NonNullable<OperatorNode["live"]>>).held_gpus;
    expect(gpusCell(old)).toBe("2/8 (1 unhealthy)");
  });
});
