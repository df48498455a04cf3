/**
 * The replay's side of the SF Compute market: the simulator's engine in-process on a virtual clock,
 * used the way the capacity manager uses SF Compute through its client:
 * - a buy of N nodes is N reserved nodes from the Nodes API (`POST /v1/nodes`, one per node, so
 *   each VM can carry its own agent token in its cloud-init);
 * - an extension is the Nodes API's extend, node by node;
 * - a sell-back is a v0 sell order on the node's contract. The API never says which contract is
 *   which node's, so contracts are matched by zone, start and end: nodes alike on all three form a
 *   sale group, sold whole (the policy plans it that way).
 * What the market does in return (fills, boots, terminations, money) arrives as engine events and
 * ledger entries, turned here into region changes and `Ledger` entries.
 */
import { type MarketQuote, perNodeHourLimit, type QuoteRequest } from "../../core/autoscaler";
import type { Account } from "../sfcompute-sim/accounts";
import type { SimEngine } from "../sfcompute-sim/engine";
import type { SimEvent } from "../sfcompute-sim/events";
import { shapeEnd, shapeStart } from "../sfcompute-sim/shape";

const H100_TYPE = "h100v";

export interface MarketOutcomes {
  nodeBought(sfId: string, blockId: string, zone: string, start: number, end: number, priceCents: number): void;
  nodeBooted(sfId: string, at: number): void;
  nodeGone(sfId: string, at: number): void;
  extended(sfId: string, start: number, end: number, priceCents: number): void;
  soldBack(sfId: string, start: number, end: number, netCents: number): void;
  orderPlaced(): void;
  orderFailed(): void;
}

interface PendingNode {
  sfId: string;
  blockId: string;
  start: number;
  end: number;
}

interface PendingSale {
  sfId: string;
  start: number;
  end: number;
}

export class EngineMarket {
  private readonly pendingNodes = new Map<string, PendingNode>();
  private readonly pendingSales = new Map<string, PendingSale>();
  private ledgerSeen: number;
  /** Ledger entries not yet matched to a purchase or sale, by reference. */
  private readonly unclaimed = new Map<string, { kind: string; amountCents: number }[]>();
  private readonly events: SimEvent[] = [];
  private names = 0;

  constructor(
    readonly engine: SimEngine,
    readonly account: Account,
    private readonly outcomes: MarketOutcomes,
  ) {
    this.ledgerSeen = account.ledger.length;
    engine.subscribe((e) => {
      if (e.type === "node.status" || e.type === "vm.status" || e.type === "order.status") this.events.push(e);
    });
  }

  /** Node purchases whose outcome is not known yet. */
  inflightNodes(): PendingNode[] {
    return [...this.pendingNodes.values()];
  }

  /** Applies what the engine did since the last call: purchases, boots, ends, sales. */
  settle(): void {
    const events = this.events.splice(0, this.events.length);
    this.collectCharges();
    // A purchase shows as the node's contract (its VM boots only once its time starts).
    for (const pending of [...this.pendingNodes.values()]) {
      const node = this.engine.nodes.nodes.get(pending.sfId)!;
      if (!node.contractId) continue;
      this.pendingNodes.delete(pending.sfId);
      const price = this.take(`nodes:${pending.start}`);
      this.outcomes.nodeBought(pending.sfId, pending.blockId, node.zone!, pending.start, pending.end, price);
    }
    for (const e of events) {
      const d = e.data as Record<string, string>;
      if (e.type === "vm.status" && d.status === "Running") {
        this.outcomes.nodeBooted(d.node_id!, e.at);
      } else if (e.type === "node.status" && d.status === "failed") {
        if (this.pendingNodes.delete(d.node_id!)) this.outcomes.orderFailed();
      } else if (e.type === "node.status" && d.status === "terminated") {
        this.outcomes.nodeGone(d.node_id!, e.at);
      } else if (e.type === "order.status") {
        const sale = this.pendingSales.get(d.order_id!);
        if (!sale) continue;
        if (d.status === "filled") {
          this.pendingSales.delete(d.order_id!);
          const net = this.take(d.order_id!, "sell") + this.take(d.order_id!, "fee");
          this.outcomes.soldBack(sale.sfId, sale.start, sale.end, net);
        } else if (d.status === "cancelled" || d.status === "rejected") {
          this.pendingSales.delete(d.order_id!);
          this.outcomes.orderFailed();
        }
      }
    }
  }

  /** Answers a policy's quote request; a sell quote needs a node of the sale group (`sellFrom`). */
  quote(r: QuoteRequest, sellFrom?: string): MarketQuote | null {
    const hours = r.durationHours;
    try {
      if (r.side === "buy") {
        const start = r.startAt === "now" ? ("NOW" as const) : r.startAt;
        const result = this.engine.market.quote(this.account, {
          side: "buy",
          quantity: 1,
          instance_type: H100_TYPE,
          ...(r.zone ? { cluster: r.zone } : {}),
          min_start_date: start,
          max_start_date: start,
          // "now" blocks end on the hour at or after now + hours: allow the extra part-hour.
          min_duration: Math.round(hours * 3600),
          max_duration: Math.round(hours * 3600) + (r.startAt === "now" ? 3599 : 0),
        });
        const q = result.quote;
        if (!q) return null;
        const out: MarketQuote = {
          side: "buy",
          gpuModel: r.gpuModel,
          zone: q.zone,
          nodes: 1,
          startAt: q.start,
          endAt: q.end,
          priceCents: q.price,
        };
        if (r.blockId !== undefined) out.blockId = r.blockId;
        if (r.cover) out.cover = true;
        return out;
      }
      const contract = sellFrom ? this.contractsByGroup(this.groupKey(sellFrom))[0] : undefined;
      if (!contract || r.startAt === "now") return null;
      const result = this.engine.market.quote(this.account, {
        side: "sell",
        quantity: 1,
        contract_id: contract,
        min_start_date: r.startAt,
        max_start_date: r.startAt,
        min_duration: Math.round(hours * 3600),
        max_duration: Math.round(hours * 3600),
      });
      const q = result.quote;
      if (!q) return null;
      return {
        side: "sell",
        gpuModel: r.gpuModel,
        zone: q.zone,
        nodes: r.nodes,
        startAt: q.start,
        endAt: q.end,
        priceCents: q.price * r.nodes,
        blockId: r.blockId!,
      };
    } catch {
      return null; // a request the market refuses (e.g. no such start) is no quote
    }
  }

  /**
   * Buys `nodes` reserved nodes, one request each, node i ending `i × endStepMs` after `end`, at no
   * more than the block's limit per node-hour.
   */
  buyNodes(
    blockId: string,
    zone: string,
    nodes: number,
    firstEnd: number,
    endStepMs: number,
    limitPriceCents: number,
    now: number,
  ): void {
    const start = Math.ceil(now / 60_000) * 60_000;
    const perNodeHour = perNodeHourLimit(limitPriceCents, nodes, start, firstEnd);
    for (let i = 0; i < nodes; i++) {
      const end = firstEnd + i * endStepMs;
      this.outcomes.orderPlaced();
      try {
        const [node] = this.engine.nodes.create(this.account, {
          desired_count: 1,
          max_price_per_node_hour: perNodeHour,
          zone,
          start_at: Math.floor(now / 1000),
          end_at: end / 1000,
          node_type: "reserved",
          names: [`scalar-${++this.names}`],
        });
        this.pendingNodes.set(node!.id, { sfId: node!.id, blockId, start: node!.startAt, end });
      } catch {
        this.outcomes.orderFailed();
      }
    }
  }

  /** Extends each node from its end to `end`, at no more than the limit's node-hour rate. */
  extend(sfIds: string[], start: number, end: number, limitPriceCents: number): void {
    const hours = (end - start) / 3_600_000;
    const perNodeHour = perNodeHourLimit(limitPriceCents, sfIds.length, start, end);
    for (const sfId of sfIds) {
      this.outcomes.orderPlaced();
      const before = this.account.balanceCents;
      try {
        this.engine.nodes.extend(this.account, sfId, {
          duration_seconds: Math.round(hours) * 3600,
          max_price_per_node_hour: perNodeHour,
        });
        this.outcomes.extended(sfId, start, end, before - this.account.balanceCents);
      } catch {
        this.outcomes.orderFailed();
      }
    }
  }

  /**
   * Sells [start, end) of a sale group's nodes: one sell order per contract of the group. Every node
   * of the group is being sold, so which contract is which node does not matter.
   */
  sellBack(sfIds: string[], start: number, end: number, minPriceCents: number): void {
    const key = this.groupKey(sfIds[0]!);
    const contracts = this.contractsByGroup(key);
    const perNode = Math.floor(minPriceCents / sfIds.length);
    if (contracts.length !== sfIds.length) return; // not a whole sale group: which node is which is unknown
    contracts.forEach((contract, i) => {
      this.outcomes.orderPlaced();
      try {
        const { order } = this.engine.market.placeOrder(this.account, {
          side: "sell",
          contract_id: contract,
          quantity: 1,
          start_at: start,
          end_at: end,
          price: perNode,
        });
        this.pendingSales.set(order.id, { sfId: sfIds[i]!, start, end });
      } catch {
        this.outcomes.orderFailed();
      }
    });
  }

  /** Nodes alike in zone, start and end: their contracts cannot be told apart. */
  groupKey(sfId: string): string {
    const n = this.engine.nodes.nodes.get(sfId);
    return n ? `${n.zone}|${n.startAt}|${n.endAt}` : sfId;
  }

  private contractsByGroup(key: string): string[] {
    return this.engine.market
      .listContracts(this.account, { include_nodes: true })
      .filter((c) => c.isNode && `${c.zone}|${shapeStart(c.shape)}|${shapeEnd(c.shape)}` === key)
      .map((c) => c.id);
  }

  private collectCharges(): void {
    const fresh = this.account.ledger.slice(this.ledgerSeen);
    this.ledgerSeen = this.account.ledger.length;
    for (const e of fresh) {
      if (e.ref.startsWith("extend:")) continue; // extensions are priced as they happen
      this.unclaimed.set(e.ref, [...(this.unclaimed.get(e.ref) ?? []), e]);
    }
  }

  /** Claims the first entry of a reference (and kind): a purchase's price as a positive number, a sale's proceeds and fee signed. */
  private take(ref: string, kind?: string): number {
    const list = this.unclaimed.get(ref) ?? [];
    const i = list.findIndex((e) => kind === undefined || e.kind === kind);
    if (i < 0) return 0;
    const [e] = list.splice(i, 1);
    if (list.length === 0) this.unclaimed.delete(ref);
    return e!.kind === "buy" ? -e!.amountCents : e!.amountCents;
  }
}
