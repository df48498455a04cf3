/**
 * Log batches against the control plane's request body cap (MAX_REQUEST_BODY_BYTES, 413
 * `payload_too_large`): batches are sized by their JSON under it, and a batch refused as too large
 * is sent again in halves instead of being dropped.
 */
import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Hono } from "hono";
import { afterEach, describe, expect, it } from "vitest";
import { type LogLine, MAX_REQUEST_BODY_BYTES } from "../core/schemas";
import { limitBody } from "../workers/http/body";
import { ApiError, errorResponse } from "../workers/http/errors";
import type { Clock } from "./clock";
import { AGENT_BATCH_BYTES, ControlPlaneClient, ControlPlaneError, jsonBytes } from "./control-plane";
import { MAX_LINE_CHARS } from "./log-follower";
import { DEFAULT_LOG_SHIPPER, LogShipper, type LogShipperOptions } from "./log-shipper";
import type { Logger } from "./logger";
import type { LogCursor } from "./state";

const clock: Clock = { now: () => 0, monotonic: () => 0, sleep: async () => {} };
const PLACEMENT = "job-abc-a1-g0";
const line = (seq: number, text: string): LogLine => ({
  placement_id: PLACEMENT,
  seq,
  stream: "stdout",
  at: 1_767_225_600_000 + seq,
  line: text,
});
const cursor = (seq: number): LogCursor => ({
  seq,
  ts: `2026-01-01T00:00:00.${String(seq).padStart(9, "0")}Z`,
  same_ts: 1,
});

/** The agent's log route behind the Worker's real body cap and error mapping; records what it stores. */
async function controlPlane(): Promise<{ url: string; stored: number[] }> {
  const stored: number[] = [];
  const app = new Hono();
  app.onError((e, c) => (e instanceof ApiError ? errorResponse(c, e) : c.text(String(e), 500)));
  app.use("/v1/*", limitBody);
  app.post("/v1/agent/logs", async (c) => {
    const body = (await c.req.json()) as { lines: { seq: number }[] };
    for (const l of body.lines) stored.push(l.seq);
    return c.json({ accepted: body.lines.length });
  });
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const answer = await app.fetch(
      new Request(`http://x${req.url}`, {
        method: req.method,
        headers: req.headers as Record<string, string>,
        body: chunks.length ? Buffer.concat(chunks) : undefined,
      }),
    );
    res.writeHead(answer.status, { "content-type": answer.headers.get("content-type") ?? "text/plain" });
    res.end(Buffer.from(await answer.arrayBuffer()));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  servers.push(server);
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, stored };
}

const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

/** Queues the lines, delivers them through `send` until all are acknowledged or dropped. */
async function ship(
  lines: LogLine[],
  send: (lines: LogLine[]) => Promise<unknown>,
  opts: LogShipperOptions = DEFAULT_LOG_SHIPPER,
): Promise<{ errors: string[]; acked: number[] }> {
  const errors: string[] = [];
  const acked: number[] = [];
  const log: Logger = (level, msg, fields) => {
    if (level === "error") errors.push(`${msg} ${JSON.stringify(fields)}`);
  };
  const shipper = new LogShipper((_, c) => acked.push(c.seq), log, opts);
  for (const l of lines) shipper.push(l, cursor(l.seq));
  const stop = new AbortController();
  const loop = shipper.deliver(send, { clock, signal: stop.signal, log });
  await shipper.whenDrained(PLACEMENT);
  stop.abort();
  await loop;
  return { errors, acked };
}

const seqs = (n: number) => Array.from({ length: n }, (_, i) => i);

describe("log batches and the control plane's body cap", () => {
  it("delivers a backlog of 1,000 ordinary 250-character lines through the real body limit", async () => {
    const cp = await controlPlane();
    const api = new ControlPlaneClient(cp.url, "t");
    const lines = seqs(1_000).map((seq) => line(seq, "x".repeat(250)));
    const { errors, acked } = await ship(lines, (batch) => api.logs({ lines: batch }));
    expect({ stored: cp.stored, errors }).toEqual({ stored: seqs(1_000), errors: [] });
    expect(acked.at(-1)).toBe(999);
  });

  it("keeps every batch's body under the cap for long lines and lines that JSON escaping inflates", async () => {
    const long = MAX_LINE_CHARS;
    const texts = [
      "x".repeat(long), // plain: one byte a character
      "\u0001".repeat(long), // control characters: six bytes each (\u0001)
      '"\\'.repeat(long / 2), // quotes and backslashes: two bytes each
      "é".repeat(long), // two UTF-8 bytes each
      "€".repeat(long), // three UTF-8 bytes each
      "😀".repeat(long / 2), // four bytes a surrogate pair
      "\ud800".repeat(long), // lone surrogates: escaped, six bytes each
      "short",
    ];
    const lines = seqs(80).map((seq) => line(seq, texts[seq % texts.length] as string));
    const batches: LogLine[][] = [];
    const { errors } = await ship(lines, async (batch) => {
      batches.push(batch);
    });
    expect(errors).toEqual([]);
    expect(batches.flat().map((l) => l.seq)).toEqual(seqs(80));
    expect(AGENT_BATCH_BYTES).toBeLessThan(MAX_REQUEST_BODY_BYTES);
    for (const [i, batch] of batches.entries()) {
      expect(jsonBytes({ lines: batch })).toBeLessThanOrEqual(AGENT_BATCH_BYTES);
      // Filled up to the budget, not a line at a time: the next line would not have fitted.
      const next = batches[i + 1]?.[0];
      if (next) expect(jsonBytes({ lines: [...batch, next] })).toBeGreaterThan(AGENT_BATCH_BYTES);
    }
  });

  it("sends a batch refused as too large (413) again in halves, dropping only a single line still refused", async () => {
    const sent: number[][] = [];
    const stored: number[] = [];
    const tooLarge = () => new ControlPlaneError("rejected", "413 payload_too_large", 413, "payload_too_large");
    const lines = seqs(10).map((seq) => line(seq, seq === 7 ? "huge" : "ok"));
    const { errors, acked } = await ship(
      lines,
      async (batch) => {
        sent.push(batch.map((l) => l.seq));
        // This control plane takes at most 3 lines, and never line 7.
        if (batch.length > 3 || batch.some((l) => l.line === "huge")) throw tooLarge();
        stored.push(...batch.map((l) => l.seq));
      },
      { ...DEFAULT_LOG_SHIPPER, flushDelayMs: 0 },
    );
    expect(sent).toEqual([
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
      [0, 1, 2, 3, 4],
      [0, 1, 2],
      [3, 4],
      [5, 6, 7, 8, 9],
      [5, 6, 7],
      [5, 6],
      [7],
      [8, 9],
    ]);
    expect(stored).toEqual([0, 1, 2, 3, 4, 5, 6, 8, 9]);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/refused a log line as too large; dropped .*"seq":7/);
    expect(acked).toEqual([2, 4, 6, 7, 9]);
  });

  it("still drops a batch refused for another reason whole, without splitting it", async () => {
    const sent: number[][] = [];
    const lines = seqs(4).map((seq) => line(seq, "ok"));
    const { errors } = await ship(lines, async (batch) => {
      sent.push(batch.map((l) => l.seq));
      throw new ControlPlaneError("rejected", "400 invalid_request", 400, "invalid_request");
    });
    expect(sent).toEqual([[0, 1, 2, 3]]);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/refused a log batch; dropped/);
  });

  it("splits batches over the real body limit when the shipper is set to send more than it takes", async () => {
    const cp = await controlPlane();
    const api = new ControlPlaneClient(cp.url, "t");
    const lines = seqs(1_000).map((seq) => line(seq, "y".repeat(1_000)));
    const { errors } = await ship(lines, (batch) => api.logs({ lines: batch }), {
      ...DEFAULT_LOG_SHIPPER,
      batchBytes: 4 << 20,
    });
    expect({ stored: cp.stored, errors }).toEqual({ stored: seqs(1_000), errors: [] });
  });
});

describe("ControlPlaneClient and the body cap", () => {
  it("agrees with the Worker to the byte: a body of the cap goes, one byte more is a rejected 413", async () => {
    const cp = await controlPlane();
    const api = new ControlPlaneClient(cp.url, "t");
    // The text is longer than a LogLine allows: only the size matters here.
    const body = (extra: number) => {
      const text = "z".repeat(MAX_REQUEST_BODY_BYTES - jsonBytes({ lines: [line(0, "")] }) + extra);
      return { lines: [line(0, text)] };
    };
    expect(jsonBytes(body(0))).toBe(MAX_REQUEST_BODY_BYTES);
    await expect(api.logs(body(0))).resolves.toEqual({ accepted: 1 });
    const error = await api.logs(body(1)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ControlPlaneError);
    expect(error).toMatchObject({ kind: "rejected", status: 413, code: "payload_too_large" });
  });
});
