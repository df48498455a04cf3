/**
 * Two projects: `node` (pure logic, tools, the agent, and Postgres/Docker integration tests) and
 * `workers` (the Worker and the Durable Object inside workerd). Run through `npm test`, which starts
 * the Postgres they use (tools/test/run.ts).
 */
import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

const workersDatabaseUrl =
  process.env.SCALAR_TEST_WORKERS_DATABASE_URL ?? "postgres://postgres:postgres@127.0.0.1:1/unset";

export default defineConfig({
  test: {
    // postgres.js's sql.end() inside workerd leaves these rejections behind (postgres.js #1202).
    onUnhandledError(error) {
      const message = (error as { message?: string })?.message ?? "";
      if (message.includes("Stream was cancelled.") || message.includes("This socket has been closed.")) return false;
    },
    projects: [
      {
        test: {
          name: "node",
          include: ["core/**/*.test.ts", "tools/**/*.test.ts", "node-agent/**/*.test.ts", "workers/**/*.node.test.ts"],
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
              bindings: { LOG_LEVEL: "warn", SUPABASE_URL: inject("supabaseUrl") },
            },
          })),
        ],
        test: {
          name: "workers",
          globalSetup: ["tools/token-issuer/vitest-global-setup.ts"],
          include: ["workers/**/*.workerd.test.ts", "durable-objects/**/*.workerd.test.ts"],
          testTimeout: 30_000,
        },
      },
    ],
  },
});
