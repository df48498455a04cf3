/** Human quantities on the command line → the API's integers. */
import { UsageError } from "./errors";

/** `2` or `0.5` cores, or `500m` millicores → millicores. */
export function parseCpu(raw: string, flag = "--cpu"): number {
  const s = raw.trim();
  const milli = /^(\d+)m$/.exec(s);
  if (milli) return Number(milli[1]);
  if (/^\d+(\.\d+)?$/.test(s)) return Math.round(Number(s) * 1000);
  throw new UsageError(`${flag} takes cores (\`2\`, \`0.5\`) or millicores (\`500m\`), not \`${raw}\``);
}

const MEMORY_UNITS: Record<string, number> = {
  "": 1,
  mi: 1,
  mib: 1,
  m: 1_000_000 / 1_048_576,
  mb: 1_000_000 / 1_048_576,
  gi: 1024,
  gib: 1024,
  g: 1_000_000_000 / 1_048_576,
  gb: 1_000_000_000 / 1_048_576,
  ti: 1024 * 1024,
  tib: 1024 * 1024,
};

/** `16Gi`, `512Mi`, `16G`, or a plain number of MiB → MiB (rounded up). */
export function parseMemory(raw: string, flag = "--memory"): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(raw.trim());
  const factor = m ? MEMORY_UNITS[(m[2] ?? "").toLowerCase()] : undefined;
  if (!m || factor === undefined) {
    throw new UsageError(`${flag} takes a size such as \`16Gi\`, \`512Mi\` or a number of MiB, not \`${raw}\``);
  }
  return Math.ceil(Number(m[1]) * factor);
}

const DURATION_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

/** `90`, `90s`, `30m`, `2h`, `1h30m`, `1d` → seconds. */
export function parseDuration(raw: string, flag = "--max-runtime"): number {
  const s = raw.trim().toLowerCase();
  if (/^\d+$/.test(s)) return Number(s);
  const parts = [...s.matchAll(/(\d+)([smhd])/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join("") !== s) {
    throw new UsageError(`${flag} takes a duration such as \`90s\`, \`30m\`, \`2h\` or \`1h30m\`, not \`${raw}\``);
  }
  return parts.reduce((sum, p) => sum + Number(p[1]) * (DURATION_UNITS[p[2] as string] ?? 0), 0);
}
