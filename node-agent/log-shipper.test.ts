import { describe, expect, it } from "vitest";
import type { LogLine } from "../core/schemas";
import type { Clock } from "./clock";
import { ControlPlaneError } from "./control-plane";
import { MAX_LINE_CHARS, splitLine } from "./log-follower";
import { DEFAULT_LOG_SHIPPER, LogShipper } from "./log-shipper";
import { silentLogger } from "./logger";
import type { LogCursor } from "./state";

const clock: Clock = { now: () => 0, monotonic: () => 0, sleep: async () => {} };
const line = (placement_id: string, seq: number): LogLine => ({
  placement_id,
  seq,
  stream: "stdout",
  at: 0,
  line: `l${seq}`,
});
const cursor = (seq: number): LogCursor => ({
  seq,
  ts: `2026-01-01T00:00:00.${String(seq).padStart(9, "0")}Z`,
  same_ts: 1,
});

describe("log shipper", () => {
  it("ships in bounded batches, in order, and moves each placement's cursor when acknowledged", async () => {
    const acked: [string, number][] = [];
    const shipper = new LogShipper((p, c) => acked.push([p, c.seq]), silentLogger, {
      maxLines: 100,
      maxBytes: 1 << 20,
      batchLines: 3,
      batchBytes: 1 << 20,
      flushDelayMs: 0,
    });
    for (let i = 0; i < 5; i++) shipper.push(line("a", i), cursor(i));
    shipper.push(line("b", 0), null); // first piece of a split entry: no cursor yet
    shipper.push(line("b", 1), cursor(1));
    const batches: string[][] = [];
    const stop = new AbortController();
    let fail = true;
    const loop = shipper.deliver(
      async (lines) => {
        if (fail) {
          fail = false;
          throw new ControlPlaneError("unreachable", "ECONNREFUSED");
        }
        batches.push(lines.map((l) => `${l.placement_id}${l.seq}`));
      },
      { clock, signal: stop.signal, log: silentLogger },
    );
    await shipper.whenDrained("a");
    await shipper.whenDrained("b");
    stop.abort();
    await loop;
    expect(batches).toEqual([["a0", "a1", "a2"], ["a3", "a4", "b0"], ["b1"]]);
    expect(acked).toEqual([
      ["a", 2],
      ["a", 4],
      ["b", 1],
    ]);
  });

  it("reports full when its bound is reached and frees the waiters once lines are acknowledged", async () => {
    const shipper = new LogShipper(() => {}, silentLogger, {
      maxLines: 2,
      maxBytes: 1 << 20,
      batchLines: 10,
      batchBytes: 1 << 20,
      flushDelayMs: 0,
    });
    shipper.push(line("a", 0), cursor(0));
    shipper.push(line("a", 1), cursor(1));
    expect(shipper.full).toBe(true);
    const space = shipper.whenSpace();
    const stop = new AbortController();
    const loop = shipper.deliver(async () => {}, { clock, signal: stop.signal, log: silentLogger });
    await space;
    expect(shipper.full).toBe(false);
    stop.abort();
    await loop;
  });

  it.each([401, 403])(
    "keeps the batch and its cursor while the control plane answers %i, and ships it once it takes it",
    async (status) => {
      const acked: number[] = [];
      const shipper = new LogShipper((_, c) => acked.push(c.seq), silentLogger);
      shipper.push(line("a", 0), cursor(0));
      shipper.push(line("a", 1), cursor(1));
      const sleeps: number[] = [];
      const sent: number[][] = [];
      let refusals = 2;
      const stop = new AbortController();
      const loop = shipper.deliver(
        async (lines) => {
          sent.push([acked.length, ...lines.map((l) => l.seq)]);
          if (refusals-- > 0) throw new ControlPlaneError("rejected", `POST /v1/agent/logs: ${status}`, status);
        },
        {
          clock: { now: () => 0, monotonic: () => 0, sleep: async (ms) => void sleeps.push(ms) },
          signal: stop.signal,
          log: silentLogger,
        },
      );
      await shipper.whenDrained("a");
      stop.abort();
      await loop;
      // [cursors moved so far, …the batch's seqs]: the same batch each time, the cursor held.
      expect(sent).toEqual([
        [0, 0, 1],
        [0, 0, 1],
        [0, 0, 1],
      ]);
      expect(acked).toEqual([1]);
      expect(sleeps.filter((ms) => ms !== DEFAULT_LOG_SHIPPER.flushDelayMs)).toHaveLength(2); // backed off
    },
  );

  it("drops a batch the control plane refuses instead of retrying it forever", async () => {
    const shipper = new LogShipper(() => {}, silentLogger);
    shipper.push(line("a", 0), cursor(0));
    const stop = new AbortController();
    const loop = shipper.deliver(
      async () => {
        throw new ControlPlaneError("rejected", "400", 400);
      },
      { clock, signal: stop.signal, log: silentLogger },
    );
    await shipper.whenDrained("a");
    stop.abort();
    await loop;
    expect(shipper.pending("a")).toBe(0);
  });
});

describe("splitLine", () => {
  it("cuts lines longer than the wire allows, keeping surrogate pairs whole", () => {
    expect(splitLine("short")).toEqual(["short"]);
    const long = "x".repeat(MAX_LINE_CHARS * 2 + 5);
    expect(splitLine(long).map((p) => p.length)).toEqual([MAX_LINE_CHARS, MAX_LINE_CHARS, 5]);
    const emoji = `${"x".repeat(MAX_LINE_CHARS - 1)}😀tail`;
    const pieces = splitLine(emoji);
    expect(pieces[0]).toHaveLength(MAX_LINE_CHARS - 1);
    expect(pieces.join("")).toBe(emoji);
  });
});
