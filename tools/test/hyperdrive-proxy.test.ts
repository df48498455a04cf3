/**
 * The local Hyperdrive stand-in (miniflare's proxy, which runs inside `wrangler dev` and vitest's own
 * process) with Scalar's patch (patches/miniflare+*.patch, cloudflare/workers-sdk#15768): a socket
 * error on either side closes the connection instead of killing the process. Without the patch, the
 * refused database connection below is an unhandled 'error' event and this test's process dies.
 */

import type { AddressInfo } from "node:net";
import { createServer, type Server } from "node:net";
import { Miniflare } from "miniflare";
import { afterAll, describe, expect, it } from "vitest";

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

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((done) => server.close(() => done()));
  return port;
}

const started: Miniflare[] = [];
const servers: Server[] = [];
afterAll(async () => {
  await Promise.all(started.map((mf) => mf.dispose()));
  for (const s of servers) s.close();
});

async function workerTo(port: number): Promise<Miniflare> {
  const mf = new Miniflare({
    modules: true,
    script: WORKER,
    compatibilityDate: "2025-01-01",
    hyperdrives: { DB: `postgres://user:pw@127.0.0.1:${port}/db` },
  });
  started.push(mf);
  await mf.ready;
  return mf;
}

describe("the local Hyperdrive proxy", () => {
  it("passes bytes both ways to the database it points at", async () => {
    const echo = createServer((socket) => socket.pipe(socket));
    servers.push(echo);
    await new Promise<void>((done) => echo.listen(0, "127.0.0.1", done));
    const mf = await workerTo((echo.address() as AddressInfo).port);
    expect(await (await mf.dispatchFetch("http://x/")).text()).toBe("hello");
  });

  it("survives a database that refuses the connection: the Worker sees its socket close", async () => {
    const mf = await workerTo(await freePort());
    const answer = await (await mf.dispatchFetch("http://x/")).text();
    expect(answer === "closed" || answer.startsWith("error:")).toBe(true);
    // The process is still here to ask again.
    expect((await mf.dispatchFetch("http://x/")).status).toBe(200);
  });
});
