/** Structured JSON log lines on stdout, one object per line (journald and `jq` read them as is). */
export type Level = "debug" | "info" | "warn" | "error";
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type Logger = (level: Level, msg: string, fields?: Record<string, unknown>) => void;

export function jsonLogger(
  minLevel: Level = "info",
  write: (line: string) => void = (l) => process.stdout.write(`${l}\n`),
): Logger {
  return (level, msg, fields) => {
    if (ORDER[level] < ORDER[minLevel]) return;
    write(JSON.stringify({ at: new Date().toISOString(), level, msg, ...fields }));
  };
}

export const silentLogger: Logger = () => {};

export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
