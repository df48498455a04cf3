/** Human output: aligned tables, key/value blocks, ages and durations. Machine output is JSON (`--json`). */
import type { PlacementMetrics } from "./api/client";
import type { Options, Values } from "./args";

/** Columns padded to their widest cell; the last column is not padded. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return `${[line(headers), ...rows.map(line)].join("\n")}\n`;
}

/** `label  value` lines, labels aligned; empty values are left out. */
export function keyValues(entries: [string, string | number | null | undefined][]): string {
  const kept = entries.filter(([, v]) => v !== null && v !== undefined && v !== "") as [string, string | number][];
  const width = Math.max(0, ...kept.map(([k]) => k.length));
  return kept.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join("\n") + (kept.length ? "\n" : "");
}

/** `3.2s`, `4m05s`, `2h03m`. */
export function duration(ms: number): string {
  const s = Math.max(0, ms) / 1000;
  if (s < 60) return `${s.toFixed(1)}s`;
  const whole = Math.floor(s);
  if (whole < 3600) return `${Math.floor(whole / 60)}m${String(whole % 60).padStart(2, "0")}s`;
  return `${Math.floor(whole / 3600)}h${String(Math.floor((whole % 3600) / 60)).padStart(2, "0")}m`;
}

/** How long ago, coarse: `12s`, `5m`, `3h`, `2d`. */
export function age(iso: string | null | undefined, now: number): string {
  if (!iso) return "-";
  const s = Math.max(0, Math.floor((now - Date.parse(iso)) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

const MIB = 1024 * 1024;

/** MiB as GiB to one decimal, without a `.0`: `61.2`, `16`. */
const gib = (mib: number) => String(Math.round(mib / 102.4) / 10);

/** `61.2/79.6 GiB`; a use under 1 GiB in MiB, `412 MiB/16 GiB`; without a total, the use alone. */
function inUse(usedMib: number, totalMib: number | null): string {
  const total = totalMib === null ? "" : `/${gib(totalMib)} GiB`;
  if (usedMib < 1024) return `${Math.round(usedMib)} MiB${total}`;
  return totalMib === null ? `${gib(usedMib)} GiB` : `${gib(usedMib)}${total}`;
}

/**
 * A placement's resource use at its node's last heartbeat, on one line:
 * `GPU 0: 87 % · 61.2/79.6 GiB   CPU 143 %   mem 3.1/16 GiB   (4s ago)`. What the node did not
 * report is left out (GPUs on a host without nvidia-smi, CPU at the container's first heartbeat).
 */
export function metricsText(m: PlacementMetrics, now: number): string {
  const gpus = m.gpus.flatMap((g) => {
    const figures = [
      g.utilisation_pct === null ? null : `${Math.round(g.utilisation_pct)} %`,
      g.memory_used_mib === null ? null : inUse(g.memory_used_mib, g.memory_total_mib),
    ].filter((f) => f !== null);
    return figures.length ? [`GPU ${g.index}: ${figures.join(" · ")}`] : [];
  });
  const limit = m.memory_limit_bytes === null ? null : m.memory_limit_bytes / MIB;
  return [
    gpus.join(", "),
    m.cpu_pct === null ? "" : `CPU ${Math.round(m.cpu_pct)} %`,
    m.memory_bytes === null ? "" : `mem ${inUse(m.memory_bytes / MIB, limit)}`,
    `(${age(m.at, now)} ago)`,
  ]
    .filter((part) => part !== "")
    .join("   ");
}

export function shorten(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/** A word as a POSIX shell reads it back: as is when plain, else single-quoted. */
export function shellWord(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/**
 * The command line of a list's next page: the same filters (a cursor marks a place in the list, not
 * the query) and the cursor. Only the command's own options are repeated (never a global one, such
 * as a credential).
 */
export function nextPageCommand(
  command: { words: readonly string[]; options: Options },
  values: Values,
  cursor: string,
): string {
  const words = ["scalar", ...command.words];
  for (const name of Object.keys(command.options).filter((n) => n !== "cursor")) {
    const value = values[name];
    for (const v of Array.isArray(value) ? value : [value]) {
      if (v === true) words.push(`--${name}`);
      else if (typeof v === "string") words.push(`--${name}`, shellWord(v));
    }
  }
  words.push("--cursor", shellWord(cursor));
  return words.join(" ");
}
