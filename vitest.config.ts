/**
 * Two projects: `node` (pure logic, tools, the agent, and Postgres/Docker integration tests) and
 * `workers` (the Worker and the Durable Object inside workerd). Run through `npm test`, which starts
 * the Postgres they use (tools/test/run.ts).
 */
import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";
import { TEST_INGRESS_SECRET } from "./workers/api/test-ingress-secret";
import { newKeyEntry } from "./workers/auth/env-secrets";

/** One throw-away key per run for sealing secret environment values (workers/auth/env-secrets.ts). */
const envSecretsKeys = newKeyEntry("test");

const workersDatabaseUrl =
  process.env.SCALAR_TEST_WORKERS_DATABASE_URL ?? "postgres://postgres:postgres@127.0.0.1:1/unset";

export default defineConfig({
  test: {
    // postgres.js's Cloudflare socket polyfill leaves rejections nobody can catch: sql.end() inside
    // workerd (postgres.js #1202), and a failed connect, whose `tcp.writer.ready.then(…)` has no
    // rejection handler (node_modules/postgres/cf/polyfills.js) — the connection error itself still
    // reaches the caller. Only these exact messages are ignored.
    onUnhandledError(error) {
      const message = (error as { message?: string })?.message ?? "";
      if (
        message.includes("Stream was cancelled.") ||
        message.includes("This socket has been closed.") ||
        message.includes("proxy request failed, cannot connect to the specified address")
      )
        return false;
    },
    projects: [
      {
        test: {
          name: "node",
          include: [
            "core/**/*.test.ts",
            "tools/**/*.test.ts",
            "node-agent/**/*.test.ts",
            "cli/**/*.test.ts",
            "workers/**/*.node.test.ts",
          ],
          exclude: ["**/node_modules/**", "**/*.workerd.test.ts"],
          environment: "node",
          testTimeout: 30_000,
          hookTimeout: 60_000,
        },
      },
      {
        plugins: [
          // SUPABASE_URL: the token issuer the global setup starts (its JWKS is fetched for real).
          cloudflareTest(({ inject }) => ({
            wrangler: { configPath: "./wrangler.toml" },
            miniflare: {
              hyperdrives: { HYPERDRIVE: workersDatabaseUrl },
              bindings: {
                LOG_LEVEL: "warn",
                SUPABASE_URL: inject("supabaseUrl"),
                ENV_SECRETS_KEYS: envSecretsKeys,
                INGRESS_SECRET: TEST_INGRESS_SECRET,
                STRIPE_WEBHOOK_SECRET: "whsec_scalar_test_webhooks",
              },
            },
          })),
        ],
        test: {
          name: "workers",
          globalSetup: ["tools/token-issuer/vitest-global-setup.ts", "workers/api/test-ingress-setup.ts"],
          include: ["workers/**/*.workerd.test.ts", "durable-objects/**/*.workerd.test.ts"],
          testTimeout: 30_000,
        },
      },
    ],
  },
});
