import { describe, expect, it } from "vitest";
import { decodeUserData, encodeUserData, parseNodeBootScript, renderNodeBootScript } from "./node-boot";

const config = {
  api_url: "http://127.0.0.1:8787",
  node_token: "sn_0123456789abcdef0123456789abcdef",
  node_id: "node-abc",
  region: "us-west-1",
  zone: "hayesvalley",
  gpu_model: "H100" as const,
};

describe("node boot user data", () => {
  it("round-trips through the base64 cloud-init user data", () => {
    const script = renderNodeBootScript(config);
    expect(script.startsWith("#!/bin/sh\n# scalar-node-boot v1\n")).toBe(true);
    expect(parseNodeBootScript(decodeUserData(encodeUserData(script)))).toEqual(config);
  });

  it("carries the agent's ingress when the deployment gives nodes one", () => {
    const withIngress = { ...config, ingress_port: 8090, ingress_url: "https://node-abc.nodes.example.com" };
    const script = renderNodeBootScript(withIngress);
    expect(script).toContain("export SCALAR_INGRESS_PORT='8090'\n");
    expect(script).toContain("export SCALAR_INGRESS_URL='https://node-abc.nodes.example.com'\n");
    expect(parseNodeBootScript(script)).toEqual(withIngress);
    expect(renderNodeBootScript(config)).not.toContain("INGRESS");
    expect(() => renderNodeBootScript({ ...config, ingress_url: "ftp://x" })).toThrow(/http/);
    expect(() => renderNodeBootScript({ ...config, ingress_port: 70_000 })).toThrow();
  });

  it("ignores user data that is not ours, or incomplete", () => {
    expect(parseNodeBootScript("#cloud-config\nruncmd: []\n")).toBeNull();
    expect(parseNodeBootScript("# scalar-node-boot v1\nexport SCALAR_API_URL='http://x'\n")).toBeNull();
  });

  it("refuses values that would break the shell quoting", () => {
    expect(() => renderNodeBootScript({ ...config, zone: "a'b" })).toThrow(/quotes/);
  });
});
