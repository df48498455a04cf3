/**
 * `GET /v1/me`: who the credential is, the account it acts in, its scopes, quotas, rate limits and
 * payment hold.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { ROLES } from "../auth/scopes";
import { ratePlanOf } from "../http/rate-limit";
import { accountHold, heldInvoice, readsBilling } from "./payment-required";
import { quotaUse } from "./quota";
import { BEARER, createRouter, errors, guard, respond } from "./router";
import { Scope, Timestamp, Uuid } from "./schemas";

const Role = z.enum(ROLES).openapi("AccountRole");

const PaymentHold = z
  .object({
    since: Timestamp,
    invoice_id: Uuid,
    month: z.string().openapi({ example: "2026-10" }),
    amount_due_cents: z.number().int().nullable().openapi({ description: "Null without the `billing:read` scope." }),
    currency: z.string().nullable().openapi({ description: "Null without the `billing:read` scope." }),
    hosted_invoice_url: z
      .string()
      .nullable()
      .openapi({ description: "Stripe's page to view and pay it. Null without the `billing:read` scope." }),
  })
  .openapi("PaymentHold", {
    description:
      "The unpaid invoice that keeps the account from starting new jobs and endpoints (`402 payment_required`) until it is paid; running work keeps running.",
  });

const Me = z
  .object({
    user: z.object({ id: Uuid, email: z.string().nullable() }).nullable(),
    api_key: z.object({ id: Uuid, prefix: z.string() }).nullable(),
    account: z
      .object({
        id: Uuid,
        name: z.string(),
        role: Role.nullable(),
        fast_tier_enabled: z.boolean(),
        is_operator: z.boolean(),
        quotas: z.object({
          max_concurrent_gpus: z.number().int(),
          gpus_in_use: z.number().int(),
          monthly_spend_cap_cents: z.number().int().nullable(),
          month_to_date_cents: z
            .number()
            .int()
            .nullable()
            .openapi({ description: "Null without the `billing:read` scope." }),
        }),
        rate_limit: z.object({
          plan: z.string(),
          account_limit: z.number().int(),
          key_limit: z.number().int(),
          window_s: z.number().int(),
          invoke_limit: z
            .number()
            .int()
            .openapi({ description: "Endpoint invoke requests per window for the account, apart from the API's." }),
        }),
        billing: z.object({ payment_hold: PaymentHold.nullable() }),
      })
      .nullable()
      .openapi({ description: "Null when a user in several accounts has not named one (Scalar-Account)." }),
    accounts: z.array(z.object({ id: Uuid, name: z.string(), role: Role })),
    scopes: z.array(Scope),
  })
  .openapi("Me");

export const meRouter = createRouter();

meRouter.openapi(
  createRoute({
    method: "get",
    path: "/v1/me",
    tags: ["Account"],
    summary: "Who am I",
    security: BEARER,
    middleware: guard({ account: false }),
    responses: { 200: { description: "The caller.", content: { "application/json": { schema: Me } } }, ...errors() },
  }),
  async (c) => {
    const caller = c.get("caller");
    const account = caller.account;
    const db = c.get("pg").db;
    // Sent together on the request's connection (postgres.js pipelines them): one round trip.
    const [use, hold] = account
      ? await Promise.all([quotaUse(db, account.id), accountHold(db, account.id)])
      : [null, null];
    const plan = ratePlanOf(caller);
    return respond(
      c,
      Me,
      {
        user: caller.kind === "user" && caller.userId ? { id: caller.userId, email: caller.email } : null,
        api_key: caller.apiKey,
        account:
          account && use
            ? {
                id: account.id,
                name: account.name,
                role: caller.role,
                fast_tier_enabled: account.fastTierEnabled,
                is_operator: account.isOperator,
                quotas: {
                  max_concurrent_gpus: account.maxConcurrentGpus,
                  gpus_in_use: use.gpusInUse,
                  monthly_spend_cap_cents: account.monthlySpendCapCents,
                  month_to_date_cents: readsBilling(caller) ? use.monthToDateCents : null,
                },
                rate_limit: {
                  plan: plan.plan,
                  account_limit: plan.accountLimit,
                  key_limit: plan.keyLimit,
                  window_s: plan.windowS,
                  invoke_limit: plan.invokeLimit,
                },
                billing: {
                  payment_hold: hold && { since: hold.since, ...heldInvoice(hold, readsBilling(caller)) },
                },
              }
            : null,
        accounts: caller.memberships.map((m) => ({ id: m.accountId, name: m.name, role: m.role })),
        scopes: caller.scopes,
      },
      200,
    );
  },
);
