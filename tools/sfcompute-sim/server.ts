/** The simulator behind a Node HTTP server: `npm run sim`, `npm start` and the tests use this. */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { LostResponseError } from "./faults";
import { Simulator, type SimulatorOptions } from "./simulator";

export interface RunningSimulator {
  sim: Simulator;
  server: Server;
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Serves a simulator on `host:port` (port 0 = any free port). */
export async function startSimulatorServer(
  options: SimulatorOptions & { port?: number; host?: string } = {},
): Promise<RunningSimulator> {
  const sim = new Simulator(options);
  const host = options.host ?? "127.0.0.1";
  const server = createServer((req, res) => void serve(sim, req, res));
  await new Promise<void>((done, fail) => {
    server.once("error", fail);
    server.listen(options.port ?? 0, host, () => done());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    sim,
    server,
    port,
    url: `http://${host}:${port}`,
    async close() {
      sim.close();
      server.closeAllConnections();
      await new Promise<void>((done) => server.close(() => done()));
    },
  };
}

async function serve(sim: Simulator, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const abort = new AbortController();
  res.on("close", () => {
    if (!res.writableFinished) abort.abort();
  });
  try {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const requestHeaders = new Headers();
    for (const [k, v] of Object.entries(req.headers)) {
      if (typeof v === "string") requestHeaders.set(k, v);
      else if (Array.isArray(v)) for (const x of v) requestHeaders.append(k, x);
    }
    const hasBody = req.method !== "GET" && req.method !== "HEAD" && chunks.length > 0;
    const request = new Request(`http://${req.headers.host ?? "localhost"}${req.url ?? "/"}`, {
      method: req.method,
      headers: requestHeaders,
      body: hasBody ? Buffer.concat(chunks) : undefined,
      signal: abort.signal,
    });
    const response = await sim.fetch(request);
    const headers: Record<string, string> = {};
    response.headers.forEach((value, key) => {
      headers[key] = value;
    });
    res.writeHead(response.status, headers);
    if (!response.body) {
      res.end();
      return;
    }
    const reader = response.body.getReader();
    res.on("close", () => void reader.cancel().catch(() => {}));
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      res.write(value);
    }
    res.end();
  } catch (error) {
    if (abort.signal.aborted) return; // the client is gone: nothing to answer
    if (error instanceof LostResponseError) {
      req.socket.destroy();
      return;
    }
    if (!res.headersSent) {
      res.writeHead(500, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { type: "api_error", message: String(error), details: [] } }));
    } else {
      res.destroy();
    }
  }
}
