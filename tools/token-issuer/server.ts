/**
 * The local JWKS server: serves the issuer's public keys at `/auth/v1/.well-known/jwks.json`, the
 * path Supabase serves them at, so the Worker's real `createRemoteJWKSet` path runs end to end.
 */
import { createServer, type Server } from "node:http";
import { generateIssuerKeys, type IssuerKeys, jwksPath } from "./issuer";

export interface TokenIssuerServer {
  /** Use as SUPABASE_URL: the issuer is `${url}/auth/v1`. */
  url: string;
  keys: IssuerKeys;
  /** How many times the JWKS was fetched (the Worker should cache it). */
  fetches(): number;
  close(): Promise<void>;
}

export async function startTokenIssuer(opts: { port?: number; keys?: IssuerKeys } = {}): Promise<TokenIssuerServer> {
  const keys = opts.keys ?? (await generateIssuerKeys());
  let fetches = 0;
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://localhost").pathname;
    if (req.method === "GET" && path === jwksPath()) {
      fetches += 1;
      res.writeHead(200, { "content-type": "application/json", "cache-control": "public, max-age=600" });
      res.end(JSON.stringify({ keys: [keys.publicJwk] }));
      return;
    }
    res.writeHead(404, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: "not_found" }));
  });
  // workerd drops keep-alive connections when a test run ends; a reset socket is not our failure.
  server.on("connection", (socket) => socket.on("error", () => {}));
  await new Promise<void>((done, fail) => {
    server.once("error", fail);
    server.listen(opts.port ?? 0, "127.0.0.1", () => done());
  });
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    keys,
    fetches: () => fetches,
    close: () =>
      new Promise<void>((done) => {
        server.closeAllConnections();
        server.close(() => done());
      }),
  };
}
