/**
 * Global setup of the `workers` test project: one token issuer per run, its URL bound as the Worker's
 * SUPABASE_URL (vitest.config.ts) and its private key provided to the tests, which mint with it.
 */
import type { TestProject } from "vitest/node";
import type {} from "./provided-context";
import { startTokenIssuer } from "./server";

export default async function setup(project: TestProject) {
  const issuer = await startTokenIssuer();
  project.provide("supabaseUrl", issuer.url);
  project.provide("issuerKeys", { kid: issuer.keys.kid, privateJwk: issuer.keys.privateJwk });
  return () => issuer.close();
}
