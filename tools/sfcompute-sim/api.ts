/**
 * The public API routes, as SF Compute serves them (reference §4): v0 market, account and zones,
 * v1 Nodes, VM SSH details. Handlers translate wire ↔ engine; the engine decides.
 */
import { type Context, Hono } from "hono";
import type { Account } from "./accounts";
import type { SimEngine } from "./engine";
import { errorBody, invalid, notFound, SimError } from "./errors";
import { queryOrders } from "./order-query";
import {
  parseContractFilter,
  parseCreateNodes,
  parseExtend,
  parseOrder,
  parseQuote,
  parseRedeploy,
  queryList,
} from "./parse";
import {
  balancesJson,
  contractJson,
  legacyBalanceJson,
  list,
  nodeJson,
  orderJson,
  quoteJson,
  sshJson,
  zoneJson,
} from "./wire";

/** The authenticated account arrives as the app's binding. */
export type ApiEnv = { Bindings: { account: Account } };

export function errorResponse(engine: SimEngine, error: unknown): Response {
  const simError =
    error instanceof SimError
      ? error
      : new SimError(500, "api_error", "Internal server error (sfcompute-sim)", "internal_error");
  if (!(error instanceof SimError)) console.error("[sfcompute-sim] handler failed:", error);
  return Response.json(errorBody(simError, engine.settings.errorStyle), { status: simError.status });
}

async function jsonBody(c: Context): Promise<unknown> {
  const text = await c.req.text();
  if (text.trim() === "") return undefined;
  try {
    return JSON.parse(text);
  } catch {
    throw invalid("The request body is not valid JSON");
  }
}

export function createApiApp(engine: SimEngine): Hono<ApiEnv> {
  const app = new Hono<ApiEnv>();
  const market = engine.market;
  const nodes = engine.nodes;
  const now = () => engine.now();
  const nodeOut = (n: Parameters<typeof nodeJson>[0]) => nodeJson(n, engine.settings.nodes.vmStatusCase);

  app.onError((error) => errorResponse(engine, error));
  app.notFound((c) => errorResponse(engine, notFound(`No route for ${c.req.method} ${c.req.path}`)));

  // ---- v0 market ----

  app.get("/v0/quote", (c) => {
    const q = new URL(c.req.url).searchParams;
    return c.json(quoteJson(market.quote(c.env.account, parseQuote(q))));
  });

  app.post("/v0/orders", async (c) => {
    const key = c.req.header("Idempotency-Key") ?? undefined;
    if (key !== undefined && (key.length === 0 || key.length > 255)) {
      throw invalid("Idempotency-Key must be 1 to 255 characters", "Idempotency-Key");
    }
    const { response } = market.placeOrder(c.env.account, parseOrder(await jsonBody(c)), key);
    return c.json(response, 201);
  });

  app.get("/v0/orders", (c) => {
    const { data, hasMore } = queryOrders(market.listOrders(c.env.account), new URL(c.req.url).searchParams);
    return c.json(list(data.map(orderJson), hasMore));
  });

  app.delete("/v0/orders", (c) => {
    market.cancelAll(c.env.account);
    return c.json({ object: "pending" });
  });

  app.get("/v0/orders/:id", (c) => c.json(orderJson(market.getOrder(c.env.account, c.req.param("id")))));

  app.delete("/v0/orders/:id", (c) => {
    market.cancelOrder(c.env.account, c.req.param("id"));
    return c.json({ object: "pending" });
  });

  // The one place v0 links an order to its contract (§7.1): the cluster it was delivered on.
  app.get("/v0/orders/:id/clusters", (c) => {
    const order = market.getOrder(c.env.account, c.req.param("id"));
    const contract = order.side === "buy" && order.contractId ? market.contracts.get(order.contractId) : undefined;
    const data = contract
      ? [
          {
            object: "kubernetes_cluster",
            name: contract.zone,
            kubernetes_namespace: `sf-${c.env.account.id}`,
            kubernetes_api_url: null,
            kubernetes_ca_cert: null,
            contract: contractJson(market, contract, now()),
          },
        ]
      : [];
    return c.json(list(data));
  });

  app.get("/v0/contracts", (c) => {
    const filter = parseContractFilter(new URL(c.req.url).searchParams);
    return c.json(list(market.listContracts(c.env.account, filter).map((k) => contractJson(market, k, now()))));
  });

  app.get("/v0/contracts/:id", (c) =>
    c.json(contractJson(market, market.ownedContract(c.env.account, c.req.param("id")), now())),
  );

  // ---- account ----

  app.get("/v0/balance", (c) => c.json(legacyBalanceJson(c.env.account)));
  app.get("/v1/balances", (c) => c.json(balancesJson(c.env.account)));
  app.get("/v0/me", (c) =>
    c.json({
      object: "account",
      id: c.env.account.id,
      role: "user",
      can_buy: c.env.account.canBuy,
      can_sell: c.env.account.canSell,
    }),
  );
  app.get("/v1/account/me", (c) =>
    c.json({
      id: c.env.account.id,
      role: "user",
      is_frozen: c.env.account.frozen,
      kyc: "approved",
      submitted_waitlist: false,
      waitlist: false,
      kycb_form_submitted: false,
      created_at: Math.floor(c.env.account.createdAt / 1000),
    }),
  );

  // ---- zones and VMs ----

  app.get("/v0/zones", (c) =>
    c.json(list(engine.settings.catalog.zones.map((z) => zoneJson(z, engine.k.supply, now())))),
  );
  app.get("/v0/zones/:id", (c) => {
    const zone = engine.k.catalog.zones.get(c.req.param("id"));
    if (!zone) throw notFound(`Zone not found: ${c.req.param("id")}`, "zone.not_found");
    return c.json(zoneJson(zone, engine.k.supply, now()));
  });
  app.get("/v0/vms/ssh", (c) => {
    const vmId = c.req.query("vm_id");
    if (!vmId) throw invalid("vm_id is required", "vm_id");
    const { vm } = nodes.vm(c.env.account, vmId);
    return c.json(sshJson(vm, engine.settings.nodes.sshHostname, engine.settings.nodes.sshPort));
  });
  app.get("/v1/vms/images", (c) => c.json(list([])));

  // ---- v1 nodes ----

  app.post("/v1/nodes", async (c) => {
    const created = nodes.create(c.env.account, parseCreateNodes(await jsonBody(c)));
    return c.json({ object: "list", data: created.map(nodeOut) }, 201);
  });

  app.get("/v1/nodes", (c) => {
    const q = new URL(c.req.url).searchParams;
    const ids = queryList(q, "id");
    const names = queryList(q, "name");
    const type = q.get("type") ?? undefined;
    if (type !== undefined && type !== "reserved" && type !== "autoreserved") {
      throw invalid("type must be 'autoreserved' or 'reserved'", "type");
    }
    // The reference (§4.3) lists the three as independent optional filters: given together, a node
    // must match each.
    return c.json({ object: "list", data: nodes.list(c.env.account, { ids, names, type }).map(nodeOut) });
  });

  app.get("/v1/nodes/:id", (c) => c.json(nodeOut(nodes.get(c.env.account, c.req.param("id")))));

  app.delete("/v1/nodes/:id", (c) => {
    nodes.delete(c.env.account, c.req.param("id"));
    return c.body(null, 204);
  });

  app.patch("/v1/nodes/:id/extend", async (c) =>
    c.json(nodeOut(nodes.extend(c.env.account, c.req.param("id"), parseExtend(await jsonBody(c))))),
  );

  app.patch("/v1/nodes/:id/release", (c) => c.json(nodeOut(nodes.release(c.env.account, c.req.param("id")))));

  app.put("/v1/nodes/:id/redeploy", async (c) =>
    c.json(nodeOut(nodes.redeploy(c.env.account, c.req.param("id"), parseRedeploy(await jsonBody(c))))),
  );

  return app;
}
