/**
 * The local stand-in for Hyperdrive's pooling. In production the Worker reaches Postgres through
 * Hyperdrive, which keeps warm connections to the database; wrangler's local Hyperdrive stand-in is a
 * plain TCP pipe, so every request of ours opened a new Postgres backend: a fork, then catalog caches,
 * foreign-key trigger plans and PL/pgSQL functions rebuilt from cold (measured: the job insert took
 * 5–8 ms on a new backend against 0.8 ms on a warm one, and its planning up to 36 ms).
 *
 * This is a session pool in front of the database, on loopback, speaking just enough of the
 * PostgreSQL wire protocol (v3): a client's startup is answered from a pooled server connection of
 * the same user and database (its parameters and key replayed), then bytes flow both ways untouched
 * until the client leaves; the server connection is then reset (`DISCARD ALL`) and kept, or closed
 * if the client left in the middle of something. A server that asks for a password is not pooled:
 * that client gets a plain pipe to its own connection. TLS is refused (`N`): loopback only.
 */
import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";

const SSL_REQUEST = 80877103;
const GSS_REQUEST = 80877104;
const CANCEL_REQUEST = 80877102;

export interface PgPool {
  /** The database URL with the pool's host and port. */
  url: string;
  port: number;
  stats(): { clients: number; serverConnections: number; idle: number; reused: number; opened: number };
  close(): Promise<void>;
}

/** Splits a byte stream into protocol messages (type byte + int32 length); `typed` false for startup-phase frames. */
class Frames {
  private buffer: Buffer = Buffer.alloc(0);
  constructor(private readonly typed: boolean) {}

  push(chunk: Buffer): Buffer[] {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    const out: Buffer[] = [];
    const head = this.typed ? 1 : 0;
    while (this.buffer.length >= head + 4) {
      const length = this.buffer.readInt32BE(head);
      if (length < 4) throw new Error(`malformed message length ${length}`);
      const total = head + length;
      if (this.buffer.length < total) break;
      out.push(this.buffer.subarray(0, total));
      this.buffer = this.buffer.subarray(total);
    }
    return out;
  }

  /** Bytes received after the last whole message. */
  rest(): Buffer {
    const rest = this.buffer;
    this.buffer = Buffer.alloc(0);
    return rest;
  }
}

interface ServerConnection {
  socket: Socket;
  key: string;
  /** ParameterStatus messages and BackendKeyData from its startup, replayed to each client. */
  greeting: Buffer[];
  /** Transaction status of the last ReadyForQuery: I, T or E. */
  status: string;
  /** Queries and syncs sent whose ReadyForQuery has not come back. */
  pending: number;
  frames: Frames;
  /** While a client uses it: the server's bytes, as they arrive. */
  onChunk: ((chunk: Buffer) => void) | null;
  /** While it is being reset: each whole message. */
  onMessage: ((message: Buffer) => void) | null;
  /** The client session using it, told when the server connection goes away. */
  onClose: (() => void) | null;
}

const message = (type: string, body: Buffer = Buffer.alloc(0)): Buffer => {
  const head = Buffer.alloc(5);
  head.write(type, 0, "latin1");
  head.writeInt32BE(4 + body.length, 1);
  return Buffer.concat([head, body]);
};
const AUTH_OK = message("R", Buffer.from([0, 0, 0, 0]));
const readyForQuery = (status: string) => message("Z", Buffer.from(status, "latin1"));
const simpleQuery = (text: string) => message("Q", Buffer.from(`${text}\0`, "utf8"));

function errorResponse(text: string): Buffer {
  const fields = Buffer.from(`SERROR\0C08006\0M${text}\0\0`, "utf8");
  return message("E", fields);
}

export async function startPgPool(opts: { target: string; port?: number; maxIdlePerKey?: number }): Promise<PgPool> {
  const target = new URL(opts.target);
  const targetHost = target.hostname;
  const targetPort = Number(target.port || 5432);
  const maxIdle = opts.maxIdlePerKey ?? 32;
  const idle = new Map<string, ServerConnection[]>();
  const all = new Set<ServerConnection>();
  const clients = new Set<Socket>();
  let reused = 0;
  let opened = 0;
  let closing = false;

  const drop = (conn: ServerConnection) => {
    const onClose = conn.onClose;
    conn.onClose = null;
    onClose?.();
    all.delete(conn);
    const list = idle.get(conn.key);
    const i = list?.indexOf(conn) ?? -1;
    if (list && i >= 0) list.splice(i, 1);
    conn.socket.destroy();
  };

  /** A new server connection, through its startup; its socket as it is if the server wants a password. */
  function openServer(
    key: string,
    startup: Buffer,
  ): Promise<ServerConnection | { authRequest: Buffer[]; socket: Socket }> {
    return new Promise((resolve, reject) => {
      const socket = tcpConnect({ host: targetHost, port: targetPort });
      socket.setNoDelay(true);
      const conn: ServerConnection = {
        socket,
        key,
        greeting: [],
        status: "I",
        pending: 0,
        frames: new Frames(true),
        onChunk: null,
        onMessage: null,
        onClose: null,
      };
      let settled = false;
      const fail = (error: Error) => {
        if (settled) return;
        settled = true;
        socket.destroy();
        reject(error);
      };
      const startupMessages: Buffer[] = [];
      const onData = (chunk: Buffer) => {
        let frames: Buffer[];
        try {
          frames = conn.frames.push(chunk);
        } catch (error) {
          return fail(error as Error);
        }
        for (const frame of frames) {
          const type = String.fromCharCode(frame[0]!);
          startupMessages.push(frame);
          if (type === "R" && frame.readInt32BE(5) !== 0) {
            // A password is asked for: not ours to pool; hand the socket over as it is.
            socket.off("data", onData);
            settled = true;
            resolve({ authRequest: [...startupMessages, conn.frames.rest()], socket });
            return;
          }
          if (type === "E") return fail(new PgStartupError(frame, startupMessages));
          if (type === "S" || type === "K") conn.greeting.push(frame);
          if (type === "Z") {
            socket.off("data", onData);
            socket.off("error", fail);
            settled = true;
            opened += 1;
            all.add(conn);
            socket.on("data", (data) => onServerData(conn, data));
            socket.on("error", () => drop(conn));
            socket.on("close", () => drop(conn));
            resolve(conn);
          }
        }
      };
      socket.on("data", onData);
      socket.on("error", fail);
      socket.once("close", () => fail(new Error("the database closed the connection during its startup")));
      socket.on("connect", () => socket.write(startup));
    });
  }

  function onServerData(conn: ServerConnection, data: Buffer) {
    let frames: Buffer[];
    try {
      frames = conn.frames.push(data);
    } catch {
      drop(conn);
      return;
    }
    // To a client, the bytes go on as they came, in one write: a write per message would reach the
    // client as many small packets, and Nagle's algorithm on a socket further along (wrangler's own
    // Hyperdrive pipe) would then hold the last ones for the delayed acknowledgement (up to 40 ms).
    conn.onChunk?.(data);
    for (const frame of frames) {
      if (frame[0] === 0x5a /* Z */) {
        conn.status = String.fromCharCode(frame[5]!);
        conn.pending = Math.max(0, conn.pending - 1);
      }
      conn.onMessage?.(frame);
    }
  }

  /** After its client left: reset and keep it, or close it if anything was left half done. */
  function release(conn: ServerConnection) {
    if (!all.has(conn)) return;
    conn.onChunk = null;
    conn.onMessage = null;
    conn.onClose = null;
    if (closing || conn.pending > 0 || conn.status !== "I") return drop(conn);
    conn.pending = 1;
    conn.onMessage = (frame) => {
      if (frame[0] === 0x45 /* E */) conn.status = "E";
      if (frame[0] !== 0x5a /* Z */) return;
      conn.onMessage = null;
      const list = idle.get(conn.key) ?? [];
      if (conn.status !== "I" || list.length >= maxIdle || closing) return drop(conn);
      list.push(conn);
      idle.set(conn.key, list);
    };
    conn.socket.write(simpleQuery("DISCARD ALL"));
  }

  async function serve(client: Socket, first: Buffer[], leftover: Buffer) {
    const startup = first[0]!;
    const code = startup.readInt32BE(4);
    if (code === CANCEL_REQUEST) {
      // Keys are the server's own (replayed at startup): pass the request on as it is.
      const socket = tcpConnect({ host: targetHost, port: targetPort }, () => socket.end(startup));
      socket.on("error", () => {});
      client.end();
      return;
    }
    const key = startup.subarray(8).toString("latin1");
    let conn: ServerConnection | undefined;
    const list = idle.get(key);
    while (list && list.length > 0 && !conn) {
      const candidate = list.pop()!;
      if (!candidate.socket.destroyed) conn = candidate;
    }
    if (conn) reused += 1;
    else {
      let openedConn: Awaited<ReturnType<typeof openServer>>;
      try {
        openedConn = await openServer(key, startup);
      } catch (error) {
        const frames = error instanceof PgStartupError ? error.messages : [errorResponse(String(error))];
        client.end(Buffer.concat(frames));
        return;
      }
      if (!("key" in openedConn)) {
        // Password authentication: a plain pipe to a connection of its own, never pooled.
        const { socket, authRequest } = openedConn;
        client.write(Buffer.concat(authRequest));
        if (leftover.length > 0) socket.write(leftover);
        client.pipe(socket);
        socket.pipe(client);
        client.on("error", () => socket.destroy());
        socket.on("error", () => client.destroy());
        client.on("close", () => socket.destroy());
        return;
      }
      conn = openedConn;
    }
    if (client.destroyed) return release(conn);
    const server = conn;
    client.write(Buffer.concat([AUTH_OK, ...server.greeting, readyForQuery("I")]));
    server.onChunk = (chunk) => client.write(chunk);
    const frames = new Frames(true);
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      client.destroy();
      release(server);
    };
    const forward = (chunk: Buffer) => {
      let list: Buffer[];
      try {
        list = frames.push(chunk);
      } catch {
        server.pending = Number.POSITIVE_INFINITY; // unknown state: do not reuse
        return finish();
      }
      const out: Buffer[] = [];
      let terminated = false;
      for (const frame of list) {
        const type = frame[0];
        if (type === 0x58 /* X: Terminate, kept from the server */) {
          terminated = true;
          break;
        }
        if (type === 0x51 /* Q */ || type === 0x53 /* S: Sync */) server.pending += 1;
        out.push(frame);
      }
      if (out.length > 0) server.socket.write(out.length === 1 ? out[0]! : Buffer.concat(out));
      if (terminated) finish();
    };
    if (leftover.length > 0) forward(leftover);
    client.on("data", forward);
    client.on("error", finish);
    client.on("close", finish);
    server.onClose = () => {
      done = true;
      client.destroy();
    };
  }

  const server: Server = createServer((client) => {
    if (closing) return client.destroy();
    clients.add(client);
    client.setNoDelay(true);
    client.on("close", () => clients.delete(client));
    const startupFrames = new Frames(false);
    const onData = (chunk: Buffer) => {
      let frames: Buffer[];
      try {
        frames = startupFrames.push(chunk);
      } catch {
        client.destroy();
        return;
      }
      if (frames.length === 0) return;
      const code = frames[0]!.readInt32BE(4);
      if (code === SSL_REQUEST || code === GSS_REQUEST) {
        client.write("N");
        // The startup message may already have followed.
        const again = frames.slice(1);
        if (again.length === 0) return;
        frames = again;
      }
      client.off("data", onData);
      client.off("error", onError);
      // Anything after the startup message is typed protocol traffic.
      const leftover = Buffer.concat([...frames.slice(1), startupFrames.rest()]);
      void serve(client, frames, leftover).catch(() => client.destroy());
    };
    const onError = () => client.destroy();
    client.on("data", onData);
    client.on("error", onError);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  const url = new URL(opts.target);
  url.hostname = "127.0.0.1";
  url.port = String(port);
  return {
    url: url.toString(),
    port,
    stats: () => ({
      clients: clients.size,
      serverConnections: all.size,
      idle: [...idle.values()].reduce((n, l) => n + l.length, 0),
      reused,
      opened,
    }),
    close: async () => {
      closing = true;
      for (const c of clients) c.destroy();
      for (const c of [...all]) drop(c);
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

class PgStartupError extends Error {
  constructor(
    frame: Buffer,
    readonly messages: Buffer[],
  ) {
    super(`startup refused: ${frame.subarray(5).toString("utf8").replace(/\0/g, " ")}`);
  }
}
