/** Audit rows for what callers do through the API (job status changes are audited by a trigger). */
import { actorOf, type Caller } from "../auth/caller";
import type { Db } from "../db/client";
import { auditLog } from "../db/schema";

type Writer = Pick<Db, "insert">;

export interface AuditEntry {
  action: string;
  targetType: "job" | "endpoint" | "api_key" | "node" | "registry_credentials";
  targetId: string;
  data?: Record<string, unknown>;
}

/** The row of an action in the caller's account, with the caller (user or API key) as the actor. */
export function auditRow(caller: Caller, accountId: string, entry: AuditEntry): typeof auditLog.$inferInsert {
  return { accountId, ...actorOf(caller), ...entry, data: entry.data ?? {} };
}

/** Writes an action in the caller's account, with the caller (user or API key) as the actor. */
export async function audit(db: Writer, caller: Caller, accountId: string, entry: AuditEntry): Promise<void> {
  await db.insert(auditLog).values(auditRow(caller, accountId, entry));
}

/** How the audit log names an operator: `api_key:<id>` or `user:<id>`. */
export function operatorId(caller: Caller): string {
  return caller.apiKey ? `api_key:${caller.apiKey.id}` : `user:${caller.userId}`;
}

/** An operator action: actor type `operator`, recorded in the operator's account. */
export async function auditOperator(db: Writer, caller: Caller, entry: AuditEntry): Promise<void> {
  await db.insert(auditLog).values({
    accountId: caller.account?.id ?? null,
    actorType: "operator",
    actorId: operatorId(caller),
    ...entry,
    data: entry.data ?? {},
  });
}
