/**
 * The v1 API: every route defined with @hono/zod-openapi, so the route definitions are the contract
 * (`GET /openapi.json`, the page at `GET /docs`, and `docs/openapi.json` via `npm run openapi`).
 */
import type { OpenAPIHono } from "@hono/zod-openapi";
import { timing } from "hono/timing";
import { limitBody } from "../http/body";
import { database } from "../http/database";
import { agentRouter } from "./agent";
import { apiKeysRouter } from "./api-keys";
import { docsPage } from "./docs-page";
import { endpointsRouter } from "./endpoints";
import { invoicesRouter } from "./invoices";
import { invokeRouter, isInvokePath } from "./invoke";
import { jobEventsRouter } from "./job-events";
import { jobLogsRouter } from "./job-logs";
import { jobsRouter } from "./jobs";
import { meRouter } from "./me";
import { operatorRouter } from "./operator";
import { regionsRouter } from "./regions";
import { registriesRouter } from "./registries";
import { createRouter } from "./router";
import { stripeWebhooksRouter } from "./stripe-webhooks";
import { usageRouter } from "./usage";

export const API_INFO = {
  title: "Scalar API",
  version: "1.0.0",
  description:
    "Serverless GPUs: submit jobs and run endpoints on 8-GPU nodes. Authenticate with a Supabase access token or an API key as `Authorization: Bearer <credential>`. Errors are `{ error: { code, message, details?, request_id } }`. Lists are cursor-paginated. Every POST accepts `Idempotency-Key`.",
};

export function createApi() {
  const api = createRouter();
  // Server-Timing on every response (total, and the phases routes mark: auth, claim, write, schedule).
  // Endpoint traffic (invoke.ts) carries the replica's bodies, with a limit of its own.
  const apiBodies: typeof limitBody = (c, next) => (isInvokePath(c.req.path) ? next() : limitBody(c, next));
  api.use("/v1/*", timing({ totalDescription: "in the Worker" }), apiBodies, database);
  api.route("/", invokeRouter as never);
  api.route("/", stripeWebhooksRouter as never);
  const routers = [
    jobsRouter,
    jobEventsRouter,
    jobLogsRouter,
    endpointsRouter,
    apiKeysRouter,
    registriesRouter,
    meRouter,
    usageRouter,
    invoicesRouter,
    regionsRouter,
    operatorRouter,
    agentRouter,
  ];
  for (const router of routers) api.route("/", router);

  api.openAPIRegistry.registerComponent("securitySchemes", "bearerAuth", {
    type: "http",
    scheme: "bearer",
    description:
      "A Supabase access token (JWT) or a Scalar API key (`sk_live_…`). A user in several accounts names one with the `Scalar-Account: <account id>` header.",
  });
  api.openAPIRegistry.registerComponent("securitySchemes", "nodeToken", {
    type: "http",
    scheme: "bearer",
    description: "A per-node agent token (`snt_…`), only for the /v1/agent routes.",
  });

  // Built once per isolate: the routes cannot change while it lives.
  let built: { document: ReturnType<typeof openApiDocument>; page: string } | null = null;
  const reference = () => {
    if (!built) {
      const document = openApiDocument(api);
      built = { document, page: docsPage(document) };
    }
    return built;
  };
  api.get("/openapi.json", (c) => c.json(reference().document));
  api.get("/docs", (c) => c.html(reference().page));
  return api;
}

export function openApiDocument(api: OpenAPIHono<never> | ReturnType<typeof createRouter>) {
  return (api as ReturnType<typeof createRouter>).getOpenAPI31Document({
    openapi: "3.1.0",
    info: API_INFO,
    tags: [
      { name: "Jobs", description: "Batch work: run a container to completion on N GPUs." },
      { name: "Endpoints", description: "Long-lived services kept at their minimum replicas." },
      { name: "API keys", description: "Credentials for programs." },
      { name: "Account", description: "Who you are, your quotas and the regions." },
      { name: "Operators", description: "Fleet operations: the operator account's owners and admins." },
      { name: "Agent", description: "Node agents, with per-node tokens." },
    ],
  });
}
