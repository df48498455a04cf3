/** Reading one of the caller's jobs: another account's job is a 404, the same as no job at all. */
import { and, eq, sql } from "drizzle-orm";
import type { Db } from "../db/client";
import { literal } from "../db/round-trips";
import { jobs } from "../db/schema";
import { ApiError } from "../http/errors";
import type { JobRow } from "./views";

/** Its values written as literals: a statement without parameters is one round trip, not two. */
export async function loadJob(db: Db, accountId: string, id: string): Promise<JobRow> {
  const [row] = await db
    .select()
    .from(jobs)
    .where(and(eq(jobs.id, sql.raw(literal(id))), eq(jobs.accountId, sql.raw(literal(accountId)))));
  if (!row) throw new ApiError(404, "not_found", `no job ${id} in this account`);
  return row;
}
