/**
 * The autoscaler's market calls through the SF Compute client: quotes for the policy's requests,
 * node purchases (one reserved node per `POST /v1/nodes`, named, carrying its own cloud-init), node
 * extensions, and the contracts a sell-back sells from. The API never links a node to its contract,
 * so contracts are matched by zone, start and end; nodes alike on all three are a sale group, sold
 * whole (the policy plans it so).
 */
import { type MarketQuote, marketNow, type QuoteRequest } from "../../core/autoscaler";
import {
  decodeUserData,
  encodeUserData,
  type NodeBootConfig,
  parseNodeBootScript,
  renderNodeBootScript,
} from "../../core/schemas/node-boot";
import type { SfComputeClient } from "../sfcompute/client";
import type { Node, ShapedContract } from "../sfcompute/schemas";

/** Nodes alike in zone, start and end (epoch ms): their contracts cannot be told apart. */
export function saleGroupKey(zone: string | null | undefined, startAt: number, endAt: number): string {
  return `${zone ?? ""}|${startAt}|${endAt}`;
}

export function nodeSaleGroup(node: Node): string {
  return saleGroupKey(node.zone, (node.start_at ?? 0) * 1000, (node.end_at ?? 0) * 1000);
}

export function contractSaleGroup(contract: ShapedContract): string {
  const times = contract.shape.intervals.map((t) => Date.parse(t));
  return saleGroupKey(contract.zone, times[0] ?? 0, times[times.length - 1] ?? 0);
}

/** The policy's quote request on the wire (one node: every node is its own purchase). */
export async function fetchQuote(
  client: SfComputeClient,
  request: QuoteRequest,
  instanceType: string,
  now: number,
  contractId?: string,
): Promise<MarketQuote | null> {
  const seconds = Math.round(request.durationHours * 3600);
  const start = request.startAt === "now" ? ("NOW" as const) : new Date(request.startAt);
  const window = {
    min_start_date: start,
    max_start_date: start,
    min_duration: seconds,
    // A "now" block ends on the hour at or after now + its hours: allow the part-hour.
    max_duration: seconds + (request.startAt === "now" ? 3599 : 0),
  };
  const answer =
    request.side === "buy"
      ? await client.quote({
          side: "buy",
          quantity: 1,
          instance_type: instanceType,
          ...(request.zone ? { cluster: request.zone } : {}),
          ...window,
        })
      : contractId
        ? await client.quote({ side: "sell", quantity: 1, contract_id: contractId, ...window })
        : null;
  const q = answer?.quote;
  if (!q) return null;
  const startAt = q.start_at === "NOW" ? marketNow(now) : Date.parse(q.start_at);
  const endAt = Date.parse(q.end_at);
  // A sell quote is for one node of the group: the group's price is that many times it.
  const nodes = request.side === "sell" ? request.nodes : 1;
  const quote: MarketQuote = {
    side: request.side,
    gpuModel: request.gpuModel,
    zone: q.zone ?? request.zone ?? "",
    nodes,
    startAt,
    endAt,
    priceCents: q.price * nodes,
  };
  if (request.blockId !== undefined) quote.blockId = request.blockId;
  if (request.cover) quote.cover = true;
  return quote;
}

/** A node's cloud-init user data: the shared node-boot script (core/schemas/node-boot.ts), base64. */
export function cloudInit(config: NodeBootConfig): string {
  return encodeUserData(renderNodeBootScript(config));
}

/** The node token a node's user data carries (for tests, and for operators checking a node). */
export function tokenOfCloudInit(base64: string): string | null {
  return parseNodeBootScript(decodeUserData(base64))?.node_token ?? null;
}
