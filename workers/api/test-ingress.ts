/**
 * A node ingress as the invoke tests need it (the real one is node-agent/ingress.ts, tested with
 * real containers there). Started once per run by the `workers` project's global setup; each node
 * of a test registers `<url>/n/<node id>` as its ingress URL, so the fake knows which node's key to
 * expect: HMAC of TEST_INGRESS_SECRET (the Worker's INGRESS_SECRET in vitest.config.ts) and the
 * node id, as workers/nodes/ingress-key.ts derives it.
 *
 * What a replica "does" is in the request path after `/p/<placement>`:
 *   /stream               three chunks, 100 ms apart
 *   /slow/<ms>            answers after <ms> ms (a long inference that answers all at once), unless
 *                         the Worker hangs up first
 *   /status/<n>           answers status n
 *   /__refuse/<code>      the ingress refuses with INGRESS.errorHeader <code>
 *   anything else         200, JSON echo of placement, method, path and query, headers, body
 *
 * A WebSocket upgrade (real handshake, by the `ws` package) to any path but the refusals above: the
 * replica first sends a JSON text message (placement, path, the handshake's headers, the protocol
 * it chose: the first one offered), then echoes every message, text as text and binary as binary;
 * a text message `close <code> <reason>` makes it close with that code and reason. `/no-upgrade`
 * answers 400 without upgrading.
 */
import { createHash, createHmac } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { WebSocketServer } from "ws";
import { INGRESS, INGRESS_ERROR_STATUS } from "../../core/schemas";
import { TEST_INGRESS_SECRET } from "./test-ingress-secret";

export async function startTestIngress(): Promise<{ url: string; close: () => Promise<void> }> {
  const server: Server = createServer((req, res) => {
    const refuse = (code: string) => {
      const status = INGRESS_ERROR_STATUS[code as keyof typeof INGRESS_ERROR_STATUS] ?? 400;
      res.writeHead(status, { "content-type": "application/json", [INGRESS.errorHeader]: code });
      res.end(JSON.stringify({ error: { code, message: `test ingress: ${code}` } }));
    };
    const m = /^\/n\/([^/]+)\/p\/([^/?]+)(.*)$/.exec(req.url ?? "");
    if (!m) return refuse("unknown_placement");
    const [, nodeId, placementId, rest] = m as unknown as [string, string, string, string];
    const key = createHmac("sha256", TEST_INGRESS_SECRET).update(`scalar-ingress:${nodeId}`).digest("hex");
    if (req.headers[INGRESS.keyHeader] !== key) return refuse("unauthorized");
    const path = rest || "/";
    if (path.startsWith("/__refuse/")) return refuse(path.slice("/__refuse/".length));
    if (path.startsWith("/status/")) {
      res.writeHead(Number(path.slice("/status/".length)), { "content-type": "text/plain" });
      return res.end(`status ${path.slice("/status/".length)}`);
    }
    if (path === "/stream") {
      res.writeHead(200, { "content-type": "text/plain" });
      let n = 0;
      const tick = () => {
        res.write(`chunk ${n}\n`);
        if (++n < 3) setTimeout(tick, 100);
        else res.end();
      };
      return tick();
    }
    if (path.startsWith("/slow/")) {
      const answering = setTimeout(
        () => {
          res.writeHead(200, { "content-type": "text/plain" });
          res.end("done");
        },
        Number(path.slice("/slow/".length)),
      );
      res.on("close", () => clearTimeout(answering));
      return;
    }
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      res.writeHead(200, { "content-type": "application/json", "x-replica-said": "hello" });
      res.end(
        JSON.stringify({
          placement: decodeURIComponent(placementId),
          method: req.method,
          path,
          headers: req.headers,
          body: Buffer.concat(chunks).toString("utf8"),
        }),
      );
    });
  });
  const sockets = new WebSocketServer({
    noServer: true,
    handleProtocols: (offered) => [...offered][0] ?? false,
  });
  server.on("upgrade", (req, socket, head) => {
    const refuse = (status: number, code: string) => {
      socket.end(
        `HTTP/1.1 ${status} Refused\r\ncontent-type: application/json\r\n${INGRESS.errorHeader}: ${code}\r\n` +
          `connection: close\r\ncontent-length: 2\r\n\r\n{}`,
      );
    };
    const m = /^\/n\/([^/]+)\/p\/([^/?]+)(.*)$/.exec(req.url ?? "");
    if (!m) return refuse(404, "unknown_placement");
    const [, nodeId, placementId, rest] = m as unknown as [string, string, string, string];
    const key = createHmac("sha256", TEST_INGRESS_SECRET).update(`scalar-ingress:${nodeId}`).digest("hex");
    if (req.headers[INGRESS.keyHeader] !== key) return refuse(401, "unauthorized");
    const path = rest || "/";
    if (path.startsWith("/__refuse/")) {
      const code = path.slice("/__refuse/".length);
      return refuse(INGRESS_ERROR_STATUS[code as keyof typeof INGRESS_ERROR_STATUS] ?? 400, code);
    }
    if (path === "/late") {
      // A busy replica: 300 ms after the client's first bytes it sends "late" and its close, whatever
      // came meanwhile (a close of the client's included), then reads until the client hangs up.
      const accept = createHash("sha1")
        .update(`${req.headers["sec-websocket-key"]}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
        .digest("base64");
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${accept}\r\n\r\n`,
      );
      socket.once("data", () => {
        setTimeout(() => {
          socket.write(
            Buffer.concat([Buffer.from([0x81, 4]), Buffer.from("late"), Buffer.from([0x88, 2, 0x03, 0xe8])]),
          );
        }, 300);
      });
      socket.on("data", () => {});
      socket.on("end", () => socket.end());
      return;
    }
    if (path === "/no-upgrade") {
      return socket.end("HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 10\r\n\r\nno upgrade");
    }
    sockets.handleUpgrade(req, socket, head, (ws) => {
      // `/drop`: the connection cut after one message, no close frame (a replica that crashed).
      if (path === "/drop") {
        ws.send("bye", () => setTimeout(() => ws.terminate(), 50));
        return;
      }
      ws.send(
        JSON.stringify({
          placement: decodeURIComponent(placementId),
          path,
          headers: req.headers,
          protocol: ws.protocol,
        }),
      );
      ws.on("message", (data, binary) => {
        const text = binary ? null : data.toString();
        const close = text ? /^close (\d+) (.*)$/.exec(text) : null;
        if (close) return ws.close(Number(close[1]), close[2]);
        ws.send(data, { binary });
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const ws of sockets.clients) ws.terminate();
        server.close(() => resolve());
      }),
  };
}
