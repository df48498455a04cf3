/**
 * Open `follow=true` log streams (tails), counted per account across isolates in `log_tails`. Each
 * holds a Postgres connection for up to 10 minutes, so an account may hold only so many at once; a
 * tail also checks now and then that its caller may still read (a revoked or expired API key, a
 * member removed from the account), and ends when it may not. A tail whose isolate died stops
 * counting once its row has not been renewed for `TAIL_STALE_S`.
 */
import type { Caller } from "../auth/caller";
import type { Sql } from "../db/client";
import { literal, pipelinedWrite } from "../db/round-trips";
import { ApiError } from "../http/errors";

/** Follow streams one account may hold open at once. */
export const MAX_TAILS_PER_ACCOUNT = 50;
/** How often a tail renews its row and checks its caller. */
export const TAIL_CHECK_MS = 10_000;
/** A row not renewed for this long is a tail that died without closing. */
const TAIL_STALE_S = 3 * (TAIL_CHECK_MS / 1000);
/** The first key of the two-key advisory lock taken while admitting an account's tail. */
const TAIL_LOCK_SPACE = 0x4c544149; // "LTAI"

/** Counts the account's live tails under its lock and adds this one, or throws 429. */
export async function openTail(sql: Sql, accountId: string): Promise<string> {
  const id = crypto.randomUUID();
  if (!(await admitTail(sql, accountId, id))) {
    throw new ApiError(
      429,
      "too_many_log_streams",
      `this account already follows ${MAX_TAILS_PER_ACCOUNT} log streams at once; close one (or read pages without follow)`,
      { limit: MAX_TAILS_PER_ACCOUNT },
      { "Retry-After": String(TAIL_CHECK_MS / 1000) },
    );
  }
  return id;
}

/** Adds tail `id` if the account holds fewer live tails than its limit, sweeping its stale ones. */
async function admitTail(sql: Sql, accountId: string, id: string): Promise<boolean> {
  const account = literal(accountId);
  const fresh = `seen_at > now() - make_interval(secs => ${TAIL_STALE_S})`;
  // The count runs after the lock, in a statement of its own, so it sees tails admitted meanwhile.
  const [added] = await pipelinedWrite(
    sql,
    `select pg_advisory_xact_lock(${TAIL_LOCK_SPACE}, hashtext(${account}))`,
    `with stale as (delete from log_tails where account_id = ${account} and not (${fresh}))
     insert into log_tails (id, account_id)
     select ${literal(id)}, ${account}
      where (select count(*) from log_tails where account_id = ${account} and ${fresh}) < ${MAX_TAILS_PER_ACCOUNT}
     returning id`,
  );
  return added !== undefined;
}

/** What a tail checks of its caller. */
type TailCaller = Pick<Caller, "userId" | "apiKey">;

/**
 * Whether the caller may still read the account's logs: the user still a member; for an API key, as
 * `apiKeyCaller` (workers/auth/caller.ts) takes one, the key neither revoked nor expired and its
 * creator still a member of its account (a deleted creator leaves `created_by` null: no member).
 */
function mayStillRead(caller: TailCaller, accountId: string): string {
  if (caller.apiKey) {
    return `exists (select 1 from api_keys k
                      join memberships m on m.account_id = k.account_id and m.user_id = k.created_by
                     where k.id = ${literal(caller.apiKey.id)} and k.account_id = ${literal(accountId)}
                       and k.revoked_at is null and (k.expires_at is null or k.expires_at > now()))`;
  }
  if (caller.userId === null) return "false";
  return `exists (select 1 from memberships where user_id = ${literal(caller.userId)}
                   and account_id = ${literal(accountId)})`;
}

/**
 * What a tail's periodic check found: `live` (renewed), `revoked` (its caller may no longer read)
 * or `crowded` (its row was swept as stale, its isolate stalled, and the account's other tails
 * took the place meanwhile).
 */
export type TailCheck = "live" | "revoked" | "crowded";

/** Renews the tail's row (admitting it again, within the limit, if a stale sweep took it) and checks its caller. */
export async function renewTail(sql: Sql, tailId: string, caller: TailCaller, accountId: string): Promise<TailCheck> {
  const [row] = await sql.unsafe<{ allowed: boolean; renewed: boolean }[]>(
    `with renewed as (update log_tails set seen_at = now() where id = ${literal(tailId)} returning id)
     select ${mayStillRead(caller, accountId)} as allowed, exists (select 1 from renewed) as renewed`,
  );
  if (row?.allowed !== true) return "revoked";
  if (row.renewed) return "live";
  return (await admitTail(sql, accountId, tailId)) ? "live" : "crowded";
}

export async function closeTail(sql: Sql, tailId: string): Promise<void> {
  await sql.unsafe(`delete from log_tails where id = ${literal(tailId)}`);
}
