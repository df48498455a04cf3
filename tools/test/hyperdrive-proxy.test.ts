/**
 * The local Hyperdrive stand-in (miniflare's, inside `wrangler dev` and vitest's own process) with
 * Scalar's patch (patches/miniflare+*.patch):
 * - without TLS to negotiate (`sslmode=disable`, the default, as the local stack uses it) workerd
 *   connects to the database itself: miniflare's proxy would be a plain pipe through the Node
 *   process, one more hop and event loop on every round trip (docs/performance.md, fifth session);
 * - on the proxy's path (`sslmode=prefer` / `require`) a socket error on either side closes the
 *   connection instead of escaping as an unhandled 'error' event that kills the process
 *   (cloudflare/workers-sdk#15768).
 * Without the patch the first test fails, and the refused connection of the third kills this
 * test's process.
 */

import { existsSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { createServer, type Server } from "node:net";
import { Miniflare } from "miniflare";
import { afterAll, describe, expect, it } from "vitest";
import { refusedPort } from "../db/embedded";

const WORKER = `
import { connect } from "cloudflare:sockets";
export default {
  async fetch(request, env) {
    const socket = connect({ hostname: env.DB.host, port: env.DB.port });
    const writer = socket.writable.getWriter();
    try {
      await writer.write(new TextEncoder().encode("hello"));
      const { value, done } = await socket.readable.getReader().read();
      return new Response(done ? "closed" : new TextDecoder().decode(value));
    } catch (error) {
      return new Response("error: " + error.message);
    }
  },
};`;

const started: Miniflare[] = [];
const servers: Server[] = [];
afterAll(async () => {
  await Promise.all(started.map((mf) => mf.dispose()));
  for (const s of servers) s.close();
});

async function workerTo(port: number, query = ""): Promise<Miniflare> {
  const mf = new Miniflare({
    modules: true,
    script: WORKER,
    compatibilityDate: "2025-01-01",
    hyperdrives: { DB: `postgres://user:pw@127.0.0.1:${port}/db${query}` },
  });
  started.push(mf);
  await mf.ready;
  return mf;
}

/**
 * A stand-in database: refuses TLS (`N` to Postgres's SSLRequest, as Scalar's local pool does) and
 * echoes everything else. Records the process at the other end of each connection (Linux; null
 * elsewhere), looked up while the connection is open.
 */
async function echoDatabase(): Promise<{ port: number; clients: (number | null)[] }> {
  const clients: (number | null)[] = [];
  const server = createServer((socket) => {
    clients.push(process.platform === "linux" ? ownerOfLocalPort(socket.remotePort ?? 0) : null);
    socket.on("error", () => {});
    socket.on("data", (chunk) => socket.write(chunk.equals(SSL_REQUEST) ? "N" : chunk));
  });
  servers.push(server);
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  return { port: (server.address() as AddressInfo).port, clients };
}
const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 4, 210, 22, 47]);

/** The pid holding the local end of a TCP connection from 127.0.0.1:`port` (Linux /proc). */
function ownerOfLocalPort(port: number): number | null {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  const inodes = new Set<string>();
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    if (!existsSync(table)) continue;
    for (const line of readFileSync(table, "utf8").split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols[1]?.endsWith(hex) && cols[9]) inodes.add(cols[9]);
    }
  }
  for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    let fds: string[] = [];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const target = readlinkSync(`/proc/${pid}/fd/${fd}`);
        const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
        if (inode && inodes.has(inode)) return Number(pid);
      } catch {
        // gone meanwhile
      }
    }
  }
  return null;
}

describe("the local Hyperdrive stand-in", () => {
  it.runIf(process.platform === "linux")(
    "without TLS (sslmode=disable, the default) workerd connects to the database itself, not through this process",
    async () => {
      const db = await echoDatabase();
      const mf = await workerTo(db.port);
      expect(await (await mf.dispatchFetch("http://x/")).text()).toBe("hello");
      // One connection, whose other end is workerd (a child of this process), not a proxy in this one.
      expect(db.clients).toHaveLength(1);
      expect(db.clients[0]).not.toBeNull();
      expect(db.clients[0]).not.toBe(process.pid);
    },
  );

  it("with sslmode=prefer goes through miniflare's proxy in this process, and passes bytes both ways", async () => {
    const db = await echoDatabase();
    const mf = await workerTo(db.port, "?sslmode=prefer");
    expect(await (await mf.dispatchFetch("http://x/")).text()).toBe("hello");
    // The proxy's SSLRequest (refused), then its plain connection, which carries the Worker's bytes.
    expect(db.clients).toHaveLength(2);
    if (process.platform === "linux") expect(db.clients).toEqual([process.pid, process.pid]);
  });

  it("survives a database that refuses the connection: the Worker sees its socket close", async () => {
    for (const query of ["", "?sslmode=prefer"]) {
      const mf = await workerTo(await refusedPort(), query);
      const answer = await (await mf.dispatchFetch("http://x/")).text();
      expect(answer === "closed" || answer.startsWith("error:")).toBe(true);
      // The process is still here to ask again.
      expect((await mf.dispatchFetch("http://x/")).status).toBe(200);
    }
  });
});
