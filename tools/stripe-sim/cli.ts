/**
 * `npx tsx tools/stripe-sim/cli.ts [--port 12111] [--host 127.0.0.1] [--api-key sk_test_… (repeatable)]`
 * Serves the simulated Stripe API until interrupted.
 */
import { parseArgs } from "node:util";
import { startStripeSimulator } from "./server";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "12111" },
    host: { type: "string", default: "127.0.0.1" },
    "api-key": { type: "string", multiple: true },
  },
  strict: true,
});

const port = Number(values.port);
if (!Number.isInteger(port) || port < 0 || port > 65_535) {
  console.error(`stripe-sim: --port must be an integer from 0 to 65535, got ${values.port}`);
  process.exit(2);
}
const apiKeys = values["api-key"];

const running = await startStripeSimulator({ port, host: values.host, apiKeys });
console.log(`stripe-sim listening on ${running.url}`);
console.log(`  keys     ${apiKeys?.length ? apiKeys.join(", ") : "any sk_test_… / rk_test_… key"}`);
console.log(`  SDK      new Stripe(key, { host: "${running.host}", port: ${running.port}, protocol: "http" })`);

const stop = async () => {
  await running.close();
  process.exit(0);
};
process.on("SIGINT", () => void stop());
process.on("SIGTERM", () => void stop());
