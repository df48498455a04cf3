/**
 * The SF Compute client: v0 market (quote, orders, contracts, balance) and v1 Nodes (create, list,
 * get, extend, release, delete), zones and VM SSH details. `fetch`-based, so the same code runs in
 * the Worker and in Node; configured by a base URL and a bearer token (`SF_API_KEY`).
 *
 * Retries (see ./retry) happen on 408, 429, 5xx, timeouts and network errors, and only where a
 * retry cannot do the thing twice:
 * - reads are retried freely;
 * - orders always carry an `Idempotency-Key` (one is made if the caller gives none), so the server
 *   answers a retry with the order the first attempt placed;
 * - node creation and extension have no key, so they are sent again within the call only after an
 *   answer that proves nothing was done (429, 408). After a timeout, a lost connection or a 5xx the
 *   request may still be running at SF Compute, where a lookup cannot see it yet: the call fails
 *   (a transient error) and the caller decides later, by the node's name (creation) or its
 *   `end_at` (extension), whether to send it again (the capacity manager waits a few minutes);
 * - release, delete and cancel are checked before another attempt (already released / deleted /
 *   cancelled counts as done).
 */
import { errorFromResponse, isSfComputeError, SfComputeError } from "./errors";
import { advertisedDelayMs, DEFAULT_RETRY_POLICY, type RetryPolicy, retryDelayMs } from "./retry";
import {
  Balances,
  type Contract,
  Contract as ContractSchema,
  CreatedOrder,
  FINAL_ORDER_STATUSES,
  LegacyBalance,
  listOf,
  Node,
  type Order,
  type OrderFlags,
  Order as OrderSchema,
  PendingAck,
  Quote,
  VmSsh,
  Zone,
} from "./schemas";
import type { BlockCents, CentsPerNodeHour, EpochSeconds } from "./units";

type FetchLike = (request: Request) => Promise<Response>;
type Schema<T> = {
  safeParse(data: unknown): { success: true; data: T } | { success: false; error: { message: string } };
};

export interface AttemptInfo {
  method: string;
  path: string;
  attempt: number;
  /** HTTP status, or 0 when no response arrived. */
  status: number;
  durationMs: number;
  error?: string;
  /** The wait before the next attempt, when there is one. */
  retryInMs?: number;
  /** The wait the server asked for (Retry-After, RateLimit-Reset), when it did. */
  advertisedDelayMs?: number;
}

export interface SfComputeClientOptions {
  /** e.g. https://api.sfcompute.com, or a simulator's URL. */
  baseUrl: string;
  /** The API token (`SF_API_KEY`). */
  token: string;
  /** Defaults to the global fetch; a simulator's in-process handler also fits. */
  fetch?: FetchLike;
  /** Per attempt (default 60 s, as the official Nodes SDK). */
  timeoutMs?: number;
  /** Per quote attempt: a quote is a solver call, and the CLI allows it 600 s (the default). */
  quoteTimeoutMs?: number;
  retry?: Partial<RetryPolicy>;
  /** Prefix of the names made for nodes created without names (default "scalar"). */
  nodeNamePrefix?: string;
  sleep?: (ms: number) => Promise<void>;
  random?: () => number;
  now?: () => number;
  /** Called after every attempt: for metrics and logs. */
  onAttempt?: (info: AttemptInfo) => void;
}

/** Times accept a Date or an ISO string; "NOW" where the market allows it. */
type Instant = Date | string;

export interface BuyOrderInput {
  instance_type?: string;
  /** Zone; overrides instance_type. */
  cluster?: string;
  /** Contracts to colocate with; overrides both. */
  colocate_with?: string[];
  /** Nodes (8 GPUs each), 1–1024. */
  quantity: number;
  /** "NOW", or on the hour (see alignBlock). */
  start_at: "NOW" | Instant;
  /** On the hour, at least one hour after the start. */
  end_at: Instant;
  /** Limit: cents for the WHOLE block, not a rate. */
  price: BlockCents;
  flags?: OrderFlags;
}

export interface SellOrderInput {
  contract_id: string;
  quantity: number;
  start_at: "NOW" | Instant;
  end_at: Instant;
  /** The least accepted: cents for the whole block. */
  price: BlockCents;
  flags?: OrderFlags;
}

export interface QuoteParams {
  side: "buy" | "sell";
  quantity: number;
  instance_type?: string;
  cluster?: string;
  colocate_with?: string;
  contract_id?: string;
  /** Seconds; or give min_duration and max_duration. */
  duration?: number;
  min_duration?: number;
  max_duration?: number;
  min_start_date?: "NOW" | Instant;
  max_start_date?: "NOW" | Instant;
}

export interface ListOrdersQuery {
  side?: "buy" | "sell";
  instance_type?: string;
  contract_id?: string;
  only_open?: boolean;
  only_filled?: boolean;
  exclude_filled?: boolean;
  only_cancelled?: boolean;
  exclude_cancelled?: boolean;
  min_placed_at?: Instant;
  max_placed_at?: Instant;
  limit?: number;
  offset?: number;
  sort_by?: "created_at" | "start_time";
  sort_direction?: "ASC" | "DESC";
}

export interface ContractsQuery {
  instance_type?: string;
  state?: "All" | "Upcoming" | "Active" | "Expired";
  active_within_interval_start?: Instant;
  active_within_interval_end?: Instant;
  include_nodes?: boolean;
  include_procurements?: boolean;
}

export interface CreateNodesInput {
  desired_count: number;
  /** Cents per node-hour. */
  max_price_per_node_hour: CentsPerNodeHour;
  zone?: string;
  any_zone?: boolean;
  /** Epoch seconds; default now. */
  start_at?: EpochSeconds;
  /** Epoch seconds on the hour; absent = auto-reserved. */
  end_at?: EpochSeconds;
  node_type?: "autoreserved" | "reserved";
  /** One per node; made up when absent, because recovery after a lost answer finds nodes by name. */
  names?: string[];
  cloud_init_user_data?: string;
  image_id?: string;
}

interface RequestSpec<T> {
  method: "GET" | "POST" | "PATCH" | "PUT" | "DELETE";
  path: string;
  query?: Record<string, string | number | boolean | string[] | undefined>;
  body?: unknown;
  headers?: Record<string, string>;
  /** null for a 204 with no body. */
  schema: Schema<T> | null;
  timeoutMs?: number;
}

const iso = (t: Instant | "NOW"): string => (t === "NOW" ? "NOW" : t instanceof Date ? t.toISOString() : t);

export class SfComputeClient {
  private readonly baseUrl: string;
  private readonly policy: RetryPolicy;
  private readonly doFetch: FetchLike;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly random: () => number;
  private readonly now: () => number;

  constructor(private readonly options: SfComputeClientOptions) {
    if (!options.token) throw new Error("SF Compute token missing (SF_API_KEY)");
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.policy = { ...DEFAULT_RETRY_POLICY, ...options.retry };
    // Call the global fetch unbound-free: Workers refuse `fetch` detached from globalThis.
    this.doFetch = options.fetch ?? ((request) => fetch(request));
    this.sleep = options.sleep ?? ((ms) => new Promise((done) => setTimeout(done, ms)));
    this.random = options.random ?? Math.random;
    this.now = options.now ?? Date.now;
  }

  // ---- v0 market ----

  quote(params: QuoteParams): Promise<Quote> {
    const { min_start_date, max_start_date, ...rest } = params;
    return this.request({
      method: "GET",
      path: "/v0/quote",
      query: {
        ...rest,
        min_start_date: min_start_date === undefined ? undefined : iso(min_start_date),
        max_start_date: max_start_date === undefined ? undefined : iso(max_start_date),
      },
      schema: Quote,
      timeoutMs: this.options.quoteTimeoutMs ?? 600_000,
    });
  }

  /** Places a buy order. Returns at once with `pending`; follow it with `waitForOrder`. */
  placeBuyOrder(order: BuyOrderInput, opts: { idempotencyKey?: string } = {}): Promise<CreatedOrder> {
    return this.placeOrder(
      {
        side: "buy",
        instance_type: order.instance_type,
        cluster: order.cluster,
        colocate_with: order.colocate_with,
        quantity: order.quantity,
        start_at: iso(order.start_at),
        end_at: iso(order.end_at),
        price: order.price,
        flags: order.flags,
      },
      opts.idempotencyKey,
    );
  }

  /** Offers held contract time back to the market. */
  placeSellOrder(order: SellOrderInput, opts: { idempotencyKey?: string } = {}): Promise<CreatedOrder> {
    return this.placeOrder(
      {
        side: "sell",
        contract_id: order.contract_id,
        quantity: order.quantity,
        start_at: iso(order.start_at),
        end_at: iso(order.end_at),
        price: order.price,
        flags: order.flags,
      },
      opts.idempotencyKey,
    );
  }

  private placeOrder(body: Record<string, unknown>, idempotencyKey?: string): Promise<CreatedOrder> {
    const key = idempotencyKey ?? crypto.randomUUID();
    const spec: RequestSpec<CreatedOrder> = {
      method: "POST",
      path: "/v0/orders",
      body,
      headers: { "Idempotency-Key": key },
      schema: CreatedOrder,
    };
    // A 409 is retried too, as SF Compute's own SDK does: with the key reused it cannot place a
    // second order, and it may mean an earlier attempt with this key is still being processed.
    return this.retrying(
      spec.method,
      spec.path,
      () => this.once(spec),
      (error) => error.transient || error.status === 409,
    );
  }

  getOrder(id: string): Promise<Order> {
    return this.request({ method: "GET", path: `/v0/orders/${encodeURIComponent(id)}`, schema: OrderSchema });
  }

  listOrders(query: ListOrdersQuery = {}): Promise<{ data: Order[]; has_more?: boolean }> {
    const { min_placed_at, max_placed_at, ...rest } = query;
    return this.request({
      method: "GET",
      path: "/v0/orders",
      query: {
        ...rest,
        min_placed_at: min_placed_at === undefined ? undefined : iso(min_placed_at),
        max_placed_at: max_placed_at === undefined ? undefined : iso(max_placed_at),
      },
      schema: listOf(OrderSchema),
    });
  }

  /** Asks for a cancellation; it takes effect asynchronously (poll the order). */
  async cancelOrder(id: string): Promise<void> {
    const path = `/v0/orders/${encodeURIComponent(id)}`;
    await this.retrying("DELETE", path, async (attempt) => {
      try {
        await this.once({ method: "DELETE", path, body: {}, schema: PendingAck });
      } catch (error) {
        // A retry that finds the order already cancelled means the first attempt got through.
        if (
          attempt > 1 &&
          isSfComputeError(error) &&
          error.status === 400 &&
          /cancel/i.test(error.reason + error.message)
        ) {
          return;
        }
        throw error;
      }
    });
  }

  /**
   * Polls an order until it reaches a final status (the CLI polls every 200 ms and tolerates a 404
   * right after the POST, reference §12).
   */
  async waitForOrder(id: string, opts: { pollMs?: number; timeoutMs?: number } = {}): Promise<Order> {
    const pollMs = opts.pollMs ?? 200;
    const deadline = this.now() + (opts.timeoutMs ?? 30_000);
    for (;;) {
      try {
        const order = await this.getOrder(id);
        if (FINAL_ORDER_STATUSES.has(order.status)) return order;
      } catch (error) {
        if (!(isSfComputeError(error) && error.status === 404)) throw error;
      }
      if (this.now() + pollMs > deadline) {
        throw new SfComputeError(0, "timeout", `order ${id} did not reach a final status in time`, { path: id });
      }
      await this.sleep(pollMs);
    }
  }

  listContracts(query: ContractsQuery = {}): Promise<Contract[]> {
    const { active_within_interval_start: s, active_within_interval_end: e, ...rest } = query;
    return this.request({
      method: "GET",
      path: "/v0/contracts",
      query: {
        ...rest,
        active_within_interval_start: s === undefined ? undefined : iso(s),
        active_within_interval_end: e === undefined ? undefined : iso(e),
      },
      schema: listOf(ContractSchema),
    }).then((r) => r.data);
  }

  getContract(id: string): Promise<Contract> {
    return this.request({ method: "GET", path: `/v0/contracts/${encodeURIComponent(id)}`, schema: ContractSchema });
  }

  /** `GET /v1/balances` (what the CLI uses since Aug 2025). */
  balance(): Promise<Balances> {
    return this.request({ method: "GET", path: "/v1/balances", schema: Balances });
  }

  /** `GET /v0/balance`: `reserved` is what open buy orders hold. */
  legacyBalance(): Promise<LegacyBalance> {
    return this.request({ method: "GET", path: "/v0/balance", schema: LegacyBalance });
  }

  // ---- zones ----

  listZones(): Promise<Zone[]> {
    return this.request({ method: "GET", path: "/v0/zones", schema: listOf(Zone) }).then((r) => r.data);
  }

  getZone(name: string): Promise<Zone> {
    return this.request({ method: "GET", path: `/v0/zones/${encodeURIComponent(name)}`, schema: Zone });
  }

  // ---- v1 nodes ----

  /**
   * Creates nodes. `POST /v1/nodes` is not idempotent: it is sent again only after a 429 or 408
   * (nothing was done), and only for the names a lookup does not find. Any other failure is the
   * caller's to follow up by the nodes' names (see the file's comment).
   */
  async createNodes(input: CreateNodesInput): Promise<Node[]> {
    const prefix = this.options.nodeNamePrefix ?? "scalar";
    const batch = crypto.randomUUID().slice(0, 8);
    const names = input.names ?? Array.from({ length: input.desired_count }, (_, i) => `${prefix}-${batch}-${i + 1}`);
    if (names.length !== input.desired_count) throw new RangeError("names must have desired_count entries");
    return this.retrying(
      "POST",
      "/v1/nodes",
      async (attempt) => {
        let found: Node[] = [];
        if (attempt > 1) {
          const existing = await this.listNodes({ name: names });
          found = existing.filter((n) => names.includes(n.name) && n.status !== "deleted");
          if (found.length === names.length) return sortByNames(found, names);
        }
        const missing = names.filter((n) => !found.some((f) => f.name === n));
        const created = await this.once({
          method: "POST",
          path: "/v1/nodes",
          body: { ...input, desired_count: missing.length, names: missing },
          schema: listOf(Node),
        });
        return sortByNames([...found, ...created.data], names);
      },
      refusedUnseen,
    );
  }

  /** Nodes, filtered by ids, names and type (each optional; given together, a node matches each). */
  listNodes(filter: { id?: string[]; name?: string[]; type?: "autoreserved" | "reserved" } = {}): Promise<Node[]> {
    return this.request({ method: "GET", path: "/v1/nodes", query: { ...filter }, schema: listOf(Node) }).then(
      (r) => r.data,
    );
  }

  getNode(idOrName: string): Promise<Node> {
    return this.request({ method: "GET", path: `/v1/nodes/${encodeURIComponent(idOrName)}`, schema: Node });
  }

  /**
   * Buys more time for a reserved node. Sent again only after a 429 or 408, and not if the end
   * already moved; any other failure is the caller's to follow up by the node's `end_at`.
   */
  async extendNode(
    idOrName: string,
    body: { duration_seconds: number; max_price_per_node_hour: CentsPerNodeHour },
  ): Promise<Node> {
    const before = await this.getNode(idOrName);
    const path = `/v1/nodes/${encodeURIComponent(idOrName)}/extend`;
    return this.retrying(
      "PATCH",
      path,
      async (attempt) => {
        if (attempt > 1) {
          const now = await this.getNode(idOrName);
          if (before.end_at != null && now.end_at != null && now.end_at >= before.end_at + body.duration_seconds)
            return now;
        }
        return this.once({ method: "PATCH", path, body, schema: Node });
      },
      refusedUnseen,
    );
  }

  /** Releases an auto-reserved node. */
  releaseNode(idOrName: string): Promise<Node> {
    const path = `/v1/nodes/${encodeURIComponent(idOrName)}/release`;
    return this.retrying("PATCH", path, async (attempt) => {
      if (attempt > 1) {
        const node = await this.getNode(idOrName);
        if (node.status === "released") return node;
      }
      return this.once({ method: "PATCH", path, schema: Node });
    });
  }

  /** Deletes a node with no active or pending VM. */
  async deleteNode(idOrName: string): Promise<void> {
    const path = `/v1/nodes/${encodeURIComponent(idOrName)}`;
    await this.retrying("DELETE", path, async (attempt) => {
      if (attempt > 1) {
        try {
          if ((await this.getNode(idOrName)).status === "deleted") return;
        } catch (error) {
          if (isSfComputeError(error) && error.status === 404) return;
          throw error;
        }
      }
      await this.once({ method: "DELETE", path, schema: null });
    });
  }

  vmSsh(vmId: string): Promise<VmSsh> {
    return this.request({ method: "GET", path: "/v0/vms/ssh", query: { vm_id: vmId }, schema: VmSsh });
  }

  // ---- transport ----

  /** One call, retried when transient (only for calls that are safe to repeat). */
  private request<T>(spec: RequestSpec<T>): Promise<T> {
    return this.retrying(spec.method, spec.path, () => this.once(spec));
  }

  /**
   * Runs `attempt` until it succeeds, an error `retryable` refuses occurs (by default any that is
   * not transient), or the attempts run out. `attempt` receives its number, so a non-idempotent
   * call can check what the last one did.
   */
  private async retrying<T>(
    method: string,
    path: string,
    attempt: (n: number) => Promise<T>,
    retryable: (error: SfComputeError) => boolean = (error) => error.transient,
  ): Promise<T> {
    for (let n = 1; ; n++) {
      const started = this.now();
      try {
        const result = await attempt(n);
        this.options.onAttempt?.({ method, path, attempt: n, status: 200, durationMs: this.now() - started });
        return result;
      } catch (caught) {
        const error = isSfComputeError(caught)
          ? caught
          : new SfComputeError(0, "client_error", String(caught), { cause: caught });
        const wait =
          retryable(error) && n < this.policy.maxAttempts
            ? retryDelayMs(n, error.extra.retryAfterMs ?? null, this.policy, this.random)
            : null;
        this.options.onAttempt?.({
          method,
          path,
          attempt: n,
          status: error.status,
          durationMs: this.now() - started,
          error: `${error.code}: ${error.message}`,
          ...(wait === null ? {} : { retryInMs: wait }),
          ...(error.extra.retryAfterMs == null ? {} : { advertisedDelayMs: error.extra.retryAfterMs }),
        });
        if (wait === null) {
          throw new SfComputeError(error.status, error.code, error.message, {
            ...error.extra,
            attempts: n,
            method,
            path,
          });
        }
        await this.sleep(wait);
      }
    }
  }

  /** A single HTTP attempt; every failure is an SfComputeError. */
  private async once<T>(spec: RequestSpec<T>): Promise<T> {
    const url = new URL(this.baseUrl + spec.path);
    for (const [key, value] of Object.entries(spec.query ?? {})) {
      if (value === undefined) continue;
      if (Array.isArray(value)) for (const v of value) url.searchParams.append(key, v);
      else url.searchParams.set(key, String(value));
    }
    const headers: Record<string, string> = {
      Authorization: `Bearer ${this.options.token}`,
      Accept: "application/json",
      ...spec.headers,
    };
    if (spec.body !== undefined) headers["Content-Type"] = "application/json";
    const request = new Request(url.toString(), {
      method: spec.method,
      headers,
      body: spec.body === undefined ? undefined : JSON.stringify(spec.body),
      signal: AbortSignal.timeout(spec.timeoutMs ?? this.options.timeoutMs ?? 60_000),
    });
    let response: Response;
    let text: string;
    try {
      response = await this.doFetch(request);
      text = await response.text();
    } catch (error) {
      const name = (error as { name?: string })?.name;
      const timedOut = name === "TimeoutError" || name === "AbortError";
      throw new SfComputeError(
        0,
        timedOut ? "timeout" : "network_error",
        `${spec.method} ${spec.path}: ${String(error)}`,
        {
          method: spec.method,
          path: spec.path,
          cause: error,
        },
      );
    }
    if (!response.ok) {
      throw errorFromResponse(response.status, text, {
        method: spec.method,
        path: spec.path,
        retryAfterMs: advertisedDelayMs(response.headers, this.now(), response.status),
      });
    }
    if (spec.schema === null) return undefined as T;
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new SfComputeError(response.status, "invalid_response", `${spec.method} ${spec.path}: not JSON`);
    }
    const parsed = spec.schema.safeParse(json);
    if (!parsed.success) {
      throw new SfComputeError(
        response.status,
        "invalid_response",
        `${spec.method} ${spec.path}: unexpected response shape: ${parsed.error.message}`,
      );
    }
    return parsed.data;
  }
}

/**
 * Answers after which a request without an idempotency key may be sent again at once: SF Compute
 * refused it before doing anything (rate limit, request timeout). Not a timeout, a lost connection
 * or a 5xx: the request may have been done, or still be under way.
 */
function refusedUnseen(error: SfComputeError): boolean {
  return error.status === 429 || error.status === 408;
}

function sortByNames(nodes: Node[], names: string[]): Node[] {
  return [...nodes].sort((a, b) => names.indexOf(a.name) - names.indexOf(b.name));
}

/** A client from the Worker's environment: `SF_API_KEY`, and `SF_API_BASE_URL` (default production). */
export function sfComputeClientFromEnv(
  env: { SF_API_KEY?: string; SF_API_BASE_URL?: string },
  options: Omit<SfComputeClientOptions, "baseUrl" | "token"> = {},
): SfComputeClient {
  if (!env.SF_API_KEY) throw new Error("SF_API_KEY is not set");
  return new SfComputeClient({
    baseUrl: env.SF_API_BASE_URL ?? "https://api.sfcompute.com",
    token: env.SF_API_KEY,
    ...options,
  });
}
