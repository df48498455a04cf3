/**
 * The v0 market: quotes, buy and sell orders, contracts and balances (reference §4.1, §5–§9, §15).
 *
 * - Orders are accepted as `pending` and matched asynchronously. Immediate-or-cancel is the default:
 *   an order that does not fill on entry is cancelled; a standing order (`flags.ioc: false`) rests
 *   `open`, is retried at every hour (when prices move) and after every resale, and is cancelled once
 *   its end passes. `post_only` skips the entry match; `market` ignores the limit.
 * - Fills are all or nothing, at the market's price for the block, never above a buy's limit nor
 *   below a sell's. A buy fill takes nodes from the zone's supply and creates a contract; a sell
 *   fill carves the window out of the seller's contract and gives the nodes back to the market.
 * - A quote searches start times and durations in the requested window and returns the cheapest
 *   block; it uses the same pricing function as the matcher, so an order at the quoted block and
 *   price fills at that price within the hour.
 */
import type { Account } from "./accounts";
import type { ZoneSpec } from "./catalog";
import { ceilTo, HOUR_MS, MINUTE_MS } from "./clock";
import { invalid, notFound, SimError } from "./errors";
import type { Kernel } from "./kernel";
import { blockTotalCents } from "./prices";
import { addBlock, blockShape, minOver, type Shape, shapeEnd, shapeStart } from "./shape";

export type OrderSide = "buy" | "sell";
export type OrderStatus = "pending" | "open" | "filled" | "cancelled" | "rejected";

export interface OrderFlags {
  ioc: boolean;
  post_only: boolean;
  market: boolean;
  prorate: boolean;
}

/** `POST /v0/orders` after JSON parsing: times are epoch ms or "NOW"; everything else as on the wire. */
export interface OrderInput {
  side: OrderSide;
  quantity: number;
  start_at: "NOW" | number;
  end_at: number;
  /** Cents, total for the block. */
  price: number;
  flags?: Partial<OrderFlags>;
  instance_type?: string;
  cluster?: string;
  colocate_with?: string[];
  contract_id?: string;
}

export interface OrderRecord {
  id: string;
  accountId: string;
  side: OrderSide;
  status: OrderStatus;
  instanceType: string;
  /** Zone the order is for (asked for, or chosen at the fill). */
  zone: string | null;
  quantity: number;
  startAt: number;
  endAt: number;
  startNow: boolean;
  /** Limit, cents for the whole block. */
  price: number;
  flags: OrderFlags;
  colocateWith: string[];
  contractId: string | null;
  executed: boolean;
  executedAt: number | null;
  executionPrice: number | null;
  cancelled: boolean;
  cancelledAt: number | null;
  rejected: boolean;
  rejectedReason: string | null;
  createdAt: number;
  visibleAt: number;
  cancelRequested: boolean;
  idempotencyKey: string | null;
}

export interface ContractRecord {
  id: string;
  accountId: string;
  instanceType: string;
  zone: string;
  shape: Shape;
  createdAt: number;
  activeAt: number;
  isNode: boolean;
  procurementId: string | null;
  colocateWith: string[];
}

export interface QuoteInput {
  side: OrderSide;
  quantity: number;
  instance_type?: string;
  cluster?: string;
  colocate_with?: string;
  contract_id?: string;
  duration?: number;
  min_duration?: number;
  max_duration?: number;
  min_start_date?: "NOW" | number;
  max_start_date?: "NOW" | number;
}

export type NoQuoteReason = "no_matching_clusters" | "no_availability" | "bid_price_too_low" | "ask_price_too_high";

export interface QuoteResult {
  side: OrderSide;
  quote: {
    price: number;
    quantity: number;
    start: number;
    startNow: boolean;
    end: number;
    instanceType: string;
    zone: string;
    contractId?: string;
  } | null;
  noQuoteReason: NoQuoteReason | null;
}

export interface ContractFilter {
  instance_type?: string;
  active_within_interval_start?: number;
  active_within_interval_end?: number;
  state?: "All" | "Upcoming" | "Active" | "Expired";
  include_nodes?: boolean;
  include_procurements?: boolean;
}

interface PricedBlock {
  zone: ZoneSpec;
  start: number;
  end: number;
  quantity: number;
  total: number;
}

const FINAL: ReadonlySet<OrderStatus> = new Set(["filled", "cancelled", "rejected"]);
export const isFinal = (status: OrderStatus) => FINAL.has(status);

export class Market {
  readonly orders = new Map<string, OrderRecord>();
  readonly contracts = new Map<string, ContractRecord>();
  private readonly idempotency = new Map<string, { fingerprint: string; orderId: string }>();
  /** Orders resting in the book, and unsettled sells by contract: the hourly rematch and the holdings check read these. */
  private readonly openOrders = new Set<OrderRecord>();
  private readonly liveSells = new Map<string, Set<OrderRecord>>();
  /** Called when a contract's shape changes, so nodes riding on it can follow. */
  onContractChanged: (contract: ContractRecord) => void = () => {};

  constructor(
    private readonly k: Kernel,
    private readonly accountOf: (id: string) => Account,
  ) {}

  private get settings() {
    return this.k.settings.market;
  }

  /** With `v0Sells: "reject"`, as SF Compute may answer now that `contract_id` left its schema. */
  private refuseV0Sells(what: "orders" | "quotes"): void {
    if (this.settings.v0Sells === "reject") throw invalid(`sell ${what} are not accepted by this API`, "side");
  }

  // ---- time rules (§7.1) ----

  /** "NOW" is the beginning of the next minute. */
  nowStart(): number {
    return ceilTo(this.k.now(), MINUTE_MS);
  }

  /** A start must be NOW, within ±1 minute of now (then it is now), or on a future hour. */
  resolveStart(start: "NOW" | number, field = "start_at"): { start: number; now: boolean } {
    const now = this.k.now();
    if (start === "NOW") return { start: this.nowStart(), now: true };
    if (Math.abs(start - now) <= this.settings.startToleranceMs) return { start: this.nowStart(), now: true };
    if (start > now && start % HOUR_MS === 0) return { start, now: false };
    throw invalid("Start time must be 'NOW', within +/- 1 minute of now, or on a future hour", field);
  }

  checkEnd(start: number, end: number, field = "end_at"): void {
    if (end % HOUR_MS !== 0) throw invalid("End time must be on the hour", field);
    if (end <= start) throw invalid("End time must be after start time", field);
    if (end - start < HOUR_MS) throw invalid("Duration must be at least 1 hour", field);
    if (end - start > this.settings.maxDurationMs) throw invalid("Duration must be at most 3 years", field);
  }

  checkQuantity(quantity: number): void {
    if (!Number.isInteger(quantity) || quantity < 1 || quantity > this.settings.maxQuantity) {
      throw invalid(`quantity must be an integer between 1 and ${this.settings.maxQuantity} (nodes)`, "quantity");
    }
  }

  private checkTrading(account: Account): void {
    if (account.frozen) throw new SimError(403, "forbidden", "Account is frozen", "account.frozen");
    if (this.settings.halted) throw new SimError(403, "forbidden", "Trading is halted", "trading_engine.is_halted");
  }

  // ---- pricing ----

  private zone(name: string): ZoneSpec {
    const zone = this.k.catalog.zones.get(name);
    if (!zone) throw new Error(`unknown zone ${name}`);
    return zone;
  }

  /** The ask for a block in a zone, or null if the zone has no room for it. */
  priceBuy(zone: ZoneSpec, start: number, end: number, quantity: number): PricedBlock | null {
    const now = this.k.now();
    const { free, peak } = this.k.supply.availability(zone, start, end, now, quantity);
    if (free < quantity) return null;
    const base = this.k.catalog.instanceTypeOf(zone).base_cents_per_gpu_hour;
    const rate = this.k.prices.askRate(base, zone.name, { start, end, quantity }, now, peak);
    return { zone, start, end, quantity, total: blockTotalCents(rate, quantity, end - start) };
  }

  /** What buyers pay for resold time, or null when the order exceeds what they absorb. */
  priceSell(zone: ZoneSpec, start: number, end: number, quantity: number): PricedBlock | null {
    if (quantity > this.k.supply.bidDepth(zone)) return null;
    const base = this.k.catalog.instanceTypeOf(zone).base_cents_per_gpu_hour;
    const rate = this.k.prices.bidRate(base, zone.name, { start, end, quantity }, this.k.now());
    return { zone, start, end, quantity, total: Math.floor((rate * quantity * 8 * (end - start)) / HOUR_MS) };
  }

  /** The cheapest zone that can take the block among `zones`. */
  cheapestBuy(zones: ZoneSpec[], start: number, end: number, quantity: number): PricedBlock | null {
    let best: PricedBlock | null = null;
    for (const zone of zones) {
      const priced = this.priceBuy(zone, start, end, quantity);
      if (priced && (!best || priced.total < best.total)) best = priced;
    }
    return best;
  }

  resaleFee(total: number, quantity: number, durationMs: number): number {
    const fee = this.settings.resaleFee;
    return Math.ceil(
      (fee.flatCentsPerNodeHour * quantity * durationMs) / HOUR_MS + (total * fee.percentageBps) / 10_000,
    );
  }

  // ---- orders ----

  placeOrder(
    account: Account,
    input: OrderInput,
    idempotencyKey?: string,
  ): { order: OrderRecord; replayed: boolean; response: Record<string, unknown> } {
    if (idempotencyKey !== undefined) {
      const seen = this.idempotency.get(`${account.id}\u0000${idempotencyKey}`);
      if (seen) {
        if (seen.fingerprint !== fingerprint(input) && this.settings.idempotencyMismatch === "error") {
          throw new SimError(
            400,
            "idempotency_error",
            "This Idempotency-Key was already used with a different request body",
            "idempotency.key_reused",
          );
        }
        const order = this.orders.get(seen.orderId)!;
        return { order, replayed: true, response: createResponse(order, "pending") };
      }
    }
    const order = this.validateOrder(account, input, idempotencyKey ?? null);
    this.orders.set(order.id, order);
    if (order.side === "sell") {
      const sells = this.liveSells.get(order.contractId!) ?? new Set();
      sells.add(order);
      this.liveSells.set(order.contractId!, sells);
    }
    if (idempotencyKey !== undefined) {
      this.idempotency.set(`${account.id}\u0000${idempotencyKey}`, {
        fingerprint: fingerprint(input),
        orderId: order.id,
      });
    }
    // A standing buy holds its limit until it fills or ends (reference §4.2 `reserved`).
    if (order.side === "buy" && !order.flags.ioc && !order.flags.market) {
      account.placeHold(order.id, order.price, this.k.now());
    }
    this.k.events.emit(this.k.now(), "order.status", { order_id: order.id, status: order.status });
    this.k.at(this.k.now() + this.k.delay(this.settings.matchDelayMs), `match ${order.id}`, () => this.enter(order));
    return { order, replayed: false, response: createResponse(order, "pending") };
  }

  private validateOrder(account: Account, input: OrderInput, idempotencyKey: string | null): OrderRecord {
    this.checkTrading(account);
    if (input.side !== "buy" && input.side !== "sell") throw invalid("side must be 'buy' or 'sell'", "side");
    this.checkQuantity(input.quantity);
    if (!Number.isInteger(input.price) || input.price < 0) {
      throw invalid("price must be a non-negative integer: cents for the whole block", "price");
    }
    const { start, now: startNow } = this.resolveStart(input.start_at);
    this.checkEnd(start, input.end_at);
    const flags: OrderFlags = {
      ioc: input.flags?.ioc ?? true,
      post_only: input.flags?.post_only ?? false,
      market: input.flags?.market ?? false,
      prorate: input.flags?.prorate ?? false,
    };
    let instanceType: string;
    let zone: string | null = null;
    let contractId: string | null = null;
    const colocateWith = input.colocate_with ?? [];
    if (input.side === "buy") {
      if (!account.canBuy) {
        throw new SimError(403, "forbidden", "Account unauthorized to place buy orders", "order.unauthorized_buyer");
      }
      if (input.contract_id !== undefined) throw invalid("contract_id is only for sell orders", "contract_id");
      const target = this.buyTarget(account, input.instance_type, input.cluster, colocateWith);
      instanceType = target.instanceType;
      zone = target.zone;
      if (!flags.market && account.availableCents < input.price) {
        throw invalid("Insufficient balance", "price", "order.insufficient_balance");
      }
    } else {
      if (!account.canSell) {
        throw new SimError(403, "forbidden", "Account unauthorized to place sell orders", "order.unauthorized_seller");
      }
      if (input.instance_type !== undefined || input.cluster !== undefined || colocateWith.length > 0) {
        throw invalid("instance_type, cluster and colocate_with are not allowed on sell orders", "instance_type");
      }
      this.refuseV0Sells("orders");
      if (!input.contract_id) throw invalid("contract_id is required for sell orders", "contract_id");
      const contract = this.ownedContract(account, input.contract_id);
      const free = this.sellableOver(contract, start, input.end_at, null);
      if (free < input.quantity) {
        throw invalid(
          `Contract ${contract.id} holds ${free} node(s) free to sell over the window, fewer than ${input.quantity}`,
          "quantity",
          "order.insufficient_contract_quantity",
        );
      }
      instanceType = contract.instanceType;
      zone = contract.zone;
      contractId = contract.id;
    }
    const now = this.k.now();
    return {
      id: this.k.id("ordr_"),
      accountId: account.id,
      side: input.side,
      status: "pending",
      instanceType,
      zone,
      quantity: input.quantity,
      startAt: start,
      endAt: input.end_at,
      startNow,
      price: input.price,
      flags,
      colocateWith,
      contractId,
      executed: false,
      executedAt: null,
      executionPrice: null,
      cancelled: false,
      cancelledAt: null,
      rejected: false,
      rejectedReason: null,
      createdAt: now,
      visibleAt: now + this.settings.orderVisibilityDelayMs,
      cancelRequested: false,
      idempotencyKey,
    };
  }

  /** Which zone(s) a buy is for: `colocate_with` overrides `cluster`, which overrides `instance_type` (§7.1). */
  buyTarget(
    account: Account,
    instanceType: string | undefined,
    cluster: string | undefined,
    colocateWith: string[],
  ): { instanceType: string; zone: string | null } {
    if (colocateWith.length > 0) {
      const first = this.contracts.get(colocateWith[0]!);
      for (const id of colocateWith) {
        const c = this.contracts.get(id);
        if (!c || c.accountId !== account.id) {
          throw invalid(`Contract to colocate with not found: ${id}`, "colocate_with", "order.contract_not_found");
        }
      }
      return { instanceType: first!.instanceType, zone: first!.zone };
    }
    if (cluster !== undefined) {
      const zone = this.k.catalog.zones.get(cluster);
      if (!zone) throw invalid(`Cluster not found: ${cluster}`, "cluster", "order.cluster_not_found");
      return { instanceType: zone.instance_type, zone: zone.name };
    }
    if (!instanceType) throw invalid("instance_type is required (or cluster, or colocate_with)", "instance_type");
    if (!this.k.catalog.instanceTypes.has(instanceType)) {
      throw invalid(`Unknown instance type: ${instanceType}`, "instance_type", "order.invalid_instance_type");
    }
    return { instanceType, zone: null };
  }

  /** Nodes of a contract over [start, end) not already promised to open sell orders. */
  sellableOver(contract: ContractRecord, start: number, end: number, exceptOrder: string | null): number {
    let committed = 0;
    for (const o of this.liveSells.get(contract.id) ?? []) {
      if (o.id !== exceptOrder && o.startAt < end && start < o.endAt) committed += o.quantity;
    }
    return minOver(contract.shape, start, end) - committed;
  }

  getOrder(account: Account, id: string): OrderRecord {
    const order = this.orders.get(id);
    if (!order || order.visibleAt > this.k.now()) throw notFound(`Order not found: ${id}`, "order.not_found");
    if (order.accountId !== account.id) {
      throw new SimError(403, "forbidden", "Order belongs to another account", "order.forbidden");
    }
    return order;
  }

  listOrders(account: Account): OrderRecord[] {
    const now = this.k.now();
    return [...this.orders.values()].filter((o) => o.accountId === account.id && o.visibleAt <= now);
  }

  cancelOrder(account: Account, id: string): void {
    const order = this.getOrder(account, id);
    if (order.status === "filled") throw invalid("Order already filled", undefined, "order.already_filled");
    if (order.status === "rejected") throw invalid("Order was rejected", undefined, "order.already_rejected");
    if (order.cancelled || order.cancelRequested) {
      throw invalid("Order already cancelled", undefined, "order.already_cancelled");
    }
    order.cancelRequested = true;
    this.k.at(this.k.now() + this.k.delay(this.settings.cancelDelayMs), `cancel ${order.id}`, () => {
      if (!isFinal(order.status)) this.finish(order, "cancelled");
    });
  }

  /** DELETE /v0/orders (older schema): cancels every open order of the account. */
  cancelAll(account: Account): number {
    let n = 0;
    for (const order of this.listOrders(account)) {
      if (isFinal(order.status) || order.cancelRequested) continue;
      this.cancelOrder(account, order.id);
      n++;
    }
    return n;
  }

  /** The first match, right after acceptance. */
  private enter(order: OrderRecord): void {
    if (order.status !== "pending") return;
    if (order.cancelRequested) return; // the cancel timer settles it
    const outcome = order.flags.post_only ? "unmatched" : this.tryFill(order);
    if (outcome !== "unmatched") return;
    if (order.flags.ioc) {
      this.finish(order, "cancelled");
      return;
    }
    this.setStatus(order, "open");
    this.k.at(order.endAt, `expire ${order.id}`, () => {
      if (!isFinal(order.status)) this.finish(order, "cancelled");
    });
  }

  /** Tries to fill `order` now. Returns "unmatched" when the market does not cross it. */
  private tryFill(order: OrderRecord): "filled" | "rejected" | "unmatched" {
    const now = this.k.now();
    const account = this.accountOf(order.accountId);
    let start = order.startAt;
    if (start < now - this.settings.startToleranceMs && order.startNow) {
      // "NOW" means as soon as possible: a standing NOW order starts at the next minute when it fills.
      order.startAt = start = this.nowStart();
      if (order.endAt - start < MINUTE_MS) return "unmatched";
    } else if (start < now && !order.startNow) {
      // Time already past cannot be bought or sold. `prorate` moves the start to now and scales the limit.
      if (!order.flags.prorate || order.side === "sell") return "unmatched";
      const newStart = this.nowStart();
      if (order.endAt - newStart < MINUTE_MS) return "unmatched";
      order.price = Math.floor((order.price * (order.endAt - newStart)) / (order.endAt - order.startAt));
      order.startAt = newStart;
      if (!order.flags.ioc && !order.flags.market) account.placeHold(order.id, order.price, now);
      start = newStart;
    }
    if (order.side === "buy") {
      const zones = order.zone ? [this.zone(order.zone)] : this.k.catalog.zonesFor(order.instanceType);
      const priced = this.cheapestBuy(zones, start, order.endAt, order.quantity);
      if (!priced || (!order.flags.market && priced.total > order.price)) return "unmatched";
      const hold = !order.flags.ioc && !order.flags.market ? order.id : undefined;
      try {
        account.charge(now, priced.total, order.id, hold);
      } catch {
        this.finish(order, "rejected", "Insufficient balance");
        return "rejected";
      }
      const contract = this.createContract(account, priced, { colocateWith: order.colocateWith });
      order.zone = priced.zone.name;
      order.contractId = contract.id;
      this.fill(order, priced.total);
      return "filled";
    }
    const contract = this.contracts.get(order.contractId!)!;
    if (this.sellableOver(contract, start, order.endAt, order.id) < order.quantity) {
      this.finish(order, "rejected", "Contract no longer holds the nodes offered");
      return "rejected";
    }
    const priced = this.priceSell(this.zone(contract.zone), start, order.endAt, order.quantity);
    if (!priced || (!order.flags.market && priced.total < order.price)) return "unmatched";
    this.carve(contract, start, order.endAt, order.quantity);
    account.post(now, "sell", priced.total, order.id);
    const fee = this.resaleFee(priced.total, order.quantity, order.endAt - start);
    if (fee > 0) account.post(now, "fee", -fee, order.id);
    this.fill(order, priced.total);
    // Time given back to the market may let standing buys fill.
    this.k.at(now, "rematch after resale", () => this.rematchStanding());
    return "filled";
  }

  private fill(order: OrderRecord, executionPrice: number): void {
    order.executed = true;
    order.executedAt = this.k.now();
    order.executionPrice = executionPrice;
    this.setStatus(order, "filled");
  }

  private finish(order: OrderRecord, status: "cancelled" | "rejected", reason?: string): void {
    const now = this.k.now();
    if (status === "cancelled") {
      order.cancelled = true;
      order.cancelledAt = now;
    } else {
      order.rejected = true;
      order.rejectedReason = reason ?? null;
    }
    this.accountOf(order.accountId).releaseHold(order.id, now);
    this.setStatus(order, status);
  }

  private setStatus(order: OrderRecord, status: OrderStatus): void {
    order.status = status;
    if (status === "open") this.openOrders.add(order);
    else this.openOrders.delete(order);
    if (isFinal(status) && order.side === "sell") this.liveSells.get(order.contractId!)?.delete(order);
    this.k.events.emit(this.k.now(), "order.status", { order_id: order.id, status });
  }

  /** Re-offers every open order to the market (hourly, when prices move, and after a resale). */
  rematchStanding(): void {
    const open = [...this.openOrders].filter((o) => !o.cancelRequested);
    if (open.length === 0) return;
    // Price priority (highest bid per node-hour first), then time.
    const rate = (o: OrderRecord) => o.price / (o.quantity * Math.max(1, o.endAt - o.startAt));
    open.sort((a, b) => rate(b) - rate(a) || a.createdAt - b.createdAt);
    for (const order of open) this.tryFill(order);
  }

  // ---- contracts ----

  createContract(
    account: Account,
    block: PricedBlock,
    opts: { isNode?: boolean; procurementId?: string | null; colocateWith?: string[] } = {},
  ): ContractRecord {
    const now = this.k.now();
    this.k.supply.hold(block.zone.name, block.start, block.end, block.quantity);
    const contract: ContractRecord = {
      id: this.k.id("cont_"),
      accountId: account.id,
      instanceType: block.zone.instance_type,
      zone: block.zone.name,
      shape: blockShape(block.start, block.end, block.quantity),
      createdAt: now,
      activeAt: now + this.settings.contractPendingMs,
      isNode: opts.isNode ?? false,
      procurementId: opts.procurementId ?? null,
      colocateWith: opts.colocateWith ?? [],
    };
    this.contracts.set(contract.id, contract);
    this.k.events.emit(now, "contract.updated", { contract_id: contract.id });
    return contract;
  }

  /** Adds time to a contract (node extension, auto-reserved renewal) after the caller has paid. */
  growContract(contract: ContractRecord, start: number, end: number, quantity: number): void {
    this.k.supply.hold(contract.zone, start, end, quantity);
    contract.shape = addBlock(contract.shape, start, end, quantity);
    this.k.events.emit(this.k.now(), "contract.updated", { contract_id: contract.id });
    this.onContractChanged(contract);
  }

  /** Removes sold time from a contract and returns it to the market. */
  private carve(contract: ContractRecord, start: number, end: number, quantity: number): void {
    contract.shape = addBlock(contract.shape, start, end, -quantity);
    this.k.supply.hold(contract.zone, start, end, -quantity);
    this.k.events.emit(this.k.now(), "contract.updated", { contract_id: contract.id });
    this.onContractChanged(contract);
  }

  ownedContract(account: Account, id: string): ContractRecord {
    const contract = this.contracts.get(id);
    if (!contract || contract.accountId !== account.id) {
      throw notFound(`Contract not found: ${id}`, "order.contract_not_found");
    }
    return contract;
  }

  contractState(contract: ContractRecord): "Upcoming" | "Active" | "Expired" {
    const now = this.k.now();
    const start = shapeStart(contract.shape);
    const end = shapeEnd(contract.shape);
    if (start === null || end === null || now >= end) return "Expired";
    return now < start ? "Upcoming" : "Active";
  }

  listContracts(account: Account, filter: ContractFilter): ContractRecord[] {
    const { active_within_interval_start: from, active_within_interval_end: to } = filter;
    const state = filter.state;
    return [...this.contracts.values()].filter((c) => {
      if (c.accountId !== account.id) return false;
      if (filter.instance_type && c.instanceType !== filter.instance_type) return false;
      if (c.isNode && !filter.include_nodes) return false;
      if (c.procurementId && !filter.include_procurements && !filter.include_nodes) return false;
      const s = this.contractState(c);
      if (state === undefined ? s === "Expired" : state !== "All" && state !== s) return false;
      if (from !== undefined && to !== undefined && !overlaps(c.shape, from, to)) return false;
      return true;
    });
  }

  // ---- quotes (§8) ----

  quote(account: Account, input: QuoteInput): QuoteResult {
    this.checkQuantity(input.quantity);
    const { minDuration, maxDuration } = this.quoteDurations(input);
    const minStart = input.min_start_date ?? "NOW";
    const maxStart = input.max_start_date ?? "NOW";
    const now = this.k.now();
    const lo = minStart === "NOW" ? now : minStart;
    const hi = maxStart === "NOW" ? now : maxStart;
    if (hi < lo) {
      throw invalid("max_start_date must not be before min_start_date", "max_start_date", "quote.invalid_date_range");
    }
    if (input.side === "buy") {
      if (input.contract_id !== undefined) throw invalid("contract_id is only for sell quotes", "contract_id");
      let zones: ZoneSpec[];
      let instanceType: string;
      if (input.colocate_with !== undefined) {
        const c = this.ownedContract(account, input.colocate_with);
        zones = [this.zone(c.zone)];
        instanceType = c.instanceType;
      } else {
        if (!input.instance_type) throw invalid("instance_type is required for buy quotes", "instance_type");
        instanceType = input.instance_type;
        if (input.cluster !== undefined) {
          const zone = this.k.catalog.zones.get(input.cluster);
          zones = zone ? [zone] : [];
          // A zone names its own instance type; the CLI sends h100v with a zone and expects the zone's type.
          if (zone) instanceType = zone.instance_type;
        } else {
          zones = this.k.catalog.zonesFor(instanceType);
        }
      }
      if (zones.length === 0) return { side: "buy", quote: null, noQuoteReason: "no_matching_clusters" };
      let best: (PricedBlock & { startNow: boolean }) | null = null;
      for (const candidate of this.candidateBlocks(lo, hi, minDuration, maxDuration)) {
        const priced = this.cheapestBuy(zones, candidate.start, candidate.end, input.quantity);
        if (priced && (!best || priced.total < best.total)) best = { ...priced, startNow: candidate.now };
      }
      if (!best) return { side: "buy", quote: null, noQuoteReason: "no_availability" };
      return {
        side: "buy",
        quote: {
          price: best.total,
          quantity: input.quantity,
          start: best.start,
          startNow: best.startNow,
          end: best.end,
          instanceType: best.zone.instance_type,
          zone: best.zone.name,
        },
        noQuoteReason: null,
      };
    }
    if (input.instance_type !== undefined || input.cluster !== undefined || input.colocate_with !== undefined) {
      throw invalid("instance_type, cluster and colocate_with are not allowed on sell quotes", "instance_type");
    }
    this.refuseV0Sells("quotes");
    if (!input.contract_id) throw invalid("contract_id is required for sell quotes", "contract_id");
    const contract = this.ownedContract(account, input.contract_id);
    let best: (PricedBlock & { startNow: boolean }) | null = null;
    for (const candidate of this.candidateBlocks(lo, hi, minDuration, maxDuration)) {
      if (this.sellableOver(contract, candidate.start, candidate.end, null) < input.quantity) continue;
      const priced = this.priceSell(this.zone(contract.zone), candidate.start, candidate.end, input.quantity);
      if (priced && (!best || priced.total > best.total)) best = { ...priced, startNow: candidate.now };
    }
    if (!best) return { side: "sell", quote: null, noQuoteReason: "no_availability" };
    return {
      side: "sell",
      quote: {
        price: best.total,
        quantity: input.quantity,
        start: best.start,
        startNow: best.startNow,
        end: best.end,
        instanceType: contract.instanceType,
        zone: contract.zone,
        contractId: contract.id,
      },
      noQuoteReason: null,
    };
  }

  private quoteDurations(input: QuoteInput): { minDuration: number; maxDuration: number } {
    const maxAllowed = this.settings.maxDurationMs / 1000;
    let min: number;
    let max: number;
    if (input.duration !== undefined) {
      if (input.min_duration !== undefined || input.max_duration !== undefined) {
        throw invalid("duration cannot be combined with min_duration or max_duration", "duration");
      }
      min = input.duration;
      max = input.duration + 59 * 60;
    } else {
      if (input.min_duration === undefined || input.max_duration === undefined) {
        throw invalid("Either duration, or both min_duration and max_duration, are required", "duration");
      }
      min = input.min_duration;
      max = input.max_duration;
    }
    if (!Number.isInteger(min) || min < 3600) throw invalid("Duration must be at least 3600 seconds", "min_duration");
    if (!Number.isInteger(max) || max > maxAllowed + 59 * 60) {
      throw invalid("Duration must be at most 3 years", "max_duration");
    }
    if (max < min) throw invalid("max_duration must not be less than min_duration", "max_duration");
    return { minDuration: min * 1000, maxDuration: max * 1000 };
  }

  /** Start times (NOW, then each hour) and the shortest hour-aligned ends that fit the duration window. */
  private *candidateBlocks(
    lo: number,
    hi: number,
    minDuration: number,
    maxDuration: number,
  ): Generator<{ start: number; end: number; now: boolean }> {
    const now = this.k.now();
    const starts: { start: number; now: boolean }[] = [];
    if (lo <= now + this.settings.startToleranceMs) starts.push({ start: this.nowStart(), now: true });
    for (
      let h = ceilTo(Math.max(lo, now + this.settings.startToleranceMs + 1), HOUR_MS);
      h <= hi && starts.length < this.settings.quoteMaxStarts;
      h += HOUR_MS
    ) {
      starts.push({ start: h, now: false });
    }
    for (const { start, now: isNow } of starts) {
      let n = 0;
      for (let end = ceilTo(start + minDuration, HOUR_MS); end - start <= maxDuration; end += HOUR_MS) {
        if (end - start > this.settings.maxDurationMs) break;
        yield { start, end, now: isNow };
        if (++n >= this.settings.quoteMaxDurations) break;
      }
    }
  }
}

function overlaps(shape: Shape, from: number, to: number): boolean {
  for (let i = 0; i < shape.length - 1; i++) {
    const b = shape[i]!;
    const next = shape[i + 1]!;
    if (b.q > 0 && b.t < to && from < next.t) return true;
  }
  return false;
}

/** The body of the 201 (and of every replay with the same Idempotency-Key). */
function createResponse(order: OrderRecord, status: "pending"): Record<string, unknown> {
  return { object: "order", status, id: order.id, idempotency_key: order.idempotencyKey };
}

/** A stable rendering of a request body, to tell a replay from a different order under one key. */
function fingerprint(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(fingerprint).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value)
      .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${fingerprint((value as Record<string, unknown>)[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(value);
}
