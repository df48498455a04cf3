/**
 * `scalar endpoints invoke REF PATH --ws`: a WebSocket to the endpoint through the API. Each line of
 * standard input goes as one text message; each message received is printed (text with a newline,
 * binary as its bytes). At the end of input (Ctrl-D) or on Ctrl-C the CLI closes with 1000 and
 * prints what still arrives until the endpoint's close. Exit 0 for a normal close (1000, or none
 * given), 1 for any other code, with the code and reason on stderr. `--json`: one object per line.
 */
import type { IncomingMessage } from "node:http";
import type WebSocket from "ws";
import type { Connection } from "../api/client";
import type { Context } from "../context";
import { apiErrorFrom, EXIT, networkError } from "../errors";

export interface WebSocketInvoke {
  ref: string;
  path: string;
  headers: Headers;
  protocols: string[];
  /** Print the handshake's answer (status, headers) on stderr first. */
  include: boolean;
}

/** Close codes that mean "done", not "failed": 1000 normal, 1005 none given. */
const NORMAL_CLOSE = new Set([1000, 1005]);

export async function invokeWebSocket(ctx: Context, conn: Connection, opts: WebSocketInvoke): Promise<number> {
  const { io } = ctx;
  const ws = conn.websocket(`/v1/endpoints/${encodeURIComponent(opts.ref)}/invoke${opts.path}`, {
    headers: opts.headers,
    protocols: opts.protocols,
  });
  ws.binaryType = "nodebuffer";
  const notice = io.stderrIsTTY
    ? setTimeout(() => io.stderr(`waiting for a ready replica of ${opts.ref} (a cold start)…\n`), 2_000)
    : undefined;
  const decoder = new TextDecoder();
  // --json: one object per line, `{"type":"message","text"|"base64":…}` and `{"type":"close",…}` last.
  const emit = (record: Record<string, unknown>) => io.stdout(`${JSON.stringify(record)}\n`);
  let closing = false;
  const closeNormally = () => {
    if (closing) return;
    closing = true;
    // CONNECTING: there is nothing to close yet; `ws` would throw.
    if (ws.readyState === ws.OPEN) ws.close(1000);
    else if (ws.readyState === ws.CONNECTING) ws.terminate();
  };
  const stopInterrupt = io.onInterrupt(closeNormally);
  try {
    return await new Promise<number>((resolve, reject) => {
      let opened = false;
      let failed = false;
      ws.on("upgrade", (res: IncomingMessage) => {
        clearTimeout(notice);
        if (!opts.include) return;
        io.stderr(`HTTP ${res.statusCode} ${res.statusMessage ?? ""} (replica ${header(res, "scalar-replica")})\n`);
        for (const [name, value] of Object.entries(res.headers)) io.stderr(`${name}: ${value}\n`);
        io.stderr("\n");
      });
      ws.on("unexpected-response", (_req, res: IncomingMessage) => {
        clearTimeout(notice);
        void refusal(res).then(
          (error) => {
            if (error instanceof Error) reject(error);
            else {
              if (error.body) io.stdout(error.body);
              io.stderr(
                `the endpoint answered HTTP ${res.statusCode} instead of a WebSocket (replica ${error.replica})\n`,
              );
              resolve(EXIT.error);
            }
          },
          (error: unknown) => reject(error),
        );
      });
      ws.on("open", () => {
        opened = true;
        if (closing) {
          ws.close(1000);
          return;
        }
        void sendLines(ctx, ws).then(closeNormally, (error: unknown) => {
          io.stderr(`standard input: ${error instanceof Error ? error.message : String(error)}\n`);
          closeNormally();
        });
      });
      ws.on("message", (data: Buffer, isBinary: boolean) => {
        if (ctx.json)
          emit(
            isBinary
              ? { type: "message", base64: data.toString("base64") }
              : { type: "message", text: decoder.decode(data) },
          );
        else if (!isBinary) io.stdout(`${decoder.decode(data)}\n`);
        else if (io.stdoutBytes) io.stdoutBytes(data);
        else io.stdout(decoder.decode(data));
      });
      ws.on("close", (code: number, reason: Buffer) => {
        if (failed) return; // said by the error
        if (ctx.json) emit({ type: "close", code, reason: reason.toString("utf8") });
        if (NORMAL_CLOSE.has(code)) return resolve(EXIT.ok);
        const why = reason.length > 0 ? `: ${reason.toString("utf8")}` : "";
        io.stderr(`the WebSocket closed with code ${code}${why}\n`);
        resolve(EXIT.error);
      });
      ws.on("error", (error: Error) => {
        // After a refusal, `unexpected-response` has the answer; before opening, the API was not reached.
        if (opened || closing) return;
        failed = true;
        reject(networkError(conn.apiUrl, error));
      });
    });
  } finally {
    clearTimeout(notice);
    stopInterrupt();
  }
}

function header(res: IncomingMessage, name: string): string {
  const value = res.headers[name];
  return (Array.isArray(value) ? value[0] : value) ?? "-";
}

/** A refused upgrade: the API's own error (no replica answered), or the replica's answer and its body. */
async function refusal(res: IncomingMessage): Promise<Error | { replica: string; body: string }> {
  const chunks: Buffer[] = [];
  for await (const chunk of res) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString("utf8");
  const replica = header(res, "scalar-replica");
  if (replica !== "-") return { replica, body: text };
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {}
  const requestId = header(res, "x-request-id");
  return apiErrorFrom(res.statusCode ?? 0, parsed, requestId === "-" ? null : requestId);
}

/** Each line of standard input as one text message, until its end or the socket's. */
async function sendLines(ctx: Context, ws: WebSocket): Promise<void> {
  for await (const line of ctx.io.stdinLines()) {
    if (ws.readyState !== ws.OPEN) return;
    ws.send(line);
  }
}
