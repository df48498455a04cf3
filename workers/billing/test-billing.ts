/** Shared by the billing tests in workerd: usage to bill. */
import { sql } from "../api/test-support";

/** One hour of one Flex H100 GPU for the account, in the second hour of the month starting at `monthStartMs`. */
export async function addFlexHour(accountId: string, monthStartMs: number): Promise<void> {
  await sql(
    `insert into usage_events (account_id, job_run_id, tier, gpu_model, gpu_count, gpu_seconds, period_start, period_end)
     values ($1, $2, 'flex', 'H100', 1, 3600, $3, $4)`,
    [
      accountId,
      `run-${crypto.randomUUID()}`,
      new Date(monthStartMs + 3_600_000).toISOString(),
      new Date(monthStartMs + 7_200_000).toISOString(),
    ],
  );
}
