import { describe, expect, it } from "vitest";
import { perNodeHourLimit } from "../../core/autoscaler";
import { cloudInit, nodeSaleGroup, saleGroupKey, tokenOfCloudInit } from "./market";

const H = 3_600_000;

describe("capacity market helpers", () => {
  it("puts the node's token and settings in the shared node-boot user data, and reads the token back", () => {
    const token = `snt_${"a".repeat(43)}`;
    const data = cloudInit({
      api_url: "https://api.scalar.example",
      node_token: token,
      node_id: "cap-1",
      region: "us-west-1",
      zone: "hayesvalley",
      gpu_model: "H100",
    });
    const script = atob(data);
    expect(script).toContain("# scalar-node-boot v1");
    expect(script).toContain("export SCALAR_API_URL='https://api.scalar.example'");
    expect(script).toContain("export SCALAR_ZONE='hayesvalley'");
    expect(script).toContain("systemctl enable --now scalar-agent");
    expect(tokenOfCloudInit(data)).toBe(token);
    expect(tokenOfCloudInit(btoa("#cloud-config\n"))).toBeNull();
  });

  it("keys nodes by zone, start and end: the only way to tell their contracts apart", () => {
    const node = { zone: "hayesvalley", start_at: 1_000, end_at: 4_600 } as Parameters<typeof nodeSaleGroup>[0];
    expect(nodeSaleGroup(node)).toBe(saleGroupKey("hayesvalley", 1_000_000, 4_600_000));
  });

  it("turns a block's limit into a node-hour limit that keeps every node within it", () => {
    // 3 nodes for 2 h within $120: $20 per node-hour.
    expect(perNodeHourLimit(12_000, 3, 0, 2 * H)).toBe(2_000);
    // Rounded down, never over the block's limit.
    expect(perNodeHourLimit(12_001, 3, 0, 2 * H) * 3 * 2).toBeLessThanOrEqual(12_001);
    // $32.00 a node-hour (the $4.00/GPU-h Fast limit) for 3 nodes over 66 minutes is 10,560¢, which
    // divides back to 3199.9999999999995: still 3,200, so an ask at the limit fills.
    expect(perNodeHourLimit(10_560, 3, 0, 66 * 60_000)).toBe(3_200);
  });
});
