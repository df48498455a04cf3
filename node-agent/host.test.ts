import type { NetworkInterfaceInfo } from "node:os";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { discoverHost, diskUsage, peerAddress, usedPercent } from "./host";

const v4 = (address: string, internal = false): NetworkInterfaceInfo => ({
  address,
  netmask: "255.255.255.0",
  family: "IPv4",
  mac: "02:00:00:00:00:01",
  internal,
  cidr: `${address}/24`,
});
const v6 = (address: string): NetworkInterfaceInfo => ({
  address,
  netmask: "ffff:ffff:ffff:ffff::",
  family: "IPv6",
  mac: "02:00:00:00:00:01",
  internal: false,
  cidr: `${address}/64`,
  scopeid: 0,
});

describe("the address peers reach a node at", () => {
  it("is the first non-loopback IPv4 address, skipping Docker's bridges, by interface name", () => {
    expect(
      peerAddress({
        lo: [v4("127.0.0.1", true)],
        docker0: [v4("172.17.0.1")],
        "br-1a2b3c": [v4("172.18.0.1")],
        vethabc: [v6("fe80::1")],
        ib0: [v4("10.10.0.7")],
        eth0: [v6("fe80::2"), v4("10.0.3.7")],
      }),
    ).toBe("10.0.3.7");
  });

  it("is none on a host with only loopback, bridges or IPv6", () => {
    expect(peerAddress({ lo: [v4("127.0.0.1", true)], docker0: [v4("172.17.0.1")], eth0: [v6("fd00::7")] })).toBe(
      undefined,
    );
    expect(peerAddress({})).toBe(undefined);
  });

  it("is read from this machine's interfaces", () => {
    expect(discoverHost().address).toBe(peerAddress(networkInterfaces()));
  });
});

describe("disk usage for image GC", () => {
  it("reads a file system's size and what is available, and counts used as the kubelet does", async () => {
    const u = await diskUsage(tmpdir());
    expect(u!.totalBytes).toBeGreaterThan(0);
    expect(u!.availableBytes).toBeLessThanOrEqual(u!.totalBytes);
    expect(await diskUsage(join(tmpdir(), "no-such-folder-for-scalar"))).toBeUndefined();
    expect(usedPercent({ totalBytes: 200, availableBytes: 30 })).toBe(85);
    expect(usedPercent({ totalBytes: 0, availableBytes: 0 })).toBe(0);
  });
});
