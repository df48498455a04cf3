/** `GET /v0/orders` query filters, paging and sorting (reference §4.1). */
import { invalid } from "./errors";
import type { OrderRecord } from "./market";
import { isoTime, queryBool, queryInt } from "./parse";

type Test = (o: OrderRecord) => boolean;

export function queryOrders(orders: OrderRecord[], q: URLSearchParams): { data: OrderRecord[]; hasMore: boolean } {
  const tests: Test[] = [];
  const side = q.get("side");
  if (side !== null) {
    if (side !== "buy" && side !== "sell") throw invalid("side must be 'buy' or 'sell'", "side");
    tests.push((o) => o.side === side);
  }
  const instanceType = q.get("instance_type");
  if (instanceType) tests.push((o) => o.instanceType === instanceType);
  const contractId = q.get("contract_id");
  if (contractId) tests.push((o) => o.contractId === contractId);

  const range = (
    min: string,
    max: string,
    read: (o: OrderRecord) => number | null,
    parse: (f: string) => number | undefined,
  ) => {
    const lo = parse(min);
    const hi = parse(max);
    if (lo !== undefined) tests.push((o) => (read(o) ?? Number.NEGATIVE_INFINITY) >= lo);
    if (hi !== undefined) tests.push((o) => (read(o) ?? Number.POSITIVE_INFINITY) <= hi);
  };
  const int = (f: string) => queryInt(q, f);
  const time = (f: string) => {
    const v = q.get(f);
    return v ? isoTime(v, f) : undefined;
  };
  range("min_price", "max_price", (o) => o.price, int);
  range("min_quantity", "max_quantity", (o) => o.quantity, int);
  range("min_duration", "max_duration", (o) => (o.endAt - o.startAt) / 1000, int);
  range("min_start_date", "max_start_date", (o) => o.startAt, time);
  range("min_filled_at", "max_filled_at", (o) => o.executedAt, time);
  range("min_fill_price", "max_fill_price", (o) => o.executionPrice, int);
  range("min_cancelled_at", "max_cancelled_at", (o) => o.cancelledAt, time);
  range("min_placed_at", "max_placed_at", (o) => o.createdAt, time);

  if (queryBool(q, "only_open")) tests.push((o) => o.status === "pending" || o.status === "open");
  if (queryBool(q, "only_filled")) tests.push((o) => o.status === "filled");
  if (queryBool(q, "exclude_filled")) tests.push((o) => o.status !== "filled");
  if (queryBool(q, "only_cancelled")) tests.push((o) => o.status === "cancelled");
  if (queryBool(q, "exclude_cancelled")) tests.push((o) => o.status !== "cancelled");

  const sortBy = q.get("sort_by") ?? "created_at";
  if (sortBy !== "created_at" && sortBy !== "start_time")
    throw invalid("sort_by must be created_at or start_time", "sort_by");
  const direction = q.get("sort_direction") ?? "DESC";
  if (direction !== "ASC" && direction !== "DESC")
    throw invalid("sort_direction must be ASC or DESC", "sort_direction");
  const limit = int("limit") ?? 100;
  if (limit < 1 || limit > 100) throw invalid("limit must be between 1 and 100", "limit");
  const offset = int("offset") ?? 0;
  if (offset < 0) throw invalid("offset must not be negative", "offset");

  const key = (o: OrderRecord) => (sortBy === "created_at" ? o.createdAt : o.startAt);
  const sign = direction === "ASC" ? 1 : -1;
  const matching = orders.filter((o) => tests.every((t) => t(o))).sort((a, b) => sign * (key(a) - key(b)));
  return { data: matching.slice(offset, offset + limit), hasMore: matching.length > offset + limit };
}
