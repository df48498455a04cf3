/**
 * `jobs logs` and `endpoints logs`: every line so far, or (`-f`) the stream until its owner ends or
 * Ctrl-C; stdout lines to stdout, stderr lines to stderr, `--json` one API line per line.
 */
import type { Connection } from "../api/client";
import type { Context } from "../context";
import { EXIT } from "../errors";
import { followLogs, type LogOwner, readLogs, retryNote } from "../logs";

export async function showLogs<Line extends { stream: string }>(
  ctx: Context,
  conn: Connection,
  id: string,
  opts: {
    owner: LogOwner;
    follow: boolean;
    /** A line as printed (without `--json`). */
    text: (line: Line) => string;
    /** What to print on stderr when the followed stream ends (without `--json`). */
    ended: (status: string | null) => Promise<string>;
    /** The part of the logs a line belongs to (a job's attempt): a header on stderr when it changes (without `--json`). */
    section?: (line: Line) => { key: number; header: string };
  },
): Promise<number> {
  const { io } = ctx;
  let section = 1;
  const print = (line: Line) => {
    if (ctx.json) return io.stdout(`${JSON.stringify(line)}\n`);
    const part = opts.section?.(line);
    if (part && part.key !== section) {
      io.stderr(`${part.header}\n`);
      section = part.key;
    }
    (line.stream === "stderr" ? io.stderr : io.stdout)(`${opts.text(line)}\n`);
  };
  if (!opts.follow) {
    for await (const line of readLogs(conn, id, opts.owner)) print(line as unknown as Line);
    return EXIT.ok;
  }
  const abort = new AbortController();
  const remove = io.onInterrupt(() => abort.abort());
  try {
    const onWait = (message: string) => io.stderr(`${message}\n`);
    // A stream resumed after a cut repeats the status: each note once.
    let noted = "";
    for await (const item of followLogs(conn, id, { signal: abort.signal, owner: opts.owner, onWait })) {
      if (item.kind === "log") print(item.line as unknown as Line);
      else if (ctx.json) continue;
      else if (item.kind === "status") {
        const note = retryNote(item.status);
        if (note && note !== noted) io.stderr(`${note}\n`);
        noted = note ?? "";
      } else io.stderr(`${await opts.ended(item.status)}\n`);
    }
  } finally {
    remove();
  }
  return abort.signal.aborted ? EXIT.interrupted : EXIT.ok;
}
