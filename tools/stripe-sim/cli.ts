/**
 * `npx tsx tools/stripe-sim/cli.ts [--port 12111] [--host 127.0.0.1] [--api-key sk_test_… (repeatable)]
 *   [--webhook URL (repeatable)] [--webhook-secret whsec_…]`
 * Serves the simulated Stripe API until interrupted; invoice events go to each --webhook URL, signed
 * with --webhook-secret (printed when generated).
 */
import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";
import { startStripeSimulator } from "./server";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "12111" },
    host: { type: "string", default: "127.0.0.1" },
    "api-key": { type: "string", multiple: true },
    webhook: { type: "string", multiple: true },
    "webhook-secret": { type: "string" },
  },
  strict: true,
});

const port = Number(values.port);
if (!Number.isInteger(port) || port < 0 || port > 65_535) {
  console.error(`stripe-sim: --port must be an integer from 0 to 65535, got ${values.port}`);
  process.exit(2);
}
const apiKeys = values["api-key"];

const webhookSecret = values["webhook-secret"] ?? `whsec_${randomBytes(24).toString("hex")}`;
const webhooks = (values.webhook ?? []).map((url) => ({ url, secret: webhookSecret }));

const running = await startStripeSimulator({ port, host: values.host, apiKeys, webhooks });
console.log(`stripe-sim listening on ${running.url}`);
console.log(`  keys     ${apiKeys?.length ? apiKeys.join(", ") : "any sk_test_… / rk_test_… key"}`);
console.log(`  SDK      new Stripe(key, { host: "${running.host}", port: ${running.port}, protocol: "http" })`);
if (webhooks.length > 0) console.log(`  webhooks ${webhooks.map((w) => w.url).join(", ")}   secret ${webhookSecret}`);

const stop = async () => {
  await running.close();
  process.exit(0);
};
process.on("SIGINT", () => void stop());
process.on("SIGTERM", () => void stop());
