/**
 * What an integration test needs from the machine (Postgres, a Docker engine…). Outside CI a missing
 * part skips the test with the reason; with CI=true it fails loudly instead.
 */
export type Part = "postgres" | "docker" | "registry";

export const inCi = (): boolean => process.env.CI === "true" || process.env.CI === "1";

export function requirePart(part: Part, present: unknown, hint: string): void {
  if (present) return;
  throw new Error(`required part missing: ${part}. ${hint}`);
}

/** For `describe.skipIf(!has(part))`: true when present; in CI always true, so the test runs and fails. */
export function has(part: Part): boolean {
  const present =
    part === "postgres"
      ? Boolean(process.env.SCALAR_TEST_PG_ADMIN_URL)
      : part === "docker"
        ? process.env.SCALAR_TEST_DOCKER === "1"
        : process.env.SCALAR_TEST_REGISTRY === "1";
  return present || inCi();
}
