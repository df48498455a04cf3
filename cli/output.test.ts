import { describe, expect, it } from "vitest";
import { ApiError, apiErrorFrom, errorLine, exitCodeOf, networkError, UsageError } from "./errors";
import { age, duration, keyValues, metricsText, nextPageCommand, shellWord, shorten, table } from "./output";
import { createProgress } from "./progress";
import { readSse } from "./sse";
import { parseCpu, parseDuration, parseMemory } from "./units";

describe("the next page's command", () => {
  it("repeats the filters given, in order, quoted for a shell, then the cursor", () => {
    const s = { type: "string" as const, description: "" };
    expect(
      nextPageCommand(
        { words: ["jobs", "ls"], options: { status: s, tier: s, label: s, limit: s, cursor: s } },
        { status: ["failed"], label: ["team=a b", "x=it's"], limit: "2", "api-key": "sk_secret", json: false },
        "c1",
      ),
    ).toBe(`scalar jobs ls --status failed --label 'team=a b' --label 'x=it'\\''s' --limit 2 --cursor c1`);
    const keys = {
      words: ["keys", "ls"],
      options: { all: { type: "boolean" as const, description: "" }, limit: s, cursor: s },
    };
    expect(nextPageCommand(keys, { all: true }, "c2")).toBe("scalar keys ls --all --cursor c2");
    expect(shellWord("queued,placed")).toBe("queued,placed");
    expect(shellWord("")).toBe("''");
  });
});

describe("tables and values", () => {
  it("pads columns to the widest cell and leaves the last one unpadded", () => {
    expect(
      table(
        ["ID", "STATUS", "IMAGE"],
        [
          ["a", "running", "busybox"],
          ["bbbb", "queued", "x"],
        ],
      ),
    ).toBe("ID    STATUS   IMAGE\na     running  busybox\nbbbb  queued   x\n");
    expect(table(["A", "B"], [])).toBe("A  B\n");
  });

  it("aligns key/value lines and leaves out empty values", () => {
    expect(
      keyValues([
        ["id", "j1"],
        ["exit code", 0],
        ["failure", null],
        ["waiting", ""],
      ]),
    ).toBe("id         j1\nexit code  0\n");
  });

  it("writes durations and ages coarsely", () => {
    expect(duration(3_240)).toBe("3.2s");
    expect(duration(245_000)).toBe("4m05s");
    expect(duration(7_380_000)).toBe("2h03m");
    const now = Date.parse("2026-11-26T12:00:00Z");
    expect(age("2026-11-26T11:59:48Z", now)).toBe("12s");
    expect(age("2026-11-26T11:55:00Z", now)).toBe("5m");
    expect(age("2026-11-26T09:00:00Z", now)).toBe("3h");
    expect(age("2026-11-24T12:00:00Z", now)).toBe("2d");
    expect(age(null, now)).toBe("-");
    expect(shorten("abcdef", 4)).toBe("abc…");
  });
});

describe("a placement's resource use", () => {
  const now = Date.parse("2026-11-26T12:01:00Z");
  const sample = {
    at: "2026-11-26T12:00:50.000Z",
    cpu_pct: 99.6,
    memory_bytes: 412 * 1024 * 1024,
    memory_limit_bytes: 16 * 1024 ** 3,
    pids: 3,
    gpus: [
      { index: 0, utilisation_pct: 100, memory_used_mib: 81_000, memory_total_mib: 81_559 },
      { index: 1, utilisation_pct: 4.4, memory_used_mib: null, memory_total_mib: null },
    ],
  };

  it("shows each GPU of the placement, then CPU and memory, with a use under 1 GiB in MiB", () => {
    expect(metricsText(sample, now)).toBe(
      "GPU 0: 100 % · 79.1/79.6 GiB, GPU 1: 4 %   CPU 100 %   mem 412 MiB/16 GiB   (10s ago)",
    );
  });

  it("leaves out what the node did not report: GPUs without nvidia-smi, CPU at the first heartbeat", () => {
    const bare = { ...sample, cpu_pct: null, memory_limit_bytes: null, gpus: [] };
    expect(metricsText(bare, now)).toBe("mem 412 MiB   (10s ago)");
    expect(metricsText({ ...bare, memory_bytes: 2.5 * 1024 ** 3 }, now)).toBe("mem 2.5 GiB   (10s ago)");
  });
});

describe("error lines and exit codes", () => {
  it("prints the API's code and message, adding fields the message does not name", () => {
    const body = {
      error: {
        code: "invalid_request",
        message: "invalid body: gpu_count: 1 to 8 GPUs on one node, or a multiple of 8 up to 64",
        details: { fields: [{ field: "gpu_count", message: "…", code: "custom" }] },
        request_id: "req_1",
      },
    };
    const e = apiErrorFrom(400, body, null);
    expect(e).toBeInstanceOf(ApiError);
    expect(errorLine(e)).toBe(
      "error: invalid_request: invalid body: gpu_count: 1 to 8 GPUs on one node, or a multiple of 8 up to 64",
    );
    expect(e.requestId).toBe("req_1");
    expect(exitCodeOf(e)).toBe(1);
    const terse = apiErrorFrom(
      400,
      {
        error: {
          code: "validation_failed",
          message: "must be ≤ 64",
          details: { fields: [{ field: "gpu_count" }] },
          request_id: "r",
        },
      },
      null,
    );
    expect(errorLine(terse)).toBe("error: validation_failed: must be ≤ 64 (field gpu_count)");
  });

  it("handles an answer without the envelope", () => {
    expect(errorLine(apiErrorFrom(502, "<html>Bad gateway</html>\nmore", "req_x"))).toBe(
      "error: http_502: <html>Bad gateway</html>",
    );
    expect(errorLine(apiErrorFrom(500, undefined, null))).toBe(
      "error: http_500: the API answered without an error envelope",
    );
  });

  it("names the URL that could not be reached", () => {
    const cause = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:9"), { code: "ECONNREFUSED" });
    expect(errorLine(networkError("http://127.0.0.1:9", new TypeError("fetch failed", { cause })))).toBe(
      "error: could not reach the Scalar API at http://127.0.0.1:9 (ECONNREFUSED); is `npm start` running?",
    );
    expect(
      errorLine(networkError("https://api.example", new TypeError("fetch failed", { cause: { code: "ENOTFOUND" } }))),
    ).toBe("error: could not reach the Scalar API at https://api.example (ENOTFOUND)");
  });

  it("exits 2 for usage errors and 1 for anything unexpected", () => {
    expect(exitCodeOf(new UsageError("x"))).toBe(2);
    expect(exitCodeOf(new Error("boom"))).toBe(1);
    expect(errorLine(new Error("boom"))).toBe("error: boom");
  });
});

describe("units", () => {
  it("reads CPU, memory and durations, refusing what it cannot read", () => {
    expect(parseCpu("2")).toBe(2000);
    expect(parseCpu("0.5")).toBe(500);
    expect(parseCpu("250m")).toBe(250);
    expect(() => parseCpu("two")).toThrow(UsageError);
    expect(parseMemory("16Gi")).toBe(16384);
    expect(parseMemory("512Mi")).toBe(512);
    expect(parseMemory("1024")).toBe(1024);
    expect(parseMemory("1G")).toBe(954); // 10^9 bytes, rounded up to whole MiB
    expect(() => parseMemory("16 parsecs")).toThrow("--memory takes a size");
    expect(parseDuration("90")).toBe(90);
    expect(parseDuration("90s")).toBe(90);
    expect(parseDuration("30m")).toBe(1800);
    expect(parseDuration("1h30m")).toBe(5400);
    expect(parseDuration("1d")).toBe(86400);
    expect(() => parseDuration("1h30")).toThrow(UsageError);
    expect(() => parseDuration("soon")).toThrow(UsageError);
  });
});

describe("progress display", () => {
  it("prints a plain line per change when stderr is not a terminal", () => {
    let now = 0;
    const out: string[] = [];
    const p = createProgress({ write: (t) => out.push(t), tty: false, now: () => now });
    p.update("queued", "waiting: 0/0 nodes");
    p.update("queued", "waiting: 0/0 nodes");
    now = 2_500;
    p.update("placed", "node n1, GPUs 0");
    p.note("a note");
    p.stop();
    p.update("running");
    expect(out.join("")).toBe("[0.0s] queued: waiting: 0/0 nodes\n[2.5s] placed: node n1, GPUs 0\na note\n");
  });

  it("redraws one line in place on a terminal and clears it when stopped", () => {
    let now = 0;
    const out: string[] = [];
    const p = createProgress({ write: (t) => out.push(t), tty: true, now: () => now, intervalMs: 0, columns: 40 });
    p.update("queued", "waiting: 0/12 nodes: 9 insufficient free GPUs, 3 GPU model not allowed");
    now = 1_200;
    expect(p.frame()).toBe("⠋ queued 1.2s · waiting: 0/12 nodes: 9…");
    expect(p.frame().length).toBe(39);
    p.update("pulling", "busybox");
    p.stop();
    expect(out).toEqual([
      "\r\x1b[2K⠋ queued 0.0s · waiting: 0/12 nodes: 9…",
      "\r\x1b[2K⠋ pulling 1.2s · busybox",
      "\r\x1b[2K",
    ]);
  });

  it("writes other output with the spinner cleared, then redraws it", () => {
    const out: string[] = [];
    const tty = createProgress({ write: (t) => out.push(t), tty: true, now: () => 0, intervalMs: 0 });
    tty.update("queued", "retrying");
    tty.above(() => out.push("log line\n"));
    expect(out).toEqual([
      "\r\x1b[2K⠋ queued 0.0s · retrying",
      "\r\x1b[2K",
      "log line\n",
      "\r\x1b[2K⠋ queued 0.0s · retrying",
    ]);
    const plain: string[] = [];
    const p = createProgress({ write: (t) => plain.push(t), tty: false, now: () => 0 });
    p.above(() => plain.push("log line\n"));
    expect(plain).toEqual(["log line\n"]);
  });
});

describe("server-sent events", () => {
  it("reads events split anywhere across chunks, with ids, comments and CRLF", async () => {
    const text =
      ': ping\r\nevent: log\r\nid: c1\r\ndata: {"line":"a"}\r\n\r\nevent: log\nid: c2\ndata: x\ndata: y\n\nevent: end\ndata: {"status":"succeeded"}\n\n';
    const chunks = [text.slice(0, 9), text.slice(9, 23), text.slice(23, 24), text.slice(24, 61), text.slice(61)];
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        for (const chunk of chunks) c.enqueue(new TextEncoder().encode(chunk));
        c.close();
      },
    });
    const events = [];
    for await (const e of readSse(body)) events.push(e);
    expect(events).toEqual([
      { event: "log", id: "c1", data: '{"line":"a"}' },
      { event: "log", id: "c2", data: "x\ny" },
      { event: "end", id: "c2", data: '{"status":"succeeded"}' },
    ]);
  });
});
