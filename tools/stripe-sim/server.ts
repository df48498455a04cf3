/** The Stripe simulator behind a Node HTTP server (`npx tsx tools/stripe-sim/cli.ts`, tests). */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { LostResponseError, StripeSimulator, type StripeSimulatorOptions } from "./simulator";

export interface RunningStripeSimulator {
  /** e.g. "http://127.0.0.1:12111". */
  url: string;
  host: string;
  port: number;
  simulator: StripeSimulator;
  server: Server;
  close(): Promise<void>;
}

/**
 * Serves a simulator (a new one unless `simulator` is given) on `host:port` (port 0 = any free port).
 * Every `syncIntervalMs` (default 1000) it runs what fell due on the simulator's clock (`sync`:
 * auto-finalization, automatic collection), so those happen, and their webhooks go out, without
 * waiting for a request.
 */
export async function startStripeSimulator(
  options: StripeSimulatorOptions & {
    port?: number;
    host?: string;
    simulator?: StripeSimulator;
    syncIntervalMs?: number;
  } = {},
): Promise<RunningStripeSimulator> {
  const { port: wanted = 0, host = "127.0.0.1", simulator: given, syncIntervalMs = 1000, ...simOptions } = options;
  const simulator = given ?? new StripeSimulator(simOptions);
  const server = createServer((req, res) => void serve(simulator, req, res));
  await new Promise<void>((done, fail) => {
    server.once("error", fail);
    server.listen(wanted, host, () => {
      server.off("error", fail);
      done();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const ticker = setInterval(() => simulator.sync(), syncIntervalMs);
  ticker.unref();
  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${port}`,
    host,
    port,
    simulator,
    server,
    async close() {
      clearInterval(ticker);
      if (!given) simulator.webhooks.close(); // no retries left waiting after the server is gone
      server.closeAllConnections();
      await new Promise<void>((done) => server.close(() => done()));
    },
  };
}

async function serve(simulator: StripeSimulator, req: IncomingMessage, res: ServerResponse): Promise<void> {
  try {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const headers = new Headers();
    for (const [k, v] of Object.entries(req.headers)) {
      if (typeof v === "string") headers.set(k, v);
      else if (Array.isArray(v)) for (const x of v) headers.append(k, x);
    }
    const hasBody = req.method !== "GET" && req.method !== "HEAD" && chunks.length > 0;
    const request = new Request(`http://${req.headers.host ?? "localhost"}${req.url ?? "/"}`, {
      method: req.method,
      headers,
      body: hasBody ? Buffer.concat(chunks) : undefined,
    });
    const response = await simulator.fetch(request);
    const out: Record<string, string> = {};
    response.headers.forEach((value, key) => {
      out[key] = value;
    });
    const body = Buffer.from(await response.arrayBuffer());
    out["content-length"] = String(body.length);
    res.writeHead(response.status, out);
    res.end(body);
  } catch (error) {
    if (error instanceof LostResponseError) {
      req.socket.destroy();
      return;
    }
    if (!res.headersSent) {
      res.writeHead(500, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { type: "api_error", message: `stripe-sim: ${String(error)}` } }));
    } else {
      res.destroy();
    }
  }
}
