/**
 * A local stand-in for the part of Stripe's v1 API that Scalar's billing uses: customers, invoice
 * items and invoices (create, finalize, pay, void, mark uncollectible, retrieve, list), their events
 * and signed webhook deliveries (./webhooks), with Stripe's bearer auth, error envelope, idempotency
 * rules and pagination, plus fault injection and inspection for tests.
 *
 * `sim.fetch` is the whole API as a fetch handler using only Web-standard APIs, so it runs in Node and
 * inside workerd, in-process:
 *
 *   new Stripe("sk_test_…", { httpClient: Stripe.createFetchHttpClient((url, init) => sim.fetch(new Request(url, init))) })
 *
 * and `startStripeSimulator` (./server) puts the same handler behind a Node HTTP server for
 * `new Stripe("sk_test_…", { host: "127.0.0.1", port, protocol: "http" })`.
 *
 * Follows /work/shared/reference/platform-facts.md (d) and Stripe's API reference; README.md lists
 * what is and is not implemented.
 */
import type Stripe from "stripe";
import {
  cardDeclined,
  invalidRequest,
  parameterInvalid,
  parameterMissing,
  parametersExclusive,
  resourceMissing,
  type StripeErrorBody,
  StripeSimError,
  unsupported,
} from "./errors";
import {
  canonical,
  type FormObject,
  multiplyRound,
  parseForm,
  plain,
  type Schema,
  type Spec,
  validate,
} from "./params";
import { enabledFor, type SimEvent, type SimWebhookEndpoint, type WebhookOptions, WebhookSender } from "./webhooks";

/**
 * The JSON form of an SDK type: stripe-node 23 turns decimal strings (`quantity_decimal`,
 * `unit_amount_decimal`) into `Stripe.Decimal` objects when it parses a response, so on the wire
 * they are strings. Everything else is the SDK's type unchanged, so `tsc` flags drift on upgrade.
 */
export type Wire<T> = T extends Stripe.Decimal
  ? string
  : T extends readonly (infer U)[]
    ? Wire<U>[]
    : T extends object
      ? { [K in keyof T]: Wire<T[K]> }
      : T;

export type SimCustomer = Wire<Stripe.Customer>;
export type SimInvoiceItem = Wire<Stripe.InvoiceItem>;
export type SimInvoice = Wire<Stripe.Invoice>;
export type SimLineItem = Wire<Stripe.InvoiceLineItem>;
export type SimList<T> = Omit<Wire<Stripe.ApiList<never>>, "data"> & { data: T[] };

/** The API version stripe-node 23.1.0 sends (and the one the simulator answers with by default). */
export const STRIPE_API_VERSION = "2026-10-28.endive";
export const SIM_ACCOUNT_ID = "acct_1StripeSimLocal0";
const HOUR_S = 3600;
const DAY_MS = 86_400_000;

export interface StripeSimulatorOptions {
  /** The clock, epoch ms (default `Date.now`). Stripe's timestamps are unix seconds of it. */
  now?: () => number;
  /** Accepted secret keys. Default: any `sk_test_…` or `rk_test_…` key. */
  apiKeys?: readonly string[];
  /** `account_name` on invoices (default "Scalar (stripe-sim)"). */
  accountName?: string;
  /**
   * Finalize drafts with `auto_advance: true` at `automatically_finalizes_at` (created + 1 h), as
   * Stripe does; checked lazily on each request and inspection (default true).
   */
  autoFinalize?: boolean;
  /**
   * Also save parameter-validation errors (400 `parameter_*`) under the idempotency key. Stripe's
   * docs say it does not ("If incoming parameters fail validation … we don't save the idempotent
   * result"), so the default is false.
   */
  storeValidationErrors?: boolean;
  /** How long idempotency keys are kept, ms of the simulator's clock (default 24 h). */
  idempotencyTtlMs?: number;
  /**
   * Webhook endpoints from the start, as if made with `POST /v1/webhook_endpoints` (a missing
   * secret is generated; `enabledEvents` defaults to every event, `*`).
   */
  webhooks?: readonly { url: string; secret?: string; enabledEvents?: readonly string[] }[];
  /** How webhook deliveries are sent and retried (default: the global fetch; 1 s … 10 min). */
  webhookDelivery?: WebhookOptions;
  /**
   * Automatic collection, as Stripe drives an open `charge_automatically` invoice with
   * `auto_advance: true`: its card is charged `firstAttemptAfterS` (default 3600) after it was
   * finalized, and a declined charge is tried again 3 days after each failure, 4 attempts in all
   * (`next_payment_attempt` says when). After the last failure the invoice stays open (Stripe's
   * "leave the invoice past due", the default) or, with `afterLastFailure: "mark_uncollectible"`, is
   * marked uncollectible. Checked lazily on each request and inspection (`sync`), and every second by
   * the HTTP server. `false`: nothing is charged unless `pay` is called.
   */
  autoCollect?: false | AutoCollect;
}

export interface AutoCollect {
  firstAttemptAfterS?: number;
  afterLastFailure?: "leave_open" | "mark_uncollectible";
}

/** Charges of one invoice: the first, then one every RETRY_S after a decline, ATTEMPTS in all. */
const RETRY_S = 3 * 86_400;
const ATTEMPTS = 4;

/** How a customer's payments fail (`declinePayments`): Stripe's card error fields. */
export interface Decline {
  /** Default `card_declined`. */
  code?: string;
  /** Default `generic_decline`. */
  decline_code?: string;
  /** Default "Your card was declined.". */
  message?: string;
}

export interface FaultMatch {
  /** e.g. "POST"; any method when absent. */
  method?: string;
  /** An exact path, or a prefix ending in "*" (e.g. "/v1/invoices*"); any path when absent. */
  path?: string;
}

export interface FailOptions extends FaultMatch {
  /** Default 500. */
  status?: number;
  /**
   * Save the failure under the request's idempotency key, so retries with that key get it again
   * (Stripe saves 500s that happen once an endpoint runs). Default false: the failure happened
   * before the endpoint ran, and a retry runs it.
   */
  store?: boolean;
}

export interface DropOptions extends FaultMatch {
  /**
   * How the lost response shows: "500" answers a 500 `api_error` (default); "reset" throws a
   * `TypeError("fetch failed")` in-process and resets the connection over HTTP.
   */
  as?: "500" | "reset";
}

export interface StripeSimRequest {
  seq: number;
  /** Simulator clock, epoch ms. */
  at: number;
  method: string;
  path: string;
  /** The parsed query and body parameters. */
  params: Record<string, unknown>;
  apiKey: string | null;
  idempotencyKey: string | null;
  stripeVersion: string | null;
  requestId: string;
  status: number;
  /** Answered from a saved idempotent result. */
  replayed: boolean;
  fault: "fail" | "drop" | null;
  error: StripeErrorBody | null;
}

export interface StoredIdempotencyKey {
  key: string;
  method: string;
  path: string;
  status: number;
  at: number;
}

/** Thrown in-process for a dropped response with `as: "reset"` (looks like a failed fetch). */
export class LostResponseError extends TypeError {
  constructor() {
    super("fetch failed", { cause: new Error("stripe-sim: the response was lost after the request was processed") });
    this.name = "TypeError";
  }
}

interface Fault {
  kind: "fail" | "drop";
  remaining: number;
  match: FaultMatch;
  status: number;
  store: boolean;
  as: "500" | "reset";
}

interface StoredResponse {
  method: string;
  path: string;
  params: string;
  status: number;
  body: string;
  requestId: string;
  at: number;
}

type StoredInvoiceItem = Omit<SimInvoiceItem, "customer" | "invoice"> & { customer: string; invoice: string | null };
type StoredInvoice = Omit<SimInvoice, "lines" | "customer"> & { customer: string };

interface CustomerRecord {
  seq: number;
  obj: SimCustomer;
}
interface InvoiceItemRecord {
  seq: number;
  obj: StoredInvoiceItem;
  lineId: string;
}
interface InvoiceRecord {
  seq: number;
  obj: StoredInvoice;
  /** Invoice item ids, in the order they joined. */
  items: string[];
}

type ObjectKind = "customer" | "invoiceitem" | "invoice" | "line_item" | "event" | "webhook_endpoint";
interface RouteResult {
  status?: number;
  body: Record<string, unknown>;
}
interface Route {
  method: "GET" | "POST";
  pattern: RegExp;
  /** "POST /v1/invoices" etc., for messages. */
  name: string;
  schema: Schema;
  /** What the response is, for checking `expand`. */
  result: ObjectKind | `list:${ObjectKind}`;
  run: (params: Record<string, unknown>, ids: string[]) => RouteResult;
}

/** Fields that `expand[]` can replace, per object (lists take `data.` + these). */
const EXPANDABLE: Record<ObjectKind, readonly string[]> = {
  customer: [],
  invoiceitem: ["customer", "invoice", "invoice.customer"],
  invoice: ["customer"],
  line_item: [],
  event: [],
  webhook_endpoint: [],
};

const EXPAND: Spec = { kind: "strings" };
const unsupportedFields = (names: string[]): Schema =>
  Object.fromEntries(names.map((n) => [n, { kind: "unsupported" } as Spec]));
const PAGE: Schema = {
  limit: { kind: "integer", min: 1, max: 100 },
  starting_after: { kind: "id" },
  ending_before: { kind: "id" },
  expand: EXPAND,
};

const CUSTOMER_FIELDS: Schema = {
  name: { kind: "string", emptyable: true, maxLength: 256 },
  email: { kind: "string", emptyable: true, maxLength: 512 },
  description: { kind: "string", emptyable: true },
  phone: { kind: "string", emptyable: true, maxLength: 20 },
  metadata: { kind: "metadata" },
  expand: EXPAND,
  ...unsupportedFields([
    "address",
    "balance",
    "business_name",
    "cash_balance",
    "individual_name",
    "invoice_prefix",
    "invoice_settings",
    "next_invoice_sequence",
    "preferred_locales",
    "shipping",
    "source",
    "tax",
    "tax_exempt",
  ]),
};
const CUSTOMER_CREATE: Schema = {
  ...CUSTOMER_FIELDS,
  ...unsupportedFields(["payment_method", "tax_id_data", "test_clock", "validate"]),
};
const CUSTOMER_UPDATE: Schema = { ...CUSTOMER_FIELDS, ...unsupportedFields(["default_source", "validate"]) };

const INVOICE_ITEM_CREATE: Schema = {
  customer: { kind: "id", required: true },
  amount: { kind: "integer" },
  currency: { kind: "currency" },
  quantity: { kind: "integer", min: 0 },
  quantity_decimal: { kind: "decimal" },
  unit_amount_decimal: { kind: "decimal" },
  description: { kind: "string", emptyable: true },
  discountable: { kind: "boolean" },
  invoice: { kind: "id" },
  metadata: { kind: "metadata" },
  period: {
    kind: "object",
    fields: { start: { kind: "integer", required: true }, end: { kind: "integer", required: true } },
  },
  expand: EXPAND,
  ...unsupportedFields([
    "customer_account",
    "discounts",
    "price_data",
    "pricing",
    "subscription",
    "tax_behavior",
    "tax_code",
    "tax_rates",
  ]),
};

const INVOICE_CREATE: Schema = {
  customer: { kind: "id", required: true },
  auto_advance: { kind: "boolean" },
  automatic_tax: { kind: "object", fields: { enabled: { kind: "boolean" } } },
  collection_method: { kind: "enum", values: ["charge_automatically", "send_invoice"] },
  currency: { kind: "currency" },
  days_until_due: { kind: "integer", min: 0 },
  due_date: { kind: "integer" },
  description: { kind: "string", emptyable: true },
  footer: { kind: "string", emptyable: true },
  metadata: { kind: "metadata" },
  pending_invoice_items_behavior: { kind: "enum", values: ["exclude", "include"] },
  expand: EXPAND,
  ...unsupportedFields([
    "account_tax_ids",
    "application_fee_amount",
    "automatically_finalizes_at",
    "custom_fields",
    "customer_account",
    "default_payment_method",
    "default_source",
    "default_tax_rates",
    "discounts",
    "effective_at",
    "from_invoice",
    "issuer",
    "number",
    "on_behalf_of",
    "payment_settings",
    "rendering",
    "shipping_cost",
    "shipping_details",
    "statement_descriptor",
    "subscription",
    "transfer_data",
  ]),
};

interface CustomerParams {
  name?: string | null;
  email?: string | null;
  description?: string | null;
  phone?: string | null;
  metadata?: Record<string, string> | null;
}
interface InvoiceItemParams {
  customer: string;
  amount?: number;
  currency?: string;
  quantity?: number;
  quantity_decimal?: string;
  unit_amount_decimal?: string;
  description?: string | null;
  discountable?: boolean;
  invoice?: string;
  metadata?: Record<string, string> | null;
  period?: { start: number; end: number };
}
interface InvoiceParams {
  customer: string;
  auto_advance?: boolean;
  automatic_tax?: { enabled?: boolean };
  collection_method?: "charge_automatically" | "send_invoice";
  currency?: string;
  days_until_due?: number;
  due_date?: number;
  description?: string | null;
  footer?: string | null;
  metadata?: Record<string, string> | null;
  pending_invoice_items_behavior?: "exclude" | "include";
}
interface PageParams {
  limit?: number;
  starting_after?: string;
  ending_before?: string;
}

const INVOICE_PAY: Schema = {
  paid_out_of_band: { kind: "boolean" },
  expand: EXPAND,
  ...unsupportedFields(["forgive", "mandate", "off_session", "payment_method", "source"]),
};

const WEBHOOK_ENDPOINT_CREATE: Schema = {
  url: { kind: "string", required: true, maxLength: 5000 },
  enabled_events: { kind: "strings" },
  description: { kind: "string", emptyable: true, maxLength: 5000 },
  metadata: { kind: "metadata" },
  expand: EXPAND,
  ...unsupportedFields(["api_version", "connect"]),
};
interface WebhookEndpointParams {
  url: string;
  enabled_events?: string[];
  description?: string | null;
  metadata?: Record<string, string> | null;
}

const ALPHANUMERIC = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
function randomChars(n: number, alphabet = ALPHANUMERIC): string {
  const bytes = crypto.getRandomValues(new Uint8Array(n));
  let out = "";
  for (const b of bytes) out += alphabet[b % alphabet.length];
  return out;
}
const newId = (prefix: string, length = 24) => `${prefix}_1${randomChars(length - 1)}`;

/** Drops "" values (a create has nothing to unset). */
const createMetadata = (m: Record<string, string> | null | undefined): Record<string, string> =>
  Object.fromEntries(Object.entries(m ?? {}).filter(([, v]) => v !== ""));

function maskKey(key: string): string {
  const prefix = /^[a-z]+_(?:test|live)_/.exec(key)?.[0] ?? "";
  const rest = key.slice(prefix.length);
  return rest.length <= 4 ? key : `${prefix}${"*".repeat(rest.length - 4)}${rest.slice(-4)}`;
}

function pathMatches(pattern: string, path: string): boolean {
  return pattern.endsWith("*") ? path.startsWith(pattern.slice(0, -1)) : path === pattern;
}

const clone = <T>(value: T): T => structuredClone(value);

export class StripeSimulator {
  readonly now: () => number;
  private readonly options: StripeSimulatorOptions;
  private readonly routes: Route[];
  private customersById = new Map<string, CustomerRecord>();
  private itemsById = new Map<string, InvoiceItemRecord>();
  private invoicesById = new Map<string, InvoiceRecord>();
  private idempotency = new Map<string, StoredResponse>();
  private faults: Fault[] = [];
  private log: StripeSimRequest[] = [];
  private seq = 0;
  private requestSeq = 0;
  private eventsById = new Map<string, { seq: number; obj: SimEvent }>();
  private endpointsById = new Map<string, { seq: number; obj: SimWebhookEndpoint; secret: string }>();
  private declines = new Map<string, Required<Decline>>();
  /** The request being run, for events' `request` (null ids for what the clock does by itself). */
  private current: SimEvent["request"] = { id: null, idempotency_key: null };
  /** Webhook deliveries: `attempts` (every try), `settle()` (await what is under way), `close()`. */
  readonly webhooks: WebhookSender;

  constructor(options: StripeSimulatorOptions = {}) {
    this.options = options;
    this.now = options.now ?? (() => Date.now());
    this.routes = this.buildRoutes();
    this.webhooks = new WebhookSender(options.webhookDelivery);
    for (const w of options.webhooks ?? [])
      this.addWebhookEndpoint({ url: w.url, enabled_events: [...(w.enabledEvents ?? ["*"])] }, w.secret);
  }

  // ---------------------------------------------------------------- the HTTP API

  /** The whole API as a fetch handler. */
  fetch = async (request: Request): Promise<Response> => {
    const url = new URL(request.url);
    const method = request.method.toUpperCase();
    const path = url.pathname.replace(/\/+$/, "") || "/";
    const body = method === "GET" || method === "HEAD" ? "" : await request.text();
    // From here on everything is synchronous, so two requests never interleave: an idempotency key
    // is never "in progress" when another request with it arrives.
    this.sync();
    const entry: StripeSimRequest = {
      seq: ++this.requestSeq,
      at: this.now(),
      method,
      path,
      params: {},
      apiKey: null,
      idempotencyKey: method === "POST" ? request.headers.get("idempotency-key") : null,
      stripeVersion: request.headers.get("stripe-version"),
      requestId: `req_${randomChars(14)}`,
      status: 0,
      replayed: false,
      fault: null,
      error: null,
    };
    this.log.push(entry);
    if (this.log.length > 12_000) this.log.splice(0, this.log.length - 10_000);
    const answer = this.handle(request, url, method, path, body, entry);
    entry.status = answer.status;
    const headers = new Headers({
      "content-type": "application/json",
      "request-id": entry.requestId,
      "stripe-version": entry.stripeVersion ?? STRIPE_API_VERSION,
      ...answer.headers,
    });
    if (entry.idempotencyKey !== null) headers.set("idempotency-key", entry.idempotencyKey);
    if (answer.lost) throw new LostResponseError();
    return new Response(answer.body, { status: answer.status, headers });
  };

  private handle(
    request: Request,
    url: URL,
    method: string,
    path: string,
    body: string,
    entry: StripeSimRequest,
  ): { status: number; body: string; headers?: Record<string, string>; lost?: boolean } {
    const fail = (error: StripeSimError) => {
      entry.error = error.body;
      return { status: error.status, body: JSON.stringify({ error: error.body }) };
    };

    // Authentication (never saved under an idempotency key: the request reached no endpoint).
    const apiKey = this.apiKey(request);
    if (apiKey === null || !this.keyAccepted(apiKey)) {
      const message =
        apiKey === null
          ? "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/."
          : `Invalid API Key provided: ${maskKey(apiKey)}`;
      const answer = fail(new StripeSimError(401, { type: "invalid_request_error", message }));
      return { ...answer, headers: { "www-authenticate": 'Basic realm="Stripe"' } };
    }
    entry.apiKey = apiKey;
    if (request.headers.get("stripe-account"))
      return fail(unsupported(undefined, "Connect (the Stripe-Account header)"));

    const found = this.route(method, path);
    if (!found) {
      return fail(
        new StripeSimError(404, {
          type: "invalid_request_error",
          message: `Unrecognized request URL (${method}: ${path}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.`,
        }),
      );
    }
    const [route, ids] = found;

    let params: FormObject;
    try {
      params = parseForm(url.search.slice(1));
      if (body) parseForm(body, params);
    } catch (error) {
      if (error instanceof StripeSimError) return fail(error);
      throw error;
    }
    entry.params = plain(params);

    const failure = this.takeFault("fail", method, path);
    const drop = this.takeFault("drop", method, path);
    const key = entry.idempotencyKey;
    const scope = key === null ? null : `${apiKey}\u0000${key}`;
    const lose = <T extends { status: number; body: string }>(answer: T) => {
      if (!drop) return answer;
      entry.fault = "drop";
      if (drop.as === "reset") return { ...answer, lost: true };
      const error = new StripeSimError(500, {
        type: "api_error",
        message: "An unknown error occurred (stripe-sim dropped the response after processing the request)",
      });
      return { status: 500, body: JSON.stringify({ error: error.body }) };
    };

    if (failure) {
      entry.fault = "fail";
      const error = new StripeSimError(failure.status, {
        type: "api_error",
        message: "An unknown error occurred (injected by stripe-sim)",
      });
      const answer = fail(error);
      if (scope !== null && failure.store) this.store(scope, method, path, params, answer, entry.requestId);
      return lose(answer);
    }

    // Idempotency (docs.stripe.com/api/idempotent_requests): POST only, scoped to the API key.
    if (key !== null && scope !== null) {
      if (key.length > 255)
        return fail(
          new StripeSimError(400, {
            type: "idempotency_error",
            message: `Idempotency keys can be at most 255 characters long, but the one given is ${key.length} characters.`,
          }),
        );
      const stored = this.storedFor(scope);
      if (stored) {
        if (stored.method !== method || stored.path !== path)
          return fail(
            new StripeSimError(400, {
              type: "idempotency_error",
              message: `Keys for idempotent requests can only be used for the same endpoint they were first used for ('${stored.path}' vs '${path}'). Try using a key other than '${key}' if you meant to execute a different request.`,
            }),
          );
        if (stored.params !== canonical(params))
          return fail(
            new StripeSimError(400, {
              type: "idempotency_error",
              message: `Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '${key}' if you meant to execute a different request.`,
            }),
          );
        entry.replayed = true;
        if (stored.status >= 400) entry.error = (JSON.parse(stored.body) as { error: StripeErrorBody }).error;
        return lose({
          status: stored.status,
          body: stored.body,
          headers: { "idempotent-replayed": "true", "original-request": stored.requestId },
        });
      }
    }

    let answer: { status: number; body: string };
    try {
      const values = validate(params, route.schema, route.name);
      const expand = (values.expand as string[] | undefined) ?? [];
      this.checkExpand(expand, route.result);
      this.current = { id: entry.requestId, idempotency_key: entry.idempotencyKey };
      let result: RouteResult;
      try {
        result = route.run(values, ids);
      } finally {
        this.current = { id: null, idempotency_key: null };
      }
      for (const path of expand) this.expandInto(result.body, path.split("."));
      answer = { status: result.status ?? 200, body: JSON.stringify(result.body) };
    } catch (error) {
      if (!(error instanceof StripeSimError)) {
        // A simulator bug: answer like Stripe's 500, and save nothing.
        const message = `An unknown error occurred (stripe-sim: ${error instanceof Error ? error.message : String(error)})`;
        return lose(fail(new StripeSimError(500, { type: "api_error", message })));
      }
      answer = fail(error);
      if (error.phase === "validation" && !this.options.storeValidationErrors) return lose(answer);
    }
    if (scope !== null) this.store(scope, method, path, params, answer, entry.requestId);
    return lose(answer);
  }

  private apiKey(request: Request): string | null {
    const auth = request.headers.get("authorization")?.trim() ?? "";
    const bearer = /^Bearer\s+(\S+)$/i.exec(auth);
    if (bearer) return bearer[1]!;
    const basic = /^Basic\s+(\S+)$/i.exec(auth);
    if (basic) {
      try {
        const user = atob(basic[1]!).split(":")[0] ?? "";
        return user || null;
      } catch {
        return auth;
      }
    }
    return auth === "" ? null : auth;
  }

  private keyAccepted(key: string): boolean {
    if (this.options.apiKeys) return this.options.apiKeys.includes(key);
    return /^(?:sk|rk)_test_\S+$/.test(key);
  }

  private route(method: string, path: string): [Route, string[]] | undefined {
    for (const route of this.routes) {
      if (route.method !== method) continue;
      const m = route.pattern.exec(path);
      if (m) return [route, m.slice(1).map((s) => decodeURIComponent(s))];
    }
    return undefined;
  }

  private takeFault(kind: Fault["kind"], method: string, path: string): Fault | undefined {
    const fault = this.faults.find(
      (f) =>
        f.kind === kind &&
        f.remaining > 0 &&
        (!f.match.method || f.match.method.toUpperCase() === method) &&
        (!f.match.path || pathMatches(f.match.path, path)),
    );
    if (!fault) return undefined;
    fault.remaining--;
    this.faults = this.faults.filter((f) => f.remaining > 0);
    return fault;
  }

  private storedFor(scope: string): StoredResponse | undefined {
    const ttl = this.options.idempotencyTtlMs ?? DAY_MS;
    const now = this.now();
    // Prune from the oldest (insertion order is time order for a clock that moves forward).
    for (const [k, v] of this.idempotency) {
      if (now - v.at < ttl) break;
      this.idempotency.delete(k);
    }
    const stored = this.idempotency.get(scope);
    if (stored && now - stored.at >= ttl) {
      this.idempotency.delete(scope);
      return undefined;
    }
    return stored;
  }

  private store(
    scope: string,
    method: string,
    path: string,
    params: FormObject,
    answer: { status: number; body: string },
    requestId: string,
  ): void {
    this.idempotency.set(scope, {
      method,
      path,
      params: canonical(params),
      status: answer.status,
      body: answer.body,
      requestId,
      at: this.now(),
    });
  }

  // ---------------------------------------------------------------- expansion

  private checkExpand(paths: string[], result: Route["result"]): void {
    const list = result.startsWith("list:");
    const kind = (list ? result.slice(5) : result) as ObjectKind;
    const allowed = EXPANDABLE[kind].map((p) => (list ? `data.${p}` : p));
    for (const path of paths) {
      if (allowed.includes(path)) continue;
      const hint = list && !path.startsWith("data.") ? ` You may want to try expanding 'data.${path}' instead.` : "";
      throw parameterInvalid(
        "expand",
        `This property cannot be expanded (${path}).${hint} (stripe-sim expands only: ${allowed.join(", ") || "nothing here"}.)`,
      );
    }
  }

  private expandInto(value: Record<string, unknown>, path: string[]): void {
    const [head, ...rest] = path;
    if (head === undefined) return;
    if (value.object === "list" && head === "data") {
      for (const item of value.data as Record<string, unknown>[]) this.expandInto(item, rest);
      return;
    }
    const id = value[head];
    if (typeof id === "string") {
      if (head === "customer") value[head] = this.customer(id) ?? id;
      else if (head === "invoice") value[head] = this.invoice(id) ?? id;
    }
    const target = value[head];
    if (rest.length > 0 && target && typeof target === "object")
      this.expandInto(target as Record<string, unknown>, rest);
  }

  // ---------------------------------------------------------------- endpoints

  private buildRoutes(): Route[] {
    const id = "([^/]+)";
    const r = (
      method: Route["method"],
      path: string,
      schema: Schema,
      result: Route["result"],
      run: Route["run"],
    ): Route => ({
      method,
      pattern: new RegExp(`^${path.replace(/\{id\}/g, id)}$`),
      name: `${method} ${path}`,
      schema,
      result,
      run,
    });
    return [
      r("POST", "/v1/customers", CUSTOMER_CREATE, "customer", (p) => ({
        body: this.createCustomer(p as CustomerParams),
      })),
      r(
        "GET",
        "/v1/customers",
        { email: { kind: "string" }, ...PAGE, ...unsupportedFields(["created", "test_clock"]) },
        "list:customer",
        (p) => ({
          body: this.listCustomers(p as PageParams & { email?: string }),
        }),
      ),
      r("GET", "/v1/customers/{id}", { expand: EXPAND }, "customer", (_p, [cid]) => ({
        body: this.requireCustomer(cid!, "id"),
      })),
      r("POST", "/v1/customers/{id}", CUSTOMER_UPDATE, "customer", (p, [cid]) => ({
        body: this.updateCustomer(cid!, p as CustomerParams),
      })),
      r("POST", "/v1/invoiceitems", INVOICE_ITEM_CREATE, "invoiceitem", (p) => ({
        body: this.createInvoiceItem(p as unknown as InvoiceItemParams),
      })),
      r(
        "GET",
        "/v1/invoiceitems",
        {
          customer: { kind: "id" },
          invoice: { kind: "id" },
          pending: { kind: "boolean" },
          ...PAGE,
          ...unsupportedFields(["created", "customer_account"]),
        },
        "list:invoiceitem",
        (p) => ({
          body: this.listInvoiceItems(p as PageParams & { customer?: string; invoice?: string; pending?: boolean }),
        }),
      ),
      r("GET", "/v1/invoiceitems/{id}", { expand: EXPAND }, "invoiceitem", (_p, [iid]) => ({
        body: this.requireInvoiceItem(iid!),
      })),
      r("POST", "/v1/invoices", INVOICE_CREATE, "invoice", (p) => ({
        body: this.createInvoice(p as unknown as InvoiceParams),
      })),
      r(
        "GET",
        "/v1/invoices",
        {
          customer: { kind: "id" },
          status: { kind: "enum", values: ["draft", "open", "paid", "uncollectible", "void"] },
          collection_method: { kind: "enum", values: ["charge_automatically", "send_invoice"] },
          ...PAGE,
          ...unsupportedFields(["created", "customer_account", "due_date", "subscription"]),
        },
        "list:invoice",
        (p) => ({
          body: this.listInvoices(p as PageParams & { customer?: string; status?: string; collection_method?: string }),
        }),
      ),
      r("GET", "/v1/invoices/{id}", { expand: EXPAND }, "invoice", (_p, [iid]) => ({
        body: this.requireInvoice(iid!),
      })),
      r(
        "POST",
        "/v1/invoices/{id}/finalize",
        { auto_advance: { kind: "boolean" }, expand: EXPAND },
        "invoice",
        (p, [iid]) => ({
          body: this.finalizeInvoice(iid!, p as { auto_advance?: boolean }),
        }),
      ),
      r("GET", "/v1/invoices/{id}/lines", PAGE, "list:line_item", (p, [iid]) => ({
        body: this.listLines(iid!, p as PageParams),
      })),
      r("POST", "/v1/invoices/{id}/pay", INVOICE_PAY, "invoice", (p, [iid]) => ({
        body: this.payInvoice(iid!, p as { paid_out_of_band?: boolean }),
      })),
      r("POST", "/v1/invoices/{id}/void", { expand: EXPAND }, "invoice", (_p, [iid]) => ({
        body: this.closeInvoice(iid!, "void"),
      })),
      r("POST", "/v1/invoices/{id}/mark_uncollectible", { expand: EXPAND }, "invoice", (_p, [iid]) => ({
        body: this.closeInvoice(iid!, "uncollectible"),
      })),
      r(
        "GET",
        "/v1/events",
        {
          type: { kind: "string" },
          types: { kind: "strings" },
          ...PAGE,
          ...unsupportedFields(["created", "delivery_success"]),
        },
        "list:event",
        (p) => ({ body: this.listEvents(p as PageParams & { type?: string; types?: string[] }) }),
      ),
      r("GET", "/v1/events/{id}", { expand: EXPAND }, "event", (_p, [eid]) => ({
        body: this.requireEvent(eid!),
      })),
      r("POST", "/v1/webhook_endpoints", WEBHOOK_ENDPOINT_CREATE, "webhook_endpoint", (p) => ({
        body: this.addWebhookEndpoint(p as unknown as WebhookEndpointParams),
      })),
      r("GET", "/v1/webhook_endpoints", PAGE, "list:webhook_endpoint", (p) => ({
        body: this.page(
          StripeSimulator.newestFirst([...this.endpointsById.values()]).map((e) => clone(e.obj)),
          p as PageParams,
          "/v1/webhook_endpoints",
          "webhook_endpoint",
        ),
      })),
      r("GET", "/v1/webhook_endpoints/{id}", { expand: EXPAND }, "webhook_endpoint", (_p, [wid]) => {
        const e = this.endpointsById.get(wid!);
        if (!e) throw resourceMissing("webhook_endpoint", wid!, "id");
        return { body: clone(e.obj) };
      }),
    ];
  }

  private createCustomer(p: CustomerParams): SimCustomer {
    const created = this.nowSeconds();
    const customer: SimCustomer = {
      id: newId("cus", 14),
      object: "customer",
      address: null,
      balance: 0,
      created,
      currency: null,
      customer_account: null,
      default_source: null,
      delinquent: false,
      description: p.description ?? null,
      discount: null,
      email: p.email ?? null,
      invoice_prefix: randomChars(8, "0123456789ABCDEF"),
      invoice_settings: { custom_fields: null, default_payment_method: null, footer: null, rendering_options: null },
      livemode: false,
      metadata: createMetadata(p.metadata),
      name: p.name ?? null,
      next_invoice_sequence: 1,
      phone: p.phone ?? null,
      preferred_locales: [],
      shipping: null,
      tax_exempt: "none",
      test_clock: null,
    };
    this.customersById.set(customer.id, { seq: ++this.seq, obj: customer });
    return clone(customer);
  }

  private updateCustomer(id: string, p: CustomerParams): SimCustomer {
    const record = this.customersById.get(id);
    if (!record) throw resourceMissing("customer", id, "id");
    const c = record.obj;
    if (p.name !== undefined) c.name = p.name;
    if (p.email !== undefined) c.email = p.email;
    if (p.description !== undefined) c.description = p.description;
    if (p.phone !== undefined) c.phone = p.phone;
    if (p.metadata === null) c.metadata = {};
    else if (p.metadata) {
      for (const [k, v] of Object.entries(p.metadata)) {
        if (v === "") delete c.metadata[k];
        else c.metadata[k] = v;
      }
    }
    return clone(c);
  }

  private requireCustomer(id: string, param: string): SimCustomer {
    const c = this.customersById.get(id);
    if (!c) throw resourceMissing("customer", id, param);
    return clone(c.obj);
  }

  private createInvoiceItem(p: InvoiceItemParams): SimInvoiceItem {
    // Parameter combinations first: they are validation (nothing saved under the idempotency key).
    if (p.amount !== undefined && p.unit_amount_decimal !== undefined)
      throw parametersExclusive(["amount", "unit_amount_decimal"]);
    if (p.quantity !== undefined && p.quantity_decimal !== undefined)
      throw parametersExclusive(["quantity", "quantity_decimal"]);
    if (p.amount !== undefined && (p.quantity !== undefined || p.quantity_decimal !== undefined))
      throw unsupported(
        p.quantity !== undefined ? "quantity" : "quantity_decimal",
        "`amount` together with a quantity on POST /v1/invoiceitems (use quantity + unit_amount_decimal)",
      );
    if (p.amount === undefined && p.unit_amount_decimal === undefined) throw parameterMissing("amount");
    if (p.quantity_decimal?.startsWith("-"))
      throw parameterInvalid("quantity_decimal", "This value must be greater than or equal to 0.");
    if (p.period && p.period.end < p.period.start)
      throw parameterInvalid("period[end]", "The period end must be greater than or equal to the period start.");
    if (p.currency === undefined && p.invoice === undefined) throw parameterMissing("currency");

    const customer = this.customersById.get(p.customer);
    if (!customer) throw resourceMissing("customer", p.customer, "customer");
    let invoice: InvoiceRecord | undefined;
    if (p.invoice !== undefined) {
      invoice = this.invoicesById.get(p.invoice);
      if (!invoice) throw resourceMissing("invoice", p.invoice, "invoice");
      if (invoice.obj.customer !== p.customer)
        throw invalidRequest(`The invoice ${p.invoice} belongs to a different customer than ${p.customer}.`, {
          param: "invoice",
        });
      if (invoice.obj.status !== "draft")
        throw invalidRequest(
          `Invoice ${p.invoice} is no longer editable: invoice items can only be added to draft invoices.`,
          {
            code: "invoice_not_editable",
            param: "invoice",
          },
        );
    }
    const currency = p.currency ?? invoice!.obj.currency;
    if (invoice && invoice.obj.currency !== currency)
      throw invalidRequest(
        `The currency of the invoice item (${currency}) must match the currency of invoice ${invoice.obj.id} (${invoice.obj.currency}).`,
        { param: "currency" },
      );

    const quantityDecimal = p.quantity_decimal ?? (p.quantity !== undefined ? String(p.quantity) : "1");
    const unitAmountDecimal = p.unit_amount_decimal ?? String(p.amount);
    const amount = p.amount ?? multiplyRound(quantityDecimal, unitAmountDecimal);
    const now = this.nowSeconds();
    const item: StoredInvoiceItem = {
      id: newId("ii"),
      object: "invoiceitem",
      amount,
      currency,
      customer: p.customer,
      customer_account: null,
      date: now,
      description: p.description ?? null,
      discountable: p.discountable ?? amount >= 0,
      discounts: [],
      invoice: invoice?.obj.id ?? null,
      livemode: false,
      metadata: createMetadata(p.metadata),
      net_amount: amount,
      parent: null,
      period: p.period ?? { start: now, end: now },
      // Stripe prices an amount-only item with an ad-hoc price; these ids are not retrievable here.
      pricing: {
        price_details: { price: newId("price"), product: newId("prod", 14) },
        type: "price_details",
        unit_amount_decimal: unitAmountDecimal,
      },
      proration: false,
      quantity: Math.trunc(Number(quantityDecimal)),
      quantity_decimal: quantityDecimal,
      tax_rates: [],
      test_clock: null,
    };
    if (customer.obj.currency === null || customer.obj.currency === undefined) customer.obj.currency = currency;
    this.itemsById.set(item.id, { seq: ++this.seq, obj: item, lineId: newId("il") });
    if (invoice) {
      invoice.items.push(item.id);
      this.recompute(invoice);
    }
    return clone(item);
  }

  private requireInvoiceItem(id: string): SimInvoiceItem {
    const record = this.itemsById.get(id);
    if (!record) throw resourceMissing("invoiceitem", id, "id");
    return clone(record.obj);
  }

  private createInvoice(p: InvoiceParams): SimInvoice {
    const collection = p.collection_method ?? "charge_automatically";
    if (collection === "charge_automatically" && (p.days_until_due !== undefined || p.due_date !== undefined))
      throw parameterInvalid(
        p.days_until_due !== undefined ? "days_until_due" : "due_date",
        "Invoices with `collection_method=charge_automatically` cannot have `days_until_due` or `due_date`.",
      );
    if (collection === "send_invoice") {
      if (p.days_until_due !== undefined && p.due_date !== undefined)
        throw parametersExclusive(["days_until_due", "due_date"]);
      if (p.days_until_due === undefined && p.due_date === undefined)
        throw parameterMissing(
          "days_until_due",
          "Missing required param: days_until_due. Invoices with `collection_method=send_invoice` need `days_until_due` or `due_date`.",
        );
    }
    if (p.automatic_tax?.enabled) throw unsupported("automatic_tax[enabled]", "automatic tax");

    const customer = this.customersById.get(p.customer);
    if (!customer) throw resourceMissing("customer", p.customer, "customer");
    const c = customer.obj;
    const created = this.nowSeconds();
    const currency = p.currency ?? c.currency ?? "usd";
    const autoAdvance = p.auto_advance ?? false;
    const invoice: StoredInvoice = {
      id: newId("in"),
      object: "invoice",
      account_country: "US",
      account_name: this.options.accountName ?? "Scalar (stripe-sim)",
      account_tax_ids: null,
      amount_due: 0,
      amount_overpaid: 0,
      amount_paid: 0,
      amount_remaining: 0,
      amount_shipping: 0,
      application: null,
      attempt_count: 0,
      attempted: false,
      auto_advance: autoAdvance,
      automatic_tax: { disabled_reason: null, enabled: false, liability: null, provider: null, status: null },
      automatically_finalizes_at: autoAdvance ? created + HOUR_S : null,
      billing_reason: "manual",
      collection_method: collection,
      created,
      currency,
      custom_fields: null,
      customer: c.id,
      customer_account: null,
      customer_address: null,
      customer_email: c.email,
      customer_name: c.name ?? null,
      customer_phone: c.phone ?? null,
      customer_shipping: null,
      customer_tax_exempt: "none",
      customer_tax_ids: [],
      default_payment_method: null,
      default_source: null,
      default_tax_rates: [],
      description: p.description ?? null,
      discounts: [],
      due_date: collection === "send_invoice" ? (p.due_date ?? created + (p.days_until_due ?? 0) * 86_400) : null,
      effective_at: null,
      ending_balance: null,
      footer: p.footer ?? null,
      from_invoice: null,
      hosted_invoice_url: null,
      invoice_pdf: null,
      issuer: { type: "self" },
      last_finalization_error: null,
      latest_revision: null,
      livemode: false,
      metadata: createMetadata(p.metadata),
      next_payment_attempt: null,
      number: null,
      on_behalf_of: null,
      parent: null,
      payment_settings: { default_mandate: null, payment_method_options: null, payment_method_types: null },
      period_end: created,
      period_start: created,
      post_payment_credit_notes_amount: 0,
      pre_payment_credit_notes_amount: 0,
      receipt_number: null,
      rendering: null,
      shipping_cost: null,
      shipping_details: null,
      starting_balance: 0,
      statement_descriptor: null,
      status: "draft",
      status_transitions: { finalized_at: null, marked_uncollectible_at: null, paid_at: null, voided_at: null },
      subtotal: 0,
      subtotal_excluding_tax: 0,
      test_clock: null,
      total: 0,
      total_discount_amounts: [],
      total_excluding_tax: 0,
      total_pretax_credit_amounts: [],
      total_taxes: [],
      webhooks_delivered_at: created,
    };
    const record: InvoiceRecord = { seq: ++this.seq, obj: invoice, items: [] };
    if ((p.pending_invoice_items_behavior ?? "exclude") === "include") {
      // The customer's pending items in the invoice's currency, oldest first (others stay pending).
      const pending = [...this.itemsById.values()]
        .filter((i) => i.obj.customer === c.id && i.obj.invoice === null && i.obj.currency === currency)
        .sort((a, b) => a.seq - b.seq);
      for (const item of pending) {
        item.obj.invoice = invoice.id;
        record.items.push(item.obj.id);
      }
    }
    this.invoicesById.set(invoice.id, record);
    this.recompute(record);
    this.emit("invoice.created", record);
    return this.render(record);
  }

  private recompute(record: InvoiceRecord): void {
    const inv = record.obj;
    const subtotal = record.items.reduce((sum, id) => sum + this.itemsById.get(id)!.obj.amount, 0);
    inv.subtotal = subtotal;
    inv.subtotal_excluding_tax = subtotal;
    inv.total = subtotal;
    inv.total_excluding_tax = subtotal;
    if (inv.status === "draft") {
      inv.amount_due = Math.max(0, subtotal);
      inv.amount_remaining = inv.amount_due;
    }
    const periods = record.items.map((id) => this.itemsById.get(id)!.obj.period);
    if (periods.length > 0) {
      inv.period_start = Math.min(...periods.map((p) => p.start));
      inv.period_end = Math.max(...periods.map((p) => p.end));
    }
  }

  private finalizeInvoice(id: string, p: { auto_advance?: boolean }): SimInvoice {
    const record = this.invoicesById.get(id);
    if (!record) throw resourceMissing("invoice", id, "id");
    if (record.obj.status !== "draft")
      throw invalidRequest("This invoice is already finalized, you can't re-finalize a non-draft invoice.", {
        code: "invoice_not_editable",
      });
    this.finalize(record, this.nowSeconds(), p.auto_advance);
    return this.render(record);
  }

  /**
   * draft → open (or paid when nothing is due): applies the customer's balance (a negative total
   * becomes credit; existing credit or debt moves onto the invoice), numbers it with the customer's
   * prefix and sequence, and gives it its hosted URLs. No payment is attempted.
   */
  private finalize(record: InvoiceRecord, at: number, autoAdvance?: boolean): void {
    this.recompute(record);
    const inv = record.obj;
    const customer = this.customersById.get(inv.customer)!.obj;
    if (autoAdvance !== undefined) inv.auto_advance = autoAdvance;
    const sum = inv.total + customer.balance;
    inv.starting_balance = customer.balance;
    inv.amount_due = Math.max(0, sum);
    inv.amount_remaining = inv.amount_due;
    inv.ending_balance = Math.min(0, sum);
    customer.balance = inv.ending_balance;
    const sequence = customer.next_invoice_sequence ?? 1;
    customer.next_invoice_sequence = sequence + 1;
    inv.number = `${customer.invoice_prefix}-${String(sequence).padStart(4, "0")}`;
    inv.status_transitions.finalized_at = at;
    inv.effective_at = at;
    inv.automatically_finalizes_at = null;
    const token = `test_${randomChars(60)}`;
    inv.hosted_invoice_url = `https://invoice.stripe.com/i/${SIM_ACCOUNT_ID}/${token}?s=ap`;
    inv.invoice_pdf = `https://pay.stripe.com/invoice/${SIM_ACCOUNT_ID}/${token}/pdf?s=ap`;
    if (inv.amount_due === 0) {
      inv.status = "paid";
      inv.status_transitions.paid_at = at;
      inv.auto_advance = false;
    } else {
      inv.status = "open";
      const collect = this.autoCollect();
      if (collect && inv.auto_advance && inv.collection_method === "charge_automatically") {
        inv.next_payment_attempt = at + (collect.firstAttemptAfterS ?? HOUR_S);
      }
    }
    this.emit("invoice.finalized", record);
    if (inv.status === "paid") this.emit("invoice.paid", record);
  }

  // ---------------------------------------------------------------- collection

  /**
   * `POST /v1/invoices/{id}/pay`: a draft is finalized first; an open or uncollectible invoice is
   * paid out of band, or charged to the customer's card, which succeeds unless `declinePayments`
   * says otherwise: then 402 `card_error`, one more attempt counted and, for an automatically
   * charged invoice, the next retry 3 days on (none after the fourth attempt).
   */
  private payInvoice(id: string, p: { paid_out_of_band?: boolean }): SimInvoice {
    const record = this.invoicesById.get(id);
    if (!record) throw resourceMissing("invoice", id, "id");
    const inv = record.obj;
    const now = this.nowSeconds();
    if (inv.status === "paid") throw invalidRequest("Invoice is already paid");
    // Simulator wording: Stripe refuses with its own message.
    if (inv.status === "void") throw invalidRequest("This invoice is void and cannot be paid.");
    if (inv.status === "draft") {
      this.finalize(record, now);
      if (inv.status === "paid") return this.render(record);
    }
    if (p.paid_out_of_band) {
      this.markPaid(record, now);
      this.emit("invoice.paid", record);
      return this.render(record);
    }
    const decline = this.charge(record, now);
    if (decline) throw cardDeclined(decline);
    return this.render(record);
  }

  /**
   * One charge of the customer's card for an open invoice at `at`: paid (`invoice.paid`,
   * `invoice.payment_succeeded`), or declined (`invoice.payment_failed`; for an automatically
   * charged invoice the next attempt RETRY_S on, none after the last). Returns the decline, if any.
   */
  private charge(record: InvoiceRecord, at: number): Required<Decline> | null {
    const inv = record.obj;
    inv.attempt_count += 1;
    inv.attempted = true;
    const decline = this.declines.get(inv.customer);
    if (decline) {
      const retry = inv.collection_method === "charge_automatically" && inv.attempt_count < ATTEMPTS;
      inv.next_payment_attempt = retry ? at + RETRY_S : null;
      this.emit("invoice.payment_failed", record);
      return decline;
    }
    this.markPaid(record, at);
    this.emit("invoice.paid", record);
    this.emit("invoice.payment_succeeded", record);
    return null;
  }

  private markPaid(record: InvoiceRecord, at: number): void {
    const inv = record.obj;
    inv.status = "paid";
    inv.amount_paid = inv.amount_due;
    inv.amount_remaining = 0;
    inv.status_transitions.paid_at = at;
    inv.next_payment_attempt = null;
    inv.auto_advance = false;
  }

  /** `void` (open or uncollectible invoices) and `mark_uncollectible` (open ones). */
  private closeInvoice(id: string, to: "void" | "uncollectible"): SimInvoice {
    const record = this.invoicesById.get(id);
    if (!record) throw resourceMissing("invoice", id, "id");
    const inv = record.obj;
    const from = to === "void" ? ["open", "uncollectible"] : ["open"];
    if (!from.includes(String(inv.status)))
      // Simulator wording; Stripe's status and type.
      throw invalidRequest(
        `You can only ${to === "void" ? "void" : "mark as uncollectible"} ${from.join(" or ")} invoices; this one is ${inv.status}.`,
      );
    this.close(record, to, this.nowSeconds());
    return this.render(record);
  }

  private close(record: InvoiceRecord, to: "void" | "uncollectible", at: number): void {
    const inv = record.obj;
    inv.status = to;
    inv.next_payment_attempt = null;
    inv.auto_advance = false;
    if (to === "void") inv.status_transitions.voided_at = at;
    else inv.status_transitions.marked_uncollectible_at = at;
    this.emit(to === "void" ? "invoice.voided" : "invoice.marked_uncollectible", record);
  }

  // ---------------------------------------------------------------- events and webhooks

  /** Records an event about the invoice as it is now and sends it to the endpoints that want it. */
  private emit(type: string, record: InvoiceRecord): void {
    const endpoints = [...this.endpointsById.values()].filter((e) => enabledFor(e.obj, type));
    const event: SimEvent = {
      id: newId("evt"),
      object: "event",
      api_version: STRIPE_API_VERSION,
      created: this.nowSeconds(),
      data: { object: this.render(record) as unknown as Record<string, unknown> },
      livemode: false,
      pending_webhooks: endpoints.length,
      request: { ...this.current },
      type,
    };
    this.eventsById.set(event.id, { seq: ++this.seq, obj: event });
    for (const e of endpoints) this.webhooks.send(clone(event), { ...e.obj, secret: e.secret });
  }

  private addWebhookEndpoint(p: WebhookEndpointParams, secret = `whsec_${randomChars(32)}`): SimWebhookEndpoint {
    if (!p.enabled_events?.length) throw parameterMissing("enabled_events");
    let url: URL;
    try {
      url = new URL(p.url);
    } catch {
      throw parameterInvalid("url", `Invalid URL: ${p.url}`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:")
      throw parameterInvalid("url", `Invalid URL: ${p.url} (must be http or https)`);
    const endpoint: SimWebhookEndpoint = {
      id: newId("we"),
      object: "webhook_endpoint",
      api_version: null,
      application: null,
      created: this.nowSeconds(),
      description: p.description ?? null,
      enabled_events: p.enabled_events,
      livemode: false,
      metadata: createMetadata(p.metadata),
      status: "enabled",
      url: p.url,
    };
    this.endpointsById.set(endpoint.id, { seq: ++this.seq, obj: endpoint, secret });
    return { ...clone(endpoint), secret };
  }

  private requireEvent(id: string): SimEvent {
    const e = this.eventsById.get(id);
    if (!e) throw resourceMissing("event", id, "id");
    return clone(e.obj);
  }

  /** Newest first; `type` may end in `*` (`invoice.*`), `types` is any of several. */
  private listEvents(p: PageParams & { type?: string; types?: string[] }): SimList<SimEvent> {
    if (p.type !== undefined && p.types !== undefined) throw parametersExclusive(["type", "types"]);
    const matches = (t: string) =>
      (p.type === undefined || (p.type.endsWith("*") ? t.startsWith(p.type.slice(0, -1)) : t === p.type)) &&
      (p.types === undefined || p.types.includes(t));
    const records = [...this.eventsById.values()]
      .filter((e) => matches(e.obj.type))
      .sort((a, b) => b.obj.created - a.obj.created || b.seq - a.seq);
    return this.page(
      records.map((e) => clone(e.obj)),
      p,
      "/v1/events",
      "event",
    );
  }

  private requireInvoice(id: string): SimInvoice {
    const record = this.invoicesById.get(id);
    if (!record) throw resourceMissing("invoice", id, "id");
    return this.render(record);
  }

  private line(record: InvoiceItemRecord, invoiceId: string): SimLineItem {
    const item = record.obj;
    return {
      id: record.lineId,
      object: "line_item",
      amount: item.amount,
      currency: item.currency,
      description: item.description,
      discount_amounts: [],
      discountable: item.discountable,
      discounts: [],
      invoice: invoiceId,
      livemode: false,
      metadata: clone(item.metadata ?? {}),
      parent: {
        type: "invoice_item_details",
        invoice_item_details: {
          invoice_item: item.id,
          proration: false,
          proration_details: { credited_items: null },
          subscription: null,
        },
        subscription_item_details: null,
      },
      period: { ...item.period },
      pretax_credit_amounts: [],
      pricing: clone(item.pricing),
      quantity: item.quantity,
      quantity_decimal: item.quantity_decimal,
      subscription: null,
      subtotal: item.amount,
      taxes: [],
    };
  }

  private lines(record: InvoiceRecord): SimLineItem[] {
    return record.items.map((id) => this.line(this.itemsById.get(id)!, record.obj.id));
  }

  /** The invoice as Stripe returns it: its first 10 lines embedded, the rest through /lines. */
  private render(record: InvoiceRecord): SimInvoice {
    const lines = this.lines(record);
    return {
      ...clone(record.obj),
      lines: {
        object: "list",
        data: lines.slice(0, 10),
        has_more: lines.length > 10,
        url: `/v1/invoices/${record.obj.id}/lines`,
      },
    };
  }

  // ---------------------------------------------------------------- lists

  /** Stripe's cursor pagination over `all` (already in list order). */
  private page<T extends { id: string }>(all: T[], p: PageParams, url: string, kind: string): SimList<T> {
    if (p.starting_after !== undefined && p.ending_before !== undefined)
      throw parametersExclusive(["ending_before", "starting_after"]);
    const limit = p.limit ?? 10;
    let data: T[];
    let hasMore: boolean;
    if (p.ending_before !== undefined) {
      const at = all.findIndex((x) => x.id === p.ending_before);
      if (at < 0) throw resourceMissing(kind, p.ending_before, "ending_before");
      const from = Math.max(0, at - limit);
      data = all.slice(from, at);
      hasMore = from > 0;
    } else {
      let from = 0;
      if (p.starting_after !== undefined) {
        const at = all.findIndex((x) => x.id === p.starting_after);
        if (at < 0) throw resourceMissing(kind, p.starting_after, "starting_after");
        from = at + 1;
      }
      data = all.slice(from, from + limit);
      hasMore = from + limit < all.length;
    }
    return { object: "list", data, has_more: hasMore, url };
  }

  /** Newest first, as Stripe lists objects. */
  private static newestFirst<R extends { seq: number; obj: { created?: number; date?: number } }>(records: R[]): R[] {
    const time = (r: R) => r.obj.created ?? r.obj.date ?? 0;
    return records.sort((a, b) => time(b) - time(a) || b.seq - a.seq);
  }

  private listCustomers(p: PageParams & { email?: string }): SimList<SimCustomer> {
    const records = StripeSimulator.newestFirst(
      [...this.customersById.values()].filter((r) => p.email === undefined || r.obj.email === p.email),
    );
    return this.page(
      records.map((r) => clone(r.obj)),
      p,
      "/v1/customers",
      "customer",
    );
  }

  private listInvoiceItems(
    p: PageParams & { customer?: string; invoice?: string; pending?: boolean },
  ): SimList<SimInvoiceItem> {
    const records = StripeSimulator.newestFirst(
      [...this.itemsById.values()].filter(
        (r) =>
          (p.customer === undefined || r.obj.customer === p.customer) &&
          (p.invoice === undefined || r.obj.invoice === p.invoice) &&
          (p.pending === undefined || (r.obj.invoice === null) === p.pending),
      ),
    );
    return this.page(
      records.map((r) => clone(r.obj)),
      p,
      "/v1/invoiceitems",
      "invoiceitem",
    );
  }

  private listInvoices(
    p: PageParams & { customer?: string; status?: string; collection_method?: string },
  ): SimList<SimInvoice> {
    const records = StripeSimulator.newestFirst(
      [...this.invoicesById.values()].filter(
        (r) =>
          (p.customer === undefined || r.obj.customer === p.customer) &&
          (p.status === undefined || r.obj.status === p.status) &&
          (p.collection_method === undefined || r.obj.collection_method === p.collection_method),
      ),
    );
    return this.page(
      records.map((r) => this.render(r)),
      p,
      "/v1/invoices",
      "invoice",
    );
  }

  private listLines(id: string, p: PageParams): SimList<SimLineItem> {
    const record = this.invoicesById.get(id);
    if (!record) throw resourceMissing("invoice", id, "id");
    return this.page(this.lines(record), p, `/v1/invoices/${id}/lines`, "line_item");
  }

  // ---------------------------------------------------------------- time

  private nowSeconds(): number {
    return Math.floor(this.now() / 1000);
  }

  private autoCollect(): AutoCollect | null {
    return this.options.autoCollect === false ? null : (this.options.autoCollect ?? {});
  }

  /**
   * Runs what falls due on the simulator's clock: auto-advancing drafts finalize after an hour, and
   * open invoices Stripe collects are charged at their `next_payment_attempt` (each attempt that fell
   * due, in order, when the clock jumped past several).
   */
  sync(): void {
    const finalize = this.options.autoFinalize !== false;
    const collect = this.autoCollect();
    const now = this.nowSeconds();
    for (const record of [...this.invoicesById.values()].sort((a, b) => a.seq - b.seq)) {
      const inv = record.obj;
      if (finalize && inv.status === "draft" && inv.auto_advance && inv.automatically_finalizes_at !== null) {
        if (now >= inv.automatically_finalizes_at) this.finalize(record, inv.automatically_finalizes_at);
      }
      if (!collect) continue;
      while (inv.status === "open" && inv.auto_advance && inv.next_payment_attempt !== null) {
        const at = inv.next_payment_attempt;
        if (now < at) break;
        const declined = this.charge(record, at);
        if (declined && inv.next_payment_attempt === null && collect.afterLastFailure === "mark_uncollectible") {
          this.close(record, "uncollectible", at);
        }
      }
    }
  }

  // ---------------------------------------------------------------- fault injection

  /** The next `count` matching requests answer `status` (500) without doing anything. */
  failNext(count = 1, options: FailOptions = {}): void {
    const { status = 500, store = false, ...match } = options;
    this.faults.push({ kind: "fail", remaining: count, match, status, store, as: "500" });
  }

  /**
   * The next `count` matching requests are carried out (and saved under their idempotency key),
   * then their response is lost: a 500, or a reset connection with `as: "reset"`. A retry with the
   * same key must get the first result back and not act twice.
   */
  dropNext(count = 1, options: DropOptions = {}): void {
    const { as = "500", ...match } = options;
    this.faults.push({ kind: "drop", remaining: count, match, status: 500, store: true, as });
  }

  clearFaults(): void {
    this.faults = [];
  }

  pendingFaults(): { kind: "fail" | "drop"; remaining: number; method?: string; path?: string }[] {
    return this.faults.map((f) => ({ kind: f.kind, remaining: f.remaining, ...f.match }));
  }

  // ---------------------------------------------------------------- inspection (copies)

  /** Every request so far, oldest first (the last 10 000 at least). */
  get requests(): StripeSimRequest[] {
    return clone(this.log);
  }

  clearRequests(): void {
    this.log = [];
  }

  customers(): SimCustomer[] {
    this.sync();
    return [...this.customersById.values()].sort((a, b) => a.seq - b.seq).map((r) => clone(r.obj));
  }

  customer(id: string): SimCustomer | undefined {
    this.sync();
    const r = this.customersById.get(id);
    return r && clone(r.obj);
  }

  invoiceItems(): SimInvoiceItem[] {
    this.sync();
    return [...this.itemsById.values()].sort((a, b) => a.seq - b.seq).map((r) => clone(r.obj));
  }

  invoiceItem(id: string): SimInvoiceItem | undefined {
    this.sync();
    const r = this.itemsById.get(id);
    return r && clone(r.obj);
  }

  /** Invoices oldest first, with all their lines embedded (not just the first 10). */
  invoices(): SimInvoice[] {
    this.sync();
    return [...this.invoicesById.values()].sort((a, b) => a.seq - b.seq).map((r) => this.renderAll(r));
  }

  invoice(id: string): SimInvoice | undefined {
    this.sync();
    const r = this.invoicesById.get(id);
    return r && this.renderAll(r);
  }

  private renderAll(record: InvoiceRecord): SimInvoice {
    const rendered = this.render(record);
    rendered.lines.data = this.lines(record);
    rendered.lines.has_more = false;
    return rendered;
  }

  /** Every event so far, oldest first. */
  events(): SimEvent[] {
    this.sync();
    return [...this.eventsById.values()].sort((a, b) => a.seq - b.seq).map((e) => clone(e.obj));
  }

  /** The customer's payments (`POST /v1/invoices/{id}/pay`) fail from now on, or succeed again (null). */
  declinePayments(customerId: string, decline: Decline | null = {}): void {
    if (decline === null) this.declines.delete(customerId);
    else
      this.declines.set(customerId, {
        code: decline.code ?? "card_declined",
        decline_code: decline.decline_code ?? "generic_decline",
        message: decline.message ?? "Your card was declined.",
      });
  }

  /** The idempotency keys currently remembered (for an API key, or all). */
  idempotencyKeys(apiKey?: string): StoredIdempotencyKey[] {
    return [...this.idempotency.entries()]
      .filter(([scope]) => apiKey === undefined || scope.startsWith(`${apiKey}\u0000`))
      .map(([scope, v]) => ({
        key: scope.slice(scope.indexOf("\u0000") + 1),
        method: v.method,
        path: v.path,
        status: v.status,
        at: v.at,
      }));
  }

  /** Forgets every object, idempotency key, fault and logged request. */
  reset(): void {
    this.customersById.clear();
    this.itemsById.clear();
    this.invoicesById.clear();
    this.eventsById.clear();
    this.declines.clear();
    this.idempotency.clear();
    this.faults = [];
    this.log = [];
  }
}
