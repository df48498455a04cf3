/**
 * `POST /v1/stripe/webhooks`: Stripe's signed events about the invoices it collects
 * (workers/billing/webhooks.ts). No bearer token: the `Stripe-Signature` header is the credential.
 * Not in the OpenAPI document (Stripe's, not a customer's, route); docs/api.md "Invoices" describes it.
 */
import { Hono } from "hono";
import { handleStripeWebhook, SIGNATURE_HEADER } from "../billing/webhooks";
import type { ApiEnv } from "../http/api-env";

export const stripeWebhooksRouter = new Hono<ApiEnv>();

stripeWebhooksRouter.post("/v1/stripe/webhooks", async (c) => {
  const result = await handleStripeWebhook(
    c.env,
    c.get("pg").db,
    await c.req.text(),
    c.req.header(SIGNATURE_HEADER),
    c.get("log"),
  );
  return c.json({ received: true, ...result }, 200);
});
