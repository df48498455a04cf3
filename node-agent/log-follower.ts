/**
 * Follows one container's log from the engine into the log shipper: stdout and stderr apart, one
 * `seq` per line in the engine's order, lines longer than the wire allows split in pieces. Resumes
 * after the last acknowledged entry (the cursor in the state), so a restarted agent ships what is
 * missing with the same `seq` numbers and nothing twice.
 */
import type { Clock } from "./clock";
import type { ContainerEngine, LogEntry, LogFollow } from "./docker/engine";
import type { LogShipper } from "./log-shipper";
import type { AgentState, LogCursor } from "./state";

export const MAX_LINE_CHARS = 16_384; // LogLine.line

export function splitLine(text: string, max = MAX_LINE_CHARS): string[] {
  if (text.length <= max) return [text];
  const pieces: string[] = [];
  let rest = text;
  while (rest.length > max) {
    let cut = max;
    const code = rest.charCodeAt(cut - 1);
    if (code >= 0xd800 && code <= 0xdbff) cut--; // keep a surrogate pair whole
    pieces.push(rest.slice(0, cut));
    rest = rest.slice(cut);
  }
  pieces.push(rest);
  return pieces;
}

/** A follow, and what tells an engine's silent stream from one the agent holds back. */
export interface ContainerLogFollow extends LogFollow {
  /** When (`Clock.monotonic`) the engine last gave an entry, or the follow was opened or last resumed. */
  readonly lastActivity: number;
  /**
   * The engine has given an entry. Before that it may still be reading a long log from its start
   * up to `since`, server-side: a silence that says nothing about the stream yet.
   */
  readonly delivered: boolean;
  /**
   * Opened from a cursor (`since`): only then does the engine read the log up to a point before it
   * sends anything. From the start, a log with any line in it gives its first entry at once.
   */
  readonly fromCursor: boolean;
  /** Paused until the shipper has room: a silence of the agent's making, not the engine's. */
  readonly held: boolean;
}

/**
 * Opens a follow from the cursor. `abandoned` aborts once the agent has given up on the follow
 * before the engine opened it: entries are dropped from then on and a follow that opens later is
 * stopped at once.
 */
export async function followContainerLog(
  engine: ContainerEngine,
  shipper: LogShipper,
  state: AgentState,
  clock: Pick<Clock, "monotonic">,
  placementId: string,
  containerId: string,
  abandoned?: AbortSignal,
): Promise<ContainerLogFollow> {
  const cursor: LogCursor | undefined = state.placement(placementId).log;
  let seq = cursor ? cursor.seq + 1 : 0;
  let lastTs = cursor?.ts ?? "";
  let sameTs = cursor?.same_ts ?? 0;
  let skip = cursor?.same_ts ?? 0;
  let follow: LogFollow | null = null;
  let paused = false;
  let lastActivity = clock.monotonic();
  let delivered = false;

  const hold = () => {
    if (paused || !follow) return;
    paused = true;
    follow.pause();
    void shipper.whenSpace().then(() => {
      paused = false;
      lastActivity = clock.monotonic();
      follow?.resume();
    });
  };

  const sink = (entry: LogEntry) => {
    // The exit was reported without the rest of the log: lines now would ship after it, and once
    // the placement is forgotten their acknowledgement would bring its cursor back.
    if (abandoned?.aborted) return;
    lastActivity = clock.monotonic();
    delivered = true;
    if (cursor && entry.ts < cursor.ts) return;
    if (cursor && entry.ts === cursor.ts && skip > 0) {
      skip--; // shipped and acknowledged before
      return;
    }
    if (entry.ts === lastTs) sameTs++;
    else {
      lastTs = entry.ts;
      sameTs = 1;
    }
    const at = Date.parse(entry.ts);
    const pieces = splitLine(entry.text);
    pieces.forEach((line, i) => {
      const s = seq++;
      const last = i === pieces.length - 1;
      shipper.push(
        { placement_id: placementId, seq: s, stream: entry.stream, at, line },
        last ? { seq: s, ts: entry.ts, same_ts: sameTs } : null,
      );
    });
    if (shipper.full) hold();
  };

  const opened = await engine.followLogs(containerId, cursor?.ts ?? null, sink);
  follow = opened;
  if (abandoned?.aborted) opened.stop();
  else if (shipper.full) hold();
  return {
    pause: () => opened.pause(),
    resume: () => opened.resume(),
    stop: () => opened.stop(),
    ended: opened.ended,
    get lastActivity() {
      return lastActivity;
    },
    get delivered() {
      return delivered;
    },
    fromCursor: cursor !== undefined,
    get held() {
      return paused;
    },
  };
}
