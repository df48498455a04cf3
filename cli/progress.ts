/**
 * The progress display of `jobs run` on stderr: on a terminal one line redrawn in place (spinner,
 * stage, elapsed time, detail); otherwise a plain line each time the stage or detail changes.
 */
import { duration } from "./output";

const FRAMES = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

export interface ProgressOptions {
  write(text: string): void;
  tty: boolean;
  now(): number;
  /** Terminal width, to keep the redrawn line on one row. */
  columns?: number;
  /** Redraw interval on a terminal; 0 = only on update (tests). */
  intervalMs?: number;
}

export interface Progress {
  update(stage: string, detail?: string | null): void;
  /** A permanent line (above the spinner on a terminal). */
  note(line: string): void;
  /** Writes other output (log lines on stdout or stderr) with the spinner cleared, then redraws it. */
  above(write: () => void): void;
  /** Clears the spinner line; later calls do nothing. */
  stop(): void;
  /** The line a terminal would show now (for tests). */
  frame(): string;
}

export function createProgress(opts: ProgressOptions): Progress {
  const started = opts.now();
  let stage = "";
  let detail = "";
  let tick = 0;
  let stopped = false;
  let drawn = false;
  const frame = () => {
    const text = `${FRAMES[tick % FRAMES.length]} ${stage} ${duration(opts.now() - started)}${detail ? ` · ${detail}` : ""}`;
    const max = (opts.columns ?? 100) - 1;
    return text.length > max ? `${text.slice(0, max - 1)}…` : text;
  };
  const draw = () => {
    if (stopped || !stage) return;
    opts.write(`\r\x1b[2K${frame()}`);
    drawn = true;
  };
  const clear = () => {
    if (drawn) opts.write("\r\x1b[2K");
    drawn = false;
  };
  const timer =
    opts.tty && (opts.intervalMs ?? 100) > 0
      ? setInterval(() => {
          tick += 1;
          draw();
        }, opts.intervalMs ?? 100)
      : null;
  timer?.unref();
  return {
    update(nextStage, nextDetail) {
      const d = nextDetail ?? "";
      if (stopped || (nextStage === stage && d === detail)) return;
      stage = nextStage;
      detail = d;
      if (opts.tty) draw();
      else opts.write(`[${duration(opts.now() - started)}] ${stage}${detail ? `: ${detail}` : ""}\n`);
    },
    note(line) {
      if (opts.tty) {
        clear();
        opts.write(`${line}\n`);
        draw();
      } else opts.write(`${line}\n`);
    },
    above(write) {
      if (opts.tty) clear();
      write();
      if (opts.tty) draw();
    },
    stop() {
      if (stopped) return;
      if (timer) clearInterval(timer);
      if (opts.tty) clear();
      stopped = true;
    },
    frame,
  };
}
