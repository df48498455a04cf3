/** The host's CPU, memory and disk, as the node inventory and heartbeats report them. */
import { statfs } from "node:fs/promises";
import { availableParallelism, hostname, totalmem } from "node:os";

export interface HostFacts {
  hostname: string;
  cpuMilli: number;
  memoryMib: number;
}

export function discoverHost(): HostFacts {
  return {
    hostname: hostname(),
    cpuMilli: availableParallelism() * 1000,
    memoryMib: Math.floor(totalmem() / (1024 * 1024)),
  };
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
