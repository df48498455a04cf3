/** The host's CPU, memory and disk, as the node inventory and heartbeats report them. */
import { statfs } from "node:fs/promises";
import { availableParallelism, hostname, type NetworkInterfaceInfo, networkInterfaces, totalmem } from "node:os";

export interface HostFacts {
  hostname: string;
  cpuMilli: number;
  memoryMib: number;
  /** Where peers reach this node (multi-node jobs' rank 0); none when the host has no such address. */
  address?: string;
}

export function discoverHost(): HostFacts {
  const address = peerAddress(networkInterfaces());
  return {
    hostname: hostname(),
    cpuMilli: availableParallelism() * 1000,
    memoryMib: Math.floor(totalmem() / (1024 * 1024)),
    ...(address ? { address } : {}),
  };
}

/**
 * The first IPv4 address of a non-loopback interface, skipping Docker's own bridges (docker0,
 * br-…, veth…: only this host reaches them); interfaces in name order, so the choice is stable.
 * A node with several networks sets --address to the one its peers share.
 */
export function peerAddress(interfaces: NodeJS.Dict<NetworkInterfaceInfo[]>): string | undefined {
  const names = Object.keys(interfaces)
    .filter((name) => !/^(docker\d*|br-|veth|lo$)/.test(name))
    .sort();
  for (const name of names) {
    const found = interfaces[name]?.find((a) => a.family === "IPv4" && !a.internal);
    if (found) return found.address;
  }
  return undefined;
}

/** Free bytes for unprivileged use on the file system holding `path`; undefined if it cannot be read. */
export async function diskFreeBytes(path: string): Promise<number | undefined> {
  try {
    const s = await statfs(path);
    return s.bavail * s.bsize;
  } catch {
    return undefined;
  }
}

/** A file system's size and what unprivileged writers may still use (statfs `blocks` and `bavail`). */
export interface DiskUsage {
  totalBytes: number;
  availableBytes: number;
}

/** Reads the usage of the file system holding a path; undefined when the path cannot be read. */
export type DiskUsageReader = (path: string) => Promise<DiskUsage | undefined>;

export const diskUsage: DiskUsageReader = async (path) => {
  try {
    const s = await statfs(path);
    return s.blocks > 0 ? { totalBytes: s.blocks * s.bsize, availableBytes: s.bavail * s.bsize } : undefined;
  } catch {
    return undefined;
  }
};

/** Percent in use as the kubelet counts it: everything not available (root's reserve included). */
export function usedPercent(u: DiskUsage): number {
  return u.totalBytes > 0 ? (100 * (u.totalBytes - u.availableBytes)) / u.totalBytes : 0;
}
