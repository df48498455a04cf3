/**
 * Cursor pagination for every list: newest first by (created_at, id), or by a monotonic id. The
 * cursor is opaque to clients (base64url JSON) and a bad one is a 400, never a 500.
 */
import { type AnyColumn, and, eq, lt, or, type SQL, sql } from "drizzle-orm";
import { ApiError } from "./errors";

export const DEFAULT_PAGE_SIZE = 20;
export const MAX_PAGE_SIZE = 100;

export interface TimeCursor {
  t: string;
  id: string;
}

function encode(value: unknown): string {
  const bytes = new TextEncoder().encode(JSON.stringify(value));
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replaceAll("=", "");
}

function decode(cursor: string): unknown {
  try {
    const binary = atob(cursor.replaceAll("-", "+").replaceAll("_", "/"));
    const bytes = Uint8Array.from(binary, (ch) => ch.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw invalidCursor();
  }
}

function invalidCursor(): ApiError {
  return new ApiError(400, "invalid_cursor", "cursor is not one this API returned", { field: "cursor" });
}

/**
 * `t` is the row's timestamp at Postgres's full (microsecond) precision, selected with
 * `cursorTime(column)`; a JavaScript Date would round it and repeat rows across pages.
 */
export function encodeTimeCursor(t: string, id: string): string {
  return encode({ t, id } satisfies TimeCursor);
}

/** A timestamptz column as the exact text a cursor carries. */
export const cursorTime = (column: AnyColumn) =>
  sql<string>`to_char(${column} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;
const CURSOR_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * `idPattern`: what the list's ids look like (uuids unless said), so a forged id (a NUL in it, say)
 * is refused here, not by Postgres.
 */
export function decodeTimeCursor(cursor: string | undefined, idPattern: RegExp = UUID): TimeCursor | null {
  if (cursor === undefined) return null;
  const value = decode(cursor) as Partial<TimeCursor> | null;
  const t = value?.t;
  const id = value?.id;
  // The text must be a real instant Postgres takes: no 30 February (Date rolls it into March), no year 0.
  if (typeof t !== "string" || !CURSOR_TIME.test(t) || t.startsWith("0000")) throw invalidCursor();
  const parsed = new Date(t);
  if (Number.isNaN(parsed.getTime()) || parsed.toISOString().slice(0, 23) !== t.slice(0, 23)) throw invalidCursor();
  if (typeof id !== "string" || id.length > 128 || !idPattern.test(id)) throw invalidCursor();
  return { t, id };
}

export function encodeSeqCursor(id: number): string {
  return encode({ after: id });
}

/** The largest value of a Postgres `integer` (int4) column. */
export const MAX_INT4 = 2_147_483_647;

/** `max`: the largest value the list's column holds, so a forged larger one is refused here, not by Postgres. */
export function decodeSeqCursor(cursor: string | undefined, max = Number.MAX_SAFE_INTEGER): number | null {
  if (cursor === undefined) return null;
  const after = (decode(cursor) as { after?: unknown } | null)?.after;
  if (typeof after !== "number" || !Number.isSafeInteger(after) || after < 0 || after > max) throw invalidCursor();
  return after;
}

/** Fetch `limit + 1` rows; this trims the extra one and says whether there is a next page. */
export function page<T>(
  rows: T[],
  limit: number,
  cursorOf: (last: T) => string,
): { data: T[]; next_cursor: string | null } {
  const more = rows.length > limit;
  const data = more ? rows.slice(0, limit) : rows;
  const last = data[data.length - 1];
  return { data, next_cursor: more && last !== undefined ? cursorOf(last) : null };
}

/** Rows after `cursor` in (time desc, id desc) order. */
export function beforeCursor(time: AnyColumn, id: AnyColumn, cursor: TimeCursor): SQL {
  const t = sql`${cursor.t}::timestamptz`;
  return or(lt(time, t), and(eq(time, t), lt(id, cursor.id)))!;
}
